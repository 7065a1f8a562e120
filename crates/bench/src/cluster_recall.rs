//! `coldstart-bench cluster-recall`: the cluster-recall read path over loopback — one request is
//! the newest `m` items of the clusters of 60 seeds, read through the sharder client from the
//! sharders that own them (fewest covering Flight calls, in parallel) — against the same lists in
//! one Redis server, read with one pipelined round of LRANGE. Same requests, same concurrency,
//! one run per topology (`xtask bench cluster-recall` runs 1 sharder, 2 sharders with
//! replication 2, and 3 sharders with replication 2 as `deploy/` runs them).

use coldstart_contracts::sharder::proto::ListQuery;
use coldstart_contracts::sharder::SharderClient;
use coldstart_contracts::sharder::{ListEntry, Posting};
use coldstart_contracts::types::ListKind;
use coldstart_runtime::discovery::{EtcdRegistry, EtcdSettings, Registry, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ClusterRecallBench {
    /// etcd endpoints, comma-separated.
    #[arg(long)]
    etcd: String,
    /// Cluster name (etcd namespace).
    #[arg(long)]
    cluster: String,
    /// Sharders the cluster runs (the bench waits for them).
    #[arg(long, default_value_t = 2)]
    sharders: usize,
    /// The sharders' replication factor (as they were started with).
    #[arg(long, default_value_t = 2)]
    replication: usize,
    /// Redis port on 127.0.0.1.
    #[arg(long)]
    redis_port: u16,
    /// Sharder pids, comma-separated (for resident memory per item).
    #[arg(long, default_value = "")]
    sharder_pids: String,
    /// Clusters.
    #[arg(long, default_value_t = 2048)]
    clusters: usize,
    /// Items per cluster.
    #[arg(long, default_value_t = 500)]
    per_cluster: usize,
    /// Seeds per request (their clusters are read).
    #[arg(long, default_value_t = 60)]
    seeds: usize,
    /// Newest items per cluster.
    #[arg(long, default_value_t = 10)]
    m: usize,
    /// Measured requests per system.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn rss_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Redis's `used_memory` (what its allocator handed out) and `used_memory_rss`.
fn redis_memory(con: &mut redis::Connection) -> anyhow::Result<(u64, u64)> {
    let info: String = redis::cmd("INFO").arg("memory").query(con)?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("used_memory:"), field("used_memory_rss:")))
}

/// The heap bytes the sharders' lists hold, by their own accounting (`GET /v1/index`).
async fn sharder_list_bytes(reg: &dyn Registry) -> anyhow::Result<u64> {
    let http = reqwest::Client::new();
    let mut total = 0;
    let addrs: Vec<String> = reg
        .watch()
        .borrow()
        .role(Role::Sharder)
        .iter()
        .map(|m| m.http_addr.clone())
        .collect();
    for addr in addrs {
        let v: serde_json::Value = http
            .get(format!("http://{addr}/v1/index"))
            .send()
            .await?
            .json()
            .await?;
        total += v["list_bytes"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn key(c: usize) -> String {
    format!("bench:{c}")
}

pub async fn run(a: ClusterRecallBench) -> anyhow::Result<()> {
    let mut cfg = coldstart_runtime::ProcessConfig {
        cluster: a.cluster.clone(),
        ..Default::default()
    };
    cfg.discovery.endpoints = a.etcd.split(',').map(|s| s.trim().to_string()).collect();
    let reg: Arc<dyn Registry> = Arc::new(
        EtcdRegistry::start(EtcdSettings::from_config(&cfg))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut watch = reg.watch();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|m| m.role(Role::Sharder).len() >= a.sharders),
    )
    .await;
    let pool = Arc::new(coldstart_runtime::flight::FlightPool::new(
        cfg.limits.max_message_bytes,
        Duration::from_secs(10),
    ));
    let cluster = SharderClient::new(Arc::new(coldstart_runtime::cluster::Cluster::new(
        pool,
        reg.watch(),
        a.replication,
    )));
    let items = a.clusters * a.per_cluster;
    let now = coldstart_runtime::now_ms();

    // ---- load both
    let pids: Vec<&str> = a
        .sharder_pids
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    let rss_before: u64 = pids.iter().map(|p| rss_bytes(p)).sum();
    let postings: Vec<Posting> = (0..items)
        .map(|i| {
            Posting::List(ListEntry::new(
                ListKind::Cluster,
                key(i % a.clusters),
                i as u64,
                now - (items - i) as i64,
            ))
        })
        .collect();
    let t = Instant::now();
    for chunk in postings.chunks(50_000) {
        cluster
            .write_postings(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    eprintln!(
        "loaded {items} items into the sharders in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after: u64 = pids.iter().map(|p| rss_bytes(p)).sum();
    let replicas = a.replication.clamp(1, a.sharders.max(1)) as f64;
    let per_item = |bytes: u64| bytes as f64 / (items as f64 * replicas);
    let ours_rss = per_item(rss_after.saturating_sub(rss_before));
    let ours_heap = per_item(sharder_list_bytes(reg.as_ref()).await?);

    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", a.redis_port))?;
    let (redis_heap, redis_rss, t) = {
        let client = client.clone();
        let (clusters, per) = (a.clusters, a.per_cluster);
        tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64, f64)> {
            let mut con = client.get_connection()?;
            redis::cmd("FLUSHALL").exec(&mut con)?;
            let before = redis_memory(&mut con)?;
            let t = Instant::now();
            for chunk in (0..clusters).collect::<Vec<_>>().chunks(64) {
                let mut pipe = redis::pipe();
                for &c in chunk {
                    // LPUSH in publish order: the head of the list is the newest item
                    let ids: Vec<u64> = (0..per).map(|j| (j * clusters + c) as u64).collect();
                    pipe.lpush(key(c), ids).ignore();
                }
                pipe.exec(&mut con)?;
            }
            let after = redis_memory(&mut con)?;
            let n = (clusters * per) as f64;
            Ok((
                after.0.saturating_sub(before.0) as f64 / n,
                after.1.saturating_sub(before.1) as f64 / n,
                t.elapsed().as_secs_f64(),
            ))
        })
        .await??
    };
    eprintln!("loaded {items} items into redis in {t:.1} s");

    // ---- the same requests for both
    let mut rng = SmallRng::seed_from_u64(5);
    let requests: Arc<Vec<Vec<usize>>> = Arc::new(
        (0..a.requests + 200)
            .map(|_| {
                let mut cs: Vec<usize> = (0..a.seeds)
                    .map(|_| rng.random_range(0..a.clusters))
                    .collect();
                cs.sort_unstable();
                cs.dedup();
                cs
            })
            .collect(),
    );

    // the keys are formatted once, for both systems: the bench measures reads, not format!
    let m = a.m as u32;
    let queries: Arc<Vec<ListQuery>> = Arc::new(
        (0..a.clusters)
            .map(|c| ListQuery::of(ListKind::Cluster, key(c), m))
            .collect(),
    );
    let keys: Arc<Vec<String>> = Arc::new((0..a.clusters).map(key).collect());

    // ours: async tasks sharing one client
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(200));
    for r in requests.iter().take(200) {
        let q: Vec<ListQuery> = r.iter().map(|&c| queries[c].clone()).collect();
        cluster
            .read_lists(&q, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (cluster, requests, next, queries) = (
                cluster.clone(),
                requests.clone(),
                next.clone(),
                queries.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut hits = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests.len() {
                        break;
                    }
                    let q: Vec<ListQuery> =
                        requests[i].iter().map(|&c| queries[c].clone()).collect();
                    let t = Instant::now();
                    let got = cluster.read_lists(&q, None).await;
                    lat.push(t.elapsed());
                    hits += got.map(|h| h.len()).unwrap_or(0);
                }
                (lat, hits)
            })
        })
        .collect();
    let (mut ours_lat, mut ours_hits) = (Vec::new(), 0);
    for t in tasks {
        let (l, h) = t.await?;
        ours_lat.extend(l);
        ours_hits += h;
    }
    let ours_rps = ours_lat.len() as f64 / started.elapsed().as_secs_f64();
    ours_lat.sort();

    // redis: one thread and connection per worker, one pipelined round per request
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(200));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (client, requests, next, keys, m) = (
                client.clone(),
                requests.clone(),
                next.clone(),
                keys.clone(),
                a.m as isize,
            );
            std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, usize)> {
                let mut con = client.get_connection()?;
                let mut lat = Vec::new();
                let mut hits = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests.len() {
                        break;
                    }
                    let t = Instant::now();
                    let mut pipe = redis::pipe();
                    for &c in &requests[i] {
                        pipe.lrange(&keys[c], 0, m - 1);
                    }
                    let lists: Vec<Vec<u64>> = pipe.query(&mut con)?;
                    lat.push(t.elapsed());
                    hits += lists.iter().map(Vec::len).sum::<usize>();
                }
                Ok((lat, hits))
            })
        })
        .collect();
    let (mut redis_lat, mut redis_hits) = (Vec::new(), 0);
    for t in threads {
        let (l, h) = t
            .join()
            .map_err(|_| anyhow::anyhow!("redis worker panicked"))??;
        redis_lat.extend(l);
        redis_hits += h;
    }
    let redis_rps = redis_lat.len() as f64 / started.elapsed().as_secs_f64();
    redis_lat.sort();
    if ours_hits != redis_hits {
        anyhow::bail!(
            "the two systems returned different numbers of items: {ours_hits} vs {redis_hits}"
        );
    }

    println!();
    println!(
        "cluster recall reads: {} clusters x {} items, {} seeds, m {}, {} requests, concurrency {}",
        a.clusters, a.per_cluster, a.seeds, a.m, a.requests, a.concurrency
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>14} {:>14}",
        "", "req/s", "p50 ms", "p99 ms", "heap B/item", "RSS B/item"
    );
    let row = |name: &str, rps: f64, lat: &[Duration], heap: f64, rss: f64| {
        println!(
            "{name:<28} {rps:>10.0} {:>10.3} {:>10.3} {heap:>14.1} {rss:>14.1}",
            crate::pct(lat, 0.5),
            crate::pct(lat, 0.99)
        )
    };
    let ours_name = format!(
        "coldstart ({} sharder{}, r {})",
        a.sharders,
        if a.sharders == 1 { "" } else { "s" },
        a.replication.min(a.sharders)
    );
    row(&ours_name, ours_rps, &ours_lat, ours_heap, ours_rss);
    row(
        "redis (LRANGE pipeline)",
        redis_rps,
        &redis_lat,
        redis_heap,
        redis_rss,
    );
    println!(
        "throughput ratio {:.2}, p99 ratio {:.2} (goal: throughput >= 1 at p99 <= 1)",
        ours_rps / redis_rps,
        crate::pct(&ours_lat, 0.99) / crate::pct(&redis_lat, 0.99)
    );
    let result = serde_json::json!({
        "sharders": a.sharders, "replication": a.replication,
        "ours_rps": ours_rps, "ours_p50_ms": crate::pct(&ours_lat, 0.5), "ours_p99_ms": crate::pct(&ours_lat, 0.99),
        "redis_rps": redis_rps, "redis_p50_ms": crate::pct(&redis_lat, 0.5), "redis_p99_ms": crate::pct(&redis_lat, 0.99),
        "ours_heap_b": ours_heap, "redis_heap_b": redis_heap,
    });
    println!("BENCH {result}");
    println!("(per item and replica: heap = the sharders' own accounting of their lists / redis used_memory; RSS = resident memory the load added, allocator slack included / redis used_memory_rss)");
    Ok(())
}
