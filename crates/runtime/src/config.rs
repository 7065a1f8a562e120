//! Layered configuration: `Default` → `coldstart.toml` → env `COLDSTART__SECTION__KEY` → CLI flags,
//! then validation, which names the key of any impossible value. Every key is documented in
//! `config/coldstart.example.toml`.
//!
//! The runtime owns the loader ([`load_layered`]) and the sections every process shares
//! ([`ProcessConfig`]: cluster, node, discovery, limits, telemetry). Each service's section lives
//! with its service (`coldstart_profile::config::ProfileConfig`, …); the whole file is assembled
//! and validated by `coldstart_jobs::config::Config`, and each service is started with its own
//! section.

use serde::de::DeserializeOwned;
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

/// `Ok` when `ok`, else [`ConfigError::Invalid`] for `key`: the one way sections validate.
pub fn check(ok: bool, key: &'static str, message: String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { key, message })
    }
}

/// The sections every process shares, as the runtime uses them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Cluster name: the etcd namespace is `/coldstart/{cluster}/`.
    pub cluster: String,
    /// This process.
    pub node: NodeConfig,
    /// Membership.
    pub discovery: DiscoveryConfig,
    /// Bounds on untrusted input.
    pub limits: LimitsConfig,
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
    /// HTTP: a client must send a request's whole header within this long, milliseconds; the
    /// same bounds how long a connection may sit idle between requests.
    pub http_header_timeout_ms: u64,
    /// HTTP and Flight: one request, its body read included, must be answered within this long,
    /// milliseconds (a client trickling a body is cut off: 408).
    pub request_timeout_ms: u64,
    /// HTTP and Flight: connections served at once by one server; beyond, new ones are closed at
    /// once (counted as `http_connections_refused` / `flight_connections_refused` in
    /// `/metrics`). A Flight client must also send its HTTP/2 preface within
    /// `http_header_timeout_ms`.
    pub max_connections: usize,
    /// Flight: requests served at once on one connection.
    pub flight_concurrency_per_connection: usize,
    /// Flight: a connection the client sends nothing on for this long is closed, milliseconds;
    /// the server pings an idle peer at half this and waits a quarter for the answer, so a live
    /// peer's connection stays open.
    pub flight_idle_timeout_ms: u64,
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

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            cluster: "local".into(),
            node: NodeConfig::default(),
            discovery: DiscoveryConfig::default(),
            limits: LimitsConfig::default(),
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
            http_header_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            max_connections: 4096,
            flight_concurrency_per_connection: 256,
            flight_idle_timeout_ms: 60_000,
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

impl ProcessConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        for (key, v) in [
            (
                "limits.http_header_timeout_ms",
                self.limits.http_header_timeout_ms,
            ),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            ("limits.max_connections", self.limits.max_connections as u64),
            (
                "limits.flight_concurrency_per_connection",
                self.limits.flight_concurrency_per_connection as u64,
            ),
            (
                "limits.flight_idle_timeout_ms",
                self.limits.flight_idle_timeout_ms,
            ),
        ] {
            check(v >= 1, key, format!("{v} must be at least 1"))?;
        }
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
            matches!(self.telemetry.log_format.as_str(), "text" | "json"),
            "telemetry.log_format",
            format!("{:?} is not one of text, json", self.telemetry.log_format),
        )
    }
}

const ENV_PREFIX: &str = "COLDSTART__";

/// Layers a configuration of type `T`: its defaults, then the TOML file (if any), then
/// `COLDSTART__SECTION__KEY` from `env` (values parsed as TOML, else taken as strings). A key
/// `T` does not know is refused by name if `T` denies unknown fields.
pub fn load_layered<T: Serialize + DeserializeOwned + Default>(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut tree =
        toml::Value::try_from(T::default()).map_err(|e| ConfigError::Parse(e.to_string()))?;
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

/// Deserializes a list from a TOML list or a comma-separated string (env values).
pub fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
        std::fs::write(&file, "cluster = \"t\"\n[limits]\nmax_keywords = 7\n").unwrap();
        let env = vec![
            (
                "COLDSTART__LIMITS__MAX_KEYWORDS".to_string(),
                "9".to_string(),
            ),
            (
                "COLDSTART__DISCOVERY__ENDPOINTS".to_string(),
                "http://a:1,http://b:2".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c: ProcessConfig = load_layered(Some(&file), env).unwrap();
        assert_eq!(c.cluster, "t");
        assert_eq!(c.limits.max_keywords, 9);
        assert_eq!(c.discovery.endpoints, vec!["http://a:1", "http://b:2"]);
        c.validate().unwrap();

        let bad = vec![("COLDSTART__CLUSTER".to_string(), "a/b".to_string())];
        let err = load_layered::<ProcessConfig>(None, bad)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("`cluster`"), "{err}");
        let unknown = vec![(
            "COLDSTART__LIMITS__MAX_KEYWORD".to_string(),
            "2".to_string(),
        )];
        let err = load_layered::<ProcessConfig>(None, unknown).unwrap_err();
        assert!(err.to_string().contains("max_keyword"), "{err}");
    }
}
