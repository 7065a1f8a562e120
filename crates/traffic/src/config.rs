//! The `[traffic]` section of the configuration: the guarantee (targets by quality, window), the
//! boost curve, forced slots and exploration.

use coldstart_runtime::config::{check, ConfigError};
use serde::{Deserialize, Serialize};

/// The largest boost a curve may reach: a boost multiplies a ranking score, and an unbounded one
/// would let one new item take every slot.
pub const MAX_BOOST: f64 = 100.0;

/// New-item ledger and traffic policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// Impressions guaranteed to every new item within `window_h` (the base of its target).
    pub target_impressions: u64,
    /// Extra impressions for content quality: `content_bonus × quality` (quality in [0, 1]).
    pub content_bonus: u64,
    /// Extra impressions for the author's quality: `author_bonus × author quality` (in [0, 1]).
    pub author_bonus: u64,
    /// The guarantee window, hours.
    pub window_h: f64,
    /// The share of the window by which the paced schedule has the whole target due: an even
    /// spread over `pace_share × window_h`, the rest a margin for the last impressions.
    pub pace_share: f64,
    /// The boost by how far an item is behind its paced schedule: points `[behind, boost]`,
    /// `behind` the shortfall as a share of the target (impressions due by now minus impressions
    /// had, over the target), piecewise linear between them and flat after the last. Starts at
    /// `[0, 1]`; `behind` strictly increasing, `boost` never decreasing, at most [`MAX_BOOST`].
    pub boost_curve: Vec<[f64; 2]>,
    /// An item takes a forced slot only when at least this far behind (share of its target).
    pub forced_min_behind: f64,
    /// Exploration's prior on a new item's click-through: `prior_clicks` clicks in
    /// `prior_impressions` impressions (a Beta prior).
    pub prior_clicks: f64,
    /// See `prior_clicks`.
    pub prior_impressions: f64,
    /// After the window, an item whose sampled click-through beats new items' own click-through
    /// by this factor keeps `promote_boost`; the others get no help.
    pub promote_ratio: f64,
    /// The boost of a promoted item.
    pub promote_boost: f64,
    /// How long after the guarantee window promotion may last, hours.
    pub promote_h: f64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            target_impressions: 100,
            content_bonus: 200,
            author_bonus: 200,
            window_h: 24.0,
            pace_share: 0.8,
            boost_curve: vec![[0.0, 1.0], [0.05, 2.0], [0.2, 8.0]],
            forced_min_behind: 0.0,
            prior_clicks: 1.0,
            prior_impressions: 30.0,
            promote_ratio: 1.2,
            promote_boost: 2.0,
            promote_h: 48.0,
        }
    }
}

impl TrafficConfig {
    /// This configuration with the keys of `json`, an object of `[traffic]` keys (the discovery
    /// value `settings/traffic`), over it, checked.
    pub fn overlaid(&self, json: &str) -> Result<Self, String> {
        let over: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("settings/traffic: {e}"))?;
        let serde_json::Value::Object(over) = over else {
            return Err(format!(
                "settings/traffic: {over} is not a JSON object of [traffic] keys"
            ));
        };
        let base = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let with = |keys: &serde_json::Map<String, serde_json::Value>| {
            let mut merged = base.clone();
            if let serde_json::Value::Object(m) = &mut merged {
                m.extend(keys.clone());
            }
            serde_json::from_value::<TrafficConfig>(merged)
        };
        let cfg = with(&over).map_err(|e| {
            // name the key: the first that fails alone
            let key = over.iter().find_map(|(k, v)| {
                let one = serde_json::Map::from_iter([(k.clone(), v.clone())]);
                with(&one).is_err().then(|| format!("traffic.{k} = {v}: "))
            });
            format!("settings/traffic: {}{e}", key.unwrap_or_default())
        })?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.window_h.is_finite() && self.window_h > 0.0,
            "traffic.window_h",
            format!("{} must be a positive number of hours", self.window_h),
        )?;
        check(
            self.target_impressions >= 1,
            "traffic.target_impressions",
            "0: every new item is guaranteed at least one impression".into(),
        )?;
        check(
            self.pace_share.is_finite() && self.pace_share > 0.0 && self.pace_share <= 1.0,
            "traffic.pace_share",
            format!(
                "{} must be a share of the window in (0, 1]",
                self.pace_share
            ),
        )?;
        self.validate_curve()?;
        check(
            self.forced_min_behind.is_finite() && self.forced_min_behind >= 0.0,
            "traffic.forced_min_behind",
            format!("{} must be a share, not negative", self.forced_min_behind),
        )?;
        check(
            self.prior_impressions.is_finite()
                && self.prior_clicks.is_finite()
                && self.prior_clicks > 0.0
                && self.prior_impressions > self.prior_clicks,
            "traffic.prior_clicks",
            format!(
                "{} clicks in {} impressions: both positive, fewer clicks than impressions",
                self.prior_clicks, self.prior_impressions
            ),
        )?;
        check(
            self.promote_ratio.is_finite() && self.promote_ratio > 0.0,
            "traffic.promote_ratio",
            format!("{} must be a positive factor", self.promote_ratio),
        )?;
        check(
            self.promote_boost.is_finite() && (1.0..=MAX_BOOST).contains(&self.promote_boost),
            "traffic.promote_boost",
            format!("{} must be in [1, {MAX_BOOST}]", self.promote_boost),
        )?;
        check(
            self.promote_h.is_finite() && self.promote_h >= 0.0,
            "traffic.promote_h",
            format!("{} must be a number of hours, not negative", self.promote_h),
        )
    }

    fn validate_curve(&self) -> Result<(), ConfigError> {
        let key = "traffic.boost_curve";
        let c = &self.boost_curve;
        check(
            c.len() >= 2,
            key,
            format!("{} points; at least two, from [0, 1]", c.len()),
        )?;
        check(
            c[0] == [0.0, 1.0],
            key,
            format!(
                "starts at {:?}; it must start at [0, 1] (no shortfall, no boost)",
                c[0]
            ),
        )?;
        for (i, p) in c.iter().enumerate() {
            check(
                p[0].is_finite() && p[1].is_finite() && (1.0..=MAX_BOOST).contains(&p[1]),
                key,
                format!("point {i} {p:?}: the boost must be in [1, {MAX_BOOST}] (bounded)"),
            )?;
        }
        for (i, w) in c.windows(2).enumerate() {
            check(
                w[1][0] > w[0][0],
                key,
                format!(
                    "point {} {:?}: `behind` must increase (after {:?})",
                    i + 1,
                    w[1],
                    w[0]
                ),
            )?;
            check(
                w[1][1] >= w[0][1],
                key,
                format!(
                    "point {} {:?}: the boost falls after {:?}; it must not decrease with the \
                     shortfall (monotone)",
                    i + 1,
                    w[1],
                    w[0]
                ),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `settings/traffic` overrides only the keys it names, over the file's values; an unknown
    /// key, a value that is not an object, and an impossible policy are refused, named.
    #[test]
    fn settings_overlay_the_file() {
        let file = TrafficConfig {
            window_h: 12.0,
            ..TrafficConfig::default()
        };
        let c = file.overlaid(r#"{"target_impressions": 150}"#).unwrap();
        assert_eq!((c.target_impressions, c.window_h), (150, 12.0));
        let err = |json: &str| file.overlaid(json).unwrap_err();
        assert!(err(r#"{"target_impresions": 150}"#).contains("target_impresions"));
        assert!(err("[1]").contains("not a JSON object"));
        assert!(err(r#"{"boost_curve": [[0, 1], [0.5, 0.5]]}"#).contains("traffic.boost_curve"));
        let negative = err(r#"{"window_h": 6, "target_impressions": -1}"#);
        assert!(
            negative.contains("traffic.target_impressions = -1"),
            "{negative}"
        );
    }

    #[test]
    fn impossible_policies_are_refused_naming_the_key() {
        assert!(TrafficConfig::default().validate().is_ok());
        let bad = |c: TrafficConfig, key: &str, what: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(what), "{e}");
        };
        let d = TrafficConfig::default;
        bad(
            TrafficConfig {
                boost_curve: vec![[0.0, 1.0], [0.1, 3.0], [0.2, 2.0]],
                ..d()
            },
            "traffic.boost_curve",
            "monotone",
        );
        bad(
            TrafficConfig {
                boost_curve: vec![[0.0, 1.0], [0.1, 1e6]],
                ..d()
            },
            "traffic.boost_curve",
            "bounded",
        );
        bad(
            TrafficConfig {
                boost_curve: vec![[0.0, 1.0], [0.1, f64::INFINITY]],
                ..d()
            },
            "traffic.boost_curve",
            "bounded",
        );
        bad(
            TrafficConfig {
                boost_curve: vec![[0.0, 2.0], [0.1, 3.0]],
                ..d()
            },
            "traffic.boost_curve",
            "start at [0, 1]",
        );
        bad(
            TrafficConfig {
                boost_curve: vec![[0.0, 1.0], [0.1, 2.0], [0.1, 3.0]],
                ..d()
            },
            "traffic.boost_curve",
            "must increase",
        );
        bad(
            TrafficConfig {
                window_h: -1.0,
                ..d()
            },
            "traffic.window_h",
            "positive",
        );
        bad(
            TrafficConfig {
                target_impressions: 0,
                ..d()
            },
            "traffic.target_impressions",
            "at least one",
        );
        bad(
            TrafficConfig {
                prior_clicks: 40.0,
                ..d()
            },
            "traffic.prior_clicks",
            "fewer clicks",
        );
        bad(
            TrafficConfig {
                promote_boost: 0.5,
                ..d()
            },
            "traffic.promote_boost",
            "[1, 100]",
        );
    }

    #[test]
    fn a_negative_target_does_not_parse() {
        let e = toml::from_str::<TrafficConfig>("target_impressions = -5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("target_impressions"), "{e}");
    }
}
