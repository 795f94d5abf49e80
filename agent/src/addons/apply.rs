//! Server-side apply of the ordered objects through the API (`PATCH` with
//! `application/apply-patch+yaml`, field manager `muster`, `force`: muster owns what it
//! baked). Kinds are mapped to resources through the API's discovery; the custom resources
//! wait until their CustomResourceDefinitions are `Established`.

use super::AddonError;
use super::order::{Object, Stage};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const FIELD_MANAGER: &str = "muster";
/// How long CRDs may take to become `Established`.
const ESTABLISH_PATIENCE: Duration = Duration::from_secs(60);
/// Each API call of an apply (discovery, one object's patch, one read) within this: a hung
/// call fails the attempt (retried after a backoff) instead of wedging the phase while the
/// lease is renewed beside it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// A resource as discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResource {
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

/// The resources of an `APIResourceList` (subresources like `pods/log` left out).
pub fn parse_resource_list(text: &str) -> Result<Vec<ApiResource>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = v
        .get("resources")
        .and_then(Value::as_array)
        .ok_or("no `resources` in the APIResourceList")?;
    Ok(list
        .iter()
        .filter_map(|r| {
            let plural = r.get("name")?.as_str()?;
            if plural.contains('/') {
                return None;
            }
            Some(ApiResource {
                kind: r.get("kind")?.as_str()?.to_string(),
                plural: plural.to_string(),
                namespaced: r.get("namespaced")?.as_bool()?,
            })
        })
        .collect())
}

/// The discovery path of `api_version`.
pub fn discovery_path(api_version: &str) -> String {
    if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    }
}

/// The object's URL path for a server-side apply.
pub fn object_path(o: &Object, r: &ApiResource) -> String {
    let mut p = discovery_path(&o.api_version);
    if r.namespaced {
        let ns = o.namespace.as_deref().unwrap_or("default");
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push_str(&format!(
        "/{}/{}?fieldManager={FIELD_MANAGER}&force=true",
        r.plural, o.name
    ));
    p
}

/// `Established` is `True` in a CRD's status.
pub fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Established")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// An API endpoint with admin credentials.
#[derive(Debug)]
pub struct Api {
    pub client: reqwest::Client,
    /// `https://ADDR:PORT`.
    pub base: String,
    resources: HashMap<String, Vec<ApiResource>>,
    /// Each call within this ([`CALL_DEADLINE`] unless set).
    deadline: Duration,
}

impl Api {
    pub fn new(client: reqwest::Client, base: String) -> Api {
        Api {
            client,
            base,
            resources: HashMap::new(),
            deadline: CALL_DEADLINE,
        }
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Api {
        self.deadline = deadline;
        self
    }

    async fn get(&self, step: &'static str, path: &str) -> Result<(u16, String), AddonError> {
        let url = format!("{}{path}", self.base);
        let err = |detail: String| AddonError::Api {
            step,
            url: url.clone(),
            detail,
        };
        let r = self
            .client
            .get(&url)
            .timeout(self.deadline)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| err(e.to_string()))?))
    }

    async fn resource(&mut self, o: &Object) -> Result<ApiResource, AddonError> {
        if !self.resources.contains_key(&o.api_version) {
            let path = discovery_path(&o.api_version);
            let (status, text) = self.get("discovery", &path).await?;
            let err = |detail: String| AddonError::Api {
                step: "discovery",
                url: format!("{}{path}", self.base),
                detail,
            };
            if status != 200 {
                return Err(err(format!("status {status}: {}", text.trim())));
            }
            let list = parse_resource_list(&text).map_err(err)?;
            self.resources.insert(o.api_version.clone(), list);
        }
        self.resources
            .get(&o.api_version)
            .and_then(|l| l.iter().find(|r| r.kind == o.kind))
            .cloned()
            .ok_or_else(|| AddonError::Manifest {
                file: o.file.clone(),
                detail: format!(
                    "{}: the API serves no kind {} in {}",
                    o.describe(),
                    o.kind,
                    o.api_version
                ),
            })
    }

    /// Server-side applies `o`.
    pub async fn apply(&mut self, o: &Object) -> Result<(), AddonError> {
        let r = self.resource(o).await?;
        let url = format!("{}{}", self.base, object_path(o, &r));
        let err = |detail: String| AddonError::Api {
            step: "server-side apply",
            url: url.clone(),
            detail: format!("{} from {}: {detail}", o.describe(), o.file),
        };
        let body = serde_json::to_vec(&o.body).map_err(|e| err(e.to_string()))?;
        let resp = self
            .client
            .patch(&url)
            .header("Content-Type", "application/apply-patch+yaml")
            .body(body)
            .timeout(self.deadline)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp
                .text()
                .await
                .unwrap_or_else(|e| format!("(body unreadable: {e})"));
            return Err(err(format!("status {status}: {}", text.trim())));
        }
        Ok(())
    }

    /// Waits until the CRD `name` is `Established`.
    pub async fn wait_established(&self, name: &str) -> Result<(), AddonError> {
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        let started = Instant::now();
        loop {
            let (status, text) = self.get("CRD established", &path).await?;
            if status == 200 && serde_json::from_str::<Value>(&text).is_ok_and(|v| established(&v))
            {
                return Ok(());
            }
            if started.elapsed() > ESTABLISH_PATIENCE {
                return Err(AddonError::Api {
                    step: "CRD established",
                    url: format!("{}{path}", self.base),
                    detail: format!("not Established after {ESTABLISH_PATIENCE:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An apply that stopped at an object of `file` (so the caller can name the add-on).
#[derive(Debug)]
pub struct Stopped {
    pub file: String,
    pub error: AddonError,
}

/// Applies `objects` (in `order::objects`' order); the custom resources only once every
/// CRD of the set is `Established`. Returns how many objects were applied.
pub async fn apply_all(api: &mut Api, objects: &[Object]) -> Result<usize, Stopped> {
    let mut crds_ready = false;
    for o in objects {
        let at = |error| Stopped {
            file: o.file.clone(),
            error,
        };
        if o.stage == Stage::CustomResources && !crds_ready {
            for crd in objects.iter().filter(|c| c.stage == Stage::Crds) {
                api.wait_established(&crd.name).await.map_err(at)?;
            }
            crds_ready = true;
        }
        api.apply(o).await.map_err(at)?;
        tracing::debug!(object = %o.describe(), "applied");
    }
    Ok(objects.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_resources_without_subresources() {
        // Captured from the API stand-in's /apis/apps/v1 (trimmed).
        let text = r#"{"kind":"APIResourceList","groupVersion":"apps/v1","resources":[
            {"name":"daemonsets","singularName":"daemonset","namespaced":true,"kind":"DaemonSet","verbs":["get","patch"]},
            {"name":"daemonsets/status","singularName":"","namespaced":true,"kind":"DaemonSet","verbs":["get"]},
            {"name":"deployments","singularName":"deployment","namespaced":true,"kind":"Deployment","verbs":["get"]}]}"#;
        let r = parse_resource_list(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].plural, "daemonsets");
        assert!(parse_resource_list("{}").is_err());
    }

    #[test]
    fn paths_for_namespaced_and_cluster_objects() {
        let obj = |api: &str, kind: &str, ns: Option<&str>| Object {
            stage: Stage::Objects,
            api_version: api.into(),
            kind: kind.into(),
            name: "x".into(),
            namespace: ns.map(str::to_string),
            file: "f".into(),
            body: Value::Null,
        };
        let ds = ApiResource {
            kind: "DaemonSet".into(),
            plural: "daemonsets".into(),
            namespaced: true,
        };
        assert_eq!(
            object_path(&obj("apps/v1", "DaemonSet", Some("kube-flannel")), &ds),
            "/apis/apps/v1/namespaces/kube-flannel/daemonsets/x?fieldManager=muster&force=true"
        );
        let ns = ApiResource {
            kind: "Namespace".into(),
            plural: "namespaces".into(),
            namespaced: false,
        };
        assert_eq!(
            object_path(&obj("v1", "Namespace", None), &ns),
            "/api/v1/namespaces/x?fieldManager=muster&force=true"
        );
        assert!(established(
            &serde_json::json!({"status":{"conditions":[{"type":"Established","status":"True"}]}})
        ));
        assert!(!established(&serde_json::json!({"status":{}})));
    }

    /// An API that accepts the connection and never answers fails the call within the
    /// deadline (the attempt is then retried) instead of hanging the apply.
    #[tokio::test]
    async fn a_hung_api_call_fails_within_its_deadline() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let (sock, _) = l.accept().await.unwrap();
                kept.push(sock);
            }
        });
        let mut api = Api::new(
            protocol::http_client(None, Duration::from_secs(10)).unwrap(),
            base,
        )
        .with_deadline(Duration::from_millis(300));
        let o = Object {
            stage: Stage::Objects,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "x".into(),
            namespace: Some("default".into()),
            file: "01-x.yaml".into(),
            body: Value::Null,
        };
        let started = Instant::now();
        let e = api.apply(&o).await.unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.starts_with("discovery: http://"), "{e}");
    }
}
