//! `coldstart-bench`: the benchmarks `cargo xtask bench` drives, kept out of the production
//! binary (it links a Redis client for the comparison). Each prints a human table and one
//! `BENCH {json}` line for xtask.

mod cluster_recall;
mod kmeans;
mod pools;
mod recall;
mod restart;
mod two_tower;

use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "coldstart-bench",
    about = "coldstart benchmarks (run through cargo xtask bench)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Recall load over HTTP.
    Recall(recall::RecallBench),
    /// Spherical k-means training and nearest-centroid assignment on synthetic vectors.
    Kmeans(kmeans::KmeansBench),
    /// Cluster-recall reads from the sharders against the same lists in Redis.
    ClusterRecall(cluster_recall::ClusterRecallBench),
    /// Exact top-k inner-product search over a vector pool, one query at a time and batched.
    Pools(pools::PoolsBench),
    /// Training time of the two-tower model on a synthetic event log.
    TwoTower(two_tower::TwoTowerBench),
    /// A sharder's restart: replaying a log of so many postings.
    Restart(restart::RestartBench),
}

/// The `p` quantile of sorted latencies, in ms.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Recall(a) => rt.block_on(recall::run(a)),
        Cmd::Kmeans(a) => kmeans::run(a),
        Cmd::ClusterRecall(a) => rt.block_on(cluster_recall::run(a)),
        Cmd::Pools(a) => pools::run(a),
        Cmd::TwoTower(a) => two_tower::run(a),
        Cmd::Restart(a) => restart::run(a),
    }
}
