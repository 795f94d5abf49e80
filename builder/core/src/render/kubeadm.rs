//! kubeadm configuration templates per node. The types below cover exactly the fields muster
//! emits, named as in the kubeadm config API reference (v1beta4 from 1.31, v1beta3 before:
//! `KubeVersion::kubeadm_api()`); they deny unknown fields so a round trip in the tests
//! catches a misspelt field. In v1beta4 `kubeletExtraArgs` is a list of `{name, value}`, in
//! v1beta3 a map. Values the agent only learns at run time are placeholders
//! (`model::templates`), documented in docs/kubeadm-templates.md.

use super::common::{Input, RenderError, parse_taints};
use super::yaml::to_yaml;
use model::PlannedNode;
use model::node_files as nf;
use model::spec::{Datastore, Role};
use model::templates::{CA_CERT_HASH, CERTIFICATE_KEY, TOKEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const KUBELET_API: &str = "kubelet.config.k8s.io/v1beta1";
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    pub bootstrap_tokens: Vec<BootstrapToken>,
    pub node_registration: NodeRegistration,
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    pub certificate_key: String,
    /// `addon/kube-proxy` when cilium replaces kube-proxy (`addons.kubeProxyReplacement`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skip_phases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    pub name: String,
    pub cri_socket: String,
    /// None: kubeadm's default (the control-plane taint on control planes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub taints: Option<Vec<Taint>>,
    pub kubelet_extra_args: ExtraArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    pub effect: String,
}

/// `extraArgs`/`kubeletExtraArgs`: a list of `{name, value}` in v1beta4, a map in v1beta3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraArgs {
    List(Vec<Arg>),
    Map(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    pub name: String,
    pub value: String,
}

impl ExtraArgs {
    fn new(api: &str, args: &[(&str, String)]) -> ExtraArgs {
        if api.ends_with("v1beta3") {
            ExtraArgs::Map(
                args.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        } else {
            ExtraArgs::List(
                args.iter()
                    .map(|(k, v)| Arg {
                        name: k.to_string(),
                        value: v.clone(),
                    })
                    .collect(),
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    pub advertise_address: String,
    pub bind_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub networking: Networking,
    pub api_server: ApiServer,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd: Option<Etcd>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub feature_gates: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    pub pod_subnet: String,
    pub service_subnet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    pub external: ExternalEtcd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub cgroup_driver: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    pub api_version: String,
    pub kind: String,
    pub node_registration: NodeRegistration,
    pub discovery: Discovery,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub control_plane: Option<JoinControlPlane>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    pub bootstrap_token: BootstrapTokenDiscovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    pub api_server_endpoint: String,
    pub token: String,
    pub ca_cert_hashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    pub certificate_key: String,
}

fn node_registration(
    input: &Input<'_>,
    node: &PlannedNode,
) -> Result<NodeRegistration, RenderError> {
    let api = input.cluster.distribution.version.kubeadm_api();
    let taints = if node.role == Role::ControlPlane {
        let spec = parse_taints(input.cluster)?;
        if spec.is_empty() && input.cluster.topology.workers > 0 {
            None
        } else {
            // Explicit taints; an empty list (no workers) keeps control planes schedulable.
            Some(
                spec.into_iter()
                    .map(|t| Taint {
                        key: t.key,
                        value: t.value,
                        effect: t.effect,
                    })
                    .collect(),
            )
        }
    } else {
        None
    };
    Ok(NodeRegistration {
        name: node.name.to_string(),
        cri_socket: CRI_SOCKET.to_string(),
        taints,
        kubelet_extra_args: ExtraArgs::new(api, &[("node-ip", node.ip.to_string())]),
    })
}

fn local_endpoint(input: &Input<'_>, node: &PlannedNode) -> ApiEndpoint {
    ApiEndpoint {
        advertise_address: node.ip.to_string(),
        bind_port: input.api_port(),
    }
}

pub fn cluster_configuration(input: &Input<'_>) -> Result<ClusterConfiguration, RenderError> {
    let c = input.cluster;
    let vip = input.api_address("the kubeadm ClusterConfiguration")?;
    let mut sans = vec![vip.to_string()];
    for ip in input.control_plane_ips() {
        let s = ip.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    let etcd = match &c.datastore {
        // kubeadm's own paths for the external etcd's CA and the API server's client cert.
        Datastore::ExternalEtcd { endpoints, .. } => Some(Etcd {
            external: ExternalEtcd {
                endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
                ca_file: format!("/{}", nf::ETCD_EXTERNAL_CA),
                cert_file: format!("/{}", nf::ETCD_EXTERNAL_CLIENT_CERT),
                key_file: format!("/{}", nf::ETCD_EXTERNAL_CLIENT_KEY),
            },
        }),
        _ => None,
    };
    let mut feature_gates = BTreeMap::new();
    // Stacked etcd only: joins add members as learners, so one dying mid-join never costs
    // the quorum (docs/testing.md, "etcd learners").
    if etcd.is_none() && c.distribution.version.needs_etcd_learner_gate() {
        feature_gates.insert("EtcdLearnerMode".to_string(), true);
    }
    Ok(ClusterConfiguration {
        api_version: c.distribution.version.kubeadm_api().into(),
        kind: "ClusterConfiguration".into(),
        cluster_name: c.name.to_string(),
        kubernetes_version: c.distribution.version.to_string(),
        control_plane_endpoint: input.api_endpoint("the kubeadm ClusterConfiguration")?,
        networking: Networking {
            pod_subnet: c.network.pod_subnet.to_string(),
            service_subnet: c.network.service_subnet.to_string(),
        },
        api_server: ApiServer { cert_sans: sans },
        etcd,
        feature_gates,
    })
}

/// `init.yaml` for a control plane: InitConfiguration, ClusterConfiguration and
/// KubeletConfiguration, as three YAML documents.
pub fn init_template(input: &Input<'_>, node: &PlannedNode) -> Result<String, RenderError> {
    let api = input.cluster.distribution.version.kubeadm_api();
    let init = InitConfiguration {
        api_version: api.into(),
        kind: "InitConfiguration".into(),
        bootstrap_tokens: vec![BootstrapToken {
            token: TOKEN.into(),
        }],
        node_registration: node_registration(input, node)?,
        local_api_endpoint: local_endpoint(input, node),
        certificate_key: CERTIFICATE_KEY.into(),
        skip_phases: if input.cluster.addons.kube_proxy_replacement {
            vec!["addon/kube-proxy".into()]
        } else {
            Vec::new()
        },
    };
    let kubelet = KubeletConfiguration {
        api_version: KUBELET_API.into(),
        kind: "KubeletConfiguration".into(),
        cgroup_driver: "systemd".into(),
    };
    Ok(format!(
        "{}---\n{}---\n{}",
        to_yaml("the kubeadm InitConfiguration", &init)?,
        to_yaml(
            "the kubeadm ClusterConfiguration",
            &cluster_configuration(input)?
        )?,
        to_yaml("the KubeletConfiguration", &kubelet)?
    ))
}

/// `join.yaml`: JoinConfiguration, with `controlPlane` on control planes.
pub fn join_template(input: &Input<'_>, node: &PlannedNode) -> Result<String, RenderError> {
    let api = input.cluster.distribution.version.kubeadm_api();
    let join = JoinConfiguration {
        api_version: api.into(),
        kind: "JoinConfiguration".into(),
        node_registration: node_registration(input, node)?,
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: input.api_endpoint("the kubeadm JoinConfiguration")?,
                token: TOKEN.into(),
                ca_cert_hashes: vec![CA_CERT_HASH.into()],
            },
        },
        control_plane: (node.role == Role::ControlPlane).then(|| JoinControlPlane {
            local_api_endpoint: local_endpoint(input, node),
            certificate_key: CERTIFICATE_KEY.into(),
        }),
    };
    Ok(to_yaml("the kubeadm JoinConfiguration", &join)?)
}
