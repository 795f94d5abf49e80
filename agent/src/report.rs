//! The member report this node heartbeats, built from its persisted bootstrap state (the
//! report's shape is the protocol's: `protocol::report::MemberReport`).

use crate::bootstrap::{Persisted, Phase};
use model::Role;
use protocol::clock::Millis;
use protocol::report::MemberReport;

/// The report of the node whose persisted state is `p`, at `now`.
pub fn member_report(role: Role, p: &Persisted, now: Millis) -> MemberReport {
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
        // The driver adds these from what it read and probed (`Driver::member_report`).
        reason: None,
        unreachable: Vec::new(),
        stranded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::State;
    use protocol::etcd_view::EtcdView;

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
        let r = member_report(Role::ControlPlane, &p, 9_000);
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
