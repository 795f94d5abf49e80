//! HTTPS checks the distributions share: API `/readyz`, the Node object of this kubelet,
//! and etcd's v3 JSON gateway (member list/remove) with a client certificate. Each call
//! takes its client for PEM text (CA, optional client identity) from a `ClientCache`, so
//! repeated probes reuse a connection.

use super::{DistroError, DistroResult, EtcdMember};
use protocol::etcd_gateway::{self, GatewayError};
use protocol::pem_client::ClientCache;
use protocol::records::EtcdCreds;

/// A client trusting only `ca_pem`, presenting `identity` (cert PEM, key PEM) if given.
pub fn client(
    step: &'static str,
    clients: &ClientCache,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> DistroResult<reqwest::Client> {
    clients
        .client(ca_pem, identity)
        .map_err(|detail| DistroError::Other { step, detail })
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

/// [`super::Distro::control_plane_version`]: `GET /version` and `GET /api/v1/nodes` at
/// `base` (the cluster's API endpoint) with the kubeconfig's CA and client identity, read
/// by [`super::parse::control_plane_version`] (`joiner`'s own Node left out). Not the
/// kubeconfig's own server: k3s writes
/// `https://127.0.0.1:6443` there, which on a joiner is nobody.
pub async fn control_plane_version(
    clients: &ClientCache,
    kubeconfig: &str,
    base: &str,
    joiner: &str,
) -> DistroResult<crate::upgrade::order::ControlPlaneVersions> {
    const STEP: &str = "control plane version";
    let parse = |detail: String| DistroError::Parse {
        step: STEP,
        detail: format!("the admin kubeconfig: {detail}"),
    };
    let (_server, ca) = super::parse::kubeconfig_server(kubeconfig).map_err(parse)?;
    let (cert, key) = super::parse::kubeconfig_identity(kubeconfig).map_err(parse)?;
    let c = client(STEP, clients, &ca, Some((&cert, &key)))?;
    let base = base.trim_end_matches('/');
    let get = |path: &'static str| {
        let c = c.clone();
        let url = format!("{base}{path}");
        async move {
            let err = |detail: String| DistroError::Http {
                step: STEP,
                url: url.clone(),
                detail,
            };
            let r = c
                .get(&url)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            let status = r.status().as_u16();
            let body = r.text().await.map_err(|e| err(e.to_string()))?;
            if status != 200 {
                return Err(err(format!("HTTP {status}")));
            }
            Ok(body)
        }
    };
    let version = get("/version").await?;
    let nodes = get("/api/v1/nodes").await?;
    super::parse::control_plane_version(&version, &nodes, joiner)
        .map_err(|detail| DistroError::Parse { step: STEP, detail })
}

fn gateway_error(e: GatewayError) -> DistroError {
    DistroError::Http {
        step: e.step,
        url: e.url,
        detail: e.detail,
    }
}

/// Lists members through the first endpoint that answers.
pub async fn etcd_member_list(
    clients: &ClientCache,
    endpoints: &[String],
    creds: &EtcdCreds,
) -> DistroResult<Vec<EtcdMember>> {
    etcd_gateway::member_list(clients, endpoints, creds)
        .await
        .map_err(gateway_error)
}

/// Removes member `id`; already gone counts as removed.
pub async fn etcd_member_remove(
    clients: &ClientCache,
    endpoints: &[String],
    creds: &EtcdCreds,
    id: u64,
) -> DistroResult<()> {
    etcd_gateway::member_remove(clients, endpoints, creds, id)
        .await
        .map_err(gateway_error)
}

/// Whether the member at `client_url` answers `/health` true.
pub async fn etcd_health(clients: &ClientCache, creds: &EtcdCreds, client_url: &str) -> bool {
    etcd_gateway::health(clients, creds, client_url).await
}

pub(crate) fn read(step: &'static str, path: &std::path::Path) -> DistroResult<String> {
    std::fs::read_to_string(path).map_err(|e| DistroError::File {
        step,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
