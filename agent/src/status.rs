//! `nodeagent status`: works with the daemon down. Reads this node's `AGENT_STATUS` and
//! `AGENT_STATE`, and asks the rendezvous (when reachable) about the cluster: members'
//! roles and phases, who initialized, who holds the join slot. Exit code 0 healthy, 1 not.

use crate::bootstrap::store::{FileStore, Persisted, Store};
use crate::clock::Millis;
use crate::coord::{Coordinator, keys};
use crate::material::InitRecord;
use model::node_files::NodeRoot;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub role: Option<String>,
    pub phase: String,
    pub since_ms: Option<Millis>,
    pub seconds_in_phase: Option<u64>,
    pub attempt: u32,
    pub last_error: Option<String>,
    /// Errors met on the way (each retry counts), including ones since recovered from.
    pub failures: u32,
    /// The most recent of them, kept after recovery.
    pub last_failure: Option<crate::bootstrap::store::Failure>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub role: String,
    pub phase: Option<String>,
    pub attempt: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub reachable: bool,
    pub error: Option<String>,
    pub members: Vec<MemberStatus>,
    pub initialized_by: Option<String>,
    pub join_slot_holder: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub this_node: Option<NodeStatus>,
    pub cluster: Option<ClusterStatus>,
    pub healthy: bool,
}

/// This node's status from its files; `None` when the agent never ran here.
pub fn local(
    root: &NodeRoot,
    now: Millis,
) -> Result<Option<NodeStatus>, crate::bootstrap::store::StoreError> {
    let store = FileStore::new(root.clone());
    let Some(p): Option<Persisted> = store.load()? else {
        return Ok(None);
    };
    let role = std::fs::read_to_string(root.path(model::node_files::AGENT_STATUS))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(str::to_string));
    let since = p.since_ms();
    Ok(Some(NodeStatus {
        node: p.node.clone(),
        role,
        phase: p.state.phase.name().to_string(),
        since_ms: since,
        seconds_in_phase: since.map(|s| now.saturating_sub(s) / 1000),
        attempt: p.state.attempt,
        last_error: p.state.last_error.clone(),
        failures: p.failures,
        last_failure: p.last_failure.clone(),
    }))
}

/// The cluster as the rendezvous sees it.
pub async fn cluster(c: &impl Coordinator) -> ClusterStatus {
    let mut out = ClusterStatus {
        reachable: false,
        error: None,
        members: Vec::new(),
        initialized_by: None,
        join_slot_holder: None,
    };
    match c.members().await {
        Ok(ms) => {
            out.reachable = true;
            out.members = ms
                .into_iter()
                .map(|m| MemberStatus {
                    name: m.name,
                    role: m.role.as_str().to_string(),
                    phase: m
                        .report
                        .get("phase")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    attempt: m.report.get("attempt").and_then(serde_json::Value::as_u64),
                    last_error: m
                        .report
                        .get("lastError")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                })
                .collect();
        }
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    }
    if let Ok(Some(r)) = c.get(keys::INITIALIZED).await {
        out.initialized_by = serde_json::from_slice::<InitRecord>(&r.value)
            .ok()
            .map(|r| r.node);
    }
    out.join_slot_holder = out
        .members
        .iter()
        .find(|m| {
            matches!(
                m.phase.as_deref(),
                Some("cleaning-stale-member" | "joining" | "verifying")
            ) && m.role == "control-plane"
        })
        .map(|m| m.name.clone());
    out
}

impl Status {
    pub fn new(this_node: Option<NodeStatus>, cluster: Option<ClusterStatus>) -> Self {
        let healthy = this_node.as_ref().is_some_and(|n| n.phase == "done");
        Status {
            this_node,
            cluster,
            healthy,
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        match &self.this_node {
            None => s.push_str("this node: the agent has not run here\n"),
            Some(n) => {
                s.push_str(&format!(
                    "this node: {} ({}) phase {} for {}s, attempt {}\n",
                    n.node,
                    n.role.as_deref().unwrap_or("?"),
                    n.phase,
                    n.seconds_in_phase.unwrap_or(0),
                    n.attempt
                ));
                if let Some(e) = &n.last_error {
                    s.push_str(&format!("  last error: {e}\n"));
                } else if let Some(f) = &n.last_failure {
                    s.push_str(&format!(
                        "  recovered from {} failure(s); the last (attempt {}): {}\n",
                        n.failures, f.attempt, f.error
                    ));
                }
            }
        }
        match &self.cluster {
            None => {}
            Some(c) if !c.reachable => s.push_str(&format!(
                "cluster: rendezvous unreachable: {}\n",
                c.error.as_deref().unwrap_or("?")
            )),
            Some(c) => {
                s.push_str(&format!(
                    "cluster: initialized by {}; join slot: {}\n",
                    c.initialized_by.as_deref().unwrap_or("nobody yet"),
                    c.join_slot_holder.as_deref().unwrap_or("free")
                ));
                for m in &c.members {
                    s.push_str(&format!(
                        "  {:<20} {:<14} {}\n",
                        m.name,
                        m.role,
                        m.phase.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        s.push_str(if self.healthy {
            "healthy\n"
        } else {
            "not healthy\n"
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::state::{Phase, State};

    #[test]
    fn reads_state_with_daemon_down() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        assert!(local(&root, 0).unwrap().is_none());
        let mut p = Persisted::new("cp-2", 1_000);
        p.enter(
            State {
                phase: Phase::AcquiringJoinSlot,
                attempt: 2,
                last_error: Some("join: etcdserver: Peer URLs already exists".into()),
            },
            5_000,
        );
        FileStore::new(root.clone()).save(&p).unwrap();
        let n = local(&root, 65_000).unwrap().unwrap();
        assert_eq!(n.phase, "acquiring-join-slot");
        assert_eq!(n.seconds_in_phase, Some(60));
        let st = Status::new(Some(n), None);
        assert!(!st.healthy);
        let text = st.render();
        assert!(text.contains("Peer URLs already exists"), "{text}");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["thisNode"]["attempt"], 2);

        // Recovered: the state's error is gone, the last failure stays visible.
        p.enter(
            State {
                phase: Phase::Done,
                attempt: 0,
                last_error: None,
            },
            70_000,
        );
        FileStore::new(root.clone()).save(&p).unwrap();
        let st = Status::new(Some(local(&root, 71_000).unwrap().unwrap()), None);
        assert!(st.healthy);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["thisNode"]["failures"], 1);
        assert_eq!(json["thisNode"]["lastFailure"]["attempt"], 2);
        assert!(st.render().contains("recovered from 1 failure(s)"));
    }
}
