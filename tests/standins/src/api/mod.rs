//! The apiserver stand-in: TLS on ADDR:6443 with the apiserver certificate, `/readyz` and
//! `/livez` backed by a read from its storage, and a Kubernetes-shaped JSON API kept in a
//! [`Storage`]: etcd through its v3 JSON gateway (kubeadm, k3s with embedded etcd) or a
//! kine-like table in a real MariaDB (k3s on an external SQL datastore, [`crate::sql`]).
//!
//! What it serves, one concept per module: [`resources`] (the served resources and their
//! storage keys, `/registry/...` as the real server lays them out), [`discovery`] (what
//! kubectl reads before anything else), [`objects`] (GET/LIST/POST/PUT/PATCH/DELETE),
//! [`apply`] (server-side apply and the server's metadata), [`table`] (server-side
//! printing for `kubectl get`). An object whose annotation `standin.muster.dev/expires-unix`
//! is in the past (stand-in clock) reads as absent, like a bootstrap token or the
//! `kubeadm-certs` Secret after the token cleaner removed it.
//!
//! Authentication: a client certificate signed by the cluster CA is an admin, but a
//! kubelet's (`CN=system:node:NAME`, `O=system:nodes`) is that node, held to what the Node
//! authorizer, kubeadm's RBAC and the NodeRestriction admission plugin let a kubelet do
//! ([`node_may`]); a bearer bootstrap token `ID.SECRET` that matches an unexpired
//! `bootstrap-token-ID` Secret is a bootstrapper; anything else is anonymous.

pub mod apply;
pub mod apply_audit;
pub mod discovery;
pub mod eviction;
pub mod node_ready;
pub mod objects;
pub mod resources;
pub mod rollout;
pub mod table;

use crate::etcd::Gateway;
use crate::pki::CertKey;
use crate::sql::SqlStore;
use anyhow::{Context, Result};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub const EXPIRES_ANNOTATION: &str = "standin.muster.dev/expires-unix";
/// Daemon name of the apiserver stand-in.
pub const DAEMON: &str = "kube-apiserver";

/// What the server needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub serving: CertKey,
    /// CA whose client certificates are admins; with its key, CSRs are signed too.
    pub client_ca: CertKey,
    pub client_ca_has_key: bool,
    /// Where objects live.
    pub storage: Arc<dyn Storage>,
    /// The version this server's binary is (`/version` before a kubeadm ClusterConfiguration
    /// names another): the apiserver stand-in's `MUSTER_STANDIN_K8S_VERSION`, a k3s server's
    /// own release.
    pub version: String,
}

/// A boxed future of a storage call.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where the apiserver stand-in keeps its objects (keys like `/registry/secrets/NS/NAME`,
/// values JSON bytes). Every read is a current read (etcd: linearizable; SQL: the newest
/// row), so several servers on one store serve the same data.
pub trait Storage: std::fmt::Debug + Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<Vec<u8>>>;
    /// Every key under `prefix` with its value.
    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, Vec<u8>)>>;
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StorageFuture<'a, ()>;
    /// `false` when the key did not exist.
    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, bool>;
    /// Succeeds only while the store can serve (etcd: has quorum).
    fn health(&self) -> StorageFuture<'_, ()>;
}

impl Storage for Gateway {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<Vec<u8>>> {
        Box::pin(Gateway::get(self, key))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(Gateway::list(self, prefix))
    }
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StorageFuture<'a, ()> {
        Box::pin(Gateway::put(self, key, value))
    }
    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(Gateway::delete(self, key))
    }
    fn health(&self) -> StorageFuture<'_, ()> {
        Box::pin(async move { Gateway::get(self, "/registry/health").await.map(|_| ()) })
    }
}

impl Storage for SqlStore {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<Vec<u8>>> {
        Box::pin(SqlStore::get(self, key))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(SqlStore::list(self, prefix))
    }
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8]) -> StorageFuture<'a, ()> {
        Box::pin(SqlStore::put(self, key, value))
    }
    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(SqlStore::delete(self, key))
    }
    fn health(&self) -> StorageFuture<'_, ()> {
        Box::pin(SqlStore::ping(self))
    }
}

struct AppState {
    ca_pem: String,
    store: Arc<dyn Storage>,
    ca: Option<CertKey>,
    /// The node this server runs on (its knobs and apply audit).
    root: model::node_files::NodeRoot,
    /// [`ServerConfig::version`].
    version: String,
}

#[derive(Debug, Clone)]
struct Peer {
    /// The client certificate's subject: common name and organizations.
    cert: Option<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
enum Who {
    Admin(String),
    /// A kubelet's credential: `system:node:NAME` in the group `system:nodes`.
    Node(String),
    Bootstrap(String),
    Anonymous,
}

impl Who {
    fn user(&self) -> String {
        match self {
            Who::Admin(cn) => cn.clone(),
            Who::Node(name) => format!("system:node:{name}"),
            Who::Bootstrap(id) => format!("system:bootstrap:{id}"),
            Who::Anonymous => "system:anonymous".to_string(),
        }
    }

    /// The user a client certificate names: a node's as the Node authorizer identifies
    /// it (user `system:node:NAME` and group `system:nodes`), else an admin.
    fn from_cert(cn: &str, orgs: &[String]) -> Who {
        match cn.strip_prefix("system:node:") {
            Some(name) if !name.is_empty() && orgs.iter().any(|o| o == "system:nodes") => {
                Who::Node(name.to_string())
            }
            _ => Who::Admin(cn.to_string()),
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn storage_error(e: anyhow::Error) -> Response {
    status(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        format!("storage request failed (etcd without quorum? datastore down?): {e:#}"),
    )
}

fn expired(obj: &Value) -> bool {
    obj["metadata"]["annotations"][EXPIRES_ANNOTATION]
        .as_str()
        .and_then(|s| s.parse::<i64>().ok())
        .is_some_and(|t| t <= crate::clock::now_unix())
}

impl AppState {
    async fn read(&self, key: &str) -> Result<Option<Value>> {
        Ok(match self.store.get(key).await? {
            Some(bytes) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (!expired(&v)).then_some(v)
            }
            None => None,
        })
    }

    async fn who(&self, peer: &Peer, headers: &HeaderMap) -> Who {
        if let Some((cn, orgs)) = &peer.cert {
            return Who::from_cert(cn, orgs);
        }
        let Some(token) = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return Who::Anonymous;
        };
        let Some((id, secret)) = token.trim().split_once('.') else {
            return Who::Anonymous;
        };
        let key = format!("/registry/secrets/kube-system/bootstrap-token-{id}");
        match self.read(&key).await {
            Ok(Some(obj)) if obj["stringData"]["token-secret"].as_str() == Some(secret) => {
                Who::Bootstrap(id.to_string())
            }
            _ => Who::Anonymous,
        }
    }
}

/// Whether `who` may do `verb` on `resource` `ns/name` (name empty = list/create).
fn allowed(who: &Who, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    let cluster_info = resource == "configmaps" && ns == "kube-public" && name == "cluster-info";
    match who {
        Who::Admin(_) => true,
        Who::Node(node) => cluster_info || node_may(node, verb, resource, ns, name),
        Who::Anonymous => verb == "get" && cluster_info,
        Who::Bootstrap(_) => match (verb, resource) {
            ("get", "configmaps") => cluster_info || ns == "kube-system",
            ("get", "secrets") => {
                ns == "kube-system" && (name == "kubeadm-certs" || name == "k3s-bootstrap")
            }
            ("get", "pods") | ("list", "pods") => ns == "kube-system",
            ("get", "nodes") | ("put", "nodes") => true,
            _ => false,
        },
    }
}

/// What a kubelet's credential may do, as the real server decides it: the `system:node`
/// rules the Node authorizer applies (Kubernetes' `NodeRules`: read nodes, services,
/// endpoints and pods; write its own Node, events, pods' status, evictions, leases and
/// CSRs), kubeadm's RBAC for the group `system:nodes` (get the `kubeadm-config` and
/// `kubelet-config` ConfigMaps, which `kubeadm upgrade node` reads on a worker) and the
/// NodeRestriction admission plugin (only its own Node). Secrets and other ConfigMaps are
/// the Node authorizer's graph's (those referenced by pods bound to the node): the stand-in
/// runs no pods, so none. Checked elsewhere, with the objects: listing pods needs the
/// node's own `spec.nodeName` selector ([`node_pod_selector`]), an eviction needs a pod
/// bound to the node, and a Node update must keep its taints ([`node_update_refusal`]).
/// Verbs as the stand-in spells them: `put` is create or replace.
fn node_may(node: &str, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    let read = matches!(verb, "get" | "list");
    match resource {
        "nodes" => read || (matches!(verb, "put" | "patch") && name == node),
        "pods" => read || matches!(verb, "put" | "delete"),
        "services" | "endpoints" | "runtimeclasses" | "csidrivers" => read,
        "persistentvolumes" | "persistentvolumeclaims" | "volumeattachments" => verb == "get",
        "events" => matches!(verb, "put" | "patch"),
        "leases" | "csinodes" => true,
        "certificatesigningrequests" => matches!(verb, "put" | "get" | "list"),
        "configmaps" => {
            verb == "get"
                && ns == "kube-system"
                && ["kubeadm-config", "kubelet-config"].contains(&name)
        }
        _ => false,
    }
}

/// A kubelet listing pods must select its own (`fieldSelector=spec.nodeName=NODE`), as the
/// Node authorizer requires from Kubernetes 1.32 (AuthorizeNodeWithSelectors); the refusal
/// otherwise. (Before 1.32 RBAC let a kubelet list every pod; the stand-in is the stricter.)
fn node_pod_selector(who: &Who, fields: &str) -> Option<Response> {
    let Who::Node(node) = who else { return None };
    let own = format!("spec.nodeName={node}");
    if fields.split(',').any(|f| f.trim() == own) {
        return None;
    }
    Some(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "pods is forbidden: User \"system:node:{node}\" cannot list resource \"pods\" in API group \"\" at the cluster scope: can only list/watch pods with spec.nodeName={node} field selector"
        ),
    ))
}

/// NodeRestriction on a kubelet's update of its own Node: taints and the
/// `node-restriction.kubernetes.io/` labels stay as they are (the refusal otherwise).
fn node_update_refusal(who: &Who, old: Option<&Value>, new: &Value) -> Option<Response> {
    let Who::Node(node) = who else { return None };
    let old = old?;
    let restricted = |o: &Value| -> Vec<(String, Value)> {
        o["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("node-restriction.kubernetes.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let taints = |o: &Value| o["spec"]["taints"].as_array().cloned().unwrap_or_default();
    let what = if taints(old) != taints(new) {
        "taints"
    } else if restricted(old) != restricted(new) {
        "labels with the node-restriction.kubernetes.io/ prefix"
    } else {
        return None;
    };
    Some(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("node \"{node}\" is forbidden: node \"{node}\" is not allowed to modify {what}"),
    ))
}

fn forbidden(who: &Who, verb: &str, resource: &str, ns: &str, name: &str) -> Response {
    match who {
        Who::Anonymous if !(verb == "get" && resource == "configmaps" && ns == "kube-public") => {
            status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            )
        }
        _ => status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{resource} {name:?} is forbidden: User {:?} cannot {verb} resource {resource:?} in API group \"\" in the namespace {ns:?}",
                who.user()
            ),
        ),
    }
}

type Shared = State<Arc<AppState>>;

async fn health(State(st): Shared) -> Response {
    match st.store.health().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            eprintln!("apiserver-standin: health check: storage: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n",
            )
                .into_response()
        }
    }
}

/// k3s's `/cacerts`: the cluster CA, anonymously (joiners pin it with the `K10` token hash).
async fn cacerts(State(st): Shared) -> String {
    st.ca_pem.clone()
}

/// `/version`: on a kubeadm cluster the control plane's version is the one its
/// ClusterConfiguration names in etcd, which `kubeadm upgrade apply` moves (the stand-in's
/// API servers all report it; a real one reports its own binary's until its static pod is
/// replaced by `kubeadm upgrade apply|node`). Elsewhere the stand-in's own version.
async fn version(State(st): Shared) -> Json<Value> {
    Json(discovery::version_info(&control_plane_version(&st).await))
}

/// The kube-apiserver version this stand-in claims (see `version`).
async fn control_plane_version(st: &AppState) -> String {
    let own = st.version.clone();
    match st
        .read("/registry/configmaps/kube-system/kubeadm-config")
        .await
    {
        Ok(Some(cm)) => match cm["data"]["ClusterConfiguration"].as_str() {
            Some(cc) => crate::kubeadm::upgrade_policy::cluster_version(cc, &own),
            None => own,
        },
        _ => own,
    }
}

/// `/openapi/v2`: not served (kubectl copes; see [`discovery`]).
async fn openapi_v2() -> Response {
    discovery::not_found("/openapi/v2")
}

async fn openapi_v3_root(State(st): Shared) -> Response {
    match resources::served(st.store.as_ref()).await {
        Ok(s) => discovery::plain(discovery::openapi_root(&s)),
        Err(e) => storage_error(e),
    }
}

/// `/openapi/v3/api/v1` and `/openapi/v3/apis/<group>/<version>`.
async fn openapi_v3_doc(State(st): Shared, Path(rest): Path<String>) -> Response {
    let served = match resources::served(st.store.as_ref()).await {
        Ok(s) => s,
        Err(e) => return storage_error(e),
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let (g, v) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return discovery::not_found(&format!("/openapi/v3/{rest}")),
    };
    if discovery::resource_list(&served, g, v).is_none() {
        return discovery::not_found(&format!("/openapi/v3/{rest}"));
    }
    discovery::plain(discovery::openapi_doc(&served, g, v))
}

/// Adds `jws-kubeconfig-ID` = hex HMAC-SHA256(token, kubeconfig) for each valid token, the
/// stand-in for the bootstrap signer's JWS signatures.
async fn sign_cluster_info(st: &AppState, mut obj: Value) -> Result<Value> {
    let kubeconfig = obj["data"]["kubeconfig"].as_str().unwrap_or("").to_string();
    for (_, bytes) in st
        .store
        .list("/registry/secrets/kube-system/bootstrap-token-")
        .await?
    {
        let Ok(tok) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if expired(&tok) {
            continue;
        }
        let (Some(id), Some(secret)) = (
            tok["stringData"]["token-id"].as_str(),
            tok["stringData"]["token-secret"].as_str(),
        ) else {
            continue;
        };
        obj["data"][format!("jws-kubeconfig-{id}")] =
            Value::String(token_signature(&format!("{id}.{secret}"), &kubeconfig));
    }
    Ok(obj)
}

/// The stand-in JWS: hex HMAC-SHA256 keyed with the whole token over the kubeconfig.
pub fn token_signature(token: &str, kubeconfig: &str) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(kubeconfig.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `POST /apis/certificates.k8s.io/v1/certificatesigningrequests`: signed at once (the
/// stand-in auto-approves bootstrappers' kubelet client CSRs) and returned in
/// `status.certificate` (base64 PEM).
async fn csr_post(st: &AppState, who: &Who, body: axum::body::Bytes) -> Response {
    use base64::Engine;
    let body: Value = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    if matches!(who, Who::Anonymous) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        );
    }
    let Some(ca) = &st.ca else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this apiserver stand-in has no CA key to sign with".into(),
        );
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let csr = body["spec"]["request"]
        .as_str()
        .and_then(|s| b64.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some(csr) = csr else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.request: Required value".into(),
        );
    };
    match crate::pki::sign_client_csr(ca, &csr) {
        Ok(cert) => {
            let mut out = body.clone();
            out["status"] = json!({
                "conditions": [{"type": "Approved", "reason": "AutoApproved", "message": "muster stand-in auto-approval"}],
                "certificate": b64.encode(cert.as_bytes()),
            });
            (StatusCode::CREATED, Json(out)).into_response()
        }
        Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", format!("{e:#}")),
    }
}

fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/readyz", get(health))
        .route("/livez", get(health))
        .route("/healthz", get(health))
        .route("/version", get(version))
        .route("/cacerts", get(cacerts))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_root))
        .route("/openapi/v3/{*rest}", get(openapi_v3_doc))
        .route("/api", any(objects::handle))
        .route("/api/{*rest}", any(objects::handle))
        .route("/apis", any(objects::handle))
        .route("/apis/{*rest}", any(objects::handle))
        .with_state(state)
}

/// A certificate's subject: its common name and organizations.
fn subject(der: &[u8]) -> (String, Vec<String>) {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else {
        return ("unknown".to_string(), Vec::new());
    };
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    let orgs = c
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    (cn, orgs)
}

/// Serves until SIGTERM/SIGINT.
pub async fn serve(cfg: ServerConfig) -> Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let provider = crate::client::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::client::parse_certs(&cfg.client_ca.cert_pem)? {
        roots.add(c)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            crate::client::parse_certs(&cfg.serving.cert_pem)?,
            crate::client::parse_key(&cfg.serving.key_pem)?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let state = Arc::new(AppState {
        ca_pem: cfg.client_ca.cert_pem.clone(),
        store: cfg.storage.clone(),
        ca: cfg.client_ca_has_key.then(|| cfg.client_ca.clone()),
        root: crate::node_root(),
        version: cfg.version.clone(),
    });
    let ns_state = state.clone();
    tokio::spawn(async move {
        // The real server's system namespaces controller: until the store answers, retry.
        while let Err(e) = objects::ensure_system_namespaces(&ns_state).await {
            eprintln!("apiserver-standin: system namespaces not created yet: {e:#}");
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
    let router = app(state);
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    eprintln!("apiserver-standin: serving https://{}", cfg.bind);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = term.recv() => { eprintln!("apiserver-standin: SIGTERM, exiting"); return Ok(()) }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| subject(c));
            let svc = TowerToHyperService::new(router.layer(Extension(Peer { cert })));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubelet_is_a_node_only_in_the_nodes_group_and_may_what_node_rules_say() {
        let nodes = vec!["system:nodes".to_string()];
        assert!(matches!(Who::from_cert("system:node:w1", &nodes), Who::Node(n) if n == "w1"));
        assert!(matches!(
            Who::from_cert("system:node:w1", &[]),
            Who::Admin(_)
        ));
        assert!(matches!(
            Who::from_cert("kubernetes-admin", &nodes),
            Who::Admin(_)
        ));
        let w1 = Who::Node("w1".into());
        for (verb, resource, ns, name, want) in [
            ("patch", "nodes", "", "w1", true),
            ("patch", "nodes", "", "w2", false),
            ("list", "nodes", "", "", true),
            ("list", "pods", "", "", true),
            ("get", "secrets", "kube-system", "kubeadm-certs", false),
            ("get", "configmaps", "kube-system", "kubelet-config", true),
            ("get", "configmaps", "kube-system", "coredns", false),
            ("get", "configmaps", "kube-public", "cluster-info", true),
            ("put", "leases", "kube-node-lease", "w1", true),
            ("put", "daemonsets", "kube-system", "x", false),
        ] {
            assert_eq!(
                allowed(&w1, verb, resource, ns, name),
                want,
                "{verb} {resource} {ns}/{name}"
            );
        }
        assert!(node_pod_selector(&w1, "spec.nodeName=w1").is_none());
        assert!(node_pod_selector(&w1, "status.phase=Running,spec.nodeName=w1").is_none());
        assert!(node_pod_selector(&w1, "spec.nodeName=w2").is_some());
        assert!(node_pod_selector(&w1, "").is_some());
        assert!(node_pod_selector(&Who::Admin("a".into()), "").is_none());
        let node = |taints: Value| json!({"metadata": {"labels": {}}, "spec": {"taints": taints}});
        let old = node(json!([]));
        assert!(
            node_update_refusal(
                &w1,
                Some(&old),
                &json!({"metadata": {}, "spec": {"unschedulable": true}})
            )
            .is_none()
        );
        assert!(
            node_update_refusal(
                &w1,
                Some(&old),
                &node(json!([{"key": "k", "effect": "NoSchedule"}]))
            )
            .is_some()
        );
        assert!(
            node_update_refusal(
                &w1,
                None,
                &node(json!([{"key": "k", "effect": "NoSchedule"}]))
            )
            .is_none()
        );
    }
}
