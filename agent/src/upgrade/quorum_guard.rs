//! Whether this node may start its upgrade now, with etcd's side of it: the order
//! ([`super::order::my_turn`]) and, before a control plane is touched, a **fresh** look at
//! etcd: every member (learners too: one means a membership change is under way) started
//! and answering `/health` (this node's own may be down: going on takes nothing more
//! away), and the voting members' quorum surviving the loss of this one ([`super::order::quorum_allows`]). The view is the one the daemon loop takes
//! live each round ([`crate::etcd_query::observe`]: the member list through the v3
//! gateway, each member's `/health`); one older than [`MAX_VIEW_AGE_MS`] (a long payload
//! download came between) is not trusted: the node waits for the next round's. Pure.

use super::order::{self, EtcdMember, RollView, Wait};
use super::view;
use model::Role;
use protocol::clock::Millis;
use protocol::etcd_view::EtcdView;

/// How old an etcd view may be when a control plane decides on it: a round (the daemon
/// loop's pause is a second) plus the members' health deadlines, with room to spare.
pub const MAX_VIEW_AGE_MS: Millis = 10_000;

/// Before a control plane is touched: `etcd` observed within [`MAX_VIEW_AGE_MS`] of
/// `now_ms`, every member started and healthy, and quorum to spare.
/// `me`'s own member may be down (a reboot or a step re-run after a crash mid
/// `kubeadm upgrade node`): going on cannot take more of etcd down than is already.
pub fn control_plane_may_go(etcd: Option<&EtcdView>, me: &str, now_ms: Millis) -> Result<(), Wait> {
    let blind = |what: String| Wait::Blind { what };
    let v = etcd.ok_or_else(|| blind("etcd did not answer this control plane".into()))?;
    let age = now_ms.saturating_sub(v.observed_ms);
    if age > MAX_VIEW_AGE_MS {
        return Err(blind(format!(
            "this control plane's etcd view is {} s old (more than {} s)",
            age / 1000,
            MAX_VIEW_AGE_MS / 1000
        )));
    }
    // Learners do not vote, but one that is down or joining is a membership change in
    // flight: no control plane upgrades through it.
    if let Some(m) = v
        .members
        .iter()
        .find(|m| m.name != me && !(m.started && m.healthy))
    {
        let name = if m.name.is_empty() {
            format!("{} (never started)", m.id)
        } else {
            m.name.clone()
        };
        return Err(Wait::EtcdUnhealthy { member: name });
    }
    // Counted as healthy: it is the one the arithmetic takes away.
    let voters: Vec<EtcdMember> = view::etcd_members(&v.members)
        .into_iter()
        .map(|m| EtcdMember {
            healthy: m.healthy || m.name == me,
            name: m.name,
        })
        .collect();
    order::quorum_allows(&voters)
}

/// The whole turn decision for node `me` (of `role`): the roll's order, then, for a
/// control plane, etcd's ([`control_plane_may_go`]). Workers do not touch etcd.
pub fn may_start(
    roll: &RollView,
    me: &str,
    role: Role,
    etcd: Option<&EtcdView>,
    now_ms: Millis,
) -> Result<(), Wait> {
    order::my_turn(roll, me)?;
    if role == Role::ControlPlane {
        control_plane_may_go(etcd, me, now_ms)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::etcd_view::EtcdMemberHealth;

    fn member(name: &str, started: bool, learner: bool, healthy: bool) -> EtcdMemberHealth {
        EtcdMemberHealth {
            id: format!("{:x}", name.len()),
            name: if started { name.into() } else { String::new() },
            peer_urls: vec![format!("https://{name}:2380")],
            started,
            learner,
            healthy,
        }
    }

    fn etcd(at: Millis, members: Vec<EtcdMemberHealth>) -> EtcdView {
        let quorum = protocol::etcd_view::QuorumState::of(&members);
        EtcdView {
            observed_by: "cp-1".into(),
            observed_ms: at,
            members,
            quorum,
        }
    }

    fn three_healthy(at: Millis) -> EtcdView {
        etcd(
            at,
            ["cp-1", "cp-2", "cp-3"]
                .iter()
                .map(|n| member(n, true, false, true))
                .collect(),
        )
    }

    const NOW: Millis = 1_000_000;

    #[test]
    fn a_fresh_healthy_view_with_quorum_to_spare_lets_a_control_plane_go() {
        assert_eq!(
            control_plane_may_go(Some(&three_healthy(NOW - 2_000)), "cp-1", NOW),
            Ok(())
        );
    }

    #[test]
    fn no_view_or_a_stale_one_waits_blind() {
        assert!(matches!(
            control_plane_may_go(None, "cp-1", NOW),
            Err(Wait::Blind { what }) if what.contains("did not answer")
        ));
        let old = three_healthy(NOW - MAX_VIEW_AGE_MS - 1);
        let w = control_plane_may_go(Some(&old), "cp-1", NOW).unwrap_err();
        assert!(
            matches!(&w, Wait::Blind { what } if what.contains("10 s old")),
            "{w}"
        );
    }

    #[test]
    fn any_member_down_unstarted_or_a_sick_learner_waits() {
        let mut v = three_healthy(NOW);
        v.members[1].healthy = false;
        assert!(matches!(
            control_plane_may_go(Some(&v), "cp-1", NOW),
            Err(Wait::EtcdUnhealthy { member }) if member == "cp-2"
        ));
        let mut v = three_healthy(NOW);
        v.members.push(member("cp-4", false, false, false));
        let w = control_plane_may_go(Some(&v), "cp-1", NOW).unwrap_err();
        assert!(w.to_string().contains("never started"), "{w}");
        let mut v = three_healthy(NOW);
        v.members.push(member("cp-4", true, true, false));
        assert!(matches!(
            control_plane_may_go(Some(&v), "cp-1", NOW),
            Err(Wait::EtcdUnhealthy { member }) if member == "cp-4"
        ));
        // A healthy learner does not vote: three voters still spare one.
        let mut v = three_healthy(NOW);
        v.members.push(member("cp-4", true, true, true));
        assert_eq!(control_plane_may_go(Some(&v), "cp-1", NOW), Ok(()));
    }

    #[test]
    fn its_own_member_down_does_not_hold_a_control_plane_back() {
        let mut v = three_healthy(NOW);
        v.members[0].healthy = false;
        assert_eq!(control_plane_may_go(Some(&v), "cp-1", NOW), Ok(()));
        assert!(matches!(
            control_plane_may_go(Some(&v), "cp-2", NOW),
            Err(Wait::EtcdUnhealthy { member }) if member == "cp-1"
        ));
    }

    #[test]
    fn two_voters_have_no_quorum_to_spare() {
        let v = etcd(
            NOW,
            vec![
                member("cp-1", true, false, true),
                member("cp-2", true, false, true),
            ],
        );
        assert!(matches!(
            control_plane_may_go(Some(&v), "cp-1", NOW),
            Err(Wait::NoQuorumToSpare {
                members: 2,
                quorum: 2
            })
        ));
    }

    #[test]
    fn workers_go_by_the_order_alone_control_planes_by_etcd_too() {
        use super::order::NodeView;
        let ver = |s: &str| -> model::KubeVersion { s.parse().unwrap() };
        let node = |name: &str, role| NodeView {
            name: name.into(),
            role,
            kubelet: Some(ver("v1.31.4")),
            upgrading: false,
            fetched: true,
        };
        let roll = RollView {
            target: ver("v1.32.0"),
            control_plane: ver("v1.31.4"),
            nodes: vec![node("cp-1", Role::ControlPlane), node("w-1", Role::Worker)],
            stopped: None,
            max_unavailable: 1,
        };
        let mut sick = three_healthy(NOW);
        sick.members[2].healthy = false;
        assert!(matches!(
            may_start(&roll, "cp-1", Role::ControlPlane, Some(&sick), NOW),
            Err(Wait::EtcdUnhealthy { .. })
        ));
        assert_eq!(
            may_start(
                &roll,
                "cp-1",
                Role::ControlPlane,
                Some(&three_healthy(NOW)),
                NOW
            ),
            Ok(())
        );
        // The order still comes first for a worker (control planes before it).
        assert!(matches!(
            may_start(&roll, "w-1", Role::Worker, None, NOW),
            Err(Wait::ControlPlanesFirst { .. })
        ));
    }
}
