//! The traffic policy: how much help a new item gets, as pure functions of its ledger row and the
//! request time (never the server's clock), so that serving and the replay simulator
//! (`coldstart simulate traffic`) run the same code.
//!
//! - **Target**: `target_impressions + content_bonus·q + author_bonus·a` (q, a in [0, 1]).
//! - **Pacing**: by `elapsed` (the share of the window gone at the request time) an item is due
//!   `min(1, elapsed / pace_share) · target` impressions: an even spread over the first
//!   `pace_share` of the window (the rest a margin), not a front-loaded burst.
//! - **Boost**: `behind = (due − had) / target`; the boost is the configured curve at `behind`
//!   (1 when on or ahead of schedule, rising with the shortfall, bounded), and 1 once the target
//!   is met or the window has passed. An item ahead of schedule gets no help, which is what
//!   spreads its impressions over the window.
//! - **Forced slots**: of the new items a user's channels recalled, the most behind (at least
//!   `forced_min_behind`) take up to `slots` slots of the answer (how many is the answer's
//!   business: `aggregator.forced_slots`).
//! - **Exploration**: Thompson sampling on early click-through, a Beta posterior from the prior
//!   `prior_clicks / prior_impressions`: after the window, an item whose sampled click-through
//!   beats the reference (the new items' own click-through, the ledger's clicks over its
//!   impressions: traffic of the same kind and the same low positions) by `promote_ratio` keeps
//!   `promote_boost` for `promote_h` hours (it is promoted); the others get no more help.

use crate::config::TrafficConfig;
use rand::Rng;
use rand_distr::{Beta, Distribution};

const HOUR_MS: f64 = 3_600_000.0;

/// What the policy knows of one new item at a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemState {
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Its target impressions.
    pub target: u64,
    /// Impressions so far.
    pub impressions: u64,
    /// Clicks so far.
    pub clicks: u64,
}

/// Why an item got its boost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Help {
    /// No help: not new, on schedule, target met, or not promoted after the window.
    None,
    /// Behind its paced schedule within the guarantee window.
    Guarantee,
    /// After the window, its sampled click-through beat the new items' own.
    Promoted,
}

/// The traffic policy of a validated [`TrafficConfig`].
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: TrafficConfig,
}

impl Policy {
    /// The policy of `cfg` (validated: an impossible policy is refused naming its key).
    pub fn new(cfg: TrafficConfig) -> Result<Self, coldstart_runtime::config::ConfigError> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &TrafficConfig {
        &self.cfg
    }

    /// An item's target from its content quality and its author's quality (each in [0, 1];
    /// unknown counts as 0, out of range is clamped).
    pub fn target(&self, quality: Option<f32>, author_quality: Option<f32>) -> u64 {
        let share = |q: Option<f32>| {
            q.filter(|q| q.is_finite())
                .map_or(0.0, |q| q.clamp(0.0, 1.0) as f64)
        };
        self.cfg.target_impressions
            + (self.cfg.content_bonus as f64 * share(quality)).round() as u64
            + (self.cfg.author_bonus as f64 * share(author_quality)).round() as u64
    }

    /// How long after publication an item can still get help: the window and the promotion.
    pub fn horizon_ms(&self) -> i64 {
        ((self.cfg.window_h + self.cfg.promote_h) * HOUR_MS) as i64
    }

    /// The share of the guarantee window gone at `at` (0 before publication, may exceed 1).
    pub fn elapsed(&self, publish_ts: i64, at: i64) -> f64 {
        (at.saturating_sub(publish_ts)).max(0) as f64 / (self.cfg.window_h * HOUR_MS)
    }

    /// The share of the target due by `elapsed`: an even spread over the first `pace_share` of
    /// the window.
    pub fn due(&self, elapsed: f64) -> f64 {
        (elapsed / self.cfg.pace_share).clamp(0.0, 1.0)
    }

    /// How far behind its paced schedule an item is, as a share of its target: the share due by
    /// `elapsed` minus the share `delivered`; negative when ahead.
    pub fn behind(&self, elapsed: f64, delivered: f64) -> f64 {
        self.due(elapsed) - delivered
    }

    /// The boost of an item `elapsed` into its window with `delivered` of its target: the curve
    /// at [`Policy::behind`], 1 once the target is met or the window has passed. In [1, the
    /// curve's last boost]; never decreasing in `elapsed` within the window and never
    /// increasing in `delivered`.
    pub fn boost(&self, elapsed: f64, delivered: f64) -> f64 {
        if !(elapsed.is_finite() && delivered.is_finite()) || elapsed >= 1.0 || delivered >= 1.0 {
            return 1.0;
        }
        self.curve(self.behind(elapsed, delivered))
    }

    fn curve(&self, behind: f64) -> f64 {
        let c = &self.cfg.boost_curve;
        if behind <= 0.0 {
            return 1.0;
        }
        for w in c.windows(2) {
            let ([x0, y0], [x1, y1]) = (w[0], w[1]);
            if behind <= x1 {
                return y0 + (y1 - y0) * (behind - x0) / (x1 - x0);
            }
        }
        c[c.len() - 1][1]
    }

    /// An item's boost at `at`, and why: within the window the guarantee's; after it, for
    /// `promote_h` hours, `promote_boost` when a click-through drawn from its posterior beats
    /// `reference_ctr × promote_ratio` (the reference: new items' click-through).
    pub fn help(
        &self,
        item: &ItemState,
        at: i64,
        reference_ctr: f64,
        rng: &mut impl Rng,
    ) -> (f64, Help) {
        let elapsed = self.elapsed(item.publish_ts, at);
        let target = item.target.max(1) as f64;
        if elapsed < 1.0 {
            let b = self.boost(elapsed, item.impressions as f64 / target);
            return if b > 1.0 {
                (b, Help::Guarantee)
            } else {
                (1.0, Help::None)
            };
        }
        let hours_after = (elapsed - 1.0) * self.cfg.window_h;
        if hours_after > self.cfg.promote_h {
            return (1.0, Help::None);
        }
        if self.sample_ctr(item, rng) > reference_ctr * self.cfg.promote_ratio {
            (self.cfg.promote_boost, Help::Promoted)
        } else {
            (1.0, Help::None)
        }
    }

    /// A click-through drawn from the item's Beta posterior (Thompson sampling).
    pub fn sample_ctr(&self, item: &ItemState, rng: &mut impl Rng) -> f64 {
        let clicks = item.clicks.min(item.impressions) as f64;
        let a = self.cfg.prior_clicks + clicks;
        let b = (self.cfg.prior_impressions - self.cfg.prior_clicks)
            + (item.impressions as f64 - clicks);
        // the prior is validated positive, so the parameters are
        Beta::new(a, b).map_or(a / (a + b), |d| d.sample(rng))
    }

    /// Whether an item `behind` its schedule may take a forced slot.
    pub fn may_force(&self, behind: f64) -> bool {
        behind.is_finite() && behind > 0.0 && behind >= self.cfg.forced_min_behind
    }

    /// The forced slots of one answer: of `recalled` (item, how far behind), the most behind
    /// items that [`Policy::may_force`], each once, at most `slots`, most behind first (ties:
    /// lower id).
    pub fn forced(&self, recalled: &[(u64, f64)], slots: usize) -> Vec<u64> {
        let mut c: Vec<(u64, f64)> = recalled
            .iter()
            .copied()
            .filter(|(_, b)| self.may_force(*b))
            .collect();
        c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        c.dedup_by_key(|x| x.0);
        let mut out: Vec<u64> = Vec::with_capacity(slots);
        for (id, _) in c {
            if out.len() == slots {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn policy() -> Policy {
        Policy::new(TrafficConfig::default()).unwrap()
    }

    #[test]
    fn targets_by_content_and_author_quality() {
        let p = policy();
        assert_eq!(p.target(None, None), 100);
        assert_eq!(p.target(Some(1.0), None), 300);
        assert_eq!(p.target(Some(0.5), Some(1.0)), 400);
        assert_eq!(p.target(Some(7.0), Some(-3.0)), 300, "clamped to [0, 1]");
        assert_eq!(p.target(Some(f32::NAN), None), 100);
    }

    #[test]
    fn pacing_is_an_even_spread_relative_to_the_request_time() {
        let p = policy();
        let day = 24 * 3_600_000;
        assert_eq!(p.elapsed(1_000, 1_000 + day / 2), 0.5);
        assert_eq!(p.elapsed(1_000, 0), 0.0, "before publication");
        // the target is due by 80% of the window: at 40%, half of it
        assert!((p.behind(0.4, 0.2) - 0.3).abs() < 1e-12);
        assert_eq!(
            p.due(0.9),
            1.0,
            "all due after pace_share, the rest a margin"
        );
        assert_eq!(p.boost(0.4, 0.5), 1.0, "on schedule: no help");
        assert_eq!(
            p.boost(0.4, 0.6),
            1.0,
            "ahead: no help, so it does not front-load"
        );
        assert!(p.boost(0.4, 0.3) > 1.0);
        assert_eq!(p.boost(0.99, 0.0), 8.0, "far behind: the curve's top");
        assert_eq!(p.boost(1.0, 0.0), 1.0, "the window has passed");
        assert_eq!(p.boost(0.5, 1.0), 1.0, "the target is met");
        // the curve is piecewise linear: 0.05 behind → 2, halfway to 0.2 → 5
        assert!((p.boost(0.28, 0.3) - 2.0).abs() < 1e-9);
        assert!((p.boost(0.34, 0.3) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn forced_slots_take_the_most_behind_once_and_no_more() {
        let p = Policy::new(TrafficConfig {
            forced_min_behind: 0.1,
            ..TrafficConfig::default()
        })
        .unwrap();
        let got = p.forced(
            &[
                (1, 0.3),
                (2, 0.5),
                (2, 0.5),
                (3, 0.05),
                (4, 0.4),
                (5, f64::NAN),
            ],
            2,
        );
        assert_eq!(got, [2, 4]);
        assert!(p.forced(&[(3, 0.05)], 2).is_empty(), "not behind enough");
        let any = policy();
        assert_eq!(
            any.forced(&[(3, 0.05), (6, -0.2)], 1),
            [3],
            "behind at all: the default"
        );
    }

    #[test]
    fn promotion_after_the_window_follows_the_posterior() {
        let p = policy();
        let mut rng = SmallRng::seed_from_u64(1);
        let day = 24 * 3_600_000i64;
        let good = ItemState {
            publish_ts: 0,
            target: 100,
            impressions: 400,
            clicks: 80,
        };
        let bad = ItemState { clicks: 2, ..good };
        let after = day + 3_600_000;
        let promoted = |it: &ItemState, rng: &mut SmallRng| {
            (0..200)
                .filter(|_| p.help(it, after, 0.05, rng).1 == Help::Promoted)
                .count()
        };
        assert_eq!(promoted(&good, &mut rng), 200, "20% against 5%: always");
        assert_eq!(promoted(&bad, &mut rng), 0, "0.5% against 5%: never");
        // long after the window no help at all; within it the guarantee's
        assert_eq!(p.help(&good, 10 * day, 0.05, &mut rng).1, Help::None);
        let fresh = ItemState {
            impressions: 0,
            clicks: 0,
            ..good
        };
        assert_eq!(p.help(&fresh, day / 2, 0.05, &mut rng).1, Help::Guarantee);
    }

    proptest! {
        /// Bounded, never decreasing in elapsed within the window, never increasing in
        /// delivered, 1 once the target is met or the window has passed.
        #[test]
        fn the_boost_is_monotone_and_bounded(
            e1 in 0.0f64..1.0, e2 in 0.0f64..1.0, d1 in 0.0f64..1.5, d2 in 0.0f64..1.5
        ) {
            let p = policy();
            let top = p.config().boost_curve.last().unwrap()[1];
            for (e, d) in [(e1, d1), (e2, d2), (e1, d2), (e2, d1)] {
                let b = p.boost(e, d);
                prop_assert!((1.0..=top).contains(&b), "boost({e}, {d}) = {b}");
                if d >= 1.0 {
                    prop_assert_eq!(b, 1.0);
                }
            }
            let (lo_e, hi_e) = (e1.min(e2), e1.max(e2));
            let (lo_d, hi_d) = (d1.min(d2), d1.max(d2));
            prop_assert!(p.boost(hi_e, d1) >= p.boost(lo_e, d1) - 1e-12);
            prop_assert!(p.boost(e1, hi_d) <= p.boost(e1, lo_d) + 1e-12);
            prop_assert_eq!(p.boost(1.0 + e1, d1), 1.0);
        }

        /// Never more than the slots, never a duplicate, only recalled items.
        #[test]
        fn forced_slots_are_bounded_and_distinct(
            slots in 0usize..5,
            recalled in proptest::collection::vec((0u64..20, -1.0f64..1.0), 0..40)
        ) {
            let got = policy().forced(&recalled, slots);
            prop_assert!(got.len() <= slots);
            let mut d = got.clone();
            d.sort_unstable();
            d.dedup();
            prop_assert_eq!(d.len(), got.len());
            prop_assert!(got.iter().all(|g| recalled.iter().any(|r| r.0 == *g)));
        }
    }
}
