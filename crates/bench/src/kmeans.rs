//! `coldstart-bench kmeans`: spherical k-means training and nearest-centroid assignment on
//! synthetic vectors; writes the points and centroids so `xtask/bench/kmeans_faiss.py` runs FAISS
//! on the same data in the same run.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(clap::Args)]
pub struct KmeansBench {
    /// Vectors.
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 64)]
    d: usize,
    /// Clusters.
    #[arg(long, default_value_t = 2048)]
    k: usize,
    /// Lloyd iterations.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Points per matrix product in assignment.
    #[arg(long, default_value_t = coldstart_models::kmeans::KMeansConfig::default().chunk)]
    chunk: usize,
    /// Where to write points.f32 and centroids.f32 (row-major little-endian f32) for a
    /// comparison run on the same data.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Unit vectors around `n / 250` random directions with Gaussian-like noise: clustered, as
/// content vectors are, but not trivially.
pub fn synthetic(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let centres = (n / 250).max(1);
    let unit = |v: &mut [f32]| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    };
    let mut dirs = vec![0f32; centres * d];
    for c in dirs.chunks_mut(d) {
        c.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0));
        unit(c);
    }
    let mut out = vec![0f32; n * d];
    for p in out.chunks_mut(d) {
        let c = rng.random_range(0..centres);
        for (x, m) in p.iter_mut().zip(&dirs[c * d..(c + 1) * d]) {
            // sum of three uniforms: a cheap bell curve
            let noise: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.12;
            *x = m + noise;
        }
        unit(p);
    }
    out
}

pub fn write_f32(path: &std::path::Path, v: &[f32]) -> anyhow::Result<()> {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

pub fn run(a: KmeansBench) -> anyhow::Result<()> {
    use coldstart_models::kmeans::{train, KMeansConfig};
    use indicatif::{ProgressBar, ProgressStyle};
    std::fs::create_dir_all(&a.out)?;
    let t = Instant::now();
    let points = synthetic(a.n, a.d, a.seed);
    write_f32(&a.out.join("points.f32"), &points)?;
    eprintln!(
        "generated {} x {} vectors in {:.1} s",
        a.n,
        a.d,
        t.elapsed().as_secs_f64()
    );
    let cfg = KMeansConfig {
        k: a.k,
        iterations: a.iterations,
        seed: a.seed,
        threads: a.threads,
        chunk: a.chunk,
        ..Default::default()
    };
    let pb = ProgressBar::new(a.iterations as u64);
    pb.set_style(
        ProgressStyle::with_template("k-means [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let t = Instant::now();
    let (centroids, _labels, stats) = train(&points, a.d, &cfg, |s| {
        pb.set_message(format!(
            "objective {:.5}, reseeded {}",
            s.objective, s.reseeded
        ));
        pb.inc(1);
    })?;
    let train_s = t.elapsed().as_secs_f64();
    pb.finish();
    for s in &stats {
        eprintln!(
            "iteration {:>2}: objective {:.6}  reseeded {}",
            s.iteration, s.objective, s.reseeded
        );
    }
    write_f32(&a.out.join("centroids.f32"), &centroids.to_rows())?;
    let objective = coldstart_models::kmeans::objective(&centroids, &points, a.threads)?;
    // assignment throughput: one call for all, batches of 1000, one item at a time
    let t = Instant::now();
    centroids.assign(&points, a.threads, a.chunk)?;
    let all_per_s = a.n as f64 / t.elapsed().as_secs_f64();
    let batch_n = a.n.min(200_000);
    let t = Instant::now();
    for chunk in points[..batch_n * a.d].chunks(1000 * a.d) {
        centroids.assign(chunk, 1, a.chunk)?;
    }
    let batch_per_s = batch_n as f64 / t.elapsed().as_secs_f64();
    let single_n = a.n.min(20_000);
    let t = Instant::now();
    for p in points[..single_n * a.d].chunks(a.d) {
        centroids.assign(p, 1, 1)?;
    }
    let single_per_s = single_n as f64 / t.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "impl": "coldstart", "n": a.n, "d": a.d, "k": a.k, "iterations": a.iterations,
        "train_s": train_s, "objective": objective,
        "assign_all_per_s": all_per_s, "assign_batch1000_per_s": batch_per_s, "assign_single_per_s": single_per_s,
    });
    println!("BENCH {result}");
    Ok(())
}
