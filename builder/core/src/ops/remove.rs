//! `muster remove NODE` (and `--prune`): take a node out of the cluster for good, run by
//! muster itself on the operator's machine:
//!
//! 1. etcd first, read only: the member list and each member's `/health` through etcd's
//!    v3 JSON gateway on the planned control planes, with the etcd client credentials the
//!    initializer published in the (sealed) join material; `protocol::removal::check`
//!    refuses before anything changes if the membership change could not commit or the
//!    remaining voters would be short of quorum.
//! 2. Kubernetes, through the endpoint `muster kubeconfig` would choose (the VIP first)
//!    with the admin kubeconfig from the join material: cordon, drain (Evictions; the
//!    decisions are `protocol::drain`'s), delete the Node.
//! 3. etcd: remove the node's member (control planes with stacked etcd).
//! 4. The rendezvous: the `removed.NODE` tombstone, after which `muster status` shows the
//!    node as removed and the node's agent, if still running, stops (it never rejoins);
//!    then its membership is forgotten at once (`DELETE /members/NODE`) instead of
//!    lingering until its TTL runs out.
//!
//! `muster remove --forget-tombstone NODE` ([`forget_tombstones`]) deletes the tombstone
//! again, so a replacement machine of the same name joins without a `muster reset`.
//!
//! Every step is idempotent: a Node or member already gone is skipped, so a removal cut
//! short is finished by running it again.

use super::kubeconfig::{self, KubeconfigError};
use super::{BuildDir, CLIENT_NAME, OpsError};
use model::spec::Role;
use protocol::drain::{self, DrainState, Evicted};
use protocol::etcd_view::{EtcdMember, EtcdView};
use protocol::pem_client::ClientCache;
use protocol::records::{EtcdCreds, JoinMaterial};
use protocol::removal::{self, Refusal, Tombstone};
use protocol::{ErrorKind, etcd_gateway, keys};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error("refused to remove {node}: {refusal}")]
    Refused { node: String, refusal: Refusal },
    #[error("{node}: {step}: {detail}")]
    Step {
        node: String,
        step: &'static str,
        detail: String,
    },
}

/// What was done for one node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub node: String,
    /// `control-plane`, `worker`, `load-balancer`, or `unplanned`.
    pub role: String,
    /// The Node object existed and was cordoned, drained and deleted.
    pub node_deleted: bool,
    /// Pods evicted by the drain (`namespace/name`).
    pub evicted: Vec<String>,
    /// The etcd member removed (hex id), if the node had one.
    pub etcd_member: Option<String>,
    /// The etcd voters left, and how many were healthy, after the removal.
    pub etcd_voters_after: Option<u32>,
    /// It was a live member at the rendezvous and was forgotten there (not left to expire).
    pub member_forgotten: bool,
}

/// A tombstone `muster remove --forget-tombstone` was asked to clear.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearedTombstone {
    pub node: String,
    /// There was one (false: the node was not tombstoned, nothing changed).
    pub cleared: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveReport {
    pub cluster: String,
    /// The API endpoint used (the VIP unless it failed, see `muster kubeconfig`).
    pub api_server: String,
    pub removed: Vec<Removed>,
}

/// How long a drain may take, and the rendezvous/API timeout of each request.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub timeout: Duration,
    pub drain_timeout: Duration,
}

/// What a removal talks to: the API with the admin identity, etcd with the published
/// credentials (none: no stacked etcd reachable this way, e.g. an external datastore).
struct Session<'a> {
    dir: &'a BuildDir,
    api: reqwest::Client,
    server: String,
    etcd: Option<EtcdCreds>,
    etcd_endpoints: Vec<String>,
    /// etcd's clients, one connection for the session's calls.
    etcd_clients: ClientCache,
}

/// How often an etcd "unhealthy cluster" refusal of a member removal is tried, 2 s apart.
const ETCD_UNHEALTHY_ATTEMPTS: u32 = 8;

fn step_err(node: &str, step: &'static str, detail: impl ToString) -> RemoveError {
    RemoveError::Step {
        node: node.to_string(),
        step,
        detail: detail.to_string(),
    }
}

/// The planned role of `node`, or `unplanned`.
fn role_of(dir: &BuildDir, node: &str) -> String {
    dir.baked
        .nodes
        .iter()
        .find(|n| n.name.as_str() == node)
        .map_or_else(|| "unplanned".to_string(), |n| n.role.to_string())
}

async fn open<'a>(
    dir: &'a BuildDir,
    opts: Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Session<'a>, RemoveError> {
    let (admin, choice) = kubeconfig::connect(dir, opts.timeout).await?;
    if let Some(w) = choice.warning() {
        progress(&format!("warning: {w}"));
    }
    let ca = String::from_utf8_lossy(&admin.ca_pem()?).into_owned();
    let (cert, key) = admin.identity()?;
    let api = protocol::pem_client::client(&ca, Some((&cert, &key)))
        .map_err(|e| step_err("-", "API client from the admin kubeconfig", e))?;
    let client = dir.client(opts.timeout)?;
    let material = match client
        .get(keys::JOIN_MATERIAL)
        .await
        .map_err(|e| dir.rendezvous_error(e))?
    {
        Some(r) => Some(
            serde_json::from_slice::<JoinMaterial>(&r.value)
                .map_err(|e| step_err("-", "read the join material at the rendezvous", e))?,
        ),
        None => None,
    };
    // Stacked etcd only: an external etcd cluster's membership is not the nodes'. Where
    // the control planes run etcd, its credentials must be there: without them neither
    // the quorum check nor the member removal could run, and skipping both is not safe.
    let etcd = if dir.baked.spec.stacked_etcd() {
        Some(material.and_then(|m| m.etcd).ok_or_else(|| {
            step_err(
                "-",
                "etcd client credentials",
                "the join material at the rendezvous carries none (the cluster never \
                 finished its init?), so etcd's quorum cannot be checked nor a member removed",
            )
        })?)
    } else {
        None
    };
    let etcd_endpoints = dir
        .baked
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .map(|n| format!("https://{}:2379", n.ip))
        .collect();
    progress(&format!("API server {}", choice.server()));
    Ok(Session {
        dir,
        api,
        server: choice.server(),
        etcd,
        etcd_endpoints,
        etcd_clients: ClientCache::new(),
    })
}

impl Session<'_> {
    async fn call(
        &self,
        node: &str,
        step: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), RemoveError> {
        let r = req.send().await.map_err(|e| step_err(node, step, e))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| step_err(node, step, e))?;
        Ok((status, body.to_vec()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// The etcd members with each one's health, or `None` without stacked etcd.
    async fn etcd_view(
        &self,
        node: &str,
    ) -> Result<Option<(Vec<EtcdMember>, EtcdView)>, RemoveError> {
        let Some(creds) = &self.etcd else {
            return Ok(None);
        };
        let members = etcd_gateway::member_list(&self.etcd_clients, &self.etcd_endpoints, creds)
            .await
            .map_err(|e| step_err(node, "list etcd members", e))?;
        let mut healthy = Vec::new();
        for m in &members {
            let h = match m.client_urls.first() {
                Some(url) => etcd_gateway::health(&self.etcd_clients, creds, url).await,
                None => false,
            };
            healthy.push(h);
        }
        let view = EtcdView::new(CLIENT_NAME, super::now_ms(), &members, &healthy);
        Ok(Some((members, view)))
    }

    /// The names of the Node objects.
    async fn node_names(&self) -> Result<Vec<String>, RemoveError> {
        let (status, body) = self
            .call("-", "list Nodes", self.api.get(self.url("/api/v1/nodes")))
            .await?;
        if status != 200 {
            return Err(step_err("-", "list Nodes", api_message(status, &body)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| step_err("-", "list Nodes", e))?;
        Ok(v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Cordon and drain; `false` when there is no Node object.
    async fn cordon_and_drain(
        &self,
        node: &str,
        drain_timeout: Duration,
        progress: &mut dyn FnMut(&str),
        evicted: &mut Vec<String>,
    ) -> Result<bool, RemoveError> {
        const CORDON: &str = "cordon";
        let req = self
            .api
            .patch(self.url(&format!("/api/v1/nodes/{node}")))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"spec":{"unschedulable":true}}"#);
        let (status, body) = self.call(node, CORDON, req).await?;
        match status {
            200 => progress(&format!("{node}: cordoned")),
            404 => {
                progress(&format!("{node}: no Node object (already deleted)"));
                return Ok(false);
            }
            _ => return Err(step_err(node, CORDON, api_message(status, &body))),
        }
        const DRAIN: &str = "drain";
        let began = Instant::now();
        let list = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
        let mut blocked: Vec<(String, String)> = Vec::new();
        loop {
            let (status, body) = self
                .call(node, DRAIN, self.api.get(self.url(&list)))
                .await?;
            if status != 200 {
                return Err(step_err(node, DRAIN, api_message(status, &body)));
            }
            let pods = drain::pods(&body).map_err(|e| step_err(node, DRAIN, e))?;
            let plan = drain::plan(&pods);
            let elapsed = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            let timeout = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX);
            match drain::drain_state(&plan.evict, &blocked, elapsed, timeout) {
                DrainState::Drained => {
                    progress(&format!(
                        "{node}: drained ({} evicted, {} left: DaemonSet, mirror or finished)",
                        evicted.len(),
                        plan.skipped.len()
                    ));
                    return Ok(true);
                }
                DrainState::TimedOut { cause } => return Err(step_err(node, DRAIN, cause)),
                DrainState::Pending { .. } => {}
            }
            blocked.clear();
            for (ns, name) in &plan.evict {
                let req = self
                    .api
                    .post(self.url(&drain::eviction_path(ns, name)))
                    .json(&drain::eviction_body(ns, name));
                let (status, body) = self.call(node, DRAIN, req).await?;
                match drain::read_eviction(status, &body) {
                    Evicted::Accepted | Evicted::Gone => {
                        let id = format!("{ns}/{name}");
                        if !evicted.contains(&id) {
                            progress(&format!("{node}: evicted {id}"));
                            evicted.push(id);
                        }
                    }
                    Evicted::Blocked { budget } => blocked.push((format!("{ns}/{name}"), budget)),
                    Evicted::Failed { status, message } => {
                        return Err(step_err(
                            node,
                            DRAIN,
                            format!("eviction of {ns}/{name}: HTTP {status}: {message}"),
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn delete_node(&self, node: &str) -> Result<(), RemoveError> {
        const STEP: &str = "delete the Node";
        let req = self.api.delete(self.url(&format!("/api/v1/nodes/{node}")));
        let (status, body) = self.call(node, STEP, req).await?;
        match status {
            200 | 202 | 404 => Ok(()),
            _ => Err(step_err(node, STEP, api_message(status, &body))),
        }
    }

    async fn tombstone(&self, node: &str, role: &str) -> Result<(), RemoveError> {
        let client = self.dir.client(Duration::from_secs(5))?;
        let key = removal::tombstone_key(node);
        let t = Tombstone {
            node: node.to_string(),
            role: role.to_string(),
            by: CLIENT_NAME.to_string(),
            at_ms: super::now_ms(),
        };
        let bytes = serde_json::to_vec(&t).map_err(|e| step_err(node, "tombstone", e))?;
        match client.create(&key, &bytes, None, None).await {
            Ok(_) => Ok(()),
            // Removed before (a run cut short after this step): the first tombstone stays.
            Err(e) if e.kind() == Some(ErrorKind::Exists) => Ok(()),
            Err(e) => Err(self.dir.rendezvous_error(e).into()),
        }
    }

    /// Drops `node` from the rendezvous members now; false if it was no member.
    async fn forget_member(&self, node: &str) -> Result<bool, RemoveError> {
        let client = self.dir.client(Duration::from_secs(5))?;
        match client.forget_member(node).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(self.dir.rendezvous_error(e).into()),
        }
    }

    /// Checks quorum, then carries out every step for `node`.
    async fn remove(
        &self,
        node: &str,
        drain_timeout: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Removed, RemoveError> {
        let role = role_of(self.dir, node);
        let etcd = self.etcd_view(node).await?;
        if let Some((_, view)) = &etcd {
            removal::check(&view.members, node).map_err(|refusal| RemoveError::Refused {
                node: node.to_string(),
                refusal,
            })?;
            let q = view.quorum;
            progress(&format!(
                "{node}: etcd {} of {} voters healthy: the removal keeps quorum",
                q.healthy_voting, q.voting
            ));
        }
        let mut evicted = Vec::new();
        let node_deleted = self
            .cordon_and_drain(node, drain_timeout, progress, &mut evicted)
            .await?;
        if node_deleted {
            self.delete_node(node).await?;
            progress(&format!("{node}: Node deleted"));
        }
        let mut etcd_member = None;
        let mut etcd_voters_after = None;
        if let (Some((members, view)), Some(creds)) = (&etcd, &self.etcd) {
            if let Some(m) = members.iter().find(|m| m.name == node) {
                // etcd refuses a reconfiguration ("unhealthy cluster") until its leader has
                // been connected to a quorum for its health interval (5 s), e.g. just after a
                // peer reconnected: that refusal is retried for a while, nothing else is.
                let mut attempt = 1;
                loop {
                    match etcd_gateway::member_remove(
                        &self.etcd_clients,
                        &self.etcd_endpoints,
                        creds,
                        m.id,
                    )
                    .await
                    {
                        Ok(()) => break,
                        Err(e)
                            if attempt < ETCD_UNHEALTHY_ATTEMPTS
                                && e.to_string().contains("unhealthy cluster") =>
                        {
                            progress(&format!(
                                "{node}: etcd refuses the member removal for now (unhealthy cluster); retrying"
                            ));
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        }
                        Err(e) => return Err(step_err(node, "remove the etcd member", e)),
                    }
                }
                etcd_member = Some(format!("{:x}", m.id));
                progress(&format!("{node}: etcd member {:x} removed", m.id));
            }
            let lost = u32::from(
                etcd_member.is_some() && !members.iter().any(|m| m.name == node && m.is_learner),
            );
            etcd_voters_after = Some(view.quorum.voting - lost);
        }
        self.tombstone(node, &role).await?;
        progress(&format!("{node}: removed (tombstone at the rendezvous)"));
        let member_forgotten = self.forget_member(node).await?;
        if member_forgotten {
            progress(&format!("{node}: forgotten as a rendezvous member"));
        }
        Ok(Removed {
            node: node.to_string(),
            role,
            node_deleted,
            evicted,
            etcd_member,
            etcd_voters_after,
            member_forgotten,
        })
    }
}

/// The API's `Status.message`, else the start of the body.
fn api_message(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    format!("HTTP {status}: {msg}")
}

/// Removes `nodes`, one after the other (each re-checks quorum); stops at the first
/// refusal or failure, keeping what was done before it in the error's context.
pub async fn remove(
    dir: &BuildDir,
    nodes: &[String],
    opts: Options,
    progress: &mut dyn FnMut(&str),
) -> Result<RemoveReport, RemoveError> {
    let s = open(dir, opts, progress).await?;
    let mut removed = Vec::new();
    for node in nodes {
        removed.push(s.remove(node, opts.drain_timeout, progress).await?);
    }
    Ok(RemoveReport {
        cluster: dir.baked.spec.name.to_string(),
        api_server: s.server,
        removed,
    })
}

/// `muster remove --forget-tombstone NODE…`: deletes each node's `removed.NODE` tombstone
/// so a machine of the same name (a replacement built from a rebuilt output) joins like a
/// new node, without retiring the whole assembly (`muster reset`). Only the rendezvous is
/// touched: the old node's Node object and etcd member must already be gone (`muster
/// remove` did that). A node without a tombstone is reported, not an error.
pub async fn forget_tombstones(
    dir: &BuildDir,
    nodes: &[String],
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ClearedTombstone>, RemoveError> {
    let client = dir.client(timeout)?;
    let mut out = Vec::new();
    for node in nodes {
        let cleared = match client.delete(&removal::tombstone_key(node), None).await {
            Ok(_) => true,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => false,
            Err(e) => return Err(dir.rendezvous_error(e).into()),
        };
        progress(&if cleared {
            format!("{node}: tombstone cleared: a machine of this name may join again")
        } else {
            format!("{node}: not tombstoned, nothing to clear")
        });
        out.push(ClearedTombstone {
            node: node.clone(),
            cleared,
        });
    }
    Ok(out)
}

/// What `--prune` removes: Node objects and etcd members the plan does not name, workers
/// and other nodes without a member first, then control planes (one at a time, each
/// checked). Already tombstoned ones are included only if something of them is left.
pub fn prune_targets(
    planned: &BTreeSet<String>,
    k8s_nodes: &[String],
    etcd_members: &[String],
) -> Vec<String> {
    let extra = |n: &&String| !n.is_empty() && !planned.contains(*n);
    let members: BTreeSet<&String> = etcd_members.iter().filter(extra).collect();
    let mut plain: BTreeSet<&String> = k8s_nodes.iter().filter(extra).collect();
    plain.retain(|n| !members.contains(n));
    plain.into_iter().chain(members).cloned().collect()
}

/// `muster remove --prune`: every node the cluster has and the plan does not.
pub async fn prune(
    dir: &BuildDir,
    opts: Options,
    progress: &mut dyn FnMut(&str),
) -> Result<RemoveReport, RemoveError> {
    let s = open(dir, opts, progress).await?;
    let planned: BTreeSet<String> = dir.baked.nodes.iter().map(|n| n.name.to_string()).collect();
    let k8s = s.node_names().await?;
    let members: Vec<String> = match s.etcd_view("-").await? {
        Some((ms, _)) => ms.into_iter().map(|m| m.name).collect(),
        None => vec![],
    };
    let targets = prune_targets(&planned, &k8s, &members);
    progress(&format!(
        "not in the plan: {}",
        if targets.is_empty() {
            "nothing".to_string()
        } else {
            targets.join(", ")
        }
    ));
    let mut removed = Vec::new();
    for node in &targets {
        removed.push(s.remove(node, opts.drain_timeout, progress).await?);
    }
    Ok(RemoveReport {
        cluster: dir.baked.spec.name.to_string(),
        api_server: s.server,
        removed,
    })
}

/// The human summary.
pub fn render(r: &RemoveReport) -> String {
    if r.removed.is_empty() {
        return format!("cluster {}: nothing to remove\n", r.cluster);
    }
    let mut o = String::new();
    for n in &r.removed {
        o.push_str(&format!(
            "{} ({}): {}, {} pod(s) evicted, {}, {}\n",
            n.node,
            n.role,
            if n.node_deleted {
                "Node deleted"
            } else {
                "no Node object"
            },
            n.evicted.len(),
            match (&n.etcd_member, n.etcd_voters_after) {
                (Some(id), Some(v)) => format!("etcd member {id} removed ({v} voters left)"),
                _ => "no etcd member".to_string(),
            },
            if n.member_forgotten {
                "forgotten at the rendezvous"
            } else {
                "no live rendezvous member"
            }
        ));
    }
    o.push_str("removed nodes are tombstoned at the rendezvous: their agents stop, and they never rejoin\n");
    o.push_str(
        "(to let a replacement of the same name join: muster remove --forget-tombstone NODE)\n",
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn prune_takes_what_the_plan_dropped_workers_first() {
        let planned: BTreeSet<String> = s(&["cp-1", "cp-2", "wk-1"]).into_iter().collect();
        let k8s = s(&["cp-1", "cp-2", "cp-3", "wk-1", "wk-2"]);
        let etcd = s(&["cp-1", "cp-2", "cp-3", ""]);
        assert_eq!(prune_targets(&planned, &k8s, &etcd), s(&["wk-2", "cp-3"]));
        assert!(prune_targets(&planned, &s(&["cp-1", "wk-1"]), &s(&["cp-1"])).is_empty());
        // A member whose Node is already gone is still pruned.
        assert_eq!(
            prune_targets(&planned, &s(&[]), &s(&["cp-9"])),
            s(&["cp-9"])
        );
    }

    #[test]
    fn api_messages_name_the_status() {
        let m = api_message(
            403,
            br#"{"kind":"Status","message":"nodes \"wk-1\" is forbidden"}"#,
        );
        assert_eq!(m, "HTTP 403: nodes \"wk-1\" is forbidden");
        assert_eq!(api_message(500, b"boom"), "HTTP 500: boom");
    }

    #[test]
    fn the_summary_names_member_and_voters() {
        let r = RemoveReport {
            cluster: "lab".into(),
            api_server: "https://10.0.0.5:6443".into(),
            removed: vec![Removed {
                node: "cp-1".into(),
                role: "control-plane".into(),
                node_deleted: true,
                evicted: vec![],
                etcd_member: Some("8e9e05c52164694d".into()),
                etcd_voters_after: Some(2),
                member_forgotten: true,
            }],
        };
        let t = render(&r);
        assert!(t.contains("cp-1 (control-plane): Node deleted"), "{t}");
        assert!(
            t.contains("etcd member 8e9e05c52164694d removed (2 voters left)"),
            "{t}"
        );
        assert!(t.contains("forgotten at the rendezvous"), "{t}");
    }
}
