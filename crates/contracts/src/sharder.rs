//! The cluster sharder's contract: it takes `postings` for the keys it owns (inverted lists and
//! the forward index), and serves list reads, forward-index rows, content similarity and
//! catch-up dumps. [`SharderClient`] owns the replicated routing.

mod client;
mod rows;

pub use client::SharderClient;
pub use rows::*;

/// The sharder's wire messages, generated from `proto/sharder.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/coldstart.sharder.v1.rs"));
}

use coldstart_runtime::flight::Protocol;
use proto::{SharderCommand, SharderTicket};

/// The sharder's Flight protocol.
pub struct SharderProtocol;

impl Protocol for SharderProtocol {
    const SERVICE: &'static str = "sharder";
    type Ticket = SharderTicket;
    type Command = SharderCommand;
}

crate::flight_kinds!(SharderTicket, sharder_ticket {
    Lists => "lists",
    ItemMeta => "item_meta",
    Dump => "dump",
    Similarity => "similarity",
    Pools => "pools",
});

/// The new-item pools' default bounds (`sharder.pool_hours`), hours before the request time:
/// pool `i` holds the items published in `(at - hours[i], at - hours[i - 1]]` (the first from
/// `at`). Older items are in no pool.
pub const DEFAULT_POOL_HOURS: [i64; 4] = [1, 6, 24, 720];
/// The most pools a cluster may configure; a pool index at or past it is refused on decode.
pub const MAX_POOLS: usize = 8;
crate::flight_kinds!(SharderCommand, sharder_command { IndexPostings => "index_postings" });

impl proto::ListQuery {
    /// A read of the newest `limit` items of list (`kind`, `key`).
    pub fn of(kind: crate::types::ListKind, key: impl Into<String>, limit: u32) -> Self {
        Self {
            kind: kind.as_str().to_string(),
            key: key.into(),
            limit,
        }
    }
}
