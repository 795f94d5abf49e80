//! `nodeagent status`: works with the daemon down. Reads this node's `AGENT_STATUS` and
//! `AGENT_STATE`, and asks the rendezvous (when reachable) about the cluster: members'
//! roles and phases, who initialized, who holds the join slot, and the freshest view of
//! etcd (members, health, quorum) a control plane put in its report. On a control plane it
//! also asks etcd directly. Exit code 0 healthy (this node done and etcd's quorum held),
//! 1 not.

use crate::bootstrap::store::{FileStore, Persisted, Store};
use crate::clock::Millis;
use crate::coord::keys;
use crate::etcd_view::EtcdView;
use crate::material::InitRecord;
use crate::rendezvous::{
    AuditEntry, Client, ClientError, PlainMember, RetryPolicy, holders_from_audit,
};
use model::node_files::NodeRoot;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub role: Option<String>,
    pub phase: String,
    pub since_ms: Option<Millis>,
    pub seconds_in_phase: Option<u64>,
    pub attempt: u32,
    pub last_error: Option<String>,
    /// Errors met on the way (each retry counts), including ones since recovered from.
    pub failures: u32,
    /// The most recent of them, kept after recovery.
    pub last_failure: Option<crate::bootstrap::store::Failure>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub role: String,
    pub phase: Option<String>,
    pub attempt: Option<u64>,
    pub last_error: Option<String>,
}

/// Whether the API endpoint (the VIP) accepts a TCP connection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCheck {
    pub endpoint: String,
    pub answers: bool,
    pub error: Option<String>,
}

/// A view of etcd with where it came from and how old it is.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSeen {
    /// `reported`: a control plane's member report at the rendezvous; `live`: asked now
    /// from this node.
    pub source: &'static str,
    pub age_seconds: u64,
    #[serde(flatten)]
    pub view: EtcdView,
}

impl EtcdSeen {
    fn new(source: &'static str, view: EtcdView, now: Millis) -> EtcdSeen {
        EtcdSeen {
            source,
            age_seconds: now.saturating_sub(view.observed_ms) / 1000,
            view,
        }
    }
}

/// The live query of etcd from this control plane: the view, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEtcd {
    /// Which etcd was asked: `stacked` (kubeadm's member on this node), `external` (the
    /// spec's external cluster), `embedded` (k3s's).
    pub kind: &'static str,
    pub view: Option<EtcdSeen>,
    pub error: Option<String>,
}

/// The cluster as the rendezvous sees it; `reachable: false` with `error` when it could
/// not be asked (the other fields are then empty).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub reachable: bool,
    pub error: Option<String>,
    pub members: Vec<MemberStatus>,
    pub initialized_by: Option<String>,
    /// Holders of the `cp-join` slot (at most one), from the audit log.
    pub cp_join_holders: Vec<String>,
    /// Holders of the `worker-join` slots, from the audit log.
    pub worker_join_holders: Vec<String>,
    /// The freshest etcd view any control plane reported (stacked or external etcd).
    pub etcd: Option<EtcdSeen>,
    pub api: Option<ApiCheck>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub this_node: Option<NodeStatus>,
    pub cluster: Option<ClusterStatus>,
    /// On a control plane: etcd asked directly, now.
    pub local_etcd: Option<LocalEtcd>,
    /// The best view of etcd (live, else the freshest reported) says quorum is lost.
    pub etcd_quorum_lost: bool,
    pub healthy: bool,
}

/// This node's status from its files; `None` when the agent never ran here.
pub fn local(
    root: &NodeRoot,
    now: Millis,
) -> Result<Option<NodeStatus>, crate::bootstrap::store::StoreError> {
    let store = FileStore::new(root.clone());
    let Some(p): Option<Persisted> = store.load()? else {
        return Ok(None);
    };
    let role = std::fs::read_to_string(root.path(model::node_files::AGENT_STATUS))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(str::to_string));
    let since = p.since_ms();
    Ok(Some(NodeStatus {
        node: p.node.clone(),
        role,
        phase: p.state.phase.name().to_string(),
        since_ms: since,
        seconds_in_phase: since.map(|s| now.saturating_sub(s) / 1000),
        attempt: p.state.attempt,
        last_error: p.state.last_error.clone(),
        failures: p.failures,
        last_failure: p.last_failure.clone(),
    }))
}

impl ClusterStatus {
    pub fn unreachable(reason: impl Into<String>) -> ClusterStatus {
        ClusterStatus {
            reachable: false,
            error: Some(reason.into()),
            members: Vec::new(),
            initialized_by: None,
            cp_join_holders: Vec::new(),
            worker_join_holders: Vec::new(),
            etcd: None,
            api: None,
        }
    }

    /// The view from what the rendezvous answered: opened member reports, the
    /// initialization record and the whole audit log.
    pub fn from_parts(
        members: Vec<PlainMember>,
        initialized: Option<InitRecord>,
        audit: &[AuditEntry],
        now: Millis,
    ) -> ClusterStatus {
        let etcd =
            crate::report::freshest_etcd(&members).map(|v| EtcdSeen::new("reported", v, now));
        let str_of =
            |r: &serde_json::Value, k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut members: Vec<MemberStatus> = members
            .into_iter()
            .map(|m| MemberStatus {
                phase: str_of(&m.report, "phase"),
                attempt: m.report.get("attempt").and_then(serde_json::Value::as_u64),
                last_error: str_of(&m.report, "lastError"),
                name: m.name,
                role: m.role,
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let names = |sem: &str| {
            holders_from_audit(audit, sem)
                .into_iter()
                .map(|h| h.holder)
                .collect()
        };
        ClusterStatus {
            reachable: true,
            error: None,
            members,
            initialized_by: initialized.map(|r| r.node),
            cp_join_holders: names(keys::CP_JOIN_SEMAPHORE),
            worker_join_holders: names(keys::WORKER_JOIN_SEMAPHORE),
            etcd,
            api: None,
        }
    }
}

/// Asks the rendezvous (members, the initialization record, the audit log), all within
/// `timeout`, and probes the API endpoint meanwhile.
pub async fn cluster(client: &Client, api_endpoint: &str, timeout: Duration) -> ClusterStatus {
    let ask = async {
        let (_, members) = client.members().await?;
        let initialized = match client.get(keys::INITIALIZED).await? {
            Some(r) => serde_json::from_slice::<InitRecord>(&r.value).ok(),
            None => None,
        };
        let mut audit: Vec<AuditEntry> = Vec::new();
        loop {
            let after = audit.last().map_or(0, |e| e.seq);
            let page = client.audit(after).await?;
            if page.is_empty() {
                break;
            }
            audit.extend(page);
        }
        Ok::<_, ClientError>(ClusterStatus::from_parts(
            members,
            initialized,
            &audit,
            now_ms(),
        ))
    };
    let (view, api) = tokio::join!(
        tokio::time::timeout(timeout, ask),
        probe_api(api_endpoint, timeout)
    );
    let mut out = match view {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => ClusterStatus::unreachable(e.to_string()),
        Err(_) => ClusterStatus::unreachable(format!("no answer within {}s", timeout.as_secs())),
    };
    out.api = Some(api);
    out
}

/// The cluster view for the node at `root`: its baked config and secret name the
/// rendezvous and the API endpoint. Never fails: problems become `reachable: false`.
pub async fn cluster_for(root: &NodeRoot, timeout: Duration) -> ClusterStatus {
    let (baked, id) = match crate::app::load(root) {
        Ok(x) => x,
        Err(e) => return ClusterStatus::unreachable(format!("cannot load the baked config: {e}")),
    };
    let secret = match crate::app::load_secret(root) {
        Ok(s) => s,
        Err(e) => {
            return ClusterStatus::unreachable(format!("cannot read the cluster secret: {e}"));
        }
    };
    match Client::from_baked(&baked.rendezvous, &secret, id.name.as_str()) {
        Ok(c) => {
            cluster(
                &c.with_retry(RetryPolicy::none()),
                &baked.api_endpoint,
                timeout,
            )
            .await
        }
        Err(e) => ClusterStatus::unreachable(format!("rendezvous client: {e}")),
    }
}

fn now_ms() -> Millis {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

/// On a control plane: ask etcd now, with this node's own credentials (stacked: its own
/// endpoint first; external: the external cluster with the API server's client
/// certificate), within `timeout`. `None` on other nodes.
pub async fn local_etcd_for(root: &NodeRoot, timeout: Duration) -> Option<LocalEtcd> {
    let (baked, id) = crate::app::load(root).ok()?;
    let (cfg, settings) = crate::app::configure(&baked, &id).ok()?;
    if cfg.role != model::Role::ControlPlane || !settings.has_etcd_view(cfg.stacked_etcd) {
        return None;
    }
    let external = !settings.external_etcd.is_empty();
    let kind = match (cfg.distro, external) {
        (model::spec::DistroKind::K3s, _) => "embedded",
        (_, true) => "external",
        (_, false) => "stacked",
    };
    let failed = |e: String| {
        Some(LocalEtcd {
            kind,
            view: None,
            error: Some(e),
        })
    };
    let creds = match cfg.distro {
        model::spec::DistroKind::Kubeadm => {
            crate::distro::kubeadm::view_creds(root, external).map(Some)
        }
        model::spec::DistroKind::K3s => crate::distro::k3s::etcd_creds(root),
    };
    let creds = match creds {
        Ok(Some(c)) => c,
        Ok(None) => return failed("this node runs no embedded etcd".into()),
        Err(e) => return failed(format!("no etcd credentials here (not joined yet?): {e}")),
    };
    let access = crate::distro::EtcdAccess {
        endpoints: settings.etcd_view_endpoints(),
        creds,
    };
    let ask = EtcdView::observe(
        &crate::distro::GatewayEtcd,
        &access,
        &settings.node,
        now_ms(),
        // The list, then the health probes: each within half, so a member that hangs
        // counts as down and the view still arrives within `timeout`.
        (timeout / 2).max(Duration::from_millis(500)),
    );
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(v)) => Some(LocalEtcd {
            kind,
            view: Some(EtcdSeen::new("live", v, now_ms())),
            error: None,
        }),
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => failed(format!("etcd did not answer within {}s", timeout.as_secs())),
    }
}

/// A TCP connect to `endpoint` (`host:port`) within `timeout`.
pub async fn probe_api(endpoint: &str, timeout: Duration) -> ApiCheck {
    let error = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint)).await
    {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", timeout.as_secs())),
    };
    ApiCheck {
        endpoint: endpoint.to_string(),
        answers: error.is_none(),
        error,
    }
}

fn list_or(v: &[String], empty: &str) -> String {
    if v.is_empty() {
        empty.to_string()
    } else {
        v.join(", ")
    }
}

impl Status {
    pub fn new(this_node: Option<NodeStatus>, cluster: Option<ClusterStatus>) -> Self {
        Status::with_local_etcd(this_node, cluster, None)
    }

    /// Healthy: this node is done and etcd's quorum holds by the best view there is (the
    /// live one, else the freshest reported; no view at all does not count against it). A
    /// control plane whose own etcd did not answer is not healthy, whatever an older report
    /// says (its member not answering is how a lost quorum looks from inside).
    pub fn with_local_etcd(
        this_node: Option<NodeStatus>,
        cluster: Option<ClusterStatus>,
        local_etcd: Option<LocalEtcd>,
    ) -> Self {
        let best = local_etcd
            .as_ref()
            .and_then(|l| l.view.as_ref())
            .or_else(|| cluster.as_ref().and_then(|c| c.etcd.as_ref()));
        let etcd_quorum_lost = best.is_some_and(|v| !v.view.quorum.has_quorum);
        let live_failed = local_etcd.as_ref().is_some_and(|l| l.view.is_none());
        let healthy = this_node.as_ref().is_some_and(|n| n.phase == "done")
            && !etcd_quorum_lost
            && !live_failed;
        Status {
            this_node,
            cluster,
            local_etcd,
            etcd_quorum_lost,
            healthy,
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        match &self.this_node {
            None => s.push_str("this node: the agent has not run here\n"),
            Some(n) => {
                s.push_str(&format!(
                    "this node: {} ({}) phase {} for {}s, attempt {}\n",
                    n.node,
                    n.role.as_deref().unwrap_or("?"),
                    n.phase,
                    n.seconds_in_phase.unwrap_or(0),
                    n.attempt
                ));
                if let Some(e) = &n.last_error {
                    s.push_str(&format!("  last error: {e}\n"));
                } else if let Some(f) = &n.last_failure {
                    s.push_str(&format!(
                        "  recovered from {} failure(s); the last (attempt {}): {}\n",
                        n.failures, f.attempt, f.error
                    ));
                }
            }
        }
        if let Some(c) = &self.cluster {
            if c.reachable {
                s.push_str(&format!(
                    "cluster: {} member(s); initialized by {}\n",
                    c.members.len(),
                    c.initialized_by.as_deref().unwrap_or("nobody yet")
                ));
                s.push_str(&format!(
                    "  cp-join slot: {}\n  worker-join slots: {}\n",
                    list_or(&c.cp_join_holders, "free"),
                    list_or(&c.worker_join_holders, "free")
                ));
            } else {
                s.push_str(&format!(
                    "cluster: unreachable ({})\n",
                    c.error.as_deref().unwrap_or("?")
                ));
            }
            if let Some(a) = &c.api {
                match &a.error {
                    None => s.push_str(&format!("  API endpoint {}: answers\n", a.endpoint)),
                    Some(e) => s.push_str(&format!(
                        "  API endpoint {}: does not answer ({e})\n",
                        a.endpoint
                    )),
                }
            }
            for m in &c.members {
                s.push_str(&format!(
                    "  {:<20} {:<14} {}{}\n",
                    m.name,
                    m.role,
                    m.phase.as_deref().unwrap_or("?"),
                    m.last_error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" (last error: {e})"))
                ));
            }
            if let Some(e) = &c.etcd {
                s.push_str(&etcd_lines(e, None));
            }
        }
        if let Some(l) = &self.local_etcd {
            match (&l.view, &l.error) {
                (Some(v), _) => s.push_str(&etcd_lines(v, Some(l.kind))),
                (None, e) => s.push_str(&format!(
                    "{} etcd (live from this node): cannot ask ({})\n",
                    l.kind,
                    e.as_deref().unwrap_or("?")
                )),
            }
        }
        s.push_str(if self.healthy {
            "healthy\n"
        } else if self.etcd_quorum_lost {
            "not healthy: etcd has lost its quorum\n"
        } else {
            "not healthy\n"
        });
        s
    }
}

/// `kind` (`stacked`, `external`, `embedded`) when this node knows which etcd it asked.
fn etcd_lines(e: &EtcdSeen, kind: Option<&str>) -> String {
    let from = match e.source {
        "live" => "live from this node".to_string(),
        _ => format!("reported by {}", e.view.observed_by),
    };
    let kind = kind.map_or(String::new(), |k| format!("{k} "));
    format!(
        "{kind}etcd ({from}, {}s ago):\n{}",
        e.age_seconds,
        e.view.render("  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::state::{Phase, State};

    #[test]
    fn reads_state_with_daemon_down() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        assert!(local(&root, 0).unwrap().is_none());
        let mut p = Persisted::new("cp-2", 1_000);
        p.enter(
            State {
                phase: Phase::AcquiringJoinSlot,
                attempt: 2,
                last_error: Some("join: etcdserver: Peer URLs already exists".into()),
            },
            5_000,
        );
        FileStore::new(root.clone()).save(&p).unwrap();
        let n = local(&root, 65_000).unwrap().unwrap();
        assert_eq!(n.phase, "acquiring-join-slot");
        assert_eq!(n.seconds_in_phase, Some(60));
        let st = Status::new(Some(n), None);
        assert!(!st.healthy);
        let text = st.render();
        assert!(text.contains("Peer URLs already exists"), "{text}");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["thisNode"]["attempt"], 2);

        // Recovered: the state's error is gone, the last failure stays visible.
        p.enter(
            State {
                phase: Phase::Done,
                attempt: 0,
                last_error: None,
            },
            70_000,
        );
        FileStore::new(root.clone()).save(&p).unwrap();
        let st = Status::new(Some(local(&root, 71_000).unwrap().unwrap()), None);
        assert!(st.healthy);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["thisNode"]["failures"], 1);
        assert_eq!(json["thisNode"]["lastFailure"]["attempt"], 2);
        assert!(st.render().contains("recovered from 1 failure(s)"));
    }

    fn member(name: &str, role: &str, report: serde_json::Value) -> PlainMember {
        PlainMember {
            name: name.into(),
            role: role.into(),
            report,
            revision: 1,
            expires_at_ms: 0,
        }
    }

    fn done_node() -> NodeStatus {
        NodeStatus {
            node: "cp-1".into(),
            role: Some("control-plane".into()),
            phase: "done".into(),
            since_ms: Some(0),
            seconds_in_phase: Some(5),
            attempt: 0,
            last_error: None,
            failures: 0,
            last_failure: None,
        }
    }

    #[test]
    fn renders_the_cluster_view() {
        use crate::rendezvous::AuditEvent;
        let e = crate::rendezvous::holders::tests::e;
        let log = [
            e(1, AuditEvent::Granted, keys::CP_JOIN_SEMAPHORE, "cp-2", 1),
            e(2, AuditEvent::Released, keys::CP_JOIN_SEMAPHORE, "cp-2", 1),
            e(
                3,
                AuditEvent::Granted,
                keys::WORKER_JOIN_SEMAPHORE,
                "w-1",
                1,
            ),
            e(4, AuditEvent::Granted, keys::CP_JOIN_SEMAPHORE, "cp-3", 2),
        ];
        let mut c = ClusterStatus::from_parts(
            vec![
                member("w-1", "worker", serde_json::json!({"phase": "joining"})),
                member(
                    "cp-3",
                    "control-plane",
                    serde_json::json!({"phase": "joining", "attempt": 2, "lastError": "boom"}),
                ),
                member(
                    "cp-1",
                    "control-plane",
                    serde_json::json!({"phase": "done"}),
                ),
            ],
            Some(InitRecord {
                node: "cp-1".into(),
                token: 1,
                at_ms: 7,
            }),
            &log,
            0,
        );
        c.api = Some(ApiCheck {
            endpoint: "10.0.0.100:6443".into(),
            answers: true,
            error: None,
        });
        assert_eq!(c.cp_join_holders, ["cp-3"]);
        assert_eq!(c.worker_join_holders, ["w-1"]);
        let names: Vec<_> = c.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["cp-1", "cp-3", "w-1"]);
        assert_eq!(c.members[1].attempt, Some(2));

        let st = Status::new(Some(done_node()), Some(c));
        assert!(st.healthy);
        let text = st.render();
        for want in [
            "cluster: 3 member(s); initialized by cp-1",
            "cp-join slot: cp-3",
            "worker-join slots: w-1",
            "API endpoint 10.0.0.100:6443: answers",
            "last error: boom",
            "healthy",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["cluster"]["reachable"], true);
        assert_eq!(json["cluster"]["initializedBy"], "cp-1");
        assert_eq!(json["cluster"]["members"].as_array().unwrap().len(), 3);
        assert_eq!(json["cluster"]["cpJoinHolders"][0], "cp-3");
        assert_eq!(json["cluster"]["api"]["answers"], true);
    }

    fn etcd_report(by: &str, at: Millis, healthy: &[bool]) -> serde_json::Value {
        use crate::etcd_view::tests::member;
        let ms = [
            member(0x11, "cp-1", "10.0.0.11", false),
            member(0x12, "cp-2", "10.0.0.12", false),
            member(0x13, "cp-3", "10.0.0.13", false),
        ];
        serde_json::json!({
            "node": by, "role": "control-plane", "phase": "done", "sinceMs": 0,
            "attempt": 0, "lastError": null, "updatedMs": at, "done": true,
            "etcd": EtcdView::new(by, at, &ms, healthy),
        })
    }

    #[test]
    fn shows_the_freshest_reported_etcd_view_and_its_age() {
        let c = ClusterStatus::from_parts(
            vec![
                member(
                    "cp-1",
                    "control-plane",
                    etcd_report("cp-1", 10_000, &[true; 3]),
                ),
                member(
                    "cp-2",
                    "control-plane",
                    etcd_report("cp-2", 40_000, &[true, true, false]),
                ),
                member("w-1", "worker", serde_json::json!({"phase": "done"})),
            ],
            None,
            &[],
            52_000,
        );
        let e = c.etcd.as_ref().unwrap();
        assert_eq!((e.view.observed_by.as_str(), e.age_seconds), ("cp-2", 12));
        let st = Status::new(Some(done_node()), Some(c));
        assert!(st.healthy, "one of three down keeps the quorum");
        let text = st.render();
        for want in [
            "etcd (reported by cp-2, 12s ago):",
            "3 voting member(s), 0 learner(s); 2 voting healthy; quorum 2: held, tolerates 0 more failure(s) (of 1 by design)",
            "cp-3",
            "unhealthy",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let j = serde_json::to_value(&st).unwrap();
        let e = &j["cluster"]["etcd"];
        assert_eq!(e["source"], "reported");
        assert_eq!(e["ageSeconds"], 12);
        assert_eq!(e["observedBy"], "cp-2");
        assert_eq!(e["quorum"]["healthyVoting"], 2);
        assert_eq!(e["quorum"]["quorum"], 2);
        assert_eq!(e["quorum"]["failuresTolerated"], 0);
        assert_eq!(e["members"].as_array().unwrap().len(), 3);
        assert_eq!(e["members"][2]["healthy"], false);
        assert_eq!(j["etcdQuorumLost"], false);
        assert!(j["localEtcd"].is_null());
    }

    #[test]
    fn a_lost_quorum_is_unhealthy_and_the_live_view_wins() {
        let lost = || {
            ClusterStatus::from_parts(
                vec![member(
                    "cp-1",
                    "control-plane",
                    etcd_report("cp-1", 1_000, &[true, false, false]),
                )],
                None,
                &[],
                2_000,
            )
        };
        let st = Status::new(Some(done_node()), Some(lost()));
        assert!(st.etcd_quorum_lost);
        assert!(!st.healthy, "done, but etcd lost its quorum");
        assert!(st.render().contains("quorum 2: LOST"), "{}", st.render());
        assert!(
            st.render()
                .ends_with("not healthy: etcd has lost its quorum\n")
        );
        // A live view from this control plane, newer than the report, decides.
        let live = EtcdView::new(
            "cp-1",
            2_000,
            &[crate::etcd_view::tests::member(
                0x11,
                "cp-1",
                "10.0.0.11",
                false,
            )],
            &[true],
        );
        let st = Status::with_local_etcd(
            Some(done_node()),
            Some(lost()),
            Some(LocalEtcd {
                kind: "external",
                view: Some(EtcdSeen::new("live", live, 2_000)),
                error: None,
            }),
        );
        assert!(st.healthy && !st.etcd_quorum_lost);
        let text = st.render();
        assert!(
            text.contains("external etcd (live from this node, 0s ago):"),
            "{text}"
        );
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["localEtcd"]["kind"], "external");
        assert_eq!(j["localEtcd"]["view"]["source"], "live");
        assert_eq!(j["localEtcd"]["view"]["quorum"]["hasQuorum"], true);
        // A failed live query is shown and falls back to the reported view.
        let st = Status::with_local_etcd(
            Some(done_node()),
            Some(lost()),
            Some(LocalEtcd {
                kind: "stacked",
                view: None,
                error: Some("connection refused".into()),
            }),
        );
        assert!(!st.healthy);
        assert!(
            st.render()
                .contains("stacked etcd (live from this node): cannot ask (connection refused)")
        );
    }

    #[test]
    fn renders_an_unreachable_cluster_and_still_this_node() {
        let st = Status::new(
            Some(done_node()),
            Some(ClusterStatus::unreachable("connection refused")),
        );
        assert!(st.healthy, "the exit code follows this node only");
        let text = st.render();
        assert!(text.contains("this node: cp-1"), "{text}");
        assert!(
            text.contains("cluster: unreachable (connection refused)"),
            "{text}"
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["cluster"]["reachable"], false);
        assert_eq!(json["cluster"]["error"], "connection refused");
        assert_eq!(json["thisNode"]["phase"], "done");
        // Without a cluster view (never asked) nothing about the cluster is printed.
        assert!(!Status::new(None, None).render().contains("cluster"));
    }

    #[tokio::test]
    async fn a_down_rendezvous_and_api_are_reported_quickly() {
        // A loopback port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let secret = model::secret::ClusterSecret::from_bytes([7; 32]);
        let base = reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let http = crate::rendezvous::http_client(None, Duration::from_secs(2)).unwrap();
        let client = Client::new(base, http, &secret, "cp-1")
            .unwrap()
            .with_retry(RetryPolicy::none());
        let started = std::time::Instant::now();
        let c = cluster(
            &client,
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(2),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!c.reachable);
        assert!(c.error.is_some());
        assert!(!c.api.as_ref().unwrap().answers);

        // A listening endpoint answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        assert!(probe_api(&addr, Duration::from_secs(2)).await.answers);
    }

    #[tokio::test]
    async fn no_baked_config_means_unreachable_not_failure() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster_for(&NodeRoot::new(dir.path()), Duration::from_secs(1)).await;
        assert!(!c.reachable);
        assert!(c.error.unwrap().contains("baked config"));
    }
}
