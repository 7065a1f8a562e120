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
mod served;
pub mod split;

use crate::config::Config;
use crate::dataset::Dataset;
use crate::{Error, Result};
use baselines::{Baseline, Baselines};
use coldstart_aggregator::request::Channel;
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::Event;
use coldstart_contracts::types::Action;
use coldstart_encoder::training::TrainConfig;
use coldstart_models::encoder::Backbone;
use metrics::Accumulator;
use report::{targets, Kind, Report, Row, TaskReport};
use served::{Run, TestUser};
use split::{Split, SplitFile};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// With `validation`: the share of the backtest's users that are new (the test's is
    /// [`split::NEW_USER_SHARE`]).
    pub validation_new_users: f64,
    /// Content encoder backbones to evaluate, each through its own served run (default: hashed).
    pub backbones: Vec<Backbone>,
    /// The MiniLM folder, for the `minilm` backbone.
    pub minilm_dir: Option<PathBuf>,
    /// The two-tower model's default ID methods to evaluate: the first is served through both
    /// tasks (and the item task is asked again without the channel); each other one is trained,
    /// rolled out and asked on the item task after it. Empty: no two-tower model.
    pub two_tower: Vec<coldstart_models::two_tower::DefaultMethod>,
    /// The two-tower model's shape and training (its `default_method` is set per run; its
    /// `users` part is the configured one, `[new_users]`).
    pub two_tower_cfg: coldstart_models::two_tower::TwoTowerConfig,
    /// User cold-start variants asked on the user task beside the configured model, each its
    /// own model (label, users part): rows `[users: label]`; with the first backbone only.
    pub user_variants: Vec<(String, coldstart_models::two_tower::UserColdConfig)>,
}

/// The user cold-start variants of the eval's table, by name: `none` (own ID, no weighting, no
/// bias part), then each method of `[new_users]` alone on top of it: `weight` (the configured
/// sample weight and future targets), `bias` (the bias part), `meta`, `knn`, `group`. The configured combination
/// is the eval's main model.
pub fn user_variant(
    name: &str,
    configured: &coldstart_models::two_tower::UserColdConfig,
) -> Result<coldstart_models::two_tower::UserColdConfig> {
    use coldstart_models::two_tower::{UserColdConfig, UserMethod};
    let none = UserColdConfig {
        method: UserMethod::Id,
        new_user_weight: 1.0,
        future_targets: 0,
        bias_features: false,
        ..configured.clone()
    };
    Ok(match name {
        "none" => none,
        "weight" => UserColdConfig {
            new_user_weight: if configured.new_user_weight == 1.0 {
                2.0
            } else {
                configured.new_user_weight
            },
            future_targets: configured.future_targets,
            ..none
        },
        "bias" => UserColdConfig {
            bias_features: true,
            ..none
        },
        m => UserColdConfig {
            method: m.parse::<UserMethod>().map_err(|e| {
                Error::Invalid(format!("--user-variants: {e}, or none, weight, bias"))
            })?,
            ..none
        },
    })
}

/// Every variant [`user_variant`] knows, in the report's order.
pub const USER_VARIANTS: [&str; 6] = ["none", "weight", "bias", "meta", "knn", "group"];

/// Which served channel is meant for which task (a target: each beats random on its own task).
pub fn channel_task(c: Channel) -> Option<&'static str> {
    match c {
        Channel::Category | Channel::Keyword | Channel::Cluster => Some("item"),
        Channel::Popular | Channel::GroupPopular | Channel::Onboarding => Some("user"),
        // the newest items overall: there so an answer is never empty, not a relevance channel
        Channel::Fallback => None,
        // the new items nearest the user's two-tower vector
        Channel::TwoTower => Some("item"),
        // a handed-over new user's learned embedding
        Channel::NewUserTower => Some("user"),
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

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    coldstart_runtime::parquet_io::write_bytes_atomic(path, bytes).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
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
    let latest = coldstart_runtime::now_ms() + opts.cfg.limits.max_future_skew_s * 1000;
    if split.at > latest {
        return Err(Error::Invalid(format!(
            "split: `at` {} ms is in the future beyond limits.max_future_skew_s",
            split.at
        )));
    }
    let data = if opts.validation {
        let part = split.training_part(&data);
        split = Split::compute_with(&part, None, opts.validation_new_users)?;
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
            .filter(|e| e.user_id == u && e.action == Action::Like)
            .map(|e| e.item_id)
            .filter(|i| !split.cold_items.contains(i) && !s.contains(i))
            .collect();
        if !relevant.is_empty() {
            new_users.push(TestUser { user: u, relevant });
        }
    }
    let mut liked_cold: BTreeMap<u64, HashSet<u64>> = BTreeMap::new();
    for e in &data.events {
        if e.action == Action::Like && split.cold_items.contains(&e.item_id) {
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
            "validation_new_users": opts.validation.then_some(opts.validation_new_users),
            "items": data.items.len(),
            "cold_items": split.cold_items.len(),
            "users": data.users.len(),
            "new_users": split.new_users.len(),
            "events": data.events.len(),
            "at": split.at,
            "pool_hours": served::pool_hours_for(&opts.cfg.sharder.pool_hours, &split, &data),
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
