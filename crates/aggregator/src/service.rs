//! The aggregator's start: public HTTP routes and recall over Flight.

use crate::recall;
use crate::request::RecallQuery;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use coldstart_common::discovery::Role;
use coldstart_common::flight::FlightHandler;
use coldstart_common::node::{Context, RunningNode};
use coldstart_common::rows::{candidates_schema, Candidate};
use coldstart_common::validate::now_ms;
use coldstart_common::{ServiceError, ServiceResult};
use coldstart_proto::{ticket, PutCommand, Ticket};
use std::sync::Arc;

/// A running aggregator.
pub struct Service {
    node: RunningNode,
}

impl Service {
    /// The HTTP address the public API listens on.
    pub fn http_addr(&self) -> &str {
        &self.node.member.http_addr
    }
}

struct RecallHandler {
    ctx: Context,
}

#[async_trait::async_trait]
impl FlightHandler for RecallHandler {
    async fn get(&self, ticket: Ticket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        let Some(ticket::Kind::Recall(req)) = ticket.kind else {
            return Err(ServiceError::invalid(
                "the aggregator serves recall tickets",
            ));
        };
        let cfg = &self.ctx.cfg.aggregator;
        let query = RecallQuery::check(
            req.user_id,
            Some(req.k as usize),
            req.at,
            req.since,
            &req.channels,
            cfg,
            &self.ctx.cfg.limits,
            now_ms(),
        )?;
        let items = recall::recall(&self.ctx.cluster, &self.ctx.cfg, &query).await?;
        Ok((candidates_schema(), vec![Candidate::to_batch(&items)]))
    }

    async fn put(&self, _: PutCommand, _: Vec<RecordBatch>) -> ServiceResult<u64> {
        Err(ServiceError::invalid(
            "the aggregator takes writes over HTTP: POST /v1/items, /v1/events, /v1/users",
        ))
    }
}

impl Service {
    /// Serves the public API on `http_port` (0: any free port).
    pub async fn start(ctx: &Context, node_id: String, http_port: u16) -> crate::Result<Self> {
        let handler = Arc::new(RecallHandler { ctx: ctx.clone() });
        let node = ctx
            .serve(
                Role::Aggregator,
                node_id,
                handler,
                crate::api::routes(ctx.clone()),
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
