//! Whose turn it is, as a pure function of what the node sees: control planes first in a
//! stable order (by name), workers only after every control plane runs the target version
//! and at most `maxUnavailable` of them at once, nobody while the roll is stopped, and a
//! control plane only while etcd keeps its quorum without it.

use model::{KubeVersion, Role};

/// One Kubernetes node as the API server (or the rendezvous reports) show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub role: Role,
    /// The kubelet version the Node reports (`status.nodeInfo.kubeletVersion`).
    pub kubelet: Option<KubeVersion>,
    /// Upgrading now (holds the lock or a worker slot, by its progress record).
    pub upgrading: bool,
    /// Holds this release's payload already (its progress is past downloading).
    pub fetched: bool,
}

/// What the roll looks like from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollView {
    pub target: KubeVersion,
    /// The control plane's version (kube-apiserver, or kubeadm's ClusterConfiguration).
    pub control_plane: KubeVersion,
    pub nodes: Vec<NodeView>,
    /// A node whose failure stopped the roll, with its step and cause.
    pub stopped: Option<(String, String, String)>,
    pub max_unavailable: u32,
}

/// One etcd member as the node's etcd view has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    pub healthy: bool,
}

/// Why a node does not start yet; status prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Wait {
    #[error("cannot see the roll yet: {what}")]
    Blind { what: String },
    #[error(
        "the roll stopped at {node} (step {step}): {cause}; fix it and run `muster upgrade --resume`"
    )]
    Stopped {
        node: String,
        step: String,
        cause: String,
    },
    #[error("control plane {before} upgrades first (control planes go one at a time, by name)")]
    ControlPlaneBefore { before: String },
    #[error("waiting for every control plane to run {target}: {pending} not yet")]
    ControlPlanesFirst {
        target: KubeVersion,
        pending: String,
    },
    #[error("{upgrading} worker(s) upgrading, maxUnavailable is {max}")]
    WorkersBusy { upgrading: u32, max: u32 },
    #[error("workers before this one in the order upgrade first: {before}")]
    WorkerBefore { before: String },
    #[error("etcd member {member} is not healthy: no control plane upgrades until it is")]
    EtcdUnhealthy { member: String },
    #[error("etcd has {members} member(s): losing one would lose quorum ({quorum} needed)")]
    NoQuorumToSpare { members: u32, quorum: u32 },
    #[error(
        "this node's kubelet {kubelet} is newer than the control plane {control_plane}: it waits until the control plane reaches it"
    )]
    NewerThanControlPlane {
        kubelet: KubeVersion,
        control_plane: KubeVersion,
    },
    #[error(
        "downloads go in the roll's order: {ahead} pending node(s) before this one; first: {first}"
    )]
    DownloadQueue { ahead: usize, first: String },
    #[error(
        "this control plane's version {version} is newer than every running control plane (the newest runs {newest}): it joins once the roll has upgraded a control plane to it"
    )]
    AheadOfTheRoll {
        version: KubeVersion,
        newest: KubeVersion,
    },
}

impl Wait {
    /// For a joiner's version wait: its own version and the control plane's it was held
    /// against.
    pub fn versions(&self) -> Option<(KubeVersion, KubeVersion)> {
        match self {
            Wait::NewerThanControlPlane {
                kubelet,
                control_plane,
            } => Some((*kubelet, *control_plane)),
            Wait::AheadOfTheRoll { version, newest } => Some((*version, *newest)),
            _ => None,
        }
    }
}

/// Whether `me` (a control plane or a worker in `view.nodes`) may take its turn now.
pub fn my_turn(view: &RollView, me: &str) -> Result<(), Wait> {
    if let Some((node, step, cause)) = &view.stopped {
        return Err(Wait::Stopped {
            node: node.clone(),
            step: step.clone(),
            cause: cause.clone(),
        });
    }
    let pending = |n: &NodeView| n.kubelet != Some(view.target);
    let cps = pending_in_order(view, Role::ControlPlane);
    let workers = ordered(view, Role::Worker);
    let Some(mine) = view.nodes.iter().find(|n| n.name == me) else {
        return Ok(());
    };
    if mine.role == Role::ControlPlane {
        match cps.first() {
            Some(first) if first.name != me => Err(Wait::ControlPlaneBefore {
                before: first.name.clone(),
            }),
            _ => Ok(()),
        }
    } else {
        let cp_pending: Vec<&str> = cps.iter().map(|n| n.name.as_str()).collect();
        if !cp_pending.is_empty() || view.control_plane != view.target {
            let mut names = cp_pending.join(", ");
            if names.is_empty() {
                names = "the API server".into();
            }
            return Err(Wait::ControlPlanesFirst {
                target: view.target,
                pending: names,
            });
        }
        let max = view.max_unavailable.max(1);
        let upgrading = count(workers.iter().filter(|n| n.upgrading && n.name != me));
        if upgrading >= max {
            return Err(Wait::WorkersBusy { upgrading, max });
        }
        // Stable order: only the first `max` pending workers may go.
        let window: Vec<&str> = pending_in_order(view, Role::Worker)
            .into_iter()
            .take(max as usize)
            .map(|n| n.name.as_str())
            .collect();
        if window.contains(&me) || !pending(mine) {
            Ok(())
        } else {
            Err(Wait::WorkerBefore {
                before: window.join(", "),
            })
        }
    }
}

/// The running control plane's versions as a joiner reads them before joining (its own
/// Node, a previous machine's, left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPlaneVersions {
    /// The lowest of the API server's `/version` and every control-plane kubelet: what
    /// the whole control plane has reached.
    pub lowest: KubeVersion,
    /// The newest control-plane kubelet (the API server's `/version` when no other
    /// control-plane Node is listed): how far the roll has moved the control plane. A
    /// control plane's kubelet moves last in its upgrade, after kubeadm's `upgrade apply`
    /// (on the first) moved the ClusterConfiguration.
    pub newest: KubeVersion,
}

/// Whether a joiner of `role` whose payload runs `version` may join a control plane at
/// `seen` (a node re-created from a rebuilt image before, during or after a roll).
/// - A worker's kubelet may meet any API server: never newer than the `lowest`.
/// - A control plane brings its own API server, controller manager, scheduler and etcd
///   member at its version, as each control plane of a roll does in turn: it may join
///   once a control plane runs its minor (for kubeadm, `upgrade apply` has moved the
///   ClusterConfiguration, whose version a control-plane join deploys and its
///   `KubeletVersion` preflight checks), and never more than one minor above the
///   `lowest` (the API servers' skew). Waiting for the `lowest` instead would deadlock
///   a roll: the next control plane's turn waits for etcd to have quorum to spare,
///   which this machine's absent member takes away until it joins.
pub fn join_allows(
    role: Role,
    version: KubeVersion,
    seen: ControlPlaneVersions,
) -> Result<(), Wait> {
    match role {
        Role::ControlPlane => {
            if version.minor_release() > seen.newest.minor_release() {
                return Err(Wait::AheadOfTheRoll {
                    version,
                    newest: seen.newest,
                });
            }
            if version.minors_beyond_one_above(&seen.lowest) {
                return Err(Wait::NewerThanControlPlane {
                    kubelet: version,
                    control_plane: seen.lowest,
                });
            }
            Ok(())
        }
        _ => skew_allows(version, seen.lowest),
    }
}

/// A node re-created from a newer image must not run a kubelet newer than the control
/// plane (the version-skew policy); it waits until the control plane reaches it.
pub fn skew_allows(kubelet: KubeVersion, control_plane: KubeVersion) -> Result<(), Wait> {
    if kubelet.minor_release() > control_plane.minor_release() {
        Err(Wait::NewerThanControlPlane {
            kubelet,
            control_plane,
        })
    } else {
        Ok(())
    }
}

/// Before a control plane is touched: every member healthy, and quorum survives losing
/// one. A single-member etcd has no quorum to keep: its API is down while it upgrades, as
/// upstream's single control-plane upgrade is.
pub fn quorum_allows(members: &[EtcdMember]) -> Result<(), Wait> {
    if let Some(sick) = members.iter().find(|m| !m.healthy) {
        return Err(Wait::EtcdUnhealthy {
            member: sick.name.clone(),
        });
    }
    let n = count(members.iter());
    if n <= 1 {
        return Ok(());
    }
    let row = model::quorum::row(n);
    if row.can_lose == 0 {
        return Err(Wait::NoQuorumToSpare {
            members: n,
            quorum: row.quorum,
        });
    }
    Ok(())
}

/// Whether `me` may download the release now. Every node fetching at once makes the
/// first control plane's download compete with all the others' (measured: 25 nodes on
/// one rendezvous spent 52 s before the first turn), so the nodes whose turn comes first
/// download first: the pending nodes (not yet at the target) in the roll's order
/// (control planes by name, then workers by name), the first [`fetch_window`] of them.
/// Once every one of those holds the payload, the rest download too (they would
/// otherwise each wait for their place while the nodes before them upgrade, which a
/// download longer than an upgrade turns into idle hand-offs). A node not in the view,
/// or done already, is never held back.
pub fn may_fetch(view: &RollView, me: &str) -> Result<(), Wait> {
    let order: Vec<&NodeView> = pending_in_order(view, Role::ControlPlane)
        .into_iter()
        .chain(pending_in_order(view, Role::Worker))
        .collect();
    let window = fetch_window(view.max_unavailable);
    let front_served = order.iter().take(window).all(|n| n.fetched);
    match order.iter().position(|n| n.name == me) {
        Some(i) if i >= window && !front_served => Err(Wait::DownloadQueue {
            ahead: i,
            first: order
                .iter()
                .take(window)
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        _ => Ok(()),
    }
}

/// How many pending nodes download at once: the ones whose turn is now (one control
/// plane, or `maxUnavailable` workers) and as many after them, so the next ones' payloads
/// are ready when their turn comes. Never fewer than two.
pub fn fetch_window(max_unavailable: u32) -> usize {
    usize::try_from(max_unavailable.max(1))
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
}

fn ordered(view: &RollView, role: Role) -> Vec<&NodeView> {
    let mut v: Vec<&NodeView> = view.nodes.iter().filter(|n| n.role == role).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The nodes of `role` not yet at the target, in the roll's order (by name).
fn pending_in_order(view: &RollView, role: Role) -> Vec<&NodeView> {
    ordered(view, role)
        .into_iter()
        .filter(|n| n.kubelet != Some(view.target))
        .collect()
}

fn count<T>(it: impl Iterator<Item = T>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

/// The first control plane of the roll's order (it runs `kubeadm upgrade apply`).
pub fn first_control_plane(view: &RollView) -> Option<&str> {
    ordered(view, Role::ControlPlane)
        .first()
        .map(|n| n.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    fn seen(lowest: &str, newest: &str) -> ControlPlaneVersions {
        ControlPlaneVersions {
            lowest: v(lowest),
            newest: v(newest),
        }
    }

    /// A worker waits for the whole control plane; a control plane for the roll to have
    /// moved one control plane to its minor (then it joins as each control plane of the
    /// roll runs, beside older API servers within one minor).
    #[test]
    fn a_joiner_is_held_to_the_control_plane_its_role_needs() {
        let new = v("v1.32.0");
        let before = seen("v1.31.4", "v1.31.4");
        let mid_roll = seen("v1.31.4", "v1.32.0");
        let after = seen("v1.32.0", "v1.32.0");
        // Workers: the lowest.
        for s in [before, mid_roll] {
            let e = join_allows(Role::Worker, new, s).unwrap_err();
            assert_eq!(e.versions(), Some((new, v("v1.31.4"))), "{e}");
            assert!(
                e.to_string().contains("newer than the control plane"),
                "{e}"
            );
        }
        assert_eq!(join_allows(Role::Worker, new, after), Ok(()));
        // Control planes: the newest.
        let e = join_allows(Role::ControlPlane, new, before).unwrap_err();
        assert_eq!(e.versions(), Some((new, v("v1.31.4"))), "{e}");
        assert!(
            e.to_string()
                .contains("newer than every running control plane"),
            "{e}"
        );
        assert_eq!(join_allows(Role::ControlPlane, new, mid_roll), Ok(()));
        assert_eq!(join_allows(Role::ControlPlane, new, after), Ok(()));
        // Never more than one minor above the oldest API server, whatever runs beside it.
        let e =
            join_allows(Role::ControlPlane, v("v1.33.0"), seen("v1.31.4", "v1.33.0")).unwrap_err();
        assert_eq!(e.versions(), Some((v("v1.33.0"), v("v1.31.4"))), "{e}");
        // Older or equal joiners and newer patches go for either role.
        for role in [Role::Worker, Role::ControlPlane] {
            assert_eq!(join_allows(role, v("v1.31.9"), before), Ok(()));
            assert_eq!(join_allows(role, v("v1.31.0"), after), Ok(()));
        }
        assert_eq!(Wait::EtcdUnhealthy { member: "x".into() }.versions(), None);
    }

    fn node(name: &str, role: Role, ver: &str) -> NodeView {
        NodeView {
            name: name.into(),
            role,
            kubelet: Some(v(ver)),
            upgrading: false,
            fetched: false,
        }
    }

    fn view(cp: [&str; 3], workers: [&str; 3], api: &str) -> RollView {
        let mut nodes = Vec::new();
        // Deliberately not in name order: the order is by name, not by report order.
        for (i, ver) in cp.iter().enumerate().rev() {
            nodes.push(node(&format!("cp-{}", i + 1), Role::ControlPlane, ver));
        }
        for (i, ver) in workers.iter().enumerate() {
            nodes.push(node(&format!("w-{}", i + 1), Role::Worker, ver));
        }
        RollView {
            target: v("v1.31.2"),
            control_plane: v(api),
            nodes,
            stopped: None,
            max_unavailable: 1,
        }
    }

    const OLD: &str = "v1.30.5";
    const NEW: &str = "v1.31.2";

    #[test]
    fn control_planes_go_first_one_at_a_time_by_name() {
        let v0 = view([OLD; 3], [OLD; 3], OLD);
        assert_eq!(my_turn(&v0, "cp-1"), Ok(()));
        assert!(
            matches!(my_turn(&v0, "cp-2"), Err(Wait::ControlPlaneBefore { before }) if before == "cp-1")
        );
        assert!(matches!(
            my_turn(&v0, "w-1"),
            Err(Wait::ControlPlanesFirst { .. })
        ));
        assert_eq!(first_control_plane(&v0), Some("cp-1"));
        let v1 = view([NEW, OLD, OLD], [OLD; 3], NEW);
        assert_eq!(my_turn(&v1, "cp-2"), Ok(()));
        assert!(matches!(
            my_turn(&v1, "cp-3"),
            Err(Wait::ControlPlaneBefore { .. })
        ));
        assert!(
            matches!(my_turn(&v1, "w-1"), Err(Wait::ControlPlanesFirst { pending, .. }) if pending == "cp-2, cp-3")
        );
    }

    #[test]
    fn workers_follow_in_order_up_to_max_unavailable() {
        let mut all_cp = view([NEW; 3], [OLD; 3], NEW);
        assert_eq!(my_turn(&all_cp, "w-1"), Ok(()));
        assert!(matches!(
            my_turn(&all_cp, "w-2"),
            Err(Wait::WorkerBefore { .. })
        ));
        all_cp.max_unavailable = 2;
        assert_eq!(my_turn(&all_cp, "w-2"), Ok(()));
        for n in &mut all_cp.nodes {
            n.upgrading = n.name == "w-1" || n.name == "w-2";
        }
        assert!(matches!(
            my_turn(&all_cp, "w-3"),
            Err(Wait::WorkersBusy {
                upgrading: 2,
                max: 2
            })
        ));
        // The API server itself must be at the target too (a CP's kubelet alone is not enough).
        let lagging_api = view([NEW; 3], [OLD; 3], OLD);
        assert!(
            matches!(my_turn(&lagging_api, "w-1"), Err(Wait::ControlPlanesFirst { pending, .. }) if pending == "the API server")
        );
    }

    /// Downloads follow the roll's order, two ahead (or twice `maxUnavailable`): the node
    /// whose turn is now and the next; as nodes finish, the window moves on; a node done
    /// already, or unknown to the view, is never held back.
    #[test]
    fn downloads_go_in_the_rolls_order_a_window_at_a_time() {
        let fetching = |view: &RollView| -> Vec<String> {
            view.nodes
                .iter()
                .filter(|n| may_fetch(view, &n.name).is_ok())
                .map(|n| n.name.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let v0 = view([OLD; 3], [OLD; 3], OLD);
        assert_eq!(fetching(&v0), ["cp-1", "cp-2"]);
        let e = may_fetch(&v0, "w-2").unwrap_err();
        assert_eq!(
            e,
            Wait::DownloadQueue {
                ahead: 4,
                first: "cp-1, cp-2".into()
            }
        );
        assert!(e.to_string().contains("4 pending node(s) before"), "{e}");
        // The front served (cp-1 and cp-2 hold the payload): the rest download too.
        let mut served = v0.clone();
        for n in &mut served.nodes {
            n.fetched = n.name == "cp-1" || n.name == "cp-2";
        }
        assert_eq!(fetching(&served).len(), 6);
        // cp-1 done: cp-3 joins the window; the control planes done: the workers.
        let v1 = view([NEW, OLD, OLD], [OLD; 3], NEW);
        assert_eq!(fetching(&v1), ["cp-1", "cp-2", "cp-3"]);
        let v3 = view([NEW; 3], [OLD; 3], NEW);
        assert_eq!(fetching(&v3), ["cp-1", "cp-2", "cp-3", "w-1", "w-2"]);
        // A wider roll downloads twice as many ahead.
        let mut wide = view([NEW; 3], [OLD; 3], NEW);
        wide.max_unavailable = 2;
        assert_eq!(fetching(&wide).len(), 6);
        assert_eq!(may_fetch(&v0, "not-in-the-view"), Ok(()));
        assert_eq!(fetch_window(0), 2);
        assert_eq!(fetch_window(5), 10);
    }

    #[test]
    fn a_stopped_roll_starts_nobody() {
        let mut v0 = view([NEW, OLD, OLD], [OLD; 3], NEW);
        v0.stopped = Some((
            "cp-2".into(),
            "drain".into(),
            "PDB web allows 0 disruptions".into(),
        ));
        let w = my_turn(&v0, "cp-2").unwrap_err();
        assert!(w.to_string().contains("cp-2 (step drain)"), "{w}");
        assert!(my_turn(&v0, "cp-3").is_err());
    }

    #[test]
    fn quorum_must_survive_losing_the_node() {
        let m = |name: &str, healthy| EtcdMember {
            name: name.into(),
            healthy,
        };
        assert_eq!(
            quorum_allows(&[m("a", true), m("b", true), m("c", true)]),
            Ok(())
        );
        assert!(matches!(
            quorum_allows(&[m("a", true), m("b", false), m("c", true)]),
            Err(Wait::EtcdUnhealthy { member }) if member == "b"
        ));
        assert!(matches!(
            quorum_allows(&[m("a", true), m("b", true)]),
            Err(Wait::NoQuorumToSpare {
                members: 2,
                quorum: 2
            })
        ));
        assert_eq!(
            quorum_allows(&[m("a", true)]),
            Ok(()),
            "single member: nothing to keep"
        );
    }

    #[test]
    fn a_newer_kubelet_waits_for_the_control_plane() {
        assert!(skew_allows(v("v1.31.2"), v("v1.30.5")).is_err());
        assert_eq!(skew_allows(v("v1.31.2"), v("v1.31.0")), Ok(()));
        assert_eq!(skew_allows(v("v1.30.1"), v("v1.31.0")), Ok(()));
    }
}
