//! Publish and recall end to end on a real cluster: category recall newest first, the fallback
//! for users with nothing to go on, and the event path (profile, Parquet log, traffic counts,
//! seen filter, durability across restarts).

use coldstart_contracts::aggregator::proto::RecallRequest;
use coldstart_contracts::aggregator::AggregatorClient;
use coldstart_contracts::profile::proto::{profile_ticket, ProfileRequest, ProfileTicket};
use coldstart_contracts::profile::ProfileProtocol;
use coldstart_integration_tests::{ids, now_ms, Options, TestCluster};
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::FlightPool;
use coldstart_runtime::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_items_in_ten_categories_recall_newest_first() -> anyhow::Result<()> {
    // the channels' own order: with traffic control every item here (published within two hours,
    // no impressions) is behind its schedule and the oldest the most (tests/traffic.rs)
    let c = TestCluster::start(Options::traffic_control(false)).await?;
    let base = now_ms() - 2 * 3_600_000;
    // items of a category interleave in publish order; ids do not follow publish time
    let items: Vec<Value> = (0..1000u64)
        .map(|i| {
            json!({
                "item_id": 10_000 + (i * 7919) % 1000,
                "publish_ts": base + i as i64 * 1000,
                "category": format!("cat{}", i % 10),
                "keywords": [format!("tag{}", i % 10)],
                "title": format!("item {i}"),
            })
        })
        .collect();
    for chunk in items.chunks(250) {
        let (status, body) = c.post("/v1/items", chunk).await?;
        assert_eq!(status, 200, "{body}");
    }
    let users: Vec<Value> = (0..10)
        .map(|u| json!({"user_id": 1 + u, "signup_ts": base, "interests": [format!("cat{u}")]}))
        .collect();
    assert_eq!(c.post("/v1/users", &users).await?.0, 200);

    for u in 0..10u64 {
        let r = c.recall(1 + u, 100).await?;
        let mut expected: Vec<&Value> = items
            .iter()
            .filter(|i| i["category"] == format!("cat{u}"))
            .collect();
        expected.sort_by_key(|i| std::cmp::Reverse(i["publish_ts"].as_i64()));
        let expected: Vec<u64> = expected
            .iter()
            .map(|i| i["item_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids(&r), expected, "user {} gets cat{u} newest first", 1 + u);
        for it in r["items"].as_array().unwrap() {
            assert!(
                it["channels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c == "onboarding"),
                "users with no events are served by their onboarding interests: {it}"
            );
        }
    }

    // the same recall as Arrow over Flight
    let agg = c.membership().role(Role::Aggregator)[0].flight_addr.clone();
    let pool = Arc::new(FlightPool::new(64 << 20, std::time::Duration::from_secs(5)));
    let client = AggregatorClient::at(pool.clone(), agg.clone());
    let flight_ids: Vec<u64> = client
        .recall(RecallRequest {
            user_id: 1,
            k: 100,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|c| c.item_id)
        .collect();
    assert_eq!(flight_ids, ids(&c.recall(1, 100).await?));

    // k = 0 is refused over Flight as over HTTP: one rule
    let err = client
        .recall(RecallRequest {
            user_id: 1,
            k: 0,
            ..Default::default()
        })
        .await
        .expect_err("k = 0 is refused");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert!(err.text().contains("field `k`"), "{err}");

    // a ticket of another service's contract is refused by name, not misread
    let foreign = ProfileTicket {
        kind: Some(profile_ticket::Kind::Profile(ProfileRequest {
            user_id: 1,
            at: 0,
        })),
    };
    let err = pool
        .get::<ProfileProtocol>(&agg, &foreign)
        .await
        .expect_err("the aggregator serves no profile tickets");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert!(
        err.message
            .contains("the aggregator service does not serve this ticket"),
        "{err}"
    );

    // a user nobody knows gets the newest items overall, from the fallback channel
    let r = c.recall(999_999, 20).await?;
    let newest: Vec<u64> = items
        .iter()
        .rev()
        .take(20)
        .map(|i| i["item_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids(&r), newest);
    assert!(r["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["channels"] == json!(["fallback"])));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_shape_profiles_reach_traffic_and_survive_restarts() -> anyhow::Result<()> {
    let mut c = TestCluster::start(Options::default()).await?;
    let now = now_ms();
    let items: Vec<Value> = (1..=30u64)
        .map(|i| json!({"item_id": i, "publish_ts": now - 60_000 + i as i64, "category": if i <= 15 { "cats" } else { "dogs" }, "keywords": ["pets"], "title": format!("pet {i}")}))
        .collect();
    let (status, body) = c.post("/v1/items", &items).await?;
    assert_eq!(status, 200, "{body}");
    let user = 42u64;
    let events = vec![
        json!({"user_id": user, "item_id": 3, "ts": now - 5000, "action": "like"}),
        json!({"user_id": user, "item_id": 4, "ts": now - 4000, "action": "collect"}),
        json!({"user_id": user, "item_id": 5, "ts": now - 3000, "action": "share"}),
        json!({"user_id": user, "item_id": 20, "ts": now - 2000, "action": "impression"}),
        json!({"user_id": user, "item_id": 20, "ts": now - 1000, "action": "click", "dwell_ms": 1200}),
    ];
    let (status, body) = c.post("/v1/events", &events).await?;
    assert_eq!((status, &body["accepted"]), (200, &json!(5)), "{body}");

    // profile: last items per action, decayed interests, counters, new-user flag
    let profile_url = |c: &TestCluster| {
        format!(
            "http://{}/v1/profile/{user}",
            c.member("profile-0").unwrap().http_addr
        )
    };
    let (s, p) = c.get_json(&profile_url(&c)).await?;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["liked"], json!([3]));
    assert_eq!(p["collected"], json!([4]));
    assert_eq!(p["shared"], json!([5]));
    assert_eq!(
        p["interactions"],
        json!(4),
        "impressions are not interactions"
    );
    assert_eq!(p["is_new"], json!(true));
    assert_eq!(p["categories"][0][0], json!("cats"), "{p}");
    assert!(p["categories"][0][1].as_f64().unwrap() > p["categories"][1][1].as_f64().unwrap());

    // traffic counted the impression and the click of the new item 20
    let ledger_url = format!(
        "http://{}/v1/ledger?item_ids=20,3",
        c.member("traffic-0").unwrap().http_addr
    );
    let (_, ledger) = c.get_json(&ledger_url).await?;
    let row20 = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item_id"] == 20)
        .unwrap()
        .clone();
    assert_eq!(
        (row20["impressions"].as_u64(), row20["clicks"].as_u64()),
        (Some(1), Some(1)),
        "{ledger}"
    );
    assert_eq!(row20["target_impressions"], json!(100));

    // recall prefers cats now and never returns what the user interacted with
    let r = c.recall(user, 30).await?;
    let got = ids(&r);
    for seen in [3, 4, 5, 20] {
        assert!(
            !got.contains(&seen),
            "item {seen} was interacted with: {got:?}"
        );
    }
    assert!((1..=15).contains(&got[0]), "a cat comes first: {got:?}");

    // the Parquet event log holds the enriched events
    let log_dir = c.data_dir().join("profile-0").join("log");
    let mut logged = Vec::new();
    for f in std::fs::read_dir(&log_dir)? {
        let f = f?.path();
        if f.to_string_lossy().ends_with("-events.parquet") {
            for b in coldstart_runtime::parquet_io::read_all(&f)? {
                logged.extend(
                    coldstart_contracts::profile::LoggedEvent::from_batch(&b)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                );
            }
        }
    }
    assert_eq!(logged.len(), 5);
    assert_eq!(logged[0].category, "cats");
    assert_eq!(logged[4].event.dwell_ms, Some(1200));

    // profiles and counts survive kill -9 and restart
    let before_profile = p;
    c.kill9("profile-0")?;
    c.kill9("traffic-0")?;
    c.spawn(Role::Profile, "profile-0")?;
    c.spawn(Role::Traffic, "traffic-0")?;
    c.wait_ready("profile-0").await?;
    c.wait_ready("traffic-0").await?;
    let (_, after) = c.get_json(&profile_url(&c)).await?;
    assert_eq!(after["liked"], before_profile["liked"]);
    assert_eq!(after["interactions"], before_profile["interactions"]);
    assert_eq!(
        after["categories"][0][0],
        before_profile["categories"][0][0]
    );
    let ledger_url = format!(
        "http://{}/v1/ledger?item_ids=20",
        c.member("traffic-0").unwrap().http_addr
    );
    let (_, ledger) = c.get_json(&ledger_url).await?;
    assert_eq!(ledger[0]["impressions"], json!(1));
    assert_eq!(ledger[0]["clicks"], json!(1));
    Ok(())
}
