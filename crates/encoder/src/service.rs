//! The encoder's Flight face: `publish_items`. A stateless handler (no actor): it holds the
//! models it encodes with (swapped whole when etcd names new ones) and the clients it writes
//! through; every accepted batch is on the sharders and registered with traffic before the ack.

use crate::config::EncoderSettings;
use crate::postings::{self, Filing};
use crate::training;
use arc_swap::ArcSwap;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::extract::State;
use axum::routing::get;
use axum::Json;
use coldstart_artifact::{self as model, ContentModel, ModelRef};
use coldstart_artifact::{TwoTowerModel, TwoTowerSlot};
use coldstart_contracts::encoder::proto::{encoder_command, EncoderCommand, EncoderTicket};
use coldstart_contracts::encoder::EncoderProtocol;
use coldstart_contracts::encoder::Item;
use coldstart_contracts::sharder::SharderClient;
use coldstart_contracts::sharder::TowerVector;
use coldstart_contracts::traffic::Registration;
use coldstart_contracts::traffic::TrafficClient;
use coldstart_contracts::types::ClusterKey;
use coldstart_contracts::validate;
use coldstart_models::encoder::{load_minilm, Backbone, SentenceEncoder};
use coldstart_models::two_tower::ItemSide;
use coldstart_runtime::config::LimitsConfig;
use coldstart_runtime::discovery::Announcer;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::{not_served, FlightHandler};
use coldstart_runtime::node::{Context, RunningNode};
use coldstart_runtime::now_ms;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;
use tracing::{error, info, warn};

/// A running encoder.
pub struct Service {
    node: RunningNode,
    keeper: tokio::task::JoinHandle<()>,
}

/// The models publishing runs with: the current one (`models/content`) and, during a rollout, the
/// staged one (`models/content-next`) that new items are filed under as well.
#[derive(Default)]
pub struct Models {
    /// Current.
    pub active: Option<Arc<ContentModel>>,
    /// Staged, never the current version.
    pub next: Option<Arc<ContentModel>>,
}

/// The models, swapped whole (a batch is encoded with one consistent pair).
pub type ModelSlot = Arc<ArcSwap<Models>>;

struct PublishHandler {
    tower: TwoTowerSlot,
    sharder: SharderClient,
    traffic: TrafficClient,
    limits: LimitsConfig,
    model: ModelSlot,
    backbone: Option<Arc<dyn SentenceEncoder>>,
    /// The content model this encoder last ran, when it ran one: it must run one again before it
    /// files items (an item is never acknowledged without the cluster it belongs to).
    memory: ModelMemory,
}

/// The reference of the content model an encoder last ran, kept in its data dir: after an etcd
/// loss it puts `models/content` back (the members' own report of what the cluster ran), and
/// while it has no model loaded it refuses publishes instead of filing items without a cluster.
#[derive(Clone)]
struct ModelMemory {
    path: std::path::PathBuf,
    /// What discovery names as the content model now, loaded or not.
    named: Arc<parking_lot::Mutex<Option<String>>>,
}

impl ModelMemory {
    /// The model this encoder must run before it files items: the one discovery names, else
    /// the one it last ran.
    fn expected(&self) -> Option<String> {
        self.named.lock().clone().or_else(|| self.last())
    }

    fn last(&self) -> Option<String> {
        std::fs::read_to_string(&self.path)
            .ok()
            .filter(|v| !v.trim().is_empty())
    }

    fn remember(&self, value: &str) {
        if self.last().as_deref() == Some(value) {
            return;
        }
        if let Err(e) =
            coldstart_runtime::parquet_io::write_bytes_atomic(&self.path, value.as_bytes())
        {
            warn!(path = %self.path.display(), error = %e, "could not remember the content model reference");
        }
    }

    /// Puts `models/content` back when discovery has none and this encoder ran one, every
    /// `period`, until aborted.
    fn keep_reference(
        self,
        registry: Arc<dyn coldstart_runtime::discovery::Registry>,
        period: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        use coldstart_runtime::discovery::ValueKind;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(v) = self.last() else { continue };
                if let Ok(None) = registry
                    .get_value(ValueKind::Model, model::CONTENT_MODEL)
                    .await
                {
                    match registry.put_model(model::CONTENT_MODEL, &v).await {
                        Ok(()) => {
                            warn!("models/content was missing from discovery (etcd lost its data?): put back the reference this encoder last ran");
                            coldstart_runtime::http::count("model_reference_recreated", 1);
                        }
                        Err(e) => {
                            warn!(error = %e, "models/content is missing and could not be put back")
                        }
                    }
                }
            }
        })
    }
}

/// Where `model` files every item: encode, then the nearest centroid. Runs on a blocking thread
/// (it is CPU work).
fn assign_clusters(
    model: &ContentModel,
    items: &[Item],
    backbone: Option<&dyn SentenceEncoder>,
) -> ServiceResult<Vec<Filing>> {
    let mut points = Vec::with_capacity(items.len() * model.encoder.cfg.dim);
    // the same features training computed: one Item → input conversion for both
    let feats = training::item_features(items, &model.encoder.cfg, backbone)
        .map_err(|e| ServiceError::unavailable(format!("content features: {e}")))?;
    for (r, f) in feats.iter().enumerate() {
        let v = model
            .encoder
            .encode(f)
            .map_err(|e| ServiceError::bad_row(r, "title", format!("cannot be encoded: {e}")))?;
        points.extend_from_slice(v.as_slice());
    }
    let (labels, _) = model
        .centroids
        .assign(&points, 1, coldstart_models::kmeans::CHUNK)
        .map_err(|e| ServiceError::internal(format!("cluster assignment: {e}")))?;
    let dim = model.encoder.cfg.dim;
    Ok(labels
        .into_iter()
        .zip(points.chunks(dim))
        .map(|(c, v)| Filing {
            cluster: ClusterKey::new(model.version.as_str(), c),
            vector: v.to_vec(),
        })
        .collect())
}

/// Each item's two-tower vector under `t`, for the new-item pools: its category, keywords and
/// content vector (when the content model's dimension is the one the two-tower model reads)
/// through the item tower, with the default ID unless the item graduated in training. An item
/// the tower cannot place (no direction) goes without one, and is logged.
fn tower_vectors(
    t: &TwoTowerModel,
    items: &[Item],
    filings: &[Option<Filing>],
) -> Vec<Option<TowerVector>> {
    let dim = t.model.cfg.content_dim;
    items
        .iter()
        .zip(filings)
        .map(|(it, f)| {
            let (category, keywords) = postings::normalised(it);
            let side = ItemSide {
                item_id: it.item_id,
                category,
                keywords,
                content: f
                    .as_ref()
                    .map(|f| f.vector.clone())
                    .filter(|v| v.len() == dim)
                    .unwrap_or_default(),
            };
            match t.model.vector_of(&side) {
                Ok(v) => Some(TowerVector {
                    version: t.version.clone(),
                    vector: v.as_slice().to_vec(),
                }),
                Err(e) => {
                    error!(item_id = it.item_id, error = %e, "no two-tower vector for the item");
                    None
                }
            }
        })
        .collect()
}

impl PublishHandler {
    async fn publish(&self, items: Vec<Item>) -> ServiceResult<u64> {
        validate::items(&items, &self.limits, now_ms())?;
        // one pair of models for the whole batch, even if another is swapped in meanwhile
        let models = self.model.load_full();
        if models.active.is_none() {
            if let Some(expected) = self.memory.expected() {
                return Err(ServiceError::unavailable(format!(
                    "no content model loaded: the cluster runs one ({}) and these items would be filed without their cluster; waiting for models/content to name one that loads",
                    ModelRef::parse(&expected).map_or(expected.clone(), |r| r.version)
                )));
            }
        }
        let tower = self.tower.load_full();
        let backbone = self.backbone.clone();
        let (items, clusters, next, towers) = tokio::task::spawn_blocking(move || {
            let assign = |m: &Option<Arc<ContentModel>>| -> ServiceResult<Vec<Option<Filing>>> {
                Ok(match m {
                    Some(m) => assign_clusters(m, &items, backbone.as_deref())?
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => vec![None; items.len()],
                })
            };
            let clusters = assign(&models.active);
            let next = assign(&models.next);
            let towers = match (&tower, &clusters) {
                (Some(t), Ok(c)) => tower_vectors(t, &items, c),
                _ => vec![None; items.len()],
            };
            (items, clusters, next, towers)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("encode task: {e}")))?;
        let (clusters, next) = (clusters?, next?);
        let all: Vec<_> = items
            .iter()
            .zip(clusters.into_iter().zip(next).zip(towers))
            .flat_map(|(i, ((c, n), t))| postings::of_item(i, c, n, t))
            .collect();
        let copies = self.sharder.write_postings(&all).await?;
        let regs: Vec<Registration> = items
            .iter()
            .map(|i| Registration {
                item_id: i.item_id,
                publish_ts: i.publish_ts,
                author_id: i.author_id,
                quality: i.quality,
                author_quality: i.author_quality,
            })
            .collect();
        self.traffic.register(&regs).await?;
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
impl FlightHandler<EncoderProtocol> for PublishHandler {
    async fn get(&self, _: EncoderTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        Err(not_served::<EncoderProtocol>("ticket"))
    }

    async fn put(&self, cmd: EncoderCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64> {
        let Some(encoder_command::Kind::PublishItems(_)) = cmd.kind else {
            return Err(not_served::<EncoderProtocol>("command"));
        };
        let mut items = Vec::new();
        for b in &batches {
            items.extend(Item::from_batch(b)?);
        }
        self.publish(items).await
    }
}

/// Loads every content model etcd names (current and staged) and swaps it in, then announces the
/// versions in the member value; a reference that does not load (bad JSON, checksum mismatch,
/// wrong image dimension) is refused by field and the models in use stay; files that cannot be
/// read yet are retried (see [`model::follow`]).
fn watch_models(
    ctx: &Context,
    slot: ModelSlot,
    announcer: Announcer,
    backbone: Option<Arc<dyn SentenceEncoder>>,
    memory: ModelMemory,
) {
    for name in [model::CONTENT_MODEL, model::CONTENT_MODEL_NEXT] {
        let image_dim = ctx.cfg.limits.image_dim;
        let applied: Arc<parking_lot::Mutex<Option<String>>> = Arc::default();
        let (slot, announcer) = (slot.clone(), announcer.clone());
        let (backbone, memory) = (backbone.clone(), memory.clone());
        model::follow(ctx.registry.as_ref(), name, move |value| {
            let (slot, announcer, applied) = (slot.clone(), announcer.clone(), applied.clone());
            let (backbone, memory) = (backbone.clone(), memory.clone());
            async move {
                if *applied.lock() == value {
                    return false;
                }
                if name == model::CONTENT_MODEL && value.is_some() {
                    *memory.named.lock() = value.clone();
                }
                let loaded = match &value {
                    Some(v) => load_model(v.clone(), image_dim, backbone.as_ref())
                        .await
                        .map(|m| Some(Arc::new(m))),
                    None => Ok(None),
                };
                match loaded {
                    Ok(m) => {
                        if let Some(m) = &m {
                            info!(model = name, version = %m.version, k = m.centroids.k(), dim = m.encoder.cfg.dim, "content model swapped in");
                        }
                        if let (model::CONTENT_MODEL, Some(v), Some(_)) = (name, &value, &m) {
                            memory.remember(v);
                        }
                        let now = slot.rcu(|cur| {
                            let (mut active, mut next) = (cur.active.clone(), cur.next.clone());
                            if name == model::CONTENT_MODEL {
                                active = m.clone();
                            } else {
                                next = m.clone();
                            }
                            // a staged version that became current is filed under once
                            if next.as_ref().map(|n| &n.version)
                                == active.as_ref().map(|a| &a.version)
                            {
                                next = None;
                            }
                            Models { active, next }
                        });
                        drop(now);
                        let cur = slot.load();
                        if let Some(a) = &cur.active {
                            announcer.set_model(&a.version);
                        }
                        announcer.set_next_model(cur.next.as_ref().map(|n| n.version.as_str()));
                        *applied.lock() = value;
                        false
                    }
                    Err(e) => {
                        let retry = model::transient(&e);
                        error!(model = name, error = %e, retry, "content model refused, keeping the current one");
                        retry
                    }
                }
            }
        });
    }
}

/// Parses and loads a model reference, off the async workers.
pub async fn load_model(
    value: String,
    image_dim: usize,
    backbone: Option<&Arc<dyn SentenceEncoder>>,
) -> ServiceResult<ContentModel> {
    let r = ModelRef::parse(&value)?;
    let m = tokio::task::spawn_blocking(move || ContentModel::load(&r))
        .await
        .map_err(|e| ServiceError::internal(format!("model load task: {e}")))??;
    if m.encoder.cfg.backbone == Backbone::MiniLm {
        return match backbone {
            None => Err(ServiceError::invalid(format!(
                "field `backbone`: model {} reads the minilm backbone, and this encoder has none (encoder.minilm_dir, in a build with the cargo feature `minilm`)",
                m.version
            ))),
            Some(b) if b.dim() != m.encoder.cfg.image_dim => Err(ServiceError::invalid(format!(
                "field `backbone`: model {} takes {} dimensions from its backbone, the loaded one gives {}",
                m.version,
                m.encoder.cfg.image_dim,
                b.dim()
            ))),
            Some(_) => Ok(m),
        };
    }
    if m.encoder.cfg.image_dim != 0 && m.encoder.cfg.image_dim != image_dim {
        return Err(ServiceError::invalid(format!(
            "field `image_dim`: the model takes image vectors of {}, items carry {} (limits.image_dim)",
            m.encoder.cfg.image_dim, image_dim
        )));
    }
    Ok(m)
}

async fn model_http(
    State(slot): State<ModelSlot>,
) -> Result<Json<serde_json::Value>, ServiceError> {
    let models = slot.load_full();
    match &models.active {
        Some(m) => Ok(Json(serde_json::json!({
            "version": m.version,
            "clusters": m.centroids.k(),
            "dim": m.encoder.cfg.dim,
            "next": models.next.as_ref().map(|n| &n.version),
        }))),
        None => Err(ServiceError::new(
            coldstart_runtime::ErrorCode::NotFound,
            "no content model loaded",
        )),
    }
}

impl Service {
    /// Serves the publish path.
    pub async fn start(
        ctx: &Context,
        settings: &EncoderSettings,
        node_id: String,
        http_port: u16,
    ) -> crate::Result<Self> {
        let model: ModelSlot = Arc::default();
        // a configured backbone that does not load is a start failure, not a silent hashed model
        let backbone = match settings.minilm_dir.clone() {
            Some(dir) => Some(
                tokio::task::spawn_blocking(move || load_minilm(&dir))
                    .await
                    .map_err(|e| ServiceError::internal(format!("backbone load task: {e}")))?
                    .map_err(|e| {
                        ServiceError::invalid(format!("config key `encoder.minilm_dir`: {e}"))
                    })?,
            ),
            None => None,
        };
        let tower: TwoTowerSlot = Arc::default();
        let memory = ModelMemory {
            path: ctx.data_dir(&node_id)?.join("content-model.json"),
            named: Arc::default(),
        };
        let handler: Arc<dyn FlightHandler<EncoderProtocol>> = Arc::new(PublishHandler {
            memory: memory.clone(),
            tower: tower.clone(),
            sharder: SharderClient::new(ctx.cluster.clone()),
            traffic: TrafficClient::new(ctx.cluster.clone()),
            limits: ctx.cfg.limits.clone(),
            model: model.clone(),
            backbone: backbone.clone(),
        });
        let routes = axum::Router::new()
            .route("/v1/model", get(model_http))
            .with_state(model.clone());
        let node = ctx
            .serve(Role::Encoder, node_id, handler, routes, http_port)
            .await?;
        watch_models(
            ctx,
            model,
            node.registration.announcer(),
            backbone,
            memory.clone(),
        );
        let keeper = memory.keep_reference(
            ctx.registry.clone(),
            std::time::Duration::from_secs(ctx.cfg.discovery.lease_ttl_s.max(1)),
        );
        coldstart_artifact::run_two_tower(
            ctx.registry.as_ref(),
            tower,
            node.registration.announcer(),
        );
        Ok(Self { node, keeper })
    }

    /// Deregisters and stops.
    pub async fn shutdown(self) {
        self.keeper.abort();
        self.node.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_models::encoder::{Encoder, EncoderConfig};
    use coldstart_models::kmeans::Centroids;

    struct Fake(usize);

    impl SentenceEncoder for Fake {
        fn dim(&self) -> usize {
            self.0
        }
        fn embed(&self, texts: &[&str]) -> coldstart_models::Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![1.0; self.0]).collect())
        }
    }

    /// The backbone is part of the model file; an encoder without it refuses such a model by
    /// field instead of encoding items with something else.
    #[tokio::test]
    async fn a_minilm_model_needs_its_backbone() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = Encoder::new(EncoderConfig {
            buckets: 16,
            hidden: 4,
            dim: 2,
            image_dim: 6,
            backbone: Backbone::MiniLm,
            ..Default::default()
        })
        .unwrap();
        let model = ContentModel {
            version: "m1".into(),
            encoder,
            centroids: Centroids::from_rows(&[1.0, 0.0, 0.0, 1.0], 2).unwrap(),
        };
        let asg = coldstart_contracts::sharder::Assignment {
            item_id: 9,
            cluster: 0,
            publish_ts: 0,
            vector: Some(vec![1.0, 0.0]),
        };
        let r = model.save(dir.path(), &[asg]).unwrap();
        let value = serde_json::to_string(&r).unwrap();
        let loaded = ContentModel::load(&r).unwrap();
        assert_eq!(
            loaded.encoder.cfg.backbone,
            Backbone::MiniLm,
            "kept in the file"
        );
        let e = load_model(value.clone(), 128, None).await.unwrap_err();
        assert!(e.text().contains("field `backbone`"), "{e}");
        let wrong: Arc<dyn SentenceEncoder> = Arc::new(Fake(5));
        let e = load_model(value.clone(), 128, Some(&wrong))
            .await
            .unwrap_err();
        assert!(e.text().contains("gives 5"), "{e}");
        let right: Arc<dyn SentenceEncoder> = Arc::new(Fake(6));
        let m = load_model(value, 128, Some(&right)).await.unwrap();
        let items = vec![Item {
            item_id: 1,
            publish_ts: 0,
            author_id: None,
            category: "c".into(),
            keywords: vec![],
            title: "t".into(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        }];
        let filed = assign_clusters(&m, &items, Some(right.as_ref())).unwrap();
        assert_eq!(filed[0].vector.len(), 2);
    }
}
