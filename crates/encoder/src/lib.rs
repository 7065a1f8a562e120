//! The encoder owns the publish path: it checks items, turns each into its postings (forward index,
//! category, keyword and recent lists), writes them to the sharders that own those keys, and
//! registers the item with the traffic controller as new. An item is recallable once publish
//! returns. The content encoder model and cluster assignment (DESIGN.md §2) plug in here; today
//! the encoder holds no model and no state of its own.
//!
//! Modules: [`postings`] (item → postings), [`service`] (Flight face).
#![warn(missing_docs)]

pub mod model;
pub mod postings;
pub mod service;
pub mod training;

pub use service::Service;

use coldstart_common::{ErrorCode, ServiceError};

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
