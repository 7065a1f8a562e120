//! `coldstart all-in-one --model DIR`: one process runs every role with in-memory discovery and a
//! trained content model, so cluster recall works without etcd; flags it would ignore are refused.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, LoggedEvent};
use coldstart_contracts::types::Action;
use coldstart_encoder::training::TrainConfig;
use coldstart_integration_tests::{bin, free_port};
use coldstart_models::encoder::EncoderConfig;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn etcd_flags_are_refused() {
    let out = Command::new(bin())
        .args([
            "all-in-one",
            "--etcd",
            "http://127.0.0.1:1",
            "--http-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster and --etcd do not apply"), "{err}");
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_gives_cluster_recall_in_one_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let now = coldstart_integration_tests::now_ms();
    let topics = ["cats", "dogs", "birds"];
    let items: Vec<Item> = (1..=60u64)
        .map(|i| {
            let t = topics[(i % 3) as usize];
            Item {
                item_id: i,
                publish_ts: now - 3_600_000 + i as i64,
                author_id: None,
                category: "pets".into(),
                keywords: vec![],
                title: format!("{t} {t} story {i}"),
                body: None,
                image_vec: None,
                quality: None,
                author_quality: None,
            }
        })
        .collect();
    // users engage within one topic, so the encoder learns topics from co-engagement
    let events: Vec<Event> = (0..300u64)
        .map(|j| {
            let u = j % 15;
            let item = (u % 3) + 3 * ((j * 7) % 20) + 1;
            Event {
                user_id: u + 1,
                item_id: if item == 0 { 3 } else { item.min(60) },
                ts: now - 60_000 + j as i64,
                action: Action::Like,
                dwell_ms: None,
                request_id: None,
            }
        })
        .collect();
    let logged: Vec<LoggedEvent> = events
        .iter()
        .map(|e| LoggedEvent {
            event: e.clone(),
            item_publish_ts: items[e.item_id as usize - 1].publish_ts,
            category: "pets".into(),
            keywords: vec![],
        })
        .collect();
    let cfg = TrainConfig {
        encoder: EncoderConfig {
            buckets: 1 << 12,
            hidden: 16,
            dim: 8,
            ..Default::default()
        },
        epochs: 5,
        min_exposure: 2,
        ..Default::default()
    };
    let (model, asg, _) =
        coldstart_jobs::training::train_content_model("aio-1", &items, &logged, &cfg, 3, 10, None)?;
    let r = model.save(&dir.path().join("models"), &asg)?;

    let port = free_port();
    let _proc = Kill(
        Command::new(bin())
            .args(["all-in-one", "--http-port", &port.to_string(), "--model"])
            .arg(std::path::Path::new(&r.uri).parent().unwrap())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("COLDSTART__LIMITS__IMAGE_DIM", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(format!("{api}/readyz")).send().await {
            if resp.status().is_success() {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "all-in-one not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = |rows: Vec<serde_json::Value>| -> String {
        rows.iter().map(|r| format!("{r}\n")).collect()
    };
    let item_rows = items
        .iter()
        .map(|i| json!({"item_id": i.item_id, "publish_ts": i.publish_ts, "category": i.category, "title": i.title}))
        .collect();
    let resp = http
        .post(format!("{api}/v1/items"))
        .body(lines(item_rows))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "{}", resp.text().await?);
    // user 100 likes two cat items; the model files cat items together
    let likes = vec![
        json!({"user_id": 100, "item_id": 3, "ts": now - 1000, "action": "like"}),
        json!({"user_id": 100, "item_id": 6, "ts": now - 900, "action": "like"}),
    ];
    let resp = http
        .post(format!("{api}/v1/events"))
        .body(lines(likes))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "{}", resp.text().await?);
    let body: serde_json::Value = http
        .get(format!("{api}/v1/recall?user_id=100&k=10&channels=cluster"))
        .send()
        .await?
        .json()
        .await?;
    let got = body["items"].as_array().cloned().unwrap_or_default();
    assert!(
        !got.is_empty(),
        "cluster recall answers in one process: {body}"
    );
    Ok(())
}
