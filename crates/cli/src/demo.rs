//! A built-in demo data generator: items with categories, keywords and publish times over the last
//! day; users with attributes and onboarding interests; events that mostly follow those interests.
//! Deterministic for a seed. Loads everything through the public API in batches, with progress.

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Demo categories.
pub const CATEGORIES: [&str; 20] = [
    "cats", "dogs", "travel", "food", "tech", "music", "movies", "sports", "fashion", "gaming",
    "books", "science", "art", "fitness", "diy", "finance", "cars", "garden", "comedy", "news",
];
const TOPICS: [&str; 8] = [
    "guide", "review", "tips", "howto", "daily", "best", "new", "top",
];
const TAGS: [&str; 6] = ["trending", "short", "long", "beginner", "expert", "weekend"];
const ACTIONS: [(&str, u32); 6] = [
    ("impression", 50),
    ("click", 25),
    ("like", 12),
    ("collect", 6),
    ("share", 4),
    ("comment", 3),
];

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Aggregator HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Items to publish.
    #[arg(long, default_value_t = 5_000)]
    pub items: u64,
    /// Users to create.
    #[arg(long, default_value_t = 500)]
    pub users: u64,
    /// Events to ingest.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Rows per request.
    #[arg(long, default_value_t = 2_000)]
    pub batch: usize,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write the items as Parquet (the `items` import format), e.g. to train on them.
    #[arg(long)]
    pub write_items: Option<std::path::PathBuf>,
    /// Only generate (and write, with --write-items); load nothing into the cluster.
    #[arg(long)]
    pub no_load: bool,
}

/// The demo item `id` (1-based), deterministic for the seed.
pub fn item(rng: &mut SmallRng, id: u64, now: i64) -> Value {
    let c = rng.random_range(0..CATEGORIES.len());
    let cat = CATEGORIES[c];
    let mut kws = vec![format!(
        "{cat}-{}",
        TOPICS[rng.random_range(0..TOPICS.len())]
    )];
    if rng.random_bool(0.6) {
        kws.push(TAGS[rng.random_range(0..TAGS.len())].to_string());
    }
    json!({
        "item_id": id,
        "publish_ts": now - rng.random_range(0..86_400_000i64),
        "author_id": rng.random_range(1..=1000u64),
        "category": cat,
        "keywords": kws,
        "title": format!("{} {cat} {} #{id}", pick(rng, &["a fresh", "the best", "my first", "why", "how to"]), kws[0]),
        "quality": (rng.random_range(0..100) as f32) / 100.0,
    })
}

fn pick(rng: &mut SmallRng, from: &[&'static str]) -> &'static str {
    from[rng.random_range(0..from.len())]
}

fn user(rng: &mut SmallRng, id: u64, now: i64) -> Value {
    let n = rng.random_range(1..=3);
    let interests: Vec<&str> = (0..n)
        .map(|_| CATEGORIES[rng.random_range(0..CATEGORIES.len())])
        .collect();
    json!({
        "user_id": id,
        "signup_ts": now - rng.random_range(0..30 * 86_400_000i64),
        "age_bucket": pick(rng, &["18-24", "25-34", "35-44", "45-49", "50-55", "56+"]),
        "gender": pick(rng, &["f", "m", "x"]),
        "occupation": pick(rng, &["student", "engineer", "artist", "doctor", "other"]),
        "region": format!("r{}", rng.random_range(0..10)),
        "interests": interests,
    })
}

async fn post(client: &reqwest::Client, url: &str, rows: &[Value]) -> anyhow::Result<()> {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let resp = client.post(url).body(body).send().await?;
    if !resp.status().is_success() {
        anyhow::bail!(
            "POST {url}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn load(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    rows: Vec<Value>,
    batch: usize,
) -> anyhow::Result<()> {
    let pb = ProgressBar::new(rows.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    for chunk in rows.chunks(batch.max(1)) {
        post(client, url, chunk).await?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(())
}

/// The demo data set, deterministic for the seed: items, users and events as JSON rows of the
/// import format.
pub fn generate(
    seed: u64,
    n_items: u64,
    n_users: u64,
    n_events: u64,
    now: i64,
) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let items: Vec<Value> = (1..=n_items).map(|id| item(&mut rng, id, now)).collect();
    let users: Vec<Value> = (1..=n_users).map(|id| user(&mut rng, id, now)).collect();
    // index items by category so events can follow interests
    let mut by_cat: Vec<Vec<(u64, i64)>> = vec![Vec::new(); CATEGORIES.len()];
    for it in &items {
        let c = CATEGORIES
            .iter()
            .position(|c| *c == it["category"])
            .unwrap_or(0);
        by_cat[c].push((
            it["item_id"].as_u64().unwrap_or(0),
            it["publish_ts"].as_i64().unwrap_or(now),
        ));
    }
    let total_w: u32 = ACTIONS.iter().map(|a| a.1).sum();
    let mut events = Vec::with_capacity(n_events as usize);
    for _ in 0..n_events {
        if n_users == 0 || n_items == 0 {
            break;
        }
        let u = &users[rng.random_range(0..users.len())];
        let interests = u["interests"].as_array().cloned().unwrap_or_default();
        let c = if rng.random_bool(0.8) && !interests.is_empty() {
            let name = interests[rng.random_range(0..interests.len())]
                .as_str()
                .unwrap_or("cats");
            CATEGORIES.iter().position(|c| *c == name).unwrap_or(0)
        } else {
            rng.random_range(0..CATEGORIES.len())
        };
        if by_cat[c].is_empty() {
            continue;
        }
        let (item_id, published) = by_cat[c][rng.random_range(0..by_cat[c].len())];
        let mut pick = rng.random_range(0..total_w);
        let action = ACTIONS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|a| a.0)
            .unwrap_or("click");
        events.push(json!({
            "user_id": u["user_id"],
            "item_id": item_id,
            "ts": rng.random_range(published..=now),
            "action": action,
            "dwell_ms": rng.random_range(0..60_000u32),
        }));
    }
    (items, users, events)
}

/// Generates and loads the demo data set.
pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    let now = coldstart_runtime::now_ms();
    let (items, users, events) = generate(a.seed, a.items, a.users, a.events, now);
    if let Some(path) = &a.write_items {
        let rows: Vec<coldstart_contracts::encoder::Item> =
            coldstart_contracts::validate::json_lines(
                &items.iter().map(|v| format!("{v}\n")).collect::<String>(),
                &coldstart_runtime::config::LimitsConfig {
                    max_batch_rows: usize::MAX,
                    ..Default::default()
                },
                coldstart_contracts::validate::item_row,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        coldstart_runtime::parquet_io::write_atomic(
            path,
            &[coldstart_contracts::encoder::Item::to_batch(&rows, 0)],
        )?;
        println!("wrote {} items to {}", rows.len(), path.display());
    }
    if a.no_load {
        return Ok(());
    }
    let base = a.url.trim_end_matches('/');
    let (n_items, n_users, n_events) = (items.len(), users.len(), events.len());
    load(
        &client,
        &format!("{base}/v1/items"),
        "items",
        items,
        a.batch,
    )
    .await?;
    load(
        &client,
        &format!("{base}/v1/users"),
        "users",
        users,
        a.batch,
    )
    .await?;
    load(
        &client,
        &format!("{base}/v1/events"),
        "events",
        events,
        a.batch,
    )
    .await?;
    println!(
        "demo loaded: {n_items} items, {n_users} users, {n_events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::encoder::Item;
    use coldstart_contracts::profile::{Event, LoggedEvent};
    use coldstart_contracts::validate::{event_row, item_row, json_lines};
    use coldstart_encoder::training::{item_features, TrainConfig};
    use coldstart_models::encoder::EncoderConfig;
    use coldstart_runtime::config::LimitsConfig;

    fn rows<T>(
        v: &[Value],
        parse: fn(usize, &serde_json::Map<String, Value>) -> coldstart_runtime::ServiceResult<T>,
    ) -> Vec<T> {
        let text: String = v.iter().map(|r| format!("{r}\n")).collect();
        let limits = LimitsConfig {
            max_batch_rows: usize::MAX,
            ..Default::default()
        };
        json_lines(&text, &limits, parse).unwrap()
    }

    /// A content twin — the same title, body and category, one keyword nobody has used — lands in
    /// its original's cluster, on the model `cargo xtask up` trains on the demo data.
    #[test]
    fn content_twins_land_in_their_originals_cluster() {
        let now = 1_780_000_000_000;
        let (items, _, events) = generate(7, 5_000, 500, 20_000, now);
        let items: Vec<Item> = rows(&items, item_row);
        let events: Vec<Event> = rows(&events, event_row);
        let by_id: std::collections::HashMap<u64, &Item> =
            items.iter().map(|i| (i.item_id, i)).collect();
        let logged: Vec<LoggedEvent> = events
            .into_iter()
            .map(|e| {
                let it = by_id[&e.item_id];
                LoggedEvent {
                    item_publish_ts: it.publish_ts,
                    category: it.category.clone(),
                    keywords: it.keywords.clone(),
                    event: e,
                }
            })
            .collect();
        // the demo model of `cargo xtask up`: 65,536 buckets, hidden 64, dim 32, 3 epochs, k 128
        let cfg = TrainConfig {
            encoder: EncoderConfig {
                buckets: 65_536,
                hidden: 64,
                dim: 32,
                ..Default::default()
            },
            epochs: 3,
            ..Default::default()
        };
        let (model, _, _) = coldstart_jobs::training::train_content_model(
            "demo", &items, &logged, &cfg, 128, 20, None,
        )
        .unwrap();
        let originals: Vec<Item> = items.iter().step_by(50).take(100).cloned().collect();
        let twins: Vec<Item> = originals
            .iter()
            .map(|it| {
                let mut t = it.clone();
                t.item_id += 1_000_000;
                t.keywords.push(format!("never-seen-{}", it.item_id));
                t
            })
            .collect();
        let cluster = |xs: &[Item]| -> Vec<u32> {
            let mut pts = Vec::new();
            for f in item_features(xs, &model.encoder.cfg, None).unwrap() {
                pts.extend_from_slice(model.encoder.encode(&f).unwrap().as_slice());
            }
            model.centroids.assign(&pts, 1, 256).unwrap().0
        };
        let (a, b) = (cluster(&originals), cluster(&twins));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert_eq!(originals.len(), 100);
        assert!(
            same >= 95,
            "{same} of 100 twins share their original's cluster"
        );
    }
}
