//! Every time-dependent quantity is relative to the request time: the same data set loaded twice
//! through the public API, the second time with every timestamp shifted by three years and
//! 12,345 ms, recalled at the correspondingly shifted `at`, gives the same answers — items,
//! channels and scores — for new users (popularity), warm users (interests, clusters, content
//! similarity) and with recency in the scores. The services run in one process (the same code
//! as the distributed deployment; the etcd-backed tests cover discovery).

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_contracts::types::Action;
use coldstart_encoder::training::TrainConfig;
use coldstart_jobs::config::Config;
use coldstart_jobs::local::LocalCluster;
use coldstart_models::encoder::EncoderConfig;
use std::time::Duration;

const DAY: i64 = 86_400_000;
const BASE: i64 = 978_307_200_000; // 2001-01-01
const SHIFT: i64 = 3 * 365 * DAY + 12_345;

fn data() -> (Vec<Item>, Vec<User>, Vec<Event>) {
    let cats = ["cats", "dogs", "birds", "fish"];
    let items: Vec<Item> = (1..=80u64)
        .map(|i| {
            let c = cats[(i % 4) as usize];
            Item {
                item_id: i,
                publish_ts: BASE + (i as i64 * 7919 % 60) * DAY / 2 + i as i64,
                author_id: None,
                category: c.into(),
                keywords: vec![c.into(), format!("tag{}", i % 7)],
                title: format!("{c} story {} of {}", i % 5, i % 3),
                body: None,
                image_vec: None,
                quality: None,
                author_quality: None,
            }
        })
        .collect();
    let users: Vec<User> = (1..=24u64)
        .map(|u| User {
            user_id: u,
            signup_ts: BASE + u as i64 * DAY,
            age_bucket: Some(["18-24", "25-34"][(u % 2) as usize].into()),
            gender: Some(["f", "m"][(u % 3 % 2) as usize].into()),
            region: Some((u % 3).to_string()),
            ..Default::default()
        })
        .collect();
    let mut events = Vec::new();
    for u in 1..=24u64 {
        // users 1..=16 are warm (many events), 17..=24 new (two each)
        let n = if u <= 16 { 25 } else { 2 };
        for j in 0..n {
            let item = (u * 13 + j * 4 + (u % 4)) % 80 + 1;
            let ts = items[item as usize - 1].publish_ts + (j as i64 + 1) * DAY / 3 + u as i64;
            events.push(Event {
                user_id: u,
                item_id: item,
                ts,
                action: [
                    Action::Like,
                    Action::Click,
                    Action::Collect,
                    Action::Share,
                    Action::Like,
                ][(j % 5) as usize],
                dwell_ms: None,
                request_id: None,
            });
        }
    }
    events.sort_by_key(|e| (e.ts, e.user_id, e.item_id));
    (items, users, events)
}

async fn answers(
    shift: i64,
    model_dir: &std::path::Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (mut items, mut users, mut events) = data();
    items.iter_mut().for_each(|i| i.publish_ts += shift);
    users.iter_mut().for_each(|u| u.signup_ts += shift);
    events.iter_mut().for_each(|e| e.ts += shift);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.path().to_path_buf();
    cfg.aggregator.recency_half_life_h = 24.0; // exercise recency too
    cfg.limits.image_dim = 0;
    // the model is trained once; each run gets its forward index with its own publish times
    let logged: Vec<coldstart_contracts::profile::LoggedEvent> = events
        .iter()
        .map(|e| {
            let it = &items[e.item_id as usize - 1];
            coldstart_contracts::profile::LoggedEvent {
                event: e.clone(),
                item_publish_ts: it.publish_ts,
                category: it.category.clone(),
                keywords: it.keywords.clone(),
            }
        })
        .collect();
    let tcfg = TrainConfig {
        encoder: EncoderConfig {
            buckets: 1 << 12,
            hidden: 16,
            dim: 8,
            ..Default::default()
        },
        epochs: 2,
        min_exposure: 2,
        ..Default::default()
    };
    let (model, assignments, _) =
        coldstart_jobs::training::train_content_model("v1", &items, &logged, &tcfg, 6, 5, None)?;
    let model_ref = model.save(&model_dir.join(shift.to_string()), &assignments)?;

    let cluster = LocalCluster::start(cfg, 2, 0).await?;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", cluster.api))
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(body)
            .send()
    };
    let ipc = coldstart_runtime::ipc::encode;
    assert!(post("/v1/users", ipc(&User::to_batch(&users)))
        .await?
        .status()
        .is_success());
    assert!(post("/v1/items", ipc(&Item::to_batch(&items, 0)))
        .await?
        .status()
        .is_success());
    assert!(post("/v1/events", ipc(&Event::to_batch(&events)))
        .await?
        .status()
        .is_success());
    cluster
        .activate_model(&model_ref, Duration::from_secs(60))
        .await?;
    let at = BASE + 40 * DAY + shift;
    let mut out = Vec::new();
    for u in 1..=25u64 {
        for q in ["", "&channels=cluster", "&channels=popular,group_popular"] {
            let url = format!("{}/v1/recall?user_id={u}&k=30&at={at}{q}", cluster.api);
            let body: serde_json::Value = http.get(&url).send().await?.json().await?;
            let mut items = body["items"].clone();
            for it in items.as_array_mut().into_iter().flatten() {
                // publish times shift with the data; everything else must not move
                let ts = it["publish_ts"].as_i64().unwrap_or(0) - shift;
                it["publish_ts"] = ts.into();
            }
            out.push(serde_json::json!({"user": u, "q": q, "items": items}));
        }
    }
    cluster.shutdown().await;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifting_every_timestamp_and_the_request_time_changes_no_answer() -> anyhow::Result<()> {
    let models = tempfile::tempdir()?;
    let a = answers(0, models.path()).await?;
    let b = answers(SHIFT, models.path()).await?;
    assert_eq!(a.len(), b.len());
    let mut channels = std::collections::BTreeSet::new();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the shifted run answers differently");
        for it in x["items"].as_array().unwrap() {
            for c in it["channels"].as_array().unwrap() {
                channels.insert(c.as_str().unwrap().to_string());
            }
        }
    }
    // the comparison covered what matters: interest, cluster, popularity and fallback channels
    for c in ["category", "keyword", "cluster", "popular", "group_popular"] {
        assert!(
            channels.contains(c),
            "no answer came from {c}: {channels:?}"
        );
    }
    Ok(())
}
