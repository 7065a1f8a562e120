//! Starting a service process: bind the Flight and HTTP listeners, serve, register in discovery,
//! and stop cleanly. In all-in-one mode there is no Flight listener: the member's Flight address is
//! `local:{node_id}` and calls reach the handler in-process through the [`FlightPool`].

use crate::cluster::Routing;
use crate::config::ProcessConfig;
use crate::discovery::{Member, MemberState, Registration, Registry, Role};
use crate::error::{ServiceError, ServiceResult};
use crate::flight::{FlightHandler, FlightPool, FlightServer, Protocol, LOCAL_SCHEME};
use crate::http::{health_router, Health};
use crate::now_ms;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Bytes of the headers of one Flight request (ours are a few hundred; hyper's default is 16 MiB).
const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;
use tokio::sync::watch;
use tracing::info;

/// What a service hands to [`start_node`]: its Flight face speaks protocol `P`.
pub struct NodeSpec<P: Protocol> {
    /// Its role.
    pub role: Role,
    /// Its node id.
    pub node_id: String,
    /// Its Flight face.
    pub handler: Arc<dyn FlightHandler<P>>,
    /// Role-specific HTTP routes (merged with health and metrics).
    pub routes: Router,
    /// Readiness shared with the service.
    pub health: Arc<Health>,
    /// Register as joining (a sharder that must catch up first) or serving.
    pub initial_state: MemberState,
}

/// A serving node; dropping it stops nothing, call [`RunningNode::shutdown`].
pub struct RunningNode {
    /// The registered member value.
    pub member: Member,
    /// Its registration (state updates, deregistration).
    pub registration: Registration,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Deregisters, then stops serving.
    pub async fn shutdown(self) {
        self.registration.close().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

/// The default node id: `{role}-{hostname}-{pid}`.
pub fn default_node_id(role: Role) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{role}-{host}-{}", std::process::id())
}

async fn bind(host: &str, port: u16, what: &str) -> ServiceResult<TcpListener> {
    TcpListener::bind((host, port)).await.map_err(|e| {
        ServiceError::unavailable(format!("bind {what} listener on {host}:{port}: {e}"))
    })
}

/// Binds, serves, and registers. With `in_process` the Flight handler is only reachable through
/// `pool` and no HTTP listener is opened unless `routes` must be public (the aggregator).
pub async fn start_node<P: Protocol>(
    cfg: &ProcessConfig,
    spec: NodeSpec<P>,
    registry: &dyn Registry,
    pool: &FlightPool,
    in_process: bool,
    http_port: u16,
) -> ServiceResult<RunningNode> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let host = cfg
        .node
        .advertise_host
        .clone()
        .unwrap_or_else(|| cfg.node.listen_host.clone());
    let flight_addr = if in_process {
        let addr = format!("{LOCAL_SCHEME}{}", spec.node_id);
        pool.register_local(&addr, spec.handler.clone());
        addr
    } else {
        let listener = bind(&cfg.node.listen_host, cfg.node.flight_port, "flight").await?;
        let port = listener
            .local_addr()
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .port();
        let svc = FlightServer::new(spec.handler.clone(), cfg.limits.max_message_bytes)
            .into_service(cfg.limits.max_message_bytes);
        let mut rx = stop_rx.clone();
        let request_timeout = std::time::Duration::from_millis(cfg.limits.request_timeout_ms);
        let per_connection = cfg.limits.flight_concurrency_per_connection;
        // the connection cap, the preface deadline and the idle timeout
        let incoming = crate::conn_guard::incoming(listener, &cfg.limits);
        let (ping, ping_timeout) = crate::conn_guard::keepalive(&cfg.limits);
        tasks.push(tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .timeout(request_timeout)
                .concurrency_limit_per_connection(per_connection)
                // a peer that stopped answering is found and its connection closed
                .http2_keepalive_interval(Some(ping))
                .http2_keepalive_timeout(Some(ping_timeout))
                .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "flight server stopped");
            }
        }));
        format!("{host}:{port}")
    };
    let http_addr = if in_process && spec.role != Role::Aggregator {
        String::new()
    } else {
        let listener = bind(&cfg.node.listen_host, http_port, "http").await?;
        let port = listener
            .local_addr()
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .port();
        let app = spec.routes.merge(health_router(spec.health.clone()));
        let (rx, limits) = (stop_rx.clone(), cfg.limits.clone());
        tasks.push(tokio::spawn(async move {
            crate::http::serve_limited(listener, app, &limits, rx).await;
        }));
        format!("{host}:{port}")
    };
    let member = Member {
        node_id: spec.node_id.clone(),
        role: spec.role,
        grpc_addr: flight_addr.clone(),
        flight_addr,
        http_addr,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: now_ms(),
        state: spec.initial_state,
        model: None,
        next_model: None,
        tower_model: None,
        next_tower_model: None,
    };
    let registration = registry.register(member.clone()).await?;
    info!(role = %member.role, node_id = %member.node_id, flight = %member.flight_addr, http = %member.http_addr, "node started");
    Ok(RunningNode {
        member,
        registration,
        stop,
        tasks,
    })
}

/// Everything a service needs from its process: the shared config sections, discovery, the
/// Flight pool and router, and the actix home for its actors. One per process; shared by every
/// role in all-in-one mode. Each service gets its own config section at start, beside this.
#[derive(Clone)]
pub struct Context {
    /// The validated sections every process shares.
    pub cfg: Arc<ProcessConfig>,
    /// Discovery backend.
    pub registry: Arc<dyn Registry>,
    /// Flight clients.
    pub pool: Arc<FlightPool>,
    /// Routing by membership.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Where actors run.
    pub actors: Arc<crate::actors::ActorHome>,
    /// All roles in one process, reached in-process.
    pub in_process: bool,
}

impl Context {
    /// Builds a context around a registry.
    pub fn new(
        cfg: ProcessConfig,
        routing: Routing,
        registry: Arc<dyn Registry>,
        in_process: bool,
    ) -> Self {
        let pool = Arc::new(FlightPool::new(
            cfg.limits.max_message_bytes,
            routing.call_timeout,
        ));
        let cluster = Arc::new(crate::cluster::Cluster::new(
            pool.clone(),
            registry.watch(),
            routing.replication,
        ));
        Self {
            cfg: Arc::new(cfg),
            registry,
            pool,
            cluster,
            actors: Arc::new(crate::actors::ActorHome::start("coldstart")),
            in_process,
        }
    }

    /// Starts a node for `spec` on this context.
    pub async fn start_node<P: Protocol>(
        &self,
        spec: NodeSpec<P>,
        http_port: u16,
    ) -> ServiceResult<RunningNode> {
        start_node(
            &self.cfg,
            spec,
            self.registry.as_ref(),
            &self.pool,
            self.in_process,
            http_port,
        )
        .await
    }

    /// Starts a node that serves at once: registered as serving, `/readyz` green. For services
    /// with nothing to catch up on (state replayed before this call, or none).
    pub async fn serve<P: Protocol>(
        &self,
        role: Role,
        node_id: String,
        handler: Arc<dyn FlightHandler<P>>,
        routes: Router,
        http_port: u16,
    ) -> ServiceResult<RunningNode> {
        let health = Arc::new(Health::default());
        let spec = NodeSpec {
            role,
            node_id,
            handler,
            routes,
            health: health.clone(),
            initial_state: MemberState::Serving,
        };
        let node = self.start_node(spec, http_port).await?;
        health.set_ready(true);
        Ok(node)
    }

    /// The directory for a node's durable state, created if missing.
    pub fn data_dir(&self, node_id: &str) -> ServiceResult<std::path::PathBuf> {
        let dir = self.cfg.node.data_dir.join(node_id);
        std::fs::create_dir_all(&dir).map_err(|e| {
            ServiceError::unavailable(format!("create data dir {}: {e}", dir.display()))
        })?;
        Ok(dir)
    }
}
