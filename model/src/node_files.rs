//! Where things live on a node. Every path is relative to a root so the same agent runs
//! on a real machine (root `/`) and in a lab namespace (root `/tmp/lab/node-1`).

use crate::names::NodeName;
use std::path::{Path, PathBuf};

/// The baked cluster config, shared by every node of the image.
pub const CLUSTER_CONFIG: &str = "usr/lib/muster/cluster.json";
/// Per-node file trees in the payload: `nodes/<name>/<path from root>`. On first boot the
/// agent installs its own tree onto the root (keepalived.conf, kubeadm templates, …).
pub const NODE_TREES: &str = "usr/lib/muster/nodes";
/// This node's identity, written by cloud-init from the NoCloud seed.
pub const NODE_IDENTITY: &str = "etc/muster/node.json";
/// The cluster secret, written by cloud-init, mode 0600. Never inside the shared image.
pub const CLUSTER_SECRET: &str = "etc/muster/cluster-secret";
/// Operator overrides of the baked config.
pub const CONFIG_DROPINS: &str = "etc/muster/config.d";
/// The agent's persisted bootstrap state and phase history.
pub const AGENT_STATE: &str = "var/lib/nodeagent/state.json";
/// The agent's last status report, readable when the daemon is down.
pub const AGENT_STATUS: &str = "var/lib/nodeagent/status.json";
/// Static pod manifests (kube-vip on kubeadm control planes).
pub const KUBE_MANIFESTS: &str = "etc/kubernetes/manifests";
pub const KUBE_VIP_MANIFEST: &str = "etc/kubernetes/manifests/kube-vip.yaml";
/// The pristine kube-vip manifest the agent restores after `kubeadm reset` empties the dir.
pub const KUBE_VIP_PRISTINE: &str = "usr/lib/muster/kube-vip.yaml";
pub const K3S_CONFIG: &str = "etc/rancher/k3s/config.yaml";
/// k3s drop-in holding `datastore-endpoint` (external SQL; it carries the database
/// password). Written by cloud-init on servers only, mode 0600; k3s merges
/// `config.yaml.d/*.yaml` after `config.yaml`, in file-name order.
pub const K3S_DATASTORE_DROPIN: &str = "etc/rancher/k3s/config.yaml.d/50-muster-datastore.yaml";
/// An external etcd cluster's CA, and the API server's client certificate and key for it
/// (kubeadm's paths, what the ClusterConfiguration's `etcd.external` names).
pub const ETCD_EXTERNAL_CA: &str = "etc/kubernetes/pki/etcd/ca.crt";
pub const ETCD_EXTERNAL_CLIENT_CERT: &str = "etc/kubernetes/pki/apiserver-etcd-client.crt";
pub const ETCD_EXTERNAL_CLIENT_KEY: &str = "etc/kubernetes/pki/apiserver-etcd-client.key";
/// Where a control plane's own cloud-init seed delivers those three (the key is a secret:
/// never in the shared payload). `kubeadm reset` empties `/etc/kubernetes/pki`, so the
/// agent copies them to kubeadm's paths after every reset, before init or join.
pub const ETCD_EXTERNAL_SEED_CA: &str = "etc/muster/etcd-external/ca.crt";
pub const ETCD_EXTERNAL_SEED_CLIENT_CERT: &str =
    "etc/muster/etcd-external/apiserver-etcd-client.crt";
pub const ETCD_EXTERNAL_SEED_CLIENT_KEY: &str =
    "etc/muster/etcd-external/apiserver-etcd-client.key";
/// (seed copy, kubeadm path, mode) of each external etcd file.
pub const ETCD_EXTERNAL_FILES: [(&str, &str, u32); 3] = [
    (ETCD_EXTERNAL_SEED_CA, ETCD_EXTERNAL_CA, 0o644),
    (
        ETCD_EXTERNAL_SEED_CLIENT_CERT,
        ETCD_EXTERNAL_CLIENT_CERT,
        0o644,
    ),
    (
        ETCD_EXTERNAL_SEED_CLIENT_KEY,
        ETCD_EXTERNAL_CLIENT_KEY,
        0o600,
    ),
];

/// Paths resolved against a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoot(PathBuf);

impl NodeRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeRoot(root.into())
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `rel` is one of the constants above (no leading `/`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    pub fn node_tree(&self, name: &NodeName) -> PathBuf {
        self.path(NODE_TREES).join(name.as_str())
    }
}

/// `SHA256SUMS` of every file in the agent payload (sha256sum format, paths relative to `/`).
pub const PAYLOAD_SUMS: &str = "usr/lib/muster/SHA256SUMS";
/// The agent binary inside the payload.
pub const AGENT_BINARY: &str = "usr/bin/nodeagent";
/// systemd units shipped in the payload.
pub const SYSTEMD_UNITS: &str = "usr/lib/systemd/system";
/// systemd-networkd drop-ins shipped in the payload (networkd reads `NAME.network.d/`
/// from here too, whichever directory holds `NAME.network`).
pub const NETWORKD_DROPINS: &str = "usr/lib/systemd/network";

// Inside each node tree (`NODE_TREES/<node>/…`, paths relative to the node's root):
/// kubeadm config for `kubeadm init` (InitConfiguration + ClusterConfiguration +
/// KubeletConfiguration) with placeholders; control planes only.
pub const KUBEADM_INIT_TEMPLATE: &str = "etc/muster/kubeadm/init.yaml";
/// kubeadm config for `kubeadm join` (JoinConfiguration, with `controlPlane` on control
/// planes) with placeholders.
pub const KUBEADM_JOIN_TEMPLATE: &str = "etc/muster/kubeadm/join.yaml";
/// k3s server config for the node that starts the cluster (`cluster-init`); control planes only.
pub const K3S_INIT_TEMPLATE: &str = "etc/muster/k3s/init.yaml";
/// k3s config for a node joining a running cluster (`server: https://VIP:port`).
pub const K3S_JOIN_TEMPLATE: &str = "etc/muster/k3s/join.yaml";
/// Where the k3s install script puts the binary its units run (`muster build --artifacts`
/// puts the release's binary there in the payload, which an upgrade installs).
pub const K3S_BINARY: &str = "usr/local/bin/k3s";
/// The kubeadm, kubelet and kubectl .debs of the release (`muster build --artifacts`), which
/// an upgrade installs with dpkg.
pub const KUBE_PACKAGES_DIR: &str = "usr/lib/muster/packages";
/// Where k3s's airgap docs put the images tarball (imported when k3s starts).
pub const K3S_AIRGAP_DIR: &str = "var/lib/rancher/k3s/agent/images";
/// kube-vip static pod for k3s (the k3s agent's pod-manifests dir).
pub const K3S_KUBE_VIP_MANIFEST: &str = "var/lib/rancher/k3s/agent/pod-manifests/kube-vip.yaml";
pub const KEEPALIVED_CONF: &str = "etc/keepalived/keepalived.conf";
/// keepalived's health check: TCP connect to 127.0.0.1:apiPort.
pub const KEEPALIVED_CHECK: &str = "etc/keepalived/check_apiserver.sh";
pub const HAPROXY_CONF: &str = "etc/haproxy/haproxy.cfg";
pub const NGINX_CONF: &str = "etc/nginx/nginx.conf";

/// The add-on manifests `muster build` baked, applied once by the cluster (init node).
pub const ADDONS_DIR: &str = "usr/lib/muster/addons";
/// Their index (`model::addons::AddonIndex`): which files, in which order.
pub const ADDONS_INDEX: &str = "usr/lib/muster/addons/index.json";
/// The container images the nodes run from registries, one a line (muster's and those the
/// pinned add-on manifests name, read after their sha256 check): what
/// `images/import-images.sh --pull --list` pre-pulls in a Packer build without artifacts.
pub const PREPULL_IMAGES: &str = "usr/lib/muster/prepull-images";
