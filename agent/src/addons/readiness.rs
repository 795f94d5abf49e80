//! What a control plane reads through the API for its member report once it is past the
//! add-ons: every Node's `Ready` condition and the rollout of each baked add-on's
//! DaemonSets and Deployments (`protocol::readiness`). Which objects to read is pure
//! ([`workloads`]); [`observe`] asks the API, each call within a deadline, and never
//! fails: what it could not read is marked in the observation.

use super::order::Object;
use model::addons::AddonIndex;
use protocol::clock::Millis;
use protocol::readiness::{Readiness, Rollout, has_rollout, parse_node_list, parse_rollout};
use std::time::Duration;

/// One DaemonSet or Deployment an add-on baked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub addon: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object's API path (`/apis/apps/v1/namespaces/NS/daemonsets/NAME`).
    pub path: String,
}

/// The DaemonSets and Deployments among `objects`, named by the add-on whose file baked
/// them, in the baked order.
pub fn workloads(index: &AddonIndex, objects: &[Object]) -> Vec<Workload> {
    objects
        .iter()
        .filter(|o| has_rollout(&o.api_version, &o.kind))
        .map(|o| {
            let addon = index
                .addons
                .iter()
                .find(|a| a.file == o.file)
                .map_or_else(|| o.file.clone(), |a| a.name.clone());
            let namespace = o.namespace.clone().unwrap_or_else(|| "default".into());
            let plural = if o.kind == "DaemonSet" {
                "daemonsets"
            } else {
                "deployments"
            };
            Workload {
                addon,
                kind: o.kind.clone(),
                path: format!(
                    "/apis/{}/namespaces/{namespace}/{plural}/{}",
                    o.api_version, o.name
                ),
                namespace,
                name: o.name.clone(),
            }
        })
        .collect()
}

/// `GET {base}{path}` within `deadline`: the body of a 200, else why not.
async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    deadline: Duration,
) -> Result<String, String> {
    let call = async {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status == 200 {
            Ok(text)
        } else {
            Err(format!("status {status}: {}", text.trim()))
        }
    };
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", deadline.as_secs_f32())))
}

/// Reads the Nodes and each workload's rollout through the API at `base`, each call
/// within `deadline`.
pub async fn observe(
    client: &reqwest::Client,
    base: &str,
    workloads: &[Workload],
    observed_by: &str,
    now: Millis,
    deadline: Duration,
) -> Readiness {
    let (nodes, error) = match get(client, base, "/api/v1/nodes", deadline)
        .await
        .and_then(|t| parse_node_list(&t))
    {
        Ok(n) => (n, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut rollouts = Vec::with_capacity(workloads.len());
    for w in workloads {
        let read = get(client, base, &w.path, deadline)
            .await
            .and_then(|t| parse_rollout(&w.kind, &t));
        let (desired, available, error) = match read {
            Ok((d, a)) => (d, a, None),
            Err(e) => (0, 0, Some(e)),
        };
        rollouts.push(Rollout {
            addon: w.addon.clone(),
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            desired,
            available,
            error,
        });
    }
    Readiness {
        observed_by: observed_by.to_string(),
        observed_ms: now,
        nodes,
        rollouts,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addons_daemonsets_and_deployments_by_addon() {
        let files = vec![
            (
                "10-flannel.yaml".to_string(),
                std::fs::read_to_string(format!(
                    "{}/../tests/fixtures/artifacts/addons/flannel-v0.28.9.yaml",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            ),
            (
                "20-extra.yaml".to_string(),
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {}\n\
                 ---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                    .to_string(),
            ),
        ];
        let index: AddonIndex = serde_json::from_value(serde_json::json!({"addons": [
            {"name": "flannel", "field": "cni", "version": "v0.28.9",
             "file": "10-flannel.yaml", "sha256": "0"}]}))
        .unwrap();
        let objects = super::super::order::objects(&files).unwrap();
        let w = workloads(&index, &objects);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].addon, "flannel");
        assert_eq!(
            w[0].path,
            "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds"
        );
        // A file the index does not name keeps its file name; no namespace is `default`.
        assert_eq!(w[1].addon, "20-extra.yaml");
        assert_eq!(
            w[1].path,
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
    }

    #[tokio::test]
    async fn an_api_that_does_not_answer_is_marked_not_fatal() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let w = Workload {
            addon: "flannel".into(),
            kind: "DaemonSet".into(),
            namespace: "kube-flannel".into(),
            name: "kube-flannel-ds".into(),
            path: "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds".into(),
        };
        let r = observe(
            &protocol::http_client(None, Duration::from_secs(10)).unwrap(),
            &format!("http://127.0.0.1:{port}"),
            &[w],
            "cp-1",
            7,
            Duration::from_secs(2),
        )
        .await;
        assert!(r.error.is_some() && r.nodes.is_empty());
        assert!(r.rollouts[0].error.is_some());
        assert_eq!(r.problems().len(), 2, "{:?}", r.problems());
    }
}
