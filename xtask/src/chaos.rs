//! `cargo xtask chaos`: faults against a local cluster under steady load. The cluster (etcd, two
//! sharders, profile, traffic, encoder, aggregator; the demo data and content model) runs under
//! `target/coldstart-chaos`; threads send recalls, publishes and events at fixed rates while each
//! service in turn is killed with SIGKILL and restarted after `--fault-s`, then etcd is restarted
//! with its data and once without it. Per fault: failed requests, the longest run of failed
//! recalls, degraded answers, and how long the node took to be ready again. At the end every
//! acknowledged item must be in a sharder's forward index and filed in a cluster, and every
//! acknowledged like must be in its user's profile. Writes `target/chaos/report.md` and `.json`.

use crate::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Recall,
    Publish,
    Event,
}

/// One request of the load: when (s since the load began), what, whether it succeeded, whether
/// the answer was degraded.
#[derive(Clone, Copy)]
struct Rec {
    t: f64,
    kind: Kind,
    ok: bool,
    degraded: bool,
}

#[derive(Default)]
struct Acked {
    items: Vec<u64>,
    /// (user, item) of every acknowledged like.
    likes: Vec<(u64, u64)>,
}

/// An HTTP/1.1 request on a fresh connection (no pooling: a killed aggregator must not leave a
/// dead socket in a pool); `(status, body)`.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

struct Load {
    stop: Arc<AtomicBool>,
    recs: Arc<Mutex<Vec<Rec>>>,
    acked: Arc<Mutex<Acked>>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Recalls at `recall_rps` over 4 threads, publishes and events at `write_rps` each.
    fn start(api: &str, users: u64, items: u64, recall_rps: u64, write_rps: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let recs: Arc<Mutex<Vec<Rec>>> = Arc::default();
        let acked: Arc<Mutex<Acked>> = Arc::default();
        let started = Instant::now();
        let addr = api.trim_start_matches("http://").to_string();
        let next_item = Arc::new(AtomicU64::new(50_000_000));
        let mut threads = Vec::new();
        let mut worker = |kind: Kind, rps: u64, seed: u64| {
            let (stop, recs, acked) = (stop.clone(), recs.clone(), acked.clone());
            let (addr, next_item) = (addr.clone(), next_item.clone());
            threads.push(std::thread::spawn(move || {
                let period = Duration::from_secs_f64(1.0 / rps.max(1) as f64);
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut rand = move |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n.max(1)
                };
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    next += period;
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let (ok, degraded) = match kind {
                        Kind::Recall => {
                            let user = 1 + rand(users);
                            match http(&addr, "GET", &format!("/v1/recall?user_id={user}&k=20"), None) {
                                Some((200, body)) => (true, !body.contains("\"degraded\":[]")),
                                other => {
                                    let why = other.map_or("no answer".to_string(), |(c, b)| {
                                        format!("{c} {}", b.chars().take(160).collect::<String>())
                                    });
                                    eprintln!("recall failed: {why}");
                                    (false, false)
                                }
                            }
                        }
                        Kind::Publish => {
                            let id = next_item.fetch_add(1, Ordering::Relaxed);
                            let row = format!(
                                r#"{{"item_id": {id}, "publish_ts": {now_ms}, "category": "cats", "keywords": ["kitten"], "title": "chaos cat {id}"}}"#
                            );
                            let ok = matches!(http(&addr, "POST", "/v1/items", Some(&row)), Some((200, _)));
                            if ok {
                                acked.lock().unwrap().items.push(id);
                            }
                            (ok, false)
                        }
                        Kind::Event => {
                            let (user, item) = (1 + rand(users), 1 + rand(items));
                            let row = format!(
                                r#"{{"user_id": {user}, "item_id": {item}, "ts": {now_ms}, "action": "like"}}"#
                            );
                            let ok = matches!(http(&addr, "POST", "/v1/events", Some(&row)), Some((200, _)));
                            if ok {
                                acked.lock().unwrap().likes.push((user, item));
                            }
                            (ok, false)
                        }
                    };
                    let t = started.elapsed().as_secs_f64();
                    recs.lock().unwrap().push(Rec { t, kind, ok, degraded });
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    } else {
                        next = Instant::now();
                    }
                }
            }));
        };
        for i in 0..4 {
            worker(Kind::Recall, recall_rps.div_ceil(4), 11 + i);
        }
        worker(Kind::Publish, write_rps, 3);
        worker(Kind::Event, write_rps, 5);
        Load {
            stop,
            recs,
            acked,
            started,
            threads,
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn finish(self) -> (Vec<Rec>, Acked) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let recs = std::mem::take(&mut *self.recs.lock().unwrap());
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (recs, acked)
    }
}

/// What one fault did.
struct Outcome {
    fault: String,
    /// From the restart of the node (or of etcd) to every member registered and ready, s.
    back_s: f64,
    recalls: (usize, usize),
    writes: (usize, usize),
    degraded: usize,
    longest_unavailable_s: f64,
}

fn outcome(fault: &str, recs: &[Rec], from: f64, to: f64, back_s: f64) -> Outcome {
    let window: Vec<&Rec> = recs.iter().filter(|r| r.t >= from && r.t <= to).collect();
    let count = |k: &dyn Fn(&Rec) -> bool| {
        let all = window.iter().filter(|r| k(r)).count();
        let failed = window.iter().filter(|r| k(r) && !r.ok).count();
        (failed, all)
    };
    let recalls = count(&|r| r.kind == Kind::Recall);
    let writes = count(&|r| r.kind != Kind::Recall);
    let degraded = window
        .iter()
        .filter(|r| r.kind == Kind::Recall && r.ok && r.degraded)
        .count();
    // the longest stretch between two successful recalls
    let mut longest: f64 = 0.0;
    let mut last_ok = from;
    for r in window.iter().filter(|r| r.kind == Kind::Recall) {
        if r.ok {
            longest = longest.max(r.t - last_ok);
            last_ok = r.t;
        }
    }
    longest = longest.max(to - last_ok);
    Outcome {
        fault: fault.into(),
        back_s,
        recalls,
        writes,
        degraded,
        longest_unavailable_s: longest,
    }
}

/// The http address of every member, from `coldstart status`.
fn members(l: &Local) -> HashMap<String, String> {
    let out = Command::new(&l.bin).args(status_args(l)).output();
    let Ok(out) = out else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[1].to_string(), f[4].to_string()))
        })
        .collect()
}

fn ready(addr: &str) -> bool {
    http(addr, "GET", "/readyz", None).is_some_and(|(c, _)| c == 200)
}

/// Seconds from `since` until every node is registered and ready (at most 60 s).
fn wait_all_ready(l: &Local, since: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let m = members(l);
        if ALL_NODES
            .iter()
            .all(|(_, n)| m.get(*n).is_some_and(|a| ready(a)))
        {
            return since.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f64::INFINITY
}

fn kill9(l: &Local, node: &str) -> Result<()> {
    let pid = std::fs::read_to_string(l.pids().join(format!("{node}.pid")))?;
    let ok = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()?
        .success();
    if !ok {
        bail!("kill -9 {node} ({}) failed", pid.trim());
    }
    Ok(())
}

pub fn chaos(root: &Path, args: &[String]) -> Result<()> {
    let fault_s = flag(args, "--fault-s", 10)?;
    let recall_rps = flag(args, "--recall-rps", 150)?;
    let write_rps = flag(args, "--write-rps", 50)?;
    ensure_tools()?;
    let l = bench_local(root, "coldstart-chaos", 23990, 8280, "chaos")?;
    let _ = down(&l, true);
    let (n_items, n_users) = (2_000, 200);
    start_cluster(&l)?;
    let out = (|| -> Result<(Vec<Outcome>, Vec<String>)> {
        load_demo(&l, n_items, n_users, 5_000)?;
        train_demo_model(&l, n_items)?;
        // (the profile's http port changes when it restarts: asked again after the faults)
        let profile_of = |addr: &str, user: u64| -> Option<u64> {
            let (_, body) = http(addr, "GET", &format!("/v1/profile/{user}"), None)?;
            serde_json::from_str::<serde_json::Value>(&body).ok()?["interactions"].as_u64()
        };
        let profile = members(&l)
            .remove("profile-0")
            .context("no profile-0 member")?;
        let before: HashMap<u64, u64> = (1..=n_users)
            .map(|u| (u, profile_of(&profile, u).unwrap_or(0)))
            .collect();
        println!("== load: {recall_rps} recalls/s, {write_rps} publishes/s, {write_rps} events/s; faults of {fault_s} s");
        let load = Load::start(&l.api(), n_users, n_items, recall_rps, write_rps);
        std::thread::sleep(Duration::from_secs(5));
        let mut outcomes = Vec::new();
        let only: Option<&String> = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1));
        for (role, node) in ALL_NODES
            .into_iter()
            .filter(|(_, n)| only.is_none_or(|o| o == n))
        {
            let from = load.now();
            kill9(&l, node)?;
            std::thread::sleep(Duration::from_secs(fault_s));
            spawn_node(&l, role, node)?;
            let back = wait_all_ready(&l, Instant::now());
            std::thread::sleep(Duration::from_secs(2));
            let o = outcome(
                &format!("kill -9 {node}, {fault_s} s"),
                &load.recs.lock().unwrap(),
                from,
                load.now(),
                back,
            );
            println!("{}: back after {:.1} s", o.fault, o.back_s);
            outcomes.push(o);
        }
        for wipe in [false, true].into_iter().filter(|_| only.is_none()) {
            let from = load.now();
            kill9(&l, "etcd")?;
            std::thread::sleep(Duration::from_secs(fault_s.min(5)));
            if wipe {
                std::fs::remove_dir_all(l.dir.join("etcd"))?;
            }
            let restarted = Instant::now();
            start_etcd(&l)?;
            let back = wait_all_ready(&l, restarted);
            std::thread::sleep(Duration::from_secs(3));
            let what = if wipe {
                "etcd restarted without its data"
            } else {
                "etcd restarted"
            };
            let o = outcome(what, &load.recs.lock().unwrap(), from, load.now(), back);
            println!("{}: every member back after {:.1} s", o.fault, o.back_s);
            outcomes.push(o);
        }
        let (_, acked) = load.finish();
        // every acknowledged item in a sharder's forward index, filed in a cluster
        let m = members(&l);
        let mut found: HashMap<u64, bool> = HashMap::new();
        for chunk in acked.items.chunks(500) {
            let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
            for (_, node) in ALL_NODES.iter().filter(|(r, _)| *r == "sharder") {
                let Some(addr) = m.get(*node) else { continue };
                let Some((200, body)) = http(
                    addr,
                    "GET",
                    &format!("/v1/items?ids={}", ids.join(",")),
                    None,
                ) else {
                    continue;
                };
                for row in serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
                {
                    let id = row["item_id"].as_u64().unwrap_or(0);
                    let filed = row["cluster"].is_string();
                    *found.entry(id).or_default() |= filed;
                }
            }
        }
        let missing = acked
            .items
            .iter()
            .filter(|i| !found.contains_key(i))
            .count();
        let unfiled = acked
            .items
            .iter()
            .filter(|i| found.get(i) == Some(&false))
            .count();
        // every acknowledged like in its user's profile (one interaction each)
        let mut expected: HashMap<u64, u64> = HashMap::new();
        for &(u, _) in &acked.likes {
            *expected.entry(u).or_default() += 1;
        }
        let profile = m.get("profile-0").context("no profile-0 member")?;
        let short: Vec<u64> = expected
            .iter()
            .filter(|(u, n)| {
                profile_of(profile, **u).unwrap_or(0) < before.get(u).copied().unwrap_or(0) + **n
            })
            .map(|(u, _)| *u)
            .collect();
        let checks = vec![
            format!(
                "acknowledged items: {}, missing from the forward index: {missing}, filed without a cluster: {unfiled}",
                acked.items.len()
            ),
            format!(
                "acknowledged likes: {} ({} users), users whose profile lacks some: {}",
                acked.likes.len(),
                expected.len(),
                short.len()
            ),
        ];
        Ok((outcomes, checks))
    })();
    // the logs stay for a look (`target/coldstart-chaos/logs`); the next run wipes them
    let _ = down(&l, false);
    let (outcomes, checks) = out?;
    let mut md = String::from(
        "| fault | failed recalls | degraded answers | failed writes | longest without a recall answer | ready after restart |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let pct =
        |(f, a): (usize, usize)| format!("{:.1}% ({f} of {a})", 100.0 * f as f64 / a.max(1) as f64);
    for o in &outcomes {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} s | {:.1} s |\n",
            o.fault,
            pct(o.recalls),
            o.degraded,
            pct(o.writes),
            o.longest_unavailable_s,
            o.back_s
        ));
    }
    md.push('\n');
    for c in &checks {
        md.push_str(&format!("- {c}\n"));
    }
    let dir = root.join("target/chaos");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &md)?;
    let json: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "fault": o.fault, "failed_recalls": o.recalls.0, "recalls": o.recalls.1,
                "degraded": o.degraded, "failed_writes": o.writes.0, "writes": o.writes.1,
                "longest_unavailable_s": o.longest_unavailable_s, "back_s": o.back_s,
            })
        })
        .collect();
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&serde_json::json!({"faults": json, "checks": checks}))?,
    )?;
    println!("\n{md}\nreport: {}", dir.join("report.md").display());
    Ok(())
}
