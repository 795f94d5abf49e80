//! The HTTP routes of protocol v1 (`docs/rendezvous-protocol.md`). `app` is a plain
//! router so tests can drive it with `oneshot` and no socket.

use crate::audit;
use crate::auth::Authed;
use crate::error::ApiError;
use crate::service::{ClusterCell, Service};
use crate::watch_slots::WatchSlot;
use crate::watch_stream::LineWatch;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use protocol::wire::{
    AcquireResponse, AuditResponse, ErrorKind, ForgetResponse, MembersResponse, RecordList,
    RegisterResponse, WATCH_STREAM_CONTENT_TYPE, WATCH_STREAM_LIFETIME_MS,
    WATCH_STREAM_MIN_IDLE_MS, WriteResponse,
};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub fn app(svc: Service) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/clusters/{cluster}/members", get(members))
        .route(
            "/v1/clusters/{cluster}/members/{name}",
            put(register).delete(forget),
        )
        .route(
            "/v1/clusters/{cluster}/records",
            get(read_records).post(create).put(cas).delete(delete),
        )
        .route(
            "/v1/clusters/{cluster}/semaphores/{name}/{action}",
            post(semaphore),
        )
        .route("/v1/clusters/{cluster}/watch", get(watch))
        .route("/v1/clusters/{cluster}/audit", get(audit_log))
        .merge(crate::fleetlock::routes())
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::bad_request("method not allowed on this route")
        })
        .with_state(svc)
}

/// Path parameters are judged only after authentication (an unauthenticated request
/// gets 401 whatever its path), and a bad one is the documented JSON error, not axum's
/// plain-text rejection.
type Names<T> = Result<Path<T>, PathRejection>;
type Answer<T> = Result<Json<T>, ApiError>;

fn params<T>(path: Names<T>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
}

async fn register(
    State(svc): State<Service>,
    path: Names<(String, String)>,
    a: Authed,
) -> Answer<RegisterResponse> {
    let (_, name) = params(path)?;
    Ok(Json(a.cell.register(&svc, &name, a.json()?).await?))
}

async fn forget(
    State(svc): State<Service>,
    path: Names<(String, String)>,
    a: Authed,
) -> Answer<ForgetResponse> {
    let (_, name) = params(path)?;
    Ok(Json(a.cell.forget(&svc, &name).await?))
}

async fn members(State(svc): State<Service>, a: Authed) -> Answer<MembersResponse> {
    Ok(Json(a.cell.members(&svc).await?))
}

async fn create(
    State(svc): State<Service>,
    a: Authed,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(a.cell.create(&svc, a.json()?).await?),
    ))
}

async fn cas(State(svc): State<Service>, a: Authed) -> Answer<WriteResponse> {
    Ok(Json(a.cell.cas(&svc, a.json()?).await?))
}

async fn delete(State(svc): State<Service>, a: Authed) -> Answer<WriteResponse> {
    Ok(Json(a.cell.delete(&svc, a.json()?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    key: Option<String>,
    prefix: Option<String>,
}

/// `?key=K` answers one [`protocol::wire::Record`], `?prefix=P` a [`RecordList`].
async fn read_records(
    State(svc): State<Service>,
    a: Authed,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match a.query::<RecordsQuery>()? {
        RecordsQuery {
            key: Some(key),
            prefix: None,
        } => Ok(Json(a.cell.get(&svc, &key).await?).into_response()),
        RecordsQuery {
            key: None,
            prefix: Some(prefix),
        } => {
            let list: RecordList = a.cell.list(&svc, &prefix).await?;
            Ok(Json(list).into_response())
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of `key` and `prefix`",
        )),
    }
}

async fn semaphore(
    State(svc): State<Service>,
    path: Names<(String, String, String)>,
    a: Authed,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (_, name, action) = params(path)?;
    match action.as_str() {
        "acquire" => {
            let r: AcquireResponse = a.cell.acquire(&svc, &name, a.json()?).await?;
            Ok(Json(r).into_response())
        }
        "renew" => Ok(Json(a.cell.renew(&svc, &name, a.json()?).await?).into_response()),
        "release" => Ok(Json(a.cell.release(&svc, &name, a.json()?).await?).into_response()),
        other => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no semaphore action `{other}` (acquire, renew, release)"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    after: u64,
    timeout_ms: Option<u64>,
    /// One answer per change on one response (`WATCH_STREAM_CONTENT_TYPE`) instead of
    /// one per request.
    #[serde(default)]
    stream: bool,
}

/// A [`protocol::WatchResponse`], encoded once per change for all its watchers
/// (`ClusterCell::watch_json`); with `stream=true`, one per change as they come.
async fn watch(
    State(svc): State<Service>,
    a: Authed,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let q: WatchQuery = a.query()?;
    let max = svc.limits().max_watch_ms;
    let timeout_ms = q.timeout_ms.unwrap_or(max).min(max);
    // Held until the answer is made, or for the stream's life.
    let slot = svc.take_watch_slot(a.cell.id(), &a.client, a.peer)?;
    if q.stream {
        let idle = Duration::from_millis(timeout_ms.max(WATCH_STREAM_MIN_IDLE_MS));
        let body = watch_stream(svc, a.cell, q.after, idle, slot);
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(WATCH_STREAM_CONTENT_TYPE),
            )],
            axum::body::Body::from_stream(body),
        )
            .into_response());
    }
    let json = a
        .cell
        .watch_json(&svc, q.after, Duration::from_millis(timeout_ms))
        .await;
    drop(slot);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response())
}

/// The lines of a streaming watch from `after` (`LineWatch`): the same shared encodings
/// as the long-poll's, each produced only when hyper asks for the next (after the one
/// before was written), so a slow reader gets one line with everything it missed instead
/// of a queue. Ends at shutdown and after [`WATCH_STREAM_LIFETIME_MS`]; `slot` is given
/// back when it ends or its connection closes (hyper drops the body).
fn watch_stream(
    svc: Service,
    cell: Arc<ClusterCell>,
    after: u64,
    idle: Duration,
    slot: WatchSlot,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let lines = LineWatch::new(
        &svc,
        cell,
        after,
        idle,
        Duration::from_millis(WATCH_STREAM_LIFETIME_MS),
    );
    futures::stream::unfold((lines, slot), |(mut lines, slot)| async move {
        let line = lines.next().await?;
        Some((Ok(line), (lines, slot)))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit_log(State(svc): State<Service>, a: Authed) -> Answer<AuditResponse> {
    let q: AuditQuery = a.query()?;
    let entries = audit::read(&svc, a.cell.id(), q.after.unwrap_or(0), q.limit).await?;
    Ok(Json(AuditResponse { entries }))
}
