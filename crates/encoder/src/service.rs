//! The encoder's Flight face: `publish_items`.

use crate::postings;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use coldstart_common::cluster::Cluster;
use coldstart_common::discovery::Role;
use coldstart_common::flight::FlightHandler;
use coldstart_common::node::{Context, RunningNode};
use coldstart_common::rows::{Item, Registration};
use coldstart_common::validate::{self, now_ms};
use coldstart_common::{Config, ServiceError, ServiceResult};
use coldstart_proto::{put_command, PutCommand, RegisterItems, Ticket};
use std::sync::Arc;
use tracing::info;

/// A running encoder.
pub struct Service {
    node: RunningNode,
}

struct PublishHandler {
    cluster: Arc<Cluster>,
    cfg: Arc<Config>,
}

impl PublishHandler {
    async fn publish(&self, items: Vec<Item>) -> ServiceResult<u64> {
        validate::items(&items, &self.cfg.limits, now_ms())?;
        let all: Vec<_> = items.iter().flat_map(postings::of_item).collect();
        let copies = self.cluster.write_postings(&all).await?;
        let regs: Vec<Registration> = items
            .iter()
            .map(|i| Registration {
                item_id: i.item_id,
                publish_ts: i.publish_ts,
                author_id: i.author_id,
                quality: i.quality,
            })
            .collect();
        let cmd = PutCommand {
            kind: Some(put_command::Kind::RegisterItems(RegisterItems {})),
        };
        let parts = self.cluster.partition(
            Role::Traffic,
            regs.iter().enumerate().map(|(i, r)| (r.item_id, i)),
        )?;
        let calls = parts.into_iter().map(|(m, idx)| {
            let batch =
                Registration::to_batch(&idx.iter().map(|&i| regs[i].clone()).collect::<Vec<_>>());
            async move {
                self.cluster
                    .pool
                    .put(&m.flight_addr, &cmd, vec![batch])
                    .await
            }
        });
        futures::future::try_join_all(calls).await?;
        info!(
            items = items.len(),
            postings = all.len(),
            min_copies = copies,
            "published"
        );
        Ok(items.len() as u64)
    }
}

#[async_trait::async_trait]
impl FlightHandler for PublishHandler {
    async fn get(&self, _: Ticket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        Err(ServiceError::invalid("the encoder serves no tickets"))
    }

    async fn put(&self, cmd: PutCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        let Some(put_command::Kind::PublishItems(_)) = cmd.kind else {
            return Err(ServiceError::invalid("the encoder takes publish_items"));
        };
        let mut items = Vec::new();
        for b in &batches {
            items.extend(Item::from_batch(b)?);
        }
        self.publish(items).await
    }
}

impl Service {
    /// Serves the publish path.
    pub async fn start(ctx: &Context, node_id: String, http_port: u16) -> crate::Result<Self> {
        let handler = Arc::new(PublishHandler {
            cluster: ctx.cluster.clone(),
            cfg: ctx.cfg.clone(),
        });
        let node = ctx
            .serve(
                Role::Encoder,
                node_id,
                handler,
                axum::Router::new(),
                http_port,
            )
            .await?;
        Ok(Self { node })
    }

    /// Deregisters and stops.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}
