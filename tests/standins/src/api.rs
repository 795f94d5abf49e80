//! The apiserver stand-in: TLS on ADDR:6443 with the apiserver certificate, `/readyz` and
//! `/livez` backed by a read from its storage, and a tiny Kubernetes-shaped JSON API kept
//! in a [`Storage`]: etcd through its v3 JSON gateway (kubeadm, k3s with embedded etcd) or
//! a kine-like table in a real MariaDB (k3s on an external SQL datastore, [`crate::sql`]).
//!
//! Objects live under `/registry/minions/NAME` (nodes) and `/registry/RESOURCE/NS/NAME`
//! (`configmaps`, `secrets`, `pods`). An object whose annotation
//! `standin.muster.dev/expires-unix` is in the past (stand-in clock) reads as absent, like a
//! bootstrap token or the `kubeadm-certs` Secret after the token cleaner removed it.
//!
//! Authentication: a client certificate signed by the cluster CA is an admin; a bearer
//! bootstrap token `ID.SECRET` that matches an unexpired `bootstrap-token-ID` Secret is a
//! bootstrapper; anything else is anonymous.

use crate::etcd::Gateway;
use crate::pki::CertKey;
use crate::sql::SqlStore;
use anyhow::{Context, Result};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

fn key_for(resource: &str, ns: Option<&str>, name: &str) -> String {
    match (resource, ns) {
        ("nodes", _) => format!("/registry/minions/{name}"),
        (r, Some(ns)) => format!("/registry/{r}/{ns}/{name}"),
        (r, None) => format!("/registry/{r}/{name}"),
    }
}

const RESOURCES: &[&str] = &["configmaps", "secrets", "pods"];

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
        let key = key_for(
            "secrets",
            Some("kube-system"),
            &format!("bootstrap-token-{id}"),
        );
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

async fn version() -> Json<Value> {
    Json(json!({ "major": "1", "minor": "31", "gitVersion": "v1.31.0-muster-standin" }))
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

async fn get_one(
    st: &AppState,
    who: &Who,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> Response {
    let nsv = ns.unwrap_or("");
    if !allowed(who, "get", resource, nsv, name) {
        return forbidden(who, "get", resource, nsv, name);
    }
    match st.read(&key_for(resource, ns, name)).await {
        Ok(Some(obj)) => {
            if resource == "configmaps" && nsv == "kube-public" && name == "cluster-info" {
                match sign_cluster_info(st, obj).await {
                    Ok(o) => Json(o).into_response(),
                    Err(e) => storage_error(e),
                }
            } else {
                Json(obj).into_response()
            }
        }
        Ok(None) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} {name:?} not found"),
        ),
        Err(e) => storage_error(e),
    }
}

async fn list(st: &AppState, who: &Who, resource: &str, ns: Option<&str>) -> Response {
    let nsv = ns.unwrap_or("");
    if !allowed(who, "list", resource, nsv, "") {
        return forbidden(who, "list", resource, nsv, "");
    }
    let prefix = match (resource, ns) {
        ("nodes", _) => "/registry/minions/".to_string(),
        (r, Some(ns)) => format!("/registry/{r}/{ns}/"),
        (r, None) => format!("/registry/{r}/"),
    };
    match st.store.list(&prefix).await {
        Ok(kvs) => {
            let items: Vec<Value> = kvs
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice::<Value>(&v).ok())
                .filter(|v| !expired(v))
                .collect();
            Json(json!({ "kind": "List", "apiVersion": "v1", "items": items })).into_response()
        }
        Err(e) => storage_error(e),
    }
}

async fn write(
    st: &AppState,
    who: &Who,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
    mut body: Value,
) -> Response {
    let nsv = ns.unwrap_or("");
    let name = match name {
        Some(n) => n.to_string(),
        None => match body["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required".into(),
                );
            }
        },
    };
    if !allowed(
        who,
        if verb == "create" { "put" } else { verb },
        resource,
        nsv,
        &name,
    ) {
        return forbidden(who, verb, resource, nsv, &name);
    }
    if !body.is_object() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "body must be an object".into(),
        );
    }
    body["metadata"]["name"] = Value::String(name.clone());
    if let Some(ns) = ns {
        body["metadata"]["namespace"] = Value::String(ns.to_string());
    }
    let key = key_for(resource, ns, &name);
    if verb == "create" {
        match st.read(&key).await {
            Ok(Some(_)) => {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{resource} {name:?} already exists"),
                );
            }
            Ok(None) => {}
            Err(e) => return storage_error(e),
        }
    }
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    match st.store.put(&key, &bytes).await {
        Ok(()) => (
            if verb == "create" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(body),
        )
            .into_response(),
        Err(e) => storage_error(e),
    }
}

async fn delete(
    st: &AppState,
    who: &Who,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> Response {
    let nsv = ns.unwrap_or("");
    if !allowed(who, "delete", resource, nsv, name) {
        return forbidden(who, "delete", resource, nsv, name);
    }
    match st.store.delete(&key_for(resource, ns, name)).await {
        Ok(true) => Json(json!({"kind": "Status", "status": "Success"})).into_response(),
        Ok(false) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} {name:?} not found"),
        ),
        Err(e) => storage_error(e),
    }
}

fn bad_resource(r: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "the server could not find the requested resource {r:?} (stand-in serves configmaps, secrets, pods, nodes)"
        ),
    )
}

async fn ns_collection_get(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((ns, resource)): Path<(String, String)>,
) -> Response {
    if !RESOURCES.contains(&resource.as_str()) {
        return bad_resource(&resource);
    }
    let who = st.who(&peer, &headers).await;
    list(&st, &who, &resource, Some(&ns)).await
}

async fn ns_collection_post(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((ns, resource)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if !RESOURCES.contains(&resource.as_str()) {
        return bad_resource(&resource);
    }
    let who = st.who(&peer, &headers).await;
    write(&st, &who, "create", &resource, Some(&ns), None, body).await
}

async fn ns_item_get(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    if !RESOURCES.contains(&resource.as_str()) {
        return bad_resource(&resource);
    }
    let who = st.who(&peer, &headers).await;
    get_one(&st, &who, &resource, Some(&ns), &name).await
}

async fn ns_item_put(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if !RESOURCES.contains(&resource.as_str()) {
        return bad_resource(&resource);
    }
    let who = st.who(&peer, &headers).await;
    write(&st, &who, "put", &resource, Some(&ns), Some(&name), body).await
}

async fn ns_item_delete(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    if !RESOURCES.contains(&resource.as_str()) {
        return bad_resource(&resource);
    }
    let who = st.who(&peer, &headers).await;
    delete(&st, &who, &resource, Some(&ns), &name).await
}

async fn nodes_list(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let who = st.who(&peer, &headers).await;
    list(&st, &who, "nodes", None).await
}

async fn node_get(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let who = st.who(&peer, &headers).await;
    get_one(&st, &who, "nodes", None, &name).await
}

async fn node_put(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let who = st.who(&peer, &headers).await;
    write(&st, &who, "put", "nodes", None, Some(&name), body).await
}

async fn node_delete(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let who = st.who(&peer, &headers).await;
    delete(&st, &who, "nodes", None, &name).await
}

/// `POST /apis/certificates.k8s.io/v1/certificatesigningrequests`: signed at once (the
/// stand-in auto-approves bootstrappers' kubelet client CSRs) and returned in
/// `status.certificate` (base64 PEM).
async fn csr_post(
    State(st): Shared,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    use base64::Engine;
    let who = st.who(&peer, &headers).await;
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
        .route("/api/v1/nodes", get(nodes_list))
        .route(
            "/api/v1/nodes/{name}",
            get(node_get).put(node_put).delete(node_delete),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}",
            get(ns_collection_get).post(ns_collection_post),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}/{name}",
            get(ns_item_get).put(ns_item_put).delete(ns_item_delete),
        )
        .route(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            post(csr_post),
        )
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
