//! Who the two-tower channels serve and how: a user's phase (new, warming, old) by the handover
//! rules, and the channel itself — the user tower's query (a warming user's moved towards the
//! items they engaged) searched over the sharders' time pools.

use crate::config::AggregatorConfig;
use crate::recall::recent;
use crate::request::RecallQuery;
use coldstart_artifact::TwoTowerModel;
use coldstart_contracts::profile::ProfileView;
use coldstart_contracts::types::Action;
use coldstart_contracts::Clients;
use coldstart_models::two_tower::{ItemSide, UserSide, UserState};
use coldstart_runtime::ServiceResult;
use std::collections::HashMap;

/// Where a user stands for recall, and which channels carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserPhase {
    /// New and not handed over yet: popular, group-popular and onboarding carry them.
    New,
    /// New and handed over: their learned embedding (`new_user_tower`) serves beside those.
    Warming,
    /// Not new: their own ID embedding (`two_tower`) and the content channels.
    Old,
}

impl UserPhase {
    /// A user's phase at `at`: old unless the profile says new; a new user is handed over to
    /// their learned embedding once they have `handover_events` events or, with
    /// `handover_days` > 0, signed up at least that many days before.
    pub fn of(view: &ProfileView, cfg: &AggregatorConfig, at: i64) -> Self {
        if !view.is_new {
            return UserPhase::Old;
        }
        let handed_over = view.interactions >= cfg.handover_events
            || (cfg.handover_days > 0.0
                && days_since_signup(view, at).is_some_and(|d| d >= cfg.handover_days));
        if handed_over {
            UserPhase::Warming
        } else {
            UserPhase::New
        }
    }

    /// The name in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            UserPhase::New => "new",
            UserPhase::Warming => "warming",
            UserPhase::Old => "old",
        }
    }
}

const DAY_MS: f64 = 86_400_000.0;

/// Days from a user's sign-up to the request time.
fn days_since_signup(view: &ProfileView, at: i64) -> Option<f64> {
    view.signup_ts
        .map(|s| (at.saturating_sub(s)).max(0) as f64 / DAY_MS)
}

/// How a two-tower channel asks the pools.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TowerAsk {
    /// The best items per time pool, per query.
    pub per_pool: usize,
    /// The seed term's weight (`aggregator.new_user_seed_weight`; 0: none).
    pub seed_weight: f32,
    /// The weight of item-CF's ranking from the seeds over the model's co-engagement
    /// neighbours, fused with the towers' (`aggregator.new_user_cf_weight`; 0: none).
    pub cf_weight: f64,
    /// The rank constant of the fusion (`aggregator.new_user_fusion_k`).
    pub fusion_k: f64,
}

/// The two-tower channels: the user's query vector from the user tower (ID embedding as their
/// state calls for, attributes, recent items and their mean content vector, and a new user's bias
/// features), then the best `per_pool` items of each time pool at `at` (published at or after
/// `since`) by inner product across the sharders. Weights are `exp((s - s_max) / τ)`, τ
/// the model's training temperature, so they sit in (0, 1] beside the other channels.
pub(crate) async fn two_tower_channel(
    clients: &Clients,
    t: &TwoTowerModel,
    view: &ProfileView,
    content: &[f32],
    q: &RecallQuery,
    ask: &TowerAsk,
) -> ServiceResult<Vec<(u64, i64, f64)>> {
    let dim = t.model.cfg.content_dim;
    let side = UserSide {
        user_id: view.user_id,
        attrs: view.attrs.clone(),
        recent: recent(view),
        content: if content.len() == dim {
            content.to_vec()
        } else {
            Vec::new()
        },
        clicked: view.clicked.clone(),
        interests: view.interests.clone(),
        state: UserState {
            interactions: view.interactions,
            days_since_signup: days_since_signup(view, q.at).map(|d| d as f32),
            logged_in: q.logged_in,
        },
    };
    let mut user = match t.model.user_query(&t.model.serving_input(&side)) {
        Ok(u) => u,
        // a user the tower cannot place (no direction) gets nothing from this channel
        Err(_) => return Ok(Vec::new()),
    };
    let cf_on = ask.cf_weight > 0.0 && !t.model.neighbors.is_empty();
    // item-CF from the seeds over the model's co-engagement neighbours: (item, score), best first
    let mut cf: Vec<(u64, f32)> = Vec::new();
    if ask.seed_weight > 0.0 || cf_on {
        // each seed weighs as its action does (a like more than a click), as item-CF weighs them
        let mut weight: HashMap<u64, f32> = HashMap::new();
        for (list, action) in [
            (&view.liked, Action::Like),
            (&view.collected, Action::Collect),
            (&view.shared, Action::Share),
            (&view.clicked, Action::Click),
        ] {
            for &i in list {
                let w = weight.entry(i).or_default();
                *w = w.max(action.weight() as f32);
            }
        }
        let mut items: Vec<u64> = weight.keys().copied().collect();
        items.sort_unstable();
        if ask.seed_weight > 0.0 {
            // the seed term refines the query; without the items' rows the user tower's answers
            let meta = match clients.sharder.item_meta(&items).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(user_id = view.user_id, error = %e, "seed items unavailable: the query goes without them");
                    HashMap::new()
                }
            };
            let seeds: Vec<(ItemSide, f32)> = items
                .iter()
                .filter_map(|i| meta.get(i).map(|r| (t.item_side(r), weight[i])))
                .collect();
            if let Ok(q) = t
                .model
                .with_seed_items(user.clone(), &seeds, ask.seed_weight)
            {
                user = q;
            }
        }
        if cf_on {
            let seeds: Vec<(u64, f32)> = items.iter().map(|i| (*i, weight[i])).collect();
            cf = t.model.neighbors.score(&seeds, ask.per_pool);
        }
    }
    let pools = clients
        .sharder
        .pools(&t.version, user.as_slice(), q.at, q.since, ask.per_pool)
        .await?;
    let best = pools
        .iter()
        .flatten()
        .map(|h| h.score)
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let tau = t.model.cfg.temperature.max(1e-6) as f64;
    // (item, publish time, the towers' weight)
    let mut tower: Vec<(u64, i64, f64)> = pools
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h.item_id,
                h.publish_ts,
                ((h.score as f64 - best) / tau).exp(),
            )
        })
        .collect();
    if cf.is_empty() {
        return Ok(tower);
    }
    // what only item-CF found: its publish time, and that it is still held, from the forward
    // index; without it those items are left out
    let held: HashMap<u64, i64> = tower.iter().map(|h| (h.0, h.1)).collect();
    let only: Vec<u64> = cf
        .iter()
        .map(|x| x.0)
        .filter(|i| !held.contains_key(i))
        .collect();
    let meta = match clients.sharder.item_meta(&only).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(user_id = view.user_id, error = %e, "co-engaged items unavailable: the channel goes without them");
            HashMap::new()
        }
    };
    let in_pool = |ts: i64| ts <= q.at && q.since.is_none_or(|s| ts >= s);
    let cf: Vec<(u64, i64)> = cf
        .into_iter()
        .filter_map(|(i, _)| {
            let ts = match meta.get(&i) {
                Some(r) => r.publish_ts,
                None => *held.get(&i)?,
            };
            in_pool(ts).then_some((i, ts))
        })
        .collect();
    tower.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    Ok(fuse(&tower, &cf, ask.cf_weight, ask.fusion_k))
}

/// Reciprocal-rank fusion of the towers' ranking and item-CF's, both best first: an item's
/// weight is `1 / (k + rank)` in the first plus `w / (k + rank)` in the second (ranks from 1),
/// over the best weight, so the channel's weights stay in (0, 1]. Ranks, not scores: the towers'
/// softmax weights and item-CF's sums of similarities are on scales that do not compare.
pub(crate) fn fuse(
    tower: &[(u64, i64, f64)],
    cf: &[(u64, i64)],
    w: f64,
    k: f64,
) -> Vec<(u64, i64, f64)> {
    let mut out: HashMap<u64, (i64, f64)> = HashMap::new();
    for (r, h) in tower.iter().enumerate() {
        out.entry(h.0).or_insert((h.1, 0.0)).1 += 1.0 / (k + r as f64 + 1.0);
    }
    for (r, h) in cf.iter().enumerate() {
        out.entry(h.0).or_insert((h.1, 0.0)).1 += w / (k + r as f64 + 1.0);
    }
    let top = out.values().map(|x| x.1).fold(0.0f64, f64::max);
    let top = if top > 0.0 { top } else { 1.0 };
    let mut v: Vec<(u64, i64, f64)> = out
        .into_iter()
        .map(|(id, (ts, s))| (id, ts, s / top))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn fusion_adds_reciprocal_ranks_of_both_rankings() {
        let tower = [(1, 10, 1.0), (2, 20, 0.5), (3, 30, 0.1)];
        let cf = [(3, 30), (4, 40)];
        let got = fuse(&tower, &cf, 1.0, 10.0);
        let ids: Vec<u64> = got.iter().map(|h| h.0).collect();
        // 3: 1/13 + 1/11; 1: 1/11; 2 and 4: 1/12 each (tie: lower id first)
        assert_eq!(ids, vec![3, 1, 2, 4]);
        assert_eq!(got[0].2, 1.0, "weights over the best");
        assert!((got[1].2 - (1.0 / 11.0) / (1.0 / 13.0 + 1.0 / 11.0)).abs() < 1e-12);
        assert_eq!(
            got[3].1, 40,
            "an item only item-CF found keeps its publish time"
        );
        // weight 0: the towers' order
        let ids: Vec<u64> = fuse(&tower, &[], 0.0, 10.0).iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        // a heavier item-CF puts its first item first
        assert_eq!(fuse(&tower, &cf, 3.0, 10.0)[0].0, 3);
        assert_eq!(fuse(&tower, &[(4, 40)], 3.0, 10.0)[0].0, 4);
    }

    #[test]
    fn handover_by_events_or_days_since_sign_up() {
        let cfg = AggregatorConfig {
            handover_events: 2,
            handover_days: 3.0,
            ..Default::default()
        };
        let view = |is_new, interactions, signup_ts| ProfileView {
            is_new,
            interactions,
            signup_ts,
            ..Default::default()
        };
        let day = DAY_MS as i64;
        let at = 10 * day;
        assert_eq!(
            UserPhase::of(&view(false, 50, None), &cfg, at),
            UserPhase::Old
        );
        assert_eq!(
            UserPhase::of(&view(true, 1, Some(9 * day)), &cfg, at),
            UserPhase::New
        );
        assert_eq!(
            UserPhase::of(&view(true, 2, Some(9 * day)), &cfg, at),
            UserPhase::Warming,
            "two events"
        );
        assert_eq!(
            UserPhase::of(&view(true, 0, Some(6 * day)), &cfg, at),
            UserPhase::Warming,
            "four days since sign-up, relative to the request time"
        );
        assert_eq!(
            UserPhase::of(&view(true, 0, Some(6 * day)), &cfg, 8 * day),
            UserPhase::New,
            "two days at an earlier request time"
        );
        let off = AggregatorConfig {
            handover_days: 0.0,
            ..cfg
        };
        assert_eq!(
            UserPhase::of(&view(true, 0, Some(0)), &off, at),
            UserPhase::New
        );
    }
}
