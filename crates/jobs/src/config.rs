//! The whole configuration of a coldstart process, assembled from the sections that live with
//! their owners: the runtime's shared sections (`cluster`, `[node]`, `[discovery]`, `[limits]`,
//! `[telemetry]`) and each service's own (`[sharder]`, `[profile]`, `[traffic]`,
//! `[aggregator]`, `[encoder]`), and the two-tower training job's `[new_users]`. Loaded in layers (defaults → TOML → env `COLDSTART__SECTION__KEY`
//! → CLI flags) by the runtime's loader and validated section by section, naming the key of any
//! impossible value. Every key is documented in `config/coldstart.example.toml`.

use coldstart_aggregator::config::{AggregatorConfig, Peers, Settings, TrafficHorizon};
use coldstart_encoder::config::EncoderSettings;
use coldstart_models::two_tower::{UserColdConfig, UserMethod};
use coldstart_profile::config::ProfileConfig;
use coldstart_runtime::cluster::Routing;
use coldstart_runtime::config::{
    load_layered, ConfigError, DiscoveryConfig, LimitsConfig, NodeConfig, ProcessConfig,
    TelemetryConfig,
};
use coldstart_sharder::config::SharderConfig;
use coldstart_traffic::config::TrafficConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole configuration of a coldstart process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Cluster name: the etcd namespace is `/coldstart/{cluster}/`.
    pub cluster: String,
    /// This process.
    pub node: NodeConfig,
    /// Membership.
    pub discovery: DiscoveryConfig,
    /// Bounds on untrusted input.
    pub limits: LimitsConfig,
    /// Inverted lists.
    pub sharder: SharderConfig,
    /// User profiles.
    pub profile: ProfileConfig,
    /// New-item ledger.
    pub traffic: TrafficConfig,
    /// The public read API.
    pub aggregator: AggregatorConfig,
    /// The content encoder's backbone.
    pub encoder: EncoderSettings,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// How the two-tower model treats new users (training and the model file).
    pub new_users: NewUsersConfig,
}

/// `[new_users]`: the user cold-start part of the two-tower model. A user is new while they have
/// fewer than `profile.new_user_max_interactions` interactions (the profile's rule, so training,
/// the model and the aggregator agree), or, with `days` > 0, signed up less than that many days
/// before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NewUsersConfig {
    /// The ID embedding a new user's tower reads: id, meta, knn, group or combined.
    pub method: String,
    /// New also while signed up less than this many days before (0: the rule off).
    pub days: f32,
    /// Loss weight of training pairs whose user was new at the time (1: no weighting).
    pub sample_weight: f32,
    /// Extra training pairs per state of a new user: the same state with items they engaged
    /// later (0: only their next engagement).
    pub future_targets: usize,
    /// The shallow bias part (is_new, logged_in, days since sign-up, interaction bucket) next to
    /// the logit.
    pub bias_features: bool,
    /// Old users averaged for a new one (knn, combined).
    pub knn_k: usize,
    /// Attributes whose values make a user's group (group, combined): age, gender, occupation,
    /// region.
    pub group_by: Vec<String>,
}

impl Default for NewUsersConfig {
    fn default() -> Self {
        let d = UserColdConfig::default();
        Self {
            method: "knn".into(),
            days: d.new_user_days,
            sample_weight: 2.0,
            future_targets: 3,
            bias_features: false,
            knn_k: d.knn_k,
            group_by: d.group_by,
        }
    }
}

impl NewUsersConfig {
    /// The model's part, with the profile's rule of who is new; an impossible value is refused
    /// naming its key.
    pub fn model(&self, new_user_interactions: u64) -> Result<UserColdConfig, ConfigError> {
        let method = self
            .method
            .parse::<UserMethod>()
            .map_err(|e| ConfigError::Invalid {
                key: "new_users.method",
                message: e,
            })?;
        let c = UserColdConfig {
            method,
            new_user_interactions: new_user_interactions.min(u32::MAX as u64) as u32,
            new_user_days: self.days,
            new_user_weight: self.sample_weight,
            future_targets: self.future_targets,
            bias_features: self.bias_features,
            knn_k: self.knn_k,
            group_by: self.group_by.clone(),
            ..UserColdConfig::default()
        };
        c.validate().map_err(|e| {
            let (field, rest) = e.split_once(':').unwrap_or(("", e.as_str()));
            let key = match field {
                "new_user_weight" => "new_users.sample_weight",
                "new_user_days" => "new_users.days",
                "knn_k" => "new_users.knn_k",
                "group_by" => "new_users.group_by",
                _ => "new_users",
            };
            ConfigError::Invalid {
                key,
                message: rest.trim().to_string(),
            }
        })?;
        Ok(c)
    }
}

impl Default for Config {
    fn default() -> Self {
        let p = ProcessConfig::default();
        Self {
            cluster: p.cluster,
            node: p.node,
            discovery: p.discovery,
            limits: p.limits,
            sharder: SharderConfig::default(),
            profile: ProfileConfig::default(),
            traffic: TrafficConfig::default(),
            aggregator: AggregatorConfig::default(),
            encoder: EncoderSettings::default(),
            telemetry: p.telemetry,
            new_users: NewUsersConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `COLDSTART__SECTION__KEY` from the process
    /// environment. Call [`Config::validate`] after applying CLI flags.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        load_layered(path, env)
    }

    /// Rejects impossible values, naming the key: each section by its own rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.process().validate()?;
        self.sharder.validate()?;
        self.profile.validate()?;
        self.traffic.validate()?;
        self.aggregator.validate()?;
        self.new_users
            .model(self.profile.new_user_max_interactions)?;
        // a sharder refuses a pools read of more rows than a batch may hold: every recall
        // with the channel would fail
        coldstart_runtime::config::check(
            self.aggregator.two_tower_per_pool <= self.limits.max_batch_rows,
            "aggregator.two_tower_per_pool",
            format!(
                "{} is more than limits.max_batch_rows ({}), the most a sharder answers",
                self.aggregator.two_tower_per_pool, self.limits.max_batch_rows
            ),
        )
    }

    /// The sections every process shares, for the runtime's `Context`.
    pub fn process(&self) -> ProcessConfig {
        ProcessConfig {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            discovery: self.discovery.clone(),
            limits: self.limits.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    /// How this process's clients route: the sharders' replication, and the deadline of one
    /// call (`aggregator.request_timeout_ms`, at least 1 s).
    pub fn routing(&self) -> Routing {
        Routing {
            replication: self.sharder.replication,
            call_timeout: std::time::Duration::from_millis(
                self.aggregator.request_timeout_ms.max(1000),
            ),
        }
    }

    /// The aggregator's settings: its section and what it needs of the profile's and the
    /// sharder's.
    pub fn aggregator_settings(&self) -> Settings {
        Settings {
            aggregator: self.aggregator.clone(),
            peers: Peers {
                new_user_max_interactions: self.profile.new_user_max_interactions,
                recent_list_len: self.sharder.recent_list_len,
                max_batch_rows: self.limits.max_batch_rows,
                traffic_horizon: TrafficHorizon::new(self.traffic.window_h, self.traffic.promote_h),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every service's section layers like the shared ones, each is validated by its own
    /// rules, and the pieces handed to the runtime and the aggregator come from the right keys.
    #[test]
    fn sections_layer_validate_and_feed_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let text = "[sharder]\nreplication = 3\n[profile]\nnew_user_max_interactions = 4\n";
        std::fs::write(&file, text).unwrap();
        let env = [
            ("COLDSTART__SHARDER__RECENT_LIST_LEN", "77"),
            ("COLDSTART__AGGREGATOR__REQUEST_TIMEOUT_MS", "3000"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load_from(Some(&file), env).unwrap();
        c.validate().unwrap();
        let routing = c.routing();
        assert_eq!(routing.replication, 3);
        assert_eq!(routing.call_timeout, std::time::Duration::from_secs(3));
        let peers = c.aggregator_settings().peers;
        assert_eq!(
            (peers.new_user_max_interactions, peers.recent_list_len),
            (4, 77)
        );
        assert_eq!(c.process().cluster, "local");

        for (key, value, named) in [
            (
                "COLDSTART__SHARDER__REPLICATION",
                "0",
                "sharder.replication",
            ),
            (
                "COLDSTART__PROFILE__GROUP_BY",
                "[\"shoe_size\"]",
                "profile.group_by",
            ),
            ("COLDSTART__TRAFFIC__WINDOW_H", "0", "traffic.window_h"),
            (
                "COLDSTART__AGGREGATOR__QUOTA_CLUSTER",
                "0.9",
                "aggregator.quota_cluster",
            ),
            (
                "COLDSTART__LIMITS__MAX_BODY_BYTES",
                "10",
                "limits.max_body_bytes",
            ),
            (
                "COLDSTART__AGGREGATOR__TWO_TOWER_PER_POOL",
                "20000",
                "aggregator.two_tower_per_pool",
            ),
            (
                "COLDSTART__SHARDER__POOL_HOURS",
                "[1, 24, 6]",
                "sharder.pool_hours",
            ),
            ("COLDSTART__SHARDER__POOL_HOURS", "[]", "sharder.pool_hours"),
            ("COLDSTART__NEW_USERS__METHOD", "knnn", "new_users.method"),
            ("COLDSTART__NEW_USERS__KNN_K", "0", "new_users.knn_k"),
            (
                "COLDSTART__NEW_USERS__SAMPLE_WEIGHT",
                "-1",
                "new_users.sample_weight",
            ),
            (
                "COLDSTART__NEW_USERS__GROUP_BY",
                "[\"shoe\"]",
                "new_users.group_by",
            ),
            (
                "COLDSTART__AGGREGATOR__HANDOVER_DAYS",
                "-2",
                "aggregator.handover_days",
            ),
            (
                "COLDSTART__AGGREGATOR__NEW_USER_SEED_WEIGHT",
                "-0.5",
                "aggregator.new_user_seed_weight",
            ),
            (
                "COLDSTART__SHARDER__POOL_HOURS",
                "[0, 720]",
                "sharder.pool_hours",
            ),
            (
                "COLDSTART__AGGREGATOR__NEW_USER_FUSION_K",
                "0.5",
                "aggregator.new_user_fusion_k",
            ),
            (
                "COLDSTART__AGGREGATOR__NEW_USER_CF_WEIGHT",
                "-1",
                "aggregator.new_user_cf_weight",
            ),
            (
                "COLDSTART__AGGREGATOR__HOP_RETRIES",
                "11",
                "aggregator.hop_retries",
            ),
            (
                "COLDSTART__AGGREGATOR__HOP_RETRY_BACKOFF_MS",
                "1000",
                "aggregator.hop_retry_backoff_ms",
            ),
        ] {
            let err = Config::load_from(None, [(key.to_string(), value.to_string())])
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
    }

    fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() {
                    keys(v, &path, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn the_example_file_parses_equals_the_defaults_and_documents_every_key() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/coldstart.example.toml");
        let example = Config::load_from(Some(&path), Vec::<(String, String)>::new()).unwrap();
        assert_eq!(example, Config::default(), "the example lists the defaults");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut want = Vec::new();
        keys(
            &toml::Value::try_from(Config::default()).unwrap(),
            "",
            &mut want,
        );
        for key in want {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf} =")),
                "config/coldstart.example.toml does not document `{key}`"
            );
        }
        assert!(
            text.contains("# id ="),
            "node.id (no default) is documented"
        );
        assert!(
            text.contains("# advertise_host ="),
            "node.advertise_host is documented"
        );
        assert!(
            text.contains("# minilm_dir ="),
            "encoder.minilm_dir is documented"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let env = vec![(
            "COLDSTART__SHARDER__REPLICATON".to_string(),
            "2".to_string(),
        )];
        let err = Config::load_from(None, env).unwrap_err();
        assert!(err.to_string().contains("replicaton"), "{err}");
    }
}
