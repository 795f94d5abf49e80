//! One observation of what makes a cluster usable (issue 14): every Node's `Ready`
//! condition and each baked add-on's rollout (its DaemonSets and Deployments, available vs
//! desired). A control plane's agent reads them through the API once it is past its
//! add-ons and puts them in the member report it heartbeats, like its etcd view;
//! `nodeagent status` and `muster status` show the freshest one, and the cluster is
//! healthy only when [`Readiness::problems`] is empty. Parsing and the verdict are pure.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Node's `Ready` condition as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReady {
    pub name: String,
    pub ready: bool,
    /// The condition's `reason` (`KubeletReady`, `KubeletNotReady`, …); `None` when the Node
    /// has no `Ready` condition yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The condition's `message`, when not ready (the kubelet's words: no CNI, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One workload of an add-on and how far it has rolled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The add-on that baked it (`flannel`, `metallb`, …).
    pub addon: String,
    /// `DaemonSet` or `Deployment`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// DaemonSet: `status.desiredNumberScheduled`; Deployment: `spec.replicas` (default 1).
    pub desired: u64,
    /// DaemonSet: `status.numberAvailable`; Deployment: `status.availableReplicas`.
    pub available: u64,
    /// Why it could not be read (not found, the API refused); counts as not rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Rollout {
    /// Every desired pod is available (and the object could be read).
    pub fn rolled_out(&self) -> bool {
        self.error.is_none() && self.available >= self.desired
    }

    /// `DaemonSet kube-flannel/kube-flannel-ds 2/3`.
    pub fn describe(&self) -> String {
        let counts = match &self.error {
            Some(e) => format!("unreadable: {e}"),
            None => format!("{}/{}", self.available, self.desired),
        };
        format!("{} {}/{} {counts}", self.kind, self.namespace, self.name)
    }
}

/// The Nodes and the add-ons' rollouts as one control plane read them at `observed_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub observed_by: String,
    /// When it was read; kept while it stays the same (`nodeagent::report::settled`).
    pub observed_ms: Millis,
    /// By name.
    pub nodes: Vec<NodeReady>,
    /// In the baked order of the add-ons.
    pub rollouts: Vec<Rollout>,
    /// The Node list could not be read (then `nodes` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The Nodes of a `NodeList` (JSON), each with its `Ready` condition, by name.
pub fn parse_node_list(json: &str) -> Result<Vec<NodeReady>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or("no `items` in the NodeList")?;
    let mut nodes: Vec<NodeReady> = items
        .iter()
        .map(|n| {
            let name = n
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let cond = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
            let text = |c: &Value, f: &str| c.get(f).and_then(Value::as_str).map(str::to_string);
            let ready = cond.is_some_and(|c| c["status"] == "True");
            NodeReady {
                name,
                ready,
                reason: cond.and_then(|c| text(c, "reason")),
                message: cond.filter(|_| !ready).and_then(|c| text(c, "message")),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// `(desired, available)` of a DaemonSet or Deployment (JSON) of `kind`.
pub fn parse_rollout(kind: &str, json: &str) -> Result<(u64, u64), String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64);
    match kind {
        "DaemonSet" => Ok((
            n("/status/desiredNumberScheduled").unwrap_or(0),
            n("/status/numberAvailable").unwrap_or(0),
        )),
        "Deployment" => Ok((
            n("/spec/replicas").unwrap_or(1),
            n("/status/availableReplicas").unwrap_or(0),
        )),
        other => Err(format!("no rollout for kind {other}")),
    }
}

/// Whether muster follows the rollout of objects of `kind` (of `apps/v1`).
pub fn has_rollout(api_version: &str, kind: &str) -> bool {
    api_version == "apps/v1" && matches!(kind, "DaemonSet" | "Deployment")
}

impl Readiness {
    /// What keeps the cluster from being usable, one line each; empty: every Node is
    /// `Ready` and every add-on rolled out.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("the Nodes could not be read: {e}"));
        } else if self.nodes.is_empty() {
            out.push("the API lists no Node".into());
        }
        for n in self.nodes.iter().filter(|n| !n.ready) {
            out.push(format!("Node {} is not Ready", n.name));
        }
        for (addon, rs) in self.by_addon() {
            let pending: Vec<String> = rs
                .iter()
                .filter(|r| !r.rolled_out())
                .map(|r| r.describe())
                .collect();
            if !pending.is_empty() {
                out.push(format!(
                    "add-on {addon} not rolled out: {}",
                    pending.join("; ")
                ));
            }
        }
        out
    }

    pub fn ready_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.ready).count()
    }

    /// The node `name`'s entry, if the API listed it.
    pub fn node(&self, name: &str) -> Option<&NodeReady> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The rollouts grouped by add-on, in the baked order.
    pub fn by_addon(&self) -> Vec<(&str, Vec<&Rollout>)> {
        let mut out: Vec<(&str, Vec<&Rollout>)> = Vec::new();
        for r in &self.rollouts {
            match out.iter_mut().find(|(a, _)| *a == r.addon) {
                Some((_, rs)) => rs.push(r),
                None => out.push((r.addon.as_str(), vec![r])),
            }
        }
        out
    }

    /// One line per add-on, `indent`ed: `flannel: rolled out (DaemonSet …/… 3/3)`.
    pub fn addon_lines(&self, indent: &str) -> String {
        let mut s = String::new();
        for (addon, rs) in self.by_addon() {
            let state = if rs.iter().all(|r| r.rolled_out()) {
                "rolled out"
            } else {
                "NOT rolled out"
            };
            let parts: Vec<String> = rs.iter().map(|r| r.describe()).collect();
            s.push_str(&format!(
                "{indent}{addon}: {state} ({})\n",
                parts.join("; ")
            ));
        }
        s
    }

    /// One line per Node, `indent`ed: `cp-1  Ready`, or `NotReady (reason: message)`; the
    /// Node list's error instead when it could not be read.
    pub fn node_lines(&self, indent: &str) -> String {
        let mut s = String::new();
        if let Some(e) = &self.error {
            s.push_str(&format!("{indent}cannot read the Nodes: {e}\n"));
        }
        for n in &self.nodes {
            let state = if n.ready {
                "Ready".to_string()
            } else {
                not_ready_line(n)
            };
            s.push_str(&format!("{indent}{:<20} {state}\n", n.name));
        }
        s
    }

    /// The readiness of `node` for a table cell: `Ready`, `NotReady`, or `-` when the API
    /// did not list it.
    pub fn cell(&self, node: &str) -> &'static str {
        match self.node(node) {
            Some(n) if n.ready => "Ready",
            Some(_) => "NotReady",
            None => "-",
        }
    }
}

/// Why the cluster is not usable by the freshest readiness there is; `None` (no control
/// plane reported one yet) is itself a reason.
pub fn verdict(readiness: Option<&Readiness>) -> Vec<String> {
    match readiness {
        Some(r) => r.problems(),
        None => vec!["no control plane has reported the Nodes' readiness yet".into()],
    }
}

/// `NotReady (KubeletNotReady: message)` for a Node that is not ready; empty otherwise.
pub fn not_ready_line(n: &NodeReady) -> String {
    if n.ready {
        return String::new();
    }
    let mut why = n
        .reason
        .clone()
        .unwrap_or_else(|| "no Ready condition".into());
    if let Some(m) = &n.message {
        why.push_str(": ");
        why.push_str(m);
    }
    format!("NotReady ({why})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from the API stand-in's `GET /api/v1/nodes` (trimmed): one Node before the
    /// CNI, one after.
    const NODES: &str = r#"{"kind":"NodeList","apiVersion":"v1","items":[
      {"metadata":{"name":"demo-w-1"},"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"}]}},
      {"metadata":{"name":"demo-cp-1"},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status"}]}},
      {"metadata":{"name":"demo-w-2"},"status":{}}]}"#;

    pub(crate) fn rollout(addon: &str, kind: &str, name: &str, d: u64, a: u64) -> Rollout {
        Rollout {
            addon: addon.into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
            desired: d,
            available: a,
            error: None,
        }
    }

    #[test]
    fn nodes_are_read_by_their_ready_condition() {
        let nodes = parse_node_list(NODES).unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["demo-cp-1", "demo-w-1", "demo-w-2"]);
        assert!(nodes[0].ready && nodes[0].message.is_none());
        assert_eq!(nodes[0].reason.as_deref(), Some("KubeletReady"));
        assert!(!nodes[1].ready);
        assert_eq!(
            not_ready_line(&nodes[1]),
            "NotReady (KubeletNotReady: container runtime network not ready: \
             NetworkReady=false reason:NetworkPluginNotReady)"
        );
        assert_eq!(not_ready_line(&nodes[2]), "NotReady (no Ready condition)");
        assert!(parse_node_list("{}").is_err());
        assert!(parse_node_list("nope").is_err());
    }

    #[test]
    fn rollouts_read_available_against_desired() {
        // Captured from the API stand-in's DaemonSet and Deployment reads (trimmed).
        let ds =
            r#"{"kind":"DaemonSet","status":{"desiredNumberScheduled":3,"numberAvailable":2}}"#;
        assert_eq!(parse_rollout("DaemonSet", ds), Ok((3, 2)));
        let dep = r#"{"kind":"Deployment","spec":{"replicas":2},"status":{"availableReplicas":2}}"#;
        assert_eq!(parse_rollout("Deployment", dep), Ok((2, 2)));
        // A Deployment without replicas wants one; without a status none is available.
        assert_eq!(parse_rollout("Deployment", r#"{"spec":{}}"#), Ok((1, 0)));
        assert!(parse_rollout("StatefulSet", "{}").is_err());
        assert!(has_rollout("apps/v1", "DaemonSet") && !has_rollout("v1", "ConfigMap"));
    }

    #[test]
    fn healthy_only_when_every_node_is_ready_and_every_addon_rolled_out() {
        let ready = |name: &str| NodeReady {
            name: name.into(),
            ready: true,
            reason: Some("KubeletReady".into()),
            message: None,
        };
        let mut r = Readiness {
            observed_by: "cp-1".into(),
            observed_ms: 0,
            nodes: vec![ready("cp-1"), ready("w-1")],
            rollouts: vec![
                rollout("flannel", "DaemonSet", "kube-flannel-ds", 2, 2),
                rollout("metallb", "Deployment", "controller", 1, 1),
                rollout("metallb", "DaemonSet", "speaker", 2, 2),
            ],
            error: None,
        };
        assert!(r.problems().is_empty());
        assert!(verdict(Some(&r)).is_empty());
        assert_eq!(
            verdict(None),
            ["no control plane has reported the Nodes' readiness yet"]
        );

        r.rollouts[2].available = 1;
        r.nodes[1].ready = false;
        assert_eq!(
            r.problems(),
            [
                "Node w-1 is not Ready",
                "add-on metallb not rolled out: DaemonSet ns/speaker 1/2"
            ]
        );
        assert_eq!(
            (r.cell("w-1"), r.cell("cp-1"), r.cell("x")),
            ("NotReady", "Ready", "-")
        );
        r.rollouts[0].error = Some("404 not found".into());
        assert!(r.problems()[1].contains(
            "flannel not rolled out: DaemonSet ns/kube-flannel-ds unreadable: 404 not found"
        ));
        assert_eq!(
            r.addon_lines("  "),
            "  flannel: NOT rolled out (DaemonSet ns/kube-flannel-ds unreadable: 404 not found)\n\
             \x20 metallb: NOT rolled out (Deployment ns/controller 1/1; DaemonSet ns/speaker 1/2)\n"
        );

        // No Node at all, or none readable, is not a usable cluster either.
        let empty = Readiness {
            nodes: vec![],
            rollouts: vec![],
            ..r.clone()
        };
        assert_eq!(empty.problems(), ["the API lists no Node"]);
        let blind = Readiness {
            error: Some("connection refused".into()),
            ..empty
        };
        assert_eq!(
            blind.problems(),
            ["the Nodes could not be read: connection refused"]
        );
    }
}
