//! The aggregator's start and its Flight face: recall (the first hop of the recall path; the
//! public HTTP routes are in [`crate::api`]). A stateless handler: it owns no state and no actor,
//! only the clients of the services it calls.

use crate::config::Settings;
use crate::recall;
use crate::request::RecallQuery;
use crate::served_log::ServedLog;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use coldstart_artifact::TwoTowerSlot;
use coldstart_contracts::aggregator::proto::{
    aggregator_ticket, AggregatorCommand, AggregatorTicket,
};
use coldstart_contracts::aggregator::{candidates_schema, AggregatorProtocol, Candidate};
use coldstart_contracts::Clients;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::{not_served, FlightHandler};
use coldstart_runtime::node::{Context, RunningNode};
use coldstart_runtime::{now_ms, ServiceError, ServiceResult};
use std::sync::Arc;

/// A running aggregator.
pub struct Service {
    node: RunningNode,
    served: Option<Arc<ServedLog>>,
    settings_task: tokio::task::JoinHandle<()>,
}

impl Service {
    /// The HTTP address the public API listens on.
    pub fn http_addr(&self) -> &str {
        &self.node.member.http_addr
    }
}

/// What the aggregator's handlers (Flight and HTTP) share: the process context and the clients
/// of the services a recall or a write calls.
#[derive(Clone)]
pub struct Aggregator {
    /// Config, discovery, routing.
    pub ctx: Context,
    /// Profile, encoder and sharder clients.
    pub clients: Clients,
    /// Its section and what it needs of others'.
    pub settings: Arc<Settings>,
    /// The two-tower model etcd names, for the user tower (`None` before one is named).
    pub tower: TwoTowerSlot,
    /// Where answers are logged (`aggregator.served_log`).
    pub served: Option<Arc<ServedLog>>,
}

impl Aggregator {
    /// The aggregator of a process.
    pub fn new(ctx: &Context, settings: Settings) -> Self {
        Self {
            ctx: ctx.clone(),
            clients: Clients::new(ctx.cluster.clone()),
            settings: Arc::new(settings),
            tower: TwoTowerSlot::default(),
            served: None,
        }
    }

    /// Logs an answer to the served log, when there is one (never waits).
    pub fn log_served(&self, q: &RecallQuery, r: &recall::Recalled) {
        if let Some(log) = &self.served {
            log.log(crate::served_log::rows_of(q, r));
        }
    }
}

struct RecallHandler(Aggregator);

#[async_trait::async_trait]
impl FlightHandler<AggregatorProtocol> for RecallHandler {
    async fn get(&self, ticket: AggregatorTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        let Some(aggregator_ticket::Kind::Recall(req)) = ticket.kind else {
            return Err(not_served::<AggregatorProtocol>("ticket"));
        };
        let ctx = &self.0.ctx;
        let cfg = &self.0.settings.aggregator;
        let mut query = RecallQuery::check(
            req.user_id,
            Some(req.k as usize),
            req.at,
            req.since,
            &req.channels,
            cfg,
            &ctx.cfg.limits,
            now_ms(),
        )?
        .with_request_id(req.request_id.as_deref())?;
        query.logged_in = req.logged_in.unwrap_or(true);
        let tower = self.0.tower.load_full();
        let r = recall::recall(&self.0.clients, &self.0.settings, tower, &query).await?;
        self.0.log_served(&query, &r);
        // the answer names its request id (the caller's, or the one made here)
        let mut meta = std::collections::HashMap::new();
        meta.insert("request_id".to_string(), query.request_id.clone());
        if !r.degraded.is_empty() {
            meta.insert("degraded".to_string(), r.degraded.join(","));
        }
        let schema = Arc::new(candidates_schema().as_ref().clone().with_metadata(meta));
        let batch = Candidate::to_batch(&r.items)
            .with_schema(schema.clone())
            .map_err(|e| ServiceError::internal(format!("candidates batch: {e}")))?;
        Ok((schema, vec![batch]))
    }

    async fn put(&self, _: AggregatorCommand, _: Vec<RecordBatch>) -> ServiceResult<u64> {
        Err(ServiceError::invalid(
            "the aggregator takes writes over HTTP: POST /v1/items, /v1/events, /v1/users",
        ))
    }
}

impl Service {
    /// Serves the public API on `http_port` (0: any free port).
    pub async fn start(
        ctx: &Context,
        settings: Settings,
        node_id: String,
        http_port: u16,
    ) -> crate::Result<Self> {
        let mut agg = Aggregator::new(ctx, settings);
        let cfg = &agg.settings.aggregator;
        if cfg.served_log {
            let dir = if cfg.served_dir.is_empty() {
                ctx.cfg.node.data_dir.join("served")
            } else {
                std::path::PathBuf::from(&cfg.served_dir)
            };
            let log = ServedLog::start(
                dir.clone(),
                &node_id,
                cfg.served_flush_rows,
                cfg.served_flush_ms,
                cfg.served_queue,
            )
            .map_err(|e| ServiceError::unavailable(format!("served log {}: {e}", dir.display())))?;
            tracing::info!(dir = %dir.display(), "served log");
            agg.served = Some(Arc::new(log));
        }
        let served = agg.served.clone();
        // the traffic horizon follows settings/traffic as the traffic controller does
        let horizon = agg.settings.peers.traffic_horizon.clone();
        let mut rx = ctx
            .registry
            .watch_value(coldstart_runtime::discovery::ValueKind::Setting, "traffic");
        let settings_task = tokio::spawn(async move {
            loop {
                if let Some(v) = rx.borrow_and_update().clone() {
                    horizon.follow(&v);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        let tower = agg.tower.clone();
        let handler: Arc<dyn FlightHandler<AggregatorProtocol>> =
            Arc::new(RecallHandler(agg.clone()));
        let node = ctx
            .serve(
                Role::Aggregator,
                node_id,
                handler,
                crate::api::routes(agg),
                http_port,
            )
            .await?;
        coldstart_artifact::run_two_tower(
            ctx.registry.as_ref(),
            tower,
            node.registration.announcer(),
        );
        Ok(Self {
            node,
            served,
            settings_task,
        })
    }

    /// Deregisters, stops, and writes what the served log holds.
    pub async fn shutdown(self) {
        self.settings_task.abort();
        self.node.shutdown().await;
        if let Some(log) = self.served {
            let _ = tokio::task::spawn_blocking(move || log.flush()).await;
        }
    }

    /// Writes what the served log holds now and waits for it (tests, reports).
    pub async fn flush_served(&self) {
        if let Some(log) = self.served.clone() {
            let _ = tokio::task::spawn_blocking(move || log.flush()).await;
        }
    }
}
