//! Add-ons published only as a Helm chart (cilium). `muster build` fetches the packaged
//! chart like any pinned file (cache or `--artifacts DIR/addons/NAME-VERSION.tgz`, checked
//! against its sha256), then renders it with `helm template` on the build machine, with
//! values that follow from the spec ([`values`], pure). The rendered manifest is what the
//! payload carries and the init node applies; muster itself runs no Helm release in the
//! cluster.
//!
//! The values leave nothing to chance that would change between two renders: cilium's
//! Hubble certificates are made by a Job in the cluster (`hubble.tls.auto.method: cronJob`)
//! rather than by `helm template` (which would put new keys into every build's payload).

use super::PinnedManifest;
use model::Cluster;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// cilium's packaged chart at its release, as `helm repo add cilium https://helm.cilium.io`
/// serves it (sha256 as the repository's `index.yaml` lists it for 1.18.4).
pub const CILIUM_CHART: PinnedManifest = super::pin(
    "cilium",
    "1.18.4",
    "https://helm.cilium.io/cilium-1.18.4.tgz",
    "c361ca567b319af64b82736ab4c5927a201b1f5dbae4e909c7aeaabce0571299",
);

/// The namespace a chart's release renders into.
pub const NAMESPACE: &str = "kube-system";

/// Whether a pinned file or a user's `file` / `url` is a packaged Helm chart (rendered
/// before it is applied) rather than a manifest.
pub fn is_chart(path_or_url: &str) -> bool {
    path_or_url.ends_with(".tgz")
}

/// The values muster passes to `name`'s chart, as a values file (`None`: the chart's own
/// defaults). cilium: the API endpoint (the VIP or the load balancer, so the agent reaches
/// the API before any Service works, which cilium's docs ask for kube-proxy replacement and
/// recommend otherwise), `kubeProxyReplacement` when the spec asks for it, the spec's pod
/// network in cluster-pool IPAM, the cluster NIC, one operator per control plane up to two,
/// and Hubble certificates made in the cluster.
pub fn values(cluster: &Cluster, name: &str, api_address: Option<Ipv4Addr>) -> Option<String> {
    if name != "cilium" {
        return None;
    }
    let net = &cluster.network;
    let mut v = String::from("# Values muster derives from the cluster spec.\n");
    if let Some(addr) = api_address {
        let _ = writeln!(v, "k8sServiceHost: \"{addr}\"");
        let _ = writeln!(v, "k8sServicePort: {}", cluster.ha.api_port);
    }
    if cluster.addons.kube_proxy_replacement {
        v.push_str("kubeProxyReplacement: true\n");
    }
    let _ = write!(
        v,
        "ipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: [\"{}\"]\n\
         devices: [\"{}\"]\n\
         operator:\n  replicas: {}\n\
         hubble:\n  tls:\n    auto:\n      method: cronJob\n",
        net.pod_subnet,
        net.interface,
        cluster.topology.control_planes.clamp(1, 2),
    );
    Some(v)
}

/// `--kube-version` for the render: the cluster's Kubernetes version without a
/// distribution suffix (`v1.31.6+k3s1` → `v1.31.6`), so the chart's version checks see the
/// cluster's version, not Helm's default.
pub fn kube_version(cluster: &Cluster) -> String {
    cluster.distribution.version.upstream().to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "add-on {name}: rendering its chart needs `helm` on this machine ({program}: {source}); \
         install Helm 3 (https://helm.sh/docs/intro/install/), give its path with --helm, or \
         bring the rendered manifest as `manifests: [{{name: {name}, file: ...}}]` under spec.addons"
    )]
    NoHelm {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("add-on {name}: `{command}` failed ({status}): {stderr}")]
    Failed {
        name: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("add-on {name}: {what} {}: {source}", path.display())]
    Io {
        name: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("add-on {name}: `{command}` printed no manifest")]
    Empty { name: String, command: String },
    #[error("add-on {name}: `{command}` printed text that is not UTF-8")]
    NotText { name: String, command: String },
}

/// What renders a packaged chart; the build takes it as a parameter so the bake is tested
/// without a Helm.
pub trait Renderer {
    /// The manifest of `chart` (bytes of a `.tgz`) rendered as release `name` in
    /// [`NAMESPACE`] with `values` for Kubernetes `kube_version`.
    fn render(
        &self,
        name: &str,
        chart: &[u8],
        values: Option<&str>,
        kube_version: &str,
    ) -> Result<String, ChartError>;
}

/// `helm template` run as a command (`program`: `helm` on PATH unless `--helm` names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helm {
    pub program: PathBuf,
}

impl Default for Helm {
    fn default() -> Self {
        Helm {
            program: PathBuf::from("helm"),
        }
    }
}

impl Helm {
    /// `--helm PATH` when given, else `helm` on PATH.
    pub fn from_flag(program: Option<PathBuf>) -> Helm {
        program.map_or_else(Helm::default, |program| Helm { program })
    }

    /// The command line, for messages and tests.
    pub fn args(
        chart: &Path,
        name: &str,
        values: Option<&Path>,
        kube_version: &str,
    ) -> Vec<String> {
        let mut a = vec![
            "template".to_string(),
            name.to_string(),
            chart.display().to_string(),
            "--namespace".into(),
            NAMESPACE.into(),
            "--kube-version".into(),
            kube_version.to_string(),
        ];
        if let Some(v) = values {
            a.push("--values".into());
            a.push(v.display().to_string());
        }
        a
    }
}

impl Renderer for Helm {
    fn render(
        &self,
        name: &str,
        chart: &[u8],
        values: Option<&str>,
        kube_version: &str,
    ) -> Result<String, ChartError> {
        let io = |what, path: &Path| {
            let (name, path) = (name.to_string(), path.to_path_buf());
            move |source| ChartError::Io {
                name,
                what,
                path,
                source,
            }
        };
        let dir = tempfile::tempdir().map_err(io("a scratch directory", Path::new("$TMPDIR")))?;
        let chart_path = dir.path().join(format!("{name}.tgz"));
        std::fs::write(&chart_path, chart).map_err(io("writing the chart", &chart_path))?;
        let values_path = dir.path().join("values.yaml");
        if let Some(v) = values {
            std::fs::write(&values_path, v).map_err(io("writing the values", &values_path))?;
        }
        let args = Helm::args(
            &chart_path,
            name,
            values.map(|_| values_path.as_path()),
            kube_version,
        );
        let command = format!("{} {}", self.program.display(), args.join(" "));
        let out = std::process::Command::new(&self.program)
            .args(&args)
            .output()
            .map_err(|source| ChartError::NoHelm {
                name: name.to_string(),
                program: self.program.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(ChartError::Failed {
                name: name.to_string(),
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8(out.stdout).map_err(|_| ChartError::NotText {
            name: name.to_string(),
            command: command.clone(),
        })?;
        if text.trim().is_empty() {
            return Err(ChartError::Empty {
                name: name.to_string(),
                command,
            });
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addons::tests::example;

    #[test]
    fn cilium_values_follow_the_spec() {
        let c = example("seed-000-kubeadm-kube-vip.yaml");
        let v = values(&c, "cilium", c.ha.vip).unwrap();
        assert_eq!(
            v,
            "# Values muster derives from the cluster spec.\n\
             k8sServiceHost: \"192.168.62.5\"\n\
             k8sServicePort: 6443\n\
             ipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: [\"10.244.0.0/16\"]\n\
             devices: [\"eth1\"]\n\
             operator:\n  replicas: 2\n\
             hubble:\n  tls:\n    auto:\n      method: cronJob\n"
        );
        let parsed: serde_yaml::Value = serde_yaml::from_str(&v).unwrap();
        assert_eq!(
            parsed["k8sServiceHost"].as_str(),
            Some(c.ha.vip.unwrap().to_string().as_str())
        );
        assert_eq!(
            parsed["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"][0].as_str(),
            Some(c.network.pod_subnet.to_string().as_str())
        );
        assert_eq!(
            parsed["hubble"]["tls"]["auto"]["method"].as_str(),
            Some("cronJob")
        );
        assert!(values(&c, "longhorn", c.ha.vip).is_none());
        let mut kpr = c.clone();
        kpr.addons.kube_proxy_replacement = true;
        let v = values(&kpr, "cilium", kpr.ha.vip).unwrap();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&v).unwrap();
        assert_eq!(parsed["kubeProxyReplacement"].as_bool(), Some(true));
    }

    #[test]
    fn charts_are_told_from_manifests_by_their_packaging() {
        assert!(is_chart(&CILIUM_CHART.url));
        assert!(is_chart("cilium-1.18.4.tgz"));
        assert!(!is_chart("https://example.com/kube-flannel.yml"));
    }

    #[test]
    fn a_missing_helm_names_the_way_out() {
        let helm = Helm {
            program: PathBuf::from("/nonexistent/helm"),
        };
        let e = helm
            .render("cilium", b"x", None, "v1.33.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `helm`"), "{e}");
        assert!(e.contains("--helm"), "{e}");
        assert!(e.contains("manifests: [{name: cilium, file: ...}]"), "{e}");
    }

    #[test]
    fn a_failing_helm_is_reported_with_its_command_line_and_stderr() {
        // `false` exits 1 whatever it is given: the render fails, naming the command.
        let helm = Helm {
            program: PathBuf::from("false"),
        };
        let e = helm
            .render("cilium", b"x", Some("a: 1\n"), "v1.33.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("template cilium"), "{e}");
        assert!(e.contains("--kube-version v1.33.1"), "{e}");
        assert!(e.contains("--values"), "{e}");
    }
}
