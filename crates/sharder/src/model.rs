//! The content model on a sharder. Every sharder watches `models/content`; when a version is
//! named it loads the centroids (replicated on every sharder) and the forward index the model was
//! trained with, re-files its index under the new version — the cluster lists it owns, rebuilt
//! newest first, and the forward-index entries of the items it holds — through its store (so the
//! re-filing is as durable as any write), retires the cluster lists of versions older than
//! `sharder.model_versions_kept`, and only then announces the version (in its member value and
//! `GET /v1/model`). Reads in flight keep the lists they hold; a seed filed under the old version
//! still finds the old list until it is retired. A reference that does not load is refused by field
//! and the current version stays.

use crate::index::{Index, Reassignment};
use crate::store::{Apply, Retire, Store};
use crate::Error;
use actix::Addr;
use arc_swap::ArcSwapOption;
use axum::extract::State;
use axum::Json;
use coldstart_artifact::{self as model, ModelFiles, ModelRef};
use coldstart_models::kmeans::Centroids;
use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::{Announcer, Role};
use coldstart_runtime::node::Context;
use coldstart_runtime::now_ms;
use coldstart_runtime::routing::owners;
use coldstart_runtime::{ErrorCode, ServiceError, ServiceResult};
use std::sync::Arc;
use tracing::{error, info};

/// Postings per store message while re-filing (one fsync'd log record each).
const CHUNK: usize = 50_000;

/// The content model a sharder runs.
#[derive(Debug)]
pub struct ShardModel {
    /// The reference it was loaded from.
    pub reference: ModelRef,
    /// Its centroids.
    pub centroids: Centroids,
    /// What re-filing the index under it changed.
    pub reassignment: Reassignment,
    /// Cluster lists of retired versions dropped at the swap.
    pub dropped_lists: usize,
    /// When the swap completed, ms.
    pub swapped_at: i64,
}

/// The model a sharder runs, swapped whole.
pub type ShardModelSlot = Arc<ArcSwapOption<ShardModel>>;

/// What a sharder needs to swap models.
pub struct Swapper {
    /// This node.
    pub node_id: String,
    /// Its index (read to compute the re-filing).
    pub index: Arc<Index>,
    /// Its store (the only writer).
    pub store: Addr<Store>,
    /// Membership, for which cluster lists this node owns.
    pub cluster: Arc<Cluster>,
    /// Configured replication.
    pub replication: usize,
    /// `sharder.model_versions_kept`.
    pub keep: usize,
    /// Where the current model is published.
    pub slot: ShardModelSlot,
    /// Announces the version in the member value.
    pub announcer: Announcer,
}

impl Swapper {
    /// Loads, re-files and retires for one reference.
    pub async fn swap(&self, reference: ModelRef) -> ServiceResult<ShardModel> {
        let r = reference.clone();
        let (centroids, assignments) = tokio::task::spawn_blocking(move || {
            let files = ModelFiles::open(&r)?;
            let centroids = files.centroids()?;
            let assignments = files.assignments(centroids.k(), centroids.dim())?;
            Ok::<_, ServiceError>((centroids, assignments))
        })
        .await
        .map_err(|e| ServiceError::internal(format!("model load task: {e}")))??;
        let membership = self.cluster.membership();
        let mut members: Vec<String> = membership
            .role(Role::Sharder)
            .iter()
            .map(|m| m.node_id.clone())
            .collect();
        if !members.contains(&self.node_id) {
            members.push(self.node_id.clone());
            members.sort();
        }
        let r = self.replication.min(members.len()).max(1);
        let (index, node, version) = (
            self.index.clone(),
            self.node_id.clone(),
            reference.version.clone(),
        );
        let (postings, reassignment) = tokio::task::spawn_blocking(move || {
            index.reassignment(&version, &assignments, |key| {
                owners(key, &members, r).contains(&node.as_str())
            })
        })
        .await
        .map_err(|e| ServiceError::internal(format!("re-assignment task: {e}")))?;
        for chunk in postings.chunks(CHUNK) {
            self.store
                .send(Apply(chunk.to_vec()))
                .await
                .map_err(Error::from)?
                .map_err(ServiceError::from)?;
        }
        let dropped_lists = self
            .store
            .send(Retire {
                version: reference.version.clone(),
                keep: self.keep,
            })
            .await
            .map_err(Error::from)?
            .map_err(ServiceError::from)?;
        Ok(ShardModel {
            reference,
            centroids,
            reassignment,
            dropped_lists,
            swapped_at: now_ms(),
        })
    }

    /// Swaps to the model `value` names unless it runs already. Answers whether a failure is
    /// worth retrying (the store or the model files were unavailable; a half-done re-filing is
    /// completed by the retry, since re-filing writes only what is missing). A refused reference
    /// (bad JSON, checksum, version, cluster numbers) is not retried.
    async fn handle(&self, value: &str) -> bool {
        let r = match ModelRef::parse(value) {
            Ok(r) => r,
            Err(e) => {
                error!(node_id = %self.node_id, error = %e, "content model refused, keeping the current one");
                return false;
            }
        };
        if self.slot.load().as_ref().is_some_and(|m| m.reference == r) {
            return false;
        }
        match self.swap(r).await {
            Ok(m) => {
                info!(
                    node_id = %self.node_id,
                    version = %m.reference.version,
                    k = m.centroids.k(),
                    items = m.reassignment.items,
                    lists = m.reassignment.lists,
                    postings = m.reassignment.postings,
                    unassigned = m.reassignment.unassigned,
                    dropped_lists = m.dropped_lists,
                    "content model swapped in, index re-filed"
                );
                self.announcer.set_model(&m.reference.version);
                self.slot.store(Some(Arc::new(m)));
                false
            }
            Err(e) => {
                let transient = model::transient(&e);
                error!(node_id = %self.node_id, error = %e, retry = transient, "content model refused, keeping the current one");
                transient
            }
        }
    }

    /// Follows `models/content` for the life of the process (see [`model::follow`]).
    pub fn watch(self, ctx: &Context) {
        let this = Arc::new(self);
        model::follow(ctx.registry.as_ref(), model::CONTENT_MODEL, move |value| {
            let this = this.clone();
            async move {
                match value {
                    Some(v) => this.handle(&v).await,
                    None => false,
                }
            }
        });
    }
}

/// `GET /v1/model`: the version this sharder runs and what swapping to it changed.
pub async fn model_http(
    State(slot): State<ShardModelSlot>,
) -> Result<Json<serde_json::Value>, ServiceError> {
    match slot.load_full() {
        Some(m) => Ok(Json(serde_json::json!({
            "version": m.reference.version,
            "clusters": m.centroids.k(),
            "dim": m.centroids.dim(),
            "reassigned": m.reassignment,
            "dropped_lists": m.dropped_lists,
            "swapped_at": m.swapped_at,
        }))),
        None => Err(ServiceError::new(
            ErrorCode::NotFound,
            "no content model loaded",
        )),
    }
}
