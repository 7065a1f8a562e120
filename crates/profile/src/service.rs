//! The profile service's Flight face (ingest events and users, serve profiles) and an HTTP view of
//! one profile (`GET /v1/profile/{user_id}`).

use crate::event_log::{Append, EventLog, Logged};
use crate::state::Profiles;
use crate::Error;
use actix::prelude::*;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Json;
use coldstart_common::cluster::Cluster;
use coldstart_common::discovery::Role;
use coldstart_common::flight::FlightHandler;
use coldstart_common::node::{Context, RunningNode};
use coldstart_common::rows::{
    popular_schema, profile_schema, Event, Exposure, LoggedEvent, PopularHit, ProfileView, User,
};
use coldstart_common::validate::{self, now_ms};
use coldstart_common::{ErrorCode, ServiceError, ServiceResult};
use coldstart_proto::{put_command, ticket, CountExposures, PutCommand, Ticket};
use std::sync::Arc;
use tracing::{info, warn};

/// The actor that owns the profiles.
pub struct ProfileStore {
    profiles: Profiles,
}

impl Actor for ProfileStore {
    type Context = actix::Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct ApplyEvents(Vec<LoggedEvent>);

#[derive(Message)]
#[rtype(result = "()")]
struct ApplyUsers(Vec<User>);

#[derive(Message)]
#[rtype(result = "Option<ProfileView>")]
struct View {
    user_id: u64,
    at: i64,
}

#[derive(Message)]
#[rtype(result = "Vec<PopularHit>")]
struct Popular {
    groups: Vec<String>,
    at: i64,
    limit: usize,
}

impl Handler<Popular> for ProfileStore {
    type Result = Vec<PopularHit>;
    fn handle(&mut self, m: Popular, _: &mut Self::Context) -> Self::Result {
        let mut out = Vec::new();
        for (q, g) in m.groups.iter().enumerate() {
            out.extend(self.profiles.popular(g, m.at, m.limit).into_iter().map(
                |(item_id, publish_ts, score)| PopularHit {
                    query: q as u32,
                    item_id,
                    publish_ts,
                    score,
                },
            ));
        }
        out
    }
}

impl Handler<ApplyEvents> for ProfileStore {
    type Result = ();
    fn handle(&mut self, m: ApplyEvents, _: &mut Self::Context) {
        self.profiles.apply_events(&m.0);
    }
}

impl Handler<ApplyUsers> for ProfileStore {
    type Result = ();
    fn handle(&mut self, m: ApplyUsers, _: &mut Self::Context) {
        self.profiles.upsert_users(&m.0);
    }
}

impl Handler<View> for ProfileStore {
    type Result = Option<ProfileView>;
    fn handle(&mut self, m: View, _: &mut Self::Context) -> Self::Result {
        self.profiles.view(m.user_id, m.at)
    }
}

/// Groups one popular ticket may ask for.
const MAX_POPULAR_GROUPS: usize = 16;

/// A running profile service.
pub struct Service {
    node: RunningNode,
}

struct ProfileHandler {
    store: Addr<ProfileStore>,
    log: Addr<EventLog>,
    cluster: Arc<Cluster>,
    cfg: Arc<coldstart_common::Config>,
}

impl ProfileHandler {
    async fn ingest_events(&self, events: Vec<Event>) -> ServiceResult<u64> {
        let now = now_ms();
        validate::events(&events, &self.cfg.limits, now)?;
        let ids: Vec<u64> = events.iter().map(|e| e.item_id).collect();
        let meta = self.cluster.item_meta(&ids).await?;
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
                category: m.category.clone().unwrap_or_default(),
                keywords: m.keywords.clone().unwrap_or_default(),
                event: e,
            });
        }
        let n = logged.len() as u64;
        self.log
            .send(Append {
                kind: "events",
                batch: LoggedEvent::to_batch(&logged),
            })
            .await
            .map_err(Error::from)??;
        let window_ms = (self.cfg.profile.new_item_window_h * 3_600_000.0) as i64;
        let exposures: Vec<Exposure> = logged
            .iter()
            .filter(|l| matches!(l.event.action.as_str(), "impression" | "click"))
            .filter(|l| l.event.ts - l.item_publish_ts < window_ms)
            .map(|l| Exposure {
                item_id: l.event.item_id,
                user_id: l.event.user_id,
                ts: l.event.ts,
                action: l.event.action.clone(),
            })
            .collect();
        self.store
            .send(ApplyEvents(logged))
            .await
            .map_err(Error::from)?;
        if !exposures.is_empty() {
            self.forward(exposures).await?;
        }
        Ok(n)
    }

    /// Sends exposures to the traffic partitions that own their items, retrying briefly.
    async fn forward(&self, exposures: Vec<Exposure>) -> ServiceResult<()> {
        let cmd = PutCommand {
            kind: Some(put_command::Kind::CountExposures(CountExposures {})),
        };
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
            }
            let parts = match self
                .cluster
                .partition(
                    Role::Traffic,
                    exposures.iter().enumerate().map(|(i, e)| (e.item_id, i)),
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let calls = parts.into_iter().map(|(m, idx)| {
                let batch = Exposure::to_batch(
                    &idx.iter()
                        .map(|&i| exposures[i].clone())
                        .collect::<Vec<_>>(),
                );
                async move {
                    self.cluster
                        .pool
                        .put(&m.flight_addr, &cmd, vec![batch])
                        .await
                }
            });
            match futures::future::try_join_all(calls).await {
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
                e.message
            ),
        ))
    }

    async fn upsert_users(&self, users: Vec<User>) -> ServiceResult<u64> {
        validate::users(&users, &self.cfg.limits, now_ms())?;
        let n = users.len() as u64;
        self.log
            .send(Append {
                kind: "users",
                batch: User::to_batch(&users),
            })
            .await
            .map_err(Error::from)??;
        self.store
            .send(ApplyUsers(users))
            .await
            .map_err(Error::from)?;
        Ok(n)
    }
}

#[async_trait::async_trait]
impl FlightHandler for ProfileHandler {
    async fn get(&self, ticket: Ticket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        match ticket.kind {
            Some(ticket::Kind::Profile(req)) => {
                let view = self
                    .store
                    .send(View {
                        user_id: req.user_id,
                        at: req.at,
                    })
                    .await
                    .map_err(Error::from)?;
                Ok((
                    profile_schema(),
                    view.map(|v| vec![v.to_batch()]).unwrap_or_default(),
                ))
            }
            Some(ticket::Kind::Popular(req)) => {
                if req.groups.len() > MAX_POPULAR_GROUPS {
                    return Err(ServiceError::invalid(format!(
                        "field `groups`: {} groups, at most {MAX_POPULAR_GROUPS}",
                        req.groups.len()
                    )));
                }
                let limit = (req.limit as usize).min(self.cfg.profile.popular_capacity);
                let hits = self
                    .store
                    .send(Popular {
                        groups: req.groups,
                        at: req.at,
                        limit,
                    })
                    .await
                    .map_err(Error::from)?;
                Ok((popular_schema(), vec![PopularHit::to_batch(&hits)]))
            }
            _ => Err(ServiceError::invalid(
                "the profile service serves profile and popular tickets",
            )),
        }
    }

    async fn put(&self, cmd: PutCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        match cmd.kind {
            Some(put_command::Kind::IngestEvents(_)) => {
                let mut events = Vec::new();
                for b in &batches {
                    events.extend(Event::from_batch(b)?);
                }
                self.ingest_events(events).await
            }
            Some(put_command::Kind::UpsertUsers(_)) => {
                let mut users = Vec::new();
                for b in &batches {
                    users.extend(User::from_batch(b)?);
                }
                self.upsert_users(users).await
            }
            _ => Err(ServiceError::invalid(
                "the profile service takes ingest_events and upsert_users",
            )),
        }
    }
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
    State(store): State<Addr<ProfileStore>>,
    Path(user_id): Path<u64>,
) -> Result<Json<ProfileJson>, ServiceError> {
    let v = store
        .send(View {
            user_id,
            at: now_ms(),
        })
        .await
        .map_err(Error::from)?
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
    pub async fn start(ctx: &Context, node_id: String, http_port: u16) -> crate::Result<Self> {
        let dir = ctx.data_dir(&node_id)?.join("log");
        let pcfg = ctx.cfg.profile.clone();
        let (log, profiles) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || -> crate::Result<(EventLog, Profiles)> {
                let (log, replay) = EventLog::open(&dir)?;
                let mut profiles = Profiles::new(pcfg);
                let (mut events, mut users) = (0usize, 0usize);
                for r in replay {
                    match r {
                        Logged::Events(e) => {
                            events += e.len();
                            profiles.apply_events(&e);
                        }
                        Logged::Users(u) => {
                            users += u.len();
                            profiles.upsert_users(&u);
                        }
                    }
                }
                info!(dir = %dir.display(), events, users, profiles = profiles.len(), "profiles rebuilt from the log");
                Ok((log, profiles))
            }
        })
        .await
        .map_err(|e| ServiceError::internal(format!("profile open task: {e}")))??;
        let cell = Arc::new(parking_lot::Mutex::new(Some(log)));
        let (store, log) = ctx.actors.run(move || {
            let store = ProfileStore { profiles }.start();
            let log = SyncArbiter::start(1, move || match cell.lock().take() {
                Some(l) => l,
                None => EventLog::open(&dir).expect("reopen event log").0,
            });
            (store, log)
        });
        let routes = axum::Router::new()
            .route("/v1/profile/{user_id}", get(profile_http))
            .with_state(store.clone());
        let handler = Arc::new(ProfileHandler {
            store,
            log,
            cluster: ctx.cluster.clone(),
            cfg: ctx.cfg.clone(),
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
