//! The aggregator's contract: recall over Flight (the public HTTP API is its other face). Writes
//! go over HTTP; a DoPut to the aggregator is refused.

mod rows;

pub use rows::*;

/// The aggregator's wire messages, generated from `proto/aggregator.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/coldstart.aggregator.v1.rs"));
}

use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::{FlightMessage, FlightPool, Protocol};
use coldstart_runtime::ServiceResult;
use proto::{aggregator_ticket, AggregatorCommand, AggregatorTicket, RecallRequest};
use std::sync::Arc;

/// The aggregator's Flight protocol.
pub struct AggregatorProtocol;

impl Protocol for AggregatorProtocol {
    const SERVICE: &'static str = "aggregator";
    type Ticket = AggregatorTicket;
    type Command = AggregatorCommand;
}

crate::flight_kinds!(AggregatorTicket, aggregator_ticket { Recall => "recall" });

impl FlightMessage for AggregatorCommand {
    fn kind_name(&self) -> Option<&'static str> {
        None
    }
}

/// Calls an aggregator's Flight face: a member found by discovery, or a known address.
#[derive(Clone)]
pub struct AggregatorClient {
    pool: Arc<FlightPool>,
    target: Target,
}

#[derive(Clone)]
enum Target {
    Cluster(Arc<Cluster>),
    Addr(String),
}

impl AggregatorClient {
    /// A client that asks any serving aggregator of `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            pool: cluster.pool.clone(),
            target: Target::Cluster(cluster),
        }
    }

    /// A client of the aggregator at Flight address `addr` (`host:port`).
    pub fn at(pool: Arc<FlightPool>, addr: impl Into<String>) -> Self {
        Self {
            pool,
            target: Target::Addr(addr.into()),
        }
    }

    /// One recall; the request is checked by the server as over HTTP.
    pub async fn recall(&self, req: RecallRequest) -> ServiceResult<Vec<Candidate>> {
        let addr = match &self.target {
            Target::Addr(a) => a.clone(),
            Target::Cluster(c) => c.any(Role::Aggregator).await?.flight_addr,
        };
        let t = AggregatorTicket {
            kind: Some(aggregator_ticket::Kind::Recall(req)),
        };
        let mut out = Vec::new();
        for b in self.pool.get::<AggregatorProtocol>(&addr, &t).await? {
            out.extend(Candidate::from_batch(&b)?);
        }
        Ok(out)
    }
}
