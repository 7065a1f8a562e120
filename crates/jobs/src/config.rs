//! The whole configuration of a coldstart process, assembled from the sections that live with
//! their owners: the runtime's shared sections (`cluster`, `[node]`, `[discovery]`, `[limits]`,
//! `[telemetry]`) and each service's own (`[sharder]`, `[profile]`, `[traffic]`,
//! `[aggregator]`, `[encoder]`). Loaded in layers (defaults → TOML → env `COLDSTART__SECTION__KEY`
//! → CLI flags) by the runtime's loader and validated section by section, naming the key of any
//! impossible value. Every key is documented in `config/coldstart.example.toml`.

use coldstart_aggregator::config::{AggregatorConfig, Peers, Settings};
use coldstart_encoder::config::EncoderSettings;
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
        self.aggregator.validate()
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
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_validate_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "cluster = \"t\"\n[sharder]\nreplication = 3\nmax_list_len = 7\n",
        )
        .unwrap();
        let env = vec![
            (
                "COLDSTART__SHARDER__MAX_LIST_LEN".to_string(),
                "9".to_string(),
            ),
            (
                "COLDSTART__DISCOVERY__ENDPOINTS".to_string(),
                "http://a:1,http://b:2".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load_from(Some(&file), env).unwrap();
        assert_eq!(c.cluster, "t");
        assert_eq!(c.sharder.replication, 3);
        assert_eq!(c.sharder.max_list_len, 9);
        assert_eq!(c.discovery.endpoints, vec!["http://a:1", "http://b:2"]);
        c.validate().unwrap();

        let bad = vec![(
            "COLDSTART__SHARDER__REPLICATION".to_string(),
            "0".to_string(),
        )];
        let err = Config::load_from(None, bad)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sharder.replication"), "{err}");
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
