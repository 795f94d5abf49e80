//! `muster status`: every planned node as the rendezvous sees it (live or absent, phase,
//! time in phase, attempts, last error from its sealed report), who initialized, who holds
//! the join slots (from the audit log), and whether the API endpoint answers.

use super::probe::{self, ProbeResult};
use super::{BuildDir, OpsError};
use protocol::etcd_view::EtcdView;
use protocol::keys;
use protocol::readiness::{NodeReady, Readiness, not_ready_line, verdict};
use protocol::report::{DistroReason, Unreachable};
use protocol::status::{RendezvousView, diagnosis_lines, fetch, printable};
pub use protocol::{Resize, SlotHolder, holders_from_audit, resizes_from_audit};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The phase shown for a planned node that is not a live member.
pub const ABSENT: &str = "absent";
/// The phase shown for a planned node that is not live and was removed on purpose
/// (a `removed.<node>` tombstone at the rendezvous).
pub const REMOVED: &str = "removed";
/// The phase shown for a live member whose report could not be read.
pub const UNREADABLE: &str = "unreadable";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    pub role: String,
    pub ip: String,
    /// A live member at the rendezvous (heartbeating within its TTL).
    pub live: bool,
    /// The agent's phase, or `absent`.
    pub phase: String,
    pub seconds_in_phase: Option<u64>,
    pub attempt: Option<u64>,
    pub last_error: Option<String>,
    pub done: bool,
    /// The distribution's own reason for a failing or stuck init or join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DistroReason>,
    /// Dependencies the node could not connect to at its last probe.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
    /// The node finds the cluster initialized but no control plane answering, for long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded: Option<String>,
    /// Its Node's `Ready` condition in the freshest readiness view; `None` when the API
    /// did not list it there (or no view was reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_node: Option<NodeReady>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Initialized {
    pub node: String,
    pub token: u64,
    pub at_ms: u64,
    /// The assembly generation the init belongs to (`muster reset` raises it).
    pub generation: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
    pub cluster_id: String,
    pub rendezvous: String,
    pub revision: u64,
    pub nodes: Vec<NodeRow>,
    /// Live members that are not in the plan (another build of the cluster?).
    pub unplanned_members: Vec<String>,
    /// Planned nodes that are not live members (and not removed).
    pub planned_absent: Vec<String>,
    /// Nodes removed on purpose (tombstones at the rendezvous), planned or not.
    pub removed: Vec<String>,
    pub initialized: Option<Initialized>,
    pub join_material: bool,
    pub init_holders: Vec<SlotHolder>,
    pub cp_join_holders: Vec<SlotHolder>,
    pub worker_join_holders: Vec<SlotHolder>,
    /// Slot counts changed by a rebuilt spec (issue 16: a grown or shrunk cluster), from
    /// the audit log, oldest first.
    pub resizes: Vec<Resize>,
    pub api: ProbeResult,
    /// The freshest etcd view a control plane reported (stacked etcd), with its age.
    pub etcd: Option<EtcdView>,
    /// Entries at the rendezvous that could not be read, each said once.
    pub problems: Vec<String>,
    /// The freshest view of every Node's readiness and the add-ons' rollout a control plane
    /// reported (issue 14), and how long it has been as it is.
    pub readiness: Option<Readiness>,
    pub readiness_age_seconds: Option<u64>,
    /// Why the cluster is not usable by that view (`protocol::readiness::verdict`): a Node
    /// not `Ready`, an add-on not rolled out, or no view yet. Empty when it is.
    pub readiness_problems: Vec<String>,
    /// Every planned node reports done.
    pub all_done: bool,
    /// The upgrade roll, once a release was published (`muster upgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<super::upgrade::UpgradeStatus>,
}

impl ClusterStatus {
    /// Every node done, etcd's quorum held as last reported, and every Node `Ready` with
    /// every add-on rolled out.
    pub fn healthy(&self) -> bool {
        self.all_done
            && self.etcd.as_ref().is_none_or(|e| e.quorum.has_quorum)
            && self.readiness_problems.is_empty()
    }
}

/// One row per planned node, from the live members' typed reports; a member whose
/// report could not be read shows `unreadable` and why.
pub fn rows(dir: &BuildDir, view: &RendezvousView, now_ms: u64) -> Vec<NodeRow> {
    dir.baked
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.as_str();
            let entry = view.members.iter().find(|m| m.name == name);
            let (phase, report, unreadable) = match entry.map(|m| &m.report) {
                None => (ABSENT.to_string(), None, None),
                Some(Ok(r)) => (r.phase.clone(), Some(r), None),
                Some(Err(why)) => (UNREADABLE.to_string(), None, Some(why.clone())),
            };
            NodeRow {
                name: name.to_string(),
                role: n.role.as_str().to_string(),
                ip: n.ip.to_string(),
                live: entry.is_some(),
                seconds_in_phase: report
                    .and_then(|r| r.since_ms)
                    .map(|s| now_ms.saturating_sub(s) / 1000),
                attempt: report.map(|r| u64::from(r.attempt)),
                last_error: unreadable.or_else(|| report.and_then(|r| r.last_error.clone())),
                done: report.is_some_and(|r| r.done || r.phase == "done"),
                reason: report.and_then(|r| r.reason.clone()),
                unreachable: report.map_or_else(Vec::new, |r| r.unreachable.clone()),
                stranded: report.and_then(|r| r.stranded.clone()),
                kube_node: view
                    .freshest_readiness()
                    .and_then(|r| r.node(name))
                    .cloned(),
                phase,
            }
        })
        .collect()
}

/// A planned node that is not live and has a tombstone shows `removed`, not `absent`.
pub fn mark_removed(nodes: &mut [NodeRow], removed: &[String]) {
    for n in nodes.iter_mut() {
        if !n.live && removed.contains(&n.name) {
            n.phase = REMOVED.to_string();
        }
    }
}

/// Asks the rendezvous (`protocol::status::fetch`) and probes the API endpoint. Fails only
/// when the rendezvous cannot be reached or answers nonsense; an unreadable entry is
/// marked in the table and said once under it.
pub async fn gather(dir: &BuildDir, timeout: Duration) -> Result<ClusterStatus, OpsError> {
    let client = dir.client(timeout)?;
    let view = fetch(&client).await.map_err(|e| dir.rendezvous_error(e))?;
    let now = super::now_ms();
    let (_, tombstones) = client
        .list(keys::REMOVED_PREFIX)
        .await
        .map_err(|e| dir.rendezvous_error(e))?;
    let removed: Vec<String> = tombstones
        .iter()
        .filter_map(|r| protocol::removal::tombstoned_node(&r.key))
        .map(str::to_string)
        .collect();
    let mut nodes = rows(dir, &view, now);
    mark_removed(&mut nodes, &removed);
    let live: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
    let unplanned_members = live
        .iter()
        .filter(|m| !nodes.iter().any(|n| n.name == **m))
        .map(|m| (*m).to_string())
        .collect();
    let planned_absent = nodes
        .iter()
        .filter(|n| n.phase == ABSENT)
        .map(|n| n.name.clone())
        .collect();
    // With the admin kubeconfig's CA the endpoint must also pass TLS verification.
    let roots = view
        .join_material
        .as_ref()
        .and_then(|m| m.admin_kubeconfig.as_ref())
        .and_then(|k| super::kubeconfig::AdminKubeconfig::parse(k.expose()).ok())
        .and_then(|k| k.roots().ok());
    let api = match dir.baked.api_endpoint.parse::<SocketAddr>() {
        Ok(addr) => probe::check(addr, roots.as_ref(), timeout).await,
        Err(_) => ProbeResult {
            endpoint: dir.baked.api_endpoint.clone(),
            tcp: false,
            tls: None,
            error: Some("not address:port".into()),
        },
    };
    let all_done = !nodes.is_empty() && nodes.iter().all(|n| n.done || n.phase == REMOVED);
    let mut problems = view.problems.clone();
    let upgrade = match super::upgrade::read(dir, &client, &view.audit).await {
        Ok(u) => u.release.is_some().then_some(u),
        Err(e) => {
            problems.push(format!("upgrade records: {e}"));
            None
        }
    };
    Ok(ClusterStatus {
        cluster: dir.baked.spec.name.to_string(),
        cluster_id: dir.baked.cluster_id.clone(),
        rendezvous: dir.rendezvous_url(),
        revision: view.revision,
        nodes,
        unplanned_members,
        planned_absent,
        removed,
        initialized: view.initialized.as_ref().map(|r| Initialized {
            node: r.node.clone(),
            token: r.token,
            at_ms: r.at_ms,
            generation: r.generation,
        }),
        join_material: view.join_material.is_some(),
        init_holders: holders_from_audit(&view.audit, keys::INIT_SEMAPHORE),
        cp_join_holders: holders_from_audit(&view.audit, keys::CP_JOIN_SEMAPHORE),
        worker_join_holders: holders_from_audit(&view.audit, keys::WORKER_JOIN_SEMAPHORE),
        resizes: [
            keys::INIT_SEMAPHORE,
            keys::CP_JOIN_SEMAPHORE,
            keys::WORKER_JOIN_SEMAPHORE,
        ]
        .iter()
        .flat_map(|sem| resizes_from_audit(&view.audit, sem))
        .collect(),
        api,
        etcd: view.freshest_etcd().cloned(),
        readiness_age_seconds: view
            .freshest_readiness()
            .map(|r| now.saturating_sub(r.observed_ms) / 1000),
        readiness_problems: verdict(view.freshest_readiness()),
        readiness: view.freshest_readiness().cloned(),
        problems,
        all_done,
        upgrade,
    })
}

fn holders(h: &[SlotHolder]) -> String {
    if h.is_empty() {
        return "free".into();
    }
    h.iter()
        .map(|h| format!("{} (token {})", h.holder, h.token))
        .collect::<Vec<_>>()
        .join(", ")
}

// Long on purpose: a renderer is one straight run of output lines in the order the
// file shows them; split up, the layout of what it writes could no longer be read here.
/// The human form.
pub fn render(s: &ClusterStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "cluster {} ({}) at rendezvous {} (revision {})",
        s.cluster, s.cluster_id, s.rendezvous, s.revision
    );
    let _ = writeln!(
        o,
        "initialized by: {}",
        s.initialized
            .as_ref()
            .map_or("nobody yet".to_string(), |i| format!(
                "{} (init token {}, generation {})",
                i.node, i.token, i.generation
            ))
    );
    let _ = writeln!(
        o,
        "join material: {}",
        if s.join_material {
            "published"
        } else {
            "not yet"
        }
    );
    let _ = writeln!(o, "init slot: {}", holders(&s.init_holders));
    let _ = writeln!(o, "cp-join slot: {}", holders(&s.cp_join_holders));
    let _ = writeln!(o, "worker-join slots: {}", holders(&s.worker_join_holders));
    for r in &s.resizes {
        let _ = writeln!(
            o,
            "{} slots resized {} -> {} by {} (a rebuilt spec)",
            r.semaphore, r.from, r.to, r.by
        );
    }
    let api = if s.api.ok() {
        match s.api.tls {
            Some(true) => "answers (TLS verified against the cluster CA)".to_string(),
            _ => "answers (TCP)".to_string(),
        }
    } else {
        format!("does not answer: {}", s.api.error.as_deref().unwrap_or("?"))
    };
    let _ = writeln!(o, "API endpoint {}: {api}", s.api.endpoint);
    let _ = writeln!(
        o,
        "\n{:<20} {:<14} {:<15} {:<22} {:<8} {:>8} {:>7}  LAST ERROR",
        "NODE", "ROLE", "IP", "PHASE", "READY", "IN PHASE", "ATTEMPT"
    );
    for n in &s.nodes {
        let ready = match &n.kube_node {
            Some(k) if k.ready => "Ready",
            Some(_) => "NotReady",
            None => "-",
        };
        let _ = writeln!(
            o,
            "{:<20} {:<14} {:<15} {:<22} {:<8} {:>8} {:>7}  {}",
            n.name,
            n.role,
            n.ip,
            n.phase,
            ready,
            n.seconds_in_phase
                .map_or("-".to_string(), |x| format!("{x}s")),
            n.attempt.map_or("-".to_string(), |x| x.to_string()),
            n.last_error.as_deref().unwrap_or("")
        );
        o.push_str(&diagnosis_lines(n.reason.as_ref(), &n.unreachable, "    "));
        if let Some(why) = &n.stranded {
            let _ = writeln!(o, "    stranded: {why}");
        }
        if let Some(k) = n.kube_node.as_ref().filter(|k| !k.ready) {
            let _ = writeln!(o, "    {}", not_ready_line(k));
        }
    }
    if let Some(r) = &s.readiness {
        let _ = writeln!(
            o,
            "\nNodes and add-ons, as {} read them (unchanged for {}s): {}/{} Nodes Ready",
            r.observed_by,
            s.readiness_age_seconds.unwrap_or(0),
            r.ready_nodes(),
            r.nodes.len()
        );
        if let Some(e) = &r.error {
            let _ = writeln!(o, "  cannot read the Nodes: {e}");
        }
        // Nodes the API lists that are not planned (another build's?) show here only.
        for k in r
            .nodes
            .iter()
            .filter(|k| !s.nodes.iter().any(|n| n.name == k.name))
        {
            let state = if k.ready {
                "Ready".into()
            } else {
                not_ready_line(k)
            };
            let _ = writeln!(o, "  unplanned Node {}: {state}", k.name);
        }
        o.push_str(&r.addon_lines("  "));
    }
    if let Some(e) = &s.etcd {
        let _ = writeln!(
            o,
            "\netcd, as {} reported it (unchanged for {}s):",
            e.observed_by,
            super::now_ms().saturating_sub(e.observed_ms) / 1000
        );
        o.push_str(&e.render("  "));
    }
    if !s.planned_absent.is_empty() {
        let _ = writeln!(o, "planned but absent: {}", s.planned_absent.join(", "));
    }
    if !s.removed.is_empty() {
        let _ = writeln!(o, "removed: {}", s.removed.join(", "));
    }
    if !s.unplanned_members.is_empty() {
        let _ = writeln!(
            o,
            "members not in this build's plan: {}",
            s.unplanned_members.join(", ")
        );
    }
    for p in &s.problems {
        let _ = writeln!(o, "unreadable: {p}");
    }
    let done = s.nodes.iter().filter(|n| n.done).count();
    let counted = s.nodes.iter().filter(|n| n.phase != REMOVED).count();
    let _ = writeln!(
        o,
        "\n{done}/{counted} nodes done{}",
        if s.all_done { "" } else { ": not complete" }
    );
    if s.healthy() {
        let _ = writeln!(o, "healthy");
    } else if !s.readiness_problems.is_empty() {
        let _ = writeln!(o, "not healthy: {}", s.readiness_problems.join("; "));
    } else {
        let _ = writeln!(o, "not healthy");
    }
    if let Some(u) = &s.upgrade {
        let _ = write!(o, "\nupgrade: {}", super::upgrade::render(u));
    }
    printable(&o).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::readiness::Rollout;

    fn row(name: &str, role: &str, ip: &str, phase: &str, error: Option<&str>) -> NodeRow {
        NodeRow {
            name: name.into(),
            role: role.into(),
            ip: ip.into(),
            live: true,
            phase: phase.into(),
            seconds_in_phase: Some(42),
            attempt: Some(3),
            last_error: error.map(String::from),
            done: phase == "done",
            reason: None,
            unreachable: vec![],
            stranded: None,
            kube_node: None,
        }
    }

    /// Issue 13: a node booted from an image without Kubernetes says so in `muster status`:
    /// its row shows the agent's preflight failure (the words the agent reports, as the lab
    /// test `a_node_without_kubeadm_says_so_and_the_rest_assembles` sees them in `--json`)
    /// and the cluster is not complete.
    #[test]
    fn a_node_from_an_incomplete_image_shows_its_preflight_failure() {
        let preflight = "preflight failed: kubeadm not found (image built without Kubernetes?)";
        let s = ClusterStatus {
            cluster: "demo".into(),
            cluster_id: "c0ffee".into(),
            rendezvous: "https://10.0.0.2:7443".into(),
            revision: 7,
            nodes: vec![
                row("demo-cp-1", "control-plane", "10.0.0.11", "done", None),
                row(
                    "demo-cp-2",
                    "control-plane",
                    "10.0.0.12",
                    "preflight",
                    Some(preflight),
                ),
            ],
            unplanned_members: vec![],
            planned_absent: vec![],
            removed: vec![],
            resizes: vec![],
            initialized: None,
            join_material: false,
            init_holders: vec![],
            cp_join_holders: vec![],
            worker_join_holders: vec![],
            api: ProbeResult {
                endpoint: "10.0.0.10:6443".into(),
                tcp: false,
                tls: None,
                error: Some("connection refused".into()),
            },
            etcd: None,
            readiness: None,
            readiness_age_seconds: None,
            readiness_problems: verdict(None),
            problems: vec![],
            all_done: false,
            upgrade: None,
        };
        let want = "\
cluster demo (c0ffee) at rendezvous https://10.0.0.2:7443 (revision 7)
initialized by: nobody yet
join material: not yet
init slot: free
cp-join slot: free
worker-join slots: free
API endpoint 10.0.0.10:6443: does not answer: connection refused

NODE                 ROLE           IP              PHASE                  READY    IN PHASE ATTEMPT  LAST ERROR
demo-cp-1            control-plane  10.0.0.11       done                   -             42s       3  
demo-cp-2            control-plane  10.0.0.12       preflight              -             42s       3  preflight failed: kubeadm not found (image built without Kubernetes?)

1/2 nodes done: not complete
not healthy: no control plane has reported the Nodes' readiness yet
";
        assert_eq!(render(&s), want);
    }

    fn kube_node(name: &str, ready: bool) -> NodeReady {
        NodeReady {
            name: name.into(),
            ready,
            reason: Some(
                if ready {
                    "KubeletReady"
                } else {
                    "KubeletNotReady"
                }
                .into(),
            ),
            message: (!ready).then(|| "container runtime network not ready".to_string()),
        }
    }

    fn rollout(addon: &str, kind: &str, ns: &str, name: &str, d: u64, a: u64) -> Rollout {
        Rollout {
            addon: addon.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            desired: d,
            available: a,
            error: None,
        }
    }

    /// Every planned node done, as seed 002's cluster is once assembled, and `ready` says
    /// whether `demo-w-1`'s Node is `Ready` (and MetalLB's speaker on it with it).
    fn assembled(ready: bool) -> ClusterStatus {
        let nodes = vec![
            kube_node("demo-cp-1", true),
            kube_node("demo-w-1", ready),
            kube_node("stray-1", true),
        ];
        let readiness = Readiness {
            observed_by: "demo-cp-1".into(),
            observed_ms: 0,
            nodes: nodes.clone(),
            rollouts: vec![
                rollout(
                    "flannel",
                    "DaemonSet",
                    "kube-flannel",
                    "kube-flannel-ds",
                    3,
                    3,
                ),
                rollout(
                    "metallb",
                    "Deployment",
                    "metallb-system",
                    "controller",
                    1,
                    1,
                ),
                rollout(
                    "metallb",
                    "DaemonSet",
                    "metallb-system",
                    "speaker",
                    3,
                    if ready { 3 } else { 2 },
                ),
            ],
            error: None,
        };
        let mut rows = vec![
            row("demo-cp-1", "control-plane", "10.0.0.11", "done", None),
            row("demo-w-1", "worker", "10.0.0.21", "done", None),
        ];
        for (r, k) in rows.iter_mut().zip(&nodes) {
            r.kube_node = Some(k.clone());
        }
        ClusterStatus {
            cluster: "demo".into(),
            cluster_id: "c0ffee".into(),
            rendezvous: "https://10.0.0.2:7443".into(),
            revision: 9,
            nodes: rows,
            unplanned_members: vec![],
            planned_absent: vec![],
            removed: vec![],
            resizes: vec![],
            initialized: Some(Initialized {
                node: "demo-cp-1".into(),
                token: 1,
                at_ms: 0,
                generation: 0,
            }),
            join_material: true,
            init_holders: vec![],
            cp_join_holders: vec![],
            worker_join_holders: vec![],
            api: ProbeResult {
                endpoint: "10.0.0.10:6443".into(),
                tcp: true,
                tls: Some(true),
                error: None,
            },
            etcd: None,
            readiness_problems: verdict(Some(&readiness)),
            readiness: Some(readiness),
            readiness_age_seconds: Some(4),
            problems: vec![],
            all_done: true,
            upgrade: None,
        }
    }

    /// Issue 14: every node done is not enough; `muster status` shows each Node's
    /// readiness and each add-on's rollout, and is healthy only when all are.
    #[test]
    fn a_done_cluster_with_a_node_not_ready_is_not_healthy_and_says_why() {
        let s = assembled(false);
        assert!(!s.healthy());
        let want = "\
cluster demo (c0ffee) at rendezvous https://10.0.0.2:7443 (revision 9)
initialized by: demo-cp-1 (init token 1, generation 0)
join material: published
init slot: free
cp-join slot: free
worker-join slots: free
API endpoint 10.0.0.10:6443: answers (TLS verified against the cluster CA)

NODE                 ROLE           IP              PHASE                  READY    IN PHASE ATTEMPT  LAST ERROR
demo-cp-1            control-plane  10.0.0.11       done                   Ready         42s       3  
demo-w-1             worker         10.0.0.21       done                   NotReady      42s       3  
    NotReady (KubeletNotReady: container runtime network not ready)

Nodes and add-ons, as demo-cp-1 read them (unchanged for 4s): 2/3 Nodes Ready
  unplanned Node stray-1: Ready
  flannel: rolled out (DaemonSet kube-flannel/kube-flannel-ds 3/3)
  metallb: NOT rolled out (Deployment metallb-system/controller 1/1; DaemonSet metallb-system/speaker 2/3)

2/2 nodes done
not healthy: Node demo-w-1 is not Ready; add-on metallb not rolled out: DaemonSet metallb-system/speaker 2/3
";
        assert_eq!(render(&s), want);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["nodes"][1]["kubeNode"]["ready"], false);
        assert_eq!(j["nodes"][1]["kubeNode"]["reason"], "KubeletNotReady");
        assert_eq!(j["readiness"]["rollouts"][2]["available"], 2);
        assert_eq!(j["readiness"]["rollouts"][2]["desired"], 3);
        assert_eq!(j["readinessProblems"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_done_cluster_with_every_node_ready_and_addons_rolled_out_is_healthy() {
        let s = assembled(true);
        assert!(s.healthy());
        let text = render(&s);
        assert!(
            text.ends_with("  metallb: rolled out (Deployment metallb-system/controller 1/1; DaemonSet metallb-system/speaker 3/3)\n\n2/2 nodes done\nhealthy\n"),
            "{text}"
        );
        // Done, but no control plane reported the Nodes yet: not healthy.
        let blind = ClusterStatus {
            readiness: None,
            readiness_problems: verdict(None),
            ..s
        };
        assert!(!blind.healthy());
    }

    /// Issue 16: a rebuilt spec that changed a join semaphore's count shows in the status,
    /// under the slot lines and in `--json`.
    #[test]
    fn a_resized_semaphore_is_shown_under_its_slots() {
        let s = ClusterStatus {
            resizes: vec![Resize {
                semaphore: "cp-join".into(),
                from: 2,
                to: 3,
                by: "demo-cp-3".into(),
                at_ms: 5,
            }],
            ..assembled(true)
        };
        let text = render(&s);
        assert!(
            text.contains("worker-join slots: free\ncp-join slots resized 2 -> 3 by demo-cp-3 (a rebuilt spec)\nAPI endpoint"),
            "{text}"
        );
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["resizes"][0]["from"], 2);
        assert_eq!(j["resizes"][0]["to"], 3);
        assert_eq!(j["resizes"][0]["by"], "demo-cp-3");
    }
}
