//! Traffic control in recall on a real cluster: the aggregator asks the traffic controller (over
//! Flight, one call per partition) for the candidates' boosts at the request time; new items
//! behind their paced schedule are lifted above older items and the most behind one left out
//! takes the forced slot, flagged in the answer; items past their window get no help.

use coldstart_integration_tests::{now_ms, Options, TestCluster};
use serde_json::{json, Value};
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_schedule_new_items_are_boosted_and_one_is_forced() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::traffic_control(true)).await?;
    let now = now_ms();
    let day = 86_400_000i64;
    // 20 items of a month ago (their window has passed) and 10 of half a day ago, no impressions
    let old: Vec<u64> = (1..=20).collect();
    let new: Vec<u64> = (101..=110).collect();
    let item = |id: u64, ts: i64| {
        json!({"item_id": id, "publish_ts": ts, "category": "films",
               "keywords": ["films"], "title": format!("film {id}")})
    };
    let mut items: Vec<Value> = old
        .iter()
        .map(|&i| item(i, now - 30 * day + i as i64 * 1000))
        .collect();
    items.extend(
        new.iter()
            .map(|&i| item(i, now - day / 2 - i as i64 * 1000)),
    );
    let (status, body) = c.post("/v1/items", &items).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .post(
            "/v1/users",
            &[json!({"user_id": 7, "signup_ts": now - day, "interests": ["films"]})],
        )
        .await?;
    assert_eq!(status, 200, "{body}");

    let k = 5;
    let r = c.recall(7, k).await?;
    let answer = r["items"].as_array().unwrap().clone();
    assert_eq!(answer.len(), k, "{r}");
    let is_new: HashSet<u64> = new.iter().copied().collect();
    let id = |it: &Value| it["item_id"].as_u64().unwrap();
    let boost = |it: &Value| it["boost"].as_f64().unwrap();
    let forced: Vec<&Value> = answer
        .iter()
        .filter(|it| it["forced"] == json!(true))
        .collect();
    // half the window gone and nothing delivered: 0.625 of the target due, the curve's top (8)
    for it in &answer[..k - 1] {
        assert!(is_new.contains(&id(it)), "boosted new items lead: {r}");
        assert!((boost(it) - 8.0).abs() < 1e-6, "{it}");
        assert_eq!(it["forced"], json!(false), "{it}");
    }
    // exactly one forced slot (aggregator.forced_slots), the bottom one, a new item not already
    // in the answer
    assert_eq!(forced.len(), 1, "{r}");
    let f = forced[0];
    assert_eq!(id(f), id(&answer[k - 1]));
    assert!(is_new.contains(&id(f)), "{f}");
    let distinct: HashSet<u64> = answer.iter().map(id).collect();
    assert_eq!(distinct.len(), k, "no duplicates: {r}");

    // a larger answer reaches the old items: their window has passed, no boost
    let r = c.recall(7, 30).await?;
    let olds: Vec<&Value> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| !is_new.contains(&id(it)))
        .collect();
    assert_eq!(olds.len(), 20, "{r}");
    assert!(olds
        .iter()
        .all(|it| boost(it) == 1.0 && it["forced"] == json!(false)));

    // the ledger's targets come from the policy: no quality given, the base 100
    let ledger_url = format!(
        "http://{}/v1/ledger?item_ids=101",
        c.member("traffic-0").unwrap().http_addr
    );
    let (_, ledger) = c.get_json(&ledger_url).await?;
    assert_eq!(ledger[0]["target_impressions"], json!(100), "{ledger}");
    Ok(())
}
