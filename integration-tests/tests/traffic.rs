//! Traffic control in recall on a real cluster: the aggregator asks the traffic controller (over
//! Flight, one call per partition) for the candidates' boosts at the request time; new items
//! behind their paced schedule are lifted above older items and the most behind one left out
//! takes the forced slot, flagged in the answer; items past their window get no help. And the
//! attribution loop: answers named by request id, impressions counted once per request id however
//! often a batch is retried, the served log on disk read as one data set (by `coldstart report
//! channels`, pyarrow and DuckDB).

use coldstart_contracts::profile::Event;
use coldstart_contracts::types::Action;
use coldstart_integration_tests::{events_json, eventually, ids, now_ms, Options, TestCluster};
use coldstart_runtime::discovery::ValueKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

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

    // the policy changes through etcd, without a restart: targets follow at once, and the
    // boosts of the next answer with them (the target met: no help)
    let target = |t: u64| {
        let (c, url) = (&c, ledger_url.clone());
        async move {
            eventually("the ledger's target", Duration::from_secs(10), || async {
                let (_, l) = c.get_json(&url).await.ok()?;
                (l[0]["target_impressions"] == json!(t)).then_some(())
            })
            .await
        }
    };
    c.registry()
        .put_value(
            ValueKind::Setting,
            "traffic",
            r#"{"target_impressions": 1}"#,
        )
        .await?;
    target(1).await?;
    // an impossible policy is refused, and the one in force stays
    c.registry()
        .put_value(
            ValueKind::Setting,
            "traffic",
            r#"{"target_impressions": 150, "boost_curve": [[0, 1], [0.5, 0.5]]}"#,
        )
        .await?;
    eventually(
        "the refusal in the log",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(c.log_path("traffic-0"))
                .ok()
                .filter(|log| log.contains("traffic.boost_curve"))
        },
    )
    .await?;
    let (_, ledger) = c.get_json(&ledger_url).await?;
    assert_eq!(ledger[0]["target_impressions"], json!(1), "{ledger}");
    c.registry()
        .put_value(
            ValueKind::Setting,
            "traffic",
            r#"{"target_impressions": 150}"#,
        )
        .await?;
    target(150).await?;
    Ok(())
}

/// Answers carry a request id (the caller's or one made); events echo it; a retried batch of
/// impressions counts once in the ledger; the served log lands as a hive-partitioned Parquet data
/// set that `coldstart report channels`, pyarrow and DuckDB read as one; the report credits the
/// channels that served what was liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_answers_are_logged_and_attributed() -> anyhow::Result<()> {
    let mut opts = Options::traffic_control(true);
    opts.env.push((
        "COLDSTART__AGGREGATOR__SERVED_FLUSH_MS".into(),
        "100".into(),
    ));
    let c = TestCluster::start(opts).await?;
    let now = now_ms();
    let day = 86_400_000i64;
    let items: Vec<Value> = (201..=205u64)
        .map(|id| {
            json!({"item_id": id, "publish_ts": now - day / 2 - id as i64, "category": "films",
                   "keywords": ["films"], "title": format!("film {id}")})
        })
        .collect();
    let (status, body) = c.post("/v1/items", &items).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c
        .post(
            "/v1/users",
            &[json!({"user_id": 8, "signup_ts": now - day, "interests": ["films"]})],
        )
        .await?;
    assert_eq!(status, 200, "{body}");

    // the caller names the answer; a malformed id is refused naming the field
    let url = |extra: &str| format!("{}/v1/recall?user_id=8&k=5&at={now}{extra}", c.api());
    let (status, first) = c.get_json(&url("&request_id=req-1")).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["request_id"], json!("req-1"));
    let (status, second) = c.get_json(&url("")).await?;
    assert_eq!(status, 200, "{second}");
    let made = second["request_id"].as_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "128 random bits in hex: {made}");
    let (status, bad) = c.get_json(&url("&request_id=a%20b")).await?;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.to_string().contains("request_id"), "{bad}");

    // every item of the first answer shown, the top one liked; the client retries the batch
    let shown: Vec<u64> = ids(&first);
    assert_eq!(shown.len(), 5, "{first}");
    let mut events: Vec<Event> = shown
        .iter()
        .map(|&i| Event {
            user_id: 8,
            item_id: i,
            ts: now + 1000,
            action: Action::Impression,
            dwell_ms: None,
            request_id: Some("req-1".into()),
        })
        .collect();
    events.push(Event {
        action: Action::Like,
        ts: now + 2000,
        ..events[0].clone()
    });
    for _ in 0..2 {
        let (status, body) = c.post("/v1/events", &events_json(&events)).await?;
        assert_eq!(status, 200, "{body}");
    }
    let list = shown
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let ledger_url = format!(
        "http://{}/v1/ledger?item_ids={list}",
        c.member("traffic-0").unwrap().http_addr
    );
    // the profile took the retried batch once too: one like, not two
    let profile_url = format!(
        "http://{}/v1/profile/8",
        c.member("profile-0").unwrap().http_addr
    );
    let (_, profile) = c.get_json(&profile_url).await?;
    assert_eq!(profile["interactions"], json!(1), "{profile}");

    // an impression of an item never published is refused, naming the row and the field, and
    // the batch it came in counts nothing
    let mut bad = events[..2].to_vec();
    bad[0].request_id = Some("req-2".into()); // would count, were the batch taken in part
    bad[1].item_id = 999_999;
    let (status, body) = c.post("/v1/events", &events_json(&bad)).await?;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("row 1") && text.contains("item_id") && text.contains("999999"),
        "{text}"
    );
    let (_, ledger) = c.get_json(&ledger_url).await?;
    let rows = ledger.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{ledger}");
    assert!(
        rows.iter().all(|r| r["impressions"] == json!(1)),
        "one impression per item, retry or not: {ledger}"
    );

    // the served log: two answers of five rows, in the request time's partition
    let served = c.data_dir().join("served");
    let files = eventually("served log files", Duration::from_secs(20), || async {
        let f = coldstart_jobs::report::parquet_files(&served).unwrap_or_default();
        let rows: usize = f
            .iter()
            .flat_map(|p| coldstart_runtime::parquet_io::read_all(p).unwrap_or_default())
            .map(|b| b.num_rows())
            .sum();
        (rows == 10).then_some(f)
    })
    .await?;
    let rel = files[0]
        .strip_prefix(&served)?
        .to_string_lossy()
        .to_string();
    assert!(rel.starts_with("date=") && rel.contains("/hour="), "{rel}");

    // pyarrow and DuckDB read the root as one data set, with the partition columns
    let script = format!(
        r#"
import pyarrow.dataset as ds, duckdb
t = ds.dataset({dir:?}, format="parquet", partitioning="hive").to_table()
n = duckdb.execute("select count(*), count(distinct request_id) from read_parquet('{dir}/**/*.parquet', hive_partitioning=true)").fetchone()
print(t.num_rows, "date" in t.schema.names and "hour" in t.schema.names, n[0], n[1])
"#,
        dir = served.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()?;
    assert!(
        out.status.success(),
        "pyarrow and duckdb are needed (python3 -m pip install pyarrow duckdb): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10 True 10 2");

    // the report: the profile's own event log (its users file beside the events is skipped; the
    // retried batch is in it once) against the served log
    let events_log = c.data_dir().join("profile-0").join("log");
    let out_dir = c.dir.path().join("report");
    let text = c.run_cli(&[
        "report",
        "channels",
        "--served",
        served.to_str().unwrap(),
        "--events",
        events_log.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ])?;
    assert!(text.contains("| channel | served |"), "{text}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("channels.json"))?)?;
    assert_eq!(report["all"]["served"], json!(10), "{report}");
    assert_eq!(report["all"]["impressions"], json!(5), "{report}");
    assert_eq!(report["all"]["likes"], json!(1), "{report}");
    assert_eq!(report["by_request_id"], json!(6), "{report}");
    assert!(text.contains("skipped") && text.contains("users"), "{text}");
    // the liked item's channels each get full credit; shared credit sums to the one like
    let liked: Vec<String> = first["items"][0]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut shared = 0.0;
    for ch in report["channels"].as_array().unwrap() {
        let name = ch["name"].as_str().unwrap().to_string();
        let credit = ch["credit"].as_f64().unwrap();
        assert_eq!(
            credit,
            if liked.contains(&name) { 1.0 } else { 0.0 },
            "{ch}"
        );
        shared += ch["shared_credit"].as_f64().unwrap();
    }
    assert!((shared - 1.0).abs() < 1e-9, "{report}");
    assert!(out_dir.join("channels.svg").exists());
    Ok(())
}
