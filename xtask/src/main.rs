//! Developer tasks for coldstart. `cargo xtask up | status | down | test | bench recall`.
//! Uses only the standard library for processes so it builds in seconds on a fresh machine.

mod bench;
mod chaos;

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask <up [--release] [--reload] | status | down [--wipe] | test | bench recall [--items N --users N --events N --requests N --concurrency N] | bench kmeans [--n N --k K --iterations N] | bench cluster-recall [--requests N --concurrency N] | bench pools [--n N --queries N] | bench two-tower [--events N --epochs N --uniform-negatives N --item-item W] | bench restart [--sizes 100000,1000000,5000000] | chaos [--fault-s 10 --recall-rps 150 --write-rps 50]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("up") => up(&root, &args[1..]),
        Some("status") => std::process::exit(status(&local(&root))?),
        Some("down") => down(&local(&root), args.iter().any(|a| a == "--wipe")),
        Some("test") => test(),
        Some("chaos") => chaos::chaos(&root, &args[1..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("recall") => {
            bench::recall(&root, &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("cluster-recall") => {
            bench::cluster_recall(&root, &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("two-tower") => {
            bench::two_tower(&root, &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("pools") => {
            bench::pools(&root, &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("restart") => {
            bench::restart(&root, &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("kmeans") => {
            bench::kmeans(&root, &args[2..])
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// A local cluster's layout and ports.
struct Local {
    dir: PathBuf,
    etcd_port: u16,
    http_port: u16,
    cluster: &'static str,
    bin: PathBuf,
}

fn local(root: &Path) -> Local {
    Local {
        dir: root.join("target/coldstart-local"),
        etcd_port: 23790,
        http_port: 8080,
        cluster: "local",
        bin: root.join("target/debug/coldstart"),
    }
}

/// Builds the release binaries (the service and the benchmarks) and returns the service's path.
fn release_bin(root: &Path) -> Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "coldstart-cli",
        "-p",
        "coldstart-bench",
    ])?;
    Ok(root.join("target/release/coldstart"))
}

/// The benchmark binary next to a release `coldstart` (built by [`release_bin`]).
fn bench_bin(bin: &Path) -> PathBuf {
    bin.with_file_name("coldstart-bench")
}

/// A local cluster of the release binary for a benchmark, under `target/{dir}`.
fn bench_local(
    root: &Path,
    dir: &str,
    etcd_port: u16,
    http_port: u16,
    cluster: &'static str,
) -> Result<Local> {
    Ok(Local {
        dir: root.join("target").join(dir),
        etcd_port,
        http_port,
        cluster,
        bin: release_bin(root)?,
    })
}

impl Local {
    fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
    fn pids(&self) -> PathBuf {
        self.dir.join("pids")
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// etcd and protoc from Debian; installed when running as root, else the command is printed.
fn ensure_tools() -> Result<()> {
    ensure_packages(&[
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("protoc", "protobuf-compiler"),
    ])
}

/// Installs the Debian packages whose commands are missing (as root), or names the command.
fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let pkgs: Vec<&str> = wanted
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|w| w.1)
        .collect();
    if pkgs.is_empty() {
        return Ok(());
    }
    let cmd = format!("apt-get update && apt-get install -y {}", pkgs.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        bail!(
            "missing {}: install them with\n    sudo sh -c '{cmd}'\nthen run this again",
            pkgs.join(", ")
        );
    }
    eprintln!("installing {} ...", pkgs.join(", "));
    let ok = Command::new("sh")
        .args(["-c", &cmd])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} not ready within {timeout:?}")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

fn running(l: &Local) -> Vec<(String, u32)> {
    let Ok(rd) = std::fs::read_dir(l.pids()) else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_string();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, pid))
        })
        .filter(|(_, pid)| alive(*pid))
        .collect()
}

fn spawn(l: &Local, name: &str, program: &Path, args: &[String]) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(l.dir.join("logs"))?;
    std::fs::create_dir_all(l.pids())?;
    let log = std::fs::File::create(l.dir.join("logs").join(format!("{name}.log")))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0) // survives the terminal's ctrl-c; `down` stops it
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    std::fs::write(l.pids().join(format!("{name}.pid")), child.id().to_string())?;
    Ok(child.id())
}

const ALL_NODES: [(&str, &str); 6] = [
    ("sharder", "sharder-0"),
    ("sharder", "sharder-1"),
    ("traffic", "traffic-0"),
    ("profile", "profile-0"),
    ("encoder", "encoder-0"),
    ("aggregator", "aggregator-0"),
];

fn start_cluster(l: &Local) -> Result<()> {
    start_nodes(l, &ALL_NODES)?;
    wait_while_progressing(l, "every role", Duration::from_secs(60), || status_quiet(l))
}

/// Like [`wait_until`], but a slow start is not a failure while it makes progress: past
/// `timeout`, it keeps waiting (up to 30 minutes) as long as some node's log was written in the
/// last 15 s (a sharder replaying a long log reports its progress there), and fails at once,
/// naming it, when a node has exited.
fn wait_while_progressing(
    l: &Local,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    let mut told = false;
    loop {
        if f() {
            return Ok(());
        }
        let alive: Vec<String> = running(l).into_iter().map(|(n, _)| n).collect();
        if let Some((_, dead)) = ALL_NODES
            .iter()
            .find(|(_, n)| !alive.iter().any(|a| a == n))
        {
            bail!(
                "{dead} exited while starting: see {}",
                l.dir.join("logs").join(format!("{dead}.log")).display()
            );
        }
        if started.elapsed() > timeout {
            let fresh = |n: &str| {
                std::fs::metadata(l.dir.join("logs").join(format!("{n}.log")))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(15))
            };
            let busy: Vec<&str> = ALL_NODES
                .iter()
                .map(|(_, n)| *n)
                .filter(|n| fresh(n))
                .collect();
            if busy.is_empty() || started.elapsed() > Duration::from_secs(1800) {
                bail!("{what} not ready within {:?}", started.elapsed());
            }
            if !told {
                println!(
                    "still starting after {timeout:?}, making progress: {}",
                    busy.join(", ")
                );
                told = true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts etcd and `nodes` (role, node id); returns once etcd answers (callers wait for roles).
fn start_nodes(l: &Local, nodes: &[(&str, &str)]) -> Result<()> {
    if !running(l).is_empty() {
        bail!(
            "a local cluster is already running under {} (cargo xtask down stops it)",
            l.dir.display()
        );
    }
    start_etcd(l)?;
    for &(role, node) in nodes {
        spawn_node(l, role, node)?;
    }
    Ok(())
}

/// Starts etcd on `l`'s port with its data under `{dir}/etcd`; returns once it answers.
fn start_etcd(l: &Local) -> Result<()> {
    let etcd_dir = l.dir.join("etcd");
    std::fs::create_dir_all(&etcd_dir)?;
    let peer = l.etcd_port + 1;
    spawn(
        l,
        "etcd",
        Path::new("etcd"),
        &[
            "--name".into(),
            "local".into(),
            "--data-dir".into(),
            etcd_dir.display().to_string(),
            "--listen-client-urls".into(),
            l.etcd_url(),
            "--advertise-client-urls".into(),
            l.etcd_url(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-cluster".into(),
            format!("local=http://127.0.0.1:{peer}"),
        ],
    )?;
    wait_until("etcd", Duration::from_secs(20), || {
        http_get(&format!("127.0.0.1:{}", l.etcd_port), "/health")
            .is_some_and(|(c, b)| c == 200 && b.contains("true"))
    })
}

/// Starts (or restarts) one node of `l`.
fn spawn_node(l: &Local, role: &str, node: &str) -> Result<u32> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        role.into(),
        "--node-id".into(),
        node.into(),
        "--data-dir".into(),
        l.dir.join("data").display().to_string(),
        "--etcd".into(),
        l.etcd_url(),
        "--cluster".into(),
        l.cluster.into(),
    ];
    if role == "aggregator" {
        args.extend(["--http-port".to_string(), l.http_port.to_string()]);
    }
    spawn(l, node, &l.bin, &args)
}

fn status_args(l: &Local) -> Vec<String> {
    vec![
        "status".into(),
        "--etcd".into(),
        l.etcd_url(),
        "--cluster".into(),
        l.cluster.into(),
    ]
}

fn status_quiet(l: &Local) -> bool {
    Command::new(&l.bin)
        .args(status_args(l))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn status(l: &Local) -> Result<i32> {
    if !l.bin.exists() {
        bail!("{} is not built: run cargo xtask up", l.bin.display());
    }
    Ok(Command::new(&l.bin)
        .args(status_args(l))
        .status()?
        .code()
        .unwrap_or(1))
}

fn load_demo(l: &Local, items: u64, users: u64, events: u64) -> Result<()> {
    let ok = Command::new(&l.bin)
        .args([
            "demo",
            "--url",
            &l.api(),
            "--items",
            &items.to_string(),
            "--users",
            &users.to_string(),
            "--events",
            &events.to_string(),
        ])
        .status()?
        .success();
    if !ok {
        bail!("loading demo data failed");
    }
    Ok(())
}

/// Trains the content model on the demo data (its items and the profile's real event log),
/// clusters and publishes the model (every encoder and sharder swaps to it): cluster recall from the first request.
fn train_demo_model(l: &Local, n_items: u64) -> Result<()> {
    let items = l.dir.join("demo-items.parquet");
    let ok = Command::new(&l.bin)
        .args([
            "demo",
            "--url",
            &l.api(),
            "--items",
            &n_items.to_string(),
            "--users",
            "0",
            "--events",
            "0",
            "--no-load",
            "--write-items",
        ])
        .arg(&items)
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("writing the demo items failed");
    }
    let models = l.dir.join("models").display().to_string();
    let items_s = items.display().to_string();
    let log = l.dir.join("data/profile-0/log").display().to_string();
    for args in [
        vec![
            "train",
            "encoder",
            "--items",
            &items_s,
            "--events",
            &log,
            "--out",
            &models,
            "--version",
            "demo-v1",
            "--epochs",
            "3",
            "--buckets",
            "65536",
            "--hidden",
            "64",
            "--dim",
            "32",
        ],
        vec![
            "train",
            "clusters",
            "--items",
            &items_s,
            "--out",
            &models,
            "--version",
            "demo-v1",
            "--k",
            "128",
            "--publish",
            "--etcd",
            &l.etcd_url(),
            "--cluster",
            l.cluster,
        ],
    ] {
        if !Command::new(&l.bin).args(&args).status()?.success() {
            bail!("coldstart {} failed", args[..2].join(" "));
        }
    }
    Ok(())
}

/// Trains the two-tower model on the demo items and the profile's event log (content vectors
/// from `demo-v1`, trained by [`train_demo_model`]) and rolls it out as `demo-tt1`.
fn train_demo_two_tower(l: &Local) -> Result<()> {
    let models = l.dir.join("models");
    let args: Vec<String> = vec![
        "train".into(),
        "two-tower".into(),
        "--items".into(),
        l.dir.join("demo-items.parquet").display().to_string(),
        "--events".into(),
        l.dir.join("data/profile-0/log").display().to_string(),
        "--content-model".into(),
        models.join("demo-v1/manifest.json").display().to_string(),
        "--out".into(),
        models.display().to_string(),
        "--version".into(),
        "demo-tt1".into(),
        "--epochs".into(),
        "1".into(),
        "--buckets".into(),
        "65536".into(),
        "--hidden".into(),
        "64".into(),
        "--dim".into(),
        "32".into(),
        "--publish".into(),
        "--etcd".into(),
        l.etcd_url(),
        "--cluster".into(),
        l.cluster.into(),
    ];
    if !Command::new(&l.bin).args(&args).status()?.success() {
        bail!("coldstart train two-tower failed");
    }
    Ok(())
}

fn up(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools()?;
    let release = args.iter().any(|a| a == "--release");
    let mut l = local(root);
    if release {
        l.bin = release_bin(root)?;
    } else {
        cargo(&["build", "-p", "coldstart-cli"])?;
    }
    start_cluster(&l)?;
    let marker = l.dir.join("demo-loaded");
    if !marker.exists() || args.iter().any(|a| a == "--reload") {
        load_demo(&l, 5_000, 500, 20_000)?;
        train_demo_model(&l, 5_000)?;
        std::fs::write(&marker, "")?;
    }
    status(&l)?;
    println!();
    println!("coldstart is up: public API on {}", l.api());
    println!("  recall:  curl '{}/v1/recall?user_id=7&k=10'", l.api());
    println!("  publish: curl -XPOST {}/v1/items --data-binary '{{\"item_id\":900001,\"publish_ts\":\"2026-01-01T00:00:00Z\",\"category\":\"cats\",\"keywords\":[\"kitten\"],\"title\":\"a new cat\"}}'", l.api());
    println!("  logs:    {}", l.dir.join("logs").display());
    println!("  status:  cargo xtask status      stop: cargo xtask down");
    Ok(())
}

fn down(l: &Local, wipe: bool) -> Result<()> {
    let procs = running(l);
    // services first (they deregister), etcd last
    let (etcd, services): (Vec<_>, Vec<_>) = procs.into_iter().partition(|(n, _)| n == "etcd");
    for group in [services, etcd] {
        for (_, pid) in &group {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while group.iter().any(|(_, p)| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for (name, pid) in &group {
            if alive(*pid) {
                eprintln!("{name} ({pid}) did not stop on SIGTERM, killing");
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
            println!("stopped {name} ({pid})");
        }
    }
    let _ = std::fs::remove_dir_all(l.pids());
    if wipe {
        let _ = std::fs::remove_dir_all(&l.dir);
        println!("wiped {}", l.dir.display());
    }
    Ok(())
}

/// The cargo features `cargo xtask test` (and so CI) builds and tests with.
const TEST_FEATURES: &str = "coldstart-cli/minilm,coldstart-integration-tests/minilm";

fn test() -> Result<()> {
    ensure_tools()?;
    // one build serves every test: the binaries the integration tests start, then the tests,
    // with the MiniLM backbone built and tested too (the same features for both, so the test
    // build reuses the binaries' artifacts)
    cargo(&[
        "build",
        "--workspace",
        "--bins",
        "--features",
        TEST_FEATURES,
    ])?;
    cargo(&[
        "test",
        "--workspace",
        "--no-fail-fast",
        "--features",
        TEST_FEATURES,
    ])
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context(format!("{name} needs a value"))?
            .parse()
            .context(format!("{name} takes a number")),
        None => Ok(default),
    }
}
