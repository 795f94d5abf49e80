//! The status views, built once: what `nodeagent status` prints and its `--json` (this
//! node, the cluster as the rendezvous shows it, etcd), read back typed by the lab and by
//! `muster status`. Every member report and record is opened and typed here; one that
//! cannot be read marks its own entry instead of breaking the view. Text that came from
//! the network or a file is printed through [`printable`], so it cannot drive the terminal.

use crate::clock::{Millis, now_ms};
use crate::etcd_view::EtcdView;
use crate::keys;
use crate::readiness::{self, Readiness};
use crate::records::{InitRecord, JoinMaterial};
use crate::report::{DistroReason, MemberReport, Unreachable};
use crate::{AuditEntry, Client, ClientError, MemberRead, PlainRecord, holders_from_audit};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An error the agent met and recorded (kept after it recovered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The phase the node moved to because of the failure (e.g. `compensating`).
    pub phase: String,
    pub attempt: u32,
    pub error: String,
    pub at_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub last_failure: Option<Failure>,
    /// The distribution's own reason for a failing or stuck init or join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DistroReason>,
    /// Dependencies that did not accept a connection at the agent's last probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
    /// The cluster is initialized but no control plane answered for long (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stranded: Option<String>,
    /// This load balancer's membership-following config could not be applied (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_config: Option<String>,
    /// Where this node stands in an upgrade roll (issue 15), from its own upgrade state:
    /// e.g. `upgrading to v1.32.0 (release 1), step drain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub role: String,
    pub phase: Option<String>,
    pub attempt: Option<u64>,
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DistroReason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
}

/// Whether the API endpoint (the VIP) accepts a TCP connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCheck {
    pub endpoint: String,
    pub answers: bool,
    pub error: Option<String>,
}

/// A view of etcd with where it came from and how old it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSeen {
    /// `reported`: a control plane's member report at the rendezvous; `live`: asked now
    /// from this node.
    pub source: String,
    pub age_seconds: u64,
    #[serde(flatten)]
    pub view: EtcdView,
}

impl EtcdSeen {
    pub fn new(source: &str, view: EtcdView, now: Millis) -> EtcdSeen {
        EtcdSeen {
            source: source.to_string(),
            age_seconds: now.saturating_sub(view.observed_ms) / 1000,
            view,
        }
    }
}

/// The live query of etcd from this control plane: the view, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEtcd {
    /// Which etcd was asked: `stacked` (kubeadm's member on this node), `external` (the
    /// spec's external cluster), `embedded` (k3s's).
    pub kind: String,
    pub view: Option<EtcdSeen>,
    pub error: Option<String>,
}

/// The cluster as the rendezvous sees it; `reachable: false` with `error` when it could
/// not be asked (the other fields are then empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The freshest view of the Nodes' readiness and the add-ons' rollout a control plane
    /// reported (issue 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// How long that view has been as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_age_seconds: Option<u64>,
    /// Entries the rendezvous holds that could not be read, each said once.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The upgrade roll, once a release was published (`muster upgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::roll::UpgradeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub this_node: Option<NodeStatus>,
    pub cluster: Option<ClusterStatus>,
    /// On a control plane: etcd asked directly, now.
    pub local_etcd: Option<LocalEtcd>,
    /// The best view of etcd (live, else the freshest reported) says quorum is lost.
    pub etcd_quorum_lost: bool,
    /// Why the cluster, as the rendezvous shows it, is not usable: a Node not `Ready`, an
    /// add-on not rolled out, no readiness reported yet (`readiness::verdict`). Empty when
    /// it is, or when the rendezvous could not be asked.
    #[serde(default)]
    pub cluster_problems: Vec<String>,
    pub healthy: bool,
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
            readiness: None,
            readiness_age_seconds: None,
            problems: Vec::new(),
            upgrade: None,
        }
    }

    /// The agent's view of what the rendezvous answered.
    pub fn from_view(view: &RendezvousView, now: Millis) -> ClusterStatus {
        let members = view
            .members
            .iter()
            .map(|m| match &m.report {
                Ok(r) => MemberStatus {
                    name: m.name.clone(),
                    role: m.role.clone(),
                    phase: Some(r.phase.clone()),
                    attempt: Some(u64::from(r.attempt)),
                    last_error: r.last_error.clone(),
                    reason: r.reason.clone(),
                    unreachable: r.unreachable.clone(),
                },
                Err(why) => MemberStatus {
                    name: m.name.clone(),
                    role: m.role.clone(),
                    phase: None,
                    attempt: None,
                    last_error: Some(format!("report unreadable: {why}")),
                    reason: None,
                    unreachable: Vec::new(),
                },
            })
            .collect();
        let names = |sem: &str| {
            holders_from_audit(&view.audit, sem)
                .into_iter()
                .map(|h| h.holder)
                .collect()
        };
        let readiness = view.freshest_readiness().cloned();
        ClusterStatus {
            readiness_age_seconds: readiness
                .as_ref()
                .map(|r| now.saturating_sub(r.observed_ms) / 1000),
            readiness,
            reachable: true,
            error: None,
            members,
            initialized_by: view.initialized.as_ref().map(|r| r.node.clone()),
            cp_join_holders: names(keys::CP_JOIN_SEMAPHORE),
            worker_join_holders: names(keys::WORKER_JOIN_SEMAPHORE),
            etcd: view
                .freshest_etcd()
                .map(|v| EtcdSeen::new("reported", v.clone(), now)),
            api: None,
            problems: view.problems.clone(),
            upgrade: None,
        }
    }
}

/// One live member and its report, or why the report could not be read.
#[derive(Debug, Clone)]
pub struct MemberEntry {
    pub name: String,
    pub role: String,
    pub report: Result<MemberReport, String>,
}

/// Everything the rendezvous holds about a cluster, opened and typed: the one fetch behind
/// `nodeagent status`, `muster status` and the lab's status.
#[derive(Debug, Clone, Default)]
pub struct RendezvousView {
    pub revision: u64,
    /// By name.
    pub members: Vec<MemberEntry>,
    pub initialized: Option<InitRecord>,
    /// The join material, when published (secrets: never printed or serialized).
    pub join_material: Option<JoinMaterial>,
    pub audit: Vec<AuditEntry>,
    /// Entries that could not be read, each said once (`record `initialized`: …`).
    pub problems: Vec<String>,
}

impl RendezvousView {
    /// The view from what the rendezvous answered.
    pub fn from_parts(
        revision: u64,
        members: Vec<MemberRead>,
        initialized: Option<Result<PlainRecord, ClientError>>,
        join_material: Option<Result<PlainRecord, ClientError>>,
        audit: Vec<AuditEntry>,
    ) -> RendezvousView {
        let mut problems = Vec::new();
        let mut members: Vec<MemberEntry> = members
            .into_iter()
            .map(|m| {
                let report = m.report.map_err(|e| e.to_string()).and_then(|v| {
                    MemberReport::from_json(&v)
                        .ok_or_else(|| "not a member report this version can read".to_string())
                });
                if let Err(why) = &report {
                    problems.push(format!("member `{}`: report unreadable: {why}", m.name));
                }
                MemberEntry {
                    name: m.name,
                    role: m.role,
                    report,
                }
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let initialized = typed::<InitRecord>(keys::INITIALIZED, initialized, &mut problems);
        let join_material =
            typed::<JoinMaterial>(keys::JOIN_MATERIAL, join_material, &mut problems);
        RendezvousView {
            revision,
            members,
            initialized,
            join_material,
            audit,
            problems,
        }
    }

    /// The member `name`'s report, if it is live and its report readable.
    pub fn report(&self, name: &str) -> Option<&MemberReport> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.report.as_ref().ok())
    }

    /// The freshest etcd view any member reported (control planes report one once done).
    pub fn freshest_etcd(&self) -> Option<&EtcdView> {
        self.members
            .iter()
            .filter_map(|m| m.report.as_ref().ok().and_then(|r| r.etcd.as_ref()))
            .max_by_key(|v| v.observed_ms)
    }

    /// The freshest readiness view any member reported (control planes past their add-ons).
    pub fn freshest_readiness(&self) -> Option<&Readiness> {
        self.members
            .iter()
            .filter_map(|m| m.report.as_ref().ok().and_then(|r| r.readiness.as_ref()))
            .max_by_key(|v| v.observed_ms)
    }
}

/// A record's value as `T`, or `None` with the reason in `problems`.
fn typed<T: serde::de::DeserializeOwned>(
    key: &str,
    record: Option<Result<PlainRecord, ClientError>>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let why = match record? {
        Ok(r) => match serde_json::from_slice(&r.value) {
            Ok(v) => return Some(v),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    problems.push(format!("record `{key}`: unreadable: {why}"));
    None
}

/// Asks the rendezvous for members, the initialization record, the join material and the
/// whole audit log. Fails only when the rendezvous cannot be asked; an entry that cannot
/// be read is marked in the view.
pub async fn fetch(client: &Client) -> Result<RendezvousView, ClientError> {
    let (revision, members) = client.members_each().await?;
    let initialized = client.get_each(keys::INITIALIZED).await?;
    let material = client.get_each(keys::JOIN_MATERIAL).await?;
    let audit = audit_log(client).await?;
    Ok(RendezvousView::from_parts(
        revision,
        members,
        initialized,
        material,
        audit,
    ))
}

/// The whole audit log, page by page.
pub async fn audit_log(client: &Client) -> Result<Vec<AuditEntry>, ClientError> {
    let mut audit: Vec<AuditEntry> = Vec::new();
    loop {
        let after = audit.last().map_or(0, |e| e.seq);
        let page = client.audit(after).await?;
        if page.is_empty() {
            return Ok(audit);
        }
        audit.extend(page);
    }
}

/// Asks the rendezvous ([`fetch`], then the upgrade roll of `planned` with the same audit
/// log) within `timeout`, and probes the API endpoint meanwhile.
pub async fn cluster(
    client: &Client,
    api_endpoint: &str,
    planned: &[(String, model::Role)],
    timeout: Duration,
) -> ClusterStatus {
    let ask = async {
        let view = fetch(client).await?;
        // The roll, once a release was published; unreadable, it is one problem more.
        let roll = crate::roll::read(client, planned, &view.audit).await;
        Ok::<_, ClientError>((view, roll))
    };
    let (view, api) = tokio::join!(
        tokio::time::timeout(timeout, ask),
        probe_api(api_endpoint, timeout)
    );
    let mut out = match view {
        Ok(Ok((v, roll))) => {
            let mut out = ClusterStatus::from_view(&v, now_ms());
            match roll {
                Ok(u) => out.upgrade = u.release.is_some().then_some(u),
                Err(e) => out.problems.push(format!("upgrade records: {e}")),
            }
            out
        }
        Ok(Err(e)) => ClusterStatus::unreachable(e.to_string()),
        Err(_) => ClusterStatus::unreachable(format!("no answer within {}s", timeout.as_secs())),
    };
    out.api = Some(api);
    out
}

/// `text` with every control character (ESC, BEL, CR, …; not newline or tab) shown as an
/// escape, for printing what came from the network or a file: a report must not set the
/// terminal's title or clear the screen.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
        // A cluster the rendezvous could not be asked about is judged by this node alone.
        let cluster_problems = match &cluster {
            Some(c) if c.reachable => readiness::verdict(c.readiness.as_ref()),
            _ => Vec::new(),
        };
        // A load balancer still sending to an old backend list is not healthy.
        let healthy = this_node
            .as_ref()
            .is_some_and(|n| n.phase == "done" && n.lb_config.is_none())
            && !etcd_quorum_lost
            && !live_failed
            && cluster_problems.is_empty();
        Status {
            this_node,
            cluster,
            local_etcd,
            etcd_quorum_lost,
            cluster_problems,
            healthy,
        }
    }

    // Long on purpose: a renderer is one straight run of output lines in the order the

    // file shows them; split up, the layout of what it writes could no longer be read here.

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
                s.push_str(&diagnosis_lines(n.reason.as_ref(), &n.unreachable, "  "));
                if let Some(why) = &n.stranded {
                    s.push_str(&format!("  stranded: {why}\n"));
                }
                if let Some(why) = &n.lb_config {
                    s.push_str(&format!("  {why}\n"));
                }
                if let Some(u) = &n.upgrade {
                    s.push_str(&format!("  upgrade: {u}\n"));
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
                s.push_str(&diagnosis_lines(
                    m.reason.as_ref(),
                    &m.unreachable,
                    "      ",
                ));
            }
            if let Some(e) = &c.etcd {
                s.push_str(&etcd_lines(e, None));
            }
            if let Some(r) = &c.readiness {
                s.push_str(&format!(
                    "Nodes, as {} read them (unchanged for {}s): {}/{} Ready\n",
                    r.observed_by,
                    c.readiness_age_seconds.unwrap_or(0),
                    r.ready_nodes(),
                    r.nodes.len()
                ));
                s.push_str(&r.node_lines("  "));
                if !r.rollouts.is_empty() {
                    s.push_str("add-ons:\n");
                    s.push_str(&r.addon_lines("  "));
                }
            }
        }
        if let Some(l) = &self.local_etcd {
            match (&l.view, &l.error) {
                (Some(v), _) => s.push_str(&etcd_lines(v, Some(&l.kind))),
                (None, e) => s.push_str(&format!(
                    "{} etcd (live from this node): cannot ask ({})\n",
                    l.kind,
                    e.as_deref().unwrap_or("?")
                )),
            }
        }
        if let Some(u) = self.cluster.as_ref().and_then(|c| c.upgrade.as_ref()) {
            s.push_str(&format!("upgrade: {}", crate::roll::render(u)));
        }
        if let Some(c) = &self.cluster {
            for p in &c.problems {
                s.push_str(&format!("  unreadable: {p}\n"));
            }
        }
        if self.healthy {
            s.push_str("healthy\n");
        } else if self.etcd_quorum_lost {
            s.push_str("not healthy: etcd has lost its quorum\n");
        } else if !self.cluster_problems.is_empty() {
            s.push_str(&format!(
                "not healthy: {}\n",
                self.cluster_problems.join("; ")
            ));
        } else {
            s.push_str("not healthy\n");
        }
        printable(&s).into_owned()
    }
}

/// What a node said about why it is stuck: each unreachable dependency, the
/// distribution's reason and the log lines behind it, indented by `indent`.
pub fn diagnosis_lines(
    reason: Option<&DistroReason>,
    unreachable: &[Unreachable],
    indent: &str,
) -> String {
    let mut s = String::new();
    for u in unreachable {
        s.push_str(&format!("{indent}{u}\n"));
    }
    if let Some(r) = reason {
        s.push_str(&format!("{indent}distribution says: {}\n", r.summary()));
        if r.message.is_some() || r.log_tail.len() > 1 {
            for l in &r.log_tail {
                s.push_str(&format!("{indent}  | {l}\n"));
            }
        }
    }
    s
}

/// `kind` (`stacked`, `external`, `embedded`) when this node knows which etcd it asked.
fn etcd_lines(e: &EtcdSeen, kind: Option<&str>) -> String {
    // A reported view keeps its first observation time while it stays the same (the
    // agent re-sends it unchanged: `nodeagent::report::settled`), so its age says for how
    // long it has been so; the reporter confirms it at every heartbeat while it is live.
    let from = match e.source.as_str() {
        "live" => format!("live from this node, {}s ago", e.age_seconds),
        _ => format!(
            "reported by {}, unchanged for {}s",
            e.view.observed_by, e.age_seconds
        ),
    };
    let kind = kind.map_or(String::new(), |k| format!("{k} "));
    format!("{kind}etcd ({from}):\n{}", e.view.render("  "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RetryPolicy;

    /// A member as listed, its report the given fields over a minimal valid report.
    fn member(name: &str, role: &str, fields: serde_json::Value) -> MemberRead {
        let mut report = serde_json::json!({
            "node": name, "role": role, "phase": "preflight", "sinceMs": null,
            "attempt": 0, "lastError": null, "updatedMs": 0, "done": false,
        });
        for (k, v) in fields.as_object().unwrap() {
            report[k] = v.clone();
        }
        MemberRead {
            name: name.into(),
            role: role.into(),
            report: Ok(report),
            revision: 1,
            expires_at_ms: 0,
        }
    }

    fn record(key: &str, value: &impl Serialize) -> Result<PlainRecord, ClientError> {
        Ok(PlainRecord {
            key: key.into(),
            value: serde_json::to_vec(value).unwrap(),
            revision: 1,
            create_revision: 1,
            expires_at_ms: None,
        })
    }

    /// The agent's cluster view of these rendezvous answers.
    fn from_parts(
        members: Vec<MemberRead>,
        initialized: Option<InitRecord>,
        audit: &[AuditEntry],
        now: Millis,
    ) -> ClusterStatus {
        let init = initialized.map(|r| record(keys::INITIALIZED, &r));
        let view = RendezvousView::from_parts(1, members, init, None, audit.to_vec());
        ClusterStatus::from_view(&view, now)
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
            reason: None,
            unreachable: Vec::new(),
            stranded: None,
            lb_config: None,
            upgrade: None,
        }
    }

    /// Issue 15: `nodeagent status` says where this node and the cluster stand in a roll.
    #[test]
    fn the_upgrade_roll_shows_for_this_node_and_the_cluster() {
        use crate::roll::{NodeProgress, ReleaseSummary, UpgradeStatus};
        let n = NodeStatus {
            upgrade: Some("upgrading to v1.32.0 (release 1), step drain".into()),
            ..done_node()
        };
        let mut c = ClusterStatus::unreachable("x");
        c.reachable = true;
        c.upgrade = Some(UpgradeStatus {
            release: Some(ReleaseSummary {
                sequence: 1,
                version: "v1.32.0".into(),
                sha256: "ab".repeat(32),
                size: 10,
            }),
            lock_holders: vec![crate::SlotHolder {
                holder: "cp-1".into(),
                token: 4,
                since_ms: 0,
            }],
            nodes: vec![NodeProgress {
                name: "cp-1".into(),
                role: "ControlPlane".into(),
                phase: "upgrading".into(),
                step: Some("drain".into()),
                detail: None,
            }],
            stopped: None,
            resume_requests: 0,
            done: false,
        });
        let text = Status::new(Some(n), Some(c)).render();
        assert!(
            text.contains("  upgrade: upgrading to v1.32.0 (release 1), step drain\n"),
            "{text}"
        );
        assert!(text.contains("upgrade: release 1 v1.32.0"), "{text}");
        assert!(text.contains("upgrade lock: cp-1 (token 4)"), "{text}");
        assert!(text.contains("upgrading  step drain"), "{text}");
    }

    #[test]
    fn a_load_balancer_whose_new_config_was_rejected_says_so() {
        let n = NodeStatus {
            lb_config: Some("load-balancer config not applied: haproxy rejected it".into()),
            ..done_node()
        };
        let st = Status::new(Some(n), None);
        assert!(!st.healthy);
        let text = st.render();
        assert!(
            text.contains("  load-balancer config not applied: haproxy rejected it\n"),
            "{text}"
        );
    }

    #[test]
    fn a_stranded_node_says_so() {
        let n = NodeStatus {
            phase: "acquiring-join-slot".into(),
            stranded: Some("no control plane has answered for 300s".into()),
            ..done_node()
        };
        let text = Status::new(Some(n), None).render();
        assert!(
            text.contains("  stranded: no control plane has answered for 300s"),
            "{text}"
        );
    }

    #[test]
    fn a_stuck_node_shows_what_it_cannot_reach_and_the_distributions_reason() {
        let stuck = NodeStatus {
            phase: "checking-health".into(),
            last_error: Some("the new control plane never became healthy".into()),
            reason: Some(DistroReason {
                source: "k3s.service log".into(),
                phase: None,
                message: Some(
                    "starting kubernetes: dial tcp 10.0.0.5:3306: connect: connection refused"
                        .into(),
                ),
                log_tail: vec!["level=info msg=\"Starting k3s\"".into()],
            }),
            unreachable: vec![Unreachable {
                what: "datastore".into(),
                endpoint: "10.0.0.5:3306".into(),
                error: "connection refused".into(),
            }],
            ..done_node()
        };
        let text = Status::new(Some(stuck), None).render();
        assert!(
            text.contains("  datastore 10.0.0.5:3306 unreachable: connection refused\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "distribution says: k3s.service log: starting kubernetes: dial tcp 10.0.0.5:3306"
            ),
            "{text}"
        );
        assert!(text.contains("| level=info msg=\"Starting k3s\""), "{text}");
    }

    #[test]
    fn renders_the_cluster_view() {
        use crate::AuditEvent;
        let e = crate::testkit::e;
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
        let mut c = from_parts(
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
                    serde_json::json!({"phase": "done", "readiness": ready_view("cp-1", 0, true)}),
                ),
            ],
            Some(InitRecord {
                node: "cp-1".into(),
                token: 1,
                at_ms: 7,
                generation: 0,
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

    /// A readiness view (`readiness::Readiness`) of cp-1 and w-1, w-1 `Ready` or not, and
    /// flannel's DaemonSet rolled out with it.
    fn ready_view(by: &str, at: Millis, w1_ready: bool) -> serde_json::Value {
        serde_json::json!({
            "observedBy": by, "observedMs": at,
            "nodes": [
                {"name": "cp-1", "ready": true, "reason": "KubeletReady"},
                {"name": "w-1", "ready": w1_ready, "reason": "KubeletNotReady",
                 "message": "cni plugin not initialized"},
            ],
            "rollouts": [{"addon": "flannel", "kind": "DaemonSet", "namespace": "kube-flannel",
                          "name": "kube-flannel-ds", "desired": 2,
                          "available": if w1_ready { 2 } else { 1 }}],
        })
    }

    /// Issue 14: `nodeagent status` shows every Node's readiness and the add-ons' rollout
    /// from the freshest view reported, and is healthy only when all are.
    #[test]
    fn a_node_not_ready_or_an_addon_not_rolled_out_is_not_healthy() {
        let c = |w1_ready: bool, at: Millis| {
            from_parts(
                vec![member(
                    "cp-1",
                    "control-plane",
                    serde_json::json!({"phase": "done", "readiness": ready_view("cp-1", at, w1_ready)}),
                )],
                None,
                &[],
                9_000,
            )
        };
        let st = Status::new(Some(done_node()), Some(c(false, 2_000)));
        assert!(!st.healthy, "done, but w-1 is NotReady");
        let text = st.render();
        for want in [
            "Nodes, as cp-1 read them (unchanged for 7s): 1/2 Ready\n",
            "  cp-1                 Ready\n",
            "  w-1                  NotReady (KubeletNotReady: cni plugin not initialized)\n",
            "add-ons:\n  flannel: NOT rolled out (DaemonSet kube-flannel/kube-flannel-ds 1/2)\n",
            "not healthy: Node w-1 is not Ready; add-on flannel not rolled out: DaemonSet kube-flannel/kube-flannel-ds 1/2\n",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["cluster"]["readiness"]["nodes"][1]["ready"], false);
        assert_eq!(j["cluster"]["readinessAgeSeconds"], 7);
        assert_eq!(j["clusterProblems"].as_array().unwrap().len(), 2);

        let st = Status::new(Some(done_node()), Some(c(true, 2_000)));
        assert!(st.healthy);
        assert!(
            st.render()
                .contains("  flannel: rolled out (DaemonSet kube-flannel/kube-flannel-ds 2/2)\n")
        );

        // A reachable cluster where no control plane reported the Nodes yet: not healthy.
        let blind = from_parts(
            vec![member(
                "cp-1",
                "control-plane",
                serde_json::json!({"phase": "done"}),
            )],
            None,
            &[],
            0,
        );
        let st = Status::new(Some(done_node()), Some(blind));
        assert!(!st.healthy);
        assert!(
            st.render()
                .ends_with("not healthy: no control plane has reported the Nodes' readiness yet\n")
        );
    }

    fn etcd_report(by: &str, at: Millis, healthy: &[bool]) -> serde_json::Value {
        use crate::testkit::member;
        let ms = [
            member(0x11, "cp-1", "10.0.0.11", false),
            member(0x12, "cp-2", "10.0.0.12", false),
            member(0x13, "cp-3", "10.0.0.13", false),
        ];
        serde_json::json!({
            "node": by, "role": "control-plane", "phase": "done", "sinceMs": 0,
            "attempt": 0, "lastError": null, "updatedMs": at, "done": true,
            "etcd": EtcdView::new(by, at, &ms, healthy),
            "readiness": ready_view(by, at, true),
        })
    }

    #[test]
    fn shows_the_freshest_reported_etcd_view_and_its_age() {
        let c = from_parts(
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
            "etcd (reported by cp-2, unchanged for 12s):",
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
            from_parts(
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
            &[crate::testkit::member(0x11, "cp-1", "10.0.0.11", false)],
            &[true],
        );
        let st = Status::with_local_etcd(
            Some(done_node()),
            Some(lost()),
            Some(LocalEtcd {
                kind: "external".into(),
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
                kind: "stacked".into(),
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
        let http = crate::http_client(None, Duration::from_secs(2)).unwrap();
        let client = Client::new(base, http, &secret, "cp-1")
            .unwrap()
            .with_retry(RetryPolicy::none());
        let started = std::time::Instant::now();
        let c = cluster(
            &client,
            &format!("127.0.0.1:{port}"),
            &[],
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

    /// Issue 18, defect 10: one unreadable member report or record used to fail the whole
    /// view (`members()` gave up on the first report it could not open).
    #[test]
    fn an_unreadable_report_or_record_marks_its_entry_and_the_rest_shows() {
        let sealed_wrong = MemberRead {
            name: "cp-2".into(),
            role: "control-plane".into(),
            report: Err(ClientError::Invalid {
                what: "sealed report",
                problem: "does not open with this cluster's key".into(),
            }),
            revision: 1,
            expires_at_ms: 0,
        };
        let not_a_report = MemberRead {
            report: Ok(serde_json::json!({"phase": 7})),
            ..member("w-1", "worker", serde_json::json!({}))
        };
        let garbage_init = Some(Ok(PlainRecord {
            key: keys::INITIALIZED.into(),
            value: b"{not json".to_vec(),
            revision: 1,
            create_revision: 1,
            expires_at_ms: None,
        }));
        let view = RendezvousView::from_parts(
            9,
            vec![
                member(
                    "cp-1",
                    "control-plane",
                    serde_json::json!({"phase": "done"}),
                ),
                sealed_wrong,
                not_a_report,
            ],
            garbage_init,
            None,
            Vec::new(),
        );
        assert_eq!(view.members.len(), 3);
        assert_eq!(view.report("cp-1").map(|r| r.phase.as_str()), Some("done"));
        assert!(view.report("cp-2").is_none());
        assert!(view.initialized.is_none());
        assert_eq!(view.problems.len(), 3, "{:?}", view.problems);
        let c = ClusterStatus::from_view(&view, 0);
        let text = Status::new(Some(done_node()), Some(c)).render();
        for want in [
            "cp-1",
            "cp-2",
            "w-1",
            "does not open with this cluster's key",
            "record `initialized`: unreadable",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    /// Issue 18, defect 9: text from a member report (or any file or network answer) used
    /// to reach the terminal raw: a report could set the title or clear the screen.
    #[test]
    fn control_characters_from_reports_are_escaped_when_printed() {
        let evil = "boom\u{1b}]0;pwned\u{7}\u{1b}[2J\r";
        let c = from_parts(
            vec![member(
                "cp-2",
                "control-plane",
                serde_json::json!({"phase": "joining", "lastError": evil}),
            )],
            None,
            &[],
            0,
        );
        let text = Status::new(Some(done_node()), Some(c)).render();
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'));
        assert!(text.contains("boom\\u{1b}]0;pwned\\u{7}"), "{text}");
        assert_eq!(printable("a\tb\nc"), "a\tb\nc", "tabs and newlines stay");
    }
}
