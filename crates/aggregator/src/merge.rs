//! Merging channel results into one answer: score each candidate, per channel, by the interest
//! weight of the list that recalled it times its recency, and sum over the channels that recalled
//! it (evidence from several interests adds up; a generic keyword alone does not outweigh a strong
//! category), drop what the user has seen, dedup across channels
//! (keeping every channel that recalled an item, for attribution), reserve a quota of k for each
//! interest channel, fill the rest by score, and top up from the fallback channel so the answer is
//! never empty while items exist.

use coldstart_common::rows::Candidate;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for item ids: one multiply-xorshift instead of SipHash. Recall hashes a few thousand
/// ids per request; the ids come from our own index, so flooding resistance buys nothing here.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Maps and sets keyed by item id.
pub type IdMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A set of item ids.
pub type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// One channel's candidates: (item, publish_ts, interest weight in (0, 1]).
#[derive(Debug, Default)]
pub struct ChannelHits {
    /// Channel name (`category`, `keyword`, `fallback`, …).
    pub name: &'static str,
    /// Share of k reserved for this channel.
    pub quota: f64,
    /// Multiplier on scores (the fallback ranks below interest channels).
    pub scale: f32,
    /// Hits.
    pub hits: Vec<(u64, i64, f32)>,
}

/// Merge parameters.
#[derive(Debug, Clone, Copy)]
pub struct MergeParams {
    /// Answer size.
    pub k: usize,
    /// Now, ms.
    pub now: i64,
    /// Recency half-life, ms.
    pub recency_half_life_ms: f64,
}

fn recency(now: i64, ts: i64, hl: f64) -> f32 {
    0.5f64.powf((now - ts).max(0) as f64 / hl) as f32
}

/// A candidate while merging: channels as a bitmask, names only for the k that are returned.
#[derive(Clone, Copy)]
struct Acc {
    score: f32,
    publish_ts: i64,
    channels: u32,
}

fn better(a: (&u64, &Acc), b: (&u64, &Acc)) -> std::cmp::Ordering {
    b.1.score
        .total_cmp(&a.1.score)
        .then(b.1.publish_ts.cmp(&a.1.publish_ts))
        .then(b.0.cmp(a.0))
}

/// Merges channels into at most `k` candidates, best first. At most 32 channels.
pub fn merge(channels: &[ChannelHits], seen: &IdSet, p: MergeParams) -> Vec<Candidate> {
    debug_assert!(channels.len() <= 32);
    let total: usize = channels.iter().map(|c| c.hits.len()).sum();
    let mut merged: IdMap<Acc> = IdMap::with_capacity_and_hasher(total, Default::default());
    let mut per_channel: Vec<Vec<(f32, u64)>> = Vec::with_capacity(channels.len());
    for (ci, ch) in channels.iter().enumerate() {
        // within a channel an item counts once, with its best list
        let mut best: IdMap<(f32, i64)> =
            IdMap::with_capacity_and_hasher(ch.hits.len(), Default::default());
        for &(item, ts, w) in &ch.hits {
            if seen.contains(&item) {
                continue;
            }
            let score = ch.scale * w * recency(p.now, ts, p.recency_half_life_ms);
            let b = best.entry(item).or_insert((score, ts));
            b.0 = b.0.max(score);
        }
        let mut ranked: Vec<(f32, u64)> = Vec::with_capacity(best.len());
        for (&item, &(score, ts)) in &best {
            let a = merged.entry(item).or_insert(Acc {
                score: 0.0,
                publish_ts: ts,
                channels: 0,
            });
            a.score += score;
            a.channels |= 1 << ci;
            ranked.push((score, item));
        }
        ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        per_channel.push(ranked);
    }
    let mut chosen: Vec<u64> = Vec::with_capacity(p.k);
    let mut taken = IdSet::with_capacity_and_hasher(p.k, Default::default());
    for (ch, ranked) in channels.iter().zip(&per_channel) {
        let quota = (p.k as f64 * ch.quota).ceil() as usize;
        let mut got = 0;
        for &(_, item) in ranked {
            if got >= quota || chosen.len() >= p.k {
                break;
            }
            if taken.insert(item) {
                chosen.push(item);
                got += 1;
            }
        }
    }
    let need = p.k.saturating_sub(chosen.len());
    if need > 0 {
        let mut rest: Vec<(&u64, &Acc)> = merged
            .iter()
            .filter(|(id, _)| !taken.contains(*id))
            .collect();
        if rest.len() > need {
            rest.select_nth_unstable_by(need - 1, |a, b| better(*a, *b));
            rest.truncate(need);
        }
        chosen.extend(rest.into_iter().map(|(id, _)| *id));
    }
    let mut out: Vec<(u64, Acc)> = chosen.into_iter().map(|i| (i, merged[&i])).collect();
    out.sort_unstable_by(|a, b| better((&a.0, &a.1), (&b.0, &b.1)));
    out.into_iter()
        .map(|(item_id, a)| Candidate {
            item_id,
            score: a.score,
            channels: channels
                .iter()
                .enumerate()
                .filter(|(ci, _)| a.channels & (1 << ci) != 0)
                .map(|(_, c)| c.name.to_string())
                .collect(),
            publish_ts: a.publish_ts,
            boost: 1.0,
            forced: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: MergeParams = MergeParams {
        k: 4,
        now: 1000,
        recency_half_life_ms: 1e9,
    };

    #[test]
    fn quotas_dedup_seen_and_fallback_fill() {
        let cat = ChannelHits {
            name: "category",
            quota: 0.5,
            scale: 1.0,
            hits: vec![(1, 900, 1.0), (2, 800, 1.0), (3, 700, 1.0), (4, 600, 1.0)],
        };
        let kw = ChannelHits {
            name: "keyword",
            quota: 0.25,
            scale: 1.0,
            hits: vec![(9, 100, 0.1), (1, 900, 0.5)],
        };
        let fb = ChannelHits {
            name: "fallback",
            quota: 0.0,
            scale: 0.1,
            hits: vec![(5, 999, 1.0), (1, 900, 1.0)],
        };
        let out = merge(&[cat, kw, fb], &IdSet::from_iter([2]), P);
        let ids: Vec<u64> = out.iter().map(|c| c.item_id).collect();
        // category gets its 2 (1, 3), keyword its 1 (9) despite a low score, then the best rest (4);
        // item 1, recalled by three channels, sums their scores and comes first
        assert_eq!(ids.len(), 4);
        assert!(
            ids.contains(&9) && ids.contains(&1) && ids.contains(&3) && ids.contains(&4),
            "{ids:?}"
        );
        assert!(!ids.contains(&2), "seen items are dropped");
        assert_eq!(ids[0], 1);
        let one = out.iter().find(|c| c.item_id == 1).unwrap();
        assert_eq!(one.channels, ["category", "keyword", "fallback"]);
    }

    #[test]
    fn fallback_fills_when_interests_are_empty() {
        let fb = ChannelHits {
            name: "fallback",
            quota: 0.0,
            scale: 0.1,
            hits: vec![(5, 999, 1.0), (6, 998, 1.0)],
        };
        let out = merge(&[fb], &IdSet::default(), P);
        assert_eq!(out.iter().map(|c| c.item_id).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(out[0].channels, ["fallback"]);
    }
}
