//! The `[traffic]` section of the configuration.

use coldstart_runtime::config::{check, ConfigError};
use serde::{Deserialize, Serialize};

/// New-item ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// Impressions guaranteed to a new item within `window_h`.
    pub target_impressions: u64,
    /// The guarantee window, hours.
    pub window_h: f64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            target_impressions: 100,
            window_h: 24.0,
        }
    }
}

impl TrafficConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.window_h > 0.0,
            "traffic.window_h",
            "must be positive".into(),
        )
    }
}
