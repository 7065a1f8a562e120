//! The served half of an evaluation: a fresh in-process cluster per backbone, loaded through
//! the public API, asked `GET /v1/recall` for every test user, merged at each K and per channel.

use super::metrics::Accumulator;
use super::report::{Kind, Row};
use super::split::Split;
use super::Options;
use crate::dataset::Dataset;
use crate::local::LocalCluster;
use crate::training::{bar, train_content_model};
use crate::two_tower::{prepare, train_and_evaluate};
use crate::{Error, Result};
use coldstart_aggregator::request::Channel;
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, LoggedEvent, User};
use coldstart_models::encoder::Backbone;
use coldstart_models::two_tower::{TwoTower, TwoTowerConfig};
use coldstart_runtime::ipc;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

pub(super) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, batch: &arrow::record_batch::RecordBatch) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", coldstart_aggregator::api::ARROW_STREAM)
            .body(ipc::encode(batch))
            .send()
            .await
            .map_err(|e| Error::Invalid(format!("POST {path}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Invalid(format!("POST {path}: {status}: {body}")));
        }
        Ok(())
    }

    async fn recall(&self, query: &str) -> Result<Vec<u64>> {
        let url = format!("{}/v1/recall?{query}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Invalid(format!("GET {url}: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::Invalid(format!("GET {url}: {e}")))?;
        if !status.is_success() {
            return Err(Error::Invalid(format!("GET {url}: {status}: {body}")));
        }
        Ok(body["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["item_id"].as_u64()).collect())
            .unwrap_or_default())
    }
}

/// One test user of a task.
pub(super) struct TestUser {
    pub(super) user: u64,
    pub(super) relevant: HashSet<u64>,
}

/// One task's questions to the served system.
struct Ask<'a> {
    /// Its name, for the progress bar.
    what: &'a str,
    users: &'a [TestUser],
    at: i64,
    since: Option<i64>,
    /// Whether an (user, item) answer is a candidate of the task.
    keep: &'a (dyn Fn(u64, u64) -> bool + Sync),
    /// Candidate pool size, for coverage.
    pool: usize,
    /// Also ask the merged answer without this channel (a row `coldstart (merged, without X)`;
    /// without `two_tower` is also without `new_user_tower`: without the two-tower model).
    without: Option<Channel>,
    /// Ask per channel only these (default: every channel).
    channels: Option<&'a [Channel]>,
}

/// Asks the served answers for every test user: merged at each K, and per channel at the
/// largest K; keeps only candidates, in order.
async fn served(api: &Api, ask: &Ask<'_>, ks: &[usize], concurrency: usize) -> Result<Vec<Row>> {
    let Ask {
        what,
        users,
        at,
        since,
        keep,
        pool,
        without,
        channels,
    } = *ask;
    let max_k = *ks.last().expect("checked cutoffs");
    // (user, what to ask, k)
    let mut asks: Vec<(usize, Query, usize)> = Vec::new();
    for u in 0..users.len() {
        for &k in ks {
            asks.push((u, Query::Merged, k));
            if let Some(c) = without {
                asks.push((u, Query::Without(c), k));
            }
        }
        for &c in channels.unwrap_or(&Channel::ALL) {
            asks.push((u, Query::Channel(c), max_k));
        }
    }
    let pb = bar(asks.len() as u64, what);
    let since_q = since.map(|s| format!("&since={s}")).unwrap_or_default();
    let answers: Vec<(usize, Query, usize, Vec<u64>)> =
        futures::stream::iter(asks.into_iter().map(|(u, c, k)| {
            let q = format!(
                "user_id={}&k={k}&at={at}{since_q}{}",
                users[u].user,
                c.param()
            );
            let pb = &pb;
            async move {
                let got = api.recall(&q).await;
                pb.inc(1);
                got.map(|items| (u, c, k, items))
            }
        }))
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    pb.finish();
    let mut merged_parts: Vec<BTreeMap<usize, Vec<u64>>> = vec![BTreeMap::new(); users.len()];
    let mut without_parts: Vec<BTreeMap<usize, Vec<u64>>> = vec![BTreeMap::new(); users.len()];
    let mut per_channel: BTreeMap<Channel, Accumulator> = BTreeMap::new();
    let mut nonempty: HashMap<Channel, usize> = HashMap::new();
    for (u, c, k, items) in answers {
        let user = users[u].user;
        let items: Vec<u64> = items.into_iter().filter(|&i| keep(user, i)).collect();
        match c {
            Query::Merged => {
                merged_parts[u].insert(k, items);
            }
            Query::Without(_) => {
                without_parts[u].insert(k, items);
            }
            Query::Channel(c) => {
                if !items.is_empty() {
                    *nonempty.entry(c).or_default() += 1;
                }
                per_channel
                    .entry(c)
                    .or_insert_with(|| Accumulator::new(ks))
                    .add(&items, &users[u].relevant);
            }
        }
    }
    let scores = merged_scores(&merged_parts, users, ks, pool);
    let mut rows = vec![Row {
        method: "coldstart (merged)".into(),
        kind: Kind::Served,
        scores: Some(scores),
        note: None,
    }];
    if let Some(c) = without {
        rows.push(Row {
            method: format!("coldstart (merged, without {c})"),
            kind: Kind::Served,
            scores: Some(merged_scores(&without_parts, users, ks, pool)),
            note: None,
        });
    }
    rows.extend(per_channel.into_iter().map(|(c, acc)| {
        let n = nonempty.get(&c).copied().unwrap_or(0);
        Row {
            method: format!("channel {c}"),
            kind: Kind::Channel,
            scores: (n > 0).then(|| acc.finish(pool)),
            note: (n == 0).then(|| "no answers: nothing in the data feeds it".into()),
        }
    }));
    Ok(rows)
}

/// The scores of merged answers, one request per user and K: recall and NDCG at each K from
/// the answer at that K (quotas are shares of k), coverage from the one at `COVERAGE_K` (or
/// the largest asked).
fn merged_scores(
    parts: &[BTreeMap<usize, Vec<u64>>],
    users: &[TestUser],
    ks: &[usize],
    pool: usize,
) -> super::metrics::Scores {
    let mut merged = Accumulator::new(ks);
    let mut by_k: BTreeMap<usize, Accumulator> = BTreeMap::new();
    for (u, parts) in parts.iter().enumerate() {
        for (&k, items) in parts {
            by_k.entry(k)
                .or_insert_with(|| Accumulator::new(&[k]))
                .add(items, &users[u].relevant);
        }
        if let Some(items) = parts
            .get(&super::metrics::COVERAGE_K)
            .or_else(|| parts.values().last())
        {
            merged.add(items, &users[u].relevant);
        }
    }
    let mut scores = merged.finish(pool);
    for (k, acc) in &by_k {
        let s = acc.finish(pool);
        scores.recall.insert(*k, s.recall[k]);
        scores.ndcg.insert(*k, s.ndcg[k]);
    }
    scores
}

/// One question to the served system.
#[derive(Debug, Clone, Copy)]
enum Query {
    /// The merged answer.
    Merged,
    /// The merged answer of every channel but one.
    Without(Channel),
    /// One channel alone.
    Channel(Channel),
}

impl Query {
    /// Its `channels` query parameter.
    fn param(self) -> String {
        match self {
            Query::Merged => String::new(),
            Query::Channel(c) => format!("&channels={c}"),
            Query::Without(x) => {
                // without the two-tower model: neither of the channels it serves
                let also = |c: Channel| x == Channel::TwoTower && c == Channel::NewUserTower;
                let rest: Vec<&str> = Channel::ALL
                    .into_iter()
                    .filter(|c| *c != x && !also(*c))
                    .map(Channel::as_str)
                    .collect();
                format!("&channels={}", rest.join(","))
            }
        }
    }
}

fn logged(events: &[&Event], items: &HashMap<u64, &Item>) -> Vec<LoggedEvent> {
    events
        .iter()
        .filter_map(|e| {
            items.get(&e.item_id).map(|it| LoggedEvent {
                event: (*e).clone(),
                item_publish_ts: it.publish_ts,
                category: it.category.clone(),
                keywords: it.keywords.clone(),
            })
        })
        .collect()
}

/// What one evaluation run shares between its backbones.
pub(super) struct Run<'a> {
    pub(super) data: &'a Dataset,
    pub(super) split: &'a Split,
    pub(super) items: &'a HashMap<u64, &'a Item>,
    pub(super) train: &'a [&'a Event],
    pub(super) warm: &'a [Item],
    pub(super) cold: &'a [Item],
    pub(super) warm_ids: &'a [u64],
    pub(super) cold_ids: &'a [u64],
    pub(super) new_users: &'a [TestUser],
    pub(super) item_users: &'a [TestUser],
    pub(super) ks: &'a [usize],
    pub(super) opts: &'a Options,
}

/// What the served system answered with one backbone.
pub(super) struct Served {
    pub(super) item_rows: Vec<Row>,
    pub(super) user_rows: Vec<Row>,
    pub(super) model: serde_json::Value,
    /// Every item's content vector under the run's model, for the encoder KNN baseline.
    pub(super) vectors: HashMap<u64, Vec<f32>>,
}

impl Run<'_> {
    /// The training part replayed for a two-tower model of `cfg` (its featurisation: buckets
    /// and the users' part), off the async workers.
    async fn prepare_two_tower(
        &self,
        cfg: &TwoTowerConfig,
        vectors: &HashMap<u64, Vec<f32>>,
    ) -> Result<std::sync::Arc<crate::two_tower::Prepared>> {
        let (warm, users, vecs) = (self.warm.to_vec(), self.data.users.clone(), vectors.clone());
        let events: Vec<Event> = self.train.iter().map(|e| (*e).clone()).collect();
        let shape_cfg = cfg.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let shape = TwoTower::new(shape_cfg)?;
            prepare(&shape, &warm, &events, &users, &vecs, 0.0, 20)
        })
        .await
        .map_err(|e| Error::Invalid(format!("two-tower task: {e}")))??;
        Ok(std::sync::Arc::new(prepared))
    }

    /// Trains the two-tower model with `cfg` on `prepared` off the async workers, saves it as
    /// version `eval-tt-{name}` and rolls it out to `cluster` (every encoder, sharder and
    /// aggregator runs it).
    async fn roll_out(
        &self,
        cluster: &LocalCluster,
        prepared: &std::sync::Arc<crate::two_tower::Prepared>,
        cfg: TwoTowerConfig,
        name: &str,
    ) -> Result<()> {
        let data = prepared.clone();
        let (model, _) = tokio::task::spawn_blocking(move || train_and_evaluate(cfg, &data, 50))
            .await
            .map_err(|e| Error::Invalid(format!("two-tower task: {e}")))??;
        let version = format!("eval-tt-{name}");
        let r =
            coldstart_artifact::save_two_tower(&self.opts.out.join("models"), &version, &model)?;
        cluster
            .activate_two_tower(&r, Duration::from_secs(300))
            .await?;
        Ok(())
    }

    /// [`Run::roll_out`] named by backbone and default method.
    async fn roll_out_two_tower(
        &self,
        cluster: &LocalCluster,
        prepared: &std::sync::Arc<crate::two_tower::Prepared>,
        cfg: TwoTowerConfig,
        backbone: Backbone,
    ) -> Result<()> {
        let name = format!("{}-{}", backbone.as_str(), cfg.default_method);
        self.roll_out(cluster, prepared, cfg, &name).await
    }

    /// A fresh in-process cluster: the training part loaded through the public API, the content
    /// model with `backbone` trained and rolled out, the user task asked, the cold items
    /// published, the item task asked. Rows are named with `label` appended.
    pub(super) async fn served(&self, backbone: Backbone, label: &str) -> Result<Served> {
        let opts = self.opts;
        let mut cfg = opts.cfg.clone();
        let cluster_dir = opts.out.join(format!("cluster-{}", backbone.as_str()));
        let _ = std::fs::remove_dir_all(&cluster_dir);
        cfg.node.data_dir = cluster_dir;
        cfg.encoder.minilm_dir = opts.minilm_dir.clone();
        // every item the split calls new is in a pool: see `pool_hours_for`
        cfg.sharder.pool_hours = pool_hours_for(&cfg.sharder.pool_hours, self.split, self.data);
        let rows_per_batch = cfg.limits.max_batch_rows.min(5000);
        let image_dim = cfg.limits.image_dim;
        let mut tcfg = opts.train.clone();
        tcfg.encoder.backbone = backbone;
        let model_backbone =
            crate::training::backbone_for(&tcfg.encoder, opts.minilm_dir.as_deref())?;
        let cluster = LocalCluster::start(cfg.clone(), opts.sharders, 0).await?;
        let api = Api {
            http: reqwest::Client::new(),
            base: cluster.api.clone(),
        };
        let result = async {
            let total = self.data.users.len() + self.warm.len() + self.train.len();
            let pb = bar(total as u64, "load");
            for chunk in self.data.users.chunks(rows_per_batch) {
                api.post("/v1/users", &User::to_batch(chunk)).await?;
                pb.inc(chunk.len() as u64);
            }
            let mut warm_sorted = self.warm.to_vec();
            warm_sorted.sort_by_key(|i| (i.publish_ts, i.item_id));
            for chunk in warm_sorted.chunks(rows_per_batch) {
                api.post("/v1/items", &Item::to_batch(chunk, image_dim))
                    .await?;
                pb.inc(chunk.len() as u64);
            }
            for chunk in self.train.chunks(rows_per_batch) {
                let rows: Vec<Event> = chunk.iter().map(|e| (*e).clone()).collect();
                api.post("/v1/events", &Event::to_batch(&rows)).await?;
                pb.inc(chunk.len() as u64);
            }
            pb.finish();

            // the content model on the training part, rolled out
            let k = opts.clusters.unwrap_or((self.warm.len() / 20).max(8));
            let train_logged = logged(self.train, self.items);
            let iterations = opts.iterations;
            let warm_for_model = self.warm.to_vec();
            let mb = model_backbone.clone();
            let all_items = self.data.items.clone();
            // CPU work (training, and encoding every item for the encoder KNN baseline) off the
            // runtime the in-process services share
            let (model, assignments, trained, vectors) = tokio::task::spawn_blocking(move || {
                let (model, assignments, trained) = train_content_model(
                    &format!("eval-{}", tcfg.encoder.backbone.as_str()),
                    &warm_for_model,
                    &train_logged,
                    &tcfg,
                    k,
                    iterations,
                    mb.as_deref(),
                )?;
                let vectors = crate::training::content_vectors(&model, &all_items, mb.as_deref())?;
                Ok::<_, Error>((model, assignments, trained, vectors))
            })
            .await
            .map_err(|e| Error::Invalid(format!("training task: {e}")))??;
            let model_ref = model.save(&opts.out.join("models"), &assignments)?;
            cluster
                .activate_model(&model_ref, Duration::from_secs(300))
                .await?;
            // user task, before any cold item exists
            let split = self.split;
            let keep_user = |u: u64, i: u64| {
                !split.cold_items.contains(&i)
                    && split.seeds.get(&u).is_none_or(|s| !s.contains(&i))
            };
            let ask_user = Ask {
                what: "user task",
                users: self.new_users,
                at: split.at,
                since: None,
                keep: &keep_user,
                pool: self.warm_ids.len(),
                without: None,
                channels: None,
            };
            let mut user_rows = Vec::new();
            // the two-tower model on the training part (content vectors from the model above),
            // with the first default method, rolled out: first each user cold-start variant,
            // asked on the user task, then the configured model
            let tower_data = if let Some(&first) = opts.two_tower.first() {
                let content_dim = vectors.values().next().map_or(0, Vec::len);
                // the user cold-start variants with the first backbone only (their rows carry
                // no backbone label)
                let variants = if label.is_empty() {
                    opts.user_variants.as_slice()
                } else {
                    &[]
                };
                for (name, users) in variants {
                    let cfg = TwoTowerConfig {
                        content_dim,
                        default_method: first,
                        users: users.clone(),
                        ..opts.two_tower_cfg.clone()
                    };
                    let prepared = self.prepare_two_tower(&cfg, &vectors).await?;
                    self.roll_out(
                        &cluster,
                        &prepared,
                        cfg,
                        &format!("{}-users-{name}", backbone.as_str()),
                    )
                    .await?;
                    let only = [Channel::NewUserTower];
                    let ask = Ask {
                        what: "user task (user cold-start variant)",
                        channels: Some(&only),
                        ..ask_user
                    };
                    let rows = served(&api, &ask, self.ks, opts.concurrency).await?;
                    user_rows.extend(rows.into_iter().map(|mut r| {
                        r.method.push_str(&format!(" [users: {name}]"));
                        r
                    }));
                }
                let cfg = TwoTowerConfig {
                    content_dim,
                    default_method: first,
                    ..opts.two_tower_cfg.clone()
                };
                let prepared = self.prepare_two_tower(&cfg, &vectors).await?;
                self.roll_out_two_tower(&cluster, &prepared, cfg.clone(), backbone)
                    .await?;
                Some((prepared, cfg))
            } else {
                None
            };
            let model_json = serde_json::json!({
                "version": model_ref.version,
                "backbone": backbone.as_str(),
                "clusters": trained.clusters.0,
                "kmeans_objective": trained.clusters.1,
                "triplets": {"train": trained.triplets.0, "held_out": trained.triplets.1},
                "encoder_held_out_accuracy": trained.encoder.map(|e| e.held_out_accuracy),
                "encoder_train_loss": trained.encoder.map(|e| e.train_loss),
                "dim": opts.train.encoder.dim,
            });

            // the configured model on the user task, before any cold item exists
            let mut rows = served(&api, &ask_user, self.ks, opts.concurrency).await?;
            rows.append(&mut user_rows);
            let mut user_rows = rows;

            // item task: publish the cold items, then ask for the new-item pool (a pretrained
            // backbone encodes a large batch for longer than a publish call's deadline)
            let publish_batch = match backbone {
                Backbone::Hashed => rows_per_batch,
                Backbone::MiniLm => 64,
            };
            let pb = bar(self.cold.len() as u64, "publish");
            let started = std::time::Instant::now();
            for chunk in self.cold.chunks(publish_batch) {
                api.post("/v1/items", &Item::to_batch(chunk, image_dim))
                    .await?;
                pb.inc(chunk.len() as u64);
            }
            pb.finish();
            let publish_ms_per_item =
                started.elapsed().as_secs_f64() * 1000.0 / self.cold.len().max(1) as f64;
            let keep_cold = |_: u64, i: u64| split.cold_items.contains(&i);
            let ask = Ask {
                what: "item task",
                users: self.item_users,
                at: split.at,
                since: self.cold.first().map(|i| i.publish_ts),
                keep: &keep_cold,
                pool: self.cold_ids.len(),
                without: tower_data.as_ref().map(|_| Channel::TwoTower),
                channels: None,
            };
            let mut item_rows = served(&api, &ask, self.ks, opts.concurrency).await?;
            // every other default method: trained on the same replay, rolled out, asked again
            if let Some((prepared, cfg)) = &tower_data {
                for &method in opts.two_tower.iter().skip(1) {
                    let cfg = TwoTowerConfig {
                        default_method: method,
                        ..cfg.clone()
                    };
                    self.roll_out_two_tower(&cluster, prepared, cfg, backbone)
                        .await?;
                    let only = [Channel::TwoTower];
                    let ask = Ask {
                        what: "item task (two-tower)",
                        channels: Some(&only),
                        ..ask
                    };
                    let rows = served(&api, &ask, self.ks, opts.concurrency).await?;
                    item_rows.extend(rows.into_iter().map(|mut r| {
                        r.method.push_str(&format!(" [default {method}]"));
                        r
                    }));
                }
            }
            for r in item_rows.iter_mut().chain(user_rows.iter_mut()) {
                r.method.push_str(label);
            }
            let mut model = model_json;
            model["publish_ms_per_item"] = publish_ms_per_item.into();
            Ok::<_, Error>(Served {
                item_rows,
                user_rows,
                model,
                vectors,
            })
        }
        .await;
        cluster.shutdown().await;
        result
    }
}

/// The pool bounds the evaluation's cluster runs with: the configured ones, the longest reaching
/// back at least to the oldest item of the data set. The two-tower channels search the pools:
/// on the item task the split's cold items (new by the evaluation's definition, spanning months
/// of MovieLens where the default longest pool is 30 days; the request's `since` keeps the search
/// to them), on the user task the warm catalog a new user's learned embedding recalls from. A
/// platform of MovieLens' size (1,682 items) can hold its whole catalog in the pools; a rule of
/// the data, the same on the backtest, chosen by no recall.
pub(super) fn pool_hours_for(configured: &[i64], split: &Split, data: &Dataset) -> Vec<i64> {
    let mut hours = configured.to_vec();
    let oldest = data
        .items
        .iter()
        .map(|i| i.publish_ts)
        .min()
        .unwrap_or(split.at);
    let need = ((split.at.saturating_sub(oldest) + 3_599_999) / 3_600_000)
        .max(split.cold_window_hours(data))
        .min(coldstart_sharder::config::MAX_POOL_HOURS);
    match hours.last_mut() {
        Some(last) if *last < need => *last = need,
        Some(_) => {}
        None => hours.push(need),
    }
    hours
}
