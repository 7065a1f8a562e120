//! The traffic controller's Flight face (register, count, read the ledger) and a read-only HTTP
//! view of the ledger (`GET /v1/ledger?item_ids=1,2`).

use crate::config::TrafficConfig;
use crate::ledger::{Count, Ledger, Register, SetPolicy, SharedBook};
use crate::policy::Policy;
use crate::Error;
use actix::{Addr, SyncArbiter};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::Json;
use coldstart_contracts::traffic::proto::{
    traffic_command, traffic_ticket, TrafficCommand, TrafficTicket,
};
use coldstart_contracts::traffic::{
    boosts_schema, ledger_schema, BoostRow, Exposure, LedgerRow, Registration, TrafficProtocol,
};
use coldstart_runtime::discovery::{Role, ValueKind};
use coldstart_runtime::flight::{not_served, FlightHandler};
use coldstart_runtime::node::{Context, RunningNode};
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

const MAX_LEDGER_ROWS: usize = 10_000;

/// A running traffic controller.
pub struct Service {
    node: RunningNode,
    settings: tokio::task::JoinHandle<()>,
}

/// Applies each value of `settings/traffic` (keys over the file's `[traffic]`) to the ledger's
/// policy as it changes; an impossible one is logged, naming the key, and the policy in force
/// stays.
async fn follow_settings(
    mut rx: tokio::sync::watch::Receiver<Option<String>>,
    file: TrafficConfig,
    ledger: Addr<Ledger>,
) {
    loop {
        let value = rx.borrow_and_update().clone();
        if let Some(v) = value {
            match file
                .overlaid(&v)
                .and_then(|c| Policy::new(c).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    if ledger.send(SetPolicy(p)).await.is_err() {
                        return;
                    }
                    tracing::info!(settings = %v, "traffic policy changed (settings/traffic)");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "settings/traffic refused; the policy in force stays")
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

struct Handler {
    ledger: Addr<Ledger>,
    book: SharedBook,
}

#[async_trait::async_trait]
impl FlightHandler<TrafficProtocol> for Handler {
    async fn get(&self, ticket: TrafficTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        let req = match ticket.kind {
            Some(traffic_ticket::Kind::Ledger(req)) => req,
            Some(traffic_ticket::Kind::Boosts(b)) => {
                if b.item_ids.len() > MAX_LEDGER_ROWS {
                    return Err(ServiceError::invalid(format!(
                        "boosts: {} item ids, at most {MAX_LEDGER_ROWS}",
                        b.item_ids.len()
                    )));
                }
                // only the rows that help: an item without one is not boosted or forceable
                let rows: Vec<BoostRow> = {
                    let book = self.book.read();
                    book.state.boosts(&b.item_ids, b.at, &book.policy)
                };
                let helped: Vec<BoostRow> = rows
                    .into_iter()
                    .filter(|r| r.boost > 1.0 || r.forceable)
                    .collect();
                return Ok((boosts_schema(), vec![BoostRow::to_batch(&helped)]));
            }
            None => return Err(not_served::<TrafficProtocol>("ticket")),
        };
        if req.item_ids.len() > MAX_LEDGER_ROWS {
            return Err(ServiceError::invalid(format!(
                "{} item ids, at most {MAX_LEDGER_ROWS}",
                req.item_ids.len()
            )));
        }
        let rows = self.book.read().state.rows(&req.item_ids, MAX_LEDGER_ROWS);
        Ok((ledger_schema(), vec![LedgerRow::to_batch(&rows)]))
    }

    async fn put(&self, cmd: TrafficCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        let n = match cmd.kind {
            Some(traffic_command::Kind::RegisterItems(_)) => {
                let mut regs = Vec::new();
                for b in &batches {
                    regs.extend(Registration::from_batch(b)?);
                }
                self.ledger
                    .send(Register(regs))
                    .await
                    .map_err(Error::from)??
            }
            Some(traffic_command::Kind::CountExposures(_)) => {
                let mut ex = Vec::new();
                for b in &batches {
                    ex.extend(Exposure::from_batch(b)?);
                }
                self.ledger.send(Count(ex)).await.map_err(Error::from)??
            }
            None => return Err(not_served::<TrafficProtocol>("command")),
        };
        Ok(n as u64)
    }
}

#[derive(serde::Deserialize)]
struct LedgerQuery {
    #[serde(default)]
    item_ids: String,
}

async fn ledger_http(
    State(book): State<SharedBook>,
    Query(q): Query<LedgerQuery>,
) -> Result<Json<Vec<LedgerRow>>, ServiceError> {
    let ids = q
        .item_ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                ServiceError::invalid(format!("item_ids: {s:?} is not an unsigned integer"))
            })
        })
        .collect::<ServiceResult<Vec<u64>>>()?;
    if ids.len() > MAX_LEDGER_ROWS {
        return Err(ServiceError::invalid(format!(
            "item_ids: {} ids, at most {MAX_LEDGER_ROWS}",
            ids.len()
        )));
    }
    Ok(Json(book.read().state.rows(&ids, 1000)))
}

impl Service {
    /// Replays the ledger under `{data_dir}/{node_id}` and serves.
    pub async fn start(
        ctx: &Context,
        cfg: &TrafficConfig,
        node_id: String,
        http_port: u16,
    ) -> crate::Result<Self> {
        let dir = ctx.data_dir(&node_id)?;
        let policy = Policy::new(cfg.clone())
            .map_err(|e| ServiceError::invalid(format!("traffic policy: {e}")))?;
        let opened = tokio::task::spawn_blocking({
            let (dir, policy) = (dir.clone(), policy.clone());
            move || Ledger::open(&dir, policy)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("ledger open task: {e}")))??;
        let book = opened.book();
        let cell = Arc::new(parking_lot::Mutex::new(Some(opened)));
        let reopen = book.clone();
        let ledger = ctx.actors.run(move || {
            SyncArbiter::start(1, move || match cell.lock().take() {
                Some(l) => l,
                None => Ledger::open_into(&dir, reopen.clone()).expect("reopen ledger"),
            })
        });
        let settings = tokio::spawn(follow_settings(
            ctx.registry.watch_value(ValueKind::Setting, "traffic"),
            cfg.clone(),
            ledger.clone(),
        ));
        let routes = axum::Router::new()
            .route("/v1/ledger", get(ledger_http))
            .with_state(book.clone());
        let node = ctx
            .serve(
                Role::Traffic,
                node_id,
                Arc::new(Handler { ledger, book }) as Arc<dyn FlightHandler<TrafficProtocol>>,
                routes,
                http_port,
            )
            .await?;
        Ok(Self { node, settings })
    }

    /// Deregisters and stops.
    pub async fn shutdown(self) {
        self.settings.abort();
        self.node.shutdown().await;
    }
}
