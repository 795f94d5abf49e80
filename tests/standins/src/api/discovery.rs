//! Discovery as real clients read it: `/api` (APIVersions), `/apis` (APIGroupList),
//! `/apis/<group>` (APIGroup), `/api/v1` and `/apis/<group>/<version>` (APIResourceList),
//! `/version`, and a minimal `/openapi/v3`.
//!
//! `/api` and `/apis` always answer in the unaggregated form with `Content-Type:
//! application/json`, even when the client asks first for the aggregated
//! `APIGroupDiscoveryList`: client-go picks the decoder by the response's content type and
//! falls back to the per-group-version documents (what a server without aggregated
//! discovery does).
//!
//! `/openapi/v2` is a 404. `/openapi/v3` lists one document per served group version; each
//! document declares, per kind, a PATCH operation with its `fieldValidation` query
//! parameter and nothing else (no schemas): enough for kubectl to leave field validation to
//! the server (`fieldValidation=Strict`) instead of downloading schemas. The stand-in
//! itself does not validate fields against schemas.

use super::resources::{self, Resource};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The Kubernetes version the stand-in claims (`MUSTER_STANDIN_K8S_VERSION`, like the
/// kubeadm and kubelet stand-ins; default v1.31.0).
pub fn kubernetes_version() -> String {
    std::env::var("MUSTER_STANDIN_K8S_VERSION").unwrap_or_else(|_| "v1.31.0".into())
}

/// `/version` in the real shape (`version.Info`).
pub fn version() -> Value {
    version_info(&kubernetes_version())
}

/// `/version` for the Kubernetes version `git` (`v1.32.1`).
pub fn version_info(git: &str) -> Value {
    let mut parts = git.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": git,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Plain JSON, whatever the client asked for (see the module doc).
pub fn plain(v: Value) -> Response {
    let mut r = axum::Json(v).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv).unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(served: &[Resource]) -> Value {
    let groups: Vec<Value> = resources::groups(served)
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/<group>`, if served.
pub fn group(served: &[Resource], group: &str) -> Option<Value> {
    resources::groups(served)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut e = group_entry(g, vs);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            e
        })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(served: &[Resource], group: &str, version: &str) -> Option<Value> {
    let list: Vec<Value> = served
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(Resource::discovery)
        .collect();
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list,
    }))
}

/// A stable short hash of a document (clients cache v3 documents by it).
fn hash(v: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(v.to_string().as_bytes()))
}

/// The `/openapi/v3` root: one entry per served group version.
pub fn openapi_root(served: &[Resource]) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", hash(&openapi_doc(served, "", "v1")))}),
    );
    for (g, vs) in resources::groups(served) {
        for v in vs {
            let doc = openapi_doc(served, &g, &v);
            paths.insert(
                format!("apis/{g}/{v}"),
                json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({ "paths": paths })
}

/// One group version's OpenAPI v3 document: PATCH operations with their query parameters.
pub fn openapi_doc(served: &[Resource], group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in served
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let q = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                    "parameters": [q("dryRun"), q("fieldManager"), q("fieldValidation"), q("force")],
                    "responses": {"200": {"description": "OK"}},
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (muster API stand-in)", "version": kubernetes_version()},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// A 404 `Status` for a discovery path the stand-in does not serve.
pub fn not_found(path: &str) -> Response {
    super::status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let served = resources::builtin();
        let l = group_list(&served);
        assert_eq!(l["kind"], "APIGroupList");
        let apps = l["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "apps")
            .unwrap();
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
        assert!(
            l["groups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["name"] != ""),
            "the core group is under /api, not /apis"
        );
        let core = resource_list(&served, "", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        let nodes = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "nodes")
            .unwrap();
        assert_eq!(nodes["namespaced"], false);
        assert_eq!(nodes["kind"], "Node");
        assert!(resource_list(&served, "example.com", "v1").is_none());
        let root = openapi_root(&served);
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc = openapi_doc(&served, "apps", "v1");
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == "fieldValidation")
        );
    }

    #[test]
    fn version_in_the_real_shape() {
        let v = version();
        assert_eq!(v["major"], "1");
        assert!(v["gitVersion"].as_str().unwrap().starts_with('v'));
        assert_eq!(v["platform"], "linux/amd64");
    }
}
