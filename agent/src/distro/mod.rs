//! What the state machine asks of the Kubernetes distribution, and the kubeadm and k3s
//! implementations. Command lines go through `exec::CommandRunner`; parsers of their output
//! live in `parse`; etcd membership and API readiness go over HTTPS (`http`).

pub mod http;
pub mod k3s;
pub mod kubeadm;
pub mod parse;
pub mod template;

use protocol::pem_client::ClientCache;
use protocol::records::{EtcdCreds, JoinMaterial, Secret};

#[derive(Debug, thiserror::Error)]
pub enum DistroError {
    #[error("{step}: {source}")]
    Exec {
        step: &'static str,
        #[source]
        source: crate::exec::ExecError,
    },
    #[error("{step}: cannot parse the output: {detail}")]
    Parse { step: &'static str, detail: String },
    #[error("{step}: {path}: {detail}")]
    File {
        step: &'static str,
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("{step}: {url}: {detail}")]
    Http {
        step: &'static str,
        url: String,
        detail: String,
    },
    #[error("{step}: {detail}")]
    Unit { step: &'static str, detail: String },
    #[error("{step}: {detail}")]
    Other { step: &'static str, detail: String },
    /// The join material was refused as expired (kubeadm: the uploaded certificates or the
    /// bootstrap token are gone), whatever its expiry times say: only fresh material helps.
    #[error("{step}: the join material was refused as expired: {detail}")]
    MaterialRejected { step: &'static str, detail: String },
}

pub type DistroResult<T> = Result<T, DistroError>;

impl DistroError {
    /// The step and the whole output of the command that failed, when one did.
    pub fn failed_output(&self) -> Option<(&'static str, &str)> {
        match self {
            DistroError::Exec {
                step,
                source: crate::exec::ExecError::Failed { output, .. },
            } => Some((step, output)),
            DistroError::MaterialRejected { step, detail } => Some((step, detail)),
            _ => None,
        }
    }
}

/// How many log lines a reason is read from (the parsers keep the last
/// `protocol::report::MAX_REASON_LINES` of them; the fatal line may come a little earlier).
pub const REASON_LOG_LINES: usize = 40;

/// Secrets the agent chooses before init, substituted into the init config.
#[derive(Debug, Clone)]
pub struct InitSecrets {
    pub token: Secret,
    pub certificate_key: Secret,
}

/// What an init or a refresh yields for joiners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: Secret,
    pub ca_cert_hash: String,
    pub certificate_key: Option<Secret>,
}

/// Files a joiner needs beyond the token: admin kubeconfig and etcd client access.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub admin_kubeconfig: Option<Secret>,
    pub etcd: Option<EtcdCreds>,
}

pub use protocol::etcd_view::EtcdMember;

/// How to reach etcd's v3 JSON gateway: endpoints (`https://IP:2379`) and credentials.
#[derive(Debug, Clone)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    pub creds: EtcdCreds,
}

/// etcd membership and health. Both distributions run etcd with its v3 JSON gateway, so
/// the default methods (HTTPS) serve both; the simulation overrides them.
#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait EtcdApi {
    /// The clients kept for reuse across calls (a clone shares them); by default a new,
    /// empty cache: a new client per call.
    fn clients(&self) -> ClientCache {
        ClientCache::new()
    }
    async fn etcd_members(&self, access: &EtcdAccess) -> DistroResult<Vec<EtcdMember>> {
        http::etcd_member_list(&self.clients(), &access.endpoints, &access.creds).await
    }
    async fn remove_etcd_member(&self, access: &EtcdAccess, id: u64) -> DistroResult<()> {
        http::etcd_member_remove(&self.clients(), &access.endpoints, &access.creds, id).await
    }
    /// The member at `client_url` answers `/health` with `{"health":"true"}` (false when
    /// the cluster has no quorum, or the member is down).
    async fn etcd_member_healthy(&self, creds: &EtcdCreds, client_url: &str) -> bool {
        http::etcd_health(&self.clients(), creds, client_url).await
    }
}

/// [`EtcdApi`] over HTTPS alone, for `nodeagent status` (no distribution needed).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayEtcd;

impl EtcdApi for GatewayEtcd {}

#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait Distro: EtcdApi {
    /// Undoes init or join on this node (idempotent; fine on a clean node).
    async fn reset(&self) -> DistroResult<()>;
    /// Creates the cluster on this node.
    async fn init(&self, secrets: &InitSecrets) -> DistroResult<Issued>;
    async fn join_control_plane(&self, m: &JoinMaterial) -> DistroResult<()>;
    async fn join_worker(&self, m: &JoinMaterial) -> DistroResult<()>;
    /// On a joined control plane: re-upload certs with `certificate_key` and create a token.
    async fn refresh_join_material(&self, certificate_key: Option<&Secret>)
    -> DistroResult<Issued>;
    /// Admin kubeconfig and etcd client credentials of this (joined or initialized) node.
    async fn credentials(&self) -> DistroResult<Credentials>;
    /// The credentials this node asks etcd with for its view (member report, `nodeagent
    /// status`): by default the ones `credentials` hands joiners.
    async fn etcd_view_creds(&self) -> DistroResult<Option<EtcdCreds>> {
        Ok(self.credentials().await?.etcd)
    }
    /// `GET https://ADVERTISE:6443/readyz` answers 200 `ok`.
    async fn local_api_ready(&self) -> DistroResult<bool>;
    /// The same through the API endpoint (VIP or load balancer).
    async fn vip_api_ready(&self) -> DistroResult<bool>;
    /// This node's kubelet has registered its Node object and it is `Ready` (kubelet and
    /// pod network).
    async fn kubelet_registered(&self) -> DistroResult<bool>;
    /// A client with the cluster admin's identity and this node's local API base
    /// (`https://ADVERTISE:PORT`), for applying the baked add-ons.
    async fn admin_api(&self) -> DistroResult<(reqwest::Client, String)> {
        Err(DistroError::Other {
            step: "admin API client",
            detail: "not available for this distribution".into(),
        })
    }
    /// This node's Node is `Ready`, read through the local API with the admin identity (a
    /// control plane: it has no kubelet client certificate of its own on disk).
    async fn node_ready(&self) -> DistroResult<bool> {
        Err(DistroError::Other {
            step: "node ready",
            detail: "not available for this distribution".into(),
        })
    }
    /// The running control plane's versions, as a joiner sees them before joining
    /// ([`parse::control_plane_version`]: the lowest of the API server's `/version` and
    /// every other control-plane Node's kubelet, and the newest of those kubelets), read
    /// through the API endpoint with the join material's admin kubeconfig. `None`: the
    /// material carries none (cannot tell).
    async fn control_plane_version(
        &self,
        m: &JoinMaterial,
    ) -> DistroResult<Option<crate::upgrade::order::ControlPlaneVersions>>;
    /// The distribution's own reason for a failed or stuck init or join: parsed from the
    /// failed command's output (`failed`), else from the log of what it runs (k3s's unit,
    /// kubeadm's kubelet). `None` when there is nothing to say.
    async fn reason(&self, failed: Option<&DistroError>) -> Option<protocol::report::DistroReason>;
}

/// Where this node is and what it talks to; shared by both implementations.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub root: model::node_files::NodeRoot,
    pub node: model::NodeName,
    pub advertise: std::net::Ipv4Addr,
    /// `address:port` of the API endpoint.
    pub api_endpoint: String,
    pub api_port: u16,
    /// kubeadm on an external etcd cluster: the control planes are not etcd members and
    /// reach etcd with the API server's client certificate (`node_files::ETCD_EXTERNAL_*`).
    pub external_etcd: bool,
}

impl NodeContext {
    /// [`Distro::control_plane_version`] for both distributions: through this cluster's API
    /// endpoint with the join material's admin identity.
    pub async fn control_plane_version(
        &self,
        clients: &ClientCache,
        m: &JoinMaterial,
    ) -> DistroResult<Option<crate::upgrade::order::ControlPlaneVersions>> {
        match &m.admin_kubeconfig {
            Some(kc) => http::control_plane_version(
                clients,
                &kc.0,
                &format!("https://{}", self.api_endpoint),
                self.node.as_str(),
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    }

    /// A file of this node's baked tree, e.g. `etc/muster/kubeadm/init.yaml`.
    pub fn tree_file(&self, rel: &str) -> std::path::PathBuf {
        self.root.node_tree(&self.node).join(rel)
    }
}
