//! Bad input through the public API gets a 4xx that names the row and field, and nothing already
//! stored changes: recall, the profile and the traffic ledger are the same before and after, and
//! the valid rows of a rejected batch are not stored either.

use arrow::array::{StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use coldstart_contracts::types::Action;
use coldstart_integration_tests::{ids, now_ms, Options, TestCluster};
use coldstart_runtime::discovery::Role;
use serde_json::{json, Value};
use std::sync::Arc;

/// (route, body, expected status, expected row and field)
type Case<'a> = (&'a str, Vec<u8>, u16, Option<(u64, &'a str)>);

/// One valid event line.
const ONE_EVENT: &str = r#"{"user_id": 7, "item_id": 4, "ts": 5, "action": "like"}"#;

fn lines(rows: &[&str]) -> Vec<u8> {
    rows.join("\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_refused_by_name_and_nothing_changes() -> anyhow::Result<()> {
    let opts = Options {
        env: vec![
            ("COLDSTART__LIMITS__MAX_BATCH_ROWS".into(), "100".into()),
            ("COLDSTART__LIMITS__MAX_BODY_BYTES".into(), "65536".into()),
            ("COLDSTART__LIMITS__IMAGE_DIM".into(), "4".into()),
        ],
        ..Default::default()
    };
    let c = TestCluster::start(opts).await?;
    let now = now_ms();
    let items: Vec<Value> = (1..=20u64)
        .map(|i| json!({"item_id": i, "publish_ts": now - 100_000 + i as i64, "category": "birds", "keywords": ["wings"], "title": format!("bird {i}")}))
        .collect();
    assert_eq!(c.post("/v1/items", &items).await?.0, 200);
    assert_eq!(
        c.post(
            "/v1/users",
            &[json!({"user_id": 7, "signup_ts": now - 1000, "interests": ["birds"]})]
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        c.post(
            "/v1/events",
            &[json!({"user_id": 7, "item_id": 3, "ts": now - 10, "action": "impression"})]
        )
        .await?
        .0,
        200
    );

    let profile_url = format!(
        "http://{}/v1/profile/7",
        c.member("profile-0").unwrap().http_addr
    );
    let ledger_url = format!(
        "http://{}/v1/ledger",
        c.member("traffic-0").unwrap().http_addr
    );
    let snapshot = || async {
        let recall = c.recall(7, 50).await.unwrap();
        let (_, profile) = c.get_json(&profile_url).await.unwrap();
        let (_, ledger) = c.get_json(&ledger_url).await.unwrap();
        // scores move with the clock (recency); what was recalled, and by whom, must not
        let recalled: Vec<Value> = recall["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!([i["item_id"], i["channels"]]))
            .collect();
        (recalled, profile, ledger)
    };
    let before = snapshot().await;

    let good_item = r#"{"item_id": 500, "publish_ts": 1, "category": "birds", "title": "valid row in a bad batch"}"#;
    let far = now + 30 * 86_400_000;
    let cases: Vec<Case> = vec![
        (
            "/v1/items",
            lines(&[good_item, "{not json"]),
            400,
            Some((1, "(json)")),
        ),
        (
            "/v1/items",
            lines(&[
                good_item,
                r#"{"item_id": 501, "publish_ts": 1, "title": "no category"}"#,
            ]),
            400,
            Some((1, "category")),
        ),
        (
            "/v1/items",
            lines(&[r#"{"item_id": "x", "publish_ts": 1, "category": "birds", "title": "t"}"#]),
            400,
            Some((0, "item_id")),
        ),
        (
            "/v1/items",
            lines(&[
                good_item,
                &format!(
                    r#"{{"item_id": 502, "publish_ts": {far}, "category": "birds", "title": "t"}}"#
                ),
            ]),
            400,
            Some((1, "publish_ts")),
        ),
        (
            "/v1/items",
            lines(&[
                good_item,
                r#"{"item_id": 503, "publish_ts": 1, "category": "birds", "title": "t", "image_vec": [1, 2]}"#,
            ]),
            400,
            Some((1, "image_vec")),
        ),
        (
            "/v1/items",
            lines(&[
                good_item,
                r#"{"item_id": 504, "publish_ts": 1, "category": "birds", "title": ""}"#,
            ]),
            400,
            Some((1, "title")),
        ),
        (
            "/v1/events",
            lines(&[
                r#"{"user_id": 7, "item_id": 4, "ts": 5, "action": "like"}"#,
                r#"{"user_id": 7, "item_id": 4, "ts": 5, "action": "pin"}"#,
            ]),
            400,
            Some((1, "action")),
        ),
        (
            "/v1/events",
            lines(&[r#"{"user_id": -1, "item_id": 4, "ts": 5, "action": "like"}"#]),
            400,
            Some((0, "user_id")),
        ),
        (
            "/v1/events",
            lines(&[r#"{"user_id": 7, "item_id": 4, "action": "like"}"#]),
            400,
            Some((0, "ts")),
        ),
        (
            "/v1/events",
            lines(&[&format!(
                r#"{{"user_id": 7, "item_id": 4, "ts": {far}, "action": "like"}}"#
            )]),
            400,
            Some((0, "ts")),
        ),
        (
            "/v1/events",
            lines(&[
                r#"{"user_id": 7, "item_id": 4, "ts": 5, "action": "like"}"#,
                r#"{"user_id": 7, "item_id": 99999, "ts": 5, "action": "like"}"#,
            ]),
            400,
            Some((1, "item_id")),
        ),
        (
            "/v1/events",
            vec![ONE_EVENT; 101].join("\n").into_bytes(),
            413,
            None,
        ),
        ("/v1/items", vec![b' '; 70_000], 413, None),
        (
            "/v1/users",
            lines(&[r#"{"user_id": 8, "signup_ts": 1, "interests": [3]}"#]),
            400,
            Some((0, "interests")),
        ),
    ];
    for (path, body, status, loc) in cases {
        let (s, resp) = c.post_raw(path, body, None).await?;
        assert_eq!(s, status, "{path}: {resp}");
        let err = &resp["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{resp}"
        );
        if let Some((row, field)) = loc {
            assert_eq!(
                (err["row"].as_u64(), err["field"].as_str()),
                (Some(row), Some(field)),
                "{path}: {resp}"
            );
            assert!(
                err["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{field}`")),
                "{resp}"
            );
        }
    }

    // an Arrow IPC body with a column of the wrong type names the field
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        Field::new("item_id", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from(vec![7])),
            Arc::new(StringArray::from(vec!["4"])),
        ],
    )?;
    let (s, resp) = c
        .post_raw(
            "/v1/events",
            coldstart_runtime::ipc::encode(&batch),
            Some("application/vnd.apache.arrow.stream"),
        )
        .await?;
    assert_eq!(s, 400, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`item_id`"),
        "{resp}"
    );

    // bad recall parameters, each refused naming its field
    for (q, field) in [
        ("user_id=x", "user_id"),
        ("user_id=7&k=0", "k"),
        ("user_id=7&k=100000", "k"),
        ("k=5", "user_id"),
        ("user_id=7&at=-5", "at"),
        ("user_id=7&at=99999999999999", "at"),
        ("user_id=7&at=yesterday", "at"),
        ("user_id=7&at=1000&since=2000", "since"),
        ("user_id=7&channels=cluster,pin", "channels"),
    ] {
        let (s, resp) = c.get_json(&format!("{}/v1/recall?{q}", c.api())).await?;
        assert_eq!(s, 400, "{q}: {resp}");
        let msg = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("`{field}`")), "{q}: {resp}");
    }

    // nothing changed, and the valid rows of rejected batches were not stored
    let after = snapshot().await;
    assert_eq!(after, before);
    let (_, ledger) = c.get_json(&format!("{ledger_url}?item_ids=500")).await?;
    assert_eq!(ledger, json!([]), "item 500 came only in rejected batches");
    assert!(!after.0.iter().any(|i| i[0] == 500));

    // and a good Arrow IPC batch is accepted
    let ev =
        coldstart_contracts::profile::Event::to_batch(&[coldstart_contracts::profile::Event {
            user_id: 7,
            item_id: 4,
            ts: now,
            action: Action::Like,
            dwell_ms: None,
            request_id: None,
        }]);
    let (s, resp) = c
        .post_raw(
            "/v1/events",
            coldstart_runtime::ipc::encode(&ev),
            Some("application/vnd.apache.arrow.stream"),
        )
        .await?;
    assert_eq!((s, &resp["accepted"]), (200, &json!(1)), "{resp}");
    Ok(())
}

/// Slow clients are cut off and do not starve the others: 40 connections trickling a request
/// header one byte at a time are closed once `limits.http_header_timeout_ms` passes, a client
/// trickling a body gets 408 once `limits.request_timeout_ms` passes, connections over
/// `limits.max_connections` are closed at once, and meanwhile recall answers every other client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let opts = Options {
        env: vec![
            (
                "COLDSTART__LIMITS__HTTP_HEADER_TIMEOUT_MS".into(),
                "3000".into(),
            ),
            (
                "COLDSTART__LIMITS__REQUEST_TIMEOUT_MS".into(),
                "2000".into(),
            ),
            ("COLDSTART__LIMITS__MAX_CONNECTIONS".into(), "44".into()),
            (
                "COLDSTART__LIMITS__FLIGHT_IDLE_TIMEOUT_MS".into(),
                "4000".into(),
            ),
        ],
        ..Options::default()
    };
    let c = TestCluster::start(opts).await?;
    let items: Vec<Value> = (1..=20u64)
        .map(|i| json!({"item_id": i, "publish_ts": now_ms() - 1000 * i as i64, "category": "c", "title": format!("t{i}")}))
        .collect();
    assert_eq!(c.post("/v1/items", &items).await?.0, 200);
    let addr = c.api().trim_start_matches("http://").to_string();

    // 40 slow headers, each trickling a byte every 200 ms until the server hangs up
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&addr).await?;
        slow.push(tokio::spawn(async move {
            let head = b"GET /v1/recall?user_id=1 HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(20) {
                    return None; // never cut off
                }
            }
            Some(started.elapsed())
        }));
    }
    // a slow body: the header whole, the body trickled
    let mut body = TcpStream::connect(&addr).await?;
    body.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        .await?;
    let body_task = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..100 {
            if body.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(200), body.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&out).to_string()
    });
    // over the connection cap (40 slow + 1 body + at most a pooled client's, of 44): closed at once
    let mut extra = Vec::new();
    for _ in 0..10 {
        extra.push(TcpStream::connect(&addr).await?);
    }
    let mut closed_at_once = 0;
    for s in &mut extra {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
        {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 6,
        "{closed_at_once} of 10 over the cap closed"
    );
    drop(extra);
    // meanwhile every other client is served
    for _ in 0..10 {
        let r = c.recall(1, 5).await?;
        assert_eq!(ids(&r).len(), 5, "{r}");
    }
    for t in slow {
        let cut = t.await?.expect("a slow header was never cut off");
        assert!(cut < Duration::from_secs(10), "{cut:?}");
    }
    let answer = body_task.await?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("limits.request_timeout_ms"), "{answer}");
    // and recall still answers once they are gone
    assert_eq!(ids(&c.recall(1, 5).await?).len(), 5);

    // the same on a Flight server, the profile's, which every recall needs: 36 connections
    // that send nothing, 4 that stop after the HTTP/2 preface, and 10 over the cap of 44 (the
    // aggregator's own connection, open since the recalls above, is one)
    let profile = c.membership().role(Role::Profile)[0].flight_addr.clone();
    let started = Instant::now();
    let held = |s: TcpStream| {
        tokio::spawn(async move {
            let mut s = s;
            let mut buf = [0u8; 64];
            loop {
                match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => {}
                    Err(_) => return None, // never closed
                }
            }
        })
    };
    let mut silent = Vec::new();
    for _ in 0..36 {
        silent.push(held(TcpStream::connect(&profile).await?));
    }
    let mut quiet = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&profile).await?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        quiet.push(held(s));
    }
    let mut extra = Vec::new();
    for _ in 0..10 {
        extra.push(TcpStream::connect(&profile).await?);
    }
    let mut closed_at_once = 0;
    for s in &mut extra {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
        {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 6,
        "{closed_at_once} of 10 over the flight cap closed"
    );
    drop(extra);
    for _ in 0..10 {
        let r = c.recall(1, 5).await?;
        assert_eq!((ids(&r).len(), &r["degraded"]), (5, &json!([])), "{r}");
    }
    for t in silent {
        let cut = t
            .await?
            .expect("a silent flight connection was never closed");
        assert!(cut < Duration::from_secs(10), "{cut:?}");
    }
    for t in quiet {
        let cut = t
            .await?
            .expect("an idle flight connection was never closed");
        assert!(cut < Duration::from_secs(15), "{cut:?}");
    }
    // past the idle timeout the aggregator's pinged connection still serves every recall
    let r = c.recall(1, 5).await?;
    assert_eq!((ids(&r).len(), &r["degraded"]), (5, &json!([])), "{r}");
    let metrics = c
        .get_text(&format!(
            "http://{}/metrics",
            c.member("profile-0").unwrap().http_addr
        ))
        .await?
        .1;
    for what in ["flight_connections_refused", "flight_connections_timed_out"] {
        assert!(metrics.contains(what), "{what} not counted:\n{metrics}");
    }
    Ok(())
}
