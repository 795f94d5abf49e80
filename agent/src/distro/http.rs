//! HTTPS checks the distributions share: API `/readyz`, the Node object of this kubelet,
//! and etcd's v3 JSON gateway (member list/remove) with a client certificate. Each call
//! builds its TLS config from PEM text (CA, optional client identity).

use super::{DistroError, DistroResult, EtcdMember};
use protocol::records::EtcdCreds;
use std::sync::Arc;
use std::time::Duration;

/// A client trusting only `ca_pem`, presenting `identity` (cert PEM, key PEM) if given.
pub fn client(
    step: &'static str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> DistroResult<reqwest::Client> {
    let bad = |detail: String| DistroError::Other { step, detail };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("client certificate PEM: {e}")))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| bad(format!("client key PEM: {e}")))?
                .ok_or_else(|| bad("no private key in the client key PEM".into()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad(format!("client identity: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| bad(format!("HTTP client: {e}")))
}

/// `GET {base}/readyz` answers 200 with body `ok`. Connection errors are "not ready".
pub async fn readyz(c: &reqwest::Client, base: &str) -> bool {
    let url = format!("{base}/readyz");
    match c.get(&url).send().await {
        Ok(r) if r.status().as_u16() == 200 => {
            r.text().await.map(|t| t.trim() == "ok").unwrap_or(false)
        }
        Ok(r) => {
            tracing::debug!(%url, status = r.status().as_u16(), "not ready");
            false
        }
        Err(e) => {
            tracing::debug!(%url, error = %e, "not ready");
            false
        }
    }
}

/// `GET {base}/api/v1/nodes/{name}` with the kubelet's client certificate: registered and
/// `Ready` (issue 14: a node without a pod network is not done).
pub async fn node_registered(c: &reqwest::Client, base: &str, name: &str) -> bool {
    let url = format!("{base}/api/v1/nodes/{name}");
    match c.get(&url).send().await {
        Ok(r) if r.status().as_u16() == 200 => {
            r.text().await.is_ok_and(|t| super::parse::node_ready(&t))
        }
        _ => false,
    }
}

fn etcd_client(step: &'static str, creds: &EtcdCreds) -> DistroResult<reqwest::Client> {
    client(
        step,
        &creds.ca_pem,
        Some((&creds.cert_pem, creds.key_pem.expose())),
    )
}

async fn etcd_post(
    step: &'static str,
    c: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> DistroResult<String> {
    let err = |detail: String| DistroError::Http {
        step,
        url: url.to_string(),
        detail,
    };
    let r = c
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| err(e.to_string()))?;
    if status != 200 {
        return Err(err(format!("status {status}: {}", text.trim())));
    }
    Ok(text)
}

/// Lists members through the first endpoint that answers.
pub async fn etcd_member_list(
    endpoints: &[String],
    creds: &EtcdCreds,
) -> DistroResult<Vec<EtcdMember>> {
    const STEP: &str = "list etcd members";
    let c = etcd_client(STEP, creds)?;
    let mut last = None;
    for ep in endpoints {
        let url = format!("{ep}/v3/cluster/member/list");
        match etcd_post(STEP, &c, &url, serde_json::json!({})).await {
            Ok(text) => {
                return super::parse::etcd_members(&text).map_err(|detail| DistroError::Parse {
                    step: STEP,
                    detail: format!("{url}: {detail}"),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(DistroError::Other {
        step: STEP,
        detail: "no etcd endpoint to ask".into(),
    }))
}

/// Removes member `id` (the gateway takes the uint64 as a decimal string).
pub async fn etcd_member_remove(
    endpoints: &[String],
    creds: &EtcdCreds,
    id: u64,
) -> DistroResult<()> {
    const STEP: &str = "remove etcd member";
    let c = etcd_client(STEP, creds)?;
    let mut last = None;
    for ep in endpoints {
        let url = format!("{ep}/v3/cluster/member/remove");
        match etcd_post(STEP, &c, &url, serde_json::json!({"ID": id.to_string()})).await {
            Ok(_) => return Ok(()),
            // Already gone: removing is idempotent.
            Err(DistroError::Http { detail, .. }) if detail.contains("member not found") => {
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(DistroError::Other {
        step: STEP,
        detail: "no etcd endpoint to ask".into(),
    }))
}

/// `GET {client_url}/health` with the client certificate: etcd answers
/// `{"health":"true"}` (200) when it has a leader and can commit, `{"health":"false"}` (503)
/// without quorum. Errors and timeouts count as unhealthy.
pub async fn etcd_health(creds: &EtcdCreds, client_url: &str) -> bool {
    const STEP: &str = "etcd health";
    let Ok(c) = etcd_client(STEP, creds) else {
        return false;
    };
    let url = format!("{}/health", client_url.trim_end_matches('/'));
    match c.get(&url).send().await {
        Ok(r) => match r.text().await {
            Ok(body) => super::parse::etcd_health(&body).unwrap_or(false),
            Err(_) => false,
        },
        Err(e) => {
            tracing::debug!(%url, error = %e, "etcd member unreachable");
            false
        }
    }
}

pub(crate) fn read(step: &'static str, path: &std::path::Path) -> DistroResult<String> {
    std::fs::read_to_string(path).map_err(|e| DistroError::File {
        step,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
