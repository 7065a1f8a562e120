//! Each service's contract, in one place per service: its Flight protocol (its ticket and
//! command types, generated from `proto/{service}.proto` into `{service}::proto`), the Arrow rows it takes and returns, and its
//! typed client. A client owns its routing (the owner of a key, the replicas, the fewest covering
//! reads) and works the same whether the member is in this process (all-in-one) or across the
//! network: both go through the runtime's `FlightPool`.
//!
//! | service | protocol | client | rows |
//! |---|---|---|---|
//! | profile | [`profile::ProfileProtocol`] | [`profile::ProfileClient`] | events, users, profile, popular, event log |
//! | encoder | [`encoder::EncoderProtocol`] | [`encoder::EncoderClient`] | items |
//! | sharder | [`sharder::SharderProtocol`] | [`sharder::SharderClient`] | postings, list hits, item scores, assignments |
//! | traffic | [`traffic::TrafficProtocol`] | [`traffic::TrafficClient`] | registrations, exposures, ledger |
//! | aggregator | [`aggregator::AggregatorProtocol`] | [`aggregator::AggregatorClient`] | candidates |
//!
//! [`types`] holds the domain types several contracts share (actions, list kinds, cluster keys,
//! the one order of scored items) and [`validate`] the checks of public input rows. This crate
//! holds no state and starts nothing; it must never depend on a service crate.
#![warn(missing_docs)]

mod columns;

pub mod aggregator;
pub mod encoder;
pub mod profile;
pub mod sharder;
pub mod traffic;
pub mod types;
pub mod validate;

#[cfg(test)]
mod row_tests;

/// Implements `FlightMessage` for a prost message with a `kind` oneof.
macro_rules! flight_kinds {
    ($msg:ty, $oneof:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl coldstart_runtime::flight::FlightMessage for $msg {
            fn kind_name(&self) -> Option<&'static str> {
                use proto::$oneof::Kind;
                match self.kind {
                    $(Some(Kind::$variant(_)) => Some($name),)*
                    None => None,
                }
            }
        }
    };
}
pub(crate) use flight_kinds;

/// One client per service the caller talks to, over one routing view; cheap to clone.
#[derive(Clone)]
pub struct Clients {
    /// The profile partitions.
    pub profile: profile::ProfileClient,
    /// The encoders.
    pub encoder: encoder::EncoderClient,
    /// The sharders.
    pub sharder: sharder::SharderClient,
    /// The traffic partitions.
    pub traffic: traffic::TrafficClient,
}

impl Clients {
    /// Clients routing by `cluster`.
    pub fn new(cluster: std::sync::Arc<coldstart_runtime::cluster::Cluster>) -> Self {
        Self {
            profile: profile::ProfileClient::new(cluster.clone()),
            encoder: encoder::EncoderClient::new(cluster.clone()),
            sharder: sharder::SharderClient::new(cluster.clone()),
            traffic: traffic::TrafficClient::new(cluster),
        }
    }
}
