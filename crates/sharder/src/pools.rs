//! The new-item pools: the two-tower vectors of the items this sharder holds, per model
//! version, ordered by publish time so that a time pool relative to the request time is a range
//! of rows. A search takes the best `k` of each pool by exact inner product
//! (`coldstart_models::flat`). Items more than the longest pool behind the newest item held are
//! evicted (they can be in no pool of any request time that has newer items).

use coldstart_contracts::sharder::{PoolHit, TowerVector, DEFAULT_POOL_HOURS};
use coldstart_models::flat::FlatIndex;
use std::collections::HashMap;

const HOUR_MS: i64 = 3_600_000;

/// One model version's vectors, ordered by publish time (ties by item id).
#[derive(Debug, Default)]
struct Pool {
    index: Option<FlatIndex>,
    keys: Vec<(i64, u64)>,
}

impl Pool {
    fn position(&self, key: (i64, u64)) -> Result<usize, usize> {
        self.keys.binary_search(&key)
    }

    fn remove(&mut self, key: (i64, u64)) {
        if let (Ok(i), Some(index)) = (self.position(key), self.index.as_mut()) {
            index.remove(i);
            self.keys.remove(i);
        }
    }

    /// Rows published in `(from, to]`.
    fn rows(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let start = self.keys.partition_point(|k| k.0 <= from);
        let end = self.keys.partition_point(|k| k.0 <= to);
        start..end.max(start)
    }
}

/// Every version's pool. An item may be in several versions' pools at once (the running model's
/// and a staged one's), under the same publish time.
#[derive(Debug)]
pub struct Pools {
    by_version: HashMap<String, Pool>,
    /// Each pooled item's publish time: the key of its row in every version's pool.
    published: HashMap<u64, i64>,
    newest: i64,
    /// The pools' bounds, hours before the request time, ascending (`sharder.pool_hours`).
    hours: Vec<i64>,
}

impl Default for Pools {
    fn default() -> Self {
        Self::new(DEFAULT_POOL_HOURS.to_vec())
    }
}

/// Why a vector was not put in a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {item}: {reason}")]
pub struct Refused {
    /// The item.
    pub item: u64,
    /// What was wrong.
    pub reason: String,
}

impl Pools {
    /// Empty pools with these bounds (hours, ascending; checked by the config).
    pub fn new(hours: Vec<i64>) -> Self {
        Self {
            by_version: HashMap::new(),
            published: HashMap::new(),
            newest: i64::MIN,
            hours,
        }
    }

    /// The longest pool, ms.
    pub fn window_ms(&self) -> i64 {
        self.hours
            .last()
            .copied()
            .unwrap_or(0)
            .saturating_mul(HOUR_MS)
    }

    /// Puts (or replaces) an item's vector in its version's pool. A vector whose dimension
    /// differs from its version's pool, or with a non-finite value, is refused and changes
    /// nothing. An item published again at another time leaves every pool first.
    pub fn put(&mut self, item: u64, publish_ts: i64, t: &TowerVector) -> Result<(), Refused> {
        if let Some(index) = self
            .by_version
            .get(&t.version)
            .and_then(|p| p.index.as_ref())
        {
            if index.dim() != t.vector.len() {
                return Err(Refused {
                    item,
                    reason: format!(
                        "a vector of {} values for model {}, whose pool holds vectors of {}",
                        t.vector.len(),
                        t.version,
                        index.dim()
                    ),
                });
            }
        }
        if t.vector.iter().any(|x| !x.is_finite()) {
            return Err(Refused {
                item,
                reason: "a vector with a NaN or infinite value".into(),
            });
        }
        if self
            .published
            .get(&item)
            .is_some_and(|&ts| ts != publish_ts)
        {
            self.take(item, None);
        }
        let pool = self.by_version.entry(t.version.clone()).or_default();
        let index = pool
            .index
            .get_or_insert_with(|| FlatIndex::new(t.vector.len()));
        let refused = |e: coldstart_models::Error| Refused {
            item,
            reason: e.to_string(),
        };
        match pool.keys.binary_search(&(publish_ts, item)) {
            Ok(i) => index.set(i, &t.vector).map_err(refused)?,
            Err(at) => {
                index.insert(at, item, &t.vector).map_err(refused)?;
                pool.keys.insert(at, (publish_ts, item));
            }
        }
        self.published.insert(item, publish_ts);
        self.newest = self.newest.max(publish_ts);
        self.evict();
        Ok(())
    }

    /// Builds `version`'s pool from `rows` (item, publish time, vector) at once, sorted instead
    /// of inserted one by one; items already in that pool and not in `rows` (filed while the rows
    /// were computed) stay. Vectors that `put` would refuse are left out. Returns the vectors
    /// filed from `rows`.
    pub fn rebuild(&mut self, version: &str, mut rows: Vec<(u64, i64, Vec<f32>)>) -> usize {
        let dim = match rows.first() {
            Some(r) => r.2.len(),
            None => return 0,
        };
        rows.retain(|r| r.2.len() == dim && r.2.iter().all(|x| x.is_finite()));
        let fresh: std::collections::HashSet<u64> = rows.iter().map(|r| r.0).collect();
        let filed = rows.len();
        if let Some(old) = self.by_version.remove(version) {
            if let Some(index) = old.index.as_ref().filter(|i| i.dim() == dim) {
                for (i, &(ts, id)) in old.keys.iter().enumerate() {
                    if !fresh.contains(&id) {
                        rows.push((id, ts, index.row(i).to_vec()));
                    }
                }
            }
        }
        // an item published again at another time leaves the other versions' pools
        for &(id, ts, _) in &rows {
            if self.published.get(&id).is_some_and(|&t| t != ts) {
                self.take(id, None);
            }
        }
        rows.sort_unstable_by_key(|r| (r.1, r.0));
        rows.dedup_by_key(|r| (r.1, r.0));
        let mut pool = Pool {
            index: Some(FlatIndex::new(dim)),
            keys: Vec::with_capacity(rows.len()),
        };
        if let Some(index) = pool.index.as_mut() {
            for (id, ts, v) in rows {
                // checked above: the dimension and finite values
                if index.push(id, &v).is_ok() {
                    pool.keys.push((ts, id));
                    self.published.insert(id, ts);
                    self.newest = self.newest.max(ts);
                }
            }
        }
        self.by_version.insert(version.to_string(), pool);
        self.evict();
        filed
    }

    /// Takes an item out of `version`'s pool, or out of every pool.
    pub fn take(&mut self, item: u64, version: Option<&str>) {
        let Some(&ts) = self.published.get(&item) else {
            return;
        };
        for (v, pool) in &mut self.by_version {
            if version.is_none_or(|x| x == v) {
                pool.remove((ts, item));
            }
        }
        if version.is_none()
            || !self
                .by_version
                .values()
                .any(|p| p.position((ts, item)).is_ok())
        {
            self.published.remove(&item);
        }
    }

    /// Drops what is older than the longest pool behind the newest item.
    fn evict(&mut self) {
        let floor = self.newest.saturating_sub(self.window_ms());
        for pool in self.by_version.values_mut() {
            let old = pool.keys.partition_point(|k| k.0 <= floor);
            if old == 0 {
                continue;
            }
            for key in pool.keys.drain(..old) {
                self.published.remove(&key.1);
            }
            if let Some(index) = pool.index.as_mut() {
                index.remove_first(old);
            }
        }
    }

    /// Drops the pools of every version not in `keep`.
    pub fn retain_versions(&mut self, keep: &[&str]) {
        self.by_version.retain(|v, _| keep.contains(&v.as_str()));
        let pooled: std::collections::HashSet<u64> = self
            .by_version
            .values()
            .flat_map(|p| p.keys.iter().map(|k| k.1))
            .collect();
        self.published.retain(|i, _| pooled.contains(i));
    }

    /// The versions held.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_version.keys().cloned().collect();
        v.sort();
        v
    }

    /// Vectors held of `version`.
    pub fn len(&self, version: &str) -> usize {
        self.by_version.get(version).map_or(0, |p| p.keys.len())
    }

    /// The dimension of `version`'s vectors, once it holds one.
    pub fn dim(&self, version: &str) -> Option<usize> {
        self.by_version
            .get(version)
            .and_then(|p| p.index.as_ref())
            .map(FlatIndex::dim)
    }

    /// The best `k` items of each time pool at `at` by inner product with `user`, pool by pool,
    /// among those published at or after `since`.
    pub fn search(
        &self,
        version: &str,
        user: &[f32],
        at: i64,
        since: Option<i64>,
        k: usize,
    ) -> coldstart_models::Result<Vec<PoolHit>> {
        let Some(pool) = self.by_version.get(version) else {
            return Ok(Vec::new());
        };
        let Some(index) = &pool.index else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut to = at;
        for (p, hours) in self.hours.iter().enumerate() {
            let from = at.saturating_sub(hours.saturating_mul(HOUR_MS));
            // rows published in (from, to], and not before `since`
            let lower = since.map_or(from, |s| from.max(s.saturating_sub(1)));
            let rows = pool.rows(lower, to);
            to = from;
            if rows.is_empty() {
                continue;
            }
            let hits = index.search(user, k, rows, 1)?;
            for (item, score) in hits.into_iter().flatten() {
                let publish_ts = self.published.get(&item).copied().unwrap_or(0);
                out.push(PoolHit {
                    pool: p as u32,
                    item_id: item,
                    publish_ts,
                    score,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(version: &str, v: &[f32]) -> TowerVector {
        TowerVector {
            version: version.into(),
            vector: v.to_vec(),
        }
    }

    const H: i64 = HOUR_MS;

    #[test]
    fn pools_are_rings_of_age_at_the_request_time() {
        let mut p = Pools::default();
        let now = 1_000 * H;
        // ages 0.5 h, 3 h, 12 h, 10 d, 40 d
        for (item, age, score) in [
            (1, H / 2, 0.1),
            (2, 3 * H, 0.9),
            (3, 12 * H, 0.5),
            (4, 240 * H, 0.7),
            (5, 960 * H, 1.0),
        ] {
            p.put(item, now - age, &tv("t1", &[score, 0.0])).unwrap();
        }
        assert_eq!(
            p.len("t1"),
            4,
            "item 5 is more than 30 d behind the newest: evicted"
        );
        let hits = p.search("t1", &[1.0, 0.0], now, None, 5).unwrap();
        let by: Vec<(u32, u64)> = hits.iter().map(|h| (h.pool, h.item_id)).collect();
        assert_eq!(
            by,
            [(0, 1), (1, 2), (2, 3), (3, 4)],
            "item 5 is older than 30 d"
        );
        // an hour later the 0.5 h item is in the 6 h pool
        let later = p.search("t1", &[1.0, 0.0], now + H, None, 5).unwrap();
        assert!(later.iter().any(|h| h.item_id == 1 && h.pool == 1));
        // before it was published it is in no pool
        let earlier = p.search("t1", &[1.0, 0.0], now - H, None, 5).unwrap();
        assert!(!earlier.iter().any(|h| h.item_id == 1));
        // `since` leaves out what was published before it, whatever the pool
        let since = p
            .search("t1", &[1.0, 0.0], now, Some(now - 12 * H), 5)
            .unwrap();
        let ids: Vec<u64> = since.iter().map(|h| h.item_id).collect();
        assert_eq!(ids, [1, 2, 3], "published 12 h ago or later");
    }

    #[test]
    fn versions_hold_an_item_side_by_side_and_bad_vectors_change_nothing() {
        let mut p = Pools::default();
        p.put(1, 10, &tv("t1", &[1.0, 0.0])).unwrap();
        p.put(1, 10, &tv("t2", &[0.0, 1.0])).unwrap();
        p.put(1, 10, &tv("t2", &[0.0, 2.0])).unwrap();
        assert_eq!(
            (p.len("t1"), p.len("t2")),
            (1, 1),
            "replaced in t2, kept in t1"
        );
        let hit = p.search("t2", &[0.0, 1.0], 11, None, 5).unwrap();
        assert_eq!((hit[0].item_id, hit[0].score), (1, 2.0));
        let e = p.put(2, 11, &tv("t2", &[1.0])).unwrap_err();
        assert!(e.reason.contains("vectors of 2"), "{e}");
        let e = p.put(1, 10, &tv("t2", &[f32::NAN, 1.0])).unwrap_err();
        assert!(e.reason.contains("NaN"), "{e}");
        assert_eq!(p.len("t2"), 1, "the refused update left the item as it was");
        // published again later: it leaves every pool, then joins t2's at the new time
        p.put(1, 20, &tv("t2", &[0.0, 1.0])).unwrap();
        assert_eq!((p.len("t1"), p.len("t2")), (0, 1));
        assert_eq!(
            p.search("t2", &[0.0, 1.0], 21, None, 5).unwrap()[0].publish_ts,
            20
        );
        p.put(3, 20, &tv("t1", &[1.0, 0.0])).unwrap();
        p.take(1, Some("t2"));
        assert_eq!(p.len("t2"), 0);
        p.put(1, 20, &tv("t2", &[0.0, 1.0])).unwrap();
        p.retain_versions(&["t2"]);
        assert_eq!(p.versions(), ["t2"]);
        p.take(1, None);
        assert_eq!(p.len("t2"), 0);
    }

    #[test]
    fn a_rebuild_sorts_at_once_and_keeps_what_was_filed_meanwhile() {
        let mut p = Pools::default();
        p.put(9, 50, &tv("t", &[0.5])).unwrap();
        p.put(1, 10, &tv("t", &[9.0])).unwrap();
        let rows = vec![
            (3, 30, vec![3.0]),
            (1, 10, vec![1.0]),
            (2, 20, vec![f32::NAN]),
            (4, 5, vec![1.0, 2.0]),
        ];
        assert_eq!(p.rebuild("t", rows), 2, "NaN and wrong dimension left out");
        let mut hits: Vec<(u64, f32)> = p
            .search("t", &[1.0], 60, None, 10)
            .unwrap()
            .iter()
            .map(|h| (h.item_id, h.score))
            .collect();
        hits.sort_by_key(|h| h.0);
        assert_eq!(
            hits,
            [(1, 1.0), (3, 3.0), (9, 0.5)],
            "9 was filed meanwhile"
        );
        // the rebuilt pool is ordered by publish time: a later put lands in place
        p.put(5, 25, &tv("t", &[2.0])).unwrap();
        let mut by_26: Vec<u64> = p
            .search("t", &[1.0], 26, None, 10)
            .unwrap()
            .iter()
            .map(|h| h.item_id)
            .collect();
        by_26.sort_unstable();
        assert_eq!(by_26, [1, 5], "published by 26 ms");
        assert_eq!(p.rebuild("u", Vec::new()), 0);
    }

    #[test]
    fn the_bounds_are_the_configured_ones() {
        let mut p = Pools::new(vec![2, 48]);
        let now = 1_000 * H;
        for (item, age) in [(1, H), (2, 30 * H), (3, 47 * H), (4, 49 * H)] {
            p.put(item, now - age, &tv("t", &[1.0])).unwrap();
        }
        assert_eq!(p.len("t"), 3, "item 4 is more than 48 h behind the newest");
        let mut by: Vec<(u32, u64)> = p
            .search("t", &[1.0], now, None, 5)
            .unwrap()
            .iter()
            .map(|h| (h.pool, h.item_id))
            .collect();
        by.sort_unstable();
        assert_eq!(by, [(0, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn items_past_the_longest_pool_behind_the_newest_are_evicted() {
        let mut p = Pools::default();
        p.put(1, 0, &tv("t", &[1.0])).unwrap();
        p.put(2, 720 * H, &tv("t", &[1.0])).unwrap();
        assert_eq!(p.len("t"), 1);
        assert!(p
            .search("t", &[1.0], 720 * H, None, 3)
            .unwrap()
            .iter()
            .all(|h| h.item_id == 2));
    }
}
