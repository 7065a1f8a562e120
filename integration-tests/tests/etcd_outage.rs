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
