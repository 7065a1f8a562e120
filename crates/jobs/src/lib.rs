//! Offline workflows of coldstart, as a library the `coldstart` binary calls: an in-process
//! cluster of every role ([`local`]), training the content model with progress ([`training`]),
//! training and evaluating the two-tower model ([`two_tower`]),
//! waiting for a model rollout ([`rollout`]), reading data sets in the import format
//! ([`dataset`]), evaluating recall quality through the serving path ([`eval`]) and replaying
//! traffic control on a synthetic platform ([`simulate`]).
//!
//! Like the binary, and unlike any service crate, it links every service: the evaluation runs
//! the real services in one process and asks them through the public API. It never serves
//! traffic of its own.
#![warn(missing_docs)]

pub mod config;
pub mod dataset;
pub mod eval;
pub mod local;
pub mod report;
pub mod rollout;
pub mod simulate;
pub mod training;
pub mod two_tower;

use coldstart_runtime::ServiceError;
use std::path::PathBuf;

/// Errors of the offline workflows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is unreadable or does not match its schema.
    #[error("{file}: {message}")]
    Input {
        /// The file.
        file: PathBuf,
        /// What is wrong (column, row, value, expectation).
        message: String,
    },
    /// A bad argument or split.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The learning code failed.
    #[error("training: {0}")]
    Model(#[from] coldstart_models::Error),
    /// A service refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
