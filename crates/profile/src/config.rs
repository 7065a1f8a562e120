//! The `[profile]` section of the configuration.

use coldstart_runtime::config::{check, ConfigError};
use serde::{Deserialize, Serialize};

/// The user attributes a group for group popularity can be formed of.
pub const GROUP_ATTRIBUTES: [&str; 4] = ["age_bucket", "gender", "occupation", "region"];

/// User profiles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// Items kept per action type (like, collect, share, click, comment).
    pub last_n: usize,
    /// Half-life of interest weights, hours.
    pub interest_half_life_h: f64,
    /// A user with fewer interactions than this is new.
    pub new_user_max_interactions: u64,
    /// Items younger than this are new: their impressions and clicks go to traffic.
    pub new_item_window_h: f64,
    /// Items remembered per user for the seen filter.
    pub seen_capacity: usize,
    /// Half-life of engagement in popularity, hours: an event counts `0.5^(age / half-life)` at
    /// the request time.
    pub popular_half_life_h: f64,
    /// Items kept per popularity board (overall and each group); the least engaged are dropped.
    pub popular_capacity: usize,
    /// The last events of this partition remembered by identity (user, item, time, action,
    /// request id), so that a retried batch is taken once: an event equal to one of them is
    /// acknowledged and not applied again. Rebuilt from the log on start.
    pub dedup_events: usize,
    /// User attributes that form a group for group popularity, joined in this order
    /// (any of `age_bucket`, `gender`, `occupation`, `region`).
    pub group_by: Vec<String>,
    /// The age buckets a user may have (an `age_bucket` outside them is refused naming the
    /// row); empty: any.
    pub age_buckets: Vec<String>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            last_n: 20,
            interest_half_life_h: 72.0,
            new_user_max_interactions: 10,
            new_item_window_h: 24.0,
            seen_capacity: 1000,
            popular_half_life_h: 168.0,
            popular_capacity: 10_000,
            dedup_events: 200_000,
            group_by: vec!["age_bucket".into(), "gender".into(), "region".into()],
            age_buckets: [
                "under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl ProfileConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.last_n >= 1,
            "profile.last_n",
            "must be at least 1".into(),
        )?;
        check(
            self.interest_half_life_h > 0.0,
            "profile.interest_half_life_h",
            "must be positive".into(),
        )?;
        check(
            self.new_item_window_h > 0.0,
            "profile.new_item_window_h",
            "must be positive".into(),
        )?;
        check(
            self.popular_half_life_h > 0.0,
            "profile.popular_half_life_h",
            "must be positive".into(),
        )?;
        check(
            self.dedup_events >= 1,
            "profile.dedup_events",
            "must be at least 1".into(),
        )?;
        check(
            self.popular_capacity >= 1,
            "profile.popular_capacity",
            "must be at least 1".into(),
        )?;
        for g in &self.group_by {
            check(
                GROUP_ATTRIBUTES.contains(&g.as_str()),
                "profile.group_by",
                format!("{g:?} is not one of {}", GROUP_ATTRIBUTES.join(", ")),
            )?;
        }
        Ok(())
    }
}
