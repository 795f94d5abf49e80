//! One observation of the stacked etcd cluster: its members (started, learner, healthy)
//! and the quorum arithmetic over the voting ones (`model::quorum`). A joined control
//! plane's agent puts its view in the member report it heartbeats (sealed like every
//! report); `nodeagent status` shows the freshest one and, on a control plane, a live one.

use crate::clock::Millis;
use crate::distro::{DistroError, DistroResult, EtcdAccess, EtcdApi, EtcdMember};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long the member report's view waits for one etcd endpoint or member.
pub const MEMBER_DEADLINE: Duration = Duration::from_secs(2);

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

    /// Lists the members through `access` (every endpoint at once, the first in order that
    /// answers wins) and asks every started member's `/health` at once. Each endpoint and
    /// each member has `per_member` to answer: one hung member counts as unhealthy instead
    /// of stalling the view, so a lost quorum shows as lost. Fails only when no endpoint
    /// lists the members.
    pub async fn observe<D: EtcdApi>(
        distro: &D,
        access: &EtcdAccess,
        observed_by: &str,
        observed_ms: Millis,
        per_member: Duration,
    ) -> DistroResult<EtcdView> {
        let members = list_members(distro, access, per_member).await?;
        let probes = members.iter().map(|m| async move {
            match m.client_urls.first() {
                Some(url) if m.started() => {
                    tokio::time::timeout(per_member, distro.etcd_member_healthy(&access.creds, url))
                        .await
                        .unwrap_or(false)
                }
                _ => false,
            }
        });
        let healthy = futures::future::join_all(probes).await;
        Ok(EtcdView::new(observed_by, observed_ms, &members, &healthy))
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

/// The member list from the first endpoint (in `access` order) that answers within
/// `per_member`; all endpoints are asked at once.
async fn list_members<D: EtcdApi>(
    distro: &D,
    access: &EtcdAccess,
    per_member: Duration,
) -> DistroResult<Vec<EtcdMember>> {
    let asks = access.endpoints.iter().map(|ep| async move {
        let one = EtcdAccess {
            endpoints: vec![ep.clone()],
            creds: access.creds.clone(),
        };
        match tokio::time::timeout(per_member, distro.etcd_members(&one)).await {
            Ok(r) => r,
            Err(_) => Err(DistroError::Http {
                step: "list etcd members",
                url: ep.clone(),
                detail: format!("no answer within {} ms", per_member.as_millis()),
            }),
        }
    });
    let mut last = DistroError::Other {
        step: "list etcd members",
        detail: "no etcd endpoint to ask".into(),
    };
    for r in futures::future::join_all(asks).await {
        match r {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn member(id: u64, name: &str, ip: &str, learner: bool) -> EtcdMember {
        EtcdMember {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{ip}:2380")],
            client_urls: if name.is_empty() {
                Vec::new()
            } else {
                vec![format!("https://{ip}:2379")]
            },
            is_learner: learner,
        }
    }

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

    /// Three external members; `down` refuse at once, `hung` never answer.
    struct FakeEtcd {
        down: Vec<&'static str>,
        hung: Vec<&'static str>,
    }

    impl FakeEtcd {
        async fn answer(&self, url: &str) -> bool {
            if self.hung.iter().any(|h| url.contains(h)) {
                std::future::pending::<()>().await;
            }
            !self.down.iter().any(|d| url.contains(d))
        }
    }

    impl EtcdApi for FakeEtcd {
        async fn etcd_members(&self, access: &EtcdAccess) -> DistroResult<Vec<EtcdMember>> {
            let ep = &access.endpoints[0];
            if !self.answer(ep).await {
                return Err(DistroError::Other {
                    step: "list",
                    detail: format!("{ep} refused"),
                });
            }
            Ok((1..=3)
                .map(|i| member(i, &format!("etcd-{i}"), &format!("10.0.0.8{i}"), false))
                .collect())
        }
        async fn etcd_member_healthy(&self, _: &crate::material::EtcdCreds, url: &str) -> bool {
            // A lone member answers, but without quorum it is not healthy.
            self.answer(url).await && self.down.len() + self.hung.len() < 2
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_member_counts_as_down_and_quorum_loss_shows() {
        let access = EtcdAccess {
            endpoints: (1..=3)
                .map(|i| format!("https://10.0.0.8{i}:2379"))
                .collect(),
            creds: crate::material::EtcdCreds {
                ca_pem: String::new(),
                cert_pem: String::new(),
                key_pem: crate::material::Secret(String::new()),
            },
        };
        let d = Duration::from_secs(1);
        let one_hung = FakeEtcd {
            down: vec![],
            hung: vec!["10.0.0.81"],
        };
        let v = EtcdView::observe(&one_hung, &access, "cp-1", 0, d)
            .await
            .unwrap();
        assert_eq!(v.members.len(), 3, "listed through a member that answers");
        assert!(v.quorum.has_quorum, "{}", v.render(""));
        assert_eq!(v.quorum.healthy_voting, 2);
        let two_out = FakeEtcd {
            down: vec!["10.0.0.82"],
            hung: vec!["10.0.0.81"],
        };
        let v = EtcdView::observe(&two_out, &access, "cp-1", 0, d)
            .await
            .unwrap();
        assert!(!v.quorum.has_quorum);
        assert!(v.render("").contains("LOST"), "{}", v.render(""));
        let all_hung = FakeEtcd {
            down: vec![],
            hung: vec!["10.0.0.8"],
        };
        let e = EtcdView::observe(&all_hung, &access, "cp-1", 0, d)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no answer within 1000 ms"), "{e}");
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
