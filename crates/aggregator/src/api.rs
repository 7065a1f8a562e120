//! The public HTTP API (DESIGN.md §5): `GET /v1/recall`, `POST /v1/items`, `POST /v1/events`,
//! `POST /v1/users`. Bodies are JSON lines or an Arrow IPC stream
//! (`Content-Type: application/vnd.apache.arrow.stream`), bounded by `limits.max_body_bytes`.
//! Errors are JSON `{"error": {code, message, row?, field?}}` with a 4xx/5xx status.

use crate::recall;
use crate::request::{parse_time, RecallQuery};
use crate::service::Aggregator;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_contracts::validate;
use coldstart_runtime::http::observe;
use coldstart_runtime::now_ms;
use coldstart_runtime::{ipc, telemetry, ErrorCode, ServiceError, ServiceResult};
use serde_json::json;
use std::time::Instant;
use tracing::Instrument;

/// The Arrow IPC stream media type.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The public routes.
pub fn routes(agg: Aggregator) -> Router {
    Router::new()
        .route("/v1/recall", get(recall_http))
        .route("/v1/items", post(items_http))
        .route("/v1/events", post(events_http))
        .route("/v1/users", post(users_http))
        .with_state(agg)
}

#[derive(serde::Deserialize)]
struct RecallParams {
    user_id: Option<String>,
    k: Option<String>,
    at: Option<String>,
    since: Option<String>,
    channels: Option<String>,
    logged_in: Option<String>,
    request_id: Option<String>,
}

fn parse_param<T: std::str::FromStr>(
    name: &str,
    v: Option<&String>,
    expected: &str,
) -> ServiceResult<Option<T>> {
    v.map(|s| {
        s.parse::<T>().map_err(|_| {
            ServiceError::invalid(format!("query parameter `{name}`: {s:?} is not {expected}"))
        })
    })
    .transpose()
}

async fn recall_http(
    State(agg): State<Aggregator>,
    headers: HeaderMap,
    Query(q): Query<RecallParams>,
) -> Result<Json<serde_json::Value>, ServiceError> {
    let started = Instant::now();
    let span = tracing::info_span!(
        "http.recall",
        otel.kind = "server",
        user_id = tracing::field::Empty,
        k = tracing::field::Empty
    );
    telemetry::set_parent_from_headers(&span, &headers);
    let ctx = &agg.ctx;
    let res = async {
        let user_id: u64 = parse_param("user_id", q.user_id.as_ref(), "an unsigned integer")?
            .ok_or_else(|| ServiceError::invalid("query parameter `user_id` is required"))?;
        let cfg = &agg.settings.aggregator;
        let k: Option<usize> = parse_param("k", q.k.as_ref(), "an unsigned integer")?;
        let at = q.at.as_deref().map(|s| parse_time("at", s)).transpose()?;
        let since = q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?;
        let channels: Vec<String> = q
            .channels
            .as_deref()
            .map(|s| {
                s.split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let query = RecallQuery::check(
            user_id,
            k,
            at,
            since,
            &channels,
            cfg,
            &ctx.cfg.limits,
            now_ms(),
        )?;
        let mut query = query.with_request_id(q.request_id.as_deref())?;
        if let Some(l) = parse_param::<bool>("logged_in", q.logged_in.as_ref(), "true or false")? {
            query.logged_in = l;
        }
        tracing::Span::current()
            .record("user_id", user_id)
            .record("k", query.k);
        let r = recall::recall(&agg.clients, &agg.settings, agg.tower.load_full(), &query).await?;
        agg.log_served(&query, &r);
        let mut answer = json!({
            "request_id": query.request_id,
            "user_id": user_id,
            "items": r.items,
            "user_state": r.user_state.as_str(),
            "user_embedding": r.user_embedding,
            "degraded": r.degraded,
            "took_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        // no trace id at all rather than a made-up one of zeros
        if let Some(t) = telemetry::current_trace_id() {
            answer["trace_id"] = t.into();
        }
        Ok(answer)
    }
    .instrument(span)
    .await;
    observe(
        "recall",
        res.as_ref()
            .map(|_| 200)
            .unwrap_or_else(|e: &ServiceError| e.code.http()),
        started.elapsed().as_secs_f64(),
    );
    res.map(Json)
}

async fn read_body(body: Body, limit: usize) -> ServiceResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is over {limit} bytes (limits.max_body_bytes)"),
        )
    })
}

fn is_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM))
}

/// Decodes a body into rows, from JSON lines or an Arrow IPC stream.
fn rows<T>(
    limits: &coldstart_runtime::config::LimitsConfig,
    headers: &HeaderMap,
    body: &[u8],
    from_json: fn(usize, &serde_json::Map<String, serde_json::Value>) -> ServiceResult<T>,
    from_batch: fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
) -> ServiceResult<Vec<T>> {
    if is_arrow(headers) {
        let mut out = Vec::new();
        let mut offset = 0usize;
        for b in ipc::decode(body, limits.max_batch_rows)? {
            // rows are numbered over the whole stream
            out.extend(from_batch(&b).map_err(|e| e.shift_row(offset))?);
            offset += b.num_rows();
        }
        Ok(out)
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|e| ServiceError::invalid(format!("the body is not UTF-8 JSON lines: {e}")))?;
        validate::json_lines(text, limits, from_json)
    }
}

/// One write route: how its rows are read and checked. Every write goes the same way: bounded
/// body → rows (JSON lines or Arrow) → checked whole → sent on, so a bad row stores nothing.
struct WriteRoute<T> {
    name: &'static str,
    from_json: fn(usize, &serde_json::Map<String, serde_json::Value>) -> ServiceResult<T>,
    from_batch: fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
    check: fn(&[T], &coldstart_runtime::config::LimitsConfig, i64) -> ServiceResult<()>,
}

async fn write<T, F, Fut>(
    agg: Aggregator,
    headers: HeaderMap,
    body: Body,
    route: WriteRoute<T>,
    send: F,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError>
where
    F: FnOnce(Aggregator, Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ServiceResult<u64>>,
{
    let started = Instant::now();
    let span = tracing::info_span!(
        "http.write",
        otel.kind = "server",
        route = route.name,
        rows = tracing::field::Empty
    );
    telemetry::set_parent_from_headers(&span, &headers);
    let res = async {
        let limits = &agg.ctx.cfg.limits;
        let body = read_body(body, limits.max_body_bytes).await?;
        let rows = rows(limits, &headers, &body, route.from_json, route.from_batch)?;
        tracing::Span::current().record("rows", rows.len());
        (route.check)(&rows, limits, now_ms())?;
        send(agg.clone(), rows).await
    }
    .instrument(span)
    .await;
    observe(
        route.name,
        res.as_ref().map(|_| 200).unwrap_or_else(|e| e.code.http()),
        started.elapsed().as_secs_f64(),
    );
    res.map(|n| (StatusCode::OK, Json(json!({ "accepted": n }))))
}

async fn items_http(
    State(agg): State<Aggregator>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "items",
        from_json: validate::item_row,
        from_batch: Item::from_batch,
        check: validate::items,
    };
    write(agg, headers, body, route, |agg, items| async move {
        let image_dim = agg.ctx.cfg.limits.image_dim;
        agg.clients.encoder.publish(&items, image_dim).await
    })
    .await
}

async fn events_http(
    State(agg): State<Aggregator>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "events",
        from_json: validate::event_row,
        from_batch: Event::from_batch,
        check: validate::events,
    };
    write(agg, headers, body, route, |agg, events| async move {
        // the whole batch is checked before any profile partition commits a part of it: an
        // event of an item never published is refused here, naming its row
        let ids: Vec<u64> = events.iter().map(|e| e.item_id).collect();
        let known = agg.clients.sharder.item_meta(&ids).await?;
        if let Some((r, e)) = events
            .iter()
            .enumerate()
            .find(|(_, e)| !known.contains_key(&e.item_id))
        {
            return Err(ServiceError::bad_row(
                r,
                "item_id",
                format!("item {} is unknown: publish it first", e.item_id),
            ));
        }
        agg.clients.profile.ingest_events(&events).await
    })
    .await
}

async fn users_http(
    State(agg): State<Aggregator>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "users",
        from_json: validate::user_row,
        from_batch: User::from_batch,
        check: validate::users,
    };
    write(agg, headers, body, route, |agg, users| async move {
        agg.clients.profile.upsert_users(&users).await
    })
    .await
}
