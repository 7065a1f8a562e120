//! One recall request, checked once by the same rules whether it came over HTTP or Flight: who,
//! how many, at what request time, from which pool and through which channels.

use crate::config::AggregatorConfig;
use coldstart_contracts::types::check_request_id;
use coldstart_contracts::validate::parse_rfc3339_ms;
use coldstart_runtime::config::LimitsConfig;
use coldstart_runtime::{ServiceError, ServiceResult};

pub use coldstart_contracts::types::Channel;

/// A checked recall request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecallQuery {
    /// User.
    pub user_id: u64,
    /// Answer size, in `1..=aggregator.max_k`.
    pub k: usize,
    /// Request time, ms since the epoch.
    pub at: i64,
    /// Only items published at or after this time.
    pub since: Option<i64>,
    /// Only these channels; `None`: every channel the user's state calls for.
    pub channels: Option<Vec<Channel>>,
    /// Whether the request comes from a logged-in session (a new user's bias feature; default
    /// true).
    pub logged_in: bool,
    /// The answer's id: the caller's, or one made here. Events echo it (`request_id`).
    pub request_id: String,
}

impl RecallQuery {
    /// Checks a request. `k`: `None` takes `aggregator.default_k`, 0 is refused (over HTTP and
    /// Flight alike); `at`: `None` is `now`, and it may not lie before the epoch or further in
    /// the future than `limits.max_future_skew_s`.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        user_id: u64,
        k: Option<usize>,
        at: Option<i64>,
        since: Option<i64>,
        channels: &[String],
        cfg: &AggregatorConfig,
        limits: &LimitsConfig,
        now: i64,
    ) -> ServiceResult<Self> {
        let k = k.unwrap_or(cfg.default_k);
        if k == 0 || k > cfg.max_k {
            return Err(ServiceError::invalid(format!(
                "field `k`: {k} is outside 1..={} (aggregator.max_k)",
                cfg.max_k
            )));
        }
        let at = at.unwrap_or(now);
        if at < 0 {
            return Err(ServiceError::invalid(format!(
                "field `at`: {at} ms is before the epoch"
            )));
        }
        let latest = now + limits.max_future_skew_s * 1000;
        if at > latest {
            return Err(ServiceError::invalid(format!(
                "field `at`: {at} ms is {} s in the future, at most {} s is allowed (limits.max_future_skew_s)",
                (at - now) / 1000,
                limits.max_future_skew_s
            )));
        }
        if let Some(s) = since {
            if s > at {
                return Err(ServiceError::invalid(format!(
                    "field `since`: {s} ms is after the request time `at` ({at} ms)"
                )));
            }
        }
        let channels = if channels.is_empty() {
            None
        } else {
            let mut out = Vec::new();
            for c in channels {
                let ch = Channel::parse(c.trim()).ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "field `channels`: unknown channel {c:?}, expected some of {}",
                        Channel::ALL.map(|c| c.as_str()).join(", ")
                    ))
                })?;
                if !out.contains(&ch) {
                    out.push(ch);
                }
            }
            Some(out)
        };
        Ok(Self {
            user_id,
            k,
            at,
            since,
            channels,
            logged_in: true,
            request_id: new_request_id(),
        })
    }

    /// The caller's request id instead of the one made, checked (field `request_id`).
    pub fn with_request_id(mut self, id: Option<&str>) -> ServiceResult<Self> {
        if let Some(id) = id {
            check_request_id(id)
                .map_err(|e| ServiceError::invalid(format!("field `request_id`: {e}")))?;
            self.request_id = id.to_string();
        }
        Ok(self)
    }

    /// Whether the request lets `c` run.
    pub fn wants(&self, c: Channel) -> bool {
        self.channels.as_ref().is_none_or(|v| v.contains(&c))
    }
}

/// A new request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Parses a time given as ms since the epoch or as an RFC 3339 string, naming the field.
pub fn parse_time(field: &str, s: &str) -> ServiceResult<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| parse_rfc3339_ms(s.trim()))
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "field `{field}`: {s:?} is neither ms since the epoch nor an RFC 3339 time such as 2026-01-02T03:04:05Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(k: Option<usize>, at: Option<i64>, ch: &[&str]) -> ServiceResult<RecallQuery> {
        let ch: Vec<String> = ch.iter().map(|s| s.to_string()).collect();
        RecallQuery::check(
            1,
            k,
            at,
            None,
            &ch,
            &AggregatorConfig::default(),
            &LimitsConfig::default(),
            1_000_000,
        )
    }

    #[test]
    fn one_rule_for_k_at_and_channels() {
        assert_eq!(check(None, None, &[]).unwrap().k, 50);
        assert_eq!(check(None, None, &[]).unwrap().at, 1_000_000);
        let e = check(Some(0), None, &[]).unwrap_err();
        assert!(e.text().contains("field `k`: 0"), "{e}");
        let e = check(None, Some(-1), &[]).unwrap_err();
        assert!(e.text().contains("field `at`") && e.text().contains("before the epoch"));
        let e = check(None, Some(1_000_000 + 301_000), &[]).unwrap_err();
        assert!(e.text().contains("in the future"), "{e}");
        let e = check(None, None, &["cluster", "pin"]).unwrap_err();
        assert!(e.text().contains("\"pin\""), "{e}");
        let q = check(None, Some(5), &["cluster", "popular", "cluster"]).unwrap();
        assert_eq!(q.channels, Some(vec![Channel::Cluster, Channel::Popular]));
        assert!(q.wants(Channel::Popular) && !q.wants(Channel::Category));
    }

    #[test]
    fn times_parse_as_ms_or_rfc3339() {
        assert_eq!(parse_time("at", "1000").unwrap(), 1000);
        assert_eq!(parse_time("at", "1970-01-01T00:00:01Z").unwrap(), 1000);
        let e = parse_time("at", "yesterday").unwrap_err();
        assert!(e.text().contains("field `at`"), "{e}");
    }
}
