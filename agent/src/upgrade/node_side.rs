//! The node half of the upgrade's effects (kubeadm): install the release's payload,
//! `kubeadm upgrade plan|apply|node`, cordon and uncordon (`spec.unschedulable`), drain
//! through the Eviction API honouring PodDisruptionBudgets ([`crate::kube::drain`]
//! decides), restart the kubelet and wait until the Node is Ready at the new version.
//! Commands go through a [`CommandRunner`]; what the API answers is read by the pure
//! parsers below ([`pods_on`], [`node_state`]), tested on captured shapes.

use crate::exec::CommandRunner;
use crate::kube::drain::{self, DrainState, Evicted, PodInfo};
use crate::systemd::Systemd;
use model::KubeVersion;
use model::node_files::NodeRoot;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The kubelet's unit.
pub const KUBELET_UNIT: &str = "kubelet.service";
/// How often a drain or a readiness wait asks again.
const POLL: Duration = Duration::from_millis(500);

/// The pods the Node `node` runs, from a Pod list (`GET /api/v1/pods`).
pub fn pods_on(list: &Value, node: &str) -> Vec<PodInfo> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .map(|p| PodInfo {
            namespace: p["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            owner_kind: p["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|o| {
                    o.iter()
                        .find(|r| r["controller"] == true)
                        .or_else(|| o.first())
                })
                .and_then(|r| r["kind"].as_str())
                .map(str::to_string),
            mirror: p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
            phase: p["status"]["phase"]
                .as_str()
                .unwrap_or("Running")
                .to_string(),
        })
        .collect()
}

/// A Node's `Ready` condition and `status.nodeInfo.kubeletVersion`.
pub fn node_state(node: &Value) -> (bool, Option<KubeVersion>) {
    let ready = node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let version = node["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .and_then(|v| v.parse().ok());
    (ready, version)
}

/// The API server a kubeconfig points at, with its client: CA and client identity from
/// the embedded `*-data` fields (what kubeadm writes).
fn api_from_kubeconfig(text: &str) -> Result<(reqwest::Client, String), String> {
    use base64::Engine as _;
    let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let cluster = v
        .pointer("/clusters/0/cluster")
        .ok_or("no clusters[0].cluster")?;
    let server = cluster["server"].as_str().ok_or("no server")?.to_string();
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .ok_or("no certificate-authority-data")?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .map_err(|e| format!("certificate-authority-data: {e}"))?;
    let ca = String::from_utf8(ca).map_err(|e| format!("certificate-authority-data: {e}"))?;
    let (cert, key) = crate::distro::parse::kubeconfig_identity(text)?;
    let c = crate::distro::http::client("upgrade API client", &ca, Some((&cert, &key)))
        .map_err(|e| e.to_string())?;
    Ok((c, server.trim_end_matches('/').to_string()))
}

#[derive(Debug)]
pub struct NodeSide<R, S> {
    pub root: NodeRoot,
    pub node: String,
    pub runner: R,
    pub systemd: S,
    pub drain_timeout: Duration,
    pub ready_timeout: Duration,
}

impl<R: CommandRunner, S: Systemd> NodeSide<R, S> {
    /// The API as this node reaches it: admin.conf on a control plane, else the
    /// kubelet's kubeconfig.
    fn api(&self) -> Result<(reqwest::Client, String), String> {
        for rel in ["etc/kubernetes/admin.conf", "etc/kubernetes/kubelet.conf"] {
            let path = self.root.path(rel);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return api_from_kubeconfig(&text).map_err(|e| format!("{}: {e}", path.display()));
            }
        }
        Err("no etc/kubernetes/admin.conf or kubelet.conf on this node".into())
    }

    /// Installs the release's node tree from the verified payload (cluster config, agent,
    /// add-ons, and Kubernetes binaries where the payload carries them), every file
    /// written atomically (the running agent's own binary included).
    /// `wanted`: which entries (paths relative to the root) to install.
    pub fn install_payload(
        &self,
        payload: &Path,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<usize, String> {
        use std::io::Read as _;
        let file =
            std::fs::File::open(payload).map_err(|e| format!("{}: {e}", payload.display()))?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut n = 0;
        let entries = ar
            .entries()
            .map_err(|e| format!("{}: {e}", payload.display()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("{}: {e}", payload.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .map_err(|e| format!("{}: {e}", payload.display()))?
                .into_owned();
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "payload entry {} leaves the node root",
                    rel.display()
                ));
            }
            if !wanted(&rel.to_string_lossy()) {
                continue;
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("payload entry {}: {e}", rel.display()))?;
            let dest = self.root.path(&rel.to_string_lossy());
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            model::fsutil::write_atomic(&dest, &bytes, mode).map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    }

    async fn kubeadm(&self, args: &[&str]) -> Result<(), String> {
        self.runner
            .run_ok("kubeadm", args)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn upgrade_plan(&self) -> Result<(), String> {
        self.kubeadm(&["upgrade", "plan"]).await
    }

    pub async fn upgrade_apply(&self, to: KubeVersion) -> Result<(), String> {
        self.kubeadm(&["upgrade", "apply", &to.to_string(), "--yes"])
            .await
    }

    pub async fn upgrade_node(&self) -> Result<(), String> {
        self.kubeadm(&["upgrade", "node"]).await
    }

    /// Sets `spec.unschedulable` (cordon) or clears it (uncordon).
    pub async fn cordon(&self, on: bool) -> Result<(), String> {
        let (c, base) = self.api()?;
        let url = format!("{base}/api/v1/nodes/{}", self.node);
        let body = serde_json::json!({"spec": {"unschedulable": if on { Value::Bool(true) } else { Value::Null }}});
        let r = c
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("PATCH {url}: {e}"))?;
        let status = r.status().as_u16();
        if status != 200 {
            let text = r.text().await.unwrap_or_default();
            return Err(format!("PATCH {url}: {status} {}", text.trim()));
        }
        Ok(())
    }

    /// Evicts every pod a drain evicts (not DaemonSet, mirror or finished pods), retrying
    /// those a PodDisruptionBudget holds back, until none is left or the drain timeout.
    pub async fn drain(&self) -> Result<(), String> {
        let (c, base) = self.api()?;
        let started = Instant::now();
        let timeout_ms = u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            let url = format!("{base}/api/v1/pods");
            let list: Value = c
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let plan = drain::plan(&pods_on(&list, &self.node));
            if plan.evict.is_empty() {
                return Ok(());
            }
            let mut blocked = Vec::new();
            for (ns, name) in &plan.evict {
                let url = format!("{base}{}", drain::eviction_path(ns, name));
                let r = c
                    .post(&url)
                    .json(&drain::eviction_body(ns, name))
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                match drain::read_eviction(status, &body) {
                    Evicted::Accepted | Evicted::Gone => {}
                    Evicted::Blocked { budget } => blocked.push((format!("{ns}/{name}"), budget)),
                    Evicted::Failed { status, message } => {
                        return Err(format!("evicting {ns}/{name}: {status} {message}"));
                    }
                }
            }
            let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            // Every pod of this round's plan may still be there (refused, or terminating):
            // the next list says; past the timeout the drain fails naming pod and budget.
            if let DrainState::TimedOut { cause } =
                drain::drain_state(&plan.evict, &blocked, elapsed, timeout_ms)
            {
                return Err(cause);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn restart_kubelet(&self) -> Result<(), String> {
        self.systemd
            .restart(KUBELET_UNIT)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until this Node is Ready and reports kubelet `to`.
    pub async fn wait_ready(&self, to: KubeVersion) -> Result<(), String> {
        let (c, base) = self.api()?;
        let url = format!("{base}/api/v1/nodes/{}", self.node);
        let started = Instant::now();
        loop {
            let last = match c.get(&url).send().await {
                Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                    Ok(v) => match node_state(&v) {
                        (true, Some(v)) if v == to => return Ok(()),
                        (ready, v) => format!(
                            "Ready {ready}, kubelet {}",
                            v.map_or("unknown".into(), |v| v.to_string())
                        ),
                    },
                    Err(e) => e.to_string(),
                },
                Ok(r) => format!("status {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.ready_timeout {
                return Err(format!(
                    "node {} not Ready at {to} after {}s: {last}",
                    self.node,
                    self.ready_timeout.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_of_this_node_with_owner_and_mirror() {
        let list = json!({"items": [
            {"metadata": {"name": "web-1", "namespace": "default",
                          "ownerReferences": [{"kind": "ReplicaSet", "controller": true}]},
             "spec": {"nodeName": "w-1"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "etcd-cp-1", "namespace": "kube-system",
                          "annotations": {"kubernetes.io/config.mirror": "x"}},
             "spec": {"nodeName": "w-1"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "other", "namespace": "default"},
             "spec": {"nodeName": "w-2"}}
        ]});
        let pods = pods_on(&list, "w-1");
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].owner_kind.as_deref(), Some("ReplicaSet"));
        assert!(pods[1].mirror && !pods[0].mirror);
        assert_eq!(
            drain::plan(&pods).evict,
            vec![("default".into(), "web-1".into())]
        );
    }

    #[test]
    fn node_state_reads_ready_and_the_kubelet_version() {
        let n = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                                  "nodeInfo": {"kubeletVersion": "v1.32.1"}}});
        assert_eq!(node_state(&n), (true, Some("v1.32.1".parse().unwrap())));
        let n = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(node_state(&n), (false, None));
    }
}
