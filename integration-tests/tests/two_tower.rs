//! The two-tower channel end to end on a real cluster: a model trained on the event log is named
//! in etcd; the sharders file the items they hold into the new-item pools under it, new items
//! published afterwards enter the pools with the default ID embedding, and recall answers with
//! `two_tower` items nearest the user's tastes, among the new items only (the pools hold the
//! items of the last 30 days before the request time). A second model is staged (every sharder
//! builds its pools, the aggregator stays on the first) and then activated.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_contracts::types::Action;
use coldstart_integration_tests::{
    events_json, eventually, from_channel, now_ms, small_two_tower, Options, TestCluster,
};
use coldstart_jobs::rollout::Step;
use coldstart_jobs::two_tower::{prepare, train_and_evaluate};
use coldstart_models::two_tower::{DefaultMethod, TwoTower, TwoTowerConfig};
use coldstart_runtime::discovery::Role;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const HOUR: i64 = 3_600_000;

fn topic(i: u64) -> &'static str {
    if i.is_multiple_of(2) {
        "dogs"
    } else {
        "cats"
    }
}

fn item(i: u64, ts: i64) -> Item {
    Item {
        item_id: i,
        publish_ts: ts,
        author_id: None,
        category: topic(i).into(),
        keywords: vec![format!("{}-breed", topic(i))],
        title: format!("{} story {i}", topic(i)),
        body: None,
        image_vec: None,
        quality: None,
        author_quality: None,
    }
}

fn item_json(it: &Item) -> Value {
    json!({"item_id": it.item_id, "publish_ts": it.publish_ts, "category": it.category,
           "keywords": it.keywords, "title": it.title})
}

/// Vectors each sharder's pools hold under `version` (`GET /v1/index`).
async fn pools(c: &TestCluster, version: &str) -> anyhow::Result<Vec<u64>> {
    let m = c.membership();
    let mut counts = Vec::new();
    for s in m.role(Role::Sharder) {
        let (_, v) = c
            .get_json(&format!("http://{}/v1/index", s.http_addr))
            .await?;
        counts.push(v["pools"][version].as_u64().unwrap_or(0));
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_items_reach_their_users_through_the_two_tower_pools() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::default()).await?;
    let now = now_ms();
    // 40 warm items, 40 days old (older than the longest pool); users 1..=20, odd ones like
    // cats, even ones dogs
    let warm: Vec<Item> = (1..=40u64)
        .map(|i| item(i, now - 960 * HOUR + i as i64))
        .collect();
    let (s, b) = c
        .post("/v1/items", &warm.iter().map(item_json).collect::<Vec<_>>())
        .await?;
    assert_eq!(s, 200, "{b}");
    let users: Vec<User> = (1..=20u64)
        .map(|u| User {
            user_id: u,
            signup_ts: now - 200 * HOUR,
            gender: Some(if u % 2 == 0 { "m" } else { "f" }.into()),
            ..Default::default()
        })
        .collect();
    let mut events = Vec::new();
    for u in 1..=20u64 {
        for j in 0..12u64 {
            let i = (u % 2) + 2 * ((u * 3 + j * 7) % 20) + if u % 2 == 0 { 2 } else { 0 };
            let i = i.clamp(1, 40);
            events.push(Event {
                user_id: u,
                item_id: i,
                ts: now - 900 * HOUR + (u * 100 + j) as i64 * 1000,
                action: Action::Like,
                dwell_ms: None,
                request_id: None,
            });
        }
    }
    let ev_json = events_json(&events);
    let (s, b) = c.post("/v1/events", &ev_json).await?;
    assert_eq!(s, 200, "{b}");
    let user_json: Vec<Value> = users
        .iter()
        .map(|u| json!({"user_id": u.user_id, "signup_ts": u.signup_ts, "gender": u.gender}))
        .collect();
    let (s, b) = c.post("/v1/users", &user_json).await?;
    assert_eq!(s, 200, "{b}");

    // train on the same log, as `coldstart train two-tower` would, and name it in etcd
    let cfg = small_two_tower(Default::default());
    let shape = TwoTower::new(cfg.clone())?;
    let data = prepare(&shape, &warm, &events, &users, &HashMap::new(), 0.0, 20)?;
    let (model, _) = train_and_evaluate(cfg.clone(), &data, 10)?;
    let store = tempfile::tempdir()?;
    let r = coldstart_artifact::save_two_tower(store.path(), "tt1", &model)?;
    c.put_model("two-tower", &serde_json::to_string(&r)?)
        .await?;

    // new items published after the model: they have no interactions, so the default ID
    let fresh: Vec<Item> = (101..=120u64)
        .map(|i| item(i, now - HOUR + i as i64))
        .collect();
    let new_ids: Vec<u64> = fresh.iter().map(|i| i.item_id).collect();
    let channel_items = |r: &Value| from_channel(r, "two_tower");
    // the encoders and the aggregator follow etcd: publish once the aggregator has the model
    // (it then answers from the pools), and publish again until every new item is in them
    let publish = fresh.iter().map(item_json).collect::<Vec<_>>();
    eventually(
        "two-tower recall of the new items",
        Duration::from_secs(30),
        || async {
            let (s, _) = c.post("/v1/items", &publish).await.ok()?;
            if s != 200 {
                return None;
            }
            let url = format!("{}/v1/recall?user_id=3&k=20&channels=two_tower", c.api());
            let (_, r) = c.get_json(&url).await.ok()?;
            (channel_items(&r).len() >= 10).then_some(())
        },
    )
    .await?;
    for (user, want) in [(3u64, "cats"), (4, "dogs")] {
        let url = format!(
            "{}/v1/recall?user_id={user}&k=10&channels=two_tower",
            c.api()
        );
        let (_, r) = c.get_json(&url).await?;
        let got = channel_items(&r);
        assert!(
            got.iter().all(|i| new_ids.contains(i)),
            "only new items: {got:?}"
        );
        let right = got.iter().filter(|&&i| topic(i) == want).count();
        assert!(
            right * 10 >= got.len() * 8,
            "user {user} likes {want}: two_tower gave {got:?}"
        );
    }
    // merged, the channel has its quota beside the content channels
    let r = c.recall(3, 30).await?;
    assert!(!channel_items(&r).is_empty(), "{r}");

    // a second model, staged: every sharder builds its pools beside tt1's, and the aggregator,
    // still on tt1, answers as before
    let cfg2 = TwoTowerConfig {
        default_method: DefaultMethod::Mean,
        ..cfg
    };
    let (model2, _) = train_and_evaluate(cfg2, &data, 10)?;
    let r2 = coldstart_artifact::save_two_tower(store.path(), "tt2", &model2)?;
    c.put_model("two-tower-next", &serde_json::to_string(&r2)?)
        .await?;
    let wait = |step| {
        coldstart_jobs::rollout::wait_for(
            c.registry(),
            "tt2",
            step,
            Duration::from_secs(30),
            |_| {},
        )
    };
    wait(Step::StageTwoTower).await?;
    let m = c.membership();
    assert!(
        m.role(Role::Aggregator)
            .iter()
            .all(|a| a.tower_model.as_deref() == Some("tt1")),
        "staging does not swap the aggregators: {m:?}"
    );
    // an item published while tt2 is staged is filed under both versions
    let during = item(130, now - HOUR / 2);
    let (s, b) = c.post("/v1/items", &[item_json(&during)]).await?;
    assert_eq!(s, 200, "{b}");
    eventually(
        "every sharder holds the same items under tt1 and tt2",
        Duration::from_secs(10),
        || async {
            let (a, b) = (pools(&c, "tt1").await.ok()?, pools(&c, "tt2").await.ok()?);
            (a == b && a.iter().all(|&n| n > 0)).then_some(())
        },
    )
    .await?;
    let url = format!("{}/v1/recall?user_id=4&k=100&channels=two_tower", c.api());
    let (_, before) = c.get_json(&url).await?;
    assert!(channel_items(&before).contains(&130), "{before}");
    // activated: the pools it searches were complete on every sharder before it swapped
    c.put_model("two-tower", &serde_json::to_string(&r2)?)
        .await?;
    wait(Step::TwoTower).await?;
    let (_, after) = c.get_json(&url).await?;
    let got = channel_items(&after);
    assert!(
        got.contains(&130),
        "the item published while staged: {after}"
    );
    assert!(
        new_ids.iter().all(|i| got.contains(i)),
        "every new item is in tt2's pools: {got:?}"
    );
    assert!(
        pools(&c, "tt1").await?.iter().all(|&n| n > 0),
        "the replaced version's pools stay for aggregators still on it"
    );
    Ok(())
}
