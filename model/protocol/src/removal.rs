//! Removing a node for good (issue 16, `muster remove`): whether etcd's quorum survives the
//! removal of a node's member, and the durable tombstone (`removed.<node>`) that tells
//! `muster status` the node was removed on purpose and tells the node's agent to stop for
//! good. Pure; `muster remove` (builder/core/src/ops/remove.rs) carries a removal out.

use crate::clock::Millis;
use crate::etcd_view::EtcdMemberHealth;
use crate::keys;
use serde::{Deserialize, Serialize};

/// The tombstone's key for `node`.
pub fn tombstone_key(node: &str) -> String {
    format!("{}{node}", keys::REMOVED_PREFIX)
}

/// The node a tombstone key names (`None` for other keys).
pub fn tombstoned_node(key: &str) -> Option<&str> {
    key.strip_prefix(keys::REMOVED_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The value of a `removed.<node>` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    pub node: String,
    pub role: String,
    pub by: String,
    pub at_ms: Millis,
}

/// Why a member's removal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "etcd has {healthy} healthy of {voting} voting members and needs {quorum} to commit \
         any membership change: bring members back before removing one"
    )]
    NoQuorumNow {
        voting: u32,
        healthy: u32,
        quorum: u32,
    },
    #[error(
        "removing {node} leaves {healthy_after} healthy of {voting_after} voting members, \
         short of the {quorum_after} etcd needs: the cluster would stop accepting writes"
    )]
    QuorumLost {
        node: String,
        voting_after: u32,
        healthy_after: u32,
        quorum_after: u32,
    },
    #[error("{node} is the last voting etcd member: remove the cluster (`muster reset`) instead")]
    LastMember { node: String },
}

/// Whether `node`'s member can be removed from `members`: the change itself must commit
/// (quorum now) and the remaining voters must still have quorum. A node with no member
/// (a worker, or a control plane whose join never added one) is always fine.
pub fn check(members: &[EtcdMemberHealth], node: &str) -> Result<(), Refusal> {
    let voters: Vec<&EtcdMemberHealth> = members.iter().filter(|m| !m.learner).collect();
    let count = |it: &mut dyn Iterator<Item = &&EtcdMemberHealth>| {
        u32::try_from(it.count()).unwrap_or(u32::MAX)
    };
    let voting = count(&mut voters.iter());
    let healthy = count(&mut voters.iter().filter(|m| m.healthy));
    let target_votes = voters.iter().any(|m| m.name == node);
    if !members.iter().any(|m| m.name == node) {
        return Ok(());
    }
    let quorum = model::quorum::row(voting.max(1)).quorum;
    if healthy < quorum {
        return Err(Refusal::NoQuorumNow {
            voting,
            healthy,
            quorum,
        });
    }
    if !target_votes {
        return Ok(()); // a learner: no vote lost
    }
    let voting_after = voting - 1;
    if voting_after == 0 {
        return Err(Refusal::LastMember { node: node.into() });
    }
    let target_healthy = voters.iter().any(|m| m.name == node && m.healthy);
    let healthy_after = healthy - u32::from(target_healthy);
    let quorum_after = model::quorum::row(voting_after).quorum;
    if healthy_after < quorum_after {
        return Err(Refusal::QuorumLost {
            node: node.into(),
            voting_after,
            healthy_after,
            quorum_after,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, healthy: bool, learner: bool) -> EtcdMemberHealth {
        EtcdMemberHealth {
            id: format!("{:x}", name.len()),
            name: name.into(),
            peer_urls: vec![],
            started: true,
            learner,
            healthy,
        }
    }

    #[test]
    fn three_healthy_lose_one_fine() {
        let ms = [
            m("cp-1", true, false),
            m("cp-2", true, false),
            m("cp-3", true, false),
        ];
        assert_eq!(check(&ms, "cp-1"), Ok(()), "the init node too");
        assert_eq!(check(&ms, "wk-1"), Ok(()), "no member: nothing to lose");
    }

    #[test]
    fn a_dead_voter_is_removed_even_when_another_is_down_if_quorum_holds() {
        let ms = [
            m("cp-1", true, false),
            m("cp-2", true, false),
            m("cp-3", false, false),
        ];
        assert_eq!(check(&ms, "cp-3"), Ok(()));
        // Removing a healthy one leaves 1 healthy of 2: lost.
        assert_eq!(
            check(&ms, "cp-1"),
            Err(Refusal::QuorumLost {
                node: "cp-1".into(),
                voting_after: 2,
                healthy_after: 1,
                quorum_after: 2
            })
        );
    }

    #[test]
    fn two_members_one_down_nothing_commits() {
        let ms = [m("cp-1", true, false), m("cp-2", false, false)];
        let r = check(&ms, "cp-2").unwrap_err();
        assert_eq!(
            r,
            Refusal::NoQuorumNow {
                voting: 2,
                healthy: 1,
                quorum: 2
            }
        );
        assert!(r.to_string().contains("needs 2 to commit"), "{r}");
    }

    #[test]
    fn two_healthy_members_can_lose_one_but_not_the_last() {
        let ms = [m("cp-1", true, false), m("cp-2", true, false)];
        assert_eq!(check(&ms, "cp-2"), Ok(()));
        let one = [m("cp-1", true, false)];
        assert_eq!(
            check(&one, "cp-1"),
            Err(Refusal::LastMember {
                node: "cp-1".into()
            })
        );
    }

    #[test]
    fn a_learner_costs_no_vote() {
        let ms = [
            m("cp-1", true, false),
            m("cp-2", true, false),
            m("cp-3", false, true),
        ];
        assert_eq!(check(&ms, "cp-3"), Ok(()));
    }

    #[test]
    fn tombstone_keys_round_trip() {
        assert_eq!(tombstone_key("wk-1"), "removed.wk-1");
        assert_eq!(tombstoned_node("removed.wk-1"), Some("wk-1"));
        assert_eq!(tombstoned_node("removed."), None);
        assert_eq!(tombstoned_node("initialized"), None);
    }
}
