//! The traffic controller's contract: it takes registrations of new items and their exposures
//! (impressions, clicks) for the items its partition owns (rendezvous on the item id), and
//! serves ledger rows.

mod rows;

pub use rows::*;

/// The traffic's wire messages, generated from `proto/traffic.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/coldstart.traffic.v1.rs"));
}

use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::Protocol;
use coldstart_runtime::ServiceResult;
use proto::{
    traffic_command, traffic_ticket, BoostsRequest, CountExposures, LedgerRequest, RegisterItems,
    TrafficCommand, TrafficTicket,
};
use std::sync::Arc;

/// The traffic controller's Flight protocol.
pub struct TrafficProtocol;

impl Protocol for TrafficProtocol {
    const SERVICE: &'static str = "traffic";
    type Ticket = TrafficTicket;
    type Command = TrafficCommand;
}

crate::flight_kinds!(TrafficTicket, traffic_ticket { Ledger => "ledger", Boosts => "boosts" });
crate::flight_kinds!(TrafficCommand, traffic_command {
    RegisterItems => "register_items",
    CountExposures => "count_exposures",
});

/// Calls the traffic partitions: each item's rows to the partition that owns the item.
#[derive(Clone)]
pub struct TrafficClient {
    cluster: Arc<Cluster>,
}

impl TrafficClient {
    /// A client routing by `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// Registers new items with the partitions that own them.
    pub async fn register(&self, regs: &[Registration]) -> ServiceResult<u64> {
        let cmd = TrafficCommand {
            kind: Some(traffic_command::Kind::RegisterItems(RegisterItems {})),
        };
        self.cluster
            .put_partitioned::<TrafficProtocol, _>(
                Role::Traffic,
                regs,
                |r| r.item_id,
                Registration::to_batch,
                &cmd,
            )
            .await
    }

    /// Counts impressions and clicks of new items on the partitions that own them.
    pub async fn count_exposures(&self, exposures: &[Exposure]) -> ServiceResult<u64> {
        let cmd = TrafficCommand {
            kind: Some(traffic_command::Kind::CountExposures(CountExposures {})),
        };
        self.cluster
            .put_partitioned::<TrafficProtocol, _>(
                Role::Traffic,
                exposures,
                |e| e.item_id,
                Exposure::to_batch,
                &cmd,
            )
            .await
    }

    /// One ticket per traffic partition owning some of `item_ids` (made by `ticket` from that
    /// partition's ids), asked in parallel; every answer's batches decoded by `decode`.
    async fn per_partition<T>(
        &self,
        item_ids: &[u64],
        ticket: impl Fn(Vec<u64>) -> traffic_ticket::Kind,
        decode: impl Fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
    ) -> ServiceResult<Vec<T>> {
        let parts = self
            .cluster
            .partition(Role::Traffic, item_ids.iter().map(|&i| (i, i)))
            .await?;
        let calls = parts.into_iter().map(|(m, ids)| {
            let t = TrafficTicket {
                kind: Some(ticket(ids)),
            };
            async move {
                self.cluster
                    .pool
                    .get::<TrafficProtocol>(&m.flight_addr, &t)
                    .await
            }
        });
        let mut out = Vec::new();
        for batches in futures::future::try_join_all(calls).await? {
            for b in &batches {
                out.extend(decode(b)?);
            }
        }
        Ok(out)
    }

    /// The ledger rows of `item_ids` from the partitions that own them.
    pub async fn ledger(&self, item_ids: &[u64]) -> ServiceResult<Vec<LedgerRow>> {
        self.per_partition(
            item_ids,
            |ids| traffic_ticket::Kind::Ledger(LedgerRequest { item_ids: ids }),
            LedgerRow::from_batch,
        )
        .await
    }

    /// The traffic policy's help at request time `at` for the new items among `item_ids`: one
    /// call per partition that owns some of them, in parallel. Items not in a ledger get no row.
    pub async fn boosts(&self, item_ids: &[u64], at: i64) -> ServiceResult<Vec<BoostRow>> {
        self.per_partition(
            item_ids,
            |ids| traffic_ticket::Kind::Boosts(BoostsRequest { item_ids: ids, at }),
            BoostRow::from_batch,
        )
        .await
    }
}
