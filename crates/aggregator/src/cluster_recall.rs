//! Cluster recall, the ranking part: the user's seed items (last liked, collected, shared) point
//! at clusters; each cluster contributes its newest `m` items; the result is deduplicated and
//! ranked by how many seeds point at the item's cluster, then by recency. The same function
//! serves the online channel and the offline evaluation, so both measure one thing.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Clusters of the seeds, most-pointed-at first (ties: lower cluster id), with their counts.
pub fn rank_clusters<K: Clone + Eq + Hash + Ord>(seed_clusters: &[K]) -> Vec<(K, usize)> {
    let mut counts: HashMap<K, usize> = HashMap::new();
    for c in seed_clusters {
        *counts.entry(c.clone()).or_insert(0) += 1;
    }
    let mut ranked: Vec<(K, usize)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// Items recalled from the seeds' clusters. `newest(cluster, m)` returns a cluster's newest `m`
/// items as (item, publish_ts), newest first; `exclude` holds items not to return (seen).
pub fn recall<K: Clone + Eq + Hash + Ord>(
    seed_clusters: &[K],
    m: usize,
    mut newest: impl FnMut(K, usize) -> Vec<(u64, i64)>,
    exclude: &HashSet<u64>,
) -> Vec<(u64, usize, i64)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(u64, usize, i64)> = Vec::new();
    for (cluster, seeds) in rank_clusters(seed_clusters) {
        for (item, ts) in newest(cluster, m) {
            if !exclude.contains(&item) && seen.insert(item) {
                out.push((item, seeds, ts));
            }
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(b.0.cmp(&a.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_seed_count_then_recency_and_dedups() {
        let lists: HashMap<u32, Vec<(u64, i64)>> = HashMap::from([
            (1, vec![(10, 50), (11, 40), (12, 30)]),
            (2, vec![(20, 99), (10, 50)]),
            (3, vec![(30, 10)]),
        ]);
        let got = recall(
            &[1, 2, 1, 3, 1, 2],
            2,
            |c, m| lists[&c].iter().take(m).copied().collect(),
            &HashSet::from([11]),
        );
        let ids: Vec<u64> = got.iter().map(|x| x.0).collect();
        // cluster 1 (3 seeds): 10 (11 is excluded, 12 is past m); cluster 2 (2 seeds): 20; cluster 3: 30
        assert_eq!(ids, [10, 20, 30]);
        assert_eq!(got[0].1, 3);
    }
}
