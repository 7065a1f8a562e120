//! Merging channel results into one answer: score each candidate, per channel, by the interest
//! weight of the list that recalled it times its recency, and sum over the channels that recalled
//! it (evidence from several interests adds up; a generic keyword alone does not outweigh a strong
//! category), drop what the user has seen, dedup across channels
//! (keeping every channel that recalled an item, for attribution), reserve a quota of k for each
//! interest channel, fill the rest by score, and top up from the fallback channel so the answer is
//! never empty while items exist.

use coldstart_common::rows::Candidate;
use std::collections::{HashMap, HashSet};

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

/// Merges channels into at most `k` candidates, best first.
pub fn merge(channels: &[ChannelHits], seen: &HashSet<u64>, p: MergeParams) -> Vec<Candidate> {
    let mut merged: HashMap<u64, Candidate> = HashMap::new();
    let mut per_channel: Vec<Vec<(f32, u64)>> = Vec::with_capacity(channels.len());
    for ch in channels {
        // within a channel an item counts once, with its best list
        let mut best: HashMap<u64, (f32, i64)> = HashMap::new();
        for &(item, ts, w) in &ch.hits {
            if seen.contains(&item) {
                continue;
            }
            let score = ch.scale * w * recency(p.now, ts, p.recency_half_life_ms);
            let b = best.entry(item).or_insert((score, ts));
            b.0 = b.0.max(score);
        }
        for (&item, &(score, ts)) in &best {
            let c = merged.entry(item).or_insert_with(|| Candidate {
                item_id: item,
                score: 0.0,
                channels: Vec::new(),
                publish_ts: ts,
                boost: 1.0,
                forced: false,
            });
            c.score += score;
            c.channels.push(ch.name.to_string());
        }
        let mut ranked: Vec<(f32, u64)> = best.into_iter().map(|(i, (s, _))| (s, i)).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        per_channel.push(ranked);
    }
    let mut chosen: Vec<u64> = Vec::with_capacity(p.k);
    let mut taken: HashSet<u64> = HashSet::new();
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
    let mut rest: Vec<&Candidate> = merged
        .values()
        .filter(|c| !taken.contains(&c.item_id))
        .collect();
    rest.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.publish_ts.cmp(&a.publish_ts))
            .then(b.item_id.cmp(&a.item_id))
    });
    for c in rest.into_iter().take(p.k.saturating_sub(chosen.len())) {
        chosen.push(c.item_id);
    }
    let mut out: Vec<Candidate> = chosen.into_iter().map(|i| merged[&i].clone()).collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.publish_ts.cmp(&a.publish_ts))
            .then(b.item_id.cmp(&a.item_id))
    });
    out
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
        let out = merge(&[cat, kw, fb], &HashSet::from([2]), P);
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
        let out = merge(&[fb], &HashSet::new(), P);
        assert_eq!(out.iter().map(|c| c.item_id).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(out[0].channels, ["fallback"]);
    }
}
