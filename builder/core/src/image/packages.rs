//! Which Debian packages a node image gets for a spec, and what the build does not give it
//! yet (container images to pre-pull). The Kubernetes distribution itself comes through
//! [`super::kubernetes`]. Pure: the same spec always yields the same sorted list (it keys the base cache).

use model::spec::{Cluster, DistroKind, VipProvider};
use serde::{Deserialize, Serialize};

pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// A bootable Debian with cloud-init (NoCloud), networkd + resolved, ssh and the cloud
/// kernel. `python3-cffi-backend` must be named: debootstrap does not resolve the virtual
/// package cloud-init's dependencies need.
pub const BASE: &[&str] = &[
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
pub const NODE: &[&str] = &["containerd", "chrony", "conntrack", "socat", "iptables"];

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
    let left_out = Vec::new();

    match cluster.ha.provider {
        // Its image is pre-pulled (image::prepull).
        VipProvider::KubeVip => {}
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
            // No etcd package: kubeadm runs etcd as a static pod, and the agent talks to
            // it over its HTTP gateway (no etcdctl). gpg checks the pinned key of the
            // Kubernetes apt repository (images/install-kubernetes.sh); kubeadm, kubelet,
            // kubectl, cri-tools and kubernetes-cni come from that repository.
            // The container images the node runs are pre-pulled (image::prepull).
            packages.push("gpg");
        }
        // The k3s binary and its airgap images come from its release
        // (images/install-kubernetes.sh); its airgap tarball carries the images.
        DistroKind::K3s => {}
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
    fn kubeadm_kube_vip_gets_no_etcd_and_says_what_is_missing() {
        let s = select(&spec("default.yaml"));
        for p in [
            "containerd",
            "chrony",
            "cloud-init",
            "gpg",
            "python3-cffi-backend",
        ] {
            assert!(s.packages.contains(&p.to_string()), "{p} missing");
        }
        assert!(
            !s.packages.iter().any(|p| p.starts_with("etcd")),
            "kubeadm runs etcd as a static pod"
        );
        assert!(
            !s.packages
                .iter()
                .any(|p| p == "haproxy" || p == "keepalived")
        );
        assert!(s.left_out.is_empty(), "{:?}", s.left_out);
        assert!(disabled_services(&s).is_empty());
    }

    #[test]
    fn k3s_nginx_gets_stream_module_and_no_etcd() {
        let s = select(&spec("seed-002-k3s-nginx-mariadb.yaml"));
        assert!(s.packages.contains(&"libnginx-mod-stream".to_string()));
        assert!(!s.packages.iter().any(|p| p.starts_with("etcd")));
        assert!(s.left_out.is_empty(), "{:?}", s.left_out);
        let mut sorted = s.packages.clone();
        sorted.sort();
        assert_eq!(s.packages, sorted);
    }
}
