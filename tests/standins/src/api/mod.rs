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
//! Authentication: a client certificate signed by the cluster CA is an admin; a bearer
//! bootstrap token `ID.SECRET` that matches an unexpired `bootstrap-token-ID` Secret is a
//! bootstrapper; anything else is anonymous.

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
    cert_cn: Option<String>,
}

#[derive(Debug, Clone)]
enum Who {
    Admin(String),
    Bootstrap(String),
    Anonymous,
}

impl Who {
    fn user(&self) -> String {
        match self {
            Who::Admin(cn) => cn.clone(),
            Who::Bootstrap(id) => format!("system:bootstrap:{id}"),
            Who::Anonymous => "system:anonymous".to_string(),
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
        if let Some(cn) = &peer.cert_cn {
            return Who::Admin(cn.clone());
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

fn common_name(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string())
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
            let cert_cn = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| common_name(c));
            let svc = TowerToHyperService::new(router.layer(Extension(Peer { cert_cn })));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
