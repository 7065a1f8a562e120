//! The aggregator is the public read API and the front door for writes. Per recall: the user's
//! profile (profile client) → interest categories and keywords → the owning sharders in parallel
//! (sharder client) → merge with a quota per channel, dedup, drop what the user has seen → top k
//! with the channels that recalled each item. It is a stateless handler, not an actor: it holds
//! only its config and the clients of the services it calls. It never writes to a sharder
//! directly (publishing goes through the encoder) and never keeps anything between requests.
//!
//! Modules: [`config`] (`[aggregator]` and what it needs of other sections), [`api`] (HTTP),
//! [`request`] (a recall request, checked by one rule for HTTP and Flight), [`recall`] (one
//! recall, each part bounded by `hops`), [`merge`] (scoring and quotas), [`service`] (Flight face and start).
#![warn(missing_docs)]

pub mod api;
pub mod cluster_recall;
pub mod config;
mod hops;
pub mod merge;
pub mod recall;
pub mod request;
pub mod served_log;
pub mod service;
pub mod two_tower_channel;

pub use service::Service;

use coldstart_runtime::ServiceError;

/// Aggregator errors.
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
