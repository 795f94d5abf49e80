//! The roll as the rendezvous shows it, for [`super::order`]: which planned node runs the
//! release (its progress says `done`), which is upgrading, whether the roll stopped, the
//! control plane's version (the release's once a control plane finished, since the first
//! one's `kubeadm upgrade apply` moves the API server), and etcd's members as the freshest
//! etcd view a control plane reported. Pure.

use super::order::{EtcdMember, NodeView, RollView};
use model::{KubeVersion, Role};
use protocol::etcd_view::EtcdMemberHealth;
use protocol::release::{Progress, Release};

/// Progress phase labels as [`super::state::Phase::label`] writes them.
const DONE: &str = "done";
const UPGRADING: &str = "upgrading";
const STOPPED: &str = "stopped";
/// A node in these phases does not hold the release's payload yet (nor one with no
/// progress for the release). One that refused it never will: it is not waited for.
const FETCHING: [&str; 2] = ["queued", "fetching"];

/// `planned`: every Kubernetes node of the plan (name, role); `from`: the version the
/// cluster ran before this release.
pub fn roll_view(
    planned: &[(String, Role)],
    progress: &[Progress],
    release: &Release,
    from: KubeVersion,
    max_unavailable: u32,
) -> RollView {
    let of = |name: &str| {
        progress
            .iter()
            .find(|p| p.node == name && p.sequence == release.sequence)
    };
    let is = |name: &str, label: &str| of(name).is_some_and(|p| p.phase == label);
    let nodes: Vec<NodeView> = planned
        .iter()
        .filter(|(_, role)| *role != Role::LoadBalancer)
        .map(|(name, role)| NodeView {
            name: name.clone(),
            role: *role,
            kubelet: Some(if is(name, DONE) {
                release.version
            } else {
                from
            }),
            upgrading: is(name, UPGRADING),
            fetched: of(name).is_some_and(|p| !FETCHING.contains(&p.phase.as_str())),
        })
        .collect();
    let cp_done = nodes
        .iter()
        .any(|n| n.role == Role::ControlPlane && is(&n.name, DONE));
    let stopped = planned.iter().find_map(|(name, _)| {
        of(name).filter(|p| p.phase == STOPPED).map(|p| {
            (
                name.clone(),
                p.step.clone().unwrap_or_else(|| "?".into()),
                p.detail.clone().unwrap_or_else(|| "?".into()),
            )
        })
    });
    RollView {
        target: release.version,
        control_plane: if cp_done { release.version } else { from },
        nodes,
        stopped,
        max_unavailable,
    }
}

/// etcd's voting members and their health, as a control plane last reported them (the
/// members of the freshest `EtcdView`). Learners do not vote and are left out.
pub fn etcd_members(members: &[EtcdMemberHealth]) -> Vec<EtcdMember> {
    members
        .iter()
        .filter(|m| !m.learner)
        .map(|m| EtcdMember {
            name: m.name.clone(),
            healthy: m.healthy,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::order::{Wait, my_turn};
    use protocol::release::{PayloadRef, PayloadSource};

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    fn release() -> Release {
        Release {
            cluster_id: "c".into(),
            sequence: 2,
            distribution: model::spec::DistroKind::Kubeadm,
            version: v("v1.31.2"),
            payload: PayloadRef {
                sha256: String::new(),
                size: 0,
                source: PayloadSource::Url { url: "x".into() },
            },
            published_at_ms: 0,
        }
    }

    fn progress(node: &str, sequence: u64, phase: &str) -> Progress {
        Progress {
            node: node.into(),
            sequence,
            phase: phase.into(),
            step: (phase == STOPPED).then(|| "drain".into()),
            detail: (phase == STOPPED).then(|| "PDB web".into()),
            lock_token: None,
            at_ms: 0,
        }
    }

    fn planned() -> Vec<(String, Role)> {
        [
            ("cp-1", Role::ControlPlane),
            ("cp-2", Role::ControlPlane),
            ("w-1", Role::Worker),
            ("lb-1", Role::LoadBalancer),
        ]
        .iter()
        .map(|(n, r)| ((*n).to_string(), *r))
        .collect()
    }

    #[test]
    fn done_progress_of_this_release_means_the_new_version() {
        let old = v("v1.30.5");
        // cp-1 done for release 2; cp-2 "done" only for an older release 1.
        let p = [progress("cp-1", 2, DONE), progress("cp-2", 1, DONE)];
        let view = roll_view(&planned(), &p, &release(), old, 1);
        assert_eq!(
            view.nodes.len(),
            3,
            "load balancers are not Kubernetes nodes"
        );
        assert_eq!(view.control_plane, v("v1.31.2"), "a control plane finished");
        assert_eq!(my_turn(&view, "cp-2"), Ok(()));
        assert!(matches!(
            my_turn(&view, "w-1"),
            Err(Wait::ControlPlanesFirst { .. })
        ));
        let none = roll_view(&planned(), &[], &release(), old, 1);
        assert_eq!(none.control_plane, old);
        assert_eq!(my_turn(&none, "cp-1"), Ok(()));
    }

    #[test]
    fn etcd_voters_with_their_health_decide_the_quorum_guard() {
        let m = |name: &str, learner, healthy| EtcdMemberHealth {
            id: "1".into(),
            name: name.into(),
            peer_urls: vec![],
            started: true,
            learner,
            healthy,
        };
        let ok = etcd_members(&[
            m("a", false, true),
            m("b", false, true),
            m("c", false, true),
            m("d", true, false),
        ]);
        assert_eq!(ok.len(), 3, "the learner does not vote");
        assert_eq!(crate::upgrade::order::quorum_allows(&ok), Ok(()));
        let sick = etcd_members(&[
            m("a", false, true),
            m("b", false, false),
            m("c", false, true),
        ]);
        assert!(crate::upgrade::order::quorum_allows(&sick).is_err());
    }

    /// Past downloading means holding this release's payload; queued, fetching, no
    /// progress or another release's does not; a refusal is not waited for.
    #[test]
    fn who_holds_the_payload_by_progress() {
        let p = [
            progress("cp-1", 2, "waiting"),
            progress("cp-2", 2, "fetching"),
            progress("w-1", 1, "done"),
        ];
        let view = roll_view(&planned(), &p, &release(), v("v1.30.5"), 1);
        let fetched: Vec<bool> = view.nodes.iter().map(|n| n.fetched).collect();
        assert_eq!(fetched, [true, false, false]);
        for (phase, want) in [("queued", false), ("refused", true), ("locking", true)] {
            let view = roll_view(
                &planned(),
                &[progress("cp-1", 2, phase)],
                &release(),
                v("v1.30.5"),
                1,
            );
            assert_eq!(view.nodes[0].fetched, want, "{phase}");
        }
    }

    #[test]
    fn a_stopped_node_stops_the_view() {
        let p = [progress("cp-1", 2, STOPPED)];
        let view = roll_view(&planned(), &p, &release(), v("v1.30.5"), 1);
        assert_eq!(
            view.stopped,
            Some(("cp-1".into(), "drain".into(), "PDB web".into()))
        );
    }
}
