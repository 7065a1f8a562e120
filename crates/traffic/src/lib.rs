//! The traffic controller owns the ledger of new items: publish time, quality, target impressions,
//! and the impressions and clicks counted so far. Counts are durable (fsync'd write-ahead log,
//! replayed on start): a lost impression would over-boost an item. Today it registers items and
//! counts exposures (each once per user, item, action and request id). The policy of DESIGN.md
//! §2 — targets by content and author quality, the paced boost, forced slots and exploration — is
//! in [`policy`], pure functions of a ledger row and the request time; the ledger takes new items'
//! targets from it, answers recall's `boosts` calls with it, and the replay simulator runs it
//! (`coldstart simulate traffic`). The policy is `[traffic]` of the configuration with the keys of
//! the discovery value `settings/traffic` over it: a change there takes effect at once, without a
//! restart, and an impossible one is refused (logged, naming the key) while the policy in force
//! stays. It never calls another service.
//!
//! The `Ledger` actor is the single writer: it logs each batch and applies it in the same call.
//!
//! Modules: [`config`] (`[traffic]`), [`ledger`] (state and its log), [`policy`] (boost,
//! pacing, forced slots, exploration), [`service`] (Flight and HTTP face).
#![warn(missing_docs)]

pub mod config;
pub mod ledger;
pub mod policy;
pub mod service;

pub use service::Service;

use coldstart_runtime::{ServiceError, StorageError};

/// Traffic errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A request or a stored record is not what it must be, or a peer failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The ledger actor is gone.
    #[error("ledger actor unavailable: {0}")]
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
