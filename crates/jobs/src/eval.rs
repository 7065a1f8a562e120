//! `coldstart eval`: recall quality through the serving path, against baselines computed in the
//! same run.
//!
//! The training part of a data set is loaded into an in-process cluster of the real services
//! through the public API; the content model is trained on it and rolled out; then every test
//! user's recall is asked of `GET /v1/recall` at the split's request time `at`, once merged for
//! each K and once per channel (`channels=`):
//! - user task: new users (newest 10% by sign-up) keep their first 3 events on warm items; the
//!   rest of their liked warm items are relevant; candidates are the warm items. It runs before the
//!   cold items are published, so the served answers hold warm items only.
//! - item task: the cold items (newest 20% by publish time, every event on them withheld) are
//!   published through the normal publish path; users with a like on a cold item are tested, the
//!   cold items they liked are relevant, and answers are asked for the new-item pool
//!   (`since` = the oldest cold item's publish time), any warm item that shares that millisecond
//!   dropped.

pub mod baselines;
pub mod metrics;
pub mod report;
pub mod split;

use crate::dataset::Dataset;
use crate::local::LocalCluster;
use crate::training::{bar, train_content_model};
use crate::{Error, Result};
use baselines::{Baseline, Baselines};
use coldstart_aggregator::request::Channel;
use coldstart_common::rows::{Event, Item, LoggedEvent, User};
use coldstart_common::{ipc, Config};
use coldstart_encoder::training::TrainConfig;
use coldstart_models::encoder::{Backbone, SentenceEncoder};
use futures::StreamExt;
use metrics::Accumulator;
use report::{Kind, Report, Row, Target, TaskReport};
use split::{Split, SplitFile};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to run an evaluation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cutoffs K.
    pub ks: Vec<usize>,
    /// Where the report, the split, the model and the cluster's data go.
    pub out: PathBuf,
    /// A `split.json` whose keys override the computed split.
    pub split: Option<PathBuf>,
    /// Content model clusters (default: one per 20 warm items, at least 8).
    pub clusters: Option<usize>,
    /// Encoder training.
    pub train: TrainConfig,
    /// k-means iterations.
    pub iterations: usize,
    /// Service configuration of the in-process cluster (its data dir is set under `out`).
    pub cfg: Config,
    /// Sharders in the cluster.
    pub sharders: usize,
    /// Recall requests in flight at once.
    pub concurrency: usize,
    /// Evaluate on the training part of the split instead (warm items, users who are not new),
    /// split again by the same rules: for tuning without touching any test user.
    pub validation: bool,
    /// Content encoder backbones to evaluate, each through its own served run (default: hashed).
    pub backbones: Vec<Backbone>,
    /// The MiniLM folder, for the `minilm` backbone.
    pub minilm_dir: Option<PathBuf>,
}

/// Which served channel is meant for which task (a target: each beats random on its own task).
pub fn channel_task(c: Channel) -> Option<&'static str> {
    match c {
        Channel::Category | Channel::Keyword | Channel::Cluster => Some("item"),
        Channel::Popular | Channel::GroupPopular | Channel::Onboarding => Some("user"),
        // the newest items overall: there so an answer is never empty, not a relevance channel
        Channel::Fallback => None,
    }
}

/// Checks the cutoffs: at least one, none 0, none over the API's `max_k`.
pub fn check_ks(ks: &[usize], max_k: usize) -> Result<Vec<usize>> {
    if ks.is_empty() {
        return Err(Error::Invalid("--k: at least one cutoff is needed".into()));
    }
    let mut v = ks.to_vec();
    v.sort_unstable();
    v.dedup();
    if let Some(bad) = v.iter().find(|&&k| k == 0 || k > max_k) {
        return Err(Error::Invalid(format!(
            "--k: {bad} is not a cutoff in 1..={max_k} (aggregator.max_k)"
        )));
    }
    Ok(v)
}

struct Api {
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
struct TestUser {
    user: u64,
    relevant: HashSet<u64>,
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
    } = *ask;
    let max_k = *ks.last().expect("checked cutoffs");
    let mut asks: Vec<(usize, Option<Channel>, usize)> = Vec::new();
    for u in 0..users.len() {
        for &k in ks {
            asks.push((u, None, k));
        }
        for c in Channel::ALL {
            asks.push((u, Some(c), max_k));
        }
    }
    let pb = bar(asks.len() as u64, what);
    let since_q = since.map(|s| format!("&since={s}")).unwrap_or_default();
    let answers: Vec<(usize, Option<Channel>, usize, Vec<u64>)> =
        futures::stream::iter(asks.into_iter().map(|(u, c, k)| {
            let q = format!(
                "user_id={}&k={k}&at={at}{since_q}{}",
                users[u].user,
                c.map(|c| format!("&channels={c}")).unwrap_or_default()
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
    let mut merged = Accumulator::new(ks);
    let mut merged_parts: Vec<BTreeMap<usize, Vec<u64>>> = vec![BTreeMap::new(); users.len()];
    let mut per_channel: BTreeMap<Channel, Accumulator> = BTreeMap::new();
    let mut nonempty: HashMap<Channel, usize> = HashMap::new();
    for (u, c, k, items) in answers {
        let user = users[u].user;
        let items: Vec<u64> = items.into_iter().filter(|&i| keep(user, i)).collect();
        match c {
            None => {
                merged_parts[u].insert(k, items);
            }
            Some(c) => {
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
    // the merged answer at each K is its own request: quotas are shares of k
    let mut by_k: BTreeMap<usize, Accumulator> = BTreeMap::new();
    for (u, parts) in merged_parts.iter().enumerate() {
        for (&k, items) in parts {
            by_k.entry(k)
                .or_insert_with(|| Accumulator::new(&[k]))
                .add(items, &users[u].relevant);
        }
        if let Some(items) = parts
            .get(&metrics::COVERAGE_K)
            .or_else(|| parts.values().last())
        {
            merged.add(items, &users[u].relevant);
        }
    }
    // coverage from the answer at COVERAGE_K (or the largest asked); the rest per K
    let mut scores = merged.finish(pool);
    for (k, acc) in &by_k {
        let s = acc.finish(pool);
        scores.recall.insert(*k, s.recall[k]);
        scores.ndcg.insert(*k, s.ndcg[k]);
    }
    let mut rows = vec![Row {
        method: "coldstart (merged)".into(),
        kind: Kind::Served,
        scores: Some(scores),
        note: None,
    }];
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

/// Baseline rows for a task.
#[allow(clippy::too_many_arguments)]
fn baseline_rows(
    b: &Baselines<'_>,
    users: &[TestUser],
    seeds: &HashMap<u64, Vec<&Event>>,
    candidates: &(dyn Fn(u64) -> Vec<u64> + Sync),
    ks: &[usize],
    pool: usize,
    cold_task: bool,
    only: Option<Baseline>,
) -> Vec<Row> {
    let max_k = *ks.last().expect("checked cutoffs");
    let mut rows = Vec::new();
    if only.is_none() {
        let mut random = Accumulator::new(ks);
        for u in users {
            random.add_random(candidates(u.user).len(), u.relevant.len());
        }
        rows.push(Row {
            method: "random".into(),
            kind: Kind::Baseline,
            scores: Some(random.finish(pool)),
            note: Some("exact expectation".into()),
        });
    }
    let none: Vec<&Event> = Vec::new();
    for m in Baseline::ALL
        .into_iter()
        .filter(|m| only.is_none_or(|o| o == *m))
    {
        if cold_task && !m.sees_cold_items() {
            rows.push(Row {
                method: m.name().into(),
                kind: Kind::Baseline,
                scores: None,
                note: Some("cold items have no events: it cannot rank them".into()),
            });
            continue;
        }
        let mut acc = Accumulator::new(ks);
        for u in users {
            let s = seeds.get(&u.user).unwrap_or(&none);
            let ranked = b.rank(m, u.user, s, &candidates(u.user), max_k);
            acc.add(&ranked, &u.relevant);
        }
        rows.push(Row {
            method: m.name().into(),
            kind: Kind::Baseline,
            scores: Some(acc.finish(pool)),
            note: None,
        });
    }
    rows
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

/// Every item's content vector under `model`.
fn encode_all(
    model: &coldstart_common::model::ContentModel,
    items: &[Item],
    backbone: Option<&dyn SentenceEncoder>,
) -> Result<HashMap<u64, Vec<f32>>> {
    let feats = coldstart_encoder::training::item_features(items, &model.encoder.cfg, backbone)?;
    items
        .iter()
        .zip(&feats)
        .map(|(it, f)| Ok((it.item_id, model.encoder.encode(f)?.as_slice().to_vec())))
        .collect()
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    coldstart_common::parquet_io::write_bytes_atomic(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// What one evaluation run shares between its backbones.
struct Run<'a> {
    data: &'a Dataset,
    split: &'a Split,
    items: &'a HashMap<u64, &'a Item>,
    train: &'a [&'a Event],
    warm: &'a [Item],
    cold: &'a [Item],
    warm_ids: &'a [u64],
    cold_ids: &'a [u64],
    new_users: &'a [TestUser],
    item_users: &'a [TestUser],
    ks: &'a [usize],
    opts: &'a Options,
}

/// What the served system answered with one backbone.
struct Served {
    item_rows: Vec<Row>,
    user_rows: Vec<Row>,
    model: serde_json::Value,
    /// Every item's content vector under the run's model, for the encoder KNN baseline.
    vectors: HashMap<u64, Vec<f32>>,
}

impl Run<'_> {
    /// A fresh in-process cluster: the training part loaded through the public API, the content
    /// model with `backbone` trained and rolled out, the user task asked, the cold items
    /// published, the item task asked. Rows are named with `label` appended.
    async fn served(&self, backbone: Backbone, label: &str) -> Result<Served> {
        let opts = self.opts;
        let mut cfg = opts.cfg.clone();
        let cluster_dir = opts.out.join(format!("cluster-{}", backbone.as_str()));
        let _ = std::fs::remove_dir_all(&cluster_dir);
        cfg.node.data_dir = cluster_dir;
        cfg.encoder.minilm_dir = opts.minilm_dir.clone();
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
            let (model, assignments, trained) = tokio::task::spawn_blocking(move || {
                train_content_model(
                    &format!("eval-{}", tcfg.encoder.backbone.as_str()),
                    &warm_for_model,
                    &train_logged,
                    &tcfg,
                    k,
                    iterations,
                    mb.as_deref(),
                )
            })
            .await
            .map_err(|e| Error::Invalid(format!("training task: {e}")))??;
            let model_ref = model.save(&opts.out.join("models"), &assignments)?;
            cluster
                .activate_model(&model_ref, Duration::from_secs(300))
                .await?;
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
            let vectors = encode_all(&model, &self.data.items, model_backbone.as_deref())?;

            // user task, before any cold item exists
            let split = self.split;
            let keep_user = |u: u64, i: u64| {
                !split.cold_items.contains(&i)
                    && split.seeds.get(&u).is_none_or(|s| !s.contains(&i))
            };
            let ask = Ask {
                what: "user task",
                users: self.new_users,
                at: split.at,
                since: None,
                keep: &keep_user,
                pool: self.warm_ids.len(),
            };
            let mut user_rows = served(&api, &ask, self.ks, opts.concurrency).await?;

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
            };
            let mut item_rows = served(&api, &ask, self.ks, opts.concurrency).await?;
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

/// Runs the evaluation and writes `report.json`, `report.md`, `recall.svg` and `split.json` to
/// `opts.out`.
pub async fn run(data: Dataset, opts: Options) -> Result<Report> {
    let started = std::time::Instant::now();
    let ks = check_ks(&opts.ks, opts.cfg.aggregator.max_k)?;
    if data.items.is_empty() || data.events.is_empty() || data.users.is_empty() {
        return Err(Error::Invalid(format!(
            "the data set has {} items, {} events and {} users: each table needs rows",
            data.items.len(),
            data.events.len(),
            data.users.len()
        )));
    }
    let over: Option<SplitFile> = match &opts.split {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Input {
                file: p.clone(),
                message: e.to_string(),
            })?;
            Some(serde_json::from_str(&text).map_err(|e| Error::Input {
                file: p.clone(),
                message: format!("not a split: {e}"),
            })?)
        }
        None => None,
    };
    let mut split = Split::compute(&data, over.as_ref())?;
    let latest = coldstart_common::validate::now_ms() + opts.cfg.limits.max_future_skew_s * 1000;
    if split.at > latest {
        return Err(Error::Invalid(format!(
            "split: `at` {} ms is in the future beyond limits.max_future_skew_s",
            split.at
        )));
    }
    let data = if opts.validation {
        let part = split.training_part(&data);
        split = Split::compute(&part, None)?;
        eprintln!(
            "validation: the training part of the split, split again; no test user takes part"
        );
        part
    } else {
        data
    };
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Write {
        path: opts.out.clone(),
        source,
    })?;
    write(
        &opts.out.join("split.json"),
        serde_json::to_string_pretty(&split.to_file())
            .expect("a split serialises")
            .as_bytes(),
    )?;
    let items: HashMap<u64, &Item> = data.items.iter().map(|i| (i.item_id, i)).collect();
    let known_users: HashSet<u64> = data.users.iter().map(|u| u.user_id).collect();
    if let Some(e) = data.events.iter().find(|e| !items.contains_key(&e.item_id)) {
        return Err(Error::Invalid(format!(
            "events: item {} (user {}) is not in the items file",
            e.item_id, e.user_id
        )));
    }
    if let Some(e) = data
        .events
        .iter()
        .find(|e| !known_users.contains(&e.user_id))
    {
        return Err(Error::Invalid(format!(
            "events: user {} is not in the users file",
            e.user_id
        )));
    }
    let mut train: Vec<&Event> = data.events.iter().filter(|e| split.trains(e)).collect();
    train.sort_by_key(|e| (e.ts, e.user_id, e.item_id));
    let warm: Vec<Item> = data
        .items
        .iter()
        .filter(|i| !split.cold_items.contains(&i.item_id))
        .cloned()
        .collect();
    let mut cold: Vec<Item> = data
        .items
        .iter()
        .filter(|i| split.cold_items.contains(&i.item_id))
        .cloned()
        .collect();
    cold.sort_by_key(|i| (i.publish_ts, i.item_id));
    eprintln!(
        "eval: {} items ({} cold), {} users ({} new), {} events ({} in training), at {} ms",
        data.items.len(),
        cold.len(),
        data.users.len(),
        split.new_users.len(),
        data.events.len(),
        train.len(),
        split.at
    );

    // ---- the test users of both tasks and their candidate pools
    let warm_ids: Vec<u64> = {
        let mut v: Vec<u64> = warm.iter().map(|i| i.item_id).collect();
        v.sort_unstable();
        v
    };
    let mut new_users: Vec<TestUser> = Vec::new();
    for &u in &split.new_users {
        let s: HashSet<u64> = split.seeds.get(&u).into_iter().flatten().copied().collect();
        let relevant: HashSet<u64> = data
            .events
            .iter()
            .filter(|e| e.user_id == u && e.action == "like")
            .map(|e| e.item_id)
            .filter(|i| !split.cold_items.contains(i) && !s.contains(i))
            .collect();
        if !relevant.is_empty() {
            new_users.push(TestUser { user: u, relevant });
        }
    }
    let mut liked_cold: BTreeMap<u64, HashSet<u64>> = BTreeMap::new();
    for e in &data.events {
        if e.action == "like" && split.cold_items.contains(&e.item_id) {
            liked_cold.entry(e.user_id).or_default().insert(e.item_id);
        }
    }
    let item_users: Vec<TestUser> = liked_cold
        .into_iter()
        .map(|(user, relevant)| TestUser { user, relevant })
        .collect();
    let cold_ids: Vec<u64> = split.cold_items.iter().copied().collect();
    let run = Run {
        data: &data,
        split: &split,
        items: &items,
        train: &train,
        warm: &warm,
        cold: &cold,
        warm_ids: &warm_ids,
        cold_ids: &cold_ids,
        new_users: &new_users,
        item_users: &item_users,
        ks: &ks,
        opts: &opts,
    };
    let backbones = if opts.backbones.is_empty() {
        vec![Backbone::Hashed]
    } else {
        opts.backbones.clone()
    };
    let mut item_rows = Vec::new();
    let mut user_rows = Vec::new();
    let mut models = serde_json::Map::new();
    let mut vectors = Vec::new();
    for (i, &backbone) in backbones.iter().enumerate() {
        // the first backbone's rows carry the plain names the targets read
        let label = if i == 0 {
            String::new()
        } else {
            format!(" [{}]", backbone.as_str())
        };
        let served = run.served(backbone, &label).await?;
        item_rows.extend(served.item_rows);
        user_rows.extend(served.user_rows);
        models.insert(backbone.as_str().into(), served.model);
        vectors.push((label, served.vectors));
    }

    // ---- baselines learn from the same training part
    let mut seeds: HashMap<u64, Vec<&Event>> = HashMap::new();
    for e in &train {
        seeds.entry(e.user_id).or_default().push(e);
    }
    let train_rows: Vec<Event> = train.iter().map(|e| (*e).clone()).collect();
    let user_candidates = |u: u64| -> Vec<u64> {
        let s = split.seeds.get(&u);
        warm_ids
            .iter()
            .copied()
            .filter(|i| s.is_none_or(|s| !s.contains(i)))
            .collect()
    };
    for (i, (label, v)) in vectors.into_iter().enumerate() {
        let b = Baselines::new(
            &data.items,
            &data.users,
            &train_rows,
            split.at,
            &opts.cfg.profile.group_by,
            opts.cfg.profile.popular_half_life_h,
        )
        .with_vectors(v);
        // every baseline once; the encoder's KNN once per backbone
        let only = (i > 0).then_some(Baseline::EncoderKnn);
        let relabel = |mut rows: Vec<Row>| {
            rows.iter_mut().for_each(|r| r.method.push_str(&label));
            rows
        };
        user_rows.extend(relabel(baseline_rows(
            &b,
            &new_users,
            &seeds,
            &user_candidates,
            &ks,
            warm_ids.len(),
            false,
            only,
        )));
        item_rows.extend(relabel(baseline_rows(
            &b,
            &item_users,
            &seeds,
            &|_| cold_ids.clone(),
            &ks,
            cold_ids.len(),
            true,
            only,
        )));
    }
    let relevant = |us: &[TestUser]| us.iter().map(|u| u.relevant.len()).sum();
    let tasks = vec![
        TaskReport {
            task: "item".into(),
            description: "cold items (newest 20% by publish time, no events in training) for users who liked one".into(),
            users: item_users.len(),
            candidates: cold_ids.len(),
            relevant: relevant(&item_users),
            rows: item_rows,
        },
        TaskReport {
            task: "user".into(),
            description: "warm items for new users (newest 10% by sign-up) who keep their first 3 events".into(),
            users: new_users.len(),
            candidates: warm_ids.len(),
            relevant: relevant(&new_users),
            rows: user_rows,
        },
    ];
    let model_json = serde_json::Value::Object(models);
    let targets = targets(&tasks, &ks);
    let report = Report {
        data: serde_json::json!({
            "validation": opts.validation,
            "items": data.items.len(),
            "cold_items": split.cold_items.len(),
            "users": data.users.len(),
            "new_users": split.new_users.len(),
            "events": data.events.len(),
            "at": split.at,
        }),
        model: model_json,
        ks,
        tasks,
        targets,
        seconds: started.elapsed().as_secs_f64(),
    };
    write(
        &opts.out.join("report.json"),
        serde_json::to_string_pretty(&report)
            .expect("a report serialises")
            .as_bytes(),
    )?;
    write(&opts.out.join("report.md"), report.markdown().as_bytes())?;
    write(&opts.out.join("recall.svg"), report.svg().as_bytes())?;
    Ok(report)
}

/// The targets on this run, at K = 50 (or the middle cutoff).
fn targets(tasks: &[TaskReport], ks: &[usize]) -> Vec<Target> {
    let k = if ks.contains(&50) {
        50
    } else {
        ks[ks.len() / 2]
    };
    let r = |t: &TaskReport, m: &str| t.scores(m).and_then(|s| s.recall.get(&k).copied());
    let mut out = Vec::new();
    let task = |name: &str| tasks.iter().find(|t| t.task == name);
    for c in Channel::ALL {
        let Some(tn) = channel_task(c) else { continue };
        let Some(t) = task(tn) else { continue };
        if let (Some(v), Some(rand)) = (r(t, &format!("channel {c}")), r(t, "random")) {
            out.push(Target {
                what: format!("channel {c} beats random on the {tn} task (Recall@{k})"),
                value: v,
                bar: rand,
                met: v > rand,
            });
        }
    }
    if let Some(t) = task("item") {
        if let (Some(v), Some(rand)) = (r(t, "channel cluster"), r(t, "random")) {
            out.push(Target {
                what: format!("cluster channel reaches 1.5x random on the item task (Recall@{k})"),
                value: v,
                bar: 1.5 * rand,
                met: v >= 1.5 * rand,
            });
        }
        if let (Some(v), Some(knn)) = (
            r(t, "coldstart (merged)"),
            r(t, Baseline::ContentKnn.name()),
        ) {
            out.push(Target {
                what: format!("merged answer reaches content KNN on the item task (Recall@{k})"),
                value: v,
                bar: knn,
                met: v >= knn,
            });
        }
    }
    if let Some(t) = task("user") {
        if let (Some(v), Some(g)) = (
            r(t, "coldstart (merged)"),
            r(t, Baseline::GroupPopular.name()),
        ) {
            out.push(Target {
                what: format!("merged answer beats group popularity on the user task (Recall@{k})"),
                value: v,
                bar: g,
                met: v > g,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_are_checked() {
        assert_eq!(check_ks(&[50, 20, 50], 500).unwrap(), [20, 50]);
        let e = check_ks(&[20, 0], 500).unwrap_err().to_string();
        assert!(e.contains("--k: 0"), "{e}");
        let e = check_ks(&[501], 500).unwrap_err().to_string();
        assert!(e.contains("501") && e.contains("aggregator.max_k"), "{e}");
        assert!(check_ks(&[], 500).is_err());
    }
}
