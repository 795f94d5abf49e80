//! What the API stand-in serves: the built-in resources it knows by name, and the kinds of
//! the CustomResourceDefinitions stored in it that are `Established`. One table answers
//! discovery, maps a URL's resource to its storage keys, and a manifest's kind to its
//! resource.
//!
//! Storage keys follow the real kube-apiserver's layout in etcd: core and built-in group
//! resources under `/registry/<resource>/[<namespace>/]<name>` (Nodes under `minions`,
//! Services under `services/specs`), CRDs and custom resources under
//! `/registry/<group>/<resource>/[<namespace>/]<name>`.

use super::Storage;
use anyhow::Result;
use serde_json::{Value, json};

/// The group of CustomResourceDefinitions.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// One served resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The URL and storage name (`configmaps`).
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Defined by a CRD (stored under its group).
    pub custom: bool,
}

impl Resource {
    /// `v1` or `GROUP/VERSION`, as in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn base(&self) -> String {
        match (self.group.as_str(), self.plural.as_str()) {
            ("", "nodes") => "/registry/minions".to_string(),
            ("", "services") => "/registry/services/specs".to_string(),
            (g, p) if self.custom || g == CRD_GROUP => format!("/registry/{g}/{p}"),
            (_, p) => format!("/registry/{p}"),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        match ns.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/{ns}/{name}", self.base()),
            None => format!("{}/{name}", self.base()),
        }
    }

    /// The storage prefix of a list (one namespace, or all of them).
    pub fn prefix(&self, ns: Option<&str>) -> String {
        match ns.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/{ns}/", self.base()),
            None => format!("{}/", self.base()),
        }
    }

    /// Discovery's `APIResource` entry.
    pub fn discovery(&self) -> Value {
        json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update"],
            "shortNames": self.short_names,
        })
    }
}

/// (group, version, plural, kind, namespaced, short names).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);

const BUILTIN: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, &["ns"]),
    ("", "v1", "nodes", "Node", false, &["no"]),
    ("", "v1", "configmaps", "ConfigMap", true, &["cm"]),
    ("", "v1", "secrets", "Secret", true, &[]),
    ("", "v1", "pods", "Pod", true, &["po"]),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"]),
    ("", "v1", "services", "Service", true, &["svc"]),
    ("", "v1", "endpoints", "Endpoints", true, &["ep"]),
    ("apps", "v1", "deployments", "Deployment", true, &["deploy"]),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"]),
    ("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"]),
    ("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"]),
    // ingress-nginx's admission-certificate Jobs.
    ("batch", "v1", "jobs", "Job", true, &[]),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
    ),
    (
        CRD_GROUP,
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
    ),
    (
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        &["csr"],
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        &[],
    ),
    // longhorn's.
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
    ),
];

/// The built-in resources, in discovery order.
pub fn builtin() -> Vec<Resource> {
    BUILTIN
        .iter()
        .map(|(g, v, p, k, ns, short)| Resource {
            group: (*g).to_string(),
            version: (*v).to_string(),
            plural: (*p).to_string(),
            singular: k.to_lowercase(),
            kind: (*k).to_string(),
            namespaced: *ns,
            short_names: short.iter().map(|s| (*s).to_string()).collect(),
            custom: false,
        })
        .collect()
}

/// Whether a CRD object carries `Established=True`.
pub fn established(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    })
}

/// The resources one CRD defines (one per served version), none until it is established.
pub fn of_crd(crd: &Value) -> Vec<Resource> {
    if !established(crd) {
        return Vec::new();
    }
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = names["singular"]
        .as_str()
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let short_names: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    spec["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["served"].as_bool().unwrap_or(false))
                .filter_map(|v| v["name"].as_str())
                .map(|v| Resource {
                    group: group.to_string(),
                    version: v.to_string(),
                    plural: plural.to_string(),
                    singular: singular.clone(),
                    kind: kind.to_string(),
                    namespaced: spec["scope"] != "Cluster",
                    short_names: short_names.clone(),
                    custom: true,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The CRDs' storage prefix.
pub fn crd_prefix() -> String {
    format!("/registry/{CRD_GROUP}/customresourcedefinitions/")
}

/// Everything served now: the built-ins, then the established CRDs' kinds.
pub async fn served(store: &dyn Storage) -> Result<Vec<Resource>> {
    let mut all = builtin();
    for (_, bytes) in store.list(&crd_prefix()).await? {
        if let Ok(crd) = serde_json::from_slice::<Value>(&bytes) {
            all.extend(of_crd(&crd));
        }
    }
    Ok(all)
}

/// The resource at `group/version/plural`, if served.
pub fn find<'a>(
    served: &'a [Resource],
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'a Resource> {
    served
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served group versions, in first-seen order: (group, [versions]).
pub fn groups(served: &[Resource]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in served.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn crd(established: bool) -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                     "versions": [{"name": "v1", "served": true, "storage": true},
                                  {"name": "v0", "served": false, "storage": false}]},
            "status": {"conditions": [{"type": "Established",
                                       "status": if established {"True"} else {"False"}}]},
        })
    }

    #[test]
    fn keys_follow_the_real_layout() {
        let b = builtin();
        let get = |g: &str, p: &str| find(&b, g, "v1", p).unwrap().clone();
        assert_eq!(get("", "nodes").key(None, "n1"), "/registry/minions/n1");
        assert_eq!(
            get("", "configmaps").key(Some("default"), "x"),
            "/registry/configmaps/default/x"
        );
        assert_eq!(
            get("", "services").key(Some("default"), "x"),
            "/registry/services/specs/default/x"
        );
        assert_eq!(
            get("apps", "deployments").prefix(None),
            "/registry/deployments/"
        );
        assert_eq!(
            get(CRD_GROUP, "customresourcedefinitions").key(None, "a.b"),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/a.b"
        );
        let w = of_crd(&crd(true));
        assert_eq!(w.len(), 1, "only the served version: {w:?}");
        assert_eq!(
            w[0].key(Some("ns1"), "w"),
            "/registry/example.com/widgets/ns1/w"
        );
        // A cluster-scoped resource ignores a namespace in its key.
        assert_eq!(
            get("", "namespaces").key(Some("x"), "y"),
            "/registry/namespaces/y"
        );
    }

    #[test]
    fn a_crd_serves_nothing_until_established() {
        assert!(of_crd(&crd(false)).is_empty());
        assert_eq!(of_crd(&crd(true))[0].kind, "Widget");
    }
}
