//! Shared foundations of coldstart: ids and roles, the Arrow schemas and row types that travel
//! between services, input validation, layered configuration, the error codes every boundary
//! speaks, discovery (etcd and in-memory), rendezvous routing, the generic Arrow Flight server and
//! client, the write-ahead log, telemetry and the HTTP health face. It owns no service state and
//! must never depend on a service crate.
#![warn(missing_docs)]

pub mod actors;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod error;
pub mod flight;
pub mod http;
pub mod ipc;
pub mod model;
pub mod node;
pub mod parquet_io;
pub mod routing;
pub mod rows;
pub mod telemetry;
pub mod validate;
pub mod wal;

pub use config::Config;
pub use error::{ErrorCode, ServiceError, ServiceResult};
