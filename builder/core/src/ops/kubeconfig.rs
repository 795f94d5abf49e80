//! `muster kubeconfig`: the admin kubeconfig from the sealed join material, pointed at an
//! API endpoint that works. The VIP (or single load balancer) first; when it does not
//! answer, or its certificate does not verify for its address against the cluster CA, the
//! first control plane of the plan that passes the same test, with a warning saying which
//! and why (a "smart kubeconfig": locked out of the VIP is not locked out of the cluster).
//!
//! The kubeconfig carries the admin's private key: it is written with mode 0600,
//! atomically, and never printed.

use super::probe::{self, ProbeError};
use super::{BuildDir, OpsError};
use base64::Engine as _;
use model::baked::BakedCluster;
use model::spec::Role;
use protocol::keys;
use protocol::records::JoinMaterial;
use rustls::RootCertStore;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kubeconfig goes without `--write`.
pub const DEFAULT_FILE: &str = "kubeconfig";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(
        "rendezvous {url}: no join material yet (record `{key}`): the cluster is not initialized"
    )]
    NoMaterial { url: String, key: &'static str },
    #[error("rendezvous {url}: the join material carries no admin kubeconfig")]
    NoAdmin { url: String },
    #[error("rendezvous {url}: join material: {what}")]
    BadMaterial { url: String, what: String },
    #[error("the admin kubeconfig: {0}")]
    Parse(String),
    #[error("{path}: API endpoint `{endpoint}` is not address:port")]
    Endpoint { path: PathBuf, endpoint: String },
    #[error("no API endpoint answers with a certificate the cluster CA vouches for:\n{}", .failures.iter().map(|f| format!("  {}: {}", f.label, f.reason)).collect::<Vec<_>>().join("\n"))]
    NoneWorks { failures: Vec<Failure> },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An address the kubeconfig could point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `VIP`, `load balancer` or `control plane cp-1`.
    pub label: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub label: String,
    pub addr: SocketAddr,
    pub reason: String,
}

/// The candidate chosen and why the ones before it were passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub chosen: Candidate,
    /// Candidates tried before `chosen`, in order, with their failure.
    pub passed_over: Vec<Failure>,
}

impl Choice {
    /// A warning when the first candidate (the VIP) was not the one chosen.
    pub fn warning(&self) -> Option<String> {
        let first = self.passed_over.first()?;
        Some(format!(
            "the {} ({}) does not work: {}; falling back to the {} ({}). \
             This kubeconfig bypasses the HA endpoint: rerun `muster kubeconfig` once it is fixed.",
            first.label, first.addr, first.reason, self.chosen.label, self.chosen.addr
        ))
    }

    pub fn server(&self) -> String {
        format!("https://{}", self.chosen.addr)
    }
}

/// The API endpoint first, then every control plane in plan order.
pub fn candidates(baked: &BakedCluster, path: &Path) -> Result<Vec<Candidate>, KubeconfigError> {
    let api: SocketAddr = baked
        .api_endpoint
        .parse()
        .map_err(|_| KubeconfigError::Endpoint {
            path: path.to_path_buf(),
            endpoint: baked.api_endpoint.clone(),
        })?;
    let label = if baked.spec.ha.vip.is_some() {
        "VIP"
    } else {
        "load balancer"
    };
    let mut out = vec![Candidate {
        label: label.to_string(),
        addr: api,
    }];
    let port = baked.spec.ha.api_port;
    for n in baked.nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        let addr = SocketAddr::new(n.ip.into(), port);
        if addr != api {
            out.push(Candidate {
                label: format!("control plane {}", n.name),
                addr,
            });
        }
    }
    Ok(out)
}

/// The first candidate that `test` accepts; the failures of those before it.
pub async fn choose<F, Fut>(
    candidates: &[Candidate],
    mut test: F,
) -> Result<Choice, KubeconfigError>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<(), ProbeError>>,
{
    let mut failures = Vec::new();
    for c in candidates {
        match test(c.addr).await {
            Ok(()) => {
                return Ok(Choice {
                    chosen: c.clone(),
                    passed_over: failures,
                });
            }
            Err(e) => failures.push(Failure {
                label: c.label.clone(),
                addr: c.addr,
                reason: e.to_string(),
            }),
        }
    }
    Err(KubeconfigError::NoneWorks { failures })
}

/// A parsed admin kubeconfig (kept as YAML so nothing the distribution wrote is lost).
#[derive(Debug)]
pub struct AdminKubeconfig {
    doc: Value,
}

impl AdminKubeconfig {
    pub fn parse(text: &str) -> Result<AdminKubeconfig, KubeconfigError> {
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| KubeconfigError::Parse(format!("not YAML: {e}")))?;
        let k = AdminKubeconfig { doc };
        if k.clusters().is_empty() {
            return Err(KubeconfigError::Parse("no clusters".into()));
        }
        Ok(k)
    }

    fn clusters(&self) -> Vec<&Value> {
        self.doc
            .get("clusters")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(|c| c.get("cluster")).collect())
            .unwrap_or_default()
    }

    /// The first cluster's `certificate-authority-data`, decoded (PEM).
    pub fn ca_pem(&self) -> Result<Vec<u8>, KubeconfigError> {
        let data = self
            .clusters()
            .into_iter()
            .find_map(|c| c.get("certificate-authority-data").and_then(Value::as_str))
            .ok_or_else(|| KubeconfigError::Parse("no certificate-authority-data".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| KubeconfigError::Parse(format!("certificate-authority-data: {e}")))
    }

    /// The first user's client certificate and key (PEM), embedded as kubeadm and k3s
    /// write them (`client-certificate-data`, `client-key-data`).
    pub fn identity(&self) -> Result<(String, String), KubeconfigError> {
        let user = self
            .doc
            .get("users")
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(|u| u.get("user"))
            .ok_or_else(|| KubeconfigError::Parse("no users[0].user".into()))?;
        let pem = |field: &str| -> Result<String, KubeconfigError> {
            let b64 = user
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| KubeconfigError::Parse(format!("no users[0].user.{field}")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| KubeconfigError::Parse(format!("{field}: {e}")))?;
            String::from_utf8(bytes)
                .map_err(|e| KubeconfigError::Parse(format!("{field}: not UTF-8: {e}")))
        };
        Ok((pem("client-certificate-data")?, pem("client-key-data")?))
    }

    pub fn roots(&self) -> Result<RootCertStore, KubeconfigError> {
        probe::roots_from_pem(&self.ca_pem()?).map_err(|e| KubeconfigError::Parse(e.to_string()))
    }

    /// The kubeconfig with every cluster's `server` set to `server`.
    pub fn with_server(&self, server: &str) -> Result<String, KubeconfigError> {
        let mut doc = self.doc.clone();
        if let Some(clusters) = doc.get_mut("clusters").and_then(Value::as_sequence_mut) {
            for c in clusters {
                if let Some(Value::Mapping(m)) = c.get_mut("cluster") {
                    m.insert(Value::from("server"), Value::from(server));
                }
            }
        }
        serde_yaml::to_string(&doc).map_err(|e| KubeconfigError::Parse(e.to_string()))
    }
}

/// The admin kubeconfig from the join material at the rendezvous.
pub async fn fetch(dir: &BuildDir, timeout: Duration) -> Result<AdminKubeconfig, KubeconfigError> {
    let url = dir.rendezvous_url();
    let client = dir.client(timeout)?;
    let record = client
        .get(keys::JOIN_MATERIAL)
        .await
        .map_err(|e| dir.rendezvous_error(e))?
        .ok_or_else(|| KubeconfigError::NoMaterial {
            url: url.clone(),
            key: keys::JOIN_MATERIAL,
        })?;
    let material: JoinMaterial =
        serde_json::from_slice(&record.value).map_err(|e| KubeconfigError::BadMaterial {
            url: url.clone(),
            what: e.to_string(),
        })?;
    let admin = material
        .admin_kubeconfig
        .ok_or(KubeconfigError::NoAdmin { url })?;
    AdminKubeconfig::parse(admin.expose())
}

/// The admin kubeconfig and the endpoint that answers (the VIP first).
pub async fn connect(
    dir: &BuildDir,
    timeout: Duration,
) -> Result<(AdminKubeconfig, Choice), KubeconfigError> {
    let admin = fetch(dir, timeout).await?;
    let roots = admin.roots()?;
    let cands = candidates(&dir.baked, &dir.dir.join(crate::bake::CLUSTER_FILE))?;
    let choice = choose(&cands, |addr| {
        let roots = roots.clone();
        async move { probe::tls(addr, &roots, timeout).await }
    })
    .await?;
    Ok((admin, choice))
}

/// What `muster kubeconfig` did.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub choice: Choice,
}

/// Fetches, tests the candidates, writes the kubeconfig to `path` (0600, atomically).
pub async fn run(
    dir: &BuildDir,
    path: &Path,
    timeout: Duration,
) -> Result<Written, KubeconfigError> {
    let (admin, choice) = connect(dir, timeout).await?;
    let text = admin.with_server(&choice.server())?;
    crate::bake::write::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
        KubeconfigError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(Written {
        path: path.to_path_buf(),
        choice,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn cand(label: &str, addr: &str) -> Candidate {
        Candidate {
            label: label.into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn falls_back_to_the_first_control_plane_that_works() {
        let cs = [
            cand("VIP", "10.0.0.5:6443"),
            cand("control plane cp-1", "10.0.0.11:6443"),
            cand("control plane cp-2", "10.0.0.12:6443"),
        ];
        let c = choose(&cs, |addr| async move {
            match addr.ip().to_string().as_str() {
                "10.0.0.5" => Err(ProbeError::Tls {
                    addr,
                    detail: "certificate not valid for 10.0.0.5".into(),
                }),
                "10.0.0.11" => Err(ProbeError::Connect {
                    addr,
                    detail: "connection refused".into(),
                }),
                _ => Ok(()),
            }
        })
        .await
        .unwrap();
        assert_eq!(c.chosen, cs[2]);
        assert_eq!(c.server(), "https://10.0.0.12:6443");
        let w = c.warning().unwrap();
        assert!(w.contains("VIP (10.0.0.5:6443)"), "{w}");
        assert!(w.contains("certificate not valid"), "{w}");
        assert!(w.contains("control plane cp-2 (10.0.0.12:6443)"), "{w}");
    }

    #[tokio::test]
    async fn the_vip_when_it_works_and_an_error_when_nothing_does() {
        let cs = [
            cand("VIP", "10.0.0.5:6443"),
            cand("control plane cp-1", "10.0.0.11:6443"),
        ];
        let c = choose(&cs, |_| async { Ok(()) }).await.unwrap();
        assert_eq!(c.chosen, cs[0]);
        assert!(c.warning().is_none());
        let e = choose(&cs, |addr| async move {
            Err(ProbeError::Connect {
                addr,
                detail: "refused".into(),
            })
        })
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("VIP: 10.0.0.5:6443: TCP connect: refused"),
            "{text}"
        );
        assert!(text.contains("control plane cp-1"), "{text}");
    }

    #[test]
    fn rewrites_every_server_and_keeps_the_rest() {
        let k = AdminKubeconfig::parse(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://127.0.0.1:6443\n  name: default\nusers:\n- name: default\n  user:\n    client-key-data: S0VZ\n",
        )
        .unwrap();
        assert_eq!(k.ca_pem().unwrap(), b"ABC");
        let out = k.with_server("https://10.0.0.5:6443").unwrap();
        assert!(out.contains("server: https://10.0.0.5:6443"), "{out}");
        assert!(!out.contains("127.0.0.1"), "{out}");
        assert!(out.contains("client-key-data: S0VZ"), "{out}");
    }
}
