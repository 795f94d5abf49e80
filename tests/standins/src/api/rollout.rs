//! Stand-in behaviour (issue 14): DaemonSet and Deployment status as a reader sees it. No
//! pod runs here, so the rollout follows the Nodes: a DaemonSet wants one pod per Node
//! (`desiredNumberScheduled` = the Nodes; tolerations are not evaluated: every Node counts)
//! and has one available per `Ready` Node; a Deployment wants `spec.replicas` (default 1),
//! all available once some Node is `Ready`, none before. Nothing is stored: reads (GET,
//! LIST, Tables) see the status computed from the Nodes as they read (`node_ready`).

use serde_json::{Value, json};

/// What the Nodes say: how many there are and how many read `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCount {
    pub total: u64,
    pub ready: u64,
}

/// Counts gated Nodes.
pub fn count<'a>(nodes: impl IntoIterator<Item = &'a Value>) -> NodeCount {
    let mut c = NodeCount { total: 0, ready: 0 };
    for n in nodes {
        c.total += 1;
        let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|x| x["type"] == "Ready" && x["status"] == "True")
        });
        if ready {
            c.ready += 1;
        }
    }
    c
}

/// `obj` (a DaemonSet or Deployment of `apps/v1`, by `kind`) with its rollout status.
pub fn with_status(mut obj: Value, kind: &str, nodes: NodeCount) -> Value {
    let generation = obj["metadata"]["generation"].clone();
    let status = match kind {
        "DaemonSet" => json!({
            "desiredNumberScheduled": nodes.total,
            "currentNumberScheduled": nodes.total,
            "updatedNumberScheduled": nodes.total,
            "numberMisscheduled": 0,
            "numberReady": nodes.ready,
            "numberAvailable": nodes.ready,
            "numberUnavailable": nodes.total - nodes.ready,
            "observedGeneration": generation,
        }),
        "Deployment" => {
            let want = obj["spec"]["replicas"].as_u64().unwrap_or(1);
            let up = if nodes.ready > 0 { want } else { 0 };
            json!({
                "replicas": want,
                "updatedReplicas": want,
                "readyReplicas": up,
                "availableReplicas": up,
                "unavailableReplicas": want - up,
                "observedGeneration": generation,
            })
        }
        _ => return obj,
    };
    obj["status"] = status;
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str) -> Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn daemonsets_follow_every_node_and_deployments_any_ready_one() {
        let none = count([&node("False"), &node("False")]);
        assert_eq!(none, NodeCount { total: 2, ready: 0 });
        let some = count([&node("True"), &node("False"), &node("True")]);
        assert_eq!(some, NodeCount { total: 3, ready: 2 });
        let ds = json!({"metadata": {"generation": 1}, "spec": {}});
        let s = with_status(ds.clone(), "DaemonSet", some);
        assert_eq!(s["status"]["desiredNumberScheduled"], 3);
        assert_eq!(s["status"]["numberAvailable"], 2);
        assert_eq!(s["status"]["observedGeneration"], 1);
        let dep = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}});
        assert_eq!(
            with_status(dep.clone(), "Deployment", none)["status"]["availableReplicas"],
            0
        );
        let up = with_status(dep, "Deployment", some);
        assert_eq!(up["status"]["availableReplicas"], 2);
        assert_eq!(up["status"]["replicas"], 2);
        let one = json!({"metadata": {}, "spec": {}});
        assert_eq!(
            with_status(one, "Deployment", some)["status"]["replicas"],
            1
        );
        let cm = json!({"data": {}});
        assert_eq!(with_status(cm.clone(), "ConfigMap", some), cm);
    }
}
