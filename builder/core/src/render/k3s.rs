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
use crate::addons::Install;
use model::PlannedNode;
use model::spec::{Datastore, DistroKind, Role};
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
    /// cilium replaces kube-proxy (`addons.kubeProxyReplacement`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disable_kube_proxy: Option<bool>,
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
    // k3s keeps its own flannel unless the payload brings another CNI (a pinned manifest or
    // the user's); a CNI without a source never gets here (`muster build` refuses it).
    let other_cni = crate::addons::resolve(c)
        .first()
        .is_some_and(|a| matches!(a.install, Install::Manifest(_) | Install::User(_)));
    let flannel = !other_cni;
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
        disable_kube_proxy: None,
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
    // A server flag: agents take it from the servers' configuration.
    if c.addons.kube_proxy_replacement {
        cfg.disable_kube_proxy = Some(true);
    }
    if other_cni {
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

#[cfg(test)]
mod tests {
    use super::*;
    use model::spec::Cni;

    fn example(name: &str) -> (model::Cluster, model::Plan) {
        let text = std::fs::read_to_string(format!(
            "{}/../../examples/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let c = model::spec::load(name, &text).unwrap().0;
        let p = model::plan::resolve(&c, vec![]);
        (c, p)
    }

    /// The first control plane's init config as k3s reads it.
    fn init_config(c: &model::Cluster, p: &model::Plan) -> K3sConfig {
        let input = Input::new(c, p);
        let text = render(&input, &p.nodes[0], Variant::Init).unwrap();
        serde_yaml::from_str(&text).unwrap()
    }

    #[test]
    fn servicelb_goes_with_metallb_and_flannel_only_for_another_cni() {
        // seed 002 without MetalLB: servicelb and flannel stay, flannel on the cluster NIC.
        let (mut c, p) = example("seed-002-k3s-nginx-mariadb.yaml");
        c.addons.load_balancer = None;
        let cfg = init_config(&c, &p);
        assert!(!cfg.disable.contains(&"servicelb".to_string()), "{cfg:?}");
        assert_eq!(cfg.flannel_backend, None);
        assert_eq!(cfg.disable_network_policy, None);
        assert_eq!(
            cfg.flannel_iface.as_deref(),
            Some(c.network.interface.as_str())
        );
        // seed 002: MetalLB chosen, servicelb not listed by the user: muster turns it off.
        let (c, p) = example("seed-002-k3s-nginx-mariadb.yaml");
        assert!(!c.distribution.disable.contains(&"servicelb".to_string()));
        let cfg = init_config(&c, &p);
        assert_eq!(cfg.disable.iter().filter(|d| *d == "servicelb").count(), 1);
        assert_eq!(cfg.flannel_backend, None);
        // calico installed from its pin: k3s's flannel and network policy off.
        let mut calico = c.clone();
        calico.addons.cni = Cni::Calico;
        let cfg = init_config(&calico, &p);
        assert_eq!(cfg.flannel_backend.as_deref(), Some("none"));
        assert_eq!(cfg.disable_network_policy, Some(true));
        assert_eq!(cfg.flannel_iface, None);
        // cilium from its pinned chart, or from the user's manifest: flannel off either way.
        let mut cilium = c.clone();
        cilium.addons.cni = Cni::Cilium;
        let cfg = init_config(&cilium, &p);
        assert_eq!(cfg.flannel_backend.as_deref(), Some("none"));
        assert_eq!(cfg.disable_network_policy, Some(true));
        cilium.addons.manifests.push(model::spec::AddonManifest {
            name: "cilium".into(),
            url: None,
            file: Some("cilium.yaml".into()),
            sha256: None,
        });
        let cfg = init_config(&cilium, &p);
        assert_eq!(cfg.flannel_backend.as_deref(), Some("none"));
        assert_eq!(cfg.disable_network_policy, Some(true));
    }
}
