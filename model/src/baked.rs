//! What the builder bakes for the agent: the cluster config every node shares, and the
//! identity cloud-init writes for each node. JSON, written by machines, strict on read.

use crate::names::{HttpUrl, NodeName, Sha256Hex};
use crate::plan::PlannedNode;
use crate::spec::Cluster;
use serde::{Deserialize, Serialize};

pub const BAKED_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BakedCluster {
    pub format: u32,
    /// Stable id of the cluster at the rendezvous; derived from the cluster secret so a
    /// rebuild for an upgrade keeps it.
    pub cluster_id: String,
    pub spec: Cluster,
    pub nodes: Vec<PlannedNode>,
    /// `address:port` of the API server (VIP, or the single LB).
    pub api_endpoint: String,
    pub rendezvous: BakedRendezvous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BakedRendezvous {
    pub url: HttpUrl,
    /// SHA-256 of the rendezvous server's certificate (DER); the agent pins it.
    /// Absent only for plain HTTP.
    pub cert_sha256: Option<Sha256Hex>,
}

/// Written by cloud-init to `/etc/muster/node.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeIdentity {
    pub name: NodeName,
    pub cluster_id: String,
}

impl BakedCluster {
    pub fn node(&self, name: &NodeName) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| &n.name == name)
    }

    /// Every planned Kubernetes node with its role: the nodes an upgrade rolls (load
    /// balancers run no Kubernetes).
    pub fn upgrading_nodes(&self) -> Vec<(String, crate::Role)> {
        self.nodes
            .iter()
            .filter(|n| n.role != crate::Role::LoadBalancer)
            .map(|n| (n.name.to_string(), n.role))
            .collect()
    }
}
