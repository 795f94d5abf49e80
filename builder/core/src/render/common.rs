//! What several renderers share: the validated spec and its plan, and the facts derived
//! from them (API address, peers of a node).

use model::spec::{Cluster, Role};
use model::{Plan, PlannedNode};
use std::net::Ipv4Addr;

/// Errors of the pure renderers; each names the spec field or the artifact involved.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "spec.ha.vip: the cluster has no API address (no VIP and no load-balancer node); cannot render {artifact}"
    )]
    NoApiAddress { artifact: &'static str },
    #[error("spec.distribution.controlPlaneTaints[{index}]: `{taint}` is not `key[=value]:Effect`")]
    BadTaint { index: usize, taint: String },
    #[error("spec.rendezvous.url: `{url}` has no host to put in the rendezvous certificate")]
    NoRendezvousHost { url: String },
    #[error(transparent)]
    Yaml(#[from] super::yaml::YamlError),
    #[error("cannot turn {what} into JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A validated spec and its plan: the input of every renderer.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub cluster: &'a Cluster,
    pub plan: &'a Plan,
}

impl<'a> Input<'a> {
    pub fn new(cluster: &'a Cluster, plan: &'a Plan) -> Self {
        Input { cluster, plan }
    }

    pub fn nodes(&self, role: Role) -> impl Iterator<Item = &'a PlannedNode> + 'a {
        self.plan.nodes.iter().filter(move |n| n.role == role)
    }

    pub fn control_plane_ips(&self) -> Vec<Ipv4Addr> {
        self.nodes(Role::ControlPlane).map(|n| n.ip).collect()
    }

    /// The address clients use for the API: the VIP, or the single load balancer.
    pub fn api_address(&self, artifact: &'static str) -> Result<Ipv4Addr, RenderError> {
        model::plan::api_address(self.cluster, &self.plan.nodes)
            .ok_or(RenderError::NoApiAddress { artifact })
    }

    pub fn api_port(&self) -> u16 {
        self.cluster.ha.api_port
    }

    /// `address:port` of the API server.
    pub fn api_endpoint(&self, artifact: &'static str) -> Result<String, RenderError> {
        Ok(format!(
            "{}:{}",
            self.api_address(artifact)?,
            self.api_port()
        ))
    }

    pub fn prefix_len(&self) -> u8 {
        self.cluster.network.subnet.prefix_len()
    }
}

/// A taint `key[=value]:Effect`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

pub fn parse_taints(c: &Cluster) -> Result<Vec<Taint>, RenderError> {
    c.distribution
        .control_plane_taints
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let bad = || RenderError::BadTaint {
                index,
                taint: t.clone(),
            };
            let (kv, effect) = t.rsplit_once(':').ok_or_else(bad)?;
            let (key, value) = match kv.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (kv, None),
            };
            if key.is_empty() || effect.is_empty() {
                return Err(bad());
            }
            Ok(Taint {
                key: key.to_string(),
                value,
                effect: effect.to_string(),
            })
        })
        .collect()
}
