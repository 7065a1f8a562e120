//! `coldstart-bench pools`: exact top-k inner-product search over a pool of vectors, one query
//! at a time and in batches, on clustered unit vectors; writes the pool and the queries so that
//! `xtask/bench/pools_faiss.py` runs FAISS `IndexFlatIP` on the same data and threads in the
//! same run, and our top ids so that the two answers can be compared.

use crate::kmeans::{synthetic, write_f32};
use coldstart_models::flat::FlatIndex;
use std::time::Instant;

#[derive(clap::Args)]
pub struct PoolsBench {
    /// Pool vectors.
    #[arg(long, default_value_t = 200_000)]
    n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 64)]
    d: usize,
    /// Hits per query.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// Queries (run one at a time, then in batches).
    #[arg(long, default_value_t = 2048)]
    queries: usize,
    /// Queries per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where to write pool.f32, queries.f32 and ours.u64 (the first 100 queries' top ids).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 3)]
    seed: u64,
}

pub fn run(a: PoolsBench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let pool = synthetic(a.n, a.d, a.seed);
    let queries = synthetic(a.queries, a.d, a.seed + 1);
    write_f32(&a.out.join("pool.f32"), &pool)?;
    write_f32(&a.out.join("queries.f32"), &queries)?;
    let mut idx = FlatIndex::new(a.d);
    for (i, v) in pool.chunks(a.d).enumerate() {
        idx.push(i as u64, v)?;
    }
    let rows = 0..idx.len();
    // warm-up
    idx.search(&queries[..a.d], a.k, rows.clone(), a.threads)?;
    let t = Instant::now();
    let mut single = Vec::with_capacity(a.queries);
    for q in queries.chunks(a.d) {
        single.extend(idx.search(q, a.k, rows.clone(), a.threads)?);
    }
    let single_qps = a.queries as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut batched = Vec::with_capacity(a.queries);
    for qs in queries.chunks(a.d * a.batch.max(1)) {
        batched.extend(idx.search(qs, a.k, rows.clone(), a.threads)?);
    }
    let batch_qps = a.queries as f64 / t.elapsed().as_secs_f64();
    // the two paths round differently (a matrix-vector against a matrix-matrix product), so
    // near-ties at the k-th place may swap; anything more is a bug
    let same: usize = single
        .iter()
        .zip(&batched)
        .map(|(a, b)| {
            let b: std::collections::HashSet<u64> = b.iter().map(|h| h.0).collect();
            a.iter().filter(|h| b.contains(&h.0)).count()
        })
        .sum();
    let agreement = same as f64 / (a.queries * a.k).max(1) as f64;
    if agreement < 0.999 {
        anyhow::bail!("one-at-a-time and batched answers agree on only {agreement:.4} of the ids");
    }
    let mut ids = Vec::new();
    for hits in single.iter().take(100) {
        ids.extend(hits.iter().map(|h| h.0));
    }
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(a.out.join("ours.u64"), bytes)?;
    let result = serde_json::json!({
        "impl": "coldstart", "n": a.n, "d": a.d, "k": a.k, "queries": a.queries, "batch": a.batch,
        "single_qps": single_qps, "batch_qps": batch_qps,
    });
    println!("BENCH {result}");
    Ok(())
}
