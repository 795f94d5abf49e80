//! Which etcd members a control plane removes before joining and when undoing a join,
//! and when its own member counts as joined. Pure: the driver lists the members, asks,
//! and removes what it is told through the other control planes' endpoints.

use crate::distro::EtcdMember;

/// What a removal sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Only this node's own member (undoing its join).
    Own,
    /// This node's member and every member that never started and every learner: only
    /// the holder of the one join slot may be joining, and a join holds the slot until
    /// its member is a started voter, so these are left from failed joins (etcd also
    /// allows one learner at a time). Removing them needs quorum, which an unstarted
    /// member or a learner never costs (kubeadm's EtcdLearnerMode, k3s).
    OwnAndLeftovers,
}

/// One member to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: u64,
    pub name: String,
    pub learner: bool,
    pub started: bool,
    /// etcd may refuse, and the join goes on: this node's own unstarted VOTING member
    /// (kubeadm < 1.29 adds plain members). When it was the second member it cost the
    /// cluster its quorum, so etcd cannot remove it (a membership change needs quorum).
    /// The join reuses it instead (kubeadm's plain AddMember takes an existing peer URL
    /// as added) and starting it restores the quorum.
    pub may_stay: bool,
}

/// This node's member: by name (once started) or by peer URL (before).
fn is_own(m: &EtcdMember, node: &str, peer_url: &str) -> bool {
    m.name == node || m.peer_urls.iter().any(|p| p == peer_url)
}

/// The members to remove, in the order listed.
pub fn stale_members(
    members: &[EtcdMember],
    node: &str,
    peer_url: &str,
    sweep: Sweep,
) -> Vec<Removal> {
    let leftovers = sweep == Sweep::OwnAndLeftovers;
    members
        .iter()
        .filter(|m| is_own(m, node, peer_url) || (leftovers && (!m.started() || m.is_learner)))
        .map(|m| Removal {
            id: m.id,
            name: m.name.clone(),
            learner: m.is_learner,
            started: m.started(),
            may_stay: !m.started() && !m.is_learner && m.peer_urls.iter().any(|p| p == peer_url),
        })
        .collect()
}

/// A joined control plane's member is a started voter: until then the join holds its
/// slot (a learner or an unstarted member is still joining).
pub fn is_healthy_voter(members: &[EtcdMember], node: &str) -> bool {
    members
        .iter()
        .any(|m| m.name == node && m.started() && !m.is_learner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "https://10.0.0.12:2380";

    fn member(id: u64, name: &str, ip: u8, started: bool, learner: bool) -> EtcdMember {
        EtcdMember {
            id,
            name: if started { name.into() } else { String::new() },
            peer_urls: vec![format!("https://10.0.0.{ip}:2380")],
            client_urls: if started {
                vec![format!("https://10.0.0.{ip}:2379")]
            } else {
                Vec::new()
            },
            is_learner: learner,
        }
    }

    fn ids(r: &[Removal]) -> Vec<u64> {
        r.iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_joiner_sweeps_its_own_member_unstarted_members_and_learners() {
        let members = [
            member(1, "cp-1", 11, true, false),
            member(2, "cp-2", 12, true, false), // ours, from an earlier run
            member(3, "cp-3", 13, false, true), // an unstarted learner
            member(4, "cp-4", 14, true, true),  // a started, unpromoted learner
            member(5, "cp-5", 15, true, false),
        ];
        let r = stale_members(&members, "cp-2", PEER, Sweep::OwnAndLeftovers);
        assert_eq!(ids(&r), [2, 3, 4], "healthy voters of others stay");
        assert!(r.iter().all(|r| !r.may_stay));
    }

    #[test]
    fn undoing_a_join_removes_only_the_own_member() {
        let members = [
            member(1, "cp-1", 11, true, false),
            member(3, "cp-3", 13, false, true),
            member(7, "cp-2", 12, false, true), // ours, unstarted: known by peer URL only
        ];
        let r = stale_members(&members, "cp-2", PEER, Sweep::Own);
        assert_eq!(ids(&r), [7]);
        assert_eq!(r[0].name, "", "an unstarted member has no name yet");
    }

    #[test]
    fn only_the_own_unstarted_voter_may_stay_when_etcd_refuses() {
        let members = [
            member(2, "cp-2", 12, false, false), // ours, unstarted voter
            member(3, "cp-3", 13, false, false), // someone else's unstarted voter
            member(4, "cp-2", 12, false, true),  // ours, unstarted learner
        ];
        let r = stale_members(&members, "cp-2", PEER, Sweep::OwnAndLeftovers);
        let stays: Vec<(u64, bool)> = r.iter().map(|r| (r.id, r.may_stay)).collect();
        assert_eq!(stays, [(2, true), (3, false), (4, false)]);
    }

    #[test]
    fn nothing_to_sweep_in_a_clean_cluster() {
        let members = [
            member(1, "cp-1", 11, true, false),
            member(3, "cp-3", 13, true, false),
        ];
        assert!(stale_members(&members, "cp-2", PEER, Sweep::OwnAndLeftovers).is_empty());
        assert!(stale_members(&[], "cp-2", PEER, Sweep::Own).is_empty());
    }

    #[test]
    fn a_join_is_complete_once_its_member_is_a_started_voter() {
        let joined = [member(2, "cp-2", 12, true, false)];
        let learning = [member(2, "cp-2", 12, true, true)];
        let unstarted = [member(2, "cp-2", 12, false, false)];
        let other = [member(1, "cp-1", 11, true, false)];
        assert!(is_healthy_voter(&joined, "cp-2"));
        assert!(!is_healthy_voter(&learning, "cp-2"));
        assert!(!is_healthy_voter(&unstarted, "cp-2"));
        assert!(!is_healthy_voter(&other, "cp-2"));
    }
}
