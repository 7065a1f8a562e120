//! `coldstart simulate traffic`: a replay of traffic control on a synthetic platform, the same
//! hours with and without it, from the same seed.
//!
//! The platform: a warm catalog whose items have long histories; new items published every hour,
//! each with a latent quality that sets its true click-through, an observed content quality and an
//! author quality (both noisy views of it) that set its target; users who ask for `slots` items,
//! each answer ranked from `warm_candidates` warm and `new_candidates` new items (what recall
//! gives) by a warm-biased score, the estimated click-through times a confidence that grows with
//! impressions (a new item starts at `new_confidence` of its prior). A user examines rank r with
//! probability `1 / (1 + 0.15 r)` and clicks with the item's true click-through.
//!
//! With traffic control, the [`Policy`] of `coldstart-traffic` (the serving code) multiplies new
//! items' scores by their boost at the request time (Thompson-sampled promotion after the window),
//! and its forced slots put the most behind new items of the answer's candidates at the bottom of
//! the answer. Counters are the ledger's: an item's impressions and clicks so far.
//!
//! Measured over the new items whose guarantee window closes within the run: the share that
//! reach their target within the window, the Gini coefficient of their impressions, the overall
//! click-through and its cost; per hour, the share of the traffic that control gave (boosted or
//! forced impressions) that went to the top decile of latent quality.

use crate::{Error, Result};
use coldstart_traffic::config::TrafficConfig;
use coldstart_traffic::policy::{Help, ItemState, Policy};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const HOUR_MS: i64 = 3_600_000;

/// The synthetic platform.
#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    /// Simulated hours.
    pub hours: usize,
    /// Requests per hour.
    pub requests_per_hour: usize,
    /// Items per answer.
    pub slots: usize,
    /// Warm items in the catalog.
    pub warm_items: usize,
    /// New items published per hour.
    pub new_per_hour: usize,
    /// Warm candidates per request.
    pub warm_candidates: usize,
    /// New candidates per request (among the items still new or in promotion).
    pub new_candidates: usize,
    /// A new item's confidence factor in the ranking at no impressions (warm bias).
    pub new_confidence: f64,
    /// Slots of an answer that may go to forced new items (`aggregator.forced_slots`).
    pub forced_slots: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            hours: 48,
            requests_per_hour: 20_000,
            slots: 10,
            warm_items: 5_000,
            new_per_hour: 20,
            warm_candidates: 100,
            new_candidates: 20,
            new_confidence: 0.3,
            forced_slots: 1,
            seed: 7,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// With traffic control.
    pub controlled: bool,
    /// New items whose window closed within the run.
    pub judged_items: usize,
    /// Their share that reached the target within the window.
    pub met_target: f64,
    /// Gini coefficient of their impressions within the window.
    pub exposure_gini: f64,
    /// Clicks over impressions, every item.
    pub ctr: f64,
    /// Share of all impressions that went to new items.
    pub new_item_share: f64,
    /// Per hour: the share of the traffic control gave that went to the top quality decile.
    pub top_decile_share: Vec<Option<f64>>,
    /// Per hour: the share of judged items that had met their target by then.
    pub met_by_hour: Vec<f64>,
}

/// Both runs and the cost.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// The platform.
    pub platform: Platform,
    /// Without traffic control.
    pub baseline: RunSummary,
    /// With it.
    pub controlled: RunSummary,
    /// `1 − ctr(controlled) / ctr(baseline)`.
    pub ctr_cost: f64,
}

struct Warm {
    ctr: f64,
    impressions: u64,
    clicks: u64,
}

struct New {
    publish_ts: i64,
    ctr: f64,
    quality: f64,
    target: u64,
    impressions: u64,
    clicks: u64,
    impressions_in_window: u64,
    met_at_hour: Option<usize>,
}

/// Estimated click-through with the prior of the policy.
fn estimate(clicks: u64, impressions: u64, prior: (f64, f64)) -> f64 {
    (clicks as f64 + prior.0) / (impressions as f64 + prior.1)
}

fn gini(xs: &[u64]) -> f64 {
    let n = xs.len();
    let total: f64 = xs.iter().map(|&x| x as f64).sum();
    if n == 0 || total == 0.0 {
        return 0.0;
    }
    let mut s: Vec<u64> = xs.to_vec();
    s.sort_unstable();
    let weighted: f64 = s
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as f64 + 1.0) * x as f64)
        .sum();
    (2.0 * weighted) / (n as f64 * total) - (n as f64 + 1.0) / n as f64
}

fn gauss(rng: &mut SmallRng) -> f64 {
    // Box–Muller
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Runs the platform once, with `policy` (traffic control) or without.
fn run_once(p: &Platform, policy: &Policy, controlled: bool, bar: &ProgressBar) -> RunSummary {
    let mut rng = SmallRng::seed_from_u64(p.seed);
    let cfg = policy.config();
    let prior = (cfg.prior_clicks, cfg.prior_impressions);
    // the warm catalog: true click-through ~ Beta-like spread around 4%, long histories
    let mut warm: Vec<Warm> = (0..p.warm_items)
        .map(|_| {
            let ctr = (0.04 * (0.5 * gauss(&mut rng)).exp()).clamp(0.002, 0.3);
            let impressions = rng.random_range(2_000..50_000u64);
            let clicks = (impressions as f64 * ctr).round() as u64;
            Warm {
                ctr,
                impressions,
                clicks,
            }
        })
        .collect();
    let mut new: Vec<New> = Vec::new();
    let window_ms = (cfg.window_h * HOUR_MS as f64) as i64;
    let alive_ms = window_ms + (cfg.promote_h * HOUR_MS as f64) as i64;
    let (mut clicks, mut impressions) = (0u64, 0u64);
    let (mut new_clicks, mut new_impressions) = (0u64, 0u64);
    let mut top_decile_share = Vec::with_capacity(p.hours);
    let mut met_by_hour = Vec::with_capacity(p.hours);
    // the top decile of latent quality is known up front (quality is uniform on [0, 1])
    let top_decile = 0.9;
    for hour in 0..p.hours {
        let hour_start = hour as i64 * HOUR_MS;
        for _ in 0..p.new_per_hour {
            let q: f64 = rng.random();
            let content_q = (q + 0.2 * gauss(&mut rng)).clamp(0.0, 1.0);
            let author_q = (q + 0.3 * gauss(&mut rng)).clamp(0.0, 1.0);
            new.push(New {
                publish_ts: hour_start + rng.random_range(0..HOUR_MS),
                ctr: 0.01 + 0.09 * q * q,
                quality: q,
                target: policy.target(Some(content_q as f32), Some(author_q as f32)),
                impressions: 0,
                clicks: 0,
                impressions_in_window: 0,
                met_at_hour: None,
            });
        }
        let (mut helped, mut helped_top) = (0u64, 0u64);
        // the items that may be new or in promotion during this hour
        let hour_end = hour_start + HOUR_MS;
        let live: Vec<usize> = (0..new.len())
            .filter(|&i| new[i].publish_ts < hour_end && new[i].publish_ts + alive_ms > hour_start)
            .collect();
        for r in 0..p.requests_per_hour {
            let at = hour_start + (r as i64 * HOUR_MS) / p.requests_per_hour as i64;
            // promotion's reference: the new items' own click-through so far
            let reference_ctr = if new_impressions > 0 {
                new_clicks as f64 / new_impressions as f64
            } else {
                prior.0 / prior.1
            };
            // candidates: (score, is_new, index, help)
            let mut cands: Vec<(f64, bool, usize, Help)> =
                Vec::with_capacity(p.warm_candidates + p.new_candidates);
            for _ in 0..p.warm_candidates {
                let i = rng.random_range(0..warm.len());
                let w = &warm[i];
                let conf = w.impressions as f64 / (w.impressions as f64 + 200.0);
                let score = estimate(w.clicks, w.impressions, prior)
                    * (p.new_confidence + (1.0 - p.new_confidence) * conf);
                cands.push((score, false, i, Help::None));
            }
            let mut recalled_new: Vec<usize> = Vec::new();
            for _ in 0..p.new_candidates.min(live.len()) {
                let i = live[rng.random_range(0..live.len())];
                // recall finds only what is published at `at` and still new or in promotion
                let ts = new[i].publish_ts;
                if ts > at || at - ts >= alive_ms || recalled_new.contains(&i) {
                    continue;
                }
                recalled_new.push(i);
                let it = &new[i];
                let conf = it.impressions as f64 / (it.impressions as f64 + 200.0);
                let mut score = estimate(it.clicks, it.impressions, prior)
                    * (p.new_confidence + (1.0 - p.new_confidence) * conf);
                let mut help = Help::None;
                if controlled {
                    let state = ItemState {
                        publish_ts: it.publish_ts,
                        target: it.target,
                        impressions: it.impressions,
                        clicks: it.clicks,
                    };
                    let (b, h) = policy.help(&state, at, reference_ctr, &mut rng);
                    score *= b;
                    help = h;
                }
                cands.push((score, true, i, help));
            }
            cands.sort_by(|a, b| b.0.total_cmp(&a.0));
            cands.dedup_by_key(|c| (c.1, c.2));
            let mut answer: Vec<(bool, usize, bool)> = cands
                .iter()
                .take(p.slots)
                .map(|c| (c.1, c.2, c.3 != Help::None))
                .collect();
            if controlled {
                let behind: Vec<(u64, f64)> = recalled_new
                    .iter()
                    .filter(|&&i| !answer.iter().any(|a| a.0 && a.1 == i))
                    .map(|&i| {
                        let it = &new[i];
                        let e = policy.elapsed(it.publish_ts, at);
                        let b = if e < 1.0 && it.impressions < it.target {
                            policy.behind(e, it.impressions as f64 / it.target as f64)
                        } else {
                            f64::NEG_INFINITY
                        };
                        (i as u64, b)
                    })
                    .collect();
                let forced = policy.forced(&behind, p.forced_slots);
                let keep = p.slots.saturating_sub(forced.len());
                answer.truncate(keep);
                answer.extend(forced.iter().map(|&i| (true, i as usize, true)));
            }
            for (rank, &(is_new, i, was_helped)) in answer.iter().enumerate() {
                let examined = rng.random::<f64>() < 1.0 / (1.0 + 0.15 * rank as f64);
                impressions += 1;
                if is_new {
                    new_impressions += 1;
                    let it = &mut new[i];
                    let click = examined && rng.random::<f64>() < it.ctr;
                    it.impressions += 1;
                    it.clicks += click as u64;
                    clicks += click as u64;
                    new_clicks += click as u64;
                    if at - it.publish_ts < window_ms {
                        it.impressions_in_window += 1;
                        if it.impressions_in_window >= it.target && it.met_at_hour.is_none() {
                            it.met_at_hour = Some(hour);
                        }
                    }
                    if was_helped {
                        helped += 1;
                        helped_top += (it.quality >= top_decile) as u64;
                    }
                } else {
                    let w = &mut warm[i];
                    let click = examined && rng.random::<f64>() < w.ctr;
                    w.impressions += 1;
                    w.clicks += click as u64;
                    clicks += click as u64;
                }
            }
        }
        top_decile_share.push((helped > 0).then(|| helped_top as f64 / helped as f64));
        let judged: Vec<&New> = new
            .iter()
            .filter(|n| n.publish_ts + window_ms <= p.hours as i64 * HOUR_MS)
            .collect();
        met_by_hour.push(if judged.is_empty() {
            0.0
        } else {
            judged
                .iter()
                .filter(|n| n.met_at_hour.is_some_and(|h| h <= hour))
                .count() as f64
                / judged.len() as f64
        });
        bar.inc(1);
    }
    let end = p.hours as i64 * HOUR_MS;
    let judged: Vec<&New> = new
        .iter()
        .filter(|n| n.publish_ts + window_ms <= end)
        .collect();
    let met = judged
        .iter()
        .filter(|n| n.impressions_in_window >= n.target)
        .count();
    let exposures: Vec<u64> = judged.iter().map(|n| n.impressions_in_window).collect();
    RunSummary {
        controlled,
        judged_items: judged.len(),
        met_target: met as f64 / judged.len().max(1) as f64,
        exposure_gini: gini(&exposures),
        ctr: clicks as f64 / impressions.max(1) as f64,
        new_item_share: new_impressions as f64 / impressions.max(1) as f64,
        top_decile_share,
        met_by_hour,
    }
}

/// Runs the platform without and with traffic control (same seed), with a progress bar.
pub fn simulate(platform: Platform, traffic: TrafficConfig) -> Result<Simulation> {
    let policy = Policy::new(traffic).map_err(|e| Error::Invalid(e.to_string()))?;
    if platform.hours == 0 || platform.requests_per_hour == 0 || platform.slots == 0 {
        return Err(Error::Invalid(
            "--hours, --requests-per-hour and --slots must be at least 1".into(),
        ));
    }
    if platform.warm_items == 0 || platform.warm_candidates == 0 {
        return Err(Error::Invalid(
            "--warm-items and --warm-candidates must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&platform.new_confidence) {
        return Err(Error::Invalid(format!(
            "--new-confidence {} is not in [0, 1]",
            platform.new_confidence
        )));
    }
    let bar = ProgressBar::new(2 * platform.hours as u64);
    bar.set_style(
        ProgressStyle::with_template("simulate    [{bar:30}] {pos}/{len} hours {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message("without traffic control");
    let baseline = run_once(&platform, &policy, false, &bar);
    bar.set_message("with traffic control");
    let controlled = run_once(&platform, &policy, true, &bar);
    bar.finish_and_clear();
    Ok(Simulation {
        ctr_cost: 1.0 - controlled.ctr / baseline.ctr.max(f64::MIN_POSITIVE),
        platform,
        baseline,
        controlled,
    })
}

impl Simulation {
    /// The table a person reads.
    pub fn table(&self) -> String {
        let row = |name: &str, r: &RunSummary| {
            format!(
                "| {name} | {} | {:.1}% | {:.3} | {:.3}% | {:.1}% |\n",
                r.judged_items,
                100.0 * r.met_target,
                r.exposure_gini,
                100.0 * r.ctr,
                100.0 * r.new_item_share
            )
        };
        let mut s = String::from(
            "| run | new items judged | reached target in window | exposure Gini | CTR | new items' share of impressions |\n|---|---:|---:|---:|---:|---:|\n",
        );
        s.push_str(&row("without traffic control", &self.baseline));
        s.push_str(&row("with traffic control", &self.controlled));
        s.push_str(&format!(
            "\nCTR cost of traffic control: {:.2}%\n",
            100.0 * self.ctr_cost
        ));
        let shares: Vec<String> = self
            .controlled
            .top_decile_share
            .iter()
            .enumerate()
            .filter_map(|(h, s)| s.map(|s| (h, s)))
            .filter(|(h, _)| h % 6 == 5)
            .map(|(h, s)| format!("h{}: {:.0}%", h + 1, 100.0 * s))
            .collect();
        s.push_str(&format!(
            "Share of controlled traffic to the top quality decile (10% of new items): {}\n",
            shares.join(", ")
        ));
        s
    }

    /// An SVG of the two curves over the hours: share of judged new items that met their
    /// target (with and without control), and the share of controlled traffic that went to the
    /// top quality decile.
    pub fn svg(&self) -> String {
        let (w, h, left, top, pw, ph) = (720.0, 400.0, 60.0, 30.0, 600.0, 260.0);
        let hours = self.platform.hours.max(1) as f64;
        let x = |hr: f64| left + pw * hr / hours;
        let y = |v: f64| top + ph * (1.0 - v.clamp(0.0, 1.0));
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"13\">Traffic control replay: {} new items/h, {} requests/h, seed {}</text>\n",
            self.platform.new_per_hour, self.platform.requests_per_hour, self.platform.seed
        );
        for i in 0..=4 {
            let v = i as f64 / 4.0;
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{4:.0}%</text>\n",
                y(v),
                left + pw,
                left - 6.0,
                y(v) + 4.0,
                100.0 * v
            ));
        }
        for hr in (0..=self.platform.hours).step_by(12) {
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{hr} h</text>\n",
                x(hr as f64),
                top + ph + 16.0
            ));
        }
        let mut line = |pts: Vec<(f64, f64)>, color: &str, label: &str, i: usize| {
            let d: Vec<String> = pts
                .iter()
                .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
                .collect();
            s.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{label}</text>\n",
                d.join(" "),
                left + 10.0,
                top + ph + 30.0 + 14.0 * i as f64 - 4.0,
                left + 28.0,
                top + ph + 30.0 + 14.0 * i as f64
            ));
        };
        let met = |r: &RunSummary| {
            r.met_by_hour
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 + 1.0, *v))
                .collect::<Vec<_>>()
        };
        line(
            met(&self.controlled),
            "#1f77b4",
            "judged new items that met their target, with traffic control",
            0,
        );
        line(met(&self.baseline), "#7f7f7f", "the same, without", 1);
        line(
            self.controlled
                .top_decile_share
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64 + 1.0, v)))
                .collect(),
            "#d62728",
            "share of controlled traffic to the top quality decile",
            2,
        );
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_of_equal_and_concentrated_exposure() {
        assert_eq!(gini(&[5, 5, 5, 5]), 0.0);
        assert!((gini(&[0, 0, 0, 12]) - 0.75).abs() < 1e-12);
        assert_eq!(gini(&[]), 0.0);
    }

    /// A small platform: traffic control gets more new items to their target than the warm-biased
    /// ranking alone, the same seed gives the same figures, and every share is a share.
    #[test]
    fn control_helps_new_items_on_a_small_platform() {
        let p = Platform {
            hours: 30,
            requests_per_hour: 3_000,
            warm_items: 500,
            new_per_hour: 3,
            ..Platform::default()
        };
        let traffic = TrafficConfig {
            window_h: 12.0,
            promote_h: 6.0,
            ..TrafficConfig::default()
        };
        let a = simulate(p.clone(), traffic.clone()).unwrap();
        assert!(a.baseline.judged_items > 0);
        assert!(
            a.controlled.met_target > a.baseline.met_target,
            "{}",
            a.table()
        );
        assert!(a.controlled.new_item_share > a.baseline.new_item_share);
        for r in [&a.baseline, &a.controlled] {
            assert!((0.0..=1.0).contains(&r.met_target) && (0.0..=1.0).contains(&r.ctr));
            assert!(r
                .top_decile_share
                .iter()
                .flatten()
                .all(|s| (0.0..=1.0).contains(s)));
        }
        let b = simulate(p, traffic).unwrap();
        assert_eq!(a.controlled.met_target, b.controlled.met_target);
        assert_eq!(a.ctr_cost, b.ctr_cost);
        assert!(a.svg().contains("<polyline"));
    }

    #[test]
    fn a_bad_policy_or_platform_is_refused() {
        let e = simulate(
            Platform::default(),
            TrafficConfig {
                boost_curve: vec![[0.0, 1.0], [0.1, 0.5]],
                ..TrafficConfig::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("traffic.boost_curve"), "{e}");
        let e = simulate(
            Platform {
                slots: 0,
                ..Platform::default()
            },
            TrafficConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--slots"), "{e}");
    }
}
