//! Cluster recall end to end: train the content encoder on the real event log, cluster, publish
//! the model through etcd; the encoder and both sharders swap to it without a restart (the
//! sharders re-file their index under it); an item published afterwards is filed into its nearest
//! cluster and reaches, through the cluster channel, the users whose likes fall in that cluster,
//! as soon as its publish returns. Topics here share categories, so only the content can tell them
//! apart. A second version rolls out in two steps: staged, the encoder files new items under both
//! versions; activated, the job reads the catalogue again and the sharders re-file every item —
//! none is left out — and new items reach users through the re-filed seeds. A third, named before
//! its files are in place, is retried until they appear and retires the first one's lists. Bad
//! model references are refused by field.

use coldstart_contracts::encoder::Item;
use coldstart_integration_tests::{eventually, now_ms, Options, TestCluster};
use serde_json::{json, Value};
use std::time::Duration;

const TOPICS: usize = 6;
const WORDS: [[&str; 5]; TOPICS] = [
    ["kitten", "whiskers", "meow", "purr", "tabby"],
    ["engine", "piston", "gearbox", "turbo", "exhaust"],
    ["violin", "cello", "sonata", "orchestra", "concerto"],
    ["pasta", "risotto", "basil", "parmesan", "oregano"],
    ["galaxy", "nebula", "quasar", "orbit", "telescope"],
    ["glacier", "summit", "crampon", "ridge", "avalanche"],
];

fn item(id: u64, topic: usize, ts: i64, salt: u64) -> Value {
    let w = WORDS[topic];
    let title = format!(
        "{} {} {}",
        w[(id % 5) as usize],
        w[((id / 5 + salt) % 5) as usize],
        w[((id / 25 + 2) % 5) as usize]
    );
    json!({"item_id": id, "publish_ts": ts, "category": format!("cat{}", topic % 2), "keywords": [w[((id + 1) % 5) as usize]], "title": title})
}

/// How far `train clusters` rolls the model out.
#[derive(Clone, Copy, PartialEq)]
enum Rollout {
    None,
    Stage,
    Publish,
}

/// `train encoder` then `train clusters` for `version`, rolled out as asked, as an operator runs
/// them; returns the output of the second.
#[allow(clippy::too_many_arguments)]
fn train(
    c: &TestCluster,
    items: &str,
    log: &str,
    models: &str,
    version: &str,
    epochs: usize,
    k: usize,
    rollout: Rollout,
) -> anyhow::Result<String> {
    let (epochs, k) = (epochs.to_string(), k.to_string());
    let out = c.run_cli(&[
        "train",
        "encoder",
        "--items",
        items,
        "--events",
        log,
        "--out",
        models,
        "--version",
        version,
        "--epochs",
        &epochs,
        "--buckets",
        "4096",
        "--hidden",
        "32",
        "--dim",
        "16",
        "--min-exposure",
        "2",
    ])?;
    assert!(out.contains("held-out triplet accuracy"), "{out}");
    let etcd = c.etcd.url();
    let mut args = vec![
        "train",
        "clusters",
        "--items",
        items,
        "--out",
        models,
        "--version",
        version,
        "--k",
        &k,
    ];
    match rollout {
        Rollout::None => {}
        Rollout::Stage => args.push("--stage"),
        Rollout::Publish => args.push("--publish"),
    }
    if rollout != Rollout::None {
        args.extend(["--etcd", &etcd, "--cluster", &c.name]);
    }
    let out = c.run_cli(&args)?;
    assert_eq!(
        out.contains("published as"),
        rollout == Rollout::Publish,
        "{out}"
    );
    Ok(out)
}

async fn model(c: &TestCluster, node: &str) -> Option<Value> {
    let url = format!("http://{}/v1/model", c.member(node)?.http_addr);
    let (s, v) = c.get_json(&url).await.ok()?;
    (s == 200).then_some(v)
}

async fn model_version(c: &TestCluster) -> Option<String> {
    model(c, "encoder-0")
        .await
        .map(|v| v["version"].as_str().unwrap_or("").to_string())
}

const NODES: [&str; 3] = ["encoder-0", "sharder-0", "sharder-1"];

/// Checks that every encoder and sharder runs `version`, in its member value and its
/// `/v1/model`, and returns the sharders' answers.
async fn all_run(c: &TestCluster, version: &str) -> anyhow::Result<Vec<Value>> {
    // the rollout's own etcd client saw every member announce it; this test's watch of the
    // members may be a moment behind
    eventually(
        &format!("this test's view shows every node on {version}"),
        Duration::from_secs(10),
        || async {
            NODES
                .iter()
                .all(|n| c.member(n).and_then(|m| m.model).as_deref() == Some(version))
                .then_some(())
        },
    )
    .await?;
    let mut sharders = Vec::new();
    for node in NODES {
        let m = c.member(node).unwrap();
        assert_eq!(m.model.as_deref(), Some(version), "{node} announces {m:?}");
        let v = model(c, node).await.unwrap();
        assert_eq!(v["version"], version, "{node}: {v}");
        if node.starts_with("sharder") {
            sharders.push(v);
        }
    }
    Ok(sharders)
}

/// Publishes one new item per topic (ids `base + topic`) and returns them.
async fn publish_topic_items(c: &TestCluster, base: u64, salt: u64) -> anyhow::Result<Vec<Value>> {
    let fresh: Vec<Value> = (0..TOPICS)
        .map(|t| item(base + t as u64, t, now_ms() - 1000 + t as i64, salt))
        .collect();
    assert_eq!(c.post("/v1/items", &fresh).await?.0, 200);
    Ok(fresh)
}

/// Counts the topics whose users get their topic's item `base + topic` through the cluster
/// channel; fails if one gets another topic's.
async fn topics_reached(c: &TestCluster, base: u64) -> anyhow::Result<usize> {
    let mut reached = 0;
    for u in 0..TOPICS as u64 {
        let r = c.recall(u + 1, 60).await?;
        let by_cluster: Vec<u64> = r["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| {
                i["channels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c == "cluster")
            })
            .map(|i| i["item_id"].as_u64().unwrap())
            .collect();
        if by_cluster.contains(&(base + u)) {
            reached += 1;
        }
        // never another topic's new item through the cluster channel
        for other in (0..TOPICS as u64).filter(|o| *o != u) {
            assert!(
                !by_cluster.contains(&(base + other)),
                "user of topic {u} got topic {other}'s new item by cluster: {r}"
            );
        }
    }
    Ok(reached)
}

/// The item catalogue as the offline jobs read it.
fn write_items(path: &std::path::Path, items: &[Value]) -> anyhow::Result<()> {
    let rows: Vec<Item> = items
        .iter()
        .map(|v| coldstart_contracts::validate::item_row(0, v.as_object().unwrap()).unwrap())
        .collect();
    coldstart_runtime::parquet_io::write_atomic(path, &[Item::to_batch(&rows, 0)])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_item_reaches_users_through_its_cluster() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::default()).await?;
    let base = now_ms() - 3_600_000;
    let warm: Vec<Value> = (0..240u64)
        .map(|i| item(1000 + i, (i % TOPICS as u64) as usize, base + i as i64, 0))
        .collect();
    assert_eq!(c.post("/v1/items", &warm).await?.0, 200);
    // users 1..=30: five per topic, each liking 12 items of the topic (and seeing a few more)
    let mut events = Vec::new();
    for u in 0..30u64 {
        let topic = (u % TOPICS as u64) as usize;
        let mine: Vec<&Value> = warm
            .iter()
            .filter(|it| (it["item_id"].as_u64().unwrap() - 1000) % TOPICS as u64 == topic as u64)
            .collect();
        for (j, it) in mine
            .iter()
            .enumerate()
            .skip((u / TOPICS as u64) as usize * 5)
            .take(12)
        {
            events.push(json!({"user_id": u + 1, "item_id": it["item_id"], "ts": base + 10_000 + j as i64, "action": "like"}));
        }
    }
    let (s, body) = c.post("/v1/events", &events).await?;
    assert_eq!(s, 200, "{body}");

    // offline: items file + the profile's real Parquet event log → encoder → clusters → etcd
    let items_file = c.dir.path().join("items.parquet");
    write_items(&items_file, &warm)?;
    let models = c.dir.path().join("models");
    let log = c.data_dir().join("profile-0").join("log");
    let (items_s, models_s, log_s) = (
        items_file.display().to_string(),
        models.display().to_string(),
        log.display().to_string(),
    );
    let pids: Vec<u32> = NODES.iter().map(|n| c.pid(n)).collect();
    let out = train(
        &c,
        &items_s,
        &log_s,
        &models_s,
        "v1",
        12,
        12,
        Rollout::Publish,
    )?;
    let forward =
        coldstart_runtime::parquet_io::read_all(&models.join("v1").join("assignments.parquet"))?;
    assert_eq!(
        forward.iter().map(|b| b.num_rows()).sum::<usize>(),
        240,
        "forward index item -> cluster for every item"
    );
    // both sharders hold every item (R = 2) and re-filed all of them under v1
    for v in all_run(&c, "v1").await? {
        assert_eq!(v["reassigned"]["items"], 240, "{v}");
        assert_eq!(v["reassigned"]["unassigned"], 0, "{v}");
        assert!(v["reassigned"]["lists"].as_u64().unwrap() >= 6, "{v}");
    }

    // new items, one per topic, published after the model: recallable through their cluster at once
    let published_before_v2 = publish_topic_items(&c, 9000, 3).await?;
    let reached = topics_reached(&c, 9000).await?;
    assert!(
        reached >= TOPICS - 1,
        "only {reached} of {TOPICS} topics' new items reached their users by cluster"
    );

    // bad references are refused by field, and v1 stays
    let good: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap())?;
    let bad_sha = json!({"version": "v1", "uri": good["uri"], "sha256": "00".repeat(32)});
    c.put_model("content", &bad_sha.to_string()).await?;
    let unknown = json!({"version": "v9", "uri": good["uri"], "sha256": good["sha256"]});
    c.put_model("content", &unknown.to_string()).await?;
    for node in NODES {
        let log_text = || std::fs::read_to_string(c.log_path(node)).unwrap_or_default();
        eventually(
            &format!("both refusals logged by {node}"),
            Duration::from_secs(10),
            || async {
                let l = log_text();
                (l.contains("field `sha256`") && l.contains("field `version`")).then_some(())
            },
        )
        .await?;
    }
    assert_eq!(model_version(&c).await.as_deref(), Some("v1"));
    all_run(&c, "v1").await?;

    // v2 swaps in without a restart: the sharders re-file the users' seeds under v2, so new
    // items filed under v2 reach them; the items published under v1 after v2's forward index was
    // computed (the six above) are counted, and stay reachable in v1's kept lists
    // v2 rolls out in two steps. Staged: the encoder files new items under v1 and v2, and
    // recall still runs on v1.
    let out = train(
        &c,
        &items_s,
        &log_s,
        &models_s,
        "v2",
        12,
        12,
        Rollout::Stage,
    )?;
    assert!(out.contains("staged: 1 encoders"), "{out}");
    let enc = model(&c, "encoder-0").await.unwrap();
    assert_eq!(
        (enc["version"].as_str(), enc["next"].as_str()),
        (Some("v1"), Some("v2")),
        "{enc}"
    );
    assert_eq!(
        c.member("encoder-0").unwrap().next_model.as_deref(),
        Some("v2")
    );
    publish_topic_items(&c, 9100, 4).await?;
    let during = topics_reached(&c, 9100).await?;
    assert!(
        during >= TOPICS - 1,
        "while v2 is staged only {during} topics reached by v1"
    );
    // the catalogue has caught up with the items published before staging; activation reads it
    // again, so no item is left out of v2: those by its forward index, those published while
    // staged by the cluster the encoder filed them in
    let mut catalogue = warm.clone();
    catalogue.extend(published_before_v2);
    write_items(&items_file, &catalogue)?;
    let etcd = c.etcd.url();
    let out = c.run_cli(&[
        "train",
        "clusters",
        "--items",
        &items_s,
        "--out",
        &models_s,
        "--version",
        "v2",
        "--activate",
        "--etcd",
        &etcd,
        "--cluster",
        &c.name,
    ])?;
    assert!(
        out.contains("246 items, 6 of them published since training"),
        "{out}"
    );
    assert!(out.contains("rollout complete"), "{out}");
    for v in all_run(&c, "v2").await? {
        assert_eq!(v["reassigned"]["items"], 252, "{v}");
        assert_eq!(v["reassigned"]["unassigned"], 0, "every item is in v2: {v}");
        assert_eq!(v["dropped_lists"], 0, "v1 is kept: {v}");
    }
    assert!(model(&c, "encoder-0").await.unwrap()["next"].is_null());
    let after = topics_reached(&c, 9100).await?;
    assert!(
        after >= TOPICS - 1,
        "after the swap to v2, only {after} of the staged items reached"
    );
    publish_topic_items(&c, 9200, 5).await?;
    let fresh = topics_reached(&c, 9200).await?;
    assert!(
        fresh >= TOPICS - 1,
        "under v2, only {fresh} of {TOPICS} new items reached"
    );

    // v3 is named in etcd before its files are in place (a volume still syncing): every node
    // retries until they appear, with no new put; then it retires v1's lists
    let out = train(&c, &items_s, &log_s, &models_s, "v3", 2, 4, Rollout::None)?;
    let v3_ref = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap()
        .to_string();
    let (v3_dir, moved) = (models.join("v3"), models.join("v3-moved"));
    std::fs::rename(&v3_dir, &moved)?;
    c.put_model("content", &v3_ref).await?;
    for node in NODES {
        eventually(
            &format!("{node} retries v3"),
            Duration::from_secs(10),
            || async {
                let l = std::fs::read_to_string(c.log_path(node)).unwrap_or_default();
                l.lines()
                    .any(|l| l.contains("v3/manifest.json") && l.contains("retry=true"))
                    .then_some(())
            },
        )
        .await?;
    }
    std::fs::rename(&moved, &v3_dir)?;
    eventually("every node runs v3", Duration::from_secs(30), || async {
        NODES
            .iter()
            .all(|n| {
                c.member(n)
                    .is_some_and(|m| m.model.as_deref() == Some("v3"))
            })
            .then_some(())
    })
    .await?;
    for v in all_run(&c, "v3").await? {
        assert!(v["dropped_lists"].as_u64().unwrap() >= 6, "{v}");
    }
    let now: Vec<u32> = NODES.iter().map(|n| c.pid(n)).collect();
    assert_eq!(now, pids, "no restart");
    Ok(())
}
