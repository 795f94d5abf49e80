//! Which Debian packages a node image gets for a spec, and what an offline build cannot
//! give it. Pure: the same spec always yields the same sorted list (it keys the base cache).

use model::spec::{Cluster, Datastore, DistroKind, VipProvider};
use serde::{Deserialize, Serialize};

pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// A bootable Debian with cloud-init (NoCloud), networkd + resolved, ssh and the cloud
/// kernel. `python3-cffi-backend` must be named: debootstrap does not resolve the virtual
/// package cloud-init's dependencies need.
const BASE: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "python3-cffi-backend",
    "python3",
    "linux-image-cloud-amd64",
    "openssh-server",
    "curl",
    "iproute2",
    "sudo",
    "netbase",
    "ca-certificates",
    "e2fsprogs",
    "systemd-resolved",
];

/// What every Kubernetes node needs from Debian: the runtime, time sync, and the tools
/// kubeadm's preflight and kube-proxy look for.
const NODE: &[&str] = &["containerd", "chrony", "conntrack", "socat", "iptables"];

/// Something the image should have but this build could not install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub what: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Sorted, without duplicates.
    pub packages: Vec<String>,
    pub left_out: Vec<LeftOut>,
}

/// The packages for one image shared by every node of `cluster` (all roles).
pub fn select(cluster: &Cluster) -> Selection {
    let mut packages: Vec<&str> = BASE.iter().chain(NODE).copied().collect();
    let mut left_out = Vec::new();
    let version = cluster.distribution.version;

    match cluster.ha.provider {
        VipProvider::KubeVip => left_out.push(LeftOut {
            what: "kube-vip container image (not pre-pulled)".into(),
            source: "ghcr.io/kube-vip/kube-vip".into(),
        }),
        VipProvider::Keepalived => packages.push("keepalived"),
        VipProvider::Haproxy => packages.extend(["haproxy", "keepalived"]),
        VipProvider::Nginx => {
            packages.extend(["nginx", "libnginx-mod-stream"]);
            if cluster.topology.load_balancers >= 2 {
                packages.push("keepalived");
            }
        }
    }

    match cluster.distribution.kind {
        DistroKind::Kubeadm => {
            match cluster.datastore {
                // Debian's etcd stands in for the static-pod etcd image; etcdctl removes
                // stale members before a retried control-plane join.
                Datastore::StackedEtcd => packages.extend(["etcd-server", "etcd-client"]),
                Datastore::ExternalEtcd { .. } => packages.push("etcd-client"),
                Datastore::ExternalSql { .. } => {}
            }
            let minor = format!("v{}.{}", version.major, version.minor);
            left_out.push(LeftOut {
                what: format!("kubeadm, kubelet, kubectl {version}"),
                source: format!("https://pkgs.k8s.io/core:/stable:/{minor}/deb/"),
            });
            left_out.push(LeftOut {
                what: "control-plane and CNI container images (not pre-pulled)".into(),
                source: "registry.k8s.io".into(),
            });
        }
        DistroKind::K3s => left_out.push(LeftOut {
            what: format!("k3s {version} (binary and airgap images)"),
            source: "https://github.com/k3s-io/k3s/releases".into(),
        }),
    }

    let mut packages: Vec<String> = packages.into_iter().map(String::from).collect();
    packages.sort();
    packages.dedup();
    Selection { packages, left_out }
}

/// Services Debian enables when their package is installed, which the agent starts itself
/// (or never, on nodes of another role). The image ships them disabled.
pub fn disabled_services(selection: &Selection) -> Vec<&'static str> {
    [
        ("etcd-server", "etcd.service"),
        ("keepalived", "keepalived.service"),
        ("haproxy", "haproxy.service"),
        ("nginx", "nginx.service"),
    ]
    .into_iter()
    .filter(|(pkg, _)| selection.packages.iter().any(|p| p == pkg))
    .map(|(_, unit)| unit)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> Cluster {
        let text = std::fs::read_to_string(format!(
            "{}/../../examples/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        model::spec::load(path, &text).unwrap().0
    }

    #[test]
    fn kubeadm_kube_vip_gets_etcd_and_says_what_is_missing() {
        let s = select(&spec("default.yaml"));
        for p in [
            "containerd",
            "chrony",
            "cloud-init",
            "etcd-server",
            "python3-cffi-backend",
        ] {
            assert!(s.packages.contains(&p.to_string()), "{p} missing");
        }
        assert!(
            !s.packages
                .iter()
                .any(|p| p == "haproxy" || p == "keepalived")
        );
        let missing: Vec<_> = s.left_out.iter().map(|l| l.what.as_str()).collect();
        assert!(
            missing
                .iter()
                .any(|m| m.starts_with("kubeadm, kubelet, kubectl v1.31.4"))
        );
        assert!(missing.iter().any(|m| m.contains("kube-vip")));
        assert_eq!(disabled_services(&s), ["etcd.service"]);
    }

    #[test]
    fn k3s_nginx_gets_stream_module_and_no_etcd() {
        let s = select(&spec("seed-002-k3s-nginx-mariadb.yaml"));
        assert!(s.packages.contains(&"libnginx-mod-stream".to_string()));
        assert!(!s.packages.iter().any(|p| p.starts_with("etcd")));
        assert!(s.left_out[0].what.starts_with("k3s v1.31.6+k3s1"));
        let mut sorted = s.packages.clone();
        sorted.sort();
        assert_eq!(s.packages, sorted);
    }
}
