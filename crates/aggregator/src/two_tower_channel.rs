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
    per_pool: usize,
    seed_weight: f32,
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
    if seed_weight > 0.0 {
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
        let items: Vec<u64> = weight.keys().copied().collect();
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
        if let Ok(q) = t.model.with_seed_items(user.clone(), &seeds, seed_weight) {
            user = q;
        }
    }
    let pools = clients
        .sharder
        .pools(&t.version, user.as_slice(), q.at, q.since, per_pool)
        .await?;
    let best = pools
        .iter()
        .flatten()
        .map(|h| h.score)
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let tau = t.model.cfg.temperature.max(1e-6) as f64;
    Ok(pools
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h.item_id,
                h.publish_ts,
                ((h.score as f64 - best) / tau).exp(),
            )
        })
        .collect())
}

#[cfg(test)]
mod phase_tests {
    use super::*;

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
