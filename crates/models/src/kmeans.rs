//! Spherical (cosine) k-means over unit vectors.
//!
//! Vectors are stored row-major, `n × d`, which nalgebra reads as a column-major `d × n` matrix
//! whose columns are the vectors, so no copy is needed. Assignment is a batched matrix product
//! `Cᵀ · X_chunk` (`k × b` similarities) per chunk of points, chunks spread over all cores;
//! each column's argmax is the point's cluster. The update sums each cluster's members and
//! normalises the sum (the mean direction). Initialisation is k-means++ on a sample; a cluster
//! left empty is re-seeded with the point that fits its centroid worst. With exact assignment and
//! mean-direction updates the objective (mean cosine to the assigned centroid) never decreases.

use crate::{Error, Result};
use nalgebra::{DMatrix, DMatrixView};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Training parameters.
#[derive(Debug, Clone)]
pub struct KMeansConfig {
    /// Clusters.
    pub k: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// Random seed (initialisation and re-seeding).
    pub seed: u64,
    /// Worker threads for assignment (0: all cores).
    pub threads: usize,
    /// Points per matrix product: small enough that the `k × chunk` similarities stay in cache
    /// for the arg-max that follows (256 × 2048 floats is 2 MiB).
    pub chunk: usize,
    /// Points sampled for k-means++ initialisation, per cluster.
    pub init_sample_per_cluster: usize,
    /// Candidates tried per k-means++ step (greedy k-means++; 1 is the classic algorithm).
    pub init_trials: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 2048,
            iterations: 20,
            seed: 1,
            threads: 0,
            chunk: CHUNK,
            init_sample_per_cluster: 8,
            init_trials: 3,
        }
    }
}

/// What one iteration did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationStats {
    /// Iteration number, from 1.
    pub iteration: usize,
    /// Mean cosine similarity of points to their centroid after assignment.
    pub objective: f64,
    /// Empty clusters re-seeded in this iteration.
    pub reseeded: usize,
}

/// Unit-norm centroids, column-major `d × k` (column j is centroid j), with the `k × d`
/// transpose kept beside it for assignment by matrix product.
#[derive(Debug, Clone, PartialEq)]
pub struct Centroids {
    /// The matrix.
    pub matrix: DMatrix<f32>,
    transposed: DMatrix<f32>,
}

impl Centroids {
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.matrix.nrows()
    }

    /// Number of centroids.
    pub fn k(&self) -> usize {
        self.matrix.ncols()
    }

    /// Builds centroids from row-major `k × d` data, normalising each.
    pub fn from_rows(rows: &[f32], d: usize) -> Result<Self> {
        check_shape(rows, d)?;
        let mut matrix = DMatrix::from_column_slice(d, rows.len() / d, rows);
        for mut c in matrix.column_iter_mut() {
            let n = c.norm();
            if !n.is_finite() || n <= f32::EPSILON {
                return Err(Error::NoDirection { norm: n });
            }
            c /= n;
        }
        Ok(Self::new(matrix))
    }

    fn new(matrix: DMatrix<f32>) -> Self {
        let transposed = matrix.transpose();
        Self { matrix, transposed }
    }

    /// Row-major `k × d` copy (centroid after centroid).
    pub fn to_rows(&self) -> Vec<f32> {
        self.matrix.as_slice().to_vec()
    }

    /// Nearest centroid of every point (row-major `n × d`) and its cosine similarity.
    pub fn assign(
        &self,
        points: &[f32],
        threads: usize,
        chunk: usize,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        check_shape(points, self.dim())?;
        Ok(assign(&self.transposed, points, threads, chunk))
    }
}

fn check_shape(data: &[f32], d: usize) -> Result<()> {
    if d == 0 || !data.len().is_multiple_of(d) {
        return Err(Error::DimensionMismatch {
            left: data.len(),
            right: d,
        });
    }
    Ok(())
}

/// `n` threads, or every core for 0.
pub(crate) fn threads(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Points per matrix product in assignment, unless configured: small enough that the
/// `k × chunk` similarities stay in cache for the arg-max that follows (2 MiB at k = 2048).
pub const CHUNK: usize = 256;

/// Lanes of [`argmax`]: wide enough for two SSE or one AVX register of f32.
const LANES: usize = 8;

/// The index and value of the first maximum of `v` (`(0, -inf)` when empty or all NaN). Branch
/// free over `LANES` independent lanes so that it vectorises: a scalar loop with a data-dependent
/// branch took as long as the matrix product it follows.
fn argmax(v: &[f32]) -> (u32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { argmax_avx2(v) };
    }
    argmax_lanes(v)
}

/// [`argmax_lanes`] compiled for AVX2 (the default target has only SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn argmax_avx2(v: &[f32]) -> (u32, f32) {
    argmax_lanes(v)
}

#[inline(always)]
fn argmax_lanes(v: &[f32]) -> (u32, f32) {
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut arg = [0u32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        let base = (c * LANES) as u32;
        for l in 0..LANES {
            let better = chunk[l] > best[l];
            best[l] = if better { chunk[l] } else { best[l] };
            arg[l] = if better { base + l as u32 } else { arg[l] };
        }
    }
    // lanes hold the first maximum of their own positions; the smallest index wins a tie
    let (mut b, mut a) = (f32::NEG_INFINITY, 0u32);
    for l in 0..LANES {
        if best[l] > b || (best[l] == b && arg[l] < a) {
            b = best[l];
            a = arg[l];
        }
    }
    let offset = v.len() - tail.len();
    for (i, &x) in tail.iter().enumerate() {
        if x > b {
            b = x;
            a = (offset + i) as u32;
        }
    }
    (a, b)
}

/// Assigns `points` (row-major `n × d`) to the nearest rows of `ct` (`k × d`): one sgemm per
/// chunk of points into a score buffer reused per thread, chunks split over `threads` scoped
/// threads (inline when one suffices).
fn assign(
    ct: &DMatrix<f32>,
    points: &[f32],
    threads_n: usize,
    chunk: usize,
) -> (Vec<u32>, Vec<f32>) {
    let (k, d) = ct.shape();
    let n = points.len() / d.max(1);
    let mut labels = vec![0u32; n];
    let mut sims = vec![f32::NEG_INFINITY; n];
    if n == 0 || k == 0 {
        return (labels, sims);
    }
    let chunk = chunk.max(1);
    let workers = threads(threads_n).min(n.div_ceil(chunk)).max(1);
    let per = n.div_ceil(workers);
    let run = |pts: &[f32], lab: &mut [u32], sim: &mut [f32]| {
        let m = pts.len() / d;
        let mut scores = DMatrix::<f32>::zeros(k, chunk.min(m));
        let mut start = 0;
        while start < m {
            let b = chunk.min(m - start);
            let x = DMatrixView::from_slice(&pts[start * d..(start + b) * d], d, b);
            let mut out = scores.columns_mut(0, b);
            out.gemm(1.0, ct, &x, 0.0); // k × b similarities
            for (j, col) in out.column_iter().enumerate() {
                let (arg, best) = argmax(col.as_slice());
                lab[start + j] = arg;
                sim[start + j] = best;
            }
            start += b;
        }
    };
    if workers == 1 {
        // small calls (one item, one batch) run inline: a thread per call would cost more
        run(points, &mut labels, &mut sims);
    } else {
        std::thread::scope(|s| {
            for ((pts, lab), sim) in points
                .chunks(per * d)
                .zip(labels.chunks_mut(per))
                .zip(sims.chunks_mut(per))
            {
                s.spawn(move || run(pts, lab, sim));
            }
        });
    }
    (labels, sims)
}

/// Greedy k-means++ seeding on a sample: each next centroid is chosen among `trials` candidates
/// drawn with probability proportional to their cosine distance `1 - max cos` to the centroids so
/// far (the squared Euclidean distance on the sphere, halved); the candidate that lowers the total
/// distance most wins. The sample is copied once into an `s × d` matrix so that each step scores
/// all its candidates against the whole sample with one matrix product.
fn init_plus_plus(
    points: &[f32],
    d: usize,
    k: usize,
    sample: usize,
    trials: usize,
    rng: &mut SmallRng,
) -> DMatrix<f32> {
    let n = points.len() / d;
    let idx: Vec<usize> = if sample >= n {
        (0..n).collect()
    } else {
        (0..sample).map(|_| rng.random_range(0..n)).collect()
    };
    let s = idx.len();
    let row = |i: usize| &points[i * d..(i + 1) * d];
    let sample_rows: Vec<f32> = idx.iter().flat_map(|&i| row(i).iter().copied()).collect();
    let sm = DMatrix::from_row_slice(s, d, &sample_rows); // s × d
    let trials = trials.max(1);
    let mut c = DMatrix::<f32>::zeros(d, k);
    let mut dist = vec![f32::INFINITY; s];
    let mut cand = DMatrix::<f32>::zeros(d, trials);
    let mut sims = DMatrix::<f32>::zeros(s, trials);
    let mut next = rng.random_range(0..s);
    for j in 0..k {
        c.column_mut(j).copy_from_slice(row(idx[next]));
        // distances to the new centroid: one matrix-vector product
        let mut col = sims.column_mut(0);
        col.gemv(1.0, &sm, &c.column(j), 0.0);
        let mut total = 0.0f64;
        for (t, dt) in dist.iter_mut().enumerate() {
            *dt = dt.min((1.0 - sims[(t, 0)]).max(0.0));
            total += *dt as f64;
        }
        if j + 1 == k {
            break;
        }
        if total <= 0.0 {
            next = rng.random_range(0..s);
            continue;
        }
        let mut picks = Vec::with_capacity(trials);
        for t in 0..trials {
            let mut r = rng.random_range(0.0..total);
            let mut pick = s - 1;
            for (q, &dq) in dist.iter().enumerate() {
                r -= dq as f64;
                if r <= 0.0 {
                    pick = q;
                    break;
                }
            }
            cand.column_mut(t).copy_from_slice(row(idx[pick]));
            picks.push(pick);
        }
        sims.gemm(1.0, &sm, &cand, 0.0); // s × trials
        let mut best = (f64::INFINITY, picks[0]);
        for (t, &pick) in picks.iter().enumerate() {
            let potential: f64 = dist
                .iter()
                .enumerate()
                .map(|(q, &dq)| dq.min((1.0 - sims[(q, t)]).max(0.0)) as f64)
                .sum();
            if potential < best.0 {
                best = (potential, pick);
            }
        }
        next = best.1;
    }
    c
}

/// Trains `cfg.k` centroids on `points` (row-major `n × d`, unit vectors, `n ≥ k`). Calls
/// `on_iteration` after each iteration. Returns the centroids, the final assignment and the
/// per-iteration stats.
pub fn train(
    points: &[f32],
    d: usize,
    cfg: &KMeansConfig,
    mut on_iteration: impl FnMut(&IterationStats),
) -> Result<(Centroids, Vec<u32>, Vec<IterationStats>)> {
    check_shape(points, d)?;
    let n = points.len() / d;
    if cfg.k == 0 || n < cfg.k {
        return Err(Error::TooFewPoints {
            points: n,
            k: cfg.k,
        });
    }
    if let Some(i) = points.iter().position(|x| !x.is_finite()) {
        return Err(Error::NotFinite { index: i });
    }
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let sample = (cfg.k * cfg.init_sample_per_cluster.max(1)).max(cfg.k);
    let mut c = init_plus_plus(points, d, cfg.k, sample, cfg.init_trials, &mut rng);
    let mut stats = Vec::with_capacity(cfg.iterations);
    let mut labels = Vec::new();
    for it in 1..=cfg.iterations.max(1) {
        let (lab, sims) = assign(&c.transpose(), points, cfg.threads, cfg.chunk);
        let objective = sims.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
        // update: sum members, normalise
        let mut sums = DMatrix::<f32>::zeros(d, cfg.k);
        let mut counts = vec![0usize; cfg.k];
        for (i, &l) in lab.iter().enumerate() {
            let mut col = sums.column_mut(l as usize);
            for (a, b) in col.iter_mut().zip(&points[i * d..(i + 1) * d]) {
                *a += b;
            }
            counts[l as usize] += 1;
        }
        // re-seed empty clusters with the worst-fitting points, each point used once
        let empty: Vec<usize> = (0..cfg.k).filter(|&j| counts[j] == 0).collect();
        if !empty.is_empty() {
            let mut worst: Vec<usize> = (0..n).collect();
            let take = empty.len().min(n);
            worst.select_nth_unstable_by(take - 1, |&a, &b| sims[a].total_cmp(&sims[b]));
            for (&j, &i) in empty.iter().zip(&worst[..take]) {
                sums.column_mut(j)
                    .copy_from_slice(&points[i * d..(i + 1) * d]);
            }
        }
        for (j, mut col) in sums.column_iter_mut().enumerate() {
            let norm = col.norm();
            if norm > f32::EPSILON {
                col /= norm;
            } else {
                // members cancel out exactly: keep the previous direction
                col.copy_from(&c.column(j));
            }
        }
        c = sums;
        let s = IterationStats {
            iteration: it,
            objective,
            reseeded: empty.len(),
        };
        on_iteration(&s);
        stats.push(s);
        labels = lab;
    }
    let centroids = Centroids::new(c);
    // labels of the final centroids
    let (final_labels, _) = assign(&centroids.transposed, points, cfg.threads, cfg.chunk);
    if labels.is_empty() {
        labels = final_labels;
    } else {
        labels.copy_from_slice(&final_labels);
    }
    Ok((centroids, labels, stats))
}

/// Mean cosine of points to their nearest centroid.
pub fn objective(centroids: &Centroids, points: &[f32], threads: usize) -> Result<f64> {
    let (_, sims) = centroids.assign(points, threads, 4096)?;
    Ok(sims.iter().map(|&s| s as f64).sum::<f64>() / sims.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest, ProptestConfig};

    /// `per` noisy points around each of `centres` random unit directions in `d` dimensions.
    fn blobs(
        centres: usize,
        per: usize,
        d: usize,
        noise: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<usize>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        // orthonormal centres (Gram-Schmidt) while they fit, so blobs really are apart
        let mut dirs: Vec<Vec<f32>> = Vec::new();
        for _ in 0..centres {
            let mut v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            if dirs.len() < d {
                for u in &dirs {
                    let p: f32 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
                }
            }
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            dirs.push(v);
        }
        let (mut pts, mut truth) = (Vec::new(), Vec::new());
        for (c, dir) in dirs.iter().enumerate() {
            for _ in 0..per {
                let mut v: Vec<f32> = dir
                    .iter()
                    .map(|x| x + rng.random_range(-noise..noise))
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                pts.extend(v);
                truth.push(c);
            }
        }
        (pts, truth)
    }

    #[test]
    fn recovers_separated_blobs() {
        for seed in 0..5 {
            let (pts, truth) = blobs(8, 200, 16, 0.15, 3 + seed);
            let cfg = KMeansConfig {
                k: 8,
                iterations: 10,
                seed,
                threads: 2,
                chunk: 100,
                ..Default::default()
            };
            let (c, labels, stats) = train(&pts, 16, &cfg, |_| {}).unwrap();
            // every blob maps to one cluster, and clusters to one blob
            let mut map = std::collections::HashMap::new();
            for (l, t) in labels.iter().zip(&truth) {
                assert_eq!(
                    *map.entry(*t).or_insert(*l),
                    *l,
                    "seed {seed}: blob {t} split"
                );
            }
            assert_eq!(
                map.values().collect::<std::collections::HashSet<_>>().len(),
                8
            );
            assert!(stats.last().unwrap().objective > 0.9, "{stats:?}");
            for col in c.matrix.column_iter() {
                assert!((col.norm() - 1.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn batched_parallel_assignment_equals_brute_force() {
        let (pts, _) = blobs(5, 61, 8, 0.8, 9);
        let c = Centroids::from_rows(&pts[..7 * 8], 8).unwrap();
        let (labels, sims) = c.assign(&pts, 3, 17).unwrap();
        for i in 0..pts.len() / 8 {
            let p = &pts[i * 8..(i + 1) * 8];
            let (best, sim) = (0..7)
                .map(|j| {
                    (
                        j,
                        c.matrix
                            .column(j)
                            .iter()
                            .zip(p)
                            .map(|(a, b)| a * b)
                            .sum::<f32>(),
                    )
                })
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, x| if x.1 > acc.1 { x } else { acc },
                );
            assert_eq!(labels[i] as usize, best);
            assert!((sims[i] - sim).abs() < 1e-5);
        }
    }

    #[test]
    fn argmax_is_the_first_maximum() {
        let mut rng = SmallRng::seed_from_u64(3);
        for len in 0..40 {
            let v: Vec<f32> = (0..len).map(|_| (rng.random_range(0..5)) as f32).collect();
            let mut want = (0u32, f32::NEG_INFINITY);
            for (i, &x) in v.iter().enumerate() {
                if x > want.1 {
                    want = (i as u32, x);
                }
            }
            assert_eq!(argmax(&v), want, "{v:?}");
        }
    }

    #[test]
    fn refuses_impossible_inputs() {
        let cfg = KMeansConfig {
            k: 4,
            iterations: 2,
            ..Default::default()
        };
        assert!(matches!(
            train(&[1.0, 0.0, 0.0, 1.0], 2, &cfg, |_| {}),
            Err(Error::TooFewPoints { .. })
        ));
        assert!(matches!(
            train(&[1.0, 0.0, 0.0], 2, &cfg, |_| {}),
            Err(Error::DimensionMismatch { .. })
        ));
        let mut pts = vec![1.0f32; 16];
        pts[5] = f32::NAN;
        assert!(matches!(
            train(&pts, 2, &cfg, |_| {}),
            Err(Error::NotFinite { index: 5 })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn objective_never_decreases_and_no_cluster_stays_empty(seed in 0u64..1000, k in 2usize..12) {
            let (pts, _) = blobs(6, 30, 8, 0.6, seed);
            let cfg = KMeansConfig { k, iterations: 6, seed, threads: 2, chunk: 32, ..Default::default() };
            let (c, labels, stats) = train(&pts, 8, &cfg, |_| {}).unwrap();
            for w in stats.windows(2) {
                prop_assert!(w[1].objective >= w[0].objective - 1e-5, "{:?}", stats);
            }
            let used: std::collections::HashSet<u32> = labels.iter().copied().collect();
            prop_assert_eq!(used.len(), k, "every cluster has members");
            prop_assert_eq!(c.k(), k);
        }
    }
}
