//! The profile service owns users: attributes and onboarding interests, the last n items per action
//! type, decayed interest weights per category and keyword, counters and the new-user flag. It
//! ingests events (checked, enriched from the sharders' forward index, logged durably as Parquet),
//! forwards impressions and clicks of new items to the traffic controller, and serves profile rows
//! to the aggregator. Profiles are rebuilt from the log at start. It never serves recall itself.
//!
//! Modules: [`config`] (`[profile]`), [`state`] (profiles), [`popularity`] (most engaged items
//! per group, at any request time), [`event_log`] (the Parquet log), [`writer`] (the single
//! writer: log, then apply, in one call), [`service`] (Flight and HTTP).
#![warn(missing_docs)]

pub mod config;
pub mod event_log;
pub mod popularity;
pub mod service;
pub mod state;
pub mod writer;

pub use service::Service;

use coldstart_runtime::{ServiceError, StorageError};

/// Profile errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A request or a stored record is not what it must be, or a peer failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The profile actor is gone.
    #[error("profile actor unavailable: {0}")]
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
