//! FleetLock on the cluster's upgrade lock (`protocol::fleetlock`): Zincati and other
//! OS-update agents take the same one slot muster's agents take to upgrade, so no node
//! reboots for an OS update while another upgrades Kubernetes, and the other way round.
//!
//! `POST /fleetlock/{cluster}/{token}/v1/pre-reboot` takes the slot (again, when the client
//! holds it: the lease is extended), `.../v1/steady-state` frees it if the client holds
//! it. The token stands in for the request signature FleetLock clients cannot make.

use crate::error::ApiError;
use crate::service::{ClusterCell, Service};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use protocol::fleetlock::{self, LockRequest};
use protocol::release::{UPGRADE_SEMAPHORE, UPGRADE_SLOTS};
use protocol::wire::{AcquireRequest, AcquireResponse, ErrorKind};

pub fn routes() -> Router<Service> {
    Router::new()
        .route(
            "/fleetlock/{cluster}/{token}/v1/pre-reboot",
            post(pre_reboot),
        )
        .route(
            "/fleetlock/{cluster}/{token}/v1/steady-state",
            post(steady_state),
        )
}

/// What both operations check first: the protocol header, the token of a served
/// cluster, the body; the cluster and the client's holder name in its upgrade lock.
fn admit(
    svc: &Service,
    (cluster, token): &(String, String),
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(std::sync::Arc<ClusterCell>, String), ApiError> {
    svc.check_available()?;
    if headers.get(fleetlock::HEADER).and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(ApiError::bad_request(format!(
            "a FleetLock request carries the header `{}: true`",
            fleetlock::HEADER
        )));
    }
    let key = svc
        .signing_key(cluster)?
        .ok_or_else(|| ApiError::unauthenticated("no such cluster, or a wrong token"))?;
    if !same(fleetlock::token(&key).as_bytes(), token.as_bytes()) {
        return Err(ApiError::unauthenticated(
            "no such cluster, or a wrong token",
        ));
    }
    let req: LockRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let holder = fleetlock::holder(&req.client_params).map_err(ApiError::bad_request)?;
    Ok((svc.cluster(cluster)?, holder))
}

/// Equal bytes, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn pre_reboot(
    State(svc): State<Service>,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (cell, holder) = admit(&svc, &path, &headers, &body)?;
    let cluster = &path.0;
    let req = AcquireRequest {
        slots: UPGRADE_SLOTS,
        holder: holder.clone(),
        ttl_ms: fleetlock::LEASE_MS,
    };
    match cell.acquire(&svc, UPGRADE_SEMAPHORE, req).await? {
        AcquireResponse::Granted { token, .. } => {
            tracing::info!(%cluster, %holder, token, "FleetLock: upgrade lock granted for a reboot");
            Ok(Json(serde_json::json!({})))
        }
        AcquireResponse::Busy { holders, .. } => {
            let names: Vec<&str> = holders.iter().map(|h| h.holder.as_str()).collect();
            Err(ApiError::new(
                ErrorKind::SemaphoreFull,
                format!(
                    "the cluster's upgrade lock is held by {} (muster upgrades and FleetLock \
                     reboots share its one slot); try again later",
                    names.join(", ")
                ),
            ))
        }
    }
}

async fn steady_state(
    State(svc): State<Service>,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (cell, holder) = admit(&svc, &path, &headers, &body)?;
    let cluster = &path.0;
    if cell
        .release_holder(&svc, UPGRADE_SEMAPHORE, &holder)
        .await?
    {
        tracing::info!(%cluster, %holder, "FleetLock: upgrade lock released");
    }
    // Unlock-if-held: not holding it is success too.
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_whole_byte_strings() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
