//! The profile service's Flight face (ingest events and users, serve profiles and popularity
//! boards) and an HTTP view of one profile (`GET /v1/profile/{user_id}`). Writes go to the
//! partition's single writer ([`crate::writer`]); reads use its snapshot.

use crate::config::ProfileConfig;
use crate::state::Profiles;
use crate::writer::{Batch, ProfileWriter, Snapshot, Write};
use crate::Error;
use actix::prelude::*;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Json;
use coldstart_contracts::profile::proto::{
    profile_command, profile_ticket, ProfileCommand, ProfileTicket,
};
use coldstart_contracts::profile::ProfileProtocol;
use coldstart_contracts::profile::{
    popular_schema, profile_schema, Event, LoggedEvent, PopularHit, User,
};
use coldstart_contracts::sharder::SharderClient;
use coldstart_contracts::traffic::Exposure;
use coldstart_contracts::traffic::TrafficClient;
use coldstart_contracts::validate;
use coldstart_runtime::config::LimitsConfig;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::{not_served, FlightHandler};
use coldstart_runtime::node::{Context, RunningNode};
use coldstart_runtime::now_ms;
use coldstart_runtime::{ErrorCode, ServiceError, ServiceResult};
use std::sync::Arc;
use tracing::warn;

/// Groups one popular ticket may ask for.
const MAX_POPULAR_GROUPS: usize = 16;

/// A running profile service.
pub struct Service {
    node: RunningNode,
}

struct ProfileHandler {
    writer: Addr<ProfileWriter>,
    profiles: Snapshot,
    sharder: SharderClient,
    traffic: TrafficClient,
    limits: LimitsConfig,
    cfg: ProfileConfig,
}

impl ProfileHandler {
    async fn ingest_events(&self, events: Vec<Event>) -> ServiceResult<u64> {
        let now = now_ms();
        validate::events(&events, &self.limits, now)?;
        let ids: Vec<u64> = events.iter().map(|e| e.item_id).collect();
        let meta = self.sharder.item_meta(&ids).await?;
        let mut logged = Vec::with_capacity(events.len());
        for (r, e) in events.into_iter().enumerate() {
            let Some(m) = meta.get(&e.item_id) else {
                return Err(ServiceError::bad_row(
                    r,
                    "item_id",
                    format!("item {} is unknown: publish it first", e.item_id),
                ));
            };
            logged.push(LoggedEvent {
                item_publish_ts: m.publish_ts,
                category: m.category.clone(),
                keywords: m.keywords.clone(),
                event: e,
            });
        }
        let n = logged.len() as u64;
        let window_ms = (self.cfg.new_item_window_h * 3_600_000.0) as i64;
        let exposures: Vec<Exposure> = logged
            .iter()
            .filter(|l| l.event.action.is_exposure())
            .filter(|l| l.event.ts - l.item_publish_ts < window_ms)
            .map(|l| Exposure {
                item_id: l.event.item_id,
                user_id: l.event.user_id,
                ts: l.event.ts,
                action: l.event.action,
                request_id: l.event.request_id.clone(),
            })
            .collect();
        self.writer
            .send(Write(Batch::Events(logged)))
            .await
            .map_err(Error::from)??;
        if !exposures.is_empty() {
            self.forward(exposures).await?;
        }
        Ok(n)
    }

    /// Sends exposures to the traffic partitions that own their items, retrying briefly.
    async fn forward(&self, exposures: Vec<Exposure>) -> ServiceResult<()> {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
            }
            match self.traffic.count_exposures(&exposures).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, attempt, "forwarding exposures to traffic failed");
                    last = Some(e);
                }
            }
        }
        let e = last.unwrap_or_else(|| ServiceError::unavailable("no traffic member"));
        Err(ServiceError::new(
            ErrorCode::Unavailable,
            format!(
                "events were stored, but forwarding exposures to traffic failed: {}",
                e.text()
            ),
        ))
    }

    async fn upsert_users(&self, users: Vec<User>) -> ServiceResult<u64> {
        validate::users(&users, &self.limits, now_ms())?;
        // the whole batch is refused before anything is written
        check_age_buckets(&users, &self.cfg.age_buckets)?;
        let n = users.len() as u64;
        self.writer
            .send(Write(Batch::Users(users)))
            .await
            .map_err(Error::from)??;
        Ok(n)
    }
}

/// Refuses a user whose `age_bucket` is not one of `buckets` (empty: any), naming the row, the
/// value and what was expected.
fn check_age_buckets(users: &[User], buckets: &[String]) -> ServiceResult<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    for (r, u) in users.iter().enumerate() {
        if let Some(b) = u.age_bucket.as_ref().filter(|b| !buckets.contains(b)) {
            return Err(ServiceError::bad_row(
                r,
                "age_bucket",
                format!(
                    "{b:?} is not an age bucket; expected one of {} (profile.age_buckets)",
                    buckets.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl FlightHandler<ProfileProtocol> for ProfileHandler {
    async fn get(&self, ticket: ProfileTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        match ticket.kind {
            Some(profile_ticket::Kind::Profile(req)) => {
                let view = self.profiles.read(|p| p.view(req.user_id, req.at));
                Ok((
                    profile_schema(),
                    view.map(|v| vec![v.to_batch()]).unwrap_or_default(),
                ))
            }
            Some(profile_ticket::Kind::Popular(req)) => {
                if req.groups.len() > MAX_POPULAR_GROUPS {
                    return Err(ServiceError::invalid(format!(
                        "field `groups`: {} groups, at most {MAX_POPULAR_GROUPS}",
                        req.groups.len()
                    )));
                }
                let limit = (req.limit as usize).min(self.cfg.popular_capacity);
                let hits = self
                    .profiles
                    .read(|p| popular_hits(p, &req.groups, req.at, limit));
                Ok((popular_schema(), vec![PopularHit::to_batch(&hits)]))
            }
            None => Err(not_served::<ProfileProtocol>("ticket")),
        }
    }

    async fn put(&self, cmd: ProfileCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        match cmd.kind {
            Some(profile_command::Kind::IngestEvents(_)) => {
                let mut events = Vec::new();
                for b in &batches {
                    events.extend(Event::from_batch(b)?);
                }
                self.ingest_events(events).await
            }
            Some(profile_command::Kind::UpsertUsers(_)) => {
                let mut users = Vec::new();
                for b in &batches {
                    users.extend(User::from_batch(b)?);
                }
                self.upsert_users(users).await
            }
            None => Err(not_served::<ProfileProtocol>("command")),
        }
    }
}

/// The boards of `groups` at `at`, each hit numbered by its group's place in the request.
fn popular_hits(p: &Profiles, groups: &[String], at: i64, limit: usize) -> Vec<PopularHit> {
    let mut out = Vec::new();
    for (q, g) in groups.iter().enumerate() {
        out.extend(
            p.popular(g, at, limit)
                .into_iter()
                .map(|(item_id, publish_ts, score)| PopularHit {
                    query: q as u32,
                    item_id,
                    publish_ts,
                    score,
                }),
        );
    }
    out
}

#[derive(serde::Serialize)]
struct ProfileJson {
    user_id: u64,
    is_new: bool,
    interactions: u64,
    categories: Vec<(String, f32)>,
    keywords: Vec<(String, f32)>,
    seen: Vec<u64>,
    liked: Vec<u64>,
    collected: Vec<u64>,
    shared: Vec<u64>,
    group: Option<String>,
    interests: Vec<String>,
}

async fn profile_http(
    State(profiles): State<Snapshot>,
    Path(user_id): Path<u64>,
) -> Result<Json<ProfileJson>, ServiceError> {
    let v = profiles
        .read(|p| p.view(user_id, now_ms()))
        .ok_or_else(|| {
            ServiceError::new(ErrorCode::NotFound, format!("user {user_id} is unknown"))
        })?;
    Ok(Json(ProfileJson {
        user_id: v.user_id,
        is_new: v.is_new,
        interactions: v.interactions,
        categories: v.categories,
        keywords: v.keywords,
        seen: v.seen,
        liked: v.liked,
        collected: v.collected,
        shared: v.shared,
        group: v.group,
        interests: v.interests,
    }))
}

impl Service {
    /// Rebuilds profiles from the log under `{data_dir}/{node_id}/log` and serves.
    pub async fn start(
        ctx: &Context,
        cfg: &ProfileConfig,
        node_id: String,
        http_port: u16,
    ) -> crate::Result<Self> {
        let dir = ctx.data_dir(&node_id)?.join("log");
        let pcfg = cfg.clone();
        let (writer, snapshot) = tokio::task::spawn_blocking({
            let (dir, pcfg) = (dir.clone(), pcfg.clone());
            move || ProfileWriter::open(&dir, pcfg)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("profile open task: {e}")))??;
        let cell = Arc::new(parking_lot::Mutex::new(Some(writer)));
        let shared = snapshot.clone();
        let writer = ctx.actors.run(move || {
            // one thread: the single writer
            SyncArbiter::start(1, move || match cell.lock().take() {
                Some(w) => w,
                // the arbiter restarts a panicked actor by calling the factory again: rebuild
                // from the log, which holds every batch that was applied
                None => ProfileWriter::reopen(&dir, pcfg.clone(), &shared)
                    .expect("reopen the profile log"),
            })
        });
        let routes = axum::Router::new()
            .route("/v1/profile/{user_id}", get(profile_http))
            .with_state(snapshot.clone());
        let handler: Arc<dyn FlightHandler<ProfileProtocol>> = Arc::new(ProfileHandler {
            writer,
            profiles: snapshot,
            sharder: SharderClient::new(ctx.cluster.clone()),
            traffic: TrafficClient::new(ctx.cluster.clone()),
            limits: ctx.cfg.limits.clone(),
            cfg: cfg.clone(),
        });
        let node = ctx
            .serve(Role::Profile, node_id, handler, routes, http_port)
            .await?;
        Ok(Self { node })
    }

    /// Deregisters and stops.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::profile::ProfileClient;
    use coldstart_runtime::cluster::Routing;
    use coldstart_runtime::discovery::MemoryRegistry;
    use coldstart_runtime::ProcessConfig;

    fn user(region: String) -> User {
        User {
            user_id: 7,
            signup_ts: 1_700_000_000_000,
            region: Some(region),
            ..Default::default()
        }
    }

    /// The region in the newest `users` file of the log: what a replay ends with.
    fn last_logged(dir: &std::path::Path) -> Option<String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("-users.parquet"))
            .collect();
        files.sort();
        let batches = coldstart_runtime::parquet_io::read_all(files.last()?).unwrap();
        User::from_batch(&batches[0]).unwrap()[0].region.clone()
    }

    // Concurrent writes to one user: the state served must be the state the log replays to.
    // When the log and the state had two owners, batches logged A, B could be applied B, A:
    // with the log append and the apply sent as two messages and a scheduling delay of up to
    // 1.4 ms between them, this test failed in every one of three runs (rounds 1 to 6).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_served_state_is_the_state_the_log_replays_to() {
        let data = tempfile::tempdir().unwrap();
        let mut process = ProcessConfig::default();
        process.node.data_dir = data.path().to_path_buf();
        process.discovery.backend = "memory".into();
        let cfg = ProfileConfig {
            group_by: vec!["region".into()],
            ..Default::default()
        };
        let routing = Routing {
            replication: 1,
            call_timeout: std::time::Duration::from_secs(5),
        };
        let ctx = Context::new(process, routing, Arc::new(MemoryRegistry::new()), true);
        let client = ProfileClient::new(ctx.cluster.clone());
        let log_dir = data.path().join("profile-0").join("log");
        let svc = Service::start(&ctx, &cfg, "profile-0".into(), 0)
            .await
            .unwrap();
        for round in 0..20 {
            let writes = (0..16).map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .upsert_users(&[user(format!("r{round}-{i}"))])
                        .await
                        .unwrap()
                })
            });
            for w in futures::future::join_all(writes).await {
                assert_eq!(w.unwrap(), 1);
            }
            let live = client.profile(7, 0).await.unwrap().group;
            assert_eq!(
                live,
                last_logged(&log_dir),
                "round {round}: the live profile is not the last batch of the log"
            );
        }
        let live = client.profile(7, 0).await.unwrap();
        svc.shutdown().await;
        let svc = Service::start(&ctx, &cfg, "profile-0".into(), 0)
            .await
            .unwrap();
        assert_eq!(client.profile(7, 0).await.unwrap(), live, "replayed state");
        svc.shutdown().await;
    }
}
