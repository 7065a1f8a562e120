//! `serve ROLE` and `all-in-one`.

use crate::ConfigArgs;
use anyhow::Context as _;
use coldstart_common::discovery::etcd::EtcdSettings;
use coldstart_common::discovery::{EtcdRegistry, MemoryRegistry, Registry, Role};
use coldstart_common::node::{default_node_id, Context};
use coldstart_common::{telemetry, Config};
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
    #[command(flatten)]
    config: ConfigArgs,
}

enum Running {
    Profile(coldstart_profile::Service),
    Encoder(coldstart_encoder::Service),
    Sharder(coldstart_sharder::Service),
    Traffic(coldstart_traffic::Service),
    Aggregator(coldstart_aggregator::Service),
}

impl Running {
    async fn shutdown(self) {
        match self {
            Running::Profile(s) => s.shutdown().await,
            Running::Encoder(s) => s.shutdown().await,
            Running::Sharder(s) => s.shutdown().await,
            Running::Traffic(s) => s.shutdown().await,
            Running::Aggregator(s) => s.shutdown().await,
        }
    }
}

async fn start_role(
    ctx: &Context,
    role: Role,
    node_id: String,
    http_port: u16,
) -> anyhow::Result<Running> {
    let e = |e: coldstart_common::ServiceError| anyhow::anyhow!("{role} {node_id}: {e}");
    Ok(match role {
        Role::Profile => Running::Profile(
            coldstart_profile::Service::start(ctx, node_id.clone(), http_port)
                .await
                .map_err(|x| e(x.into()))?,
        ),
        Role::Encoder => Running::Encoder(
            coldstart_encoder::Service::start(ctx, node_id.clone(), http_port)
                .await
                .map_err(|x| e(x.into()))?,
        ),
        Role::Sharder => Running::Sharder(
            coldstart_sharder::Service::start(ctx, node_id.clone(), http_port)
                .await
                .map_err(|x| e(x.into()))?,
        ),
        Role::Traffic => Running::Traffic(
            coldstart_traffic::Service::start(ctx, node_id.clone(), http_port)
                .await
                .map_err(|x| e(x.into()))?,
        ),
        Role::Aggregator => Running::Aggregator(
            coldstart_aggregator::Service::start(ctx, node_id.clone(), http_port)
                .await
                .map_err(|x| e(x.into()))?,
        ),
    })
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
    let reg = EtcdRegistry::start(EtcdSettings::from_config(cfg))
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
    let ctx = Context::new(cfg, registry, false);
    let running = start_role(&ctx, a.role, node_id.clone(), http_port).await?;
    info!(role = %a.role, node_id = %node_id, "serving; SIGTERM or ctrl-c stops");
    shutdown_signal().await;
    info!(role = %a.role, node_id = %node_id, "stopping");
    running.shutdown().await;
    Ok(())
}

/// Every role in one process, in-memory discovery, Flight calls in-process.
pub async fn all_in_one(a: AllInOneArgs) -> anyhow::Result<()> {
    let mut cfg = a.config.load()?;
    cfg.discovery.backend = "memory".into();
    let _telemetry = telemetry::init("coldstart", &cfg.telemetry);
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let ctx = Context::new(cfg, registry, true);
    let mut running = Vec::new();
    for i in 0..a.sharders.max(1) {
        running.push(start_role(&ctx, Role::Sharder, format!("sharder-{i}"), 0).await?);
    }
    for role in [Role::Traffic, Role::Profile, Role::Encoder] {
        running.push(start_role(&ctx, role, format!("{role}-0"), 0).await?);
    }
    let agg = coldstart_aggregator::Service::start(&ctx, "aggregator-0".into(), a.http_port)
        .await
        .map_err(|e| anyhow::anyhow!("aggregator: {}", coldstart_common::ServiceError::from(e)))?;
    println!(
        "coldstart all-in-one: public API on http://{}",
        agg.http_addr()
    );
    running.push(Running::Aggregator(agg));
    shutdown_signal().await;
    for r in running.into_iter().rev() {
        r.shutdown().await;
    }
    Ok(())
}
