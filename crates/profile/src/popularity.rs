//! Popularity boards: the most engaged items, overall and per user group, as of any request time.
//!
//! An item's popularity at time `at` is its weighted engagement with every event halved per
//! half-life `H` of age: `Σ w_e · 2^(-(at - t_e) / H)`. Because every term decays at the same rate,
//! the order of two items does not depend on `at`, so a board keeps its items sorted once, by the
//! key `log2(w) + (t - t0) / H` (forward decay: `w` is the item's sum decayed to its own last event
//! time `t`, `t0` the board's first event), and a read at any `at` walks the top of that order and
//! turns keys into scores with `2^(key - (at - t0) / H)`. Only differences of timestamps enter,
//! so shifting every timestamp (and `at`) by a constant gives the same answers bit for bit.
//!
//! A board holds at most `capacity` items; past that the least popular is dropped (its key is the
//! lowest, and stays below the others' for every `at`). Events later than a read's `at` count as
//! if they had happened at `at`: replays load the log up to their request time.

use std::collections::{BTreeSet, HashMap};

/// The sort key: total order on the forward-decay key, then the item id, so ties break the same
/// way in every run — and the way recall's merge breaks them (the higher id first).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64, u64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    /// Ascending popularity, then ascending id: walking the set from its top returns equals by
    /// descending id, and eviction from its bottom drops the lower id first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Engagement decayed to `t`.
    w: f64,
    /// The item's newest event, ms.
    t: i64,
    publish_ts: i64,
    key: f64,
}

/// One board: items by decayed engagement.
#[derive(Debug, Default)]
pub struct Board {
    t0: Option<i64>,
    items: HashMap<u64, Entry>,
    order: BTreeSet<Key>,
}

impl Board {
    fn key(&self, w: f64, t: i64, half_life_ms: f64) -> f64 {
        w.log2() + (t - self.t0.unwrap_or(t)) as f64 / half_life_ms
    }

    /// Adds an event of weight `w > 0` at `ts` on `item`.
    fn add(&mut self, item: u64, publish_ts: i64, w: f64, ts: i64, hl: f64, capacity: usize) {
        if self.t0.is_none() {
            self.t0 = Some(ts);
        }
        let (nw, nt) = match self.items.get(&item) {
            Some(e) => {
                self.order.remove(&Key(e.key, item));
                if ts >= e.t {
                    (e.w * 0.5f64.powf((ts - e.t) as f64 / hl) + w, ts)
                } else {
                    (e.w + w * 0.5f64.powf((e.t - ts) as f64 / hl), e.t)
                }
            }
            None => (w, ts),
        };
        let key = self.key(nw, nt, hl);
        self.items.insert(
            item,
            Entry {
                w: nw,
                t: nt,
                publish_ts,
                key,
            },
        );
        self.order.insert(Key(key, item));
        while self.items.len() > capacity {
            let Some(lowest) = self.order.pop_first() else {
                break;
            };
            self.items.remove(&lowest.1);
        }
    }

    /// The `limit` most popular items at `at`: (item, publish_ts, score), best first, ties by
    /// descending item id.
    pub fn top(&self, at: i64, limit: usize, hl: f64) -> Vec<(u64, i64, f64)> {
        let Some(t0) = self.t0 else {
            return Vec::new();
        };
        let shift = (at - t0) as f64 / hl;
        self.order
            .iter()
            .rev()
            .take(limit)
            .map(|k| {
                let e = &self.items[&k.1];
                (k.1, e.publish_ts, (k.0 - shift).exp2())
            })
            .collect()
    }

    /// Items on the board.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no item is on the board.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The overall board (group `""`) and one per user group.
#[derive(Debug)]
pub struct Popularity {
    half_life_ms: f64,
    capacity: usize,
    boards: HashMap<String, Board>,
}

impl Popularity {
    /// Empty boards.
    pub fn new(half_life_h: f64, capacity: usize) -> Self {
        Self {
            half_life_ms: half_life_h * 3_600_000.0,
            capacity: capacity.max(1),
            boards: HashMap::new(),
        }
    }

    /// Counts an engagement of weight `w` (> 0) at `ts` on the overall board and, when the user
    /// has a group, on the group's.
    pub fn add(&mut self, group: Option<&str>, item: u64, publish_ts: i64, w: f64, ts: i64) {
        if w <= 0.0 || !w.is_finite() {
            return;
        }
        let (hl, cap) = (self.half_life_ms, self.capacity);
        for g in std::iter::once("").chain(group) {
            self.boards
                .entry(g.to_string())
                .or_default()
                .add(item, publish_ts, w, ts, hl, cap);
        }
    }

    /// The top of a board at `at` (empty for a group nobody engaged from).
    pub fn top(&self, group: &str, at: i64, limit: usize) -> Vec<(u64, i64, f64)> {
        self.boards
            .get(group)
            .map(|b| b.top(at, limit, self.half_life_ms))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    #[test]
    fn decays_to_the_request_time_and_ranks_by_it() {
        let mut p = Popularity::new(1.0, 100);
        // item 1: two events an hour ago; item 2: one event now
        p.add(Some("g"), 1, 0, 1.0, 0);
        p.add(Some("g"), 1, 0, 1.0, 0);
        p.add(None, 2, H, 1.5, H);
        let top = p.top("", H, 10);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 1]);
        assert!(
            (top[0].2 - 1.5).abs() < 1e-12 && (top[1].2 - 1.0).abs() < 1e-12,
            "{top:?}"
        );
        // two hours later both have halved twice; the order stays
        let later = p.top("", 3 * H, 10);
        assert!((later[1].2 - 0.25).abs() < 1e-12, "{later:?}");
        assert_eq!(
            p.top("g", H, 10).len(),
            1,
            "only item 1 was engaged from group g"
        );
        assert!(p.top("nobody", H, 10).is_empty());
    }

    #[test]
    fn capacity_drops_the_least_popular_and_ties_break_by_id() {
        let mut p = Popularity::new(10.0, 2);
        p.add(None, 3, 0, 1.0, 5);
        p.add(None, 1, 0, 1.0, 5);
        p.add(None, 2, 0, 2.0, 5);
        let top = p.top("", 5, 10);
        assert_eq!(
            top.iter().map(|x| x.0).collect::<Vec<_>>(),
            [2, 3],
            "1 ties 3 and goes: the lower id is dropped"
        );
    }

    proptest! {
        /// Shifting every timestamp and the request time by a constant changes nothing.
        #[test]
        fn shift_invariant(events in proptest::collection::vec((0u64..20, 0i64..1_000_000_000, 1u8..6), 1..200),
                           shift in -1_000_000_000_000i64..2_000_000_000_000i64) {
            let run = |d: i64| {
                let mut p = Popularity::new(24.0, 8);
                for &(item, ts, w) in &events {
                    p.add(Some("g"), item, ts + d, w as f64, ts + d);
                }
                (p.top("", 1_000_000_000 + d, 20), p.top("g", 1_000_000_000 + d, 5))
            };
            let (a, b) = (run(0), run(shift));
            prop_assert_eq!(a.0.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(), b.0.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>());
            prop_assert_eq!(a.1.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(), b.1.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>());
        }
    }
}
