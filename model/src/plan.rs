//! The resolved plan: every machine a spec asks for, with its role, size, address and MAC,
//! and the RAM budget. `assign` is shared with validation so both see the same nodes.

use crate::names::{Mac, NodeName};
use crate::problem::Problem;
use crate::quorum::{self, QuorumRow};
use crate::spec::{Cluster, MAX_NODES_PER_ROLE, Platform, Role};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedNode {
    pub name: NodeName,
    pub role: Role,
    /// 1-based position among nodes of the same role.
    pub index: u32,
    pub cpus: u32,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(rename = "diskGiB")]
    pub disk_gib: u64,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// Proxmox VM id, when the platform is Proxmox: `vmIdBase` plus the node's host number
    /// in the subnet (see `vm_id`), so it follows the node's address, not its position.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vmid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub vms: u32,
    pub cpus: u32,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(rename = "diskGiB")]
    pub disk_gib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    #[serde(rename = "hostMemoryMiB")]
    pub host_memory_mib: Option<u64>,
    #[serde(rename = "overheadMiB")]
    pub overhead_mib: u64,
    /// VM RAM plus host overhead.
    #[serde(rename = "neededMiB")]
    pub needed_mib: u64,
    /// Host RAM left after VMs and overhead; negative when over budget.
    #[serde(rename = "headroomMiB")]
    pub headroom_mib: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quorum {
    pub members: u32,
    pub table: Vec<QuorumRow>,
    /// The external etcd cluster's client URLs (one member each); empty when etcd is
    /// stacked on the control planes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub cluster: NodeName,
    pub distribution: String,
    pub vip_provider: &'static str,
    /// `address:port` of the API server as clients see it.
    pub api_endpoint: String,
    pub platform: &'static str,
    pub nodes: Vec<PlannedNode>,
    pub totals: Totals,
    pub budget: Budget,
    /// Present with stacked etcd.
    pub quorum: Option<Quorum>,
    pub warnings: Vec<Problem>,
}

/// One planned node as the spec describes it, before validation has judged it.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub role: Role,
    pub index: u32,
    pub name: Result<NodeName, String>,
    /// None when the block runs past the end of the subnet.
    pub ip: Option<Ipv4Addr>,
    pub mac: Mac,
    /// Which `network.nodes[i]` override touched this node.
    pub override_at: Option<usize>,
}

pub(crate) fn render_name(template: &str, cluster: &str, n: u32) -> String {
    template
        .replace("{cluster}", cluster)
        .replace("{nn}", &format!("{n:02}"))
        .replace("{n}", &n.to_string())
}

fn mac_oui(platform: &Platform) -> [u8; 3] {
    match platform {
        // Proxmox's own prefix, as seed 001 shows; QEMU's elsewhere.
        Platform::Proxmox { .. } => [0xbc, 0x24, 0x11],
        _ => [0x52, 0x54, 0x00],
    }
}

/// Address of host number `n` in the subnet, if it is a usable host address.
pub(crate) fn host_address(c: &Cluster, n: u32) -> Option<Ipv4Addr> {
    let net = c.network.subnet;
    let base = u32::from(net.network());
    let addr = base.checked_add(n)?;
    (n >= 1 && addr < u32::from(net.broadcast())).then(|| Ipv4Addr::from(addr))
}

/// A node's Proxmox VM id: the base plus its address's host number in the subnet. Tied to
/// the address (stable per role block, or pinned by an override), never to the node's
/// position in the plan: adding a worker must not shift the ids of the nodes after it.
/// Unique because addresses are. `None` when it overflows (validation reports that).
pub fn vm_id(c: &Cluster, ip: Ipv4Addr) -> Option<u32> {
    let Platform::Proxmox { vm_id_base, .. } = c.platform else {
        return None;
    };
    let host = u32::from(ip).checked_sub(u32::from(c.network.subnet.network()))?;
    vm_id_base.checked_add(host)
}

/// Every node the spec asks for. Validation refuses counts over the cap before calling
/// this; the cap here keeps an unvalidated cluster from allocating without bound.
pub(crate) fn assign(c: &Cluster) -> Vec<Slot> {
    let mut slots = Vec::new();
    for role in Role::ALL {
        for index in 1..=c.count(role).min(MAX_NODES_PER_ROLE) {
            let name_text = render_name(c.name_template(role), c.name.as_str(), index);
            let mut slot = Slot {
                role,
                index,
                name: name_text.parse::<NodeName>(),
                ip: c
                    .first_host(role)
                    .checked_add(index - 1)
                    .and_then(|n| host_address(c, n)),
                mac: Mac::derived(mac_oui(&c.platform), &format!("{}/{name_text}", c.name)),
                override_at: None,
            };
            for (i, o) in c.network.nodes.iter().enumerate() {
                if o.role == role && o.index == index {
                    slot.override_at = Some(i);
                    if let Some(n) = &o.name {
                        slot.name = Ok(n.clone());
                    }
                    if let Some(ip) = o.ip {
                        slot.ip = Some(ip);
                    }
                    if let Some(mac) = o.mac {
                        slot.mac = mac;
                    }
                }
            }
            slots.push(slot);
        }
    }
    slots
}

/// Resolves a validated cluster into its plan. `warnings` are the spec's warnings.
/// The address clients use for the API: the VIP, or the first load balancer of `nodes`.
pub fn api_address(c: &Cluster, nodes: &[PlannedNode]) -> Option<Ipv4Addr> {
    let first_lb = nodes
        .iter()
        .find(|n| n.role == Role::LoadBalancer)
        .map(|n| n.ip);
    c.api_address(first_lb)
}

pub fn resolve(c: &Cluster, warnings: Vec<Problem>) -> Plan {
    let mut nodes = Vec::new();
    for slot in assign(c) {
        let (Ok(name), Some(ip)) = (slot.name, slot.ip) else {
            // Validation has rejected such a spec; keep going rather than panic.
            continue;
        };
        let size = c.size(slot.role);
        let vmid = match &c.platform {
            Platform::Proxmox { .. } => match vm_id(c, ip) {
                Some(id) => Some(id),
                // Validation has rejected such a spec (`spec.platform.vmIdBase`).
                None => continue,
            },
            _ => None,
        };
        nodes.push(PlannedNode {
            name,
            role: slot.role,
            index: slot.index,
            cpus: size.cpus,
            memory_mib: size.memory_mib,
            disk_gib: size.disk_gib,
            ip,
            mac: slot.mac,
            vmid,
        });
    }
    // Validation refuses totals that overflow, at the size field; saturating only keeps an
    // unvalidated cluster from panicking here.
    let totals = Totals {
        vms: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        cpus: nodes.iter().fold(0, |t: u32, n| t.saturating_add(n.cpus)),
        memory_mib: nodes
            .iter()
            .fold(0, |t: u64, n| t.saturating_add(n.memory_mib)),
        disk_gib: nodes
            .iter()
            .fold(0, |t: u64, n| t.saturating_add(n.disk_gib)),
    };
    let needed_mib = totals.memory_mib.saturating_add(c.host.overhead_mib);
    let budget = Budget {
        host_memory_mib: c.host.memory_mib,
        overhead_mib: c.host.overhead_mib,
        needed_mib,
        headroom_mib: c.host.memory_mib.map(|m| {
            i64::try_from(m).unwrap_or(i64::MAX) - i64::try_from(needed_mib).unwrap_or(i64::MAX)
        }),
    };
    let api = api_address(c, &nodes)
        .map(|a| format!("{a}:{}", c.ha.api_port))
        .unwrap_or_default();
    Plan {
        cluster: c.name.clone(),
        distribution: format!(
            "{} {}",
            match c.distribution.kind {
                crate::spec::DistroKind::Kubeadm => "kubeadm",
                crate::spec::DistroKind::K3s => "k3s",
            },
            c.distribution.version
        ),
        vip_provider: c.ha.provider.as_str(),
        api_endpoint: api,
        platform: c.platform.name(),
        nodes,
        totals,
        budget,
        quorum: quorum_of(c),
        warnings,
    }
}

/// etcd's members: the control planes when stacked, the endpoints when external; none for
/// an SQL datastore.
fn quorum_of(c: &Cluster) -> Option<Quorum> {
    if c.stacked_etcd() {
        return Some(Quorum {
            members: c.topology.control_planes,
            // Capped like the nodes: an unvalidated count must not size the table.
            table: quorum::table(c.topology.control_planes.min(MAX_NODES_PER_ROLE)),
            external: vec![],
        });
    }
    let endpoints = c.external_etcd()?;
    let members = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    Some(Quorum {
        members,
        table: quorum::table(members),
        external: endpoints.iter().map(|e| e.to_string()).collect(),
    })
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &PlannedNode> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}

/// A planned node for unit tests elsewhere in the crate: 2 CPUs, 4 GiB, 20 GiB, index 1,
/// a MAC derived from its name.
#[cfg(test)]
pub(crate) fn test_node(name: &str, role: Role, ip: &str, vmid: Option<u32>) -> PlannedNode {
    #[allow(clippy::unwrap_used, reason = "tests")]
    PlannedNode {
        name: name.parse().unwrap(),
        role,
        index: 1,
        cpus: 2,
        memory_mib: 4096,
        disk_gib: 20,
        ip: ip.parse().unwrap(),
        mac: Mac::derived([0x52, 0x54, 0x00], name),
        vmid,
    }
}
