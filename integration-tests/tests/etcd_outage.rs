//! etcd stops for 5 s and starts again: every service keeps running and is registered again
//! within 10 s, with a live lease (the keys are still there after two more TTLs).

use coldstart_integration_tests::{eventually, now_ms, Options, TestCluster};
use coldstart_runtime::discovery::{EtcdRegistry, EtcdSettings, Registry};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reregister_after_an_etcd_restart_without_restarting() -> anyhow::Result<()> {
    let opts = Options::default();
    let ttl = opts.lease_ttl_s;
    let mut c = TestCluster::start(opts).await?;
    let names: Vec<String> = c.membership().all().map(|m| m.node_id.clone()).collect();
    assert_eq!(names.len(), 6);
    let pids: Vec<u32> = names.iter().map(|n| c.pid(n)).collect();

    c.etcd.stop();
    tokio::time::sleep(Duration::from_secs(5)).await; // the outage under test
    c.etcd.restart()?;
    let restarted = Instant::now();
    c.etcd.wait_healthy().await?;

    // a fresh view straight from etcd, not the harness's long-lived one
    let fresh = || async {
        EtcdRegistry::start(EtcdSettings {
            endpoints: vec![c.etcd.url()],
            cluster: c.name.clone(),
            lease_ttl_s: ttl,
            request_timeout: Duration::from_secs(1),
        })
        .await
        .ok()
        .map(|r| r.watch().borrow().clone())
    };
    eventually(
        "all six members registered again",
        Duration::from_secs(10),
        || async { fresh().await.filter(|m| m.all().count() == 6).map(|_| ()) },
    )
    .await?;
    let back_after = restarted.elapsed();
    assert!(
        back_after <= Duration::from_secs(10),
        "registered again after {back_after:?}"
    );

    // keys from before the outage would expire by now; live registrations are kept alive
    tokio::time::sleep(Duration::from_secs(2 * ttl + 1)).await;
    let view = fresh().await.expect("etcd reachable");
    let mut now_names: Vec<String> = view.all().map(|m| m.node_id.clone()).collect();
    now_names.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(now_names, want);

    for (n, pid) in names.iter().zip(&pids) {
        assert!(c.running(n), "{n} exited");
        assert_eq!(c.pid(n), *pid, "{n} was restarted");
    }

    // and the cluster still serves
    let (s, body) = c
        .post("/v1/items", &[json!({"item_id": 1, "publish_ts": now_ms(), "category": "after", "title": "after the outage"})])
        .await?;
    assert_eq!(s, 200, "{body}");
    Ok(())
}

/// A tiny content model (2 clusters of a 2-dimensional space) saved under `dir`; its reference.
fn tiny_model(dir: &std::path::Path, version: &str) -> anyhow::Result<String> {
    use coldstart_artifact::ContentModel;
    use coldstart_models::encoder::{Encoder, EncoderConfig};
    use coldstart_models::kmeans::Centroids;
    let model = ContentModel {
        version: version.into(),
        encoder: Encoder::new(EncoderConfig {
            buckets: 64,
            hidden: 4,
            dim: 2,
            image_dim: 0,
            ..Default::default()
        })?,
        centroids: Centroids::from_rows(&[1.0, 0.0, 0.0, 1.0], 2)?,
    };
    let filed = coldstart_contracts::sharder::Assignment {
        item_id: 9,
        cluster: 0,
        publish_ts: 0,
        vector: Some(vec![1.0, 0.0]),
    };
    let r = model.save(dir, &[filed])?;
    Ok(serde_json::to_string(&r)?)
}

/// etcd comes back empty (its data lost): the encoders put `models/content` back from the
/// reference they last ran; an encoder restarted meanwhile loads it again; an encoder that ran a
/// model and cannot load one refuses publishes (503 naming the model) instead of filing items
/// without a cluster, and files them again once a model loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_references_survive_an_etcd_loss() -> anyhow::Result<()> {
    use coldstart_runtime::discovery::{Role, ValueKind};
    let mut c = TestCluster::start(Options::default()).await?;
    let models = c.dir.path().join("models");
    let v1 = tiny_model(&models, "tiny-v1")?;
    c.put_model("content", &v1).await?;
    let runs = |c: &TestCluster, version: &'static str| {
        let encoder = c.member("encoder-0");
        async move { (encoder?.model.as_deref() == Some(version)).then_some(()) }
    };
    eventually("encoder-0 runs tiny-v1", Duration::from_secs(15), || {
        runs(&c, "tiny-v1")
    })
    .await?;
    let item = |id: u64| json!({"item_id": id, "publish_ts": now_ms() - 1000, "category": "c", "title": format!("t{id}")});
    assert_eq!(c.post("/v1/items", &[item(1)]).await?.0, 200);

    c.etcd.restart_empty()?;
    c.etcd.wait_healthy().await?;
    eventually(
        "models/content put back",
        Duration::from_secs(20),
        || async {
            let v = c
                .registry()
                .get_value(ValueKind::Model, "content")
                .await
                .ok()??;
            (v == v1).then_some(())
        },
    )
    .await?;
    // a restarted encoder runs it again and files items under it
    c.kill9("encoder-0")?;
    c.spawn(Role::Encoder, "encoder-0")?;
    c.wait_ready("encoder-0").await?;
    eventually(
        "encoder-0 runs tiny-v1 again",
        Duration::from_secs(15),
        || runs(&c, "tiny-v1"),
    )
    .await?;
    assert_eq!(c.post("/v1/items", &[item(2)]).await?.0, 200);

    // a reference that does not load, and a restart: no model, so no publish
    let mut broken: serde_json::Value = serde_json::from_str(&v1)?;
    broken["sha256"] = json!("0".repeat(64));
    c.put_model("content", &broken.to_string()).await?;
    c.kill9("encoder-0")?;
    c.spawn(Role::Encoder, "encoder-0")?;
    c.wait_ready("encoder-0").await?;
    let (status, body) = c.post("/v1/items", &[item(3)]).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("tiny-v1"), "{body}");
    // the good reference again: publishing resumes
    c.put_model("content", &v1).await?;
    eventually("publishing resumes", Duration::from_secs(15), || async {
        (c.post("/v1/items", &[item(3)]).await.ok()?.0 == 200).then_some(())
    })
    .await?;
    Ok(())
}

/// Items stored in no cluster (published before any content model ran: the sharders keep no
/// text to encode them from) are found on the sharders, published again from the catalog by
/// `coldstart refile` and filed under the running model; the sweep counts them, and names the
/// ones the catalog lacks instead of reporting success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refiling_sweep_files_items_stored_without_a_cluster() -> anyhow::Result<()> {
    use coldstart_contracts::encoder::Item;
    let c = TestCluster::start(Options::default()).await?;
    let now = now_ms();
    let items: Vec<Item> = (1..=30u64)
        .map(|id| Item {
            item_id: id,
            publish_ts: now - 60_000 * id as i64,
            author_id: None,
            category: "c".into(),
            keywords: vec!["k".into()],
            title: format!("title {id}"),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        })
        .collect();
    let rows: Vec<serde_json::Value> = items
        .iter()
        .map(|i| json!({"item_id": i.item_id, "publish_ts": i.publish_ts, "category": i.category, "keywords": i.keywords, "title": i.title}))
        .collect();
    assert_eq!(c.post("/v1/items", &rows).await?.0, 200);
    let http = |node: &str| format!("http://{}", c.member(node).unwrap().http_addr);
    let filed = || async {
        let ids: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
        let mut filed = std::collections::BTreeMap::new();
        for node in ["sharder-0", "sharder-1"] {
            let url = format!("{}/v1/items?ids={}", http(node), ids.join(","));
            for r in c
                .get_json(&url)
                .await?
                .1
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let id = r["item_id"].as_u64().unwrap();
                *filed.entry(id).or_insert(true) &= !r["cluster"].is_null();
            }
        }
        anyhow::Ok(filed)
    };
    assert!(
        filed().await?.values().all(|f| !f),
        "stored without a cluster"
    );

    // the first content model: the items published before it stay unfiled, but for item 9,
    // which its forward index files
    let models = c.dir.path().join("models");
    c.put_model("content", &tiny_model(&models, "tiny-v1")?)
        .await?;
    eventually("sharders run tiny-v1", Duration::from_secs(20), || async {
        ["encoder-0", "sharder-0", "sharder-1"]
            .iter()
            .all(|n| c.member(n).and_then(|m| m.model) == Some("tiny-v1".into()))
            .then_some(())
    })
    .await?;
    let (_, index) = c
        .get_json(&format!("{}/v1/index", http("sharder-0")))
        .await?;
    assert!(index["unfiled"].as_u64().unwrap() > 0, "{index}");

    // a catalog without item 30: the sweep files the rest and names 30
    let etcd = c.etcd.url();
    let catalog = c.dir.path().join("catalog.parquet");
    let write = |rows: &[Item]| {
        coldstart_runtime::parquet_io::write_atomic(&catalog, &[Item::to_batch(rows, 0)])
    };
    write(&items[..29])?;
    let sweep = [
        "refile",
        "--items",
        catalog.to_str().unwrap(),
        "--etcd",
        &etcd,
        "--cluster",
        &c.name,
    ];
    let err = c.run_cli(&sweep).unwrap_err().to_string();
    assert!(
        err.contains("1 unfiled items are not in --items") && err.contains("[30]"),
        "{err}"
    );
    assert!(
        err.contains("\"unfiled\": 29") && err.contains("\"republished\": 28"),
        "{err}"
    );
    let now_filed = filed().await?;
    assert!((1..=29).all(|i| now_filed[&i]), "{now_filed:?}");
    assert!(!now_filed[&30]);

    // the whole catalog: nothing left, counted
    write(&items)?;
    let out = c.run_cli(&sweep)?;
    assert!(
        out.contains("\"unfiled\": 1") && out.contains("\"still_unfiled\": 0"),
        "{out}"
    );
    assert!(filed().await?.values().all(|f| *f));
    let (_, index) = c
        .get_json(&format!("{}/v1/index", http("sharder-0")))
        .await?;
    assert_eq!(index["unfiled"], json!(0), "{index}");
    // and recall still finds them (through their lists)
    let r = c.recall(1, 10).await?;
    assert_eq!(coldstart_integration_tests::ids(&r).len(), 10, "{r}");
    Ok(())
}
