//! Merging channel results into one answer: score each candidate, per channel, by the weight of
//! the list that recalled it (interest weight, popularity) times, for channels that favour new
//! items, its recency at the request time, and sum over the channels that recalled it (evidence
//! from several interests adds up; a generic keyword alone does not outweigh a strong category),
//! drop what the user has seen and what is outside the request's pool (published after the
//! request time, or before `since`), dedup across channels (keeping every channel that recalled an
//! item, for attribution), reserve a quota of k for each channel in order, fill the rest by score,
//! and top up from the fallback channel so the answer is never empty while items exist. Traffic
//! control ([`Adjust`]) multiplies new items' scores by their boost and gives up to `slots` of the
//! bottom places to the most behind new items the channels recalled that did not make it
//! (`forced`).
//!
//! Scores are kept as `log2` in f64: recency `0.5^(age / half-life)` of an item many half-lives
//! old underflows even f64, and an answer must not turn into a tie of zeros broken by id. One order
//! is used everywhere: higher score, then newer, then higher item id.

use crate::request::Channel;
use coldstart_contracts::aggregator::Candidate;

pub use coldstart_runtime::ids::{IdHasher, IdMap, IdSet};

/// One channel's candidates: (item, publish_ts, weight in (0, 1]).
#[derive(Debug)]
pub struct ChannelHits {
    /// The channel.
    pub channel: Channel,
    /// Share of k reserved for this channel.
    pub quota: f64,
    /// Multiplier on scores (the fallback ranks below interest channels).
    pub scale: f64,
    /// Whether scores decay with the item's age at the request time (channels of new items do;
    /// popularity is already a measure at the request time).
    pub recency: bool,
    /// Hits.
    pub hits: Vec<(u64, i64, f64)>,
}

impl ChannelHits {
    /// An empty channel.
    pub fn new(channel: Channel, quota: f64, scale: f64, recency: bool) -> Self {
        Self {
            channel,
            quota,
            scale,
            recency,
            hits: Vec::new(),
        }
    }
}

/// Merge parameters.
#[derive(Debug, Clone, Copy)]
pub struct MergeParams {
    /// Answer size.
    pub k: usize,
    /// The request time, ms: recency is measured to it, and items published after it are not
    /// recalled.
    pub at: i64,
    /// Only items published at or after this time, ms.
    pub since: Option<i64>,
    /// Recency half-life, ms.
    pub recency_half_life_ms: f64,
}

/// What the traffic controller says of the candidates: applied by [`merge`].
#[derive(Debug, Default)]
pub struct Adjust {
    /// Score multipliers (at least 1) of new items; the others are 1.
    pub boosts: IdMap<f64>,
    /// Items that may take a forced slot, most behind first.
    pub forceable: Vec<u64>,
    /// At most this many forced slots.
    pub slots: usize,
}

/// `log2` of `2^a + 2^b`.
fn log2_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp2().ln_1p() / std::f64::consts::LN_2
}

/// A candidate while merging: `log2` of its score, channels as a bitmask (names only for the k
/// that are returned).
#[derive(Clone, Copy)]
struct Acc {
    log_score: f64,
    publish_ts: i64,
    channels: u32,
}

/// The one order of candidates: higher score, then newer, then higher item id.
pub fn order(a: (f64, i64, u64), b: (f64, i64, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2))
}

fn better(a: (&u64, &Acc), b: (&u64, &Acc)) -> std::cmp::Ordering {
    order(
        (a.1.log_score, a.1.publish_ts, *a.0),
        (b.1.log_score, b.1.publish_ts, *b.0),
    )
}

/// Merges channels into at most `k` candidates, best first, then the forced ones. At most 32
/// channels.
pub fn merge(
    channels: &[ChannelHits],
    seen: &IdSet,
    p: MergeParams,
    traffic: &Adjust,
) -> Vec<Candidate> {
    let boost_of = |item: &u64| {
        traffic
            .boosts
            .get(item)
            .copied()
            .filter(|b| b.is_finite() && *b >= 1.0)
            .unwrap_or(1.0)
    };
    debug_assert!(channels.len() <= 32);
    let total: usize = channels.iter().map(|c| c.hits.len()).sum();
    let mut merged: IdMap<Acc> = IdMap::with_capacity_and_hasher(total, Default::default());
    let mut per_channel: Vec<Vec<(f64, i64, u64)>> = Vec::with_capacity(channels.len());
    let in_pool = |ts: i64| ts <= p.at && p.since.is_none_or(|s| ts >= s);
    for (ci, ch) in channels.iter().enumerate() {
        // within a channel an item counts once, with its best list
        let mut best: IdMap<(f64, i64)> =
            IdMap::with_capacity_and_hasher(ch.hits.len(), Default::default());
        for &(item, ts, w) in &ch.hits {
            if seen.contains(&item) || !in_pool(ts) || w.is_nan() || w <= 0.0 {
                continue;
            }
            let mut log_score = (ch.scale * w).log2();
            if ch.recency {
                log_score -= (p.at - ts).max(0) as f64 / p.recency_half_life_ms;
            }
            log_score += boost_of(&item).log2();
            let b = best.entry(item).or_insert((log_score, ts));
            b.0 = b.0.max(log_score);
        }
        let mut ranked: Vec<(f64, i64, u64)> = Vec::with_capacity(best.len());
        for (&item, &(log_score, ts)) in &best {
            let a = merged.entry(item).or_insert(Acc {
                log_score: f64::NEG_INFINITY,
                publish_ts: ts,
                channels: 0,
            });
            a.log_score = log2_add(a.log_score, log_score);
            a.channels |= 1 << ci;
            ranked.push((log_score, ts, item));
        }
        ranked.sort_unstable_by(|a, b| order(*a, *b));
        per_channel.push(ranked);
    }
    let mut chosen: Vec<u64> = Vec::with_capacity(p.k);
    let mut taken = IdSet::with_capacity_and_hasher(p.k, Default::default());
    for (ch, ranked) in channels.iter().zip(&per_channel) {
        let quota = (p.k as f64 * ch.quota).ceil() as usize;
        let mut got = 0;
        for &(_, _, item) in ranked {
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
    // forced: recalled, not seen, in the pool, not already in the answer; each once
    let mut forced: Vec<(u64, Acc)> = Vec::with_capacity(traffic.slots);
    for item in &traffic.forceable {
        if forced.len() >= traffic.slots.min(p.k) {
            break;
        }
        if let Some(a) = merged.get(item) {
            let answered = out.iter().any(|o| o.0 == *item);
            if !answered && !forced.iter().any(|f| f.0 == *item) {
                forced.push((*item, *a));
            }
        }
    }
    out.truncate(p.k.saturating_sub(forced.len()));
    let n_ranked = out.len();
    out.extend(forced);
    out.into_iter()
        .enumerate()
        .map(|(rank, (item_id, a))| Candidate {
            item_id,
            score: a.log_score.exp2() as f32,
            channels: channels
                .iter()
                .enumerate()
                .filter(|(ci, _)| a.channels & (1 << ci) != 0)
                .map(|(_, c)| c.channel)
                .collect(),
            publish_ts: a.publish_ts,
            boost: boost_of(&item_id) as f32,
            forced: rank >= n_ranked,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: MergeParams = MergeParams {
        k: 4,
        at: 1000,
        since: None,
        recency_half_life_ms: 1e9,
    };

    fn ch(channel: Channel, quota: f64, scale: f64, hits: Vec<(u64, i64, f64)>) -> ChannelHits {
        ChannelHits {
            hits,
            ..ChannelHits::new(channel, quota, scale, true)
        }
    }

    #[test]
    fn quotas_dedup_seen_and_fallback_fill() {
        let cat = ch(
            Channel::Category,
            0.5,
            1.0,
            vec![(1, 900, 1.0), (2, 800, 1.0), (3, 700, 1.0), (4, 600, 1.0)],
        );
        let kw = ch(
            Channel::Keyword,
            0.25,
            1.0,
            vec![(9, 100, 0.1), (1, 900, 0.5)],
        );
        let fb = ch(
            Channel::Fallback,
            0.0,
            0.1,
            vec![(5, 999, 1.0), (1, 900, 1.0)],
        );
        let out = merge(
            &[cat, kw, fb],
            &IdSet::from_iter([2]),
            P,
            &Adjust::default(),
        );
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
        assert_eq!(
            one.channels,
            [Channel::Category, Channel::Keyword, Channel::Fallback]
        );
    }

    /// A boost lifts a new item over a better-scored one and shows in the answer; forced items
    /// take the bottom slots, at most `slots`, never twice, never an item already in the answer,
    /// never one the user has seen or no channel recalled.
    #[test]
    fn boosts_reorder_and_forced_items_take_the_bottom_slots() {
        let cat = ch(
            Channel::Category,
            1.0,
            1.0,
            vec![
                (1, 900, 1.0),
                (2, 900, 0.9),
                (3, 900, 0.8),
                (4, 900, 0.7),
                (5, 900, 0.1),
                (6, 900, 0.05),
                (7, 900, 0.04),
            ],
        );
        let mut boosts = IdMap::default();
        boosts.insert(3, 2.0);
        boosts.insert(5, 1.0);
        let adjust = Adjust {
            boosts,
            // 9: not recalled; 7: seen; 6 twice; 1: already in the answer
            forceable: vec![9, 7, 1, 6, 6, 5],
            slots: 2,
        };
        let seen = IdSet::from_iter([7]);
        let out = merge(&[cat], &seen, P, &adjust);
        let ids: Vec<u64> = out.iter().map(|c| c.item_id).collect();
        assert_eq!(ids, [3, 1, 6, 5], "3 boosted to 1.6 leads; 6 and 5 forced");
        assert_eq!(out[0].boost, 2.0);
        assert_eq!(out[1].boost, 1.0);
        let forced: Vec<bool> = out.iter().map(|c| c.forced).collect();
        assert_eq!(forced, [false, false, true, true]);
        // an item the score fill (not a quota) put in the answer is not forced again
        let half = |hits| ch(Channel::Category, 0.5, 1.0, hits);
        let hits = vec![
            (1, 900, 1.0),
            (2, 900, 0.9),
            (3, 900, 0.8),
            (4, 900, 0.7),
            (6, 900, 0.05),
        ];
        let one_slot = Adjust {
            forceable: vec![3, 6],
            slots: 1,
            ..Adjust::default()
        };
        let out = merge(&[half(hits)], &IdSet::default(), P, &one_slot);
        let ids: Vec<u64> = out.iter().map(|c| c.item_id).collect();
        assert_eq!(
            ids,
            [1, 2, 3, 6],
            "3 is answered by score; 6 takes the slot"
        );
        // no traffic control: the plain order, nothing forced
        let plain = merge(
            &[ch(
                Channel::Category,
                1.0,
                1.0,
                vec![(1, 900, 1.0), (3, 900, 0.8)],
            )],
            &seen,
            P,
            &Adjust::default(),
        );
        assert!(plain.iter().all(|c| c.boost == 1.0 && !c.forced));
        assert_eq!(plain[0].item_id, 1);
    }

    #[test]
    fn fallback_fills_when_interests_are_empty() {
        let fb = ch(
            Channel::Fallback,
            0.0,
            0.1,
            vec![(5, 999, 1.0), (6, 998, 1.0)],
        );
        let out = merge(&[fb], &IdSet::default(), P, &Adjust::default());
        assert_eq!(out.iter().map(|c| c.item_id).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(out[0].channels, [Channel::Fallback]);
    }

    /// Items a year of 24 h half-lives old: f32 (and even f64) recency would be 0 for all of
    /// them, and the answer a tie broken by item id. In log space the interest weights still rank.
    #[test]
    fn old_items_still_rank_by_weight_and_age() {
        let year = 365 * 86_400_000i64;
        let p = MergeParams {
            k: 3,
            at: 3 * year,
            since: None,
            recency_half_life_ms: 3_600_000.0,
        };
        let cat = ch(
            Channel::Category,
            1.0,
            1.0,
            vec![(1, 0, 0.2), (2, 0, 0.9), (3, 1000, 0.9), (4, 4 * year, 1.0)],
        );
        let out = merge(&[cat], &IdSet::default(), p, &Adjust::default());
        // 4 is published after the request time: not yet there
        assert_eq!(out.iter().map(|c| c.item_id).collect::<Vec<_>>(), [3, 2, 1]);
        let since = MergeParams {
            since: Some(1),
            ..p
        };
        let cat = ch(
            Channel::Category,
            1.0,
            1.0,
            vec![(1, 0, 0.2), (3, 1000, 0.9)],
        );
        let out = merge(&[cat], &IdSet::default(), since, &Adjust::default());
        assert_eq!(out.iter().map(|c| c.item_id).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn log_scores_add_like_scores() {
        let s = log2_add(1.5f64.log2(), 0.25f64.log2()).exp2();
        assert!((s - 1.75).abs() < 1e-12, "{s}");
        assert_eq!(log2_add(f64::NEG_INFINITY, 2.0), 2.0);
    }
}
