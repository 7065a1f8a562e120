//! `serve ROLE` and `all-in-one`.

use crate::ConfigArgs;
use anyhow::Context as _;
use coldstart_artifact::ModelRef;
use coldstart_jobs::config::Config;
use coldstart_jobs::local::{start_role, LocalCluster};
use coldstart_runtime::discovery::etcd::EtcdSettings;
use coldstart_runtime::discovery::{EtcdRegistry, Registry, Role};
use coldstart_runtime::node::{default_node_id, Context};
use coldstart_runtime::telemetry;
use std::sync::Arc;
use tracing::info;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// profile, encoder, sharder, traffic or aggregator.
    role: Role,
    /// Stable node id (a sharder's id decides its keys and its data directory).
    #[arg(long)]
    node_id: Option<String>,
    /// HTTP port (0: any free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Flight port (0: any free port).
    #[arg(long)]
    flight_port: Option<u16>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args)]
pub struct AllInOneArgs {
    /// HTTP port of the public API.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Sharders to run in-process.
    #[arg(long, default_value_t = 2)]
    sharders: usize,
    /// A trained content model to run: its version folder (`{out}/{version}` of `train
    /// clusters`, holding `manifest.json`), or the manifest itself.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// A trained two-tower model to run: `{out}/{version}/two_tower.bin` of `train two-tower`.
    #[arg(long)]
    two_tower: Option<std::path::PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("sigterm handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn etcd_registry(cfg: &Config) -> anyhow::Result<Arc<dyn Registry>> {
    let reg = EtcdRegistry::start(EtcdSettings::from_config(&cfg.process()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(reg))
}

/// One role, one process.
pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = a.config.load()?;
    if let Some(p) = a.http_port {
        cfg.node.http_port = p;
    }
    if let Some(p) = a.flight_port {
        cfg.node.flight_port = p;
    }
    let node_id = a
        .node_id
        .or_else(|| cfg.node.id.clone())
        .unwrap_or_else(|| default_node_id(a.role));
    let _telemetry = telemetry::init(&format!("coldstart-{}", a.role), &cfg.telemetry);
    let registry = etcd_registry(&cfg).await.context("discovery")?;
    let http_port = cfg.node.http_port;
    let ctx = Context::new(cfg.process(), cfg.routing(), registry, false);
    let running = start_role(&ctx, &cfg, a.role, node_id.clone(), http_port)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(role = %a.role, node_id = %node_id, "serving; SIGTERM or ctrl-c stops");
    shutdown_signal().await;
    info!(role = %a.role, node_id = %node_id, "stopping");
    running.shutdown().await;
    Ok(())
}

/// Every role in one process, in-memory discovery, Flight calls in-process.
pub async fn all_in_one(a: AllInOneArgs) -> anyhow::Result<()> {
    if a.config.cluster.is_some() || a.config.etcd.is_some() {
        anyhow::bail!(
            "all-in-one uses in-memory discovery: --cluster and --etcd do not apply (run `serve ROLE` for an etcd cluster)"
        );
    }
    let model = match &a.model {
        Some(p) => {
            let manifest = if p.is_dir() {
                p.join("manifest.json")
            } else {
                p.clone()
            };
            Some(
                ModelRef::of_manifest(&manifest)
                    .map_err(|e| anyhow::anyhow!("--model {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let cfg = a.config.load()?;
    let _telemetry = telemetry::init("coldstart", &cfg.telemetry);
    let cluster = LocalCluster::start(cfg, a.sharders, a.http_port)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(m) = &model {
        cluster
            .activate_model(m, std::time::Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("--model: {e}"))?;
        println!("content model {} running", m.version);
    }
    if let Some(p) = &a.two_tower {
        let r = coldstart_artifact::two_tower_ref(p)
            .map_err(|e| anyhow::anyhow!("--two-tower {}: {e}", p.display()))?;
        cluster
            .activate_two_tower(&r, std::time::Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("--two-tower: {e}"))?;
        println!("two-tower model {} running", r.version);
    }
    println!("coldstart all-in-one: public API on {}", cluster.api);
    shutdown_signal().await;
    cluster.shutdown().await;
    Ok(())
}
