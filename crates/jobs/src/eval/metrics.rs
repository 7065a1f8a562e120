//! Ranking metrics with binary relevance: Recall@K, NDCG@K and coverage, and their exact
//! expectation under a uniformly random order of the candidates.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// The item a ranking would show at the coverage cutoff.
pub const COVERAGE_K: usize = 50;

fn dcg_weight(rank0: usize) -> f64 {
    1.0 / (rank0 as f64 + 2.0).log2()
}

/// Recall@k of one ranking.
pub fn recall_at(ranked: &[u64], relevant: &HashSet<u64>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    ranked
        .iter()
        .take(k)
        .filter(|i| relevant.contains(i))
        .count() as f64
        / relevant.len() as f64
}

/// NDCG@k of one ranking (binary relevance).
pub fn ndcg_at(ranked: &[u64], relevant: &HashSet<u64>, k: usize) -> f64 {
    let ideal: f64 = (0..relevant.len().min(k)).map(dcg_weight).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, i)| relevant.contains(i))
        .map(|(r, _)| dcg_weight(r))
        .sum();
    dcg / ideal
}

/// One method's figures on one task.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scores {
    /// Mean Recall@K per K.
    pub recall: BTreeMap<usize, f64>,
    /// Mean NDCG@K per K.
    pub ndcg: BTreeMap<usize, f64>,
    /// Share of the candidate pool that appears in at least one user's top [`COVERAGE_K`].
    pub coverage: f64,
    /// Users averaged over.
    pub users: usize,
}

/// Sums a method's figures over users.
#[derive(Debug, Clone)]
pub struct Accumulator {
    ks: Vec<usize>,
    recall: Vec<f64>,
    ndcg: Vec<f64>,
    covered: HashSet<u64>,
    users: usize,
    /// Expected coverage misses (random): product over users of P(an item is missed).
    log_miss: f64,
    random: bool,
}

impl Accumulator {
    /// Empty, for cutoffs `ks`.
    pub fn new(ks: &[usize]) -> Self {
        Self {
            ks: ks.to_vec(),
            recall: vec![0.0; ks.len()],
            ndcg: vec![0.0; ks.len()],
            covered: HashSet::new(),
            users: 0,
            log_miss: 0.0,
            random: false,
        }
    }

    /// Adds one user's ranking.
    pub fn add(&mut self, ranked: &[u64], relevant: &HashSet<u64>) {
        for (i, &k) in self.ks.iter().enumerate() {
            self.recall[i] += recall_at(ranked, relevant, k);
            self.ndcg[i] += ndcg_at(ranked, relevant, k);
        }
        self.covered.extend(ranked.iter().take(COVERAGE_K).copied());
        self.users += 1;
    }

    /// Adds the exact expectation for a user whose `candidates` are put in a uniformly random
    /// order: each position holds a relevant item with probability R/N.
    pub fn add_random(&mut self, candidates: usize, relevant: usize) {
        self.random = true;
        let n = candidates.max(1) as f64;
        for (i, &k) in self.ks.iter().enumerate() {
            let shown = k.min(candidates);
            if relevant > 0 {
                self.recall[i] += shown as f64 / n;
                let ideal: f64 = (0..relevant.min(k)).map(dcg_weight).sum();
                let dcg: f64 = (0..shown).map(dcg_weight).sum::<f64>() * relevant as f64 / n;
                self.ndcg[i] += dcg / ideal;
            }
        }
        let p_miss = 1.0 - COVERAGE_K.min(candidates) as f64 / n;
        self.log_miss += p_miss.max(f64::MIN_POSITIVE).ln();
        self.users += 1;
    }

    /// The means, with coverage over a pool of `pool` items.
    pub fn finish(&self, pool: usize) -> Scores {
        let u = self.users.max(1) as f64;
        let coverage = if self.random {
            1.0 - self.log_miss.exp()
        } else {
            self.covered.len() as f64 / pool.max(1) as f64
        };
        Scores {
            recall: self
                .ks
                .iter()
                .zip(&self.recall)
                .map(|(&k, s)| (k, s / u))
                .collect(),
            ndcg: self
                .ks
                .iter()
                .zip(&self.ndcg)
                .map(|(&k, s)| (k, s / u))
                .collect(),
            coverage,
            users: self.users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    #[test]
    fn recall_and_ndcg_of_known_rankings() {
        let rel: HashSet<u64> = [1, 2].into();
        assert_eq!(recall_at(&[1, 9, 2], &rel, 2), 0.5);
        assert_eq!(ndcg_at(&[1, 2, 9], &rel, 3), 1.0);
        let n = ndcg_at(&[9, 1], &rel, 2);
        let want = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((n - want).abs() < 1e-12);
    }

    /// The exact expectation agrees with the mean over many shuffles.
    #[test]
    fn random_expectation_matches_simulation() {
        let ks = [3, 10];
        let (n, rel) = (12u64, [2u64, 5, 7]);
        let relevant: HashSet<u64> = rel.into();
        let mut exact = Accumulator::new(&ks);
        exact.add_random(n as usize, rel.len());
        let exact = exact.finish(n as usize);
        let mut sim = Accumulator::new(&ks);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut order: Vec<u64> = (0..n).collect();
        for _ in 0..40_000 {
            order.shuffle(&mut rng);
            sim.add(&order, &relevant);
        }
        let sim = sim.finish(n as usize);
        for k in ks {
            assert!(
                (exact.recall[&k] - sim.recall[&k]).abs() < 0.01,
                "{exact:?} {sim:?}"
            );
            assert!(
                (exact.ndcg[&k] - sim.ndcg[&k]).abs() < 0.01,
                "{exact:?} {sim:?}"
            );
        }
    }
}
