//! The sharder's Flight face and its start: open the store, register as joining, catch up from the
//! peers that hold replicas of this node's keys, then serve.

use crate::config::SharderConfig;
use crate::index::Index;
use crate::model::{model_http, ShardModelSlot, Swapper};
use crate::store::{Apply, Store};
use crate::Error;
use actix::{Addr, SyncArbiter};
use arc_swap::ArcSwapOption;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::routing::get;
use coldstart_contracts::sharder::proto::{
    sharder_command, sharder_ticket, DumpRequest, SharderCommand, SharderTicket,
};
use coldstart_contracts::sharder::{
    item_scores_schema, list_hits_schema, postings_schema, ItemScore, ListHit, Posting,
};
use coldstart_contracts::sharder::{pool_hits_schema, PoolHit, SharderClient, SharderProtocol};
use coldstart_contracts::types::ListKind;
use coldstart_runtime::discovery::{Announcer, MemberState, Role};
use coldstart_runtime::flight::{not_served, FlightHandler};
use coldstart_runtime::http::Health;
use coldstart_runtime::node::{Context, NodeSpec, RunningNode};
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Longest user vector a similarity ticket may carry.
const MAX_VECTOR_DIM: usize = 4096;

/// A user vector from a peer: finite, of 1..=MAX_VECTOR_DIM values.
fn check_user(user: &[f32]) -> ServiceResult<()> {
    if user.is_empty() || user.len() > MAX_VECTOR_DIM || user.iter().any(|x| !x.is_finite()) {
        return Err(ServiceError::invalid(format!(
            "field `user`: a finite vector of 1..={MAX_VECTOR_DIM} values is needed, got {}",
            user.len()
        )));
    }
    Ok(())
}

/// A running sharder.
pub struct Service {
    node: RunningNode,
    index: Arc<Index>,
}

struct Handler {
    index: Arc<Index>,
    store: Addr<Store>,
    max_rows: usize,
}

#[async_trait::async_trait]
impl FlightHandler<SharderProtocol> for Handler {
    async fn get(&self, ticket: SharderTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        match ticket.kind {
            Some(sharder_ticket::Kind::Lists(req)) => {
                if req.queries.len() > self.max_rows {
                    return Err(ServiceError::invalid(format!(
                        "{} list queries, at most {}",
                        req.queries.len(),
                        self.max_rows
                    )));
                }
                let kinds = req
                    .queries
                    .iter()
                    .enumerate()
                    .map(|(i, q)| {
                        q.kind.parse::<ListKind>().map_err(|e| {
                            ServiceError::invalid(format!("field `queries[{i}].kind`: {e}"))
                        })
                    })
                    .collect::<ServiceResult<Vec<ListKind>>>()?;
                let mut hits =
                    Vec::with_capacity(req.queries.iter().map(|q| q.limit.min(64) as usize).sum());
                self.index.read_many(
                    req.queries
                        .iter()
                        .zip(kinds)
                        .map(|(q, kind)| (kind, q.key.as_str(), q.limit as usize)),
                    req.until,
                    |i, entries| {
                        hits.extend(entries.iter().map(|e| ListHit {
                            query: i as u32,
                            item_id: e.item_id,
                            publish_ts: e.publish_ts,
                        }))
                    },
                );
                Ok((list_hits_schema(), vec![ListHit::to_batch(&hits)]))
            }
            Some(sharder_ticket::Kind::ItemMeta(req)) => {
                if req.item_ids.len() > self.max_rows {
                    return Err(ServiceError::invalid(format!(
                        "{} item ids, at most {}",
                        req.item_ids.len(),
                        self.max_rows
                    )));
                }
                let rows: Vec<Posting> = req
                    .item_ids
                    .iter()
                    .filter_map(|&id| self.index.item(id).map(Posting::Item))
                    .collect();
                Ok((postings_schema(), vec![Posting::to_batch(&rows)]))
            }
            Some(sharder_ticket::Kind::Similarity(req)) => {
                if req.item_ids.len() > self.max_rows {
                    return Err(ServiceError::invalid(format!(
                        "field `item_ids`: {} ids, at most {}",
                        req.item_ids.len(),
                        self.max_rows
                    )));
                }
                check_user(&req.user)?;
                let rows = self
                    .index
                    .similarity(&req.item_ids, &req.version, &req.user);
                Ok((item_scores_schema(), vec![ItemScore::to_batch(&rows)]))
            }
            Some(sharder_ticket::Kind::Dump(DumpRequest {
                requester,
                members,
                replication,
            })) => {
                let rows = self
                    .index
                    .owned_by(&requester, &members, replication.max(1) as usize);
                Ok((postings_schema(), vec![Posting::to_batch(&rows)]))
            }
            Some(sharder_ticket::Kind::Pools(req)) => {
                if req.k as usize > self.max_rows {
                    return Err(ServiceError::invalid(format!(
                        "field `k`: {}, at most {}",
                        req.k, self.max_rows
                    )));
                }
                check_user(&req.user)?;
                // an exact scan of up to a month of items: CPU work, off the async workers
                let index = self.index.clone();
                let hits = tokio::task::spawn_blocking(move || {
                    index.pools(&req.version, &req.user, req.at, req.since, req.k as usize)
                })
                .await
                .map_err(|e| ServiceError::internal(format!("pool search task: {e}")))??;
                Ok((pool_hits_schema(), vec![PoolHit::to_batch(&hits)]))
            }
            None => Err(not_served::<SharderProtocol>("ticket")),
        }
    }

    async fn put(&self, cmd: SharderCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        let Some(sharder_command::Kind::IndexPostings(_)) = cmd.kind else {
            return Err(not_served::<SharderProtocol>("command"));
        };
        let mut postings = Vec::new();
        for b in &batches {
            postings.extend(Posting::from_batch(b)?);
        }
        self.index.check_towers(&postings)?;
        let n = self
            .store
            .send(Apply(postings))
            .await
            .map_err(Error::from)??;
        Ok(n as u64)
    }
}

/// `GET /v1/index`: list and forward-index sizes, with the heap bytes they hold, and the pools'
/// vectors per two-tower version.
#[derive(serde::Deserialize)]
struct ItemsQuery {
    #[serde(default)]
    ids: String,
}

/// The forward-index rows this node holds of `ids` (operators, `cargo xtask chaos`): item,
/// publish time, cluster.
async fn items_http(
    axum::extract::State(index): axum::extract::State<Arc<Index>>,
    axum::extract::Query(q): axum::extract::Query<ItemsQuery>,
) -> Result<axum::Json<Vec<serde_json::Value>>, ServiceError> {
    const MAX_IDS: usize = 10_000;
    let ids = q
        .ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                ServiceError::invalid(format!("ids: {s:?} is not an unsigned integer"))
            })
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if ids.len() > MAX_IDS {
        return Err(ServiceError::invalid(format!(
            "ids: {} ids, at most {MAX_IDS}",
            ids.len()
        )));
    }
    Ok(axum::Json(
        ids.iter()
            .filter_map(|&id| index.item(id))
            .map(|r| {
                serde_json::json!({
                    "item_id": r.item_id,
                    "publish_ts": r.publish_ts,
                    "cluster": r.cluster.map(|c| c.to_string()),
                })
            })
            .collect(),
    ))
}

#[derive(serde::Deserialize)]
struct UnfiledQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// The items this node holds filed in no cluster, a page at a time by id (`coldstart refile`):
/// `{"items": [{"item_id", "publish_ts"}], "total": N, "next": last id or null}`.
async fn unfiled_http(
    axum::extract::State(index): axum::extract::State<Arc<Index>>,
    axum::extract::Query(q): axum::extract::Query<UnfiledQuery>,
) -> Result<axum::Json<serde_json::Value>, ServiceError> {
    const MAX_PAGE: usize = 10_000;
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::invalid(format!(
            "limit: {limit} is not in 1..={MAX_PAGE}"
        )));
    }
    let index = index.clone();
    let (page, total) = tokio::task::spawn_blocking(move || index.unfiled(q.after, limit))
        .await
        .map_err(|e| ServiceError::internal(format!("unfiled task: {e}")))?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|r| r.0))
        .flatten();
    Ok(axum::Json(serde_json::json!({
        "items": page
            .iter()
            .map(|&(item_id, publish_ts)| serde_json::json!({"item_id": item_id, "publish_ts": publish_ts}))
            .collect::<Vec<_>>(),
        "total": total,
        "next": next,
    })))
}

async fn index_http(
    axum::extract::State(index): axum::extract::State<Arc<Index>>,
) -> axum::Json<crate::index::IndexStats> {
    axum::Json(index.stats())
}

/// The two-tower models the pools are filed under (derived state: rebuilt from the forward
/// index, nothing to log). A staged version (`models/two-tower-next`) gets its pools built beside
/// the running one's and is announced as `next_tower_model`; an activated one (`models/two-tower`)
/// is filed again (a rebuild swapped in whole, so a staged version's complete pools stay
/// searchable throughout), announced as `tower_model`, and the pools kept are its own, the staged one's and the version it replaced
/// (aggregators still on it find its pools until they swap; the next stage drops them).
fn follow_towers(ctx: &Context, index: &Arc<Index>, announcer: &Announcer) {
    // (the version activated last, the one it replaced)
    let previous: Arc<parking_lot::Mutex<(Option<String>, Option<String>)>> = Arc::default();
    for (name, slot, staged) in [
        (
            coldstart_artifact::TWO_TOWER_MODEL_NEXT,
            index.tower_next.clone(),
            true,
        ),
        (
            coldstart_artifact::TWO_TOWER_MODEL,
            index.tower.clone(),
            false,
        ),
    ] {
        let (index, announcer, previous) = (index.clone(), announcer.clone(), previous.clone());
        coldstart_artifact::follow_two_tower(ctx.registry.as_ref(), name, slot, move |m| {
            let (index, announcer, previous) = (index.clone(), announcer.clone(), previous.clone());
            tokio::task::spawn_blocking(move || {
                let n = index.refile_towers(&m);
                let (running, replaced) = {
                    let mut p = previous.lock();
                    if !staged && p.0.as_deref() != Some(m.version.as_str()) {
                        p.1 = p.0.replace(m.version.clone());
                    }
                    p.clone()
                };
                let next = index.tower_next.load_full().map(|t| t.version.clone());
                // a new stage drops the version replaced before it: aggregators have moved on
                let replaced = replaced.filter(|_| !staged);
                let keep: Vec<&str> = [running.as_deref(), next.as_deref(), replaced.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                index.keep_tower_versions(&keep);
                info!(model = name, version = %m.version, items = n, kept = ?keep, "new-item pools filed under the two-tower model");
                // announced once the pools hold what this node has under the version
                if staged {
                    announcer.set_next_tower_model(&m.version);
                } else {
                    announcer.set_tower_model(&m.version);
                }
            });
        });
    }
}

impl Service {
    /// Opens the store under `{data_dir}/{node_id}`, starts serving as joining, catches up from
    /// peers and turns serving.
    pub async fn start(
        ctx: &Context,
        sharder: &SharderConfig,
        node_id: String,
        http_port: u16,
    ) -> crate::Result<Self> {
        let cfg = &ctx.cfg;
        let dir = ctx.data_dir(&node_id)?;
        let index = Arc::new(Index::with_pools(
            sharder.max_list_len,
            sharder.recent_list_len,
            crate::pools::Pools::new(sharder.pool_hours.clone()),
        ));
        let store = {
            let index = index.clone();
            let snap = crate::store::SnapshotRule {
                wal_bytes: sharder.snapshot_wal_bytes,
                wal_records: sharder.snapshot_wal_records,
            };
            let dir2 = dir.clone();
            // Open (and replay) off the async workers; it reads the whole log.
            let opened = tokio::task::spawn_blocking({
                let index = index.clone();
                move || Store::open(&dir2, index, snap)
            })
            .await
            .map_err(|e| ServiceError::internal(format!("store open task: {e}")))??;
            let cell = Arc::new(parking_lot::Mutex::new(Some(opened)));
            let index = index.clone();
            ctx.actors.run(move || {
                SyncArbiter::start(1, move || match cell.lock().take() {
                    Some(store) => store,
                    // The arbiter restarts a panicked actor by calling the factory again: reopen
                    // from disk, which replays the log into the (idempotent) index.
                    None => Store::open(&dir, index.clone(), snap).expect("reopen sharder store"),
                })
            })
        };
        let health = Arc::new(Health::default());
        let model: ShardModelSlot = Arc::new(ArcSwapOption::empty());
        let handler: Arc<dyn FlightHandler<SharderProtocol>> = Arc::new(Handler {
            index: index.clone(),
            store: store.clone(),
            max_rows: cfg.limits.max_batch_rows,
        });
        let node = ctx
            .start_node(
                NodeSpec {
                    role: Role::Sharder,
                    node_id: node_id.clone(),
                    handler,
                    routes: axum::Router::new()
                        .route("/v1/model", get(model_http))
                        .with_state(model.clone())
                        .merge(
                            axum::Router::new()
                                .route("/v1/index", get(index_http))
                                .route("/v1/items", get(items_http))
                                .route("/v1/items/unfiled", get(unfiled_http))
                                .with_state(index.clone()),
                        ),
                    health: health.clone(),
                    initial_state: MemberState::Joining,
                },
                http_port,
            )
            .await?;
        // a catch-up that could not be applied here (the disk) keeps this node from serving; a
        // peer unreachable after retries is logged and counted, and the node serves without it
        catch_up(ctx, &node_id, &store, &index).await?;
        // after the catch-up, so that re-filing sees every item this node holds
        Swapper {
            node_id: node_id.clone(),
            index: index.clone(),
            store: store.clone(),
            cluster: ctx.cluster.clone(),
            replication: sharder.replication,
            keep: sharder.model_versions_kept,
            slot: model,
            announcer: node.registration.announcer(),
        }
        .watch(ctx);
        follow_towers(ctx, &index, &node.registration.announcer());
        node.registration.set_state(MemberState::Serving);
        health.set_ready(true);
        let s = index.stats();
        info!(node_id = %node_id, lists = s.lists, entries = s.entries, items = s.items, "sharder serving");
        Ok(Self { node, index })
    }

    /// Index sizes.
    pub fn stats(&self) -> crate::index::IndexStats {
        self.index.stats()
    }

    /// Deregisters and stops.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

/// Tries per peer before the catch-up goes on without it.
const CATCH_UP_ATTEMPTS: u32 = 3;

/// Pulls, from every other sharder, the postings of keys this node owns in the current
/// membership, and applies them durably. A peer that cannot answer after
/// [`CATCH_UP_ATTEMPTS`] is skipped, saying so (a dead peer's keys are on another replica, and it
/// pushes nothing new meanwhile; counted as `sharder_catch_up_skipped`); postings that cannot be
/// applied here are an error: the node must not serve without them.
async fn catch_up(
    ctx: &Context,
    node_id: &str,
    store: &Addr<Store>,
    index: &Index,
) -> Result<(), Error> {
    let mut watch = ctx.registry.watch();
    // `wait_for` hands back a read guard on the membership; keep only whether it arrived, or the
    // guard would block the watch's writer (and, behind it, every reader) for the whole catch-up.
    let seen_self = tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|m| m.get(Role::Sharder, node_id).is_some()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !seen_self {
        warn!(
            node_id,
            "own member key not seen within 5 s, catching up with the membership at hand"
        );
    }
    let membership = ctx.cluster.membership();
    let sharders = membership.role(Role::Sharder);
    let mut members: Vec<String> = sharders.iter().map(|m| m.node_id.clone()).collect();
    if !members.iter().any(|m| m == node_id) {
        members.push(node_id.to_string());
        members.sort();
    }
    let req = DumpRequest {
        requester: node_id.to_string(),
        members: members.clone(),
        replication: ctx.cluster.replication() as u32,
    };
    let client = SharderClient::new(ctx.cluster.clone());
    for peer in sharders.iter().filter(|m| m.node_id != node_id) {
        let mut attempt = 1;
        let dumped = loop {
            match client.dump(&peer.flight_addr, req.clone()).await {
                Ok(d) => break Some(d),
                Err(e) if attempt < CATCH_UP_ATTEMPTS => {
                    warn!(peer = %peer.node_id, error = %e, attempt, "catch-up from peer failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    warn!(peer = %peer.node_id, error = %e, attempts = attempt, "serving without the catch-up from this peer: it did not answer; its keys are on their other replicas");
                    coldstart_runtime::http::count("sharder_catch_up_skipped", 1);
                    break None;
                }
            }
        };
        let Some(dumped) = dumped else { continue };
        let dumped_n = dumped.len();
        let postings = index.missing(dumped);
        let n = postings.len();
        for chunk in postings.chunks(50_000) {
            store.send(Apply(chunk.to_vec())).await??;
        }
        info!(peer = %peer.node_id, dumped = dumped_n, missing = n, "caught up from peer");
    }
    Ok(())
}
