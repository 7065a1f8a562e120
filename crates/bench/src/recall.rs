//! `coldstart-bench recall`: recall requests/s and latency percentiles against a running public
//! API, with a fixed set of users so two runs (distributed and all-in-one) ask the same requests.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct RecallBench {
    /// Aggregator HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Users to draw from (ids 1..=users).
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Measured requests.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Items per answer.
    #[arg(long, default_value_t = 50)]
    k: usize,
    /// Label for the result line.
    #[arg(long, default_value = "recall")]
    label: String,
    /// Random seed of the user sequence.
    #[arg(long, default_value_t = 11)]
    seed: u64,
}

pub async fn run(a: RecallBench) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency * 2)
        .build()?;
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let users: Arc<Vec<u64>> = Arc::new(
        (0..a.requests + 500)
            .map(|_| rng.random_range(1..=a.users.max(1)))
            .collect(),
    );
    let base = a.url.trim_end_matches('/').to_string();
    // warm-up: connections, caches
    for &u in users.iter().skip(a.requests).take(500) {
        client
            .get(format!("{base}/v1/recall?user_id={u}&k={}", a.k))
            .send()
            .await?
            .error_for_status()?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..a.concurrency.max(1))
        .map(|_| {
            let (client, users, next, base, k, n) = (
                client.clone(),
                users.clone(),
                next.clone(),
                base.clone(),
                a.k,
                a.requests,
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut empty = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    match client
                        .get(format!("{base}/v1/recall?user_id={}&k={k}", users[i]))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if v["items"].as_array().is_none_or(|a| a.is_empty()) {
                                empty += 1;
                            }
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors, empty)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(a.requests);
    let (mut errors, mut empty) = (0, 0);
    for w in workers {
        let (l, e, m) = w.await?;
        lat.extend(l);
        errors += e;
        empty += m;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let result = serde_json::json!({
        "label": a.label,
        "requests": lat.len(),
        "errors": errors,
        "empty_answers": empty,
        "concurrency": a.concurrency,
        "k": a.k,
        "rps": lat.len() as f64 / secs,
        "p50_ms": crate::pct(&lat, 0.50),
        "p99_ms": crate::pct(&lat, 0.99),
    });
    println!(
        "{:<14} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} errors, {} empty, concurrency {})",
        a.label, result["rps"].as_f64().unwrap_or(0.0), result["p50_ms"].as_f64().unwrap_or(0.0),
        result["p99_ms"].as_f64().unwrap_or(0.0), lat.len(), errors, empty, a.concurrency
    );
    println!("BENCH {result}");
    if errors > 0 {
        anyhow::bail!("{errors} requests failed");
    }
    Ok(())
}
