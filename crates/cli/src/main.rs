//! The `coldstart` binary: parse flags, load config, build the runtime, dispatch, show progress
//! and print. It owns no workflow: serving, training, rollout and evaluation are the service
//! crates' and `coldstart-jobs`'; benchmarks are `coldstart-bench`'s.

mod demo;
mod eval;
mod refile;
mod report;
mod serve;
mod simulate;
mod status;
mod train;
mod two_tower;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "coldstart",
    version,
    about = "cold-start recall for new items and new users"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one role as its own process, discovered through etcd.
    Serve(serve::ServeArgs),
    /// Run every role in one process with in-memory discovery (no etcd needed).
    AllInOne(serve::AllInOneArgs),
    /// Generate demo data (items, users, events) and load it through the public API.
    Demo(demo::DemoArgs),
    /// Ask the public API for one user's recall and print it.
    Recall {
        /// Aggregator HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// User.
        #[arg(long)]
        user_id: u64,
        /// How many items.
        #[arg(long, default_value_t = 20)]
        k: usize,
    },
    /// List every member with its health; exit 0 only when every role is healthy.
    Status(status::StatusArgs),
    /// Offline training jobs.
    #[command(subcommand)]
    Train(train::TrainCmd),
    /// Recall quality through the serving path on a data set in the import format, against
    /// baselines computed in the same run (item task: cold items; user task: new users).
    Eval(eval::EvalArgs),
    /// Data set conversions into the import format.
    #[command(subcommand)]
    Data(eval::DataCmd),
    /// Replays on a synthetic platform.
    #[command(subcommand)]
    Simulate(simulate::SimulateCmd),
    /// Reports from what the system logged.
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// The re-filing sweep: publishes again, from the catalog, the items some sharder holds in
    /// no cluster, so the running content model files them; prints what it found and did.
    Refile(refile::RefileArgs),
    /// Write-ahead log maintenance (on a stopped node).
    #[command(subcommand)]
    Wal(WalCmd),
}

#[derive(Subcommand)]
enum WalCmd {
    /// Rewrites a log that will not open because of damage in its middle: every intact record is
    /// kept, in order; each damaged stretch is written to `PATH.damaged-OFFSET` beside it.
    Repair {
        /// The log (e.g. `{data_dir}/sharder-0/wal.log`, `{data_dir}/traffic-0/ledger.wal`).
        path: std::path::PathBuf,
    },
}

/// Config file and overrides shared by the serving commands.
#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// TOML config file (defaults → file → env COLDSTART__SECTION__KEY → flags).
    #[arg(long, env = "COLDSTART_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cluster name (etcd namespace).
    #[arg(long)]
    pub cluster: Option<String>,
    /// etcd endpoints, comma-separated.
    #[arg(long)]
    pub etcd: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<coldstart_jobs::config::Config> {
        let mut cfg = coldstart_jobs::config::Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            cfg.node.data_dir = d.clone();
        }
        if let Some(c) = &self.cluster {
            cfg.cluster = c.clone();
        }
        if let Some(e) = &self.etcd {
            cfg.discovery.endpoints = e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coldstart-io")
        .build()?;
    match cli.cmd {
        Cmd::Serve(a) => rt.block_on(serve::serve(a)),
        Cmd::AllInOne(a) => rt.block_on(serve::all_in_one(a)),
        Cmd::Demo(a) => rt.block_on(demo::run(a)),
        Cmd::Recall { url, user_id, k } => rt.block_on(async move {
            let body: serde_json::Value =
                reqwest::get(format!("{url}/v1/recall?user_id={user_id}&k={k}"))
                    .await?
                    .json()
                    .await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }),
        Cmd::Status(a) => {
            let healthy = rt.block_on(status::run(a))?;
            std::process::exit(if healthy { 0 } else { 1 });
        }
        Cmd::Eval(a) => rt.block_on(eval::run(a)),
        Cmd::Data(d) => eval::data(d),
        Cmd::Train(t) => rt.block_on(train::run(t)),
        Cmd::Simulate(s) => simulate::run(s),
        Cmd::Report(r) => report::run(r),
        Cmd::Refile(a) => rt.block_on(refile::run(a)),
        Cmd::Wal(WalCmd::Repair { path }) => {
            let damage = coldstart_runtime::wal::Wal::repair(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if damage.is_empty() {
                println!("{}: sound, left as it was", path.display());
            }
            for d in &damage {
                println!(
                    "{}: {} damaged bytes at offset {} set aside in {}.damaged-{}",
                    path.display(),
                    d.len,
                    d.offset,
                    path.display(),
                    d.offset
                );
            }
            Ok(())
        }
    }
}
