//! Every role in one process: the same service code as the distributed deployment, with
//! in-memory discovery and Flight calls in-process. `coldstart all-in-one` serves with it, and
//! the evaluation drives one through the public API.

use crate::config::Config;
use coldstart_artifact::{ModelRef, CONTENT_MODEL};
use coldstart_runtime::discovery::{MemoryRegistry, Registry, Role};
use coldstart_runtime::node::Context;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

/// One running service of any role.
pub enum Running {
    /// Profiles and the event log.
    Profile(coldstart_profile::Service),
    /// The publish path.
    Encoder(coldstart_encoder::Service),
    /// Inverted lists.
    Sharder(coldstart_sharder::Service),
    /// The new-item ledger.
    Traffic(coldstart_traffic::Service),
    /// The public API.
    Aggregator(coldstart_aggregator::Service),
}

impl Running {
    /// Deregisters and stops.
    pub async fn shutdown(self) {
        match self {
            Running::Profile(s) => s.shutdown().await,
            Running::Encoder(s) => s.shutdown().await,
            Running::Sharder(s) => s.shutdown().await,
            Running::Traffic(s) => s.shutdown().await,
            Running::Aggregator(s) => s.shutdown().await,
        }
    }
}

/// Starts one role on `ctx`, with its section of `cfg`.
pub async fn start_role(
    ctx: &Context,
    cfg: &Config,
    role: Role,
    node_id: String,
    http_port: u16,
) -> ServiceResult<Running> {
    let named = |e: ServiceError| ServiceError::new(e.code, format!("{role} {node_id}: {e}"));
    Ok(match role {
        Role::Profile => Running::Profile(
            coldstart_profile::Service::start(ctx, &cfg.profile, node_id.clone(), http_port)
                .await
                .map_err(|x| named(x.into()))?,
        ),
        Role::Encoder => Running::Encoder(
            coldstart_encoder::Service::start(ctx, &cfg.encoder, node_id.clone(), http_port)
                .await
                .map_err(|x| named(x.into()))?,
        ),
        Role::Sharder => Running::Sharder(
            coldstart_sharder::Service::start(ctx, &cfg.sharder, node_id.clone(), http_port)
                .await
                .map_err(|x| named(x.into()))?,
        ),
        Role::Traffic => Running::Traffic(
            coldstart_traffic::Service::start(ctx, &cfg.traffic, node_id.clone(), http_port)
                .await
                .map_err(|x| named(x.into()))?,
        ),
        Role::Aggregator => Running::Aggregator(
            coldstart_aggregator::Service::start(
                ctx,
                cfg.aggregator_settings(),
                node_id.clone(),
                http_port,
            )
            .await
            .map_err(|x| named(x.into()))?,
        ),
    })
}

/// A cluster in this process.
pub struct LocalCluster {
    /// The shared context (config, in-memory registry, pool).
    pub ctx: Context,
    /// Base URL of the public API, `http://host:port`.
    pub api: String,
    running: Vec<Running>,
}

impl LocalCluster {
    /// Starts `sharders` sharders, then traffic, profile, encoder and the aggregator on
    /// `http_port` (0: any free port), with in-memory discovery.
    pub async fn start(mut cfg: Config, sharders: usize, http_port: u16) -> ServiceResult<Self> {
        cfg.discovery.backend = "memory".into();
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let ctx = Context::new(cfg.process(), cfg.routing(), registry, true);
        let mut running = Vec::new();
        for i in 0..sharders.max(1) {
            running.push(start_role(&ctx, &cfg, Role::Sharder, format!("sharder-{i}"), 0).await?);
        }
        for role in [Role::Traffic, Role::Profile, Role::Encoder] {
            running.push(start_role(&ctx, &cfg, role, format!("{role}-0"), 0).await?);
        }
        let agg = coldstart_aggregator::Service::start(
            &ctx,
            cfg.aggregator_settings(),
            "aggregator-0".into(),
            http_port,
        )
        .await
        .map_err(ServiceError::from)?;
        let api = format!("http://{}", agg.http_addr());
        running.push(Running::Aggregator(agg));
        Ok(Self { ctx, api, running })
    }

    /// Names a content model (a written artifact) as the current one and waits until every
    /// encoder and sharder runs it.
    pub async fn activate_model(
        &self,
        model: &ModelRef,
        wait: std::time::Duration,
    ) -> ServiceResult<()> {
        let value = serde_json::to_string(model)
            .map_err(|e| ServiceError::internal(format!("model reference: {e}")))?;
        self.ctx.registry.put_model(CONTENT_MODEL, &value).await?;
        crate::rollout::wait_for(
            self.ctx.registry.as_ref(),
            &model.version,
            crate::rollout::Step::Activate,
            wait,
            |_| {},
        )
        .await
    }

    /// Rolls a two-tower model (a saved file) out, staged then activated
    /// ([`crate::rollout::roll_out_two_tower`]), each step waited for up to `wait`.
    pub async fn activate_two_tower(
        &self,
        model: &ModelRef,
        wait: std::time::Duration,
    ) -> ServiceResult<()> {
        let reg = self.ctx.registry.as_ref();
        crate::rollout::roll_out_two_tower(reg, model, |step| {
            crate::rollout::wait_for(reg, &model.version, step, wait, |_| {})
        })
        .await
    }

    /// Stops every service, the aggregator first.
    pub async fn shutdown(self) {
        for r in self.running.into_iter().rev() {
            r.shutdown().await;
        }
    }
}
