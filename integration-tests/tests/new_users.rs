//! User cold start end to end on a real cluster (etcd, one process per role): a two-tower model
//! with the old-for-new method is named in etcd; a user who just signed up is carried by the
//! popular and group-popular channels (`user_state: new`); their first event is acknowledged and
//! the very next recall serves them from their learned embedding (`warming`, the
//! `new_user_tower` channel, items of the topic they engaged). Users with an unknown age bucket
//! or a sign-up in the future are refused whole, naming the row and field, and what was stored
//! before does not change.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_contracts::types::Action;
use coldstart_integration_tests::{
    events_json, eventually, from_channel, now_ms, small_two_tower, Options, TestCluster,
};
use coldstart_jobs::two_tower::{prepare, train_and_evaluate};
use coldstart_models::two_tower::{TwoTower, UserColdConfig, UserMethod};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;

fn topic(i: u64) -> &'static str {
    if i.is_multiple_of(2) {
        "dogs"
    } else {
        "cats"
    }
}

fn item_json(it: &Item) -> Value {
    json!({"item_id": it.item_id, "publish_ts": it.publish_ts, "category": it.category,
           "keywords": it.keywords, "title": it.title})
}

fn user_json(u: &User) -> Value {
    json!({"user_id": u.user_id, "signup_ts": u.signup_ts, "age_bucket": u.age_bucket,
           "gender": u.gender, "region": u.region})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_users_first_event_hands_them_over_to_their_learned_embedding() -> anyhow::Result<()>
{
    let c = TestCluster::start(Options::default()).await?;
    let now = now_ms();
    // 40 items of two topics, two days old (in the pools); 20 old users, odd ones like cats
    let items: Vec<Item> = (1..=40u64)
        .map(|i| Item {
            item_id: i,
            publish_ts: now - 48 * HOUR + i as i64,
            author_id: None,
            category: topic(i).into(),
            keywords: vec![format!("{}-breed", topic(i))],
            title: format!("{} story {i}", topic(i)),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        })
        .collect();
    let (s, b) = c
        .post(
            "/v1/items",
            &items.iter().map(item_json).collect::<Vec<_>>(),
        )
        .await?;
    assert_eq!(s, 200, "{b}");
    let user = |u: u64, signup_ts: i64| User {
        user_id: u,
        signup_ts,
        age_bucket: Some(
            if u.is_multiple_of(2) {
                "25-34"
            } else {
                "18-24"
            }
            .into(),
        ),
        gender: Some(if u.is_multiple_of(2) { "m" } else { "f" }.into()),
        region: Some("1".into()),
        ..Default::default()
    };
    let users: Vec<User> = (1..=20u64).map(|u| user(u, now - 40 * HOUR)).collect();
    let (s, b) = c
        .post(
            "/v1/users",
            &users.iter().map(user_json).collect::<Vec<_>>(),
        )
        .await?;
    assert_eq!(s, 200, "{b}");
    let mut events = Vec::new();
    for u in 1..=20u64 {
        for j in 0..14u64 {
            let i = 2 * ((u * 3 + j * 7) % 20) + if u % 2 == 0 { 2 } else { 1 };
            events.push(Event {
                user_id: u,
                item_id: i,
                ts: now - 30 * HOUR + (u * 100 + j) as i64 * 1000,
                action: Action::Like,
                dwell_ms: None,
                request_id: None,
            });
        }
    }
    let ev_json = events_json(&events);
    let (s, b) = c.post("/v1/events", &ev_json).await?;
    assert_eq!(s, 200, "{b}");

    // the two-tower model with old-for-new, as `coldstart train two-tower` makes it
    let cfg = small_two_tower(UserColdConfig {
        method: UserMethod::Knn,
        new_user_weight: 2.0,
        future_targets: 3,
        knn_k: 5,
        ..Default::default()
    });
    let shape = TwoTower::new(cfg.clone())?;
    let data = prepare(&shape, &items, &events, &users, &HashMap::new(), 0.0, 20)?;
    let (model, _) = train_and_evaluate(cfg, &data, 10)?;
    assert!(model.old_users.as_ref().is_some_and(|t| t.len() == 20));
    let store = tempfile::tempdir()?;
    let r = coldstart_artifact::save_two_tower(store.path(), "tt-users", &model)?;
    c.put_model("two-tower", &serde_json::to_string(&r)?)
        .await?;
    let agg = c
        .membership()
        .role(coldstart_runtime::discovery::Role::Aggregator)[0]
        .node_id
        .clone();
    eventually(
        "the aggregator runs the model",
        Duration::from_secs(30),
        || async { (c.member(&agg)?.tower_model.as_deref() == Some("tt-users")).then_some(()) },
    )
    .await?;

    // user 101 signs up (a cat person's attributes) and has no event yet
    let newcomer = user(101, now - HOUR);
    let (s, b) = c.post("/v1/users", &[user_json(&newcomer)]).await?;
    assert_eq!(s, 200, "{b}");
    // one request time for every recall below (traffic control's promotion draws, when it is on,
    // depend on it)
    let url = format!("{}/v1/recall?user_id=101&k=10&at={now}", c.api());
    let (_, before) = c.get_json(&url).await?;
    assert_eq!(before["user_state"], "new", "{before}");
    assert!(before["user_embedding"].is_null(), "{before}");
    assert!(
        from_channel(&before, "new_user_tower").is_empty(),
        "{before}"
    );
    assert!(
        !from_channel(&before, "popular").is_empty()
            || !from_channel(&before, "group_popular").is_empty(),
        "popular channels carry a user with no events: {before}"
    );

    // their first event: acknowledged, and the next recall (no waiting) hands them over
    let started = Instant::now();
    let first = json!({"user_id": 101, "item_id": 3, "ts": now - HOUR / 2, "action": "like"});
    let (s, b) = c.post("/v1/events", &[first]).await?;
    assert_eq!(s, 200, "{b}");
    let (_, after) = c.get_json(&url).await?;
    let took = started.elapsed();
    println!("first event to a changed recall: {took:?}");
    assert_eq!(after["user_state"], "warming", "{after}");
    assert_eq!(after["user_embedding"], "knn", "{after}");
    let learned = from_channel(&after, "new_user_tower");
    assert!(learned.len() >= 5, "{after}");
    assert!(
        !learned.contains(&3),
        "the item they engaged is not recalled again"
    );
    let cats = learned.iter().filter(|&&i| topic(i) == "cats").count();
    assert!(
        cats * 10 >= learned.len() * 7,
        "a cat person gets cats: {learned:?}"
    );
    assert_ne!(before["items"], after["items"], "the answer changed");

    // bad users are refused whole, naming the row and field; user 101 stays as stored
    let odd = User {
        age_bucket: Some("99-100".into()),
        ..user(102, now - HOUR)
    };
    let moved = User {
        gender: Some("m".into()),
        ..newcomer.clone()
    };
    for (bad, field) in [
        (user_json(&odd), "age_bucket"),
        (
            json!({"user_id": 103, "signup_ts": now + 400 * 24 * HOUR}),
            "signup_ts",
        ),
    ] {
        let (s, b) = c.post("/v1/users", &[user_json(&moved), bad]).await?;
        assert_eq!(s, 400, "{b}");
        let text = b.to_string();
        assert!(
            text.contains(field) && text.contains("row 1"),
            "{field}: {text}"
        );
    }
    let (_, again) = c.get_json(&url).await?;
    assert_eq!(
        again["items"], after["items"],
        "nothing of the refused batches was stored (user 101 kept their attributes)"
    );
    Ok(())
}
