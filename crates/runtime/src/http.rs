//! The HTTP face every service shares: `/healthz` (the process is up), `/readyz` (it serves: caught
//! up and registered) and `/metrics` (Prometheus text), plus request metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, TextEncoder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

/// Whether this process serves.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the process ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    /// True once ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Requests by route and status.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("coldstart_http_requests_total", "http requests"),
        &["route", "status"],
    )
    .expect("metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

/// Request latency by route.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new("coldstart_http_request_seconds", "http request latency").buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
        &["route"],
    )
    .expect("metric");
    let _ = prometheus::register(Box::new(h.clone()));
    h
});

/// Things that happen, by kind (`coldstart_events_total{what}`): served-log rows written,
/// dropped or lost, and the like.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("coldstart_events_total", "things that happened, by kind"),
        &["what"],
    )
    .expect("metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

/// Counts `n` events of kind `what`.
pub fn count(what: &str, n: u64) {
    EVENTS.with_label_values(&[what]).inc_by(n);
}

/// Records one request.
pub fn observe(route: &str, status: u16, seconds: f64) {
    REQUESTS
        .with_label_values(&[route, &status.to_string()])
        .inc();
    LATENCY.with_label_values(&[route]).observe(seconds);
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn metrics() -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        buf,
    )
}

/// Serves `app` on `listener` until `stop` turns true, within `limits`: at most
/// `max_connections` connections at once (more are closed on accept), a request's header within
/// `http_header_timeout_ms` (which also closes a connection idle that long between requests),
/// and each request answered, its body read included, within `request_timeout_ms` (408).
pub async fn serve_limited(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &crate::config::LimitsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::time::Duration;
    let request_timeout = Duration::from_millis(limits.request_timeout_ms);
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => {
                    count("http_requests_timed_out", 1);
                    crate::error::ServiceError::new(
                        crate::error::ErrorCode::RequestTimeout,
                        format!(
                            "the request was not read and answered within {} ms (limits.request_timeout_ms)",
                            request_timeout.as_millis()
                        ),
                    )
                    .into_response()
                }
            }
        },
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let header_timeout = Duration::from_millis(limits.http_header_timeout_ms);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = stop.wait_for(|s| *s) => {
                drop(r);
                return;
            }
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            count("http_connections_refused", 1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                r = stop.wait_for(|s| *s) => r.is_ok(),
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
}
