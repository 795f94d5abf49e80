//! HTTPS clients that trust one CA given as PEM and may present a client identity (cert
//! PEM, key PEM): what the agent and `muster remove` use for the Kubernetes API and etcd's
//! v3 JSON gateway.

use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clients kept for reuse, one per CA and identity, so repeated calls (health probes every
/// 200 ms) reuse a kept-alive connection instead of a new TLS handshake on both sides each
/// time (issue 17: a hundred workers verifying at once shook hands with the API server
/// hundreds of times a second). Keyed by a digest of the PEM inputs (no key material is
/// kept beyond the client itself); a rotated certificate is a new key. Keep one per
/// runtime-owning object (a connection belongs to the runtime that opened it).
/// Clones share the kept clients.
#[derive(Debug, Clone, Default)]
pub struct ClientCache {
    kept: Arc<Mutex<Vec<Kept>>>,
}

/// A kept client and the digest of the PEM inputs it was made from.
type Kept = ([u8; 32], reqwest::Client);

/// Clients a [`ClientCache`] keeps; the oldest goes first.
const KEPT: usize = 8;

impl ClientCache {
    pub fn new() -> ClientCache {
        ClientCache::default()
    }

    /// The kept client for `ca_pem` and `identity`, or a new one ([`client`]) kept.
    pub fn client(
        &self,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<reqwest::Client, String> {
        let mut h = Sha256::new();
        for part in [Some(ca_pem), identity.map(|i| i.0), identity.map(|i| i.1)] {
            // Length-prefixed, so no two different inputs hash alike by concatenation.
            let part = part.unwrap_or("");
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let key: [u8; 32] = h.finalize().into();
        // A panic elsewhere cannot leave the list half-written.
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = kept.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let c = client(ca_pem, identity)?;
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push((key, c.clone()));
        Ok(c)
    }
}

/// A client trusting only `ca_pem`, presenting `identity` (cert PEM, key PEM) if given;
/// 5 s per request, 3 s to connect. The error says which part of the input is wrong.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate PEM: {e}"))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| format!("client key PEM: {e}"))?
                .ok_or_else(|| "no private key in the client key PEM".to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client identity: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn kept(c: &ClientCache) -> usize {
        c.kept.lock().unwrap().len()
    }

    /// One client per CA and identity, reused; the oldest dropped past `KEPT`. (Text
    /// without PEM blocks is a CA bundle of no certificates: enough to build a client.)
    #[test]
    fn a_client_is_kept_per_ca_and_identity() {
        let c = ClientCache::new();
        c.client("ca one", None).unwrap();
        c.client("ca one", None).unwrap();
        assert_eq!(kept(&c), 1, "the same inputs reuse the kept client");
        c.client("ca two", None).unwrap();
        assert_eq!(kept(&c), 2);
        // Length-prefixed parts: moving text between the CA and nothing else differs.
        c.client("ca on", None).unwrap();
        assert_eq!(kept(&c), 3);
        let shared = c.clone();
        for i in 0..20 {
            shared.client(&format!("ca {i}"), None).unwrap();
        }
        assert_eq!(kept(&c), KEPT, "clones share one bounded list");
        // A bad identity is an error and keeps nothing.
        assert!(c.client("ca", Some(("not a cert", "not a key"))).is_err());
        assert_eq!(kept(&c), KEPT);
    }
}
