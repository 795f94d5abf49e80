//! Watching a lab: phase changes while it assembles (from each node's own status file), and
//! the status table (each node's `nodeagent status --json`, run in its namespace, plus the
//! lab's daemons and who holds the VIP).

use crate::error::{LabError, Result};
use crate::{Lab, NodeRecord, netns, process};
use protocol::report::MemberReport;
use protocol::status::Status;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One node's phase changed (`phase#attempt` when retrying).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseChange {
    pub elapsed: Duration,
    pub node: String,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for PhaseChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>6.1}s] {}: {} -> {}",
            self.elapsed.as_secs_f64(),
            self.node,
            self.from,
            self.to
        )
    }
}

/// `phase` or `phase#attempt`, from the report the node's agent writes to its own disk at
/// every change (`AGENT_STATUS`); `-` before its agent wrote any.
pub fn local_phase(node: &NodeRecord) -> String {
    match MemberReport::read_local(&model::node_files::NodeRoot::new(&node.root)) {
        Ok(Some(r)) if r.attempt > 0 => format!("{}#{}", r.phase, r.attempt),
        Ok(Some(r)) => r.phase,
        Ok(None) => "-".into(),
        Err(e) => format!("unreadable ({e})"),
    }
}

fn is_done(phase: &str) -> bool {
    phase == "done"
}

/// A lab daemon and whether it runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRow {
    pub name: String,
    pub pid: Option<u32>,
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    pub role: String,
    pub ip: String,
    pub namespace: String,
    pub halted: bool,
    pub cut: bool,
    pub phase: String,
    pub attempt: u64,
    pub last_error: Option<String>,
    /// Why the node is stuck, as its own `nodeagent status` says: the distribution's
    /// reason, unreachable dependencies, a stranded node's line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<protocol::report::DistroReason>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<protocol::report::Unreachable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded: Option<String>,
    /// `nodeagent status` says healthy (its phase is done).
    pub agent_healthy: bool,
    pub daemons: Vec<DaemonRow>,
    /// Up, not cut, agent healthy, every daemon alive.
    pub healthy: bool,
}

/// One member of the lab's external etcd.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRow {
    pub name: String,
    pub client_url: String,
    pub namespace: String,
    pub pid: Option<u32>,
    /// `etcdctl endpoint health` with the API server's client certificate.
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabStatus {
    pub cluster: String,
    pub state_dir: String,
    pub rendezvous: DaemonRow,
    pub rendezvous_url: String,
    pub api_endpoint: String,
    pub vip: Option<String>,
    pub vip_in_lab: String,
    pub vip_holders: Vec<String>,
    pub initialized_by: Option<String>,
    pub nodes: Vec<NodeRow>,
    /// The external etcd cluster's members (external-etcd specs), with their health.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_etcd: Vec<EtcdRow>,
    pub assembled_ms: Option<u64>,
    /// What keeps the lab from being healthy (empty when healthy).
    pub problems: Vec<String>,
    pub healthy: bool,
}

fn daemon(name: &str, pid_file: &std::path::Path) -> DaemonRow {
    let pid = process::running(pid_file);
    DaemonRow {
        name: name.to_string(),
        pid,
        alive: pid.is_some(),
    }
}

/// `nodeagent status --json` in the node's namespace (its own view, and the cluster's as the
/// rendezvous tells it), or why there is none.
fn agent_status(lab: &Lab, node: &NodeRecord) -> std::result::Result<Status, String> {
    let agent = node.root.join(model::node_files::AGENT_BINARY);
    let root = node.root.display().to_string();
    let argv = [
        agent.display().to_string(),
        "status".into(),
        "--json".into(),
        "--root".into(),
        root,
    ];
    let out = lab
        .command(&node.name, &argv)
        .and_then(|cmd| netns::run(cmd, "nodeagent status", Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&out.stdout).map_err(|e| format!("`nodeagent status --json`: {e}"))
}

impl Lab {
    /// Polls every node's phase (its status file) until the `which` nodes are done,
    /// calling `on_change` for each change; fails when an agent died or `patience` ran out.
    pub fn wait_assembled(
        &self,
        which: &[String],
        started: Instant,
        patience: Duration,
        mut on_change: impl FnMut(&PhaseChange),
    ) -> Result<Duration> {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let deadline = started + patience;
        loop {
            for n in &self.rec.nodes {
                let now = local_phase(n);
                let before = last.get(&n.name).cloned().unwrap_or_else(|| "-".into());
                if now != before {
                    on_change(&PhaseChange {
                        elapsed: started.elapsed(),
                        node: n.name.clone(),
                        from: before,
                        to: now.clone(),
                    });
                    last.insert(n.name.clone(), now);
                }
            }
            if which
                .iter()
                .all(|w| last.get(w).is_some_and(|p| is_done(p)))
            {
                return Ok(started.elapsed());
            }
            for n in self.rec.nodes.iter().filter(|n| !n.halted) {
                for s in n.services.iter().filter(|s| s.name == "agent") {
                    if s.pid_file.exists() && process::running(&s.pid_file).is_none() {
                        return Err(LabError::Died {
                            node: n.name.clone(),
                            what: "nodeagent".into(),
                            log: s.log.clone(),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = which
                    .iter()
                    .filter(|w| !last.get(*w).is_some_and(|p| is_done(p)))
                    .map(|w| format!("{w} ({})", last.get(w).map_or("-", String::as_str)))
                    .collect();
                return Err(LabError::Timeout {
                    what: format!("the nodes to assemble; not done: {}", waiting.join(", ")),
                    patience,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every node from its own `nodeagent status`, the lab's daemons, the VIP holder.
    pub fn status(&self) -> Result<LabStatus> {
        let rec = &self.rec;
        let views = self.agent_views();
        let mut problems = Vec::new();
        let initialized_by = views.iter().find_map(|v| {
            v.as_ref()
                .ok()
                .and_then(|v| v.cluster.as_ref())
                .and_then(|c| c.initialized_by.clone())
        });
        let nodes: Vec<NodeRow> = rec
            .nodes
            .iter()
            .zip(&views)
            .map(|(n, v)| node_row(n, v, &mut problems))
            .collect();
        let rendezvous = daemon("rendezvous", &rec.rendezvous.pid_file);
        if !rendezvous.alive {
            problems.push("the rendezvous is not running".into());
        }
        let external_etcd = self.external_etcd_rows();
        for e in external_etcd.iter().filter(|e| !e.healthy) {
            problems.push(format!("external etcd member {} is not healthy", e.name));
        }
        let vip_holders = self.vip_holders();
        if let Some(vip) = rec.vip
            && vip_holders.len() != 1
        {
            problems.push(format!(
                "VIP {vip} is held by {} nodes ({})",
                vip_holders.len(),
                vip_holders.join(", ")
            ));
        }
        Ok(LabStatus {
            cluster: rec.cluster.clone(),
            state_dir: rec.state_dir.display().to_string(),
            rendezvous,
            rendezvous_url: format!("https://{}", rec.rendezvous_listen),
            api_endpoint: rec.api_endpoint.clone(),
            vip: rec.vip.map(|v| v.to_string()),
            vip_in_lab: rec.vip_in_lab.clone(),
            vip_holders,
            initialized_by,
            nodes,
            external_etcd,
            assembled_ms: rec.assembled_ms,
            healthy: problems.is_empty(),
            problems,
        })
    }

    /// Each node's `nodeagent status`, asked of all nodes at once (a halted node has none).
    fn agent_views(&self) -> Vec<std::result::Result<Status, String>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .rec
                .nodes
                .iter()
                .map(|n| {
                    s.spawn(move || {
                        if n.halted {
                            Err("halted".to_string())
                        } else {
                            agent_status(self, n)
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("the status thread panicked".into()))
                })
                .collect()
        })
    }

    /// The external etcd members with their health.
    fn external_etcd_rows(&self) -> Vec<EtcdRow> {
        let health = self.external_etcd_health();
        self.rec
            .external_etcd
            .iter()
            .zip(health)
            .map(|(m, (_, healthy))| EtcdRow {
                name: m.name.clone(),
                client_url: m.client_url(),
                namespace: m.ns.clone(),
                pid: process::running(&m.service.pid_file),
                healthy,
            })
            .collect()
    }
}

/// One node's row from its record and its agent's view; what keeps it from being healthy
/// goes to `problems`.
fn node_row(
    n: &NodeRecord,
    v: &std::result::Result<Status, String>,
    problems: &mut Vec<String>,
) -> NodeRow {
    let this = v.as_ref().ok().and_then(|v| v.this_node.as_ref());
    let phase = match this {
        Some(t) if !n.halted => t.phase.clone(),
        _ => crate::status::local_phase(n),
    };
    let daemons: Vec<DaemonRow> = n
        .services
        .iter()
        .map(|s| daemon(&s.name, &s.pid_file))
        .collect();
    let agent_healthy = v.as_ref().is_ok_and(|v| v.healthy);
    let dead: Vec<&str> = daemons
        .iter()
        .filter(|d| !d.alive)
        .map(|d| d.name.as_str())
        .collect();
    if n.halted {
        problems.push(format!("{} is halted", n.name));
    } else if n.cut {
        problems.push(format!("{} is cut off", n.name));
    }
    if !n.halted && !agent_healthy {
        problems.push(match v {
            Ok(_) => format!("{}: nodeagent status says not healthy ({phase})", n.name),
            Err(e) => format!("{}: no nodeagent status: {e}", n.name),
        });
    }
    if !n.halted && !dead.is_empty() {
        problems.push(format!("{}: not running: {}", n.name, dead.join(", ")));
    }
    NodeRow {
        name: n.name.clone(),
        role: n.role.clone(),
        ip: n.ip.to_string(),
        namespace: n.ns.clone(),
        halted: n.halted,
        cut: n.cut,
        phase,
        attempt: this.map_or(0, |t| u64::from(t.attempt)),
        last_error: this.and_then(|t| t.last_error.clone()),
        reason: this.and_then(|t| t.reason.clone()),
        unreachable: this.map_or_else(Vec::new, |t| t.unreachable.clone()),
        stranded: this.and_then(|t| t.stranded.clone()),
        agent_healthy,
        healthy: !n.halted && !n.cut && agent_healthy && dead.is_empty(),
        daemons,
    }
}

// Long on purpose: a renderer is one straight run of output lines in the order the
// file shows them; split up, the layout of what it writes could no longer be read here.
/// The status table.
pub fn render(s: &LabStatus) -> String {
    let mut out = String::new();
    let w = s
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<w$}  {:<13}  {:<15}  {:<22}  {:>7}  {:<26}  STATE",
        "NODE", "ROLE", "IP", "PHASE", "ATTEMPT", "DAEMONS"
    );
    for n in &s.nodes {
        let daemons: Vec<String> = n
            .daemons
            .iter()
            .map(|d| {
                if d.alive {
                    d.name.clone()
                } else {
                    format!("{}(down)", d.name)
                }
            })
            .collect();
        let state = if n.halted {
            "halted"
        } else if n.cut {
            "cut"
        } else if n.healthy {
            "ok"
        } else {
            "NOT OK"
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:<13}  {:<15}  {:<22}  {:>7}  {:<26}  {state}",
            n.name,
            n.role,
            n.ip,
            n.phase,
            n.attempt,
            daemons.join(" ")
        );
        if let Some(e) = &n.last_error {
            let _ = writeln!(out, "{:<w$}  last error: {e}", "");
        }
        let indent = format!("{:<w$}  ", "");
        out.push_str(&protocol::status::diagnosis_lines(
            n.reason.as_ref(),
            &n.unreachable,
            &indent,
        ));
        if let Some(s) = &n.stranded {
            let _ = writeln!(out, "{indent}stranded: {s}");
        }
    }
    for e in &s.external_etcd {
        let _ = writeln!(
            out,
            "{:<w$}  {:<13}  {:<15}  {}",
            e.name,
            "external-etcd",
            e.client_url,
            match (e.pid, e.healthy) {
                (Some(_), true) => "healthy",
                (Some(_), false) => "NOT healthy",
                (None, _) => "stopped",
            }
        );
    }
    let _ = writeln!(
        out,
        "initialized by: {}",
        s.initialized_by.as_deref().unwrap_or("(nobody yet)")
    );
    let _ = writeln!(out, "{}", s.vip_in_lab);
    if s.vip.is_some() {
        let _ = writeln!(
            out,
            "VIP holder: {}",
            if s.vip_holders.is_empty() {
                "(none)".to_string()
            } else {
                s.vip_holders.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "API endpoint: {}; rendezvous: {} ({})",
        s.api_endpoint,
        s.rendezvous_url,
        if s.rendezvous.alive {
            "running"
        } else {
            "DOWN"
        }
    );
    if let Some(ms) = s.assembled_ms {
        let _ = writeln!(
            out,
            "assembled in {:.1}s",
            Duration::from_millis(ms).as_secs_f64()
        );
    }
    if s.healthy {
        out.push_str("healthy\n");
    } else {
        let _ = writeln!(out, "NOT healthy: {}", s.problems.join("; "));
    }
    protocol::status::printable(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::report::{DistroReason, Unreachable};

    fn row(name: &str) -> NodeRow {
        NodeRow {
            name: name.into(),
            role: "worker".into(),
            ip: "10.0.0.21".into(),
            namespace: format!("lab-{name}"),
            halted: false,
            cut: false,
            phase: "joining".into(),
            attempt: 2,
            last_error: Some("join failed".into()),
            reason: None,
            unreachable: Vec::new(),
            stranded: None,
            agent_healthy: false,
            daemons: Vec::new(),
            healthy: false,
        }
    }

    fn lab(nodes: Vec<NodeRow>) -> LabStatus {
        LabStatus {
            cluster: "lab".into(),
            state_dir: "/tmp/lab".into(),
            rendezvous: DaemonRow {
                name: "rendezvous".into(),
                pid: Some(1),
                alive: true,
            },
            rendezvous_url: "https://10.0.0.2:8443".into(),
            api_endpoint: "10.0.0.10:6443".into(),
            vip: Some("10.0.0.10".into()),
            vip_in_lab: "10.0.0.10".into(),
            vip_holders: Vec::new(),
            initialized_by: Some("cp-1".into()),
            nodes,
            external_etcd: Vec::new(),
            assembled_ms: None,
            problems: Vec::new(),
            healthy: false,
        }
    }

    /// The table says why a stuck node is stuck, as its own `nodeagent status` does: the
    /// unreachable dependency, the distribution's words, a stranded node's line; a node
    /// with nothing to say adds no lines.
    #[test]
    fn a_stuck_node_shows_its_own_diagnosis() {
        let mut stuck = row("w-1");
        stuck.unreachable = vec![Unreachable {
            what: "API VIP".into(),
            endpoint: "10.0.0.10:6443".into(),
            error: "connection refused".into(),
        }];
        stuck.reason = Some(DistroReason {
            source: "kubeadm join".into(),
            phase: Some("preflight".into()),
            message: Some("couldn't validate the identity of the API Server".into()),
            log_tail: vec!["[preflight] Running pre-flight checks".into()],
        });
        stuck.stranded = Some("no control plane has answered for more than 300s".into());
        let quiet = row("w-2");
        let text = render(&lab(vec![stuck, quiet]));
        for want in [
            "API VIP 10.0.0.10:6443 unreachable: connection refused",
            "distribution says: kubeadm join: phase preflight: couldn't validate the identity",
            "| [preflight] Running pre-flight checks",
            "stranded: no control plane has answered for more than 300s",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        let after_quiet = text.split("w-2").nth(1).unwrap_or_default();
        assert!(
            !after_quiet.contains("unreachable") && !after_quiet.contains("stranded"),
            "{text}"
        );
    }
}
