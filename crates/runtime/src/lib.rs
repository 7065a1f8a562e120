//! The runtime every coldstart process shares: layered configuration, the error codes every
//! boundary speaks, discovery (etcd and in-memory) and the node lifecycle, rendezvous routing by
//! membership, the generic Arrow Flight server and typed client pool, Arrow IPC and Parquet
//! helpers, the write-ahead log, the actix home, telemetry and the HTTP health face.
//!
//! It knows no service's contract (tickets, rows, clients: `coldstart-contracts`) and no model
//! (`coldstart-artifact`); it owns no service state, and must never depend on a service crate or
//! link the linear algebra.
#![warn(missing_docs)]

pub mod actors;
pub mod cluster;
pub mod config;
pub mod conn_guard;
pub mod discovery;
pub mod error;
pub mod flight;
pub mod http;
pub mod ids;
pub mod ipc;
pub mod node;
pub mod parquet_io;
pub mod routing;
pub mod telemetry;
pub mod wal;

pub use config::ProcessConfig;
pub use error::{ErrorCode, ServiceError, ServiceResult, StorageError};

/// The wall clock, ms since the epoch. Only for stamping what happens now (a member's start,
/// the default request time); never for a time a request carries.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
