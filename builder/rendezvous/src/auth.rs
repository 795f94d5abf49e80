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

/// An authenticated request: its cluster, signed client name and whole body.
#[derive(Debug)]
pub struct Authed {
    pub cell: Arc<ClusterCell>,
    pub client: String,
    pub uri: Uri,
    pub body: Bytes,
}

impl Authed {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }

    pub fn query<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&self.uri)
            .map(|q| q.0)
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

impl FromRequest<Service> for Authed {
    type Rejection = ApiError;

    async fn from_request(req: Request, svc: &Service) -> Result<Self, ApiError> {
        svc.check_available()?;
        let (parts, body) = req.into_parts();
        let limit = svc.limits().max_body_bytes;
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        // The body must arrive within the read timeout (the headers did, in hyper), so a
        // client trickling it cannot hold the connection before it is authenticated.
        let read_ms = svc.limits().read_timeout_ms;
        let body = tokio::time::timeout(
            Duration::from_millis(read_ms),
            axum::body::to_bytes(body, limit),
        )
        .await
        .map_err(|_| {
            ApiError::bad_request(format!("request body not received within {read_ms} ms"))
        })?
        .map_err(|_| too_large(limit))?;

        let cluster_id = cluster_of(parts.uri.path())
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "no such route"))?;
        let h = |name: &str| header(&parts.headers, name);
        let timestamp: u64 = h(HEADER_TIMESTAMP)?.parse().map_err(|_| {
            ApiError::unauthenticated(format!("{HEADER_TIMESTAMP} is not a number"))
        })?;
        let nonce = h(HEADER_NONCE)?;
        let client = h(HEADER_CLIENT)?;
        let signature = h(HEADER_SIGNATURE)?;
        // Hex is case-insensitive: the replay memory must see every spelling of one MAC
        // as the same signature, so it is keyed on the decoded bytes.
        let sig_bytes = signature_bytes(signature)?;
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(ApiError::unauthenticated(format!(
                "{HEADER_NONCE} must be 1 to 64 characters"
            )));
        }

        let now_ms = svc.now_ms();
        let window = svc.limits().replay_window_s;
        if timestamp.abs_diff(now_ms / 1000) > window {
            return Err(ApiError::unauthenticated(format!(
                "timestamp {timestamp} is more than {window} s from the server's clock"
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
            body: &body,
            timestamp,
            nonce,
            client,
        };
        if !key.verify(&signed, signature) {
            return Err(ApiError::unauthenticated("bad signature"));
        }
        check_name("client name", client).map_err(ApiError::bad_request)?;
        if timestamp < svc.started_s() {
            // Possibly a replay of a request the previous process accepted; a live client
            // signs every retry afresh, so 503 (retryable) costs it one round trip.
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "request signed before this service started; sign it again",
            ));
        }

        let cell = svc.cluster(cluster_id)?;
        {
            let mut st = cell.lock();
            if !st.replay.first_use(sig_bytes, now_ms, window * 1000) {
                return Err(ApiError::unauthenticated("replayed request"));
            }
            if !st.rate.allow(client, now_ms, svc.limits()) {
                return Err(ApiError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "client {client} is over {} requests/s",
                        svc.limits().rate_per_second
                    ),
                ));
            }
        }
        // A fresh, verified request: its connection no longer counts as unauthenticated.
        let ticket = parts.extensions.get::<Arc<Ticket>>();
        if let Some(t) = ticket {
            t.authenticated();
        }
        // Also per peer IP (when served over a socket), so changing the client name
        // does not escape the limit.
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
        Ok(Authed {
            cell,
            client: client.to_string(),
            uri: parts.uri,
            body,
        })
    }
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
