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

/// Every version's pool.
#[derive(Debug)]
pub struct Pools {
    by_version: HashMap<String, Pool>,
    /// Where each item is: its version and publish time.
    at: HashMap<u64, (String, i64)>,
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
            at: HashMap::new(),
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

    /// Puts (or moves) an item's vector; `None` takes it out of every pool. A vector whose
    /// dimension differs from its version's pool, or with a non-finite value, is refused and
    /// changes nothing.
    pub fn upsert(
        &mut self,
        item: u64,
        publish_ts: i64,
        tower: Option<&TowerVector>,
    ) -> Result<(), Refused> {
        if let Some(t) = tower {
            let pool = self.by_version.entry(t.version.clone()).or_default();
            if let Some(index) = &pool.index {
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
        }
        if let Some((version, ts)) = self.at.remove(&item) {
            if let Some(p) = self.by_version.get_mut(&version) {
                p.remove((ts, item));
            }
        }
        let Some(t) = tower else {
            return Ok(());
        };
        let pool = self.by_version.entry(t.version.clone()).or_default();
        let at = pool.position((publish_ts, item)).unwrap_or_else(|i| i);
        let index = pool
            .index
            .get_or_insert_with(|| FlatIndex::new(t.vector.len()));
        index.insert(at, item, &t.vector).map_err(|e| Refused {
            item,
            reason: e.to_string(),
        })?;
        pool.keys.insert(at, (publish_ts, item));
        self.at.insert(item, (t.version.clone(), publish_ts));
        self.newest = self.newest.max(publish_ts);
        self.evict();
        Ok(())
    }

    /// Drops what is older than the longest pool behind the newest item.
    fn evict(&mut self) {
        let floor = self.newest.saturating_sub(self.window_ms());
        for pool in self.by_version.values_mut() {
            let old = pool.keys.partition_point(|k| k.0 <= floor);
            for key in pool.keys.drain(..old).collect::<Vec<_>>() {
                self.at.remove(&key.1);
                if let Some(index) = pool.index.as_mut() {
                    index.remove(0);
                }
            }
        }
    }

    /// Drops every version's pool but `version`'s.
    pub fn retain_version(&mut self, version: &str) {
        self.by_version.retain(|v, _| v == version);
        self.at.retain(|_, (v, _)| v == version);
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

    /// The best `k` items of each time pool at `at` by inner product with `user`, pool by pool.
    pub fn search(
        &self,
        version: &str,
        user: &[f32],
        at: i64,
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
            let rows = pool.rows(from, to);
            to = from;
            if rows.is_empty() {
                continue;
            }
            let hits = index.search(user, k, rows, 1)?;
            for (item, score) in hits.into_iter().flatten() {
                let publish_ts = self.at.get(&item).map_or(0, |x| x.1);
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
            p.upsert(item, now - age, Some(&tv("t1", &[score, 0.0])))
                .unwrap();
        }
        assert_eq!(
            p.len("t1"),
            4,
            "item 5 is more than 30 d behind the newest: evicted"
        );
        let hits = p.search("t1", &[1.0, 0.0], now, 5).unwrap();
        let by: Vec<(u32, u64)> = hits.iter().map(|h| (h.pool, h.item_id)).collect();
        assert_eq!(
            by,
            [(0, 1), (1, 2), (2, 3), (3, 4)],
            "item 5 is older than 30 d"
        );
        // an hour later the 0.5 h item is in the 6 h pool
        let later = p.search("t1", &[1.0, 0.0], now + H, 5).unwrap();
        assert!(later.iter().any(|h| h.item_id == 1 && h.pool == 1));
        // before it was published it is in no pool
        let earlier = p.search("t1", &[1.0, 0.0], now - H, 5).unwrap();
        assert!(!earlier.iter().any(|h| h.item_id == 1));
    }

    #[test]
    fn an_item_moves_when_its_vector_changes_and_bad_vectors_change_nothing() {
        let mut p = Pools::default();
        p.upsert(1, 10, Some(&tv("t1", &[1.0, 0.0]))).unwrap();
        p.upsert(1, 10, Some(&tv("t2", &[0.0, 1.0]))).unwrap();
        assert_eq!((p.len("t1"), p.len("t2")), (0, 1));
        let e = p.upsert(2, 11, Some(&tv("t2", &[1.0]))).unwrap_err();
        assert!(e.reason.contains("vectors of 2"), "{e}");
        let e = p
            .upsert(1, 10, Some(&tv("t2", &[f32::NAN, 1.0])))
            .unwrap_err();
        assert!(e.reason.contains("NaN"), "{e}");
        assert_eq!(
            p.len("t2"),
            1,
            "the refused update left the item where it was"
        );
        p.upsert(1, 10, None).unwrap();
        assert_eq!(p.len("t2"), 0);
    }

    #[test]
    fn the_bounds_are_the_configured_ones() {
        let mut p = Pools::new(vec![2, 48]);
        let now = 1_000 * H;
        for (item, age) in [(1, H), (2, 30 * H), (3, 47 * H), (4, 49 * H)] {
            p.upsert(item, now - age, Some(&tv("t", &[1.0]))).unwrap();
        }
        assert_eq!(p.len("t"), 3, "item 4 is more than 48 h behind the newest");
        let mut by: Vec<(u32, u64)> = p
            .search("t", &[1.0], now, 5)
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
        p.upsert(1, 0, Some(&tv("t", &[1.0]))).unwrap();
        p.upsert(2, 720 * H, Some(&tv("t", &[1.0]))).unwrap();
        assert_eq!(p.len("t"), 1);
        assert!(p
            .search("t", &[1.0], 720 * H, 3)
            .unwrap()
            .iter()
            .all(|h| h.item_id == 2));
    }
}
