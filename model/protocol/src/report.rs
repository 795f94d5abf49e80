//! The member report: what each agent heartbeats to the rendezvous (sealed with the cluster
//! secret, like every value there) and writes to `AGENT_STATUS`. `nodeagent status` and
//! `muster status` read it; tests build it with the same constructor as the driver.

use crate::bootstrap::{Persisted, Phase};
use crate::clock::Millis;
use crate::etcd_view::EtcdView;
use model::Role;
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
    /// The report of the node whose persisted state is `p`, at `now`.
    pub fn new(role: Role, p: &Persisted, now: Millis) -> MemberReport {
        let s = &p.state;
        MemberReport {
            node: p.node.clone(),
            role: role.as_str().to_string(),
            phase: s.phase.name().to_string(),
            since_ms: p.since_ms(),
            attempt: s.attempt,
            last_error: s.last_error.clone(),
            updated_ms: now,
            done: s.phase == Phase::Done,
            etcd: None,
        }
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

/// The freshest etcd view any member reported (control planes report one once done).
pub fn freshest_etcd(members: &[crate::rendezvous::PlainMember]) -> Option<EtcdView> {
    members
        .iter()
        .filter_map(|m| MemberReport::from_json(&m.report).and_then(|r| r.etcd))
        .max_by_key(|v| v.observed_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::State;

    #[test]
    fn the_report_shape_is_stable() {
        let mut p = Persisted::new("cp-2", 1_000);
        p.enter(
            State {
                phase: Phase::AcquiringJoinSlot,
                attempt: 2,
                last_error: Some("boom".into()),
            },
            5_000,
        );
        let r = MemberReport::new(Role::ControlPlane, &p, 9_000);
        let j = r.to_json();
        assert_eq!(
            j,
            serde_json::json!({
                "node": "cp-2",
                "role": "control-plane",
                "phase": "acquiring-join-slot",
                "sinceMs": 5_000,
                "attempt": 2,
                "lastError": "boom",
                "updatedMs": 9_000,
                "done": false,
            })
        );
        assert_eq!(MemberReport::from_json(&j), Some(r.clone()));
        let view = EtcdView::new("cp-2", 8_000, &[], &[]);
        let with = r.with_etcd(Some(view.clone()));
        assert_eq!(with.to_json()["etcd"]["observedMs"], 8_000);
        assert_eq!(
            MemberReport::from_json(&with.to_json()).unwrap().etcd,
            Some(view)
        );
    }
}
