//! The `[aggregator]` section of the configuration.

use coldstart_runtime::config::{check, ConfigError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The public read API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// k when the request gives none.
    pub default_k: usize,
    /// Largest k a request may ask for.
    pub max_k: usize,
    /// Interest categories read per request.
    pub top_categories: usize,
    /// Interest keywords read per request.
    pub top_keywords: usize,
    /// Items read from each inverted list.
    pub per_key_limit: usize,
    /// Share of k reserved for category recall.
    pub quota_category: f64,
    /// Share of k reserved for keyword recall.
    pub quota_keyword: f64,
    /// Share of k reserved for cluster recall.
    pub quota_cluster: f64,
    /// Share of k reserved for popular items, for new users (`profile.new_user_max_interactions`).
    pub quota_popular: f64,
    /// Share of k reserved for the popular items of the user's group, for new users.
    pub quota_group_popular: f64,
    /// Share of k reserved for the newest items of the user's onboarding interests, for new users.
    pub quota_onboarding: f64,
    /// Items read from each popularity board.
    pub popular_limit: usize,
    /// Content channels' candidates are ranked by the cosine `s` of their content vector to the
    /// user's (the normalised sum of the seed items' vectors): weights times
    /// `exp((s - s_max) / this)`, `s_max` the most similar candidate's.
    /// Smaller is sharper; 0 turns the ranking off.
    pub similarity_temperature: f64,
    /// Candidates looked up for that ranking per request, those with the most channel weight
    /// (the rest count as orthogonal to the user: cosine 0).
    pub similarity_candidates: usize,
    /// Seeds per action type for cluster recall (last liked, collected, shared items).
    pub cluster_seeds: usize,
    /// Newest items taken from each seed cluster.
    pub cluster_m: usize,
    /// Share of k reserved for the two-tower channel (new items nearest the user's two-tower
    /// vector), when a two-tower model runs.
    pub quota_two_tower: f64,
    /// Items taken from each new-item time pool by the two-tower channel.
    pub two_tower_per_pool: usize,
    /// Share of k reserved for the `new_user_tower` channel: a handed-over new user's items
    /// nearest their two-tower vector (ID embedding by the model's user method).
    pub quota_new_user_tower: f64,
    /// `new_user_tower`: how far a new user's query moves towards the two-tower vectors of the
    /// items they engaged (`q + w·|u|·m̂`; 0: the user tower's output alone; 2 was chosen on the
    /// MovieLens backtest).
    pub new_user_seed_weight: f64,
    /// A warming user's channel fuses two rankings by reciprocal rank: the towers' (the query
    /// searched over the pools) and item-CF's from the user's seed items (each weighing as its
    /// action does) over the two-tower model's co-engagement neighbours. An item's weight is
    /// `1 / (k + rank)` in the first plus this times `1 / (k + rank)` in the second (0: the
    /// towers alone, weighted `exp((s - s_max) / τ)`).
    pub new_user_cf_weight: f64,
    /// The `k` of that fusion: larger flattens the difference between the first ranks.
    pub new_user_fusion_k: f64,
    /// Handover: a new user's learned embedding (`new_user_tower`) serves once they have at least
    /// this many events; before, the popular, group-popular and onboarding channels carry them.
    pub handover_events: u64,
    /// Handover, the other rule: or once they signed up at least this many days before the
    /// request (0: this rule off).
    pub handover_days: f64,
    /// At most this many slots of an answer go to forced new items: the most behind their paced
    /// schedule among the candidates, as the traffic controller says (0: none).
    pub forced_slots: usize,
    /// Whether recall asks the traffic controller for new items' boosts and forced slots (one
    /// call per traffic partition owning young candidates; none when no candidate is young
    /// enough). Its cost: README, "Traffic control".
    pub traffic_control: bool,
    /// The candidates asked about per request: of those young enough for help, the ones with
    /// the most channel weight; the rest get no boost and no forced slot (a bound on the call's
    /// cost: a boost multiplies a weight by at most the boost curve's top, 8 by default, so a
    /// candidate far below the answer's k-th stays out of it anyway).
    pub traffic_candidates: usize,
    /// Half-life of the recency factor in the scores of new-item channels, hours; 0 turns it
    /// off (freshness then comes from the lists themselves: newest first and bounded).
    pub recency_half_life_h: f64,
    /// Deadline of one downstream call, milliseconds.
    pub request_timeout_ms: u64,
    /// Deadline of each part of a recall (profile, lists, clusters, popular boards, two-tower,
    /// similarity, traffic), milliseconds: a part that has not answered by then is left out and
    /// the answer marked degraded, instead of the whole answer waiting.
    pub hop_timeout_ms: u64,
    /// Further attempts of a part that answered unavailable (a refused connection, a member
    /// that went away), within its `hop_timeout_ms`; bad input is never retried (0: none).
    pub hop_retries: u32,
    /// The wait before a part's first retry, milliseconds; each further retry waits twice as
    /// long, and none is made that the part's deadline would cut short.
    pub hop_retry_backoff_ms: u64,
    /// Whether the aggregator logs what it served (request id, request time, user, item, rank,
    /// channels, boost, forced) to Parquet, for `coldstart report channels`.
    pub served_log: bool,
    /// Root of the served log, a data set partitioned `date=YYYY-MM-DD/hour=HH` by request time
    /// (empty: `{node.data_dir}/served`).
    pub served_dir: String,
    /// A served-log file is written once this many rows wait…
    pub served_flush_rows: usize,
    /// …or once the oldest has waited this long, milliseconds.
    pub served_flush_ms: u64,
    /// Answers waiting for the served-log writer; beyond, answers are not logged (and counted as
    /// `served_log_dropped` in `/metrics`) rather than slowing recall.
    pub served_queue: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            default_k: 50,
            max_k: 500,
            top_categories: 5,
            top_keywords: 10,
            per_key_limit: 100,
            quota_category: 0.4,
            quota_keyword: 0.2,
            quota_cluster: 0.3,
            quota_popular: 0.5,
            quota_group_popular: 0.2,
            quota_onboarding: 0.2,
            popular_limit: 200,
            similarity_temperature: 0.03,
            similarity_candidates: 1000,
            cluster_seeds: 50,
            cluster_m: 20,
            quota_two_tower: 0.05,
            two_tower_per_pool: 50,
            quota_new_user_tower: 1.0,
            new_user_seed_weight: 2.0,
            new_user_cf_weight: 1.0,
            new_user_fusion_k: 10.0,
            handover_events: 1,
            handover_days: 0.0,
            forced_slots: 1,
            traffic_control: true,
            traffic_candidates: 500,
            recency_half_life_h: 0.0,
            request_timeout_ms: 2000,
            hop_timeout_ms: 1000,
            hop_retries: 1,
            hop_retry_backoff_ms: 20,
            served_log: true,
            served_dir: String::new(),
            served_flush_rows: 50_000,
            served_flush_ms: 5_000,
            served_queue: 10_000,
        }
    }
}

impl AggregatorConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.default_k >= 1 && self.default_k <= self.max_k,
            "aggregator.default_k",
            format!(
                "{} must be in 1..=aggregator.max_k ({})",
                self.default_k, self.max_k
            ),
        )?;
        let q = self.quota_category + self.quota_keyword + self.quota_cluster;
        check(
            (0.0..=1.0).contains(&self.quota_category),
            "aggregator.quota_category",
            "must be in [0, 1]".into(),
        )?;
        check(
            (0.0..=1.0).contains(&self.quota_keyword),
            "aggregator.quota_keyword",
            "must be in [0, 1]".into(),
        )?;
        check(
            (0.0..=1.0).contains(&self.quota_cluster) && q <= 1.0,
            "aggregator.quota_cluster",
            format!("must be in [0, 1], and the three quotas together ({q}) at most 1"),
        )?;
        check(
            self.new_user_seed_weight >= 0.0 && self.new_user_seed_weight.is_finite(),
            "aggregator.new_user_seed_weight",
            format!(
                "{} must be finite and not negative (0 turns it off)",
                self.new_user_seed_weight
            ),
        )?;
        check(
            self.handover_days >= 0.0 && self.handover_days.is_finite(),
            "aggregator.handover_days",
            format!(
                "{} must be finite and not negative (0 turns the rule off)",
                self.handover_days
            ),
        )?;
        for (key, v) in [
            ("aggregator.quota_two_tower", self.quota_two_tower),
            ("aggregator.quota_new_user_tower", self.quota_new_user_tower),
            ("aggregator.quota_popular", self.quota_popular),
            ("aggregator.quota_group_popular", self.quota_group_popular),
            ("aggregator.quota_onboarding", self.quota_onboarding),
        ] {
            check(
                (0.0..=1.0).contains(&v),
                key,
                format!("{v} must be in [0, 1]"),
            )?;
        }
        let nq = self.quota_popular + self.quota_group_popular + self.quota_onboarding;
        check(
            nq <= 1.0,
            "aggregator.quota_onboarding",
            format!("the three new-user quotas together ({nq}) must be at most 1"),
        )?;
        check(
            self.similarity_temperature >= 0.0 && self.similarity_temperature.is_finite(),
            "aggregator.similarity_temperature",
            format!(
                "{} must be finite and not negative (0 turns the ranking off)",
                self.similarity_temperature
            ),
        )?;
        check(
            self.hop_timeout_ms >= 1,
            "aggregator.hop_timeout_ms",
            "0 must be at least 1".into(),
        )?;
        check(
            self.new_user_cf_weight >= 0.0 && self.new_user_cf_weight.is_finite(),
            "aggregator.new_user_cf_weight",
            format!(
                "{} must be finite and not negative (0: the towers alone)",
                self.new_user_cf_weight
            ),
        )?;
        check(
            self.new_user_fusion_k >= 1.0 && self.new_user_fusion_k.is_finite(),
            "aggregator.new_user_fusion_k",
            format!("{} must be finite and at least 1", self.new_user_fusion_k),
        )?;
        check(
            self.hop_retries <= 10,
            "aggregator.hop_retries",
            format!("{} must be at most 10", self.hop_retries),
        )?;
        check(
            self.hop_retries == 0 || self.hop_retry_backoff_ms < self.hop_timeout_ms,
            "aggregator.hop_retry_backoff_ms",
            format!(
                "{} must be below aggregator.hop_timeout_ms ({}), or no retry could be made",
                self.hop_retry_backoff_ms, self.hop_timeout_ms
            ),
        )?;
        check(
            self.traffic_candidates >= 1,
            "aggregator.traffic_candidates",
            "0 must be at least 1 (traffic_control = false turns the call off)".into(),
        )?;
        check(
            self.served_flush_rows >= 1,
            "aggregator.served_flush_rows",
            "0 must be at least 1".into(),
        )?;
        check(
            self.served_queue >= 1,
            "aggregator.served_queue",
            "0 must be at least 1".into(),
        )?;
        check(
            self.recency_half_life_h >= 0.0 && self.recency_half_life_h.is_finite(),
            "aggregator.recency_half_life_h",
            "must be finite and not negative (0 turns recency off)".into(),
        )
    }
}

/// What recall needs of other services' sections; whoever assembles the configuration fills it
/// in (`coldstart_jobs::config::Config::aggregator_settings`).
#[derive(Debug, Clone, PartialEq)]
pub struct Peers {
    /// `profile.new_user_max_interactions`: a new user's content channels earn their quota over
    /// this many interactions.
    pub new_user_max_interactions: u64,
    /// `sharder.recent_list_len`: the length of the fallback's `recent` list.
    pub recent_list_len: usize,
    /// `limits.max_batch_rows`: the most rows a sharder answers (a pools read asks no more).
    pub max_batch_rows: usize,
    /// `traffic.window_h + traffic.promote_h`: how long after publication traffic control can
    /// still help an item; only candidates this young are sent to it. Follows
    /// `settings/traffic` as the traffic controller does.
    pub traffic_horizon: TrafficHorizon,
}

/// The traffic horizon, hours, shared with the task that follows `settings/traffic`.
#[derive(Debug, Clone)]
pub struct TrafficHorizon {
    /// The configuration file's `(window_h, promote_h)`.
    pub file: (f64, f64),
    hours: Arc<parking_lot::RwLock<f64>>,
}

impl TrafficHorizon {
    /// The horizon of the file's `window_h` and `promote_h`.
    pub fn new(window_h: f64, promote_h: f64) -> Self {
        Self {
            file: (window_h, promote_h),
            hours: Arc::new(parking_lot::RwLock::new(window_h + promote_h)),
        }
    }

    /// The horizon now, ms.
    pub fn ms(&self) -> i64 {
        (*self.hours.read() * 3_600_000.0) as i64
    }

    /// Follows a `settings/traffic` value: its `window_h` and `promote_h` over the file's (a
    /// value the traffic controller would refuse leaves the horizon as it is).
    pub fn follow(&self, settings: &str) {
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(settings)
        else {
            return;
        };
        let get = |k: &str, d: f64| o.get(k).map_or(Some(d), serde_json::Value::as_f64);
        if let (Some(w), Some(p)) = (get("window_h", self.file.0), get("promote_h", self.file.1)) {
            if w.is_finite() && w > 0.0 && p.is_finite() && p >= 0.0 {
                *self.hours.write() = w + p;
            }
        }
    }
}

impl PartialEq for TrafficHorizon {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && *self.hours.read() == *other.hours.read()
    }
}

/// The aggregator's settings: its own section and what it needs of other services'.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[aggregator]`.
    pub aggregator: AggregatorConfig,
    /// From `[profile]` and `[sharder]`.
    pub peers: Peers,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The horizon starts at the file's window plus promotion, follows the keys of
    /// `settings/traffic` over the file's, and ignores a value the controller would refuse.
    #[test]
    fn the_traffic_horizon_follows_settings() {
        let h = TrafficHorizon::new(24.0, 48.0);
        assert_eq!(h.ms(), 72 * 3_600_000);
        h.follow(r#"{"window_h": 12}"#);
        assert_eq!(h.ms(), 60 * 3_600_000);
        h.follow(r#"{"promote_h": 0, "target_impressions": 5}"#);
        assert_eq!(
            h.ms(),
            24 * 3_600_000,
            "keys over the file's, not over the last value"
        );
        for bad in [
            r#"{"window_h": -1}"#,
            r#"{"window_h": "x"}"#,
            "not json",
            "[]",
        ] {
            h.follow(bad);
            assert_eq!(h.ms(), 24 * 3_600_000, "{bad}");
        }
    }
}
