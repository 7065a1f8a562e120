//! The `[sharder]` section of the configuration.

use coldstart_runtime::config::{check, ConfigError};
use serde::{Deserialize, Serialize};

/// Inverted lists on the sharders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SharderConfig {
    /// Copies of each key (capped by the number of live sharders).
    pub replication: usize,
    /// Entries kept per category/keyword/cluster list (newest first).
    pub max_list_len: usize,
    /// Entries kept in the `recent` list of newest items overall (the fallback channel).
    pub recent_list_len: usize,
    /// Write a Parquet snapshot and empty the write-ahead log once it exceeds this many bytes.
    pub snapshot_wal_bytes: u64,
    /// …or once it holds this many records (publish batches): a restart replays the log.
    pub snapshot_wal_records: u64,
    /// Content model versions whose cluster lists a sharder keeps: the current one and, with 2,
    /// the one before it (items published in the swap gap still point there). Older ones are
    /// dropped at the next swap.
    pub model_versions_kept: usize,
    /// The new-item pools' bounds, hours before the request time, ascending: pool `i` holds the
    /// items published in `(at - pool_hours[i], at - pool_hours[i - 1]]`. The last is how long an
    /// item stays in the two-tower channel's reach; set it to how long items on the platform take
    /// to graduate (reach `min_interactions` and be in a trained model). Every process of a
    /// cluster must read the same bounds (the aggregator merges hits pool by pool).
    pub pool_hours: Vec<i64>,
}

/// The longest pool bound accepted: ten years.
pub const MAX_POOL_HOURS: i64 = 10 * 366 * 24;

impl Default for SharderConfig {
    fn default() -> Self {
        Self {
            replication: 2,
            max_list_len: 1000,
            recent_list_len: 5000,
            snapshot_wal_bytes: 64 << 20,
            snapshot_wal_records: 20_000,
            model_versions_kept: 2,
            pool_hours: coldstart_contracts::sharder::DEFAULT_POOL_HOURS.to_vec(),
        }
    }
}

impl SharderConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.replication >= 1,
            "sharder.replication",
            "must be at least 1".into(),
        )?;
        check(
            self.snapshot_wal_records >= 1,
            "sharder.snapshot_wal_records",
            "must be at least 1".into(),
        )?;
        check(
            self.max_list_len >= 1,
            "sharder.max_list_len",
            "must be at least 1".into(),
        )?;
        check(
            self.model_versions_kept >= 1,
            "sharder.model_versions_kept",
            "must be at least 1 (the current version)".into(),
        )?;
        check(
            self.recent_list_len >= 1,
            "sharder.recent_list_len",
            "must be at least 1".into(),
        )?;
        let h = &self.pool_hours;
        check(
            !h.is_empty() && h.len() <= coldstart_contracts::sharder::MAX_POOLS,
            "sharder.pool_hours",
            format!(
                "has {} bounds; expected 1 to {}",
                h.len(),
                coldstart_contracts::sharder::MAX_POOLS
            ),
        )?;
        check(
            h.iter().all(|&x| (1..=MAX_POOL_HOURS).contains(&x)),
            "sharder.pool_hours",
            format!("is {h:?}; every bound must be 1 to {MAX_POOL_HOURS} hours"),
        )?;
        check(
            h.windows(2).all(|w| w[0] < w[1]),
            "sharder.pool_hours",
            format!("is {h:?}; the bounds must be strictly ascending"),
        )
    }
}
