//! kube-vip as a static pod on every control plane: ARP mode, control-plane VIP with leader
//! election (lease 5 s, renew 3 s, retry 1 s), the interface and address spelled out, the
//! kubeconfig mounted from the host. kubeadm: `/etc/kubernetes/manifests/kube-vip.yaml`
//! mounting `/etc/kubernetes/admin.conf` (the agent switches the init node to
//! `super-admin.conf` with `model::kube_vip::use_kubeconfig`); k3s: the agent's
//! pod-manifests dir, mounting `/etc/rancher/k3s/k3s.yaml`.

use super::common::{Input, RenderError};
use super::yaml::to_yaml;
use model::spec::DistroKind;
use serde_json::json;

/// The kube-vip release the manifest runs.
pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";
/// Name of the leader-election lease in kube-system.
pub const LEASE_NAME: &str = "plndr-cp-lock";
/// Where the kubeconfig appears inside the container.
pub const KUBECONFIG_IN_POD: &str = "/etc/kubernetes/admin.conf";

/// The host kubeconfig the manifest mounts for this distribution.
pub fn host_kubeconfig(kind: DistroKind) -> &'static str {
    match kind {
        DistroKind::Kubeadm => "/etc/kubernetes/admin.conf",
        DistroKind::K3s => "/etc/rancher/k3s/k3s.yaml",
    }
}

/// The static pod manifest (same for every control plane).
pub fn manifest(input: &Input<'_>) -> Result<String, RenderError> {
    let c = input.cluster;
    let vip = input.api_address("the kube-vip manifest")?;
    let env = |name: &str, value: String| json!({"name": name, "value": value});
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        "spec": {
            "containers": [{
                "args": ["manager"],
                "env": [
                    env("vip_arp", "true".into()),
                    env("port", input.api_port().to_string()),
                    env("vip_interface", c.network.interface.to_string()),
                    env("vip_cidr", "32".into()),
                    env("cp_enable", "true".into()),
                    env("cp_namespace", "kube-system".into()),
                    env("vip_leaderelection", "true".into()),
                    env("vip_leasename", LEASE_NAME.into()),
                    env("vip_leaseduration", "5".into()),
                    env("vip_renewdeadline", "3".into()),
                    env("vip_retryperiod", "1".into()),
                    env("address", vip.to_string()),
                    {"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "image": KUBE_VIP_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "name": "kube-vip",
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                "volumeMounts": [{"mountPath": KUBECONFIG_IN_POD, "name": "kubeconfig"}],
            }],
            "hostAliases": [{"hostnames": ["kubernetes"], "ip": "127.0.0.1"}],
            "hostNetwork": true,
            "volumes": [{
                "hostPath": {"path": host_kubeconfig(c.distribution.kind), "type": "FileOrCreate"},
                "name": "kubeconfig",
            }],
        },
    });
    Ok(to_yaml("the kube-vip manifest", &pod)?)
}
