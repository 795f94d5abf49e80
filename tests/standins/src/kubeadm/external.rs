//! The kubeadm stand-in's external-etcd mode, chosen like kubeadm by the
//! ClusterConfiguration's `etcd.external`: no local etcd member is started, added, promoted
//! or removed; the apiserver stand-in stores in the external endpoints over REAL TLS with
//! the API server's client certificate (and checks etcd's server certificate against the
//! given CA); preflight asks every endpoint's `/version` with those files, like kubeadm's
//! `ExternalEtcdVersion` check, so an unreachable cluster fails `init`/`join` clearly.

use super::config::ExternalEtcd;
use crate::client::{Trust, http_client};
use crate::pki::CertKey;
use model::node_files::{KUBE_MANIFESTS, NodeRoot};
use std::path::PathBuf;
use std::time::Duration;

/// A file of the config (absolute on the node) under the node root.
pub fn node_path(root: &NodeRoot, abs: &str) -> PathBuf {
    root.path(abs.trim_start_matches('/'))
}

/// The apiserver stand-in's etcd flags: every endpoint (comma-separated, like
/// kube-apiserver's `--etcd-servers`) and the config's TLS files.
pub fn apiserver_etcd_args(root: &NodeRoot, e: &ExternalEtcd) -> [String; 4] {
    let p = |f: &str| node_path(root, f).display().to_string();
    [
        format!("--etcd-endpoint={}", e.endpoints.join(",")),
        format!("--etcd-cafile={}", p(&e.ca_file)),
        format!("--etcd-certfile={}", p(&e.cert_file)),
        format!("--etcd-keyfile={}", p(&e.key_file)),
    ]
}

/// kubeadm's preflight for an external etcd: the three files exist
/// (`ExternalEtcdClientCertificates`) and every endpoint answers `/version` over TLS with
/// them (`ExternalEtcdVersion`). `(check name, message)` of each failure.
pub async fn preflight(root: &NodeRoot, e: &ExternalEtcd) -> Vec<(String, String)> {
    let mut checks = Vec::new();
    let mut read = |f: &str| match std::fs::read_to_string(node_path(root, f)) {
        Ok(t) => Some(t),
        Err(err) => {
            checks.push((
                "ExternalEtcdClientCertificates".to_string(),
                format!("{f} doesn't exist or cannot be read: {err}"),
            ));
            None
        }
    };
    let (ca, cert, key) = (read(&e.ca_file), read(&e.cert_file), read(&e.key_file));
    let (Some(ca), Some(cert_pem), Some(key_pem)) = (ca, cert, key) else {
        return checks;
    };
    let client = match http_client(
        &Trust::Ca(ca),
        Some(&CertKey { cert_pem, key_pem }),
        Duration::from_secs(5),
    ) {
        Ok(c) => c,
        Err(err) => {
            checks.push((
                "ExternalEtcdClientCertificates".to_string(),
                format!("{err:#}"),
            ));
            return checks;
        }
    };
    for ep in &e.endpoints {
        let url = format!("{}/version", ep.trim_end_matches('/'));
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => checks.push((
                "ExternalEtcdVersion".to_string(),
                format!("Get \"{url}\": status {}", r.status()),
            )),
            Err(err) => checks.push((
                "ExternalEtcdVersion".to_string(),
                format!("Get \"{url}\": {}", error_chain(&err)),
            )),
        }
    }
    checks
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Whether this node's control plane runs on an external etcd: it has no local etcd
/// static pod (kubeadm reset and upload-certs decide the same way).
pub fn node_is_external(root: &NodeRoot) -> bool {
    !root.path(KUBE_MANIFESTS).join("etcd.yaml").exists()
        && root
            .path(KUBE_MANIFESTS)
            .join("kube-apiserver.yaml")
            .exists()
}

/// The `kubeadm-certs` entries: (name in the Secret, path under pki/). With an external
/// etcd kubeadm carries its CA and the API server's client pair (`external-etcd-*`)
/// instead of the etcd CA it would have made.
pub fn shared_certs(external: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("ca.crt", "ca.crt"),
        ("ca.key", "ca.key"),
        ("sa.key", "sa.key"),
        ("sa.pub", "sa.pub"),
        ("front-proxy-ca.crt", "front-proxy-ca.crt"),
        ("front-proxy-ca.key", "front-proxy-ca.key"),
    ];
    if external {
        v.extend([
            ("external-etcd-ca.crt", "etcd/ca.crt"),
            ("external-etcd.crt", "apiserver-etcd-client.crt"),
            ("external-etcd.key", "apiserver-etcd-client.key"),
        ]);
    } else {
        v.extend([
            ("etcd-ca.crt", "etcd/ca.crt"),
            ("etcd-ca.key", "etcd/ca.key"),
        ]);
    }
    v
}
