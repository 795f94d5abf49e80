//! k3s `config.yaml` templates per node. Control planes get two variants — `init.yaml`
//! (`cluster-init: true`, the node that starts embedded etcd) and `join.yaml`
//! (`server: https://VIP:port`) — and the agent picks one and writes it to
//! `/etc/rancher/k3s/config.yaml`. With an external SQL datastore every server talks to the
//! database and neither variant names a server: both are the same. Workers get `join.yaml`
//! only. The token is the placeholder `@@TOKEN@@`.
//!
//! These templates go into the shared payload, so they never hold the SQL datastore endpoint
//! (it carries the database password): [`datastore_dropin`] renders it for the servers'
//! own cloud-init seeds, which write it to `/etc/rancher/k3s/config.yaml.d/`.

use super::common::{Input, RenderError};
use super::yaml::to_yaml;
use model::PlannedNode;
use model::spec::{Cni, Datastore, DistroKind, Role};
use model::templates::TOKEN;
use serde::{Deserialize, Serialize};

/// The keys muster writes, spelled as the k3s server/agent flags without `--`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct K3sConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_init: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server: Option<String>,
    pub token: String,
    pub node_name: String,
    pub node_ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub advertise_address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tls_san: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service_cidr: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub disable: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub node_taint: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flannel_iface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flannel_backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disable_network_policy: Option<bool>,
}

/// The k3s config drop-in of a server on an external SQL datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DatastoreDropin {
    pub datastore_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Init,
    Join,
}

pub fn config(
    input: &Input<'_>,
    node: &PlannedNode,
    variant: Variant,
) -> Result<K3sConfig, RenderError> {
    let c = input.cluster;
    let server_url = format!("https://{}", input.api_endpoint("the k3s config")?);
    let flannel = c.addons.cni == Cni::Flannel;
    let mut cfg = K3sConfig {
        cluster_init: None,
        server: None,
        token: TOKEN.into(),
        node_name: node.name.to_string(),
        node_ip: node.ip.to_string(),
        advertise_address: None,
        tls_san: Vec::new(),
        cluster_cidr: None,
        service_cidr: None,
        disable: Vec::new(),
        node_taint: Vec::new(),
        flannel_iface: flannel.then(|| c.network.interface.to_string()),
        flannel_backend: None,
        disable_network_policy: None,
    };
    if node.role != Role::ControlPlane {
        cfg.server = Some(server_url);
        return Ok(cfg);
    }
    let mut sans = vec![input.api_address("the k3s config")?.to_string()];
    for ip in input.control_plane_ips() {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    cfg.advertise_address = Some(node.ip.to_string());
    cfg.tls_san = sans;
    cfg.cluster_cidr = Some(c.network.pod_subnet.to_string());
    cfg.service_cidr = Some(c.network.service_subnet.to_string());
    cfg.disable = c.distribution.disable.clone();
    // Two controllers answering for LoadBalancer Services would fight over them.
    if c.addons.load_balancer.is_some() && !cfg.disable.iter().any(|d| d == "servicelb") {
        cfg.disable.push("servicelb".into());
    }
    cfg.node_taint = c.distribution.control_plane_taints.clone();
    if !flannel {
        cfg.flannel_backend = Some("none".into());
        cfg.disable_network_policy = Some(true);
    }
    match &c.datastore {
        // Every server talks to the database (the endpoint comes from the drop-in).
        Datastore::ExternalSql { .. } => {}
        _ => match variant {
            Variant::Init => cfg.cluster_init = Some(true),
            Variant::Join => cfg.server = Some(server_url),
        },
    }
    Ok(cfg)
}

/// `(path, contents)` of the `datastore-endpoint` drop-in for `node`: control planes of a
/// k3s cluster on an external SQL datastore only; `None` for every other node.
pub fn datastore_dropin(
    input: &Input<'_>,
    node: &PlannedNode,
) -> Result<Option<(&'static str, String)>, RenderError> {
    let c = input.cluster;
    match &c.datastore {
        Datastore::ExternalSql { endpoint }
            if node.role == Role::ControlPlane && c.distribution.kind == DistroKind::K3s =>
        {
            let d = DatastoreDropin {
                datastore_endpoint: endpoint.clone(),
            };
            Ok(Some((
                model::node_files::K3S_DATASTORE_DROPIN,
                to_yaml("the k3s datastore drop-in", &d)?,
            )))
        }
        _ => Ok(None),
    }
}

pub fn render(
    input: &Input<'_>,
    node: &PlannedNode,
    variant: Variant,
) -> Result<String, RenderError> {
    Ok(to_yaml("the k3s config", &config(input, node, variant)?)?)
}
