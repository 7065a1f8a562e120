//! kill -9 one sharder: its member key is gone within TTL + 1 s and recall stays complete from the
//! replica; items published meanwhile land on the survivors; the restarted sharder re-registers,
//! replays its log, catches up from its replica and then serves every list alone.

use coldstart_integration_tests::{eventually, ids, now_ms, Options, TestCluster};
use coldstart_runtime::discovery::Role;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn items(from: u64, n: u64, base: i64) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({"item_id": i, "publish_ts": base + i as i64 * 10, "category": format!("c{}", i % 4), "keywords": [format!("k{}", i % 7)], "title": format!("t{i}")}))
        .collect()
}

fn expected(all: &[Value], cat: u64) -> Vec<u64> {
    let mut v: Vec<&Value> = all
        .iter()
        .filter(|i| i["category"] == format!("c{cat}"))
        .collect();
    v.sort_by_key(|i| std::cmp::Reverse(i["publish_ts"].as_i64()));
    v.iter().map(|i| i["item_id"].as_u64().unwrap()).collect()
}

async fn check_all_categories(c: &TestCluster, all: &[Value]) -> anyhow::Result<()> {
    for cat in 0..4u64 {
        let r = c.recall(100 + cat, 200).await?;
        let got: Vec<u64> = ids(&r)
            .into_iter()
            .filter(|id| {
                all.iter()
                    .any(|i| i["item_id"] == *id && i["category"] == format!("c{cat}"))
            })
            .collect();
        assert_eq!(
            got,
            expected(all, cat),
            "category c{cat} complete and newest first"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sharder_is_replaced_by_its_replica_and_catches_up() -> anyhow::Result<()> {
    // complete and newest first: the channels' own order, without traffic control (every item
    // here is an hour old and behind its schedule)
    let opts = Options::traffic_control(false);
    let ttl = opts.lease_ttl_s;
    let mut c = TestCluster::start(opts).await?;
    let base = now_ms() - 3_600_000;
    let mut all = items(1, 200, base);
    assert_eq!(c.post("/v1/items", &all).await?.0, 200);
    let users: Vec<Value> = (0..4)
        .map(|u| json!({"user_id": 100 + u, "signup_ts": base, "interests": [format!("c{u}")]}))
        .collect();
    assert_eq!(c.post("/v1/users", &users).await?.0, 200);
    check_all_categories(&c, &all).await?;

    c.kill9("sharder-0")?;
    let killed = Instant::now();
    eventually(
        "sharder-0 key gone",
        Duration::from_secs(ttl + 5),
        || async { c.member("sharder-0").is_none().then_some(()) },
    )
    .await?;
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= Duration::from_secs(ttl + 1),
        "member key gone after {gone_after:?}, TTL is {ttl} s"
    );

    // recall is complete from the replica
    check_all_categories(&c, &all).await?;

    // publishing continues while it is down
    let late = items(1000, 40, base + 100_000);
    let (s, body) = c.post("/v1/items", &late).await?;
    assert_eq!(s, 200, "{body}");
    all.extend(late);
    check_all_categories(&c, &all).await?;

    // restart: re-registers and catches up
    c.spawn(Role::Sharder, "sharder-0")?;
    c.wait_ready("sharder-0").await?;
    let log = std::fs::read_to_string(c.log_path("sharder-0"))?;
    assert!(log.contains("caught up from peer"), "{log}");

    // the restarted sharder alone serves every list intact, including what it missed
    c.kill9("sharder-1")?;
    check_all_categories(&c, &all).await?;

    // both down at once, then both back: every acknowledged item is replayed from the logs
    c.kill9("sharder-0")?;
    c.spawn(Role::Sharder, "sharder-0")?;
    c.spawn(Role::Sharder, "sharder-1")?;
    c.wait_ready("sharder-0").await?;
    c.wait_ready("sharder-1").await?;
    check_all_categories(&c, &all).await?;
    Ok(())
}

/// A dependency of recall down does not fail recall: with the profile killed, answers come from
/// what needs no profile (the newest items), marked `degraded: ["profile", …]` and counted in
/// `/metrics`; with the traffic controller killed, answers go unboosted, marked `traffic`; once
/// both are back, answers are whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_dependencies_degrade_recall_instead_of_failing() -> anyhow::Result<()> {
    let mut c = TestCluster::start(Options::traffic_control(true)).await?;
    let base = now_ms() - 3_600_000;
    let all = items(1, 60, base);
    assert_eq!(c.post("/v1/items", &all).await?.0, 200);
    let users = [json!({"user_id": 100, "signup_ts": base, "interests": ["c1"]})];
    assert_eq!(c.post("/v1/users", &users).await?.0, 200);
    let whole = c.recall(100, 10).await?;
    assert_eq!(whole["degraded"], json!([]), "{whole}");

    let degraded_with = |r: &Value, part: &str| {
        r["degraded"]
            .as_array()
            .is_some_and(|d| d.iter().any(|p| p == part))
    };
    c.kill9("profile-0")?;
    // while its key still stands (connections refused) and after it is gone (no member)
    for _ in 0..2 {
        for _ in 0..5 {
            let r = c.recall(100, 10).await?;
            assert!(degraded_with(&r, "profile"), "{r}");
            assert_eq!(ids(&r).len(), 10, "the newest items still answer: {r}");
        }
        tokio::time::sleep(Duration::from_secs(Options::default().lease_ttl_s + 1)).await;
    }
    let agg = c.member("aggregator-0").unwrap().http_addr;
    let (_, metrics) = c.get_text(&format!("http://{agg}/metrics")).await?;
    assert!(
        metrics.contains("what=\"recall_degraded_profile\""),
        "{metrics}"
    );

    c.kill9("traffic-0")?;
    let r = c.recall(100, 10).await?;
    assert!(degraded_with(&r, "traffic"), "{r}");

    c.spawn(Role::Profile, "profile-0")?;
    c.spawn(Role::Traffic, "traffic-0")?;
    c.wait_ready("profile-0").await?;
    c.wait_ready("traffic-0").await?;
    eventually("whole answers again", Duration::from_secs(10), || async {
        let r = c.recall(100, 10).await.ok()?;
        (r["degraded"] == json!([])).then_some(())
    })
    .await?;
    Ok(())
}
