//! Request authentication: every request under `/v1/clusters/{id}/` carries a timestamp,
//! a nonce, a client name and an HMAC (see `protocol::seal::RequestToSign`). A request that
//! fails any check is answered 401 before it touches the cluster's state.

use crate::error::ApiError;
use crate::peers::Ticket;
use crate::service::{ClusterCell, Service};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Uri};
use protocol::seal::RequestToSign;
use protocol::wire::{
    ErrorKind, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, check_name,
};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// An authenticated request: its cluster, signed client name, query and whole body.
///
/// Nothing in it refers to the connection's read buffer: hyper parses the request line
/// and headers in place, so a kept `Uri` (or header value) would keep that whole buffer
/// (8 KiB) alive while the request waits, and hyper allocates another to read on: a
/// parked watch held two (issue 17).
#[derive(Debug)]
pub struct Authed {
    pub cell: Arc<ClusterCell>,
    pub client: String,
    /// The connection's peer IP (`None` when served without a socket, as in tests).
    pub peer: Option<std::net::IpAddr>,
    /// The query string (after `?`), copied out of the request line.
    pub query: Option<String>,
    pub body: Bytes,
}

impl Authed {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }

    pub fn query<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let uri: Uri = match &self.query {
            Some(q) => format!("/?{q}")
                .parse()
                .map_err(|e| ApiError::bad_request(format!("query: {e}")))?,
            None => Uri::from_static("/"),
        };
        axum::extract::Query::<T>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

impl FromRequest<Service> for Authed {
    type Rejection = ApiError;

    /// Checks in a fixed order, each failure answered before the next is tried: the body
    /// within its limits, the signed headers, freshness and signature, then replay and the
    /// rate limits.
    async fn from_request(req: Request, svc: &Service) -> Result<Self, ApiError> {
        svc.check_available()?;
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, svc).await?;
        let cluster_id = cluster_of(parts.uri.path())
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "no such route"))?;
        let h = SignedHeaders::of(&parts.headers)?;
        let now_ms = svc.now_ms();
        verify(svc, cluster_id, &parts, &body, &h, now_ms)?;
        let cell = svc.cluster(cluster_id)?;
        let ticket = parts.extensions.get::<Arc<Ticket>>();
        admit(svc, &cell, &h, now_ms, ticket)?;
        Ok(Authed {
            cell,
            client: h.client.to_string(),
            peer: ticket.map(|t| t.ip()),
            query: parts.uri.query().map(str::to_string),
            body,
        })
    }
}

/// The whole body, refused over the size limit (declared or read) and cut off when it does
/// not arrive within the read timeout (the headers did, in hyper), so a client trickling it
/// cannot hold the connection before it is authenticated.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    svc: &Service,
) -> Result<Bytes, ApiError> {
    let limit = svc.limits().max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let read_ms = svc.limits().read_timeout_ms;
    tokio::time::timeout(
        Duration::from_millis(read_ms),
        axum::body::to_bytes(body, limit),
    )
    .await
    .map_err(|_| ApiError::bad_request(format!("request body not received within {read_ms} ms")))?
    .map_err(|_| too_large(limit))
}

/// The signature scheme's headers, checked for form.
struct SignedHeaders<'a> {
    timestamp: u64,
    nonce: &'a str,
    client: &'a str,
    signature: &'a str,
    /// Hex is case-insensitive: the replay memory must see every spelling of one MAC as
    /// the same signature, so it is keyed on the decoded bytes.
    sig_bytes: Signature,
}

impl<'a> SignedHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Result<Self, ApiError> {
        let h = |name: &str| header(headers, name);
        let timestamp: u64 = h(HEADER_TIMESTAMP)?.parse().map_err(|_| {
            ApiError::unauthenticated(format!("{HEADER_TIMESTAMP} is not a number"))
        })?;
        let nonce = h(HEADER_NONCE)?;
        let client = h(HEADER_CLIENT)?;
        let signature = h(HEADER_SIGNATURE)?;
        let sig_bytes = signature_bytes(signature)?;
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(ApiError::unauthenticated(format!(
                "{HEADER_NONCE} must be 1 to 64 characters"
            )));
        }
        Ok(SignedHeaders {
            timestamp,
            nonce,
            client,
            signature,
            sig_bytes,
        })
    }
}

/// Fresh (within the replay window of the server's clock), signed with the cluster's key,
/// by a well-named client, and not signed before this process started.
fn verify(
    svc: &Service,
    cluster_id: &str,
    parts: &axum::http::request::Parts,
    body: &Bytes,
    h: &SignedHeaders<'_>,
    now_ms: u64,
) -> Result<(), ApiError> {
    let window = svc.limits().replay_window_s;
    if h.timestamp.abs_diff(now_ms / 1000) > window {
        return Err(ApiError::unauthenticated(format!(
            "timestamp {} is more than {window} s from the server's clock",
            h.timestamp
        )));
    }
    let key = svc.signing_key(cluster_id)?.ok_or_else(|| {
        ApiError::unauthenticated(format!("cluster {cluster_id} is not served here"))
    })?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let signed = RequestToSign {
        method: parts.method.as_str(),
        path_and_query,
        body,
        timestamp: h.timestamp,
        nonce: h.nonce,
        client: h.client,
    };
    if !key.verify(&signed, h.signature) {
        return Err(ApiError::unauthenticated("bad signature"));
    }
    check_name("client name", h.client).map_err(ApiError::bad_request)?;
    if h.timestamp < svc.started_s() {
        // Possibly a replay of a request the previous process accepted; a live client
        // signs every retry afresh, so 503 (retryable) costs it one round trip.
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "request signed before this service started; sign it again",
        ));
    }
    Ok(())
}

/// A verified request's first use of its signature, within its client's rate and (when
/// served over a socket) its peer IP's, so changing the client name does not escape the
/// limit. Its connection no longer counts as unauthenticated.
fn admit(
    svc: &Service,
    cell: &ClusterCell,
    h: &SignedHeaders<'_>,
    now_ms: u64,
    ticket: Option<&Arc<Ticket>>,
) -> Result<(), ApiError> {
    {
        let window = svc.limits().replay_window_s;
        let mut st = cell.lock();
        if !st.replay.first_use(h.sig_bytes, now_ms, window * 1000) {
            return Err(ApiError::unauthenticated("replayed request"));
        }
        if !st.rate.allow(h.client, now_ms, svc.limits()) {
            return Err(ApiError::new(
                ErrorKind::RateLimited,
                format!(
                    "client {} is over {} requests/s",
                    h.client,
                    svc.limits().rate_per_second
                ),
            ));
        }
    }
    if let Some(t) = ticket {
        t.authenticated();
    }
    if let Some(ip) = ticket.map(|t| t.ip())
        && !svc.allow_peer(ip, now_ms)
    {
        let l = svc.limits();
        return Err(ApiError::new(
            ErrorKind::RateLimited,
            format!(
                "{ip} is over {} requests/s",
                l.rate_per_second * l.peer_rate_factor
            ),
        ));
    }
    Ok(())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        format!("request body is over {limit} bytes"),
    )
}

/// A signature is 64 hex digits (HMAC-SHA256), in either letter case.
fn signature_bytes(signature: &str) -> Result<Signature, ApiError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(signature, &mut out).map_err(|_| {
        ApiError::unauthenticated(format!("{HEADER_SIGNATURE} is not 64 hex digits"))
    })?;
    Ok(out)
}

/// A decoded request signature.
pub type Signature = [u8; 32];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthenticated(format!("missing header {name}")))
}

/// `/v1/clusters/{id}/…` → `id`.
fn cluster_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/clusters/")?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// Signatures seen within the replay window, as decoded bytes (so no re-spelling of a
/// captured signature is new). A signature covers timestamp and nonce, so a reused
/// signature is a replayed request. Entries are kept for twice the window (the longest a
/// timestamp stays acceptable), in arrival order, so pruning is a pop from the front.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashSet<Signature>,
    order: VecDeque<(u64, Signature)>,
}

impl ReplayCache {
    /// Records `signature`; false if it was already used.
    pub fn first_use(&mut self, signature: Signature, now_ms: u64, window_ms: u64) -> bool {
        while let Some((until, _)) = self.order.front() {
            if *until > now_ms {
                break;
            }
            if let Some((_, sig)) = self.order.pop_front() {
                self.seen.remove(&sig);
            }
        }
        if !self.seen.insert(signature) {
            return false;
        }
        self.order.push_back((
            now_ms.saturating_add(window_ms.saturating_mul(2)),
            signature,
        ));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_rejects_reuse_and_forgets_after_twice_the_window() {
        let mut c = ReplayCache::default();
        let (s1, s2) = ([1; 32], [2; 32]);
        assert!(c.first_use(s1, 0, 1000));
        assert!(!c.first_use(s1, 1999, 1000));
        assert!(c.first_use(s2, 1999, 1000));
        assert!(c.first_use(s1, 2000, 1000));
        assert_eq!(c.seen.len(), 2);
    }

    #[test]
    fn every_letter_case_of_a_signature_is_the_same_signature() {
        let lower = "ab".repeat(32);
        let upper = lower.to_ascii_uppercase();
        let mixed = "aB".repeat(32);
        let b = signature_bytes(&lower).unwrap();
        assert_eq!(signature_bytes(&upper).unwrap(), b);
        assert_eq!(signature_bytes(&mixed).unwrap(), b);
        assert!(signature_bytes(&"ab".repeat(31)).is_err());
        assert!(signature_bytes(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn cluster_is_the_fourth_path_segment() {
        assert_eq!(cluster_of("/v1/clusters/abc/records"), Some("abc"));
        assert_eq!(cluster_of("/v1/clusters//x"), None);
        assert_eq!(cluster_of("/v2/clusters/abc"), None);
    }
}
