//! The encoder owns the publish path and the content model: it checks items, encodes them with the
//! current content model and files each into its nearest cluster, turns each into its postings
//! (forward index, category, keyword, cluster and recent lists), writes them to the sharders that
//! own those keys, and registers the item with the traffic controller as new. An item is
//! recallable once publish returns. It is a stateless handler, not an actor, and keeps no durable
//! state: the model comes from the artifact etcd names (`models/content`), swapped in whole
//! without a restart. It never answers reads and never acknowledges an item that is not on a
//! sharder.
//!
//! Modules: [`config`] (`[encoder]`), [`postings`] (item → postings), [`training`]
//! (triplet mining and the training loop), [`service`] (Flight face, model watch). The versioned
//! artifact is `coldstart_artifact`, shared with the sharders.
#![warn(missing_docs)]

pub mod config;
pub mod postings;
pub mod service;
pub mod training;

pub use service::Service;

use coldstart_runtime::{ErrorCode, ServiceError};

/// Encoder errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request, or a peer failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for ServiceError {
    fn from(e: Error) -> Self {
        match e {
            Error::Service(s) => s,
        }
    }
}

impl Error {
    /// The shared code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Service(s) => s.code,
        }
    }
}
