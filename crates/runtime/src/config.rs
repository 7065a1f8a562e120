//! Layered configuration: `Default` → `coldstart.toml` → env `COLDSTART__SECTION__KEY` → CLI flags,
//! then [`Config::validate`], which names the key of any impossible value. Every key is documented in
//! `config/coldstart.example.toml`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or an env override is not valid TOML for the schema.
    #[error("parse config: {0}")]
    Parse(String),
    /// A key holds an impossible value.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `sharder.replication`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

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

/// Where this process listens and keeps its files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node id (a sharder's id decides which keys it owns). Default: `{role}-{hostname}-{pid}`.
    pub id: Option<String>,
    /// Durable state lives under `{data_dir}/{node_id}`.
    pub data_dir: PathBuf,
    /// Address to bind.
    pub listen_host: String,
    /// Host that peers use to reach this node (default: `listen_host`).
    pub advertise_host: Option<String>,
    /// HTTP port (health, metrics, public API); 0 picks a free port.
    pub http_port: u16,
    /// Arrow Flight (gRPC) port; 0 picks a free port.
    pub flight_port: u16,
}

/// How members find each other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `etcd` or `memory` (single process only).
    pub backend: String,
    /// etcd endpoints, e.g. `["http://127.0.0.1:23790"]` or `"http://a:2379,http://b:2379"`.
    #[serde(deserialize_with = "string_or_list")]
    pub endpoints: Vec<String>,
    /// Lease TTL of a member key, seconds.
    pub lease_ttl_s: u64,
    /// Timeout of one etcd request, milliseconds.
    pub request_timeout_ms: u64,
}

/// Bounds on untrusted input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Rows in one ingest batch.
    pub max_batch_rows: usize,
    /// Bytes of one HTTP request body.
    pub max_body_bytes: usize,
    /// Bytes of one gRPC/Flight message (raised deliberately above tonic's 4 MiB on both sides).
    pub max_message_bytes: usize,
    /// How far in the future a timestamp may be, seconds.
    pub max_future_skew_s: i64,
    /// Bytes of one text field (title, body, category, keyword).
    pub max_text_bytes: usize,
    /// Keywords of one item.
    pub max_keywords: usize,
    /// Length of `image_vec` when present.
    pub image_dim: usize,
}

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
    /// Content model versions whose cluster lists a sharder keeps: the current one and, with 2,
    /// the one before it (items published in the swap gap still point there). Older ones are
    /// dropped at the next swap.
    pub model_versions_kept: usize,
}

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
    /// User attributes that form a group for group popularity, joined in this order
    /// (any of `age_bucket`, `gender`, `occupation`, `region`).
    pub group_by: Vec<String>,
}

/// New-item ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// Impressions guaranteed to a new item within `window_h`.
    pub target_impressions: u64,
    /// The guarantee window, hours.
    pub window_h: f64,
}

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
    /// Half-life of the recency factor in the scores of new-item channels, hours; 0 turns it
    /// off (freshness then comes from the lists themselves: newest first and bounded).
    pub recency_half_life_h: f64,
    /// Deadline of one downstream call, milliseconds.
    pub request_timeout_ms: u64,
}

/// The content encoder's pretrained backbone, for models trained on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderSettings {
    /// Folder of the all-MiniLM-L6-v2 files (`config.json`, `tokenizer.json`,
    /// `model.safetensors`); needed by encoders and training jobs for models with the `minilm`
    /// backbone (a build with the cargo feature `minilm`).
    pub minilm_dir: Option<PathBuf>,
}

/// Logs and traces. OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: "local".into(),
            node: NodeConfig::default(),
            discovery: DiscoveryConfig::default(),
            limits: LimitsConfig::default(),
            sharder: SharderConfig::default(),
            profile: ProfileConfig::default(),
            traffic: TrafficConfig::default(),
            aggregator: AggregatorConfig::default(),
            encoder: EncoderSettings::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            data_dir: PathBuf::from("data"),
            listen_host: "127.0.0.1".into(),
            advertise_host: None,
            http_port: 0,
            flight_port: 0,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            backend: "etcd".into(),
            endpoints: vec!["http://127.0.0.1:23790".into()],
            lease_ttl_s: 5,
            request_timeout_ms: 2000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_batch_rows: 10_000,
            max_body_bytes: 16 << 20,
            max_message_bytes: 64 << 20,
            max_future_skew_s: 300,
            max_text_bytes: 64 << 10,
            max_keywords: 64,
            image_dim: 128,
        }
    }
}

impl Default for SharderConfig {
    fn default() -> Self {
        Self {
            replication: 2,
            max_list_len: 1000,
            recent_list_len: 5000,
            snapshot_wal_bytes: 64 << 20,
            model_versions_kept: 2,
        }
    }
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
            group_by: vec!["age_bucket".into(), "gender".into(), "region".into()],
        }
    }
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            target_impressions: 100,
            window_h: 24.0,
        }
    }
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
            recency_half_life_h: 0.0,
            request_timeout_ms: 2000,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            log_filter: "info".into(),
        }
    }
}

const ENV_PREFIX: &str = "COLDSTART__";

/// The user attributes a group for group popularity can be formed of.
pub const GROUP_ATTRIBUTES: [&str; 4] = ["age_bucket", "gender", "occupation", "region"];

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
        let mut tree = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file: toml::Value = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
            merge(&mut tree, file);
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (key, value) in overrides {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            set_path(&mut tree, &path, parse_env_value(&value))
                .map_err(|m| ConfigError::Parse(format!("env {key}: {m}")))?;
        }
        tree.try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &'static str, message: String) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { key, message })
            }
        }
        check(
            !self.cluster.is_empty() && !self.cluster.contains('/'),
            "cluster",
            format!("{:?} must be non-empty and contain no '/'", self.cluster),
        )?;
        check(
            matches!(self.discovery.backend.as_str(), "etcd" | "memory"),
            "discovery.backend",
            format!("{:?} is not one of etcd, memory", self.discovery.backend),
        )?;
        check(
            self.discovery.backend != "etcd" || !self.discovery.endpoints.is_empty(),
            "discovery.endpoints",
            "at least one endpoint is needed with the etcd backend".into(),
        )?;
        check(
            self.discovery.lease_ttl_s >= 1,
            "discovery.lease_ttl_s",
            format!("{} must be at least 1", self.discovery.lease_ttl_s),
        )?;
        check(
            self.limits.max_batch_rows >= 1,
            "limits.max_batch_rows",
            "must be at least 1".into(),
        )?;
        check(
            self.limits.max_body_bytes >= 1024,
            "limits.max_body_bytes",
            format!("{} must be at least 1024", self.limits.max_body_bytes),
        )?;
        check(
            self.limits.max_message_bytes >= self.limits.max_body_bytes,
            "limits.max_message_bytes",
            format!(
                "{} must be at least limits.max_body_bytes ({})",
                self.limits.max_message_bytes, self.limits.max_body_bytes
            ),
        )?;
        check(
            self.limits.max_future_skew_s >= 0,
            "limits.max_future_skew_s",
            "must not be negative".into(),
        )?;
        check(
            self.sharder.replication >= 1,
            "sharder.replication",
            "must be at least 1".into(),
        )?;
        check(
            self.sharder.max_list_len >= 1,
            "sharder.max_list_len",
            "must be at least 1".into(),
        )?;
        check(
            self.sharder.model_versions_kept >= 1,
            "sharder.model_versions_kept",
            "must be at least 1 (the current version)".into(),
        )?;
        check(
            self.sharder.recent_list_len >= 1,
            "sharder.recent_list_len",
            "must be at least 1".into(),
        )?;
        check(
            self.profile.last_n >= 1,
            "profile.last_n",
            "must be at least 1".into(),
        )?;
        check(
            self.profile.interest_half_life_h > 0.0,
            "profile.interest_half_life_h",
            "must be positive".into(),
        )?;
        check(
            self.profile.new_item_window_h > 0.0,
            "profile.new_item_window_h",
            "must be positive".into(),
        )?;
        check(
            self.traffic.window_h > 0.0,
            "traffic.window_h",
            "must be positive".into(),
        )?;
        check(
            self.aggregator.default_k >= 1 && self.aggregator.default_k <= self.aggregator.max_k,
            "aggregator.default_k",
            format!(
                "{} must be in 1..=aggregator.max_k ({})",
                self.aggregator.default_k, self.aggregator.max_k
            ),
        )?;
        let q = self.aggregator.quota_category
            + self.aggregator.quota_keyword
            + self.aggregator.quota_cluster;
        check(
            (0.0..=1.0).contains(&self.aggregator.quota_category),
            "aggregator.quota_category",
            "must be in [0, 1]".into(),
        )?;
        check(
            (0.0..=1.0).contains(&self.aggregator.quota_keyword),
            "aggregator.quota_keyword",
            "must be in [0, 1]".into(),
        )?;
        check(
            (0.0..=1.0).contains(&self.aggregator.quota_cluster) && q <= 1.0,
            "aggregator.quota_cluster",
            format!("must be in [0, 1], and the three quotas together ({q}) at most 1"),
        )?;
        for (key, v) in [
            ("aggregator.quota_popular", self.aggregator.quota_popular),
            (
                "aggregator.quota_group_popular",
                self.aggregator.quota_group_popular,
            ),
            (
                "aggregator.quota_onboarding",
                self.aggregator.quota_onboarding,
            ),
        ] {
            check(
                (0.0..=1.0).contains(&v),
                key,
                format!("{v} must be in [0, 1]"),
            )?;
        }
        let nq = self.aggregator.quota_popular
            + self.aggregator.quota_group_popular
            + self.aggregator.quota_onboarding;
        check(
            nq <= 1.0,
            "aggregator.quota_onboarding",
            format!("the three new-user quotas together ({nq}) must be at most 1"),
        )?;
        check(
            self.aggregator.similarity_temperature >= 0.0
                && self.aggregator.similarity_temperature.is_finite(),
            "aggregator.similarity_temperature",
            format!(
                "{} must be finite and not negative (0 turns the ranking off)",
                self.aggregator.similarity_temperature
            ),
        )?;
        check(
            self.profile.popular_half_life_h > 0.0,
            "profile.popular_half_life_h",
            "must be positive".into(),
        )?;
        check(
            self.profile.popular_capacity >= 1,
            "profile.popular_capacity",
            "must be at least 1".into(),
        )?;
        for g in &self.profile.group_by {
            check(
                GROUP_ATTRIBUTES.contains(&g.as_str()),
                "profile.group_by",
                format!("{g:?} is not one of {}", GROUP_ATTRIBUTES.join(", ")),
            )?;
        }
        check(
            self.aggregator.recency_half_life_h >= 0.0
                && self.aggregator.recency_half_life_h.is_finite(),
            "aggregator.recency_half_life_h",
            "must be finite and not negative (0 turns recency off)".into(),
        )?;
        check(
            matches!(self.telemetry.log_format.as_str(), "text" | "json"),
            "telemetry.log_format",
            format!("{:?} is not one of text, json", self.telemetry.log_format),
        )?;
        Ok(())
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn set_path(tree: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = tree;
    for p in parents {
        cur = cur
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    cur.as_table_mut()
        .ok_or("not a section")?
        .insert(last.clone(), value);
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Wrap {
        v: toml::Value,
    }
    toml::from_str::<Wrap>(&format!("v = {raw}"))
        .map(|w| w.v)
        .unwrap_or_else(|_| toml::Value::String(raw.to_string()))
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Either::Many(v) => v,
    })
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
