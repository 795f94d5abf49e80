//! `muster status`: every planned node as the rendezvous sees it (live or absent, phase,
//! time in phase, attempts, last error from its sealed report), who initialized, who holds
//! the join slots (from the audit log), and whether the API endpoint answers.

use super::probe::{self, ProbeResult};
use super::{BuildDir, OpsError};
use model::rendezvous::AuditEntry;
use nodeagent::coord::keys;
use nodeagent::etcd_view::EtcdView;
use nodeagent::material::{InitRecord, JoinMaterial};
use nodeagent::rendezvous::PlainMember;
pub use nodeagent::rendezvous::{SlotHolder, holders_from_audit};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The phase shown for a planned node that is not a live member.
pub const ABSENT: &str = "absent";

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
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Initialized {
    pub node: String,
    pub token: u64,
    pub at_ms: u64,
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
    pub initialized: Option<Initialized>,
    pub join_material: bool,
    pub init_holders: Vec<SlotHolder>,
    pub cp_join_holders: Vec<SlotHolder>,
    pub worker_join_holders: Vec<SlotHolder>,
    pub api: ProbeResult,
    /// The freshest etcd view a control plane reported (stacked etcd), with its age.
    pub etcd: Option<EtcdView>,
    /// Every planned node reports done.
    pub all_done: bool,
}

impl ClusterStatus {
    /// Every node done, and etcd's quorum held as last reported.
    pub fn healthy(&self) -> bool {
        self.all_done && self.etcd.as_ref().is_none_or(|e| e.quorum.has_quorum)
    }
}

/// One row per planned node, from the live members' opened reports.
pub fn rows(dir: &BuildDir, members: &[PlainMember], now_ms: u64) -> Vec<NodeRow> {
    dir.baked
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.as_str();
            let m = members.iter().find(|m| m.name == name);
            let r = m.map(|m| &m.report);
            let str_of = |k: &str| {
                r.and_then(|r| r.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let u64_of = |k: &str| r.and_then(|r| r.get(k)).and_then(serde_json::Value::as_u64);
            let phase = match m {
                None => ABSENT.to_string(),
                Some(_) => str_of("phase").unwrap_or_else(|| "?".into()),
            };
            let done = r
                .and_then(|r| r.get("done"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
                || phase == "done";
            NodeRow {
                name: name.to_string(),
                role: n.role.as_str().to_string(),
                ip: n.ip.to_string(),
                live: m.is_some(),
                seconds_in_phase: u64_of("sinceMs").map(|s| now_ms.saturating_sub(s) / 1000),
                attempt: u64_of("attempt"),
                last_error: str_of("lastError"),
                phase,
                done,
            }
        })
        .collect()
}

/// Asks the rendezvous and probes the API endpoint. Fails only when the rendezvous cannot
/// be reached or answers nonsense.
pub async fn gather(dir: &BuildDir, timeout: Duration) -> Result<ClusterStatus, OpsError> {
    let client = dir.client(timeout)?;
    let wrap = |e| dir.rendezvous_error(e);
    let (revision, members) = client.members().await.map_err(wrap)?;
    let now = super::now_ms();
    let nodes = rows(dir, &members, now);
    let unplanned_members = members
        .iter()
        .filter(|m| !nodes.iter().any(|n| n.name == m.name))
        .map(|m| m.name.clone())
        .collect();
    let url = dir.rendezvous_url();
    let initialized = match client.get(keys::INITIALIZED).await.map_err(wrap)? {
        None => None,
        Some(r) => {
            let rec: InitRecord =
                serde_json::from_slice(&r.value).map_err(|e| OpsError::Record {
                    url: url.clone(),
                    what: format!("record `{}`: {e}", keys::INITIALIZED),
                })?;
            Some(Initialized {
                node: rec.node,
                token: rec.token,
                at_ms: rec.at_ms,
            })
        }
    };
    let material = match client.get(keys::JOIN_MATERIAL).await.map_err(wrap)? {
        None => None,
        Some(r) => Some(
            serde_json::from_slice::<JoinMaterial>(&r.value).map_err(|e| OpsError::Record {
                url: url.clone(),
                what: format!("record `{}`: {e}", keys::JOIN_MATERIAL),
            })?,
        ),
    };
    let audit = audit_log(&client).await.map_err(wrap)?;
    // With the admin kubeconfig's CA the endpoint must also pass TLS verification.
    let roots = material
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
    let all_done = !nodes.is_empty() && nodes.iter().all(|n| n.done);
    let etcd = nodeagent::report::freshest_etcd(&members);
    Ok(ClusterStatus {
        cluster: dir.baked.spec.name.to_string(),
        cluster_id: dir.baked.cluster_id.clone(),
        rendezvous: url,
        revision,
        nodes,
        unplanned_members,
        initialized,
        join_material: material.is_some(),
        init_holders: holders_from_audit(&audit, keys::INIT_SEMAPHORE),
        cp_join_holders: holders_from_audit(&audit, keys::CP_JOIN_SEMAPHORE),
        worker_join_holders: holders_from_audit(&audit, keys::WORKER_JOIN_SEMAPHORE),
        api,
        etcd,
        all_done,
    })
}

/// The whole audit log, page by page.
pub async fn audit_log(
    client: &nodeagent::rendezvous::Client,
) -> Result<Vec<AuditEntry>, nodeagent::rendezvous::ClientError> {
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

fn holders(h: &[SlotHolder]) -> String {
    if h.is_empty() {
        return "free".into();
    }
    h.iter()
        .map(|h| format!("{} (token {})", h.holder, h.token))
        .collect::<Vec<_>>()
        .join(", ")
}

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
                "{} (init token {})",
                i.node, i.token
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
        "\n{:<20} {:<14} {:<15} {:<22} {:>8} {:>7}  LAST ERROR",
        "NODE", "ROLE", "IP", "PHASE", "IN PHASE", "ATTEMPT"
    );
    for n in &s.nodes {
        let _ = writeln!(
            o,
            "{:<20} {:<14} {:<15} {:<22} {:>8} {:>7}  {}",
            n.name,
            n.role,
            n.ip,
            n.phase,
            n.seconds_in_phase
                .map_or("-".to_string(), |x| format!("{x}s")),
            n.attempt.map_or("-".to_string(), |x| x.to_string()),
            n.last_error.as_deref().unwrap_or("")
        );
    }
    if let Some(e) = &s.etcd {
        let _ = writeln!(
            o,
            "\netcd, as {} reported it {}s ago:",
            e.observed_by,
            super::now_ms().saturating_sub(e.observed_ms) / 1000
        );
        o.push_str(&e.render("  "));
    }
    if !s.unplanned_members.is_empty() {
        let _ = writeln!(
            o,
            "members not in this build's plan: {}",
            s.unplanned_members.join(", ")
        );
    }
    let done = s.nodes.iter().filter(|n| n.done).count();
    let _ = writeln!(
        o,
        "\n{done}/{} nodes done{}",
        s.nodes.len(),
        if s.all_done { "" } else { ": not complete" }
    );
    o
}
