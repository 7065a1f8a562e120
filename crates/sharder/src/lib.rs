//! The sharder owns inverted lists keyed by (kind, key) (category, keyword, cluster and the
//! `recent` list of newest items overall) and the forward index item → metadata, for the keys that
//! rendezvous hashing gives it. Lists are newest first and bounded. Every acknowledged write is in
//! its fsync'd write-ahead log (and later a Parquet snapshot); a (re)started sharder registers as
//! joining, catches up from its replicas, then serves. It never calls another service except peer
//! sharders for catch-up.
//!
//! It also runs the content model: it holds the centroids and, when etcd names a new version,
//! re-files its index under it ([`model`]).
//!
//! Modules: [`config`] (`[sharder]`), [`index`] (the lists and the forward index), [`pools`]
//! (the new items' two-tower vectors, in time pools), [`store`] (durability, the single
//! writer: WAL, then the index, in one call), [`model`] (content model swaps), [`service`] (Flight
//! face and startup).
#![warn(missing_docs)]

pub mod config;
pub mod index;
pub mod model;
pub mod pools;
pub mod service;
pub mod store;

pub use service::Service;

use coldstart_runtime::{ServiceError, StorageError};

/// Sharder errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A request or a stored record is not what it must be, or a peer failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The store actor is gone.
    #[error("store actor unavailable: {0}")]
    Mailbox(#[from] actix::MailboxError),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for ServiceError {
    fn from(e: Error) -> Self {
        match e {
            Error::Service(s) => s,
            Error::Storage(s) => s.into(),
            Error::Mailbox(_) => ServiceError::unavailable(e.to_string()),
        }
    }
}
