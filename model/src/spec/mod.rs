//! The cluster spec a user writes (`apiVersion: muster.dev/v1`, `kind: Cluster`), validated.
//!
//! `decode` turns YAML into these types, reporting structural problems; `validate` checks
//! what spans several fields. A `Cluster` value has passed both.

mod decode;
mod validate;

use crate::names::{HttpUrl, InterfaceName, Mac, NodeName, Sha256Hex};
use crate::problem::{Problems, SpecError};
use crate::version::KubeVersion;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub const API_VERSION: &str = "muster.dev/v1";
pub const KIND: &str = "Cluster";

/// The largest spec file read: a cluster spec is a few KiB; this bounds what a parse costs.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The most nodes of one role a spec may ask for. Far above a lab's or a Proxmox host's
/// needs, and it bounds everything the planner allocates per node.
pub const MAX_NODES_PER_ROLE: u32 = 1000;

/// Proxmox VE's largest VM id.
pub const MAX_PROXMOX_VMID: u32 = 999_999_999;

/// Reads and validates a spec. On success returns it with its warnings; on failure every
/// problem found, each located by line, column and field.
pub fn load(file: &str, text: &str) -> Result<(Cluster, Problems), SpecError> {
    let mut ctx = crate::yaml::Ctx::new(file);
    let cluster = decode::decode(&mut ctx, text);
    if let Some(c) = &cluster {
        validate::validate(&mut ctx, c);
    }
    let mut problems = ctx.problems;
    problems.sort();
    match cluster {
        Some(c) if !problems.has_errors() => Ok((c, problems)),
        _ => Err(SpecError {
            file: file.to_string(),
            problems,
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub name: NodeName,
    pub distribution: Distribution,
    pub addons: Addons,
    pub topology: Topology,
    pub sizes: Sizes,
    pub network: Network,
    pub ha: Ha,
    pub datastore: Datastore,
    pub rendezvous: Rendezvous,
    pub platform: Platform,
    pub image: BaseImage,
    pub host: HostBudget,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistroKind {
    Kubeadm,
    K3s,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribution {
    pub kind: DistroKind,
    pub version: KubeVersion,
    /// k3s packaged components to turn off (`--disable`), e.g. traefik, servicelb.
    pub disable: Vec<String>,
    /// Taints for control-plane nodes, `key=value:Effect`.
    pub control_plane_taints: Vec<String>,
    /// How many workers a rolling upgrade takes out at once (`maxUnavailable`, default 1;
    /// control planes always go one at a time).
    /// Left out of the baked config when it is the default, so clusters built before the
    /// field read the same.
    #[serde(
        default = "default_max_unavailable",
        skip_serializing_if = "is_default_max_unavailable"
    )]
    pub max_unavailable: u32,
}

/// Workers upgraded at once unless the spec says otherwise.
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 1;

fn default_max_unavailable() -> u32 {
    DEFAULT_MAX_UNAVAILABLE
}

fn is_default_max_unavailable(n: &u32) -> bool {
    *n == DEFAULT_MAX_UNAVAILABLE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    Cilium,
    Flannel,
    Calico,
}

impl Cni {
    /// The name the spec gives it (`cni: NAME`), which is also the add-on's name.
    pub fn name(self) -> &'static str {
        match self {
            Cni::Cilium => "cilium",
            Cni::Flannel => "flannel",
            Cni::Calico => "calico",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addons {
    pub cni: Cni,
    pub csi: Option<String>,
    pub ingress: Option<String>,
    /// Services of type LoadBalancer on bare metal (`addons.loadBalancer`). Absent: none
    /// (k3s keeps its own servicelb unless `distribution.disable` turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerAddon>,
    /// Manifests the user brings (`addons.manifests`): their own add-ons, applied after the
    /// built-in ones, or the manifest of a named add-on muster pins none for (cilium).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<AddonManifest>,
    /// cilium replaces kube-proxy (`addons.kubeProxyReplacement: true`, cilium only):
    /// kubeadm skips its kube-proxy add-on, k3s runs without it, and cilium's chart is
    /// rendered with `kubeProxyReplacement: true`, reaching the API through the VIP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kube_proxy_replacement: bool,
}

/// One manifest from the user: `url` + `sha256`, or a local `file` (relative to the spec
/// file; `sha256` optional, checked when given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddonManifest {
    /// Lowercase letters, digits and `-`; the same name as `cni`, `csi` or `ingress`
    /// supplies that add-on's manifest.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
}

/// Which implementation hands out LoadBalancer addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancerProvider {
    /// MetalLB in layer-2 mode: one `IPAddressPool` and one `L2Advertisement`.
    Metallb,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerAddon {
    pub provider: LoadBalancerProvider,
    /// The pool: free addresses of the node subnet, none a node, the VIP or the gateway owns.
    pub addresses: Vec<crate::address_range::AddressRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    pub control_planes: u32,
    pub workers: u32,
    pub load_balancers: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Size {
    pub cpus: u32,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(rename = "diskGiB")]
    pub disk_gib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sizes {
    pub control_plane: Size,
    pub worker: Size,
    pub load_balancer: Size,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
    LoadBalancer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::ControlPlane, Role::Worker, Role::LoadBalancer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::LoadBalancer => "load-balancer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// First host number of each role's block in the subnet (seed 000: .11 and .21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPlan {
    pub control_planes: u32,
    pub workers: u32,
    pub load_balancers: u32,
}

/// Name templates per role; `{cluster}`, `{n}` (1, 2, …) and `{nn}` (01, 02, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Naming {
    pub control_plane: String,
    pub worker: String,
    pub load_balancer: String,
}

/// Pins the name, address or MAC of one planned node, chosen by role and 1-based index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeOverride {
    pub role: Role,
    pub index: u32,
    pub name: Option<NodeName>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    /// The cluster NIC inside each node (never Vagrant's NAT NIC).
    pub interface: InterfaceName,
    pub pod_subnet: Ipv4Net,
    pub service_subnet: Ipv4Net,
    pub address_plan: AddressPlan,
    pub naming: Naming,
    pub nodes: Vec<NodeOverride>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VipProvider {
    /// kube-vip static pod on each control plane (ARP, leader election).
    KubeVip,
    /// HAProxy on load-balancer nodes, keepalived floating the VIP between them.
    Haproxy,
    /// keepalived on the control-plane hosts with an API health check and nopreempt.
    Keepalived,
    /// nginx stream proxy on load-balancer nodes (keepalived floats a VIP if there are two or more).
    Nginx,
}

impl VipProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            VipProvider::KubeVip => "kube-vip",
            VipProvider::Haproxy => "haproxy",
            VipProvider::Keepalived => "keepalived",
            VipProvider::Nginx => "nginx",
        }
    }

    pub fn needs_load_balancers(self) -> bool {
        matches!(self, VipProvider::Haproxy | VipProvider::Nginx)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ha {
    pub provider: VipProvider,
    /// The floating API address. Absent only for nginx on a single LB node, whose own
    /// address is then the API endpoint.
    pub vip: Option<Ipv4Addr>,
    pub api_port: u16,
    pub virtual_router_id: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", deny_unknown_fields)]
pub enum Datastore {
    /// etcd on each control plane, as kubeadm and k3s `--cluster-init` do it.
    StackedEtcd,
    /// An etcd cluster of its own (kubeadm only). The three files are the etcd CA and the
    /// API server's etcd client certificate and key, as paths relative to the spec file
    /// (`muster build` reads them; `muster plan` does not need them). https endpoints need
    /// all three; http endpoints need none.
    ExternalEtcd {
        endpoints: Vec<HttpUrl>,
        #[serde(rename = "caFile", default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
        #[serde(rename = "certFile", default, skip_serializing_if = "Option::is_none")]
        cert_file: Option<String>,
        #[serde(rename = "keyFile", default, skip_serializing_if = "Option::is_none")]
        key_file: Option<String>,
    },
    /// A MySQL/MariaDB/PostgreSQL endpoint for k3s `--datastore-endpoint`.
    ExternalSql { endpoint: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rendezvous {
    pub url: HttpUrl,
    pub worker_join_cap: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VagrantProvider {
    Libvirt,
    Virtualbox,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Platform {
    Qemu,
    Vagrant {
        provider: VagrantProvider,
        #[serde(rename = "box")]
        box_name: String,
    },
    Proxmox {
        node: String,
        storage: String,
        bridge: String,
        template_id: u32,
        vm_id_base: u32,
    },
}

impl Platform {
    pub fn name(&self) -> &'static str {
        match self {
            Platform::Qemu => "qemu",
            Platform::Vagrant { .. } => "vagrant",
            Platform::Proxmox { .. } => "proxmox",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseImage {
    pub name: String,
    pub url: HttpUrl,
    pub sha256: Option<Sha256Hex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostBudget {
    /// Host RAM; no budget check when absent.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: Option<u64>,
    /// What the host itself keeps (seed 000: ~3 GB).
    #[serde(rename = "overheadMiB")]
    pub overhead_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Access {
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
}

impl Cluster {
    /// The address clients and joining nodes use for the API server.
    pub fn api_address(&self, first_lb: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.ha.vip.or(first_lb)
    }

    pub fn stacked_etcd(&self) -> bool {
        matches!(self.datastore, Datastore::StackedEtcd)
    }

    /// The external etcd endpoints, when the datastore is an external etcd cluster.
    pub fn external_etcd(&self) -> Option<&[HttpUrl]> {
        match &self.datastore {
            Datastore::ExternalEtcd { endpoints, .. } => Some(endpoints),
            _ => None,
        }
    }

    pub fn size(&self, role: Role) -> Size {
        match role {
            Role::ControlPlane => self.sizes.control_plane,
            Role::Worker => self.sizes.worker,
            Role::LoadBalancer => self.sizes.load_balancer,
        }
    }

    pub fn count(&self, role: Role) -> u32 {
        match role {
            Role::ControlPlane => self.topology.control_planes,
            Role::Worker => self.topology.workers,
            Role::LoadBalancer => self.topology.load_balancers,
        }
    }

    pub fn first_host(&self, role: Role) -> u32 {
        let p = &self.network.address_plan;
        match role {
            Role::ControlPlane => p.control_planes,
            Role::Worker => p.workers,
            Role::LoadBalancer => p.load_balancers,
        }
    }

    pub fn name_template(&self, role: Role) -> &str {
        let n = &self.network.naming;
        match role {
            Role::ControlPlane => &n.control_plane,
            Role::Worker => &n.worker,
            Role::LoadBalancer => &n.load_balancer,
        }
    }
}
