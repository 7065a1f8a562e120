//! `cargo xtask bench recall | kmeans | cluster-recall`: each starts what it measures (a local
//! cluster of the release binaries, FAISS, Redis), runs `coldstart-bench` against it and prints
//! the comparison of one run.

use crate::*;

pub fn recall(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools()?;
    let items = flag(args, "--items", 100_000)?;
    let users = flag(args, "--users", 10_000)?;
    let events = flag(args, "--events", 200_000)?;
    let requests = flag(args, "--requests", 20_000)?;
    let concurrency = flag(args, "--concurrency", 16)?;
    let l = bench_local(root, "coldstart-bench", 23890, 8180, "bench")?;
    let bin = l.bin.clone();
    let _ = down(&l, true);
    let bench = |url: &str, label: &str| -> Result<String> {
        let out = Command::new(bench_bin(&bin))
            .args([
                "recall",
                "--url",
                url,
                "--users",
                &users.to_string(),
                "--requests",
                &requests.to_string(),
                "--concurrency",
                &concurrency.to_string(),
                "--label",
                label,
            ])
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        print!("{text}");
        if !out.status.success() {
            bail!("bench {label} failed");
        }
        Ok(text
            .lines()
            .find(|l| l.starts_with("BENCH "))
            .unwrap_or("")
            .trim_start_matches("BENCH ")
            .to_string())
    };
    let models = root.join("target/coldstart-bench-models");
    let _ = std::fs::remove_dir_all(&models);
    println!("== distributed: etcd + 6 processes (2 sharders), Flight over loopback");
    start_cluster(&l)?;
    let dist = (|| {
        load_demo(&l, items, users, events)?;
        let plain = bench(&l.api(), "distributed")?;
        // the same cluster once a content model runs: cluster recall and the similarity ranking
        // of the content channels' candidates (one more forward-index read per request)
        println!("== distributed with the demo content model (cluster recall, similarity ranking)");
        train_demo_model(&l, items)?;
        let model = bench(&l.api(), "distributed+model")?;
        // and once a two-tower model runs too: the two_tower channel over the new-item pools
        println!("== distributed with the demo two-tower model too (the two_tower channel)");
        train_demo_two_tower(&l)?;
        let two = bench(&l.api(), "distributed+two-tower")?;
        // the models, for the all-in-one run with them
        copy_dir(&l.dir.join("models"), &models)?;
        Ok::<_, anyhow::Error>((plain, model, two))
    })();
    down(&l, true)?;
    let (dist, with_model, with_two) = dist?;

    let aio_run = |label: &str, extra: &[String]| -> Result<String> {
        let aio = Local {
            dir: root.join("target/coldstart-bench-aio"),
            etcd_port: 0,
            http_port: 8181,
            cluster: "bench",
            bin: bin.clone(),
        };
        let _ = down(&aio, true);
        let mut args = vec![
            "all-in-one".to_string(),
            "--http-port".into(),
            aio.http_port.to_string(),
            "--data-dir".into(),
            aio.dir.join("data").display().to_string(),
        ];
        args.extend_from_slice(extra);
        spawn(&aio, "all-in-one", &bin, &args)?;
        let out = (|| {
            wait_until("all-in-one", Duration::from_secs(120), || {
                http_get(&format!("127.0.0.1:{}", aio.http_port), "/readyz")
                    .is_some_and(|(c, _)| c == 200)
            })?;
            load_demo(&aio, items, users, events)?;
            bench(&aio.api(), label)
        })();
        down(&aio, true)?;
        out
    };
    println!("== baseline: all-in-one, the same roles in one process, calls in-process");
    let base = aio_run("all-in-one", &[])?;
    println!("== all-in-one with the same content and two-tower models");
    let base_two = aio_run(
        "all-in-one+two-tower",
        &[
            "--model".into(),
            models.join("demo-v1").display().to_string(),
            "--two-tower".into(),
            models.join("demo-tt1/two_tower.bin").display().to_string(),
        ],
    )?;
    let _ = std::fs::remove_dir_all(&models);

    let d: serde_json::Value = serde_json::from_str(&dist)?;
    let m: serde_json::Value = serde_json::from_str(&with_model)?;
    let t: serde_json::Value = serde_json::from_str(&with_two)?;
    let b: serde_json::Value = serde_json::from_str(&base)?;
    let bt: serde_json::Value = serde_json::from_str(&base_two)?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("recall, {items} items, {users} users, {events} events, {requests} requests, concurrency {concurrency}, k 50");
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "", "req/s", "p50 ms", "p99 ms"
    );
    for (name, v) in [
        ("distributed", &d),
        ("+ content model", &m),
        ("+ two-tower model", &t),
        ("all-in-one", &b),
        ("all-in-one, both models", &bt),
    ] {
        println!(
            "{:<28} {:>10.0} {:>10.2} {:>10.2}",
            name,
            f(v, "rps"),
            f(v, "p50_ms"),
            f(v, "p99_ms")
        );
    }
    println!(
        "distributed / all-in-one throughput: {:.2} without models, {:.2} with both",
        f(&d, "rps") / f(&b, "rps"),
        f(&t, "rps") / f(&bt, "rps")
    );
    Ok(())
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

fn bench_json(out: &std::process::Output, what: &str) -> Result<serde_json::Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{what} failed:\n{text}");
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| format!("{what} printed no BENCH line"))?;
    Ok(serde_json::from_str(line.trim_start_matches("BENCH "))?)
}

/// FAISS and numpy for Python, from PyPI when missing.
fn ensure_faiss() -> Result<()> {
    let have = Command::new("python3")
        .args(["-c", "import faiss, numpy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("installing faiss-cpu and numpy from PyPI ...");
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "faiss-cpu", "numpy"])
            .status()?
            .success();
        if !ok {
            bail!("could not install faiss-cpu: run `python3 -m pip install faiss-cpu numpy`");
        }
    }
    Ok(())
}

/// Exact top-100 inner product over a pool of 200,000 × 64 vectors, one query at a time and in
/// batches of 64, against FAISS `IndexFlatIP` on the same vectors and threads, in one run.
pub fn pools(root: &Path, args: &[String]) -> Result<()> {
    let n = flag(args, "--n", 200_000)?;
    let queries = flag(args, "--queries", 2048)?;
    let (d, k, batch) = (64u64, 100u64, 64u64);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    ensure_faiss()?;
    let bin = release_bin(root)?;
    let out = root.join("target/bench-pools");
    let s = |v: u64| v.to_string();
    println!("== coldstart: {n} x {d} pool, top {k}, {queries} queries, {threads} threads");
    let ours = Command::new(bench_bin(&bin))
        .args(["pools", "--n", &s(n), "--d", &s(d), "--k", &s(k)])
        .args(["--queries", &s(queries), "--batch", &s(batch)])
        .args(["--threads", &threads.to_string(), "--out"])
        .arg(&out)
        .stderr(Stdio::inherit())
        .output()?;
    let ours = bench_json(&ours, "coldstart-bench pools")?;
    println!("== faiss IndexFlatIP on the same vectors and threads");
    let faiss = Command::new("python3")
        .arg(root.join("xtask/bench/pools_faiss.py"))
        .arg(&out)
        .args([s(d), s(k), s(batch), threads.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    let faiss = bench_json(&faiss, "pools_faiss.py")?;
    let f = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("exact top-{k} inner product, {n} x {d}, {threads} threads, queries/s");
    println!(
        "{:<24} {:>12} {:>14} {:>8}",
        "",
        "coldstart",
        faiss["impl"].as_str().unwrap_or("faiss"),
        "ratio"
    );
    for (label, key) in [
        ("one query at a time", "single_qps"),
        ("batches of 64", "batch_qps"),
    ] {
        println!(
            "{:<24} {:>12.0} {:>14.0} {:>8.2}",
            label,
            f(&ours, key),
            f(&faiss, key),
            f(&ours, key) / f(&faiss, key)
        );
    }
    println!(
        "answers agree on {:.4} of the top ids (ties may order differently); goal: ratios >= 1",
        f(&faiss, "agreement")
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// The two-tower model's training time on a synthetic log of 1,000,000 events at dimension 64.
pub fn two_tower(root: &Path, args: &[String]) -> Result<()> {
    let events = flag(args, "--events", 1_000_000)?;
    let epochs = flag(args, "--epochs", 1)?;
    let uniform = flag(args, "--uniform-negatives", 256)?;
    let bin = release_bin(root)?;
    let out = Command::new(bench_bin(&bin))
        .args(["two-tower", "--events", &events.to_string()])
        .args(["--epochs", &epochs.to_string()])
        .args(["--uniform-negatives", &uniform.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    bench_json(&out, "coldstart-bench two-tower").map(|_| ())
}

/// A sharder's restart time at 100k, 1M and 5M postings in its log (`--sizes a,b,c` for
/// others), and how it grows: the time per posting at the largest size over that at the smallest.
pub fn restart(root: &Path, args: &[String]) -> Result<()> {
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args
            .get(i + 1)
            .context("--sizes needs a value, e.g. 100000,1000000")?
            .split(',')
            .map(|s| s.trim().parse::<usize>().context("--sizes: not a number"))
            .collect::<Result<_>>()?,
        None => vec![100_000, 1_000_000, 5_000_000],
    };
    let bin = release_bin(root)?;
    let mut rows = Vec::new();
    for n in &sizes {
        let out = Command::new(bench_bin(&bin))
            .args(["restart", "--postings", &n.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        let j = bench_json(&out, "coldstart-bench restart")?;
        rows.push((*n, j["open_s"].as_f64().unwrap_or(f64::NAN)));
    }
    println!("\n| postings in the log | restart s | µs per posting |\n|---:|---:|---:|");
    for (n, s) in &rows {
        println!("| {n} | {s:.2} | {:.2} |", s / *n as f64 * 1e6);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let growth = (last.1 / last.0 as f64) / (first.1 / first.0 as f64);
        println!(
            "time per posting at {} over that at {}: {growth:.2} (1: linear; below: better than linear)",
            last.0, first.0
        );
    }
    Ok(())
}

/// Spherical k-means against FAISS on the same data and threads, in one run.
pub fn kmeans(root: &Path, args: &[String]) -> Result<()> {
    let n = flag(args, "--n", 1_000_000)?;
    let k = flag(args, "--k", 2048)?;
    let iterations = flag(args, "--iterations", 20)?;
    let d = 64;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    ensure_faiss()?;
    let bin = release_bin(root)?;
    let out = root.join("target/bench-kmeans");
    let (n_s, k_s, it_s, d_s, th_s) = (
        n.to_string(),
        k.to_string(),
        iterations.to_string(),
        d.to_string(),
        threads.to_string(),
    );
    println!(
        "== coldstart: {n} x {d} into {k} clusters, {iterations} iterations, {threads} threads"
    );
    let ours = Command::new(bench_bin(&bin))
        .args([
            "kmeans",
            "--n",
            &n_s,
            "--d",
            &d_s,
            "--k",
            &k_s,
            "--iterations",
            &it_s,
            "--threads",
            &th_s,
            "--out",
        ])
        .arg(&out)
        .stderr(Stdio::inherit())
        .output()?;
    let ours = bench_json(&ours, "coldstart-bench kmeans")?;
    println!("== faiss on the same points and threads");
    let script = root.join("xtask/bench/kmeans_faiss.py");
    let faiss = Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args([&d_s, &k_s, &it_s, &th_s, "1"])
        .stderr(Stdio::inherit())
        .output()?;
    let faiss = bench_json(&faiss, "kmeans_faiss.py")?;
    let f = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("spherical k-means, {n} x {d}, k {k}, {iterations} iterations, {threads} threads");
    println!(
        "{:<28} {:>14} {:>14} {:>10}",
        "",
        "coldstart",
        faiss["impl"].as_str().unwrap_or("faiss"),
        "ratio"
    );
    println!(
        "{:<28} {:>14.2} {:>14.2} {:>10.3}",
        "train time (s)",
        f(&ours, "train_s"),
        f(&faiss, "train_s"),
        f(&ours, "train_s") / f(&faiss, "train_s")
    );
    println!(
        "{:<28} {:>14.6} {:>14.6} {:>10.5}",
        "objective (mean cosine)",
        f(&ours, "objective"),
        f(&faiss, "objective"),
        f(&ours, "objective") / f(&faiss, "objective")
    );
    for (label, key) in [
        ("assign, one call (items/s)", "assign_all_per_s"),
        ("assign, batches of 1000", "assign_batch1000_per_s"),
    ] {
        println!(
            "{:<28} {:>14.0} {:>14.0} {:>10.3}",
            label,
            f(&ours, key),
            f(&faiss, key),
            f(&ours, key) / f(&faiss, key)
        );
    }
    // FAISS one item at a time is only reachable through a Python call per item, whose overhead
    // would be timed with it: ours is shown alone
    println!(
        "{:<28} {:>14.0} {:>14} {:>10}",
        "assign, one at a time",
        f(&ours, "assign_single_per_s"),
        "-",
        "-"
    );
    println!("(time ratio < 1 and objective ratio > 0.995 meet the goal; assignment ratios > 1 are faster than faiss)");
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Cluster-recall reads through the sharder client against the same lists in one Redis server,
/// for each topology: one sharder (against one Redis, like for like), two sharders with
/// replication 2 (every sharder holds every list), and three with replication 2 as `deploy/`
/// runs them (reads fan out to the owners).
pub fn cluster_recall(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools()?;
    ensure_packages(&[("redis-server", "redis-server")])?;
    let requests = flag(args, "--requests", 20_000)?;
    let concurrency = flag(args, "--concurrency", 16)?;
    let mut rows = Vec::new();
    for (sharders, replication) in [(1usize, 1usize), (2, 2), (3, 2)] {
        println!("== {sharders} sharder(s), replication {replication}, against one redis");
        rows.push(cluster_recall_once(
            root,
            sharders,
            replication,
            requests,
            concurrency,
        )?);
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "cluster recall reads, {requests} requests, concurrency {concurrency}, one redis each time"
    );
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10}",
        "", "req/s", "p50 ms", "p99 ms", "redis req/s", "p50 ms", "p99 ms", "ratio"
    );
    for v in &rows {
        println!(
            "{:<22} {:>10.0} {:>9.3} {:>9.3} {:>11.0} {:>9.3} {:>9.3} {:>10.2}",
            format!("{} sharder(s), r {}", v["sharders"], v["replication"]),
            f(v, "ours_rps"),
            f(v, "ours_p50_ms"),
            f(v, "ours_p99_ms"),
            f(v, "redis_rps"),
            f(v, "redis_p50_ms"),
            f(v, "redis_p99_ms"),
            f(v, "ours_rps") / f(v, "redis_rps")
        );
    }
    Ok(())
}

/// One topology of [`bench_cluster_recall`]: its own etcd, sharders and redis, then down.
fn cluster_recall_once(
    root: &Path,
    sharders: usize,
    replication: usize,
    requests: u64,
    concurrency: u64,
) -> Result<serde_json::Value> {
    let l = bench_local(root, "coldstart-bench-cluster", 23990, 0, "benchcr")?;
    let bin = l.bin.clone();
    let _ = down(&l, true);
    // the sharders read their replication factor from the environment they inherit
    std::env::set_var("COLDSTART__SHARDER__REPLICATION", replication.to_string());
    let names: Vec<String> = (0..sharders).map(|i| format!("sharder-{i}")).collect();
    let nodes: Vec<(&str, &str)> = names.iter().map(|n| ("sharder", n.as_str())).collect();
    let started = start_nodes(&l, &nodes);
    std::env::remove_var("COLDSTART__SHARDER__REPLICATION");
    started?;
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    spawn(
        &l,
        "redis",
        Path::new("redis-server"),
        &[
            "--port".into(),
            redis_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ],
    )?;
    let result = (|| {
        wait_until("redis", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", redis_port)).is_ok()
        })?;
        let sharder_pids: Vec<String> = running(&l)
            .into_iter()
            .filter(|(n, _)| n.starts_with("sharder"))
            .map(|(_, p)| p.to_string())
            .collect();
        wait_until("the sharders", Duration::from_secs(30), || {
            let out = Command::new(&bin).args(status_args(&l)).output();
            out.is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|x| x.starts_with("sharder") && x.ends_with("ready"))
                    .count()
                    == sharders
            })
        })?;
        let out = Command::new(bench_bin(&bin))
            .args([
                "cluster-recall",
                "--etcd",
                &l.etcd_url(),
                "--cluster",
                l.cluster,
            ])
            .args([
                "--sharders",
                &sharders.to_string(),
                "--replication",
                &replication.to_string(),
                "--redis-port",
                &redis_port.to_string(),
                "--sharder-pids",
                &sharder_pids.join(","),
            ])
            .args([
                "--requests",
                &requests.to_string(),
                "--concurrency",
                &concurrency.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        bench_json(&out, "coldstart-bench cluster-recall")
    })();
    down(&l, true)?;
    result
}
