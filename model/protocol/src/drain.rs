//! Draining a node as `kubectl drain --ignore-daemonsets --delete-emptydir-data` does it,
//! as pure decisions a driver (upgrade, or `muster remove`) carries out: which pods to
//! evict (not DaemonSet pods, not mirror pods of static manifests, not finished pods),
//! the Eviction (`policy/v1`) each is asked to leave with, how the API's answer reads
//! (a PodDisruptionBudget refusal is HTTP 429 with the budget named in its causes: retry
//! until the drain timeout), and when the drain has failed, naming pod and budget.

use serde::Deserialize;

/// What a drain needs to know about one pod on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Kind of the controlling owner reference (`DaemonSet`, `ReplicaSet`, ...).
    pub owner_kind: Option<String>,
    /// A mirror pod (annotation `kubernetes.io/config.mirror`): a static manifest's.
    pub mirror: bool,
    /// `status.phase`.
    pub phase: String,
}

/// The pods of a `PodList` (`GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`).
pub fn pods(list_json: &[u8]) -> Result<Vec<PodInfo>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(list_json).map_err(|e| format!("pod list: {e}"))?;
    let items = v["items"]
        .as_array()
        .ok_or_else(|| "pod list: no `items`".to_string())?;
    Ok(items
        .iter()
        .map(|p| {
            let meta = &p["metadata"];
            let owner = meta["ownerReferences"].as_array().and_then(|os| {
                os.iter()
                    .find(|o| o["controller"] == true)
                    .or(os.first())
                    .and_then(|o| o["kind"].as_str())
                    .map(str::to_string)
            });
            PodInfo {
                namespace: meta["namespace"].as_str().unwrap_or("default").to_string(),
                name: meta["name"].as_str().unwrap_or("").to_string(),
                owner_kind: owner,
                mirror: meta["annotations"]
                    .get("kubernetes.io/config.mirror")
                    .is_some(),
                phase: p["status"]["phase"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    DaemonSet,
    Mirror,
    Finished,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    pub evict: Vec<(String, String)>,
    pub skipped: Vec<(String, String, Skip)>,
}

/// Which pods a drain evicts and which it leaves (and why).
pub fn plan(pods: &[PodInfo]) -> DrainPlan {
    let mut p = DrainPlan::default();
    for pod in pods {
        let id = (pod.namespace.clone(), pod.name.clone());
        let skip = if pod.owner_kind.as_deref() == Some("DaemonSet") {
            Some(Skip::DaemonSet)
        } else if pod.mirror {
            Some(Skip::Mirror)
        } else if pod.phase == "Succeeded" || pod.phase == "Failed" {
            Some(Skip::Finished)
        } else {
            None
        };
        match skip {
            Some(s) => p.skipped.push((id.0, id.1, s)),
            None => p.evict.push(id),
        }
    }
    p
}

/// The request path of a pod's Eviction subresource.
pub fn eviction_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{name}/eviction")
}

/// The Eviction body (`policy/v1`, served since Kubernetes 1.22).
pub fn eviction_body(namespace: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    })
}

/// How the API answered an eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    /// Accepted (200/201): the pod terminates.
    Accepted,
    /// 404: the pod is already gone.
    Gone,
    /// 429: a PodDisruptionBudget allows no disruption now; retry later. The budget's
    /// own message (`The disruption budget web needs 2 healthy pods and has 2 currently`).
    Blocked { budget: String },
    /// Anything else, with the API's message.
    Failed { status: u16, message: String },
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Reads the API's answer to an eviction (status code and `Status` body).
pub fn read_eviction(status: u16, body: &[u8]) -> Evicted {
    match status {
        200 | 201 => return Evicted::Accepted,
        404 => return Evicted::Gone,
        _ => {}
    }
    let parsed: Option<Status> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    if status == 429 {
        let budget = parsed
            .and_then(|s| s.details)
            .and_then(|d| {
                d.causes
                    .into_iter()
                    .find(|c| c.reason == "DisruptionBudget")
            })
            .map(|c| c.message)
            .unwrap_or(message);
        return Evicted::Blocked { budget };
    }
    Evicted::Failed { status, message }
}

/// Where a drain stands after a round of evictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainState {
    /// Every pod to evict is gone.
    Drained,
    /// Pods remain; evict (or wait for) them again after a pause.
    Pending { remaining: usize },
    /// The drain timeout passed: the cause names the first blocked pod and its budget, or
    /// the first pod still terminating.
    TimedOut { cause: String },
}

/// `remaining`: pods still on the node (of the plan's evictions); `blocked`: the last
/// refusal per pod (`(namespace/name, budget message)`).
pub fn drain_state(
    remaining: &[(String, String)],
    blocked: &[(String, String)],
    elapsed_ms: u64,
    timeout_ms: u64,
) -> DrainState {
    if remaining.is_empty() {
        return DrainState::Drained;
    }
    if elapsed_ms < timeout_ms {
        return DrainState::Pending {
            remaining: remaining.len(),
        };
    }
    let cause = match blocked.first() {
        Some((pod, budget)) => format!(
            "drain timed out after {}s: eviction of {pod} refused by a PodDisruptionBudget: {budget}",
            timeout_ms / 1000
        ),
        None => {
            let (ns, name) = &remaining[0];
            format!(
                "drain timed out after {}s: {} pod(s) still terminating, first {ns}/{name}",
                timeout_ms / 1000,
                remaining.len()
            )
        }
    };
    DrainState::TimedOut { cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner: Option<&str>, mirror: bool, phase: &str) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: name.into(),
            owner_kind: owner.map(Into::into),
            mirror,
            phase: phase.into(),
        }
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_are_left() {
        let p = plan(&[
            pod("web-1", Some("ReplicaSet"), false, "Running"),
            pod("cilium-x", Some("DaemonSet"), false, "Running"),
            pod("kube-apiserver-cp-1", Some("Node"), true, "Running"),
            pod("job-1", Some("Job"), false, "Succeeded"),
            pod("bare", None, false, "Pending"),
        ]);
        assert_eq!(
            p.evict,
            vec![
                ("default".into(), "web-1".into()),
                ("default".into(), "bare".into())
            ]
        );
        let why: Vec<Skip> = p.skipped.iter().map(|s| s.2).collect();
        assert_eq!(why, vec![Skip::DaemonSet, Skip::Mirror, Skip::Finished]);
        assert_eq!(
            eviction_path("default", "web-1"),
            "/api/v1/namespaces/default/pods/web-1/eviction"
        );
        assert_eq!(eviction_body("default", "web-1")["kind"], "Eviction");
    }

    #[test]
    fn a_pod_list_reads_owner_mirror_and_phase() {
        let list = br#"{"kind":"PodList","items":[
          {"metadata":{"name":"web-1","namespace":"shop","ownerReferences":[{"kind":"ReplicaSet","controller":true}]},"status":{"phase":"Running"}},
          {"metadata":{"name":"flannel-x","namespace":"kube-flannel","ownerReferences":[{"kind":"DaemonSet","controller":true}]},"status":{"phase":"Running"}},
          {"metadata":{"name":"etcd-cp-1","namespace":"kube-system","annotations":{"kubernetes.io/config.mirror":"abc"}},"status":{"phase":"Running"}}
        ]}"#;
        let p = plan(&pods(list).unwrap());
        assert_eq!(p.evict, vec![("shop".into(), "web-1".into())]);
        assert_eq!(p.skipped.len(), 2);
        assert!(pods(b"{}").is_err());
    }

    #[test]
    fn a_budget_refusal_reads_from_the_real_429_body() {
        let body = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../agent/tests/fixtures/eviction-429-pdb.json"
        ));
        assert_eq!(
            read_eviction(429, body),
            Evicted::Blocked {
                budget: "The disruption budget devops-tools-mongodb-secondary needs 1 healthy pods and has 1 currently".into()
            }
        );
        assert_eq!(read_eviction(201, b"{}"), Evicted::Accepted);
        assert_eq!(read_eviction(404, b""), Evicted::Gone);
        assert!(matches!(
            read_eviction(500, br#"{"message":"etcdserver: request timed out"}"#),
            Evicted::Failed { status: 500, message } if message.contains("timed out")
        ));
    }

    #[test]
    fn a_drain_times_out_naming_the_pod_and_its_budget() {
        let web = vec![("default".to_string(), "web-1".to_string())];
        assert_eq!(drain_state(&[], &[], 0, 1000), DrainState::Drained);
        assert_eq!(
            drain_state(&web, &[], 500, 1000),
            DrainState::Pending { remaining: 1 }
        );
        let blocked = vec![(
            "default/web-1".to_string(),
            "The disruption budget web needs 2 healthy pods and has 2 currently".to_string(),
        )];
        let DrainState::TimedOut { cause } = drain_state(&web, &blocked, 120_000, 120_000) else {
            panic!()
        };
        assert!(
            cause.contains("default/web-1") && cause.contains("disruption budget web"),
            "{cause}"
        );
        let DrainState::TimedOut { cause } = drain_state(&web, &[], 120_000, 120_000) else {
            panic!()
        };
        assert!(
            cause.contains("still terminating, first default/web-1"),
            "{cause}"
        );
    }
}
