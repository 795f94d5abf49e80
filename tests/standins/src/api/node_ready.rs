//! Stand-in behaviour (issue 14): a Node reads `Ready` only once the cluster has a pod
//! network, as a real kubelet reports `NetworkPluginNotReady` until a CNI is installed.
//! The stand-in kubelet runs no pods, so "installed" means: a CNI's DaemonSet is stored
//! (flannel, calico, cilium by their published names), or a k3s server's Node carries the
//! annotation its embedded flannel sets (the flannel setting is the servers', for the whole
//! cluster). The stored Node is left as the kubelet wrote it; reads (GET, LIST, Tables) see
//! the gated condition.

use serde_json::{Value, json};

/// Set on a Node by k3s's embedded flannel.
pub const EMBEDDED_CNI_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-type";

/// The DaemonSets of the CNIs muster installs, as their manifests name them.
pub const CNI_DAEMONSETS: [&str; 3] = ["kube-flannel-ds", "calico-node", "cilium"];

/// Whether a stored Node carries the embedded-flannel annotation.
pub fn embedded_cni<'a>(nodes: impl IntoIterator<Item = &'a Value>) -> bool {
    nodes
        .into_iter()
        .any(|n| n["metadata"]["annotations"][EMBEDDED_CNI_ANNOTATION].is_string())
}

/// Whether one of the stored DaemonSets (storage keys `/registry/daemonsets/NS/NAME`) is
/// a CNI's.
pub fn cni_installed<'a>(daemonset_keys: impl IntoIterator<Item = &'a str>) -> bool {
    daemonset_keys.into_iter().any(|k| {
        k.rsplit('/')
            .next()
            .is_some_and(|name| CNI_DAEMONSETS.contains(&name))
    })
}

/// The Node as a reader sees it: its `Ready` condition `False` (NetworkPluginNotReady)
/// while there is no pod network for it.
pub fn gate(mut node: Value, cni: bool) -> Value {
    if cni {
        return node;
    }
    if let Some(conds) = node["status"]["conditions"].as_array_mut() {
        for c in conds.iter_mut().filter(|c| c["type"] == "Ready") {
            c["status"] = json!("False");
            c["reason"] = json!("KubeletNotReady");
            c["message"] = json!(
                "container runtime network not ready: NetworkReady=false \
                 reason:NetworkPluginNotReady message:Network plugin returns error: cni \
                 plugin not initialized (muster stand-in: no CNI DaemonSet yet)"
            );
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: Value) -> Value {
        json!({"metadata": {"name": "n", "annotations": annotations},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn not_ready_until_a_cni_daemonset_or_embedded_flannel() {
        let ready = |n: &Value| n["status"]["conditions"][0]["status"].clone();
        assert_eq!(ready(&gate(node(json!({})), false)), "False");
        assert_eq!(ready(&gate(node(json!({})), true)), "True");
        let k3s = node(json!({ EMBEDDED_CNI_ANNOTATION: "vxlan" }));
        assert!(embedded_cni([&node(json!({})), &k3s]));
        assert!(!embedded_cni([&node(json!({}))]));
        assert!(cni_installed([
            "/registry/daemonsets/kube-system/kube-proxy",
            "/registry/daemonsets/kube-flannel/kube-flannel-ds"
        ]));
        assert!(!cni_installed([
            "/registry/daemonsets/metallb-system/speaker"
        ]));
    }
}
