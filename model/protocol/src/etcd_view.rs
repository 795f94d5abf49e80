//! One observation of the stacked etcd cluster: its members (started, learner, healthy)
//! and the quorum arithmetic over the voting ones (`model::quorum`). A joined control
//! plane's agent puts its view in the member report it heartbeats (sealed like every
//! report); `nodeagent status` shows the freshest one and, on a control plane, a live one.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// One etcd member as the cluster lists it (`etcdctl member list`, the v3 gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl EtcdMember {
    pub fn started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMemberHealth {
    /// The member ID in hex, as `etcdctl member list` prints it.
    pub id: String,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Added and has run at least once (a member added but never started has neither a
    /// name nor client URLs).
    pub started: bool,
    /// A non-voting learner (kubeadm's EtcdLearnerMode): does not count toward quorum.
    pub learner: bool,
    /// Its `/health` answered `{"health":"true"}`.
    pub healthy: bool,
}

/// Quorum over the voting members (learners do not vote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuorumState {
    pub voting: u32,
    pub learners: u32,
    pub healthy_voting: u32,
    /// Voting members needed for a write to commit.
    pub quorum: u32,
    /// Failures this membership tolerates when every member is healthy.
    pub can_lose: u32,
    /// Further failures tolerated now, with the members that are down.
    pub failures_tolerated: u32,
    pub has_quorum: bool,
}

impl QuorumState {
    pub fn of(members: &[EtcdMemberHealth]) -> QuorumState {
        let count = |f: &dyn Fn(&EtcdMemberHealth) -> bool| {
            u32::try_from(members.iter().filter(|m| f(m)).count()).unwrap_or(u32::MAX)
        };
        let voting = count(&|m| !m.learner);
        let learners = count(&|m| m.learner);
        let healthy_voting = count(&|m| !m.learner && m.healthy);
        // No voting member at all cannot happen in a running cluster; it has no quorum.
        let row = model::quorum::row(voting.max(1));
        let has_quorum = voting > 0 && healthy_voting >= row.quorum;
        QuorumState {
            voting,
            learners,
            healthy_voting,
            quorum: row.quorum,
            can_lose: if voting > 0 { row.can_lose } else { 0 },
            failures_tolerated: if has_quorum {
                healthy_voting - row.quorum
            } else {
                0
            },
            has_quorum,
        }
    }
}

/// What one node saw of etcd at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdView {
    pub observed_by: String,
    pub observed_ms: Millis,
    pub members: Vec<EtcdMemberHealth>,
    pub quorum: QuorumState,
}

impl EtcdView {
    /// The view from a member list and, per member, whether its `/health` answered true.
    pub fn new(
        observed_by: &str,
        observed_ms: Millis,
        members: &[EtcdMember],
        healthy: &[bool],
    ) -> EtcdView {
        let mut members: Vec<EtcdMemberHealth> = members
            .iter()
            .zip(healthy.iter().chain(std::iter::repeat(&false)))
            .map(|(m, h)| EtcdMemberHealth {
                id: format!("{:x}", m.id),
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                started: m.started(),
                learner: m.is_learner,
                healthy: *h && m.started(),
            })
            .collect();
        members.sort_by(|a, b| (&a.name, &a.peer_urls).cmp(&(&b.name, &b.peer_urls)));
        let quorum = QuorumState::of(&members);
        EtcdView {
            observed_by: observed_by.to_string(),
            observed_ms,
            members,
            quorum,
        }
    }

    /// Human lines: a summary and one line per member, each indented by `indent`.
    pub fn render(&self, indent: &str) -> String {
        let q = &self.quorum;
        let mut s = format!(
            "{indent}{} voting member(s), {} learner(s); {} voting healthy; quorum {}: {}\n",
            q.voting,
            q.learners,
            q.healthy_voting,
            q.quorum,
            if q.has_quorum {
                format!(
                    "held, tolerates {} more failure(s) (of {} by design)",
                    q.failures_tolerated, q.can_lose
                )
            } else {
                "LOST (writes and the API stop until enough voting members are back)".into()
            }
        );
        for m in &self.members {
            let name = if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            };
            s.push_str(&format!(
                "{indent}  {:<20} {:<16} {:<28} {:<9} {:<7} {}\n",
                name,
                m.id,
                m.peer_urls.join(","),
                if m.started { "started" } else { "unstarted" },
                if m.learner { "learner" } else { "voter" },
                if m.healthy { "healthy" } else { "unhealthy" },
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::member;

    #[test]
    fn quorum_counts_only_healthy_voters() {
        let ms = [
            member(1, "cp-1", "10.0.0.11", false),
            member(2, "cp-2", "10.0.0.12", false),
            member(3, "cp-3", "10.0.0.13", false),
        ];
        let v = EtcdView::new("cp-1", 5, &ms, &[true, true, true]);
        assert_eq!(
            v.quorum,
            QuorumState {
                voting: 3,
                learners: 0,
                healthy_voting: 3,
                quorum: 2,
                can_lose: 1,
                failures_tolerated: 1,
                has_quorum: true
            }
        );
        let v = EtcdView::new("cp-1", 5, &ms, &[true, false, true]);
        assert!(v.quorum.has_quorum);
        assert_eq!(v.quorum.failures_tolerated, 0);
        let v = EtcdView::new("cp-1", 5, &ms, &[true, false, false]);
        assert!(!v.quorum.has_quorum);
        assert!(v.render("").contains("LOST"), "{}", v.render(""));
    }

    #[test]
    fn an_unstarted_learner_keeps_quorum_an_unstarted_voter_loses_it() {
        // The first control-plane join crashed right after `member add`.
        let learner = [
            member(1, "cp-1", "10.0.0.11", false),
            member(2, "", "10.0.0.12", true),
        ];
        let v = EtcdView::new("cp-1", 5, &learner, &[true, false]);
        assert_eq!((v.quorum.voting, v.quorum.learners), (1, 1));
        assert!(v.quorum.has_quorum);
        assert!(!v.members[0].started, "unstarted sorts first: no name");
        let voter = [
            member(1, "cp-1", "10.0.0.11", false),
            member(2, "", "10.0.0.12", false),
        ];
        let v = EtcdView::new("cp-1", 5, &voter, &[true, true]);
        assert!(!v.members.iter().any(|m| !m.started && m.healthy));
        assert_eq!((v.quorum.voting, v.quorum.healthy_voting), (2, 1));
        assert!(!v.quorum.has_quorum);
        assert!(!EtcdView::new("x", 0, &[], &[]).quorum.has_quorum);
    }

    #[test]
    fn renders_and_serializes_members() {
        let ms = [
            member(0xabc, "cp-1", "10.0.0.11", false),
            member(0xdef, "", "10.0.0.12", true),
        ];
        let v = EtcdView::new("cp-1", 5, &ms, &[true, false]);
        let text = v.render("  ");
        for want in [
            "1 voting member(s), 1 learner(s); 1 voting healthy; quorum 1: held, tolerates 0 more failure(s) (of 0 by design)",
            "cp-1",
            "abc",
            "https://10.0.0.12:2380",
            "unstarted",
            "learner",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["observedBy"], "cp-1");
        assert_eq!(j["quorum"]["hasQuorum"], true);
        assert_eq!(j["quorum"]["failuresTolerated"], 0);
        assert_eq!(j["members"][1]["peerUrls"][0], "https://10.0.0.11:2380");
        assert_eq!(j["members"][0]["learner"], true);
        assert_eq!(serde_json::from_value::<EtcdView>(j).unwrap(), v);
    }
}
