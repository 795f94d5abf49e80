//! The node half of the upgrade's effects: install the release's payload,
//! `kubeadm upgrade plan|apply|node`, cordon and uncordon (`spec.unschedulable`), drain
//! through the Eviction API honouring PodDisruptionBudgets ([`crate::kube::drain`]
//! decides), restart the kubelet and wait until the Node is Ready at the new version;
//! k3s: swap the binary and airgap images from the payload (checking the installed
//! binary's `k3s --version`) and restart `k3s.service` or `k3s-agent.service`.
//! Commands go through a [`CommandRunner`]; what the API answers is read by the pure
//! parsers below ([`pods_on`], [`node_state`]), tested on captured shapes.

use crate::exec::CommandRunner;
use crate::kube::drain::{self, DrainState, Evicted, PodInfo};
use crate::systemd::Systemd;
use model::node_files::{K3S_BINARY, KUBE_PACKAGES_DIR, NodeRoot};
use model::{KubeVersion, Role};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The kubelet's unit.
pub const KUBELET_UNIT: &str = "kubelet.service";
/// How often a drain or a readiness wait asks again.
const POLL: Duration = Duration::from_millis(500);

/// The Pod list of the pods bound to `node` (`spec.nodeName` field selector).
pub fn pods_of_node_path(node: &str) -> String {
    format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
}

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

/// The .deb the payload carried for `package` among the file names `files` (of
/// [`KUBE_PACKAGES_DIR`]): its file name and version, from Debian's
/// `name_version_arch.deb`.
pub fn payload_deb(files: &[String], package: &str) -> Option<(String, String)> {
    files.iter().find_map(|f| {
        let stem = f.strip_suffix(".deb")?;
        let mut it = stem.splitn(3, '_');
        (it.next()? == package).then(|| (f.clone(), it.next().unwrap_or("").to_string()))
    })
}

/// The commands installing the .deb `deb` of `package` as the upstream upgrade guide does
/// (`apt-mark unhold`, install exactly this version, `apt-mark hold`): dpkg installs the
/// file the signed release carried, so nothing is fetched from a repository here.
pub fn package_commands(package: &str, deb: &str) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("apt-mark", vec!["unhold".into(), package.into()]),
        (
            "dpkg",
            vec!["--force-confold".into(), "-i".into(), deb.into()],
        ),
        ("apt-mark", vec!["hold".into(), package.into()]),
    ]
}

/// `dpkg-query -W PACKAGE` prints `PACKAGE<TAB>VERSION`: the installed version.
pub fn dpkg_version(stdout: &str, package: &str) -> Result<String, String> {
    stdout
        .lines()
        .find_map(|l| {
            let (name, version) = l.split_once('\t')?;
            (name.trim() == package && !version.trim().is_empty())
                .then(|| version.trim().to_string())
        })
        .ok_or_else(|| format!("`dpkg-query -W {package}` printed no version: {stdout:?}"))
}

/// k3s's unit on a node of `role`: the server's on a control plane, else the agent's.
pub fn k3s_unit(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => crate::distro::k3s::SERVER_UNIT,
        _ => crate::distro::k3s::AGENT_UNIT,
    }
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

/// The kubeconfigs the API is reached with, in order: kubeadm's admin.conf (control
/// planes) and kubelet.conf, k3s's admin kubeconfig (servers) and its agent's kubelet
/// kubeconfig.
const KUBECONFIGS: [&str; 4] = [
    "etc/kubernetes/admin.conf",
    "etc/kubernetes/kubelet.conf",
    "etc/rancher/k3s/k3s.yaml",
    "var/lib/rancher/k3s/agent/kubelet.kubeconfig",
];

/// A PEM field of a kubeconfig: embedded (`<field>-data`, what kubeadm and k3s.yaml hold)
/// or a file (`<field>`, what k3s's agent kubeconfig holds), read under `root`.
fn pem_field(obj: &Value, field: &str, root: &NodeRoot) -> Result<String, String> {
    use base64::Engine as _;
    if let Some(b64) = obj[format!("{field}-data")].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("{field}-data: {e}"))?;
        return String::from_utf8(bytes).map_err(|_| format!("{field}-data: not PEM text"));
    }
    let path = obj[field]
        .as_str()
        .ok_or_else(|| format!("no {field}-data or {field}"))?;
    let path = root.path(path.trim_start_matches('/'));
    std::fs::read_to_string(&path).map_err(|e| format!("{field} {}: {e}", path.display()))
}

/// The API server a kubeconfig points at, with its client: CA and client identity
/// embedded or from files under `root`.
fn api_from_kubeconfig(text: &str, root: &NodeRoot) -> Result<(reqwest::Client, String), String> {
    let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let cluster = v
        .pointer("/clusters/0/cluster")
        .ok_or("no clusters[0].cluster")?;
    let user = v.pointer("/users/0/user").ok_or("no users[0].user")?;
    let server = cluster["server"].as_str().ok_or("no server")?.to_string();
    let ca = pem_field(cluster, "certificate-authority", root)?;
    let cert = pem_field(user, "client-certificate", root)?;
    let key = pem_field(user, "client-key", root)?;
    let c = protocol::pem_client::client(&ca, Some((&cert, &key)))
        .map_err(|e| format!("upgrade API client: {e}"))?;
    Ok((c, server.trim_end_matches('/').to_string()))
}

/// kube-vip's static pod from the release (issue 15: kube-vip is updated from the same
/// payload): where this node's tree in the installed payload has a kube-vip manifest
/// (kubeadm's or k3s's), the live one is replaced when it differs, and the kubelet (or k3s)
/// restarts the pod. The manifest always mounts `admin.conf` here: the init-time
/// `super-admin.conf` switch is long over. The manifests it replaced.
pub fn refresh_kube_vip(root: &NodeRoot, node: &str) -> Result<Vec<&'static str>, String> {
    use model::node_files::{K3S_KUBE_VIP_MANIFEST, KUBE_VIP_MANIFEST, NODE_TREES};
    let tree = root.path(NODE_TREES).join(node);
    let mut replaced = Vec::new();
    for rel in [KUBE_VIP_MANIFEST, K3S_KUBE_VIP_MANIFEST] {
        let from = tree.join(rel);
        let text = match std::fs::read_to_string(&from) {
            Ok(t) => crate::kube_vip::to_admin(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", from.display())),
        };
        let live = root.path(rel);
        if std::fs::read_to_string(&live).is_ok_and(|t| t == text) {
            continue;
        }
        model::fsutil::write_atomic(&live, text.as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", live.display()))?;
        replaced.push(rel);
    }
    Ok(replaced)
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
    /// The API as this node reaches it: the admin kubeconfig on a control plane, else
    /// the kubelet's ([`KUBECONFIGS`]).
    fn api(&self) -> Result<(reqwest::Client, String), String> {
        for rel in KUBECONFIGS {
            let path = self.root.path(rel);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return api_from_kubeconfig(&text, &self.root)
                    .map_err(|e| format!("{}: {e}", path.display()));
            }
        }
        Err(format!(
            "no kubeconfig on this node (looked for {})",
            KUBECONFIGS.join(", ")
        ))
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
            // Only this node's pods, as `kubectl drain` asks: a kubelet's credential may
            // list pods only with its own `spec.nodeName` selector (the Node authorizer's
            // AuthorizeNodeWithSelectors, on by default from Kubernetes 1.32).
            let url = format!("{base}{}", pods_of_node_path(&self.node));
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

    /// `systemctl daemon-reload` then `systemctl restart kubelet`, as the upgrade guide
    /// does: the kubeadm and kubelet packages installed before this step may have replaced
    /// the kubelet's unit or its kubeadm drop-in, which systemd reads only on a reload.
    pub async fn restart_kubelet(&self) -> Result<(), String> {
        self.systemd
            .daemon_reload()
            .await
            .map_err(|e| e.to_string())?;
        self.systemd
            .restart(KUBELET_UNIT)
            .await
            .map_err(|e| e.to_string())
    }

    /// Installs the .debs of `packages` the payload carried ([`KUBE_PACKAGES_DIR`], where
    /// the node tree put them) with [`package_commands`] and checks the installed version
    /// (`dpkg-query`); a package the payload does not carry is left as it is. Only on a
    /// node whose root is `/`: the lab's node roots have no dpkg database of their own.
    pub async fn install_packages(&self, packages: &[&str]) -> Result<usize, String> {
        let dir = self.root.path(KUBE_PACKAGES_DIR);
        let files: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut n = 0;
        for package in packages {
            let Some((file, version)) = payload_deb(&files, package) else {
                tracing::info!(package, "the release carries no .deb of it: left as it is");
                continue;
            };
            if self.root.path("") != Path::new("/") {
                return Err(format!(
                    "the release carries {file}, but .debs are installed only on a node whose root is / (this root: {})",
                    self.root.path("").display()
                ));
            }
            let deb = dir.join(&file).display().to_string();
            for (program, args) in package_commands(package, &deb) {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.runner
                    .run_ok(program, &args)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let out = self
                .runner
                .run_ok("dpkg-query", &["-W", package])
                .await
                .map_err(|e| e.to_string())?;
            let got = dpkg_version(&out.stdout, package)?;
            if got != version {
                return Err(format!(
                    "{package} is {got} after installing {file}, expected {version}"
                ));
            }
            tracing::info!(package, %version, "installed and held");
            n += 1;
        }
        Ok(n)
    }

    /// After the payload put the release's k3s binary in place: the binary k3s's units
    /// run must be the release's (`k3s --version`), else the swap fails naming both.
    pub async fn check_k3s(&self, to: KubeVersion) -> Result<(), String> {
        let bin = self.root.path(K3S_BINARY);
        if !bin.is_file() {
            return Err(format!(
                "{} is missing after installing the payload: the release carries no k3s binary",
                bin.display()
            ));
        }
        let program = bin.display().to_string();
        let out = self
            .runner
            .run_ok(&program, &["--version"])
            .await
            .map_err(|e| e.to_string())?;
        let got = crate::distro::parse::k3s_version(&out.stdout)?;
        if got != to.to_string() {
            return Err(format!(
                "{program} is k3s {got}, the release is {to}: the payload carries another k3s"
            ));
        }
        Ok(())
    }

    /// Restarts k3s's unit: `k3s.service` on a server, `k3s-agent.service` on an agent.
    pub async fn restart_k3s(&self, role: Role) -> Result<(), String> {
        let unit = k3s_unit(role);
        self.systemd.restart(unit).await.map_err(|e| e.to_string())
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
    fn the_drain_lists_only_this_nodes_pods() {
        assert_eq!(
            pods_of_node_path("w-1"),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dw-1"
        );
    }

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

    use crate::test_fixture as fixture;

    #[test]
    fn kube_vip_is_replaced_from_the_release_only_where_the_node_runs_it_and_it_changed() {
        use model::node_files::{KUBE_VIP_MANIFEST, NODE_TREES};
        let d = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(d.path());
        let tree = root.path(NODE_TREES).join("cp-1");
        // A worker's tree (no kube-vip) and a node whose tree has none: nothing to do.
        assert!(refresh_kube_vip(&root, "w-1").unwrap().is_empty());
        std::fs::create_dir_all(tree.join("etc/kubernetes/manifests")).unwrap();
        let old = "kind: Pod\nimage: ghcr.io/kube-vip/kube-vip:v0.8.9\n";
        let new = "kind: Pod\nimage: ghcr.io/kube-vip/kube-vip:v0.9.1\n  hostPath:\n    path: /etc/kubernetes/super-admin.conf\n";
        std::fs::create_dir_all(root.path("etc/kubernetes/manifests")).unwrap();
        std::fs::write(root.path(KUBE_VIP_MANIFEST), old).unwrap();
        std::fs::write(tree.join(KUBE_VIP_MANIFEST), new).unwrap();
        assert_eq!(
            refresh_kube_vip(&root, "cp-1").unwrap(),
            [KUBE_VIP_MANIFEST]
        );
        let live = std::fs::read_to_string(root.path(KUBE_VIP_MANIFEST)).unwrap();
        assert!(
            live.contains("v0.9.1") && live.contains("/etc/kubernetes/admin.conf"),
            "{live}"
        );
        // Unchanged now: the pod is not restarted again.
        assert!(refresh_kube_vip(&root, "cp-1").unwrap().is_empty());
    }

    #[test]
    fn packages_install_as_the_upgrade_guide_does_and_the_version_is_read_back() {
        let files = vec![
            "kubelet_1.32.0-1.1_amd64.deb".to_string(),
            "kubeadm_1.32.0-1.1_amd64.deb".to_string(),
        ];
        assert_eq!(
            payload_deb(&files, "kubeadm"),
            Some(("kubeadm_1.32.0-1.1_amd64.deb".into(), "1.32.0-1.1".into()))
        );
        assert_eq!(payload_deb(&files, "kubectl"), None);
        let lines: Vec<String> = package_commands("kubeadm", "/d/kubeadm.deb")
            .into_iter()
            .map(|(p, a)| format!("{p} {}", a.join(" ")))
            .collect();
        assert_eq!(
            lines,
            [
                "apt-mark unhold kubeadm",
                "dpkg --force-confold -i /d/kubeadm.deb",
                "apt-mark hold kubeadm"
            ]
        );
        // Captured from a real `dpkg-query -W apt` (Debian bookworm).
        let out = fixture("dpkg-query-W-apt.out");
        assert_eq!(dpkg_version(&out, "apt").unwrap(), "2.6.2");
        assert!(dpkg_version(&out, "kubeadm").is_err());
        assert!(dpkg_version("", "apt").is_err());
    }

    #[tokio::test]
    async fn install_packages_runs_the_commands_on_a_real_root_only() {
        use crate::exec::FakeRunner;
        let d = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(d.path());
        std::fs::create_dir_all(root.path(KUBE_PACKAGES_DIR)).unwrap();
        let side = |root: NodeRoot| NodeSide {
            root,
            node: "cp-1".into(),
            runner: FakeRunner::default(),
            systemd: crate::systemd::FakeSystemd::default(),
            drain_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(1),
        };
        // Nothing carried: nothing run.
        let s = side(root.clone());
        assert_eq!(s.install_packages(&["kubeadm"]).await.unwrap(), 0);
        assert!(s.runner.calls().is_empty());
        // Carried, in a lab root: refused before anything runs.
        std::fs::write(
            root.path(KUBE_PACKAGES_DIR)
                .join("kubeadm_1.32.0-1.1_amd64.deb"),
            "x",
        )
        .unwrap();
        let err = s.install_packages(&["kubeadm"]).await.unwrap_err();
        assert!(err.contains("only on a node whose root is /"), "{err}");
        assert!(s.runner.calls().is_empty());
    }

    #[tokio::test]
    async fn the_kubelet_restarts_after_systemd_read_its_units_again() {
        let d = tempfile::tempdir().unwrap();
        let s = NodeSide {
            root: NodeRoot::new(d.path()),
            node: "cp-1".into(),
            runner: crate::exec::FakeRunner::default(),
            systemd: crate::systemd::FakeSystemd::default(),
            drain_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(1),
        };
        s.restart_kubelet().await.unwrap();
        assert_eq!(
            s.systemd.log(),
            ["daemon-reload", &format!("restart {KUBELET_UNIT}")]
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
