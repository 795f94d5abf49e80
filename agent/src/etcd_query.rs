//! The live etcd observation behind the member report's view ([`EtcdView`]): lists the
//! members through any endpoint that answers and asks each started member's `/health`,
//! each with its own deadline, so one hung member cannot stall the view.

use crate::distro::{DistroError, DistroResult, EtcdAccess, EtcdApi, EtcdMember};
use protocol::clock::Millis;
use protocol::etcd_view::EtcdView;
use std::time::Duration;

/// How long the member report's view waits for one etcd endpoint or member.
pub const MEMBER_DEADLINE: Duration = Duration::from_secs(2);

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
mod tests {
    use super::*;
    use protocol::testkit::member;

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
        async fn etcd_member_healthy(&self, _: &protocol::records::EtcdCreds, url: &str) -> bool {
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
            creds: protocol::records::EtcdCreds {
                ca_pem: String::new(),
                cert_pem: String::new(),
                key_pem: protocol::records::Secret(String::new()),
            },
        };
        let d = Duration::from_secs(1);
        let one_hung = FakeEtcd {
            down: vec![],
            hung: vec!["10.0.0.81"],
        };
        let v = observe(&one_hung, &access, "cp-1", 0, d).await.unwrap();
        assert_eq!(v.members.len(), 3, "listed through a member that answers");
        assert!(v.quorum.has_quorum, "{}", v.render(""));
        assert_eq!(v.quorum.healthy_voting, 2);
        let two_out = FakeEtcd {
            down: vec!["10.0.0.82"],
            hung: vec!["10.0.0.81"],
        };
        let v = observe(&two_out, &access, "cp-1", 0, d).await.unwrap();
        assert!(!v.quorum.has_quorum);
        assert!(v.render("").contains("LOST"), "{}", v.render(""));
        let all_hung = FakeEtcd {
            down: vec![],
            hung: vec!["10.0.0.8"],
        };
        let e = observe(&all_hung, &access, "cp-1", 0, d).await.unwrap_err();
        assert!(e.to_string().contains("no answer within 1000 ms"), "{e}");
    }
}
