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
        ip: None,
        lb_config: None,
        readiness: None,
    }
}

/// The report to heartbeat after `held` (what the rendezvous holds): `next`, unless it
/// differs from `held` only in its timestamps (`updatedMs`, the etcd view's and
/// the readiness's `observedMs`), in which case `held` itself. Reports are sealed, and the client sends
/// identical plaintext as identical bytes, so an unchanged report is no change at the
/// rendezvous: a heartbeat then wakes no watcher (before, every heartbeat woke every
/// waiting node). The member's expiry still moves, so liveness is the member's and the
/// timestamps say since when the report (and the etcd view) has been as it is.
pub fn settled(held: Option<&MemberReport>, next: MemberReport) -> MemberReport {
    let Some(held) = held else { return next };
    let mut probe = next.clone();
    probe.updated_ms = held.updated_ms;
    if let (Some(p), Some(h)) = (probe.etcd.as_mut(), held.etcd.as_ref()) {
        p.observed_ms = h.observed_ms;
    }
    if let (Some(p), Some(h)) = (probe.readiness.as_mut(), held.readiness.as_ref()) {
        p.observed_ms = h.observed_ms;
    }
    if &probe == held { probe } else { next }
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

    fn report_at(phase: Phase, now: Millis) -> MemberReport {
        let mut p = Persisted::new("cp-2", 1_000);
        p.enter(
            State {
                phase,
                attempt: 0,
                last_error: None,
            },
            2_000,
        );
        member_report(Role::ControlPlane, &p, now)
    }

    fn view(observed_ms: Millis, healthy: bool) -> EtcdView {
        use protocol::etcd_view::EtcdMember;
        let m = EtcdMember {
            id: 1,
            name: "cp-1".into(),
            peer_urls: vec!["https://10.0.0.11:2380".into()],
            client_urls: vec!["https://10.0.0.11:2379".into()],
            is_learner: false,
        };
        EtcdView::new("cp-2", observed_ms, &[m], &[healthy])
    }

    #[test]
    fn an_unchanged_report_keeps_the_timestamps_the_rendezvous_holds() {
        let held = report_at(Phase::Done, 5_000).with_etcd(Some(view(5_000, true)));
        let next = report_at(Phase::Done, 9_000).with_etcd(Some(view(9_000, true)));
        assert_eq!(settled(Some(&held), next), held);
        assert_eq!(settled(Some(&held), held.clone()), held);
    }

    #[test]
    fn any_other_difference_is_sent_with_its_new_timestamps() {
        let held = report_at(Phase::Done, 5_000).with_etcd(Some(view(5_000, true)));
        // The etcd view changed (the member is no longer healthy).
        let sick = report_at(Phase::Done, 9_000).with_etcd(Some(view(9_000, false)));
        assert_eq!(settled(Some(&held), sick.clone()), sick);
        // The phase changed.
        let moved = report_at(Phase::AcquiringJoinSlot, 9_000);
        assert_eq!(settled(Some(&held), moved.clone()), moved);
        // The view went away.
        let blind = report_at(Phase::Done, 9_000);
        assert_eq!(settled(Some(&held), blind.clone()), blind);
        // Nothing held yet: the report as built.
        assert_eq!(settled(None, blind.clone()), blind);
    }
}
