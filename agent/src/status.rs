//! `nodeagent status`: works with the daemon down. Reads this node's `AGENT_STATUS` and
//! `AGENT_STATE`, and asks the rendezvous (when reachable) about the cluster: members'
//! roles and phases, who initialized, who holds the join slot, and the freshest view of
//! etcd (members, health, quorum) a control plane put in its report. On a control plane it
//! also asks etcd directly, and shows every Node's readiness and the add-ons' rollout as
//! the freshest control plane report has them. Exit code 0 healthy (this node done, etcd's
//! quorum held, and, when the rendezvous answers, every Node `Ready` and every add-on
//! rolled out), 1 not. The view's types and its rendering are the protocol's (`protocol::status`), so the
//! lab and `muster status` read the same thing.

use crate::bootstrap::store::{FileStore, Persisted, Store};
use model::node_files::NodeRoot;
use protocol::clock::{Millis, now_ms};
use protocol::status::{ClusterStatus, EtcdSeen, LocalEtcd, NodeStatus, cluster};
use protocol::{Client, RetryPolicy};
use std::time::Duration;

/// This node's status from its files; `None` when the agent never ran here.
pub fn local(
    root: &NodeRoot,
    now: Millis,
) -> Result<Option<NodeStatus>, crate::bootstrap::store::StoreError> {
    let store = FileStore::new(root.clone());
    let Some(p): Option<Persisted> = store.load()? else {
        return Ok(None);
    };
    // The role, the distribution's reason and what was unreachable are in the report the
    // agent writes beside its state; a missing or unreadable one only loses those.
    let report = protocol::report::MemberReport::read_local(root)
        .ok()
        .flatten();
    let role = report.as_ref().map(|r| r.role.clone());
    let (reason, unreachable, stranded, lb_config) = report
        .map_or((None, Vec::new(), None, None), |r| {
            (r.reason, r.unreachable, r.stranded, r.lb_config)
        });
    let since = p.since_ms();
    // The upgrade state is the roll's own file; unreadable, it only loses this line.
    let upgrade = crate::upgrade::store::load(root.path("").as_path())
        .ok()
        .flatten()
        .and_then(|phase| phase.describe());
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
        reason,
        unreachable,
        stranded,
        lb_config,
        upgrade,
    }))
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
    let client = match Client::from_baked(&baked.rendezvous, &secret, id.name.as_str()) {
        Ok(c) => c.with_retry(RetryPolicy::none()),
        Err(e) => return ClusterStatus::unreachable(format!("rendezvous client: {e}")),
    };
    cluster(
        &client,
        &baked.api_endpoint,
        &baked.upgrading_nodes(),
        timeout,
    )
    .await
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
            kind: kind.to_string(),
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
    let ask = crate::etcd_query::observe(
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
            kind: kind.to_string(),
            view: Some(EtcdSeen::new("live", v, now_ms())),
            error: None,
        }),
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => failed(format!("etcd did not answer within {}s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::state::{Phase, State};
    use protocol::status::Status;

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

    #[tokio::test]
    async fn no_baked_config_means_unreachable_not_failure() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster_for(&NodeRoot::new(dir.path()), Duration::from_secs(1)).await;
        assert!(!c.reachable);
        assert!(c.error.unwrap().contains("baked config"));
    }
}
