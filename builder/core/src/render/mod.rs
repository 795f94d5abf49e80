//! Renderers: pure functions from a validated spec (and plan) to files. Same input, same
//! bytes. Each submodule renders one kind of artifact; `FileSet` collects them.

use std::collections::BTreeMap;

/// One generated file: where it goes (relative path), its mode, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Files keyed by relative path, sorted, so iteration order (and any archive) is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    pub files: BTreeMap<String, Artifact>,
}

impl FileSet {
    pub fn add(&mut self, path: impl Into<String>, mode: u32, contents: impl Into<Vec<u8>>) {
        self.files.insert(
            path.into(),
            Artifact {
                mode,
                contents: contents.into(),
            },
        );
    }

    /// Adds every file of `other` under `prefix/`.
    pub fn extend_under(&mut self, prefix: &str, other: FileSet) {
        for (path, a) in other.files {
            self.files
                .insert(format!("{}/{path}", prefix.trim_end_matches('/')), a);
        }
    }

    pub fn get(&self, path: &str) -> Option<&Artifact> {
        self.files.get(path)
    }
}

pub mod cloud_init;
pub mod common;
pub mod haproxy;
pub mod hcl;
pub mod images;
pub mod k3s;
pub mod keepalived;
pub mod kube_vip;
pub mod kubeadm;
pub mod nginx;
pub mod packer;
pub mod proxmox;
pub mod quote;
pub mod vagrant;
pub mod yaml;

pub use common::{Input, RenderError};

use model::baked::{BAKED_FORMAT, BakedCluster, BakedRendezvous};
use model::node_files as nf;
use model::spec::{Datastore, DistroKind, Role, VipProvider};
use model::{PlannedNode, Sha256Hex};

/// systemd units shipped in every payload, `(file name, contents)`.
pub const UNITS: [(&str, &str); 1] = [(
    "nodeagent.service",
    include_str!("../../../../units/nodeagent.service"),
)];

/// The k3s units (k3s payloads only): images install the k3s binary without the upstream
/// install script that would write them.
pub const K3S_UNITS: [(&str, &str); 2] = [
    ("k3s.service", include_str!("../../../../units/k3s.service")),
    (
        "k3s-agent.service",
        include_str!("../../../../units/k3s-agent.service"),
    ),
];

/// What the build adds to the spec: the cluster's identity and the rendezvous pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bake {
    pub cluster_id: String,
    pub rendezvous_cert_sha256: Option<Sha256Hex>,
}

/// The config every node's image shares. An SQL datastore endpoint is kept with its
/// password redacted (the agent only needs to know the datastore is external; the servers
/// get the real endpoint from their own seeds); an external etcd keeps its endpoints but
/// not the build host's paths of its TLS files.
pub fn baked_cluster(input: &Input<'_>, bake: &Bake) -> BakedCluster {
    let mut spec = input.cluster.clone();
    match &mut spec.datastore {
        Datastore::ExternalSql { endpoint } => *endpoint = model::dsn::redact(endpoint),
        // Paths on the build host mean nothing on a node: the files land at kubeadm's
        // paths (`node_files::ETCD_EXTERNAL_*`) on the control planes.
        Datastore::ExternalEtcd {
            ca_file,
            cert_file,
            key_file,
            ..
        } => {
            *ca_file = None;
            *cert_file = None;
            *key_file = None;
        }
        Datastore::StackedEtcd => {}
    }
    BakedCluster {
        format: BAKED_FORMAT,
        cluster_id: bake.cluster_id.clone(),
        spec,
        nodes: input.plan.nodes.clone(),
        api_endpoint: input.plan.api_endpoint.clone(),
        rendezvous: BakedRendezvous {
            url: input.cluster.rendezvous.url.clone(),
            cert_sha256: bake.rendezvous_cert_sha256.clone(),
        },
    }
}

/// The files of one node's tree, at their paths relative to the node's root.
pub fn node_tree(input: &Input<'_>, node: &PlannedNode) -> Result<FileSet, RenderError> {
    let c = input.cluster;
    let mut t = FileSet::default();
    match node.role {
        Role::ControlPlane | Role::Worker => match c.distribution.kind {
            DistroKind::Kubeadm => {
                if node.role == Role::ControlPlane {
                    t.add(
                        nf::KUBEADM_INIT_TEMPLATE,
                        0o600,
                        kubeadm::init_template(input, node)?,
                    );
                }
                t.add(
                    nf::KUBEADM_JOIN_TEMPLATE,
                    0o600,
                    kubeadm::join_template(input, node)?,
                );
            }
            DistroKind::K3s => {
                if node.role == Role::ControlPlane {
                    t.add(
                        nf::K3S_INIT_TEMPLATE,
                        0o600,
                        k3s::render(input, node, k3s::Variant::Init)?,
                    );
                }
                t.add(
                    nf::K3S_JOIN_TEMPLATE,
                    0o600,
                    k3s::render(input, node, k3s::Variant::Join)?,
                );
            }
        },
        Role::LoadBalancer => match c.ha.provider {
            VipProvider::Haproxy => t.add(nf::HAPROXY_CONF, 0o644, haproxy::config(input)),
            VipProvider::Nginx => t.add(nf::NGINX_CONF, 0o644, nginx::config(input)),
            VipProvider::KubeVip | VipProvider::Keepalived => {}
        },
    }
    if node.role == Role::ControlPlane && c.ha.provider == VipProvider::KubeVip {
        let path = match c.distribution.kind {
            DistroKind::Kubeadm => nf::KUBE_VIP_MANIFEST,
            DistroKind::K3s => nf::K3S_KUBE_VIP_MANIFEST,
        };
        t.add(path, 0o600, kube_vip::manifest(input)?);
    }
    if keepalived::role(input) == Some(node.role)
        && let Some(vip) = c.ha.vip
    {
        t.add(
            nf::KEEPALIVED_CONF,
            0o644,
            keepalived::config(input, node, vip),
        );
        t.add(nf::KEEPALIVED_CHECK, 0o755, keepalived::check_script(input));
    }
    Ok(t)
}

/// Every file of the agent payload except the agent binary and `SHA256SUMS`: the baked
/// cluster config, the units, the pristine kube-vip manifest and every node's tree.
pub fn cluster_files(input: &Input<'_>, bake: &Bake) -> Result<FileSet, RenderError> {
    let mut fs = FileSet::default();
    let baked = baked_cluster(input, bake);
    let json = serde_json::to_string_pretty(&baked).map_err(|source| RenderError::Json {
        what: "the baked cluster config",
        source,
    })?;
    fs.add(nf::CLUSTER_CONFIG, 0o644, json + "\n");
    let k3s: &[(&str, &str)] = match input.cluster.distribution.kind {
        DistroKind::K3s => &K3S_UNITS,
        DistroKind::Kubeadm => &[],
    };
    for (name, text) in UNITS.iter().chain(k3s) {
        fs.add(format!("{}/{name}", nf::SYSTEMD_UNITS), 0o644, *text);
    }
    let (dropin, text) = cloud_init::network_dropin(input.cluster.network.interface.as_str());
    fs.add(dropin, 0o644, text);
    if input.cluster.ha.provider == VipProvider::KubeVip {
        fs.add(nf::KUBE_VIP_PRISTINE, 0o644, kube_vip::manifest(input)?);
    }
    for node in &input.plan.nodes {
        let tree = node_tree(input, node)?;
        fs.extend_under(&format!("{}/{}", nf::NODE_TREES, node.name), tree);
    }
    Ok(fs)
}
