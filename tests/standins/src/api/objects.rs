//! The REST surface over every served resource: `/api/v1/...` and
//! `/apis/<group>/<version>/...`, cluster-scoped (`<resource>[/<name>]`) and namespaced
//! (`namespaces/<ns>/<resource>[/<name>]`, or `<resource>` across all namespaces for a
//! list). GET (object, list, or Table), POST (create), PUT (replace), PATCH (server-side
//! apply, merge patch), DELETE, and a quiet `watch`.
//!
//! Strict where the real server is: a resource not served is a 404 (so a custom resource
//! before its CRD is established is refused); a namespaced object in a namespace that does
//! not exist is a 404 `namespaces "X" not found`; create of an existing name is a 409; PUT
//! with a stale `metadata.resourceVersion` is a 409; apply without `fieldManager` is a 422;
//! a CRD that fails the real server's basic checks is a 422. Deleting a namespace deletes
//! what is in it; deleting a CRD deletes its custom resources.
//!
//! Lenient (stand-in): no schema validation; PUT writes `status` too (the stand-in kubelet
//! writes Node status that way); a strategic merge patch is applied as a JSON merge patch;
//! a watch sends no events (it stays open until `timeoutSeconds`, then ends).

use super::apply::{self, Refusal};
use super::resources::{self, CRD_GROUP, Resource};
use super::{AppState, Peer, Who, discovery, status, storage_error, table};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Namespaces the real server keeps (its system namespaces controller): always there.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn refused(r: Refusal) -> Response {
    status(
        StatusCode::from_u16(r.code).unwrap_or(StatusCode::BAD_REQUEST),
        r.reason,
        r.message,
    )
}

fn not_found(what: &str, name: &str) -> Response {
    let mut r = status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{what} {name:?} not found"),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn no_such_resource() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
    )
}

/// The query parameters, undecoded beyond `+`/`%2C`/`%3D`/`%2F` (all the stand-in needs).
fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace('+', " ");
            (k.to_string(), v)
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    /// `POST .../namespaces/NS/pods/NAME/eviction`: namespace, pod
    Eviction(String, String),
    /// group, version, resource, namespace, name
    Object(String, String, String, Option<String>, Option<String>),
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["apis", g] => return Route::Group((*g).to_string()),
        ["api", v] => return Route::Resources(String::new(), (*v).to_string()),
        ["apis", g, v] => return Route::Resources((*g).to_string(), (*v).to_string()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let o = |r: &str, ns: Option<&str>, name: Option<&str>| {
        Route::Object(
            group.to_string(),
            version.to_string(),
            r.to_string(),
            ns.map(str::to_string),
            name.map(str::to_string),
        )
    };
    match rest {
        ["namespaces", ns, "pods", name, "eviction"] if group.is_empty() => {
            Route::Eviction((*ns).to_string(), (*name).to_string())
        }
        [r] => o(r, None, None),
        [r, name] => o(r, None, Some(name)),
        ["namespaces", ns, r] => o(r, Some(ns), None),
        ["namespaces", ns, r, name] => o(r, Some(ns), Some(name)),
        _ => Route::Unknown,
    }
}

/// Every `/api` and `/apis` request.
pub(super) async fn handle(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = st.who(&peer, &headers).await;
    let route = route(uri.path());
    if !matches!(route, Route::Object(..) | Route::Eviction(..)) && matches!(who, Who::Anonymous) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        );
    }
    let served = match resources::served(st.store.as_ref()).await {
        Ok(s) => s,
        Err(e) => return storage_error(e),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let doc = |v: Option<Value>| match v {
        Some(v) => discovery::plain(v),
        None => discovery::not_found(uri.path()),
    };
    match route {
        Route::CoreVersions => doc(Some(discovery::core_versions(&host))),
        Route::Groups => doc(Some(discovery::group_list(&served))),
        Route::Group(g) => doc(discovery::group(&served, &g)),
        Route::Resources(g, v) => doc(discovery::resource_list(&served, &g, &v)),
        Route::Unknown => no_such_resource(),
        Route::Eviction(ns, name) if method == Method::POST => {
            super::eviction::evict(&st, &who, &ns, &name).await
        }
        Route::Eviction(..) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the eviction subresource takes POST only".into(),
        ),
        Route::Object(g, v, r, ns, name) => {
            let Some(res) = resources::find(&served, &g, &v, &r).cloned() else {
                return no_such_resource();
            };
            if ns.is_some() && !res.namespaced {
                return no_such_resource();
            }
            let q = query(&uri);
            let req = Req {
                st: &st,
                who: &who,
                res: &res,
                ns: ns.as_deref(),
                q: &q,
                headers: &headers,
            };
            match (method, name) {
                (Method::GET, None) => req.list(&served).await,
                (Method::GET, Some(n)) => req.get(&n).await,
                (Method::POST, None) if res.group == "certificates.k8s.io" => {
                    super::csr_post(&st, &who, body).await
                }
                (Method::POST, None) => req.create(&body).await,
                (Method::PUT, Some(n)) => req.replace(&n, &body).await,
                (Method::PATCH, Some(n)) => req.patch(&n, &body).await,
                (Method::DELETE, Some(n)) => req.delete(&n, &served).await,
                (m, _) => status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{m} is not supported on this path by the API stand-in"),
                ),
            }
        }
    }
}

struct Req<'a> {
    st: &'a AppState,
    who: &'a Who,
    res: &'a Resource,
    ns: Option<&'a str>,
    q: &'a [(String, String)],
    headers: &'a HeaderMap,
}

impl Req<'_> {
    fn nsv(&self) -> &str {
        self.ns.unwrap_or("")
    }

    fn check(&self, verb: &str, name: &str) -> Option<Response> {
        (!super::allowed(self.who, verb, &self.res.plural, self.nsv(), name))
            .then(|| super::forbidden(self.who, verb, &self.res.plural, self.nsv(), name))
    }

    fn what(&self) -> String {
        if self.res.group.is_empty() {
            self.res.plural.clone()
        } else {
            format!("{}.{}", self.res.plural, self.res.group)
        }
    }

    /// A namespaced write needs its namespace (404 otherwise, like the real server).
    async fn namespace_present(&self) -> Result<(), Response> {
        let Some(ns) = self.ns.filter(|_| self.res.namespaced) else {
            if self.res.namespaced {
                return Err(no_such_resource());
            }
            return Ok(());
        };
        if SYSTEM_NAMESPACES.contains(&ns) {
            return Ok(());
        }
        match self.st.read(&format!("/registry/namespaces/{ns}")).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(not_found("namespaces", ns)),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn get(&self, name: &str) -> Response {
        if let Some(r) = self.check("get", name) {
            return r;
        }
        let obj = match self.st.read(&self.res.key(self.ns, name)).await {
            Ok(Some(o)) => o,
            Ok(None) => return not_found(&self.what(), name),
            Err(e) => return storage_error(e),
        };
        let cluster_info = self.res.plural == "configmaps"
            && self.nsv() == "kube-public"
            && name == "cluster-info";
        let obj = if cluster_info {
            match super::sign_cluster_info(self.st, obj).await {
                Ok(o) => o,
                Err(e) => return storage_error(e),
            }
        } else {
            obj
        };
        let obj = match self.as_read(vec![obj]).await {
            Ok(mut v) => v.remove(0),
            Err(e) => return storage_error(e),
        };
        if table::wanted(self.headers) {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("1")
                .to_string();
            return Json(table::render(self.res, &[obj], &rv)).into_response();
        }
        Json(obj).into_response()
    }

    /// Objects as readers see them: Nodes not Ready without a pod network (`node_ready`),
    /// DaemonSets and Deployments with their rollout from the Nodes (`rollout`).
    async fn as_read(&self, objs: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        let nodes = self.res.group.is_empty() && self.res.plural == "nodes";
        let rolled = self.res.group == "apps"
            && matches!(self.res.kind.as_str(), "DaemonSet" | "Deployment");
        if !(nodes || rolled) {
            return Ok(objs);
        }
        let ds = self.st.store.list("/registry/daemonsets/").await?;
        let stored: Vec<Value> = self
            .st
            .store
            .list("/registry/minions/")
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let cni = super::node_ready::cni_installed(ds.iter().map(|(k, _)| k.as_str()))
            || super::node_ready::embedded_cni(&stored);
        if nodes {
            return Ok(objs
                .into_iter()
                .map(|n| super::node_ready::gate(n, cni))
                .collect());
        }
        let gated: Vec<Value> = stored
            .into_iter()
            .map(|n| super::node_ready::gate(n, cni))
            .collect();
        let count = super::rollout::count(&gated);
        Ok(objs
            .into_iter()
            .map(|o| super::rollout::with_status(o, &self.res.kind, count))
            .collect())
    }

    async fn list(&self, _served: &[Resource]) -> Response {
        if let Some(r) = self.check("list", "") {
            return r;
        }
        if self.res.group.is_empty()
            && self.res.plural == "pods"
            && let Some(r) =
                super::node_pod_selector(self.who, param(self.q, "fieldSelector").unwrap_or(""))
        {
            return r;
        }
        if matches!(param(self.q, "watch"), Some("true" | "1")) {
            return quiet_watch(param(self.q, "timeoutSeconds"));
        }
        let kvs = match self.st.store.list(&self.res.prefix(self.ns)).await {
            Ok(kvs) => kvs,
            Err(e) => return storage_error(e),
        };
        let fields = param(self.q, "fieldSelector").unwrap_or("");
        let labels = param(self.q, "labelSelector").unwrap_or("");
        let items: Vec<Value> = kvs
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Value>(&v).ok())
            .filter(|v| !super::expired(v))
            .filter(|v| selects_fields(fields, v) && selects_labels(labels, v))
            .collect();
        let items = match self.as_read(items).await {
            Ok(v) => v,
            Err(e) => return storage_error(e),
        };
        let rv = apply::resource_version();
        if table::wanted(self.headers) {
            return Json(table::render(self.res, &items, &rv)).into_response();
        }
        Json(json!({
            "kind": format!("{}List", self.res.kind),
            "apiVersion": self.res.api_version(),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }))
        .into_response()
    }

    async fn create(&self, body: &[u8]) -> Response {
        let mut obj = match apply::parse_body(body) {
            Ok(o) => o,
            Err(r) => return refused(r),
        };
        let name = match (
            obj["metadata"]["name"].as_str(),
            obj["metadata"]["generateName"].as_str(),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                format!("{prefix}{}", &hex::encode(rand::random::<[u8; 3]>())[..5])
            }
            _ => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required".into(),
                );
            }
        };
        // The stand-ins' own callers create with verb "put" in `allowed`.
        if let Some(r) = self.check("put", &name) {
            return r;
        }
        if let Err(r) = self.namespace_present().await {
            return r;
        }
        if let Err(r) = self.check_kind(&name, &obj) {
            return refused(r);
        }
        let key = self.res.key(self.ns, &name);
        match self.st.read(&key).await {
            Ok(Some(_)) => {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{} {name:?} already exists", self.what()),
                );
            }
            Ok(None) => {}
            Err(e) => return storage_error(e),
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let obj = apply::stamp(self.res, self.ns, &name, None, obj);
        self.store(&key, obj, StatusCode::CREATED).await
    }

    fn check_kind(&self, name: &str, obj: &Value) -> Result<(), Refusal> {
        if self.res.group == CRD_GROUP && self.res.plural == "customresourcedefinitions" {
            apply::check_crd(name, obj)?;
        }
        Ok(())
    }

    async fn replace(&self, name: &str, body: &[u8]) -> Response {
        if let Some(r) = self.check("put", name) {
            return r;
        }
        let obj = match apply::parse_body(body) {
            Ok(o) if o.is_object() => o,
            Ok(_) => {
                return refused(Refusal {
                    code: 400,
                    reason: "BadRequest",
                    message: "the body must be an object".into(),
                });
            }
            Err(r) => return refused(r),
        };
        if let Err(r) = self.namespace_present().await {
            return r;
        }
        if let Err(r) = self.check_kind(name, &obj) {
            return refused(r);
        }
        let key = self.res.key(self.ns, name);
        let existing = match self.st.read(&key).await {
            Ok(e) => e,
            Err(e) => return storage_error(e),
        };
        if let (Some(want), Some(e)) = (obj["metadata"]["resourceVersion"].as_str(), &existing)
            && e["metadata"]["resourceVersion"].as_str() != Some(want)
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    self.what()
                ),
            );
        }
        if let Some(r) = self.node_restriction(existing.as_ref(), &obj) {
            return r;
        }
        let code = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let obj = apply::stamp(self.res, self.ns, name, existing.as_ref(), obj);
        self.store(&key, obj, code).await
    }

    /// NodeRestriction on a kubelet's write of its Node ([`super::node_update_refusal`]).
    fn node_restriction(&self, existing: Option<&Value>, new: &Value) -> Option<Response> {
        if !(self.res.group.is_empty() && self.res.plural == "nodes") {
            return None;
        }
        super::node_update_refusal(self.who, existing, new)
    }

    async fn patch(&self, name: &str, body: &[u8]) -> Response {
        if let Some(r) = self.check("patch", name) {
            return r;
        }
        let ctype = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let patch = match apply::parse_body(body) {
            Ok(p) => p,
            Err(r) => return refused(r),
        };
        let key = self.res.key(self.ns, name);
        let existing = match self.st.read(&key).await {
            Ok(e) => e,
            Err(e) => return storage_error(e),
        };
        let merged = match ctype.as_str() {
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                let Some(manager) = param(self.q, "fieldManager").filter(|m| !m.is_empty()) else {
                    return status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                    );
                };
                let force = matches!(param(self.q, "force"), Some("true" | "1"));
                if let Err(r) = apply::check_identity(self.res, self.ns, name, &patch) {
                    return refused(r);
                }
                if let Err(r) = self.namespace_present().await {
                    return r;
                }
                if let Err(r) = self.check_kind(name, &patch) {
                    return refused(r);
                }
                let step = super::apply_audit::hang_step(&self.res.kind, name);
                if crate::knobs::Knobs::load(&self.st.root).is_ok_and(|k| k.holds(&step)) {
                    eprintln!("apiserver-standin: holding the apply of {step} (knob hang_at)");
                    std::future::pending::<()>().await;
                }
                match apply::apply(self.res, existing.as_ref(), &patch, manager, force) {
                    Ok(o) => {
                        super::apply_audit::record(
                            &self.st.root,
                            manager,
                            &self.res.kind,
                            self.ns,
                            name,
                        );
                        o
                    }
                    Err(r) => return refused(r),
                }
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let Some(mut obj) = existing.clone() else {
                    return not_found(&self.what(), name);
                };
                apply::merge_patch(&mut obj, &patch);
                obj
            }
            other => {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("the API stand-in does not take {other:?} patches"),
                );
            }
        };
        if existing.as_ref() == Some(&merged) {
            return Json(merged).into_response();
        }
        if let Some(r) = self.node_restriction(existing.as_ref(), &merged) {
            return r;
        }
        let code = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let obj = apply::stamp(self.res, self.ns, name, existing.as_ref(), merged);
        self.store(&key, obj, code).await
    }

    async fn store(&self, key: &str, obj: Value, code: StatusCode) -> Response {
        let bytes = match serde_json::to_vec(&obj) {
            Ok(b) => b,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
        };
        match self.st.store.put(key, &bytes).await {
            Ok(()) => (code, Json(obj)).into_response(),
            Err(e) => storage_error(e),
        }
    }

    async fn delete(&self, name: &str, served: &[Resource]) -> Response {
        if let Some(r) = self.check("delete", name) {
            return r;
        }
        let key = self.res.key(self.ns, name);
        let existing = match self.st.read(&key).await {
            Ok(e) => e,
            Err(e) => return storage_error(e),
        };
        match self.st.store.delete(&key).await {
            Ok(true) => {}
            Ok(false) => return not_found(&self.what(), name),
            Err(e) => return storage_error(e),
        }
        // What lives inside goes with it (the real server's namespace and CRD finalizers).
        let inside: Vec<String> = match (self.res.group.as_str(), self.res.plural.as_str()) {
            ("", "namespaces") => served
                .iter()
                .filter(|r| r.namespaced)
                .map(|r| r.prefix(Some(name)))
                .collect(),
            (CRD_GROUP, "customresourcedefinitions") => existing
                .as_ref()
                .map(resources::of_crd)
                .unwrap_or_default()
                .iter()
                .map(|r| r.prefix(None))
                .collect(),
            _ => Vec::new(),
        };
        for prefix in inside {
            match self.st.store.list(&prefix).await {
                Ok(kvs) => {
                    for (k, _) in kvs {
                        if let Err(e) = self.st.store.delete(&k).await {
                            return storage_error(e);
                        }
                    }
                }
                Err(e) => return storage_error(e),
            }
        }
        Json(existing.unwrap_or_else(|| json!({"kind": "Status", "status": "Success"})))
            .into_response()
    }
}

/// `fieldSelector` terms `metadata.name=X`, `metadata.namespace=X`, `spec.nodeName=X`
/// (`==`, `!=` too).
fn selects_fields(sel: &str, obj: &Value) -> bool {
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        let (k, v, eq) = match t.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match t.split_once("==").or_else(|| t.split_once('=')) {
                Some((k, v)) => (k, v, true),
                None => return true,
            },
        };
        let have = match k {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            "spec.nodeName" => obj["spec"]["nodeName"].as_str(),
            _ => return true,
        };
        (have == Some(v)) == eq
    })
}

/// `labelSelector` terms `k=v`, `k==v`, `k!=v`, `k`, `!k`.
fn selects_labels(sel: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        if let Some((k, v)) = t.split_once("!=") {
            labels[k].as_str() != Some(v)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            labels[k].as_str() == Some(v)
        } else if let Some(k) = t.strip_prefix('!') {
            labels.get(k).is_none()
        } else {
            labels.get(t).is_some()
        }
    })
}

/// A watch that stays open without events until its timeout (the stand-in does not notify
/// changes; clients re-list).
fn quiet_watch(timeout: Option<&str>) -> Response {
    let secs = timeout
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(60)
        .min(300);
    let body = Quiet {
        sleep: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(secs))),
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::new(body),
    )
        .into_response()
}

struct Quiet {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Quiet {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        self.sleep.as_mut().poll(cx).map(|()| None)
    }
}

/// Creates the system namespaces that are missing (the real server's controller does);
/// retried by the caller until the store answers.
pub(super) async fn ensure_system_namespaces(st: &AppState) -> anyhow::Result<()> {
    let Some(res) = resources::builtin()
        .into_iter()
        .find(|r| r.group.is_empty() && r.plural == "namespaces")
    else {
        return Ok(());
    };
    for ns in SYSTEM_NAMESPACES {
        let key = res.key(None, ns);
        if st.read(&key).await?.is_none() {
            let obj = apply::stamp(&res, None, ns, None, json!({"metadata": {}}));
            st.store.put(&key, &serde_json::to_vec(&obj)?).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let o = |g: &str, r: &str, ns: Option<&str>, n: Option<&str>| {
            Route::Object(
                g.into(),
                "v1".into(),
                r.into(),
                ns.map(Into::into),
                n.map(Into::into),
            )
        };
        assert_eq!(route("/api"), Route::CoreVersions);
        assert_eq!(route("/apis"), Route::Groups);
        assert_eq!(route("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            route("/api/v1"),
            Route::Resources(String::new(), "v1".into())
        );
        assert_eq!(route("/api/v1/nodes"), o("", "nodes", None, None));
        assert_eq!(
            route("/api/v1/namespaces/x"),
            o("", "namespaces", None, Some("x"))
        );
        assert_eq!(
            route("/api/v1/namespaces/x/configmaps/c"),
            o("", "configmaps", Some("x"), Some("c"))
        );
        assert_eq!(
            route("/apis/example.com/v1/namespaces/x/widgets"),
            o("example.com", "widgets", Some("x"), None)
        );
        assert_eq!(route("/api/v1/namespaces/x/pods/p/log"), Route::Unknown);
        assert_eq!(
            route("/api/v1/namespaces/x/pods/p/eviction"),
            Route::Eviction("x".into(), "p".into())
        );
    }

    #[test]
    fn selectors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"k": "v"}}});
        assert!(selects_fields("metadata.name=a", &obj));
        assert!(!selects_fields("metadata.name=b", &obj));
        assert!(selects_fields(
            "metadata.name!=b,metadata.namespace==n",
            &obj
        ));
        assert!(selects_labels("k=v", &obj));
        assert!(selects_labels("k", &obj));
        assert!(!selects_labels("!k", &obj));
        assert!(!selects_labels("k!=v", &obj));
        assert!(selects_labels("", &obj));
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "wk-1"}});
        assert!(selects_fields("spec.nodeName=wk-1", &pod));
        assert!(!selects_fields("spec.nodeName=wk-2", &pod));
    }
}
