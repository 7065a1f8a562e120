//! The public HTTP API (DESIGN.md §5): `GET /v1/recall`, `POST /v1/items`, `POST /v1/events`,
//! `POST /v1/users`. Bodies are JSON lines or an Arrow IPC stream
//! (`Content-Type: application/vnd.apache.arrow.stream`), bounded by `limits.max_body_bytes`.
//! Errors are JSON `{"error": {code, message, row?, field?}}` with a 4xx/5xx status.

use crate::recall;
use crate::request::{parse_time, RecallQuery};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use coldstart_common::discovery::Role;
use coldstart_common::http::observe;
use coldstart_common::node::Context;
use coldstart_common::rows::{Event, Item, User};
use coldstart_common::validate::{self, now_ms};
use coldstart_common::{ipc, telemetry, ErrorCode, ServiceError, ServiceResult};
use coldstart_proto::{put_command, IngestEvents, PublishItems, PutCommand, UpsertUsers};
use serde_json::json;
use std::time::Instant;
use tracing::Instrument;

/// The Arrow IPC stream media type.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The public routes.
pub fn routes(ctx: Context) -> Router {
    Router::new()
        .route("/v1/recall", get(recall_http))
        .route("/v1/items", post(items_http))
        .route("/v1/events", post(events_http))
        .route("/v1/users", post(users_http))
        .with_state(ctx)
}

#[derive(serde::Deserialize)]
struct RecallParams {
    user_id: Option<String>,
    k: Option<String>,
    at: Option<String>,
    since: Option<String>,
    channels: Option<String>,
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
    State(ctx): State<Context>,
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
    let res = async {
        let user_id: u64 = parse_param("user_id", q.user_id.as_ref(), "an unsigned integer")?
            .ok_or_else(|| ServiceError::invalid("query parameter `user_id` is required"))?;
        let cfg = &ctx.cfg.aggregator;
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
        tracing::Span::current()
            .record("user_id", user_id)
            .record("k", query.k);
        let items = recall::recall(&ctx.cluster, &ctx.cfg, &query).await?;
        let mut answer = json!({
            "user_id": user_id,
            "items": items,
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
    ctx: &Context,
    headers: &HeaderMap,
    body: &[u8],
    from_json: fn(usize, &serde_json::Map<String, serde_json::Value>) -> ServiceResult<T>,
    from_batch: fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
) -> ServiceResult<Vec<T>> {
    let limits = &ctx.cfg.limits;
    if is_arrow(headers) {
        let mut out = Vec::new();
        let mut offset = 0usize;
        for b in ipc::decode(body, limits.max_batch_rows)? {
            // rows are numbered over the whole stream
            out.extend(from_batch(&b).map_err(|mut e| {
                if let Some(loc) = e.location.as_mut() {
                    loc.row += offset;
                    e.message = e.message.replacen(
                        &format!("row {}", loc.row - offset),
                        &format!("row {}", loc.row),
                        1,
                    );
                }
                e
            })?);
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
    check: fn(&[T], &coldstart_common::config::LimitsConfig, i64) -> ServiceResult<()>,
}

async fn write<T, F, Fut>(
    ctx: Context,
    headers: HeaderMap,
    body: Body,
    route: WriteRoute<T>,
    send: F,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError>
where
    F: FnOnce(Context, Vec<T>) -> Fut,
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
        let body = read_body(body, ctx.cfg.limits.max_body_bytes).await?;
        let rows = rows(&ctx, &headers, &body, route.from_json, route.from_batch)?;
        tracing::Span::current().record("rows", rows.len());
        (route.check)(&rows, &ctx.cfg.limits, now_ms())?;
        send(ctx.clone(), rows).await
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
    State(ctx): State<Context>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "items",
        from_json: validate::item_row,
        from_batch: Item::from_batch,
        check: validate::items,
    };
    write(ctx, headers, body, route, |ctx, items| async move {
        let encoder = ctx.cluster.any(Role::Encoder).await?;
        let batch = Item::to_batch(&items, ctx.cfg.limits.image_dim);
        let cmd = PutCommand {
            kind: Some(put_command::Kind::PublishItems(PublishItems {})),
        };
        ctx.pool.put(&encoder.flight_addr, &cmd, vec![batch]).await
    })
    .await
}

/// Sends rows to the profile partitions that own their users.
async fn to_profiles<T: Clone>(
    ctx: &Context,
    rows: &[T],
    user: fn(&T) -> u64,
    batch: fn(&[T]) -> arrow::record_batch::RecordBatch,
    cmd: PutCommand,
) -> ServiceResult<u64> {
    let parts = ctx
        .cluster
        .partition(
            Role::Profile,
            rows.iter().enumerate().map(|(i, r)| (user(r), i)),
        )
        .await?;
    let calls = parts.into_iter().map(|(m, idx)| {
        let b = batch(&idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>());
        async move { ctx.pool.put(&m.flight_addr, &cmd, vec![b]).await }
    });
    Ok(futures::future::try_join_all(calls)
        .await?
        .into_iter()
        .sum())
}

async fn events_http(
    State(ctx): State<Context>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "events",
        from_json: validate::event_row,
        from_batch: Event::from_batch,
        check: validate::events,
    };
    write(ctx, headers, body, route, |ctx, events| async move {
        let cmd = PutCommand {
            kind: Some(put_command::Kind::IngestEvents(IngestEvents {})),
        };
        to_profiles(&ctx, &events, |e| e.user_id, Event::to_batch, cmd).await
    })
    .await
}

async fn users_http(
    State(ctx): State<Context>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ServiceError> {
    let route = WriteRoute {
        name: "users",
        from_json: validate::user_row,
        from_batch: User::from_batch,
        check: validate::users,
    };
    write(ctx, headers, body, route, |ctx, users| async move {
        let cmd = PutCommand {
            kind: Some(put_command::Kind::UpsertUsers(UpsertUsers {})),
        };
        to_profiles(&ctx, &users, |u| u.user_id, User::to_batch, cmd).await
    })
    .await
}
