//! The upgrade roll as the rendezvous shows it (issue 15): the newest release, who holds
//! the one-slot upgrade lock, each planned node's progress (phase, step, why it waits or
//! what stopped it) and the resume requests. `muster upgrade --status`, `muster status`
//! and `nodeagent status` all show this one view.

use crate::client::{Client, ClientError};
use crate::release::{
    PROGRESS_PREFIX, Progress, RESUME, Release, ResumeRequest, UPGRADE_SEMAPHORE,
};
use crate::release_transfer::{self, TransferError};
use crate::{AuditEntry, SlotHolder, holders_from_audit};
use model::Role;
use serde::{Deserialize, Serialize};

/// One node in the roll, as its progress record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProgress {
    pub name: String,
    pub role: String,
    /// `queued`, `fetching`, `waiting`, `locking`, `upgrading`, `stopped`, `done`, `refused`; `no
    /// report` when the node has said nothing about this release.
    pub phase: String,
    pub step: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    pub release: Option<ReleaseSummary>,
    /// Who holds the one-slot upgrade lock (from the audit log): a node upgrading, or a
    /// FleetLock client rebooting (`fleetlock/GROUP/ID`).
    pub lock_holders: Vec<SlotHolder>,
    pub nodes: Vec<NodeProgress>,
    /// The node whose failure stopped the roll, if any.
    pub stopped: Option<NodeProgress>,
    pub resume_requests: u64,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSummary {
    pub sequence: u64,
    pub version: String,
    pub sha256: String,
    pub size: u64,
}

/// Node phase shown when a planned node wrote no progress for the current release.
pub const NO_REPORT: &str = "no report";

#[derive(Debug, thiserror::Error)]
pub enum RollError {
    #[error(transparent)]
    Release(#[from] TransferError),
    #[error("the roll's records: {0}")]
    Rendezvous(#[from] ClientError),
}

/// Reads the release, the progress records and the resume request; `planned`: every node
/// that upgrades (load balancers do not), with its role; `audit`: the whole audit log
/// ([`crate::status::audit_log`]), which the caller has read already for its own view.
pub async fn read(
    client: &Client,
    planned: &[(String, Role)],
    audit: &[AuditEntry],
) -> Result<UpgradeStatus, RollError> {
    let release = release_transfer::current_release(client)
        .await?
        .map(|(r, _)| r);
    let (_, records) = client.list(PROGRESS_PREFIX).await?;
    let reports: Vec<Progress> = records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Progress>(&r.value).ok())
        .filter(|p| release.as_ref().is_some_and(|r| r.sequence == p.sequence))
        .collect();
    let resume_requests = match client.get(RESUME).await? {
        Some(r) => serde_json::from_slice::<ResumeRequest>(&r.value)
            .map(|r| r.count)
            .unwrap_or(0),
        None => 0,
    };
    Ok(summarize(
        planned,
        release.as_ref(),
        &reports,
        audit,
        resume_requests,
    ))
}

/// The status as a pure function of what the rendezvous holds (tested without one).
pub fn summarize(
    planned: &[(String, Role)],
    release: Option<&Release>,
    reports: &[Progress],
    audit: &[AuditEntry],
    resume_requests: u64,
) -> UpgradeStatus {
    let nodes: Vec<NodeProgress> = planned
        .iter()
        .map(|(name, role)| {
            let p = reports.iter().find(|p| &p.node == name);
            NodeProgress {
                role: format!("{role:?}"),
                phase: p.map_or(NO_REPORT.to_string(), |p| p.phase.clone()),
                step: p.and_then(|p| p.step.clone()),
                detail: p.and_then(|p| p.detail.clone()),
                name: name.clone(),
            }
        })
        .collect();
    let stopped = nodes.iter().find(|n| n.phase == "stopped").cloned();
    let done = release.is_some() && nodes.iter().all(|n| n.phase == "done");
    UpgradeStatus {
        release: release.map(|r| ReleaseSummary {
            sequence: r.sequence,
            version: r.version.to_string(),
            sha256: r.payload.sha256.clone(),
            size: r.payload.size,
        }),
        lock_holders: holders_from_audit(audit, UPGRADE_SEMAPHORE),
        nodes,
        stopped,
        resume_requests,
        done,
    }
}

/// The status as text.
pub fn render(s: &UpgradeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match &s.release {
        None => out.push_str("no release published (muster upgrade --out DIR publishes one)\n"),
        Some(r) => {
            let _ = writeln!(
                out,
                "release {} {} (sha256 {}…, {} bytes)",
                r.sequence,
                r.version,
                &r.sha256[..r.sha256.len().min(12)],
                r.size
            );
        }
    }
    let lock = match s.lock_holders.first() {
        Some(h) => format!("{} (token {})", h.holder, h.token),
        None => "free".into(),
    };
    let _ = writeln!(out, "upgrade lock: {lock}");
    for n in &s.nodes {
        let _ = write!(out, "  {:<16} {:<13} {:<10}", n.name, n.role, n.phase);
        if let Some(step) = &n.step {
            let _ = write!(out, " step {step}");
        }
        if let Some(d) = &n.detail {
            let _ = write!(out, ": {d}");
        }
        out.push('\n');
    }
    if let Some(n) = &s.stopped {
        let _ = writeln!(
            out,
            "STOPPED at {} step {}: {}\n  fix the cause, then: muster upgrade --out DIR --resume",
            n.name,
            n.step.as_deref().unwrap_or("?"),
            n.detail.as_deref().unwrap_or("?")
        );
    } else if s.done {
        out.push_str("every node runs the release\n");
    }
    out
}
