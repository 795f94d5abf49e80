//! The member report: what each agent heartbeats to the rendezvous (sealed with the cluster
//! secret, like every value there) and writes to `AGENT_STATUS`. `nodeagent status` and
//! `muster status` read it; the agent builds it from its persisted state
//! (`nodeagent::report::member_report`).

use crate::clock::Millis;
use crate::etcd_view::EtcdView;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub node: String,
    pub role: String,
    pub phase: String,
    /// When the current phase started.
    pub since_ms: Option<Millis>,
    pub attempt: u32,
    pub last_error: Option<String>,
    pub updated_ms: Millis,
    pub done: bool,
    /// A joined control plane's view of the stacked etcd cluster, when it could ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdView>,
}

impl MemberReport {
    /// The report the agent wrote to the node at `root` (`AGENT_STATUS`): `Ok(None)` before
    /// it wrote any, `Err` naming why when it cannot be read.
    pub fn read_local(root: &model::node_files::NodeRoot) -> Result<Option<MemberReport>, String> {
        let path = root.path(model::node_files::AGENT_STATUS);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn with_etcd(mut self, etcd: Option<EtcdView>) -> MemberReport {
        self.etcd = etcd;
        self
    }

    /// The JSON the rendezvous client seals.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a report back; `None` for a report this agent version cannot read.
    pub fn from_json(v: &serde_json::Value) -> Option<MemberReport> {
        serde_json::from_value(v.clone()).ok()
    }
}
