//! The member report: what each agent heartbeats to the rendezvous (sealed with the cluster
//! secret, like every value there) and writes to `AGENT_STATUS`. `nodeagent status` and
//! `muster status` read it; the agent builds it from its persisted state
//! (`nodeagent::report::member_report`).

use crate::clock::Millis;
use crate::etcd_view::EtcdView;
use crate::readiness::Readiness;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub node: String,
    pub role: String,
    pub phase: String,
    /// When the current phase started.
    pub since_ms: Option<Millis>,
    pub attempt: u32,
    pub last_error: Option<String>,
    pub updated_ms: Millis,
    pub done: bool,
    /// A joined control plane's view of the stacked etcd cluster, when it could ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdView>,
    /// Why init or a join is failing or stuck, in the distribution's own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DistroReason>,
    /// What this node depends on (datastore, external etcd, VIP, rendezvous) that did not
    /// accept a TCP connection at the last probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
    /// Said when the cluster is initialized but no control plane has answered for long
    /// (a torn-down cluster not reset?).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stranded: Option<String>,
    /// The node's address: a load balancer adds a joined control plane its baked plan
    /// predates (a node added by a rebuild) from this (`nodeagent::lb_follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// A load balancer (or keepalived node) whose membership-following config could not be
    /// applied: the new config rejected by the daemon's checker (the old one runs on), or
    /// its reload failed (`nodeagent::lb_follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_config: Option<String>,
    /// A control plane past its add-ons: every Node's `Ready` condition and the add-ons'
    /// rollout as it read them through the API (issue 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
}

/// At most this many log lines are carried, each line cut to fit [`MAX_REASON_BYTES`].
pub const MAX_REASON_LINES: usize = 10;
/// The whole of a reason's text (message and lines) stays under this many bytes.
pub const MAX_REASON_BYTES: usize = 2048;

/// The distribution's own reason for a failing or stuck init or join: k3s's fatal line,
/// kubeadm's failing phase and its error, else the last lines of its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DistroReason {
    /// Where the words came from: `kubeadm init`, `k3s.service log`, …
    pub source: String,
    /// kubeadm's failing phase (`error execution phase PHASE: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The one-line reason (k3s's `msg`, kubeadm's phase error); `None` when only the
    /// log's last lines are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last lines of the output, oldest first (bounded).
    #[serde(default)]
    pub log_tail: Vec<String>,
}

impl DistroReason {
    /// One line for a status table: the phase and message, else the last log line.
    pub fn summary(&self) -> String {
        match (&self.phase, &self.message) {
            (Some(p), Some(m)) => format!("{}: phase {p}: {m}", self.source),
            (None, Some(m)) => format!("{}: {m}", self.source),
            (_, None) => match self.log_tail.last() {
                Some(l) => format!("{}: last line: {l}", self.source),
                None => format!("{}: no output", self.source),
            },
        }
    }

    /// Cuts the reason to [`MAX_REASON_LINES`] lines and [`MAX_REASON_BYTES`] bytes,
    /// keeping the newest lines (a report stays small whatever a log holds).
    pub fn bounded(mut self) -> DistroReason {
        if let Some(m) = self.message.take() {
            self.message = Some(cut(&m, MAX_REASON_BYTES / 2));
        }
        let keep = self.log_tail.len().saturating_sub(MAX_REASON_LINES);
        self.log_tail.drain(..keep);
        let mut budget = MAX_REASON_BYTES
            .saturating_sub(self.message.as_ref().map_or(0, String::len))
            .saturating_sub(self.source.len() + self.phase.as_ref().map_or(0, String::len));
        let mut kept = Vec::new();
        for line in self.log_tail.iter().rev() {
            let line = cut(line, budget.min(MAX_REASON_BYTES / 4));
            if line.is_empty() || line.len() > budget {
                break;
            }
            budget -= line.len();
            kept.push(line);
        }
        kept.reverse();
        self.log_tail = kept;
        self
    }
}

/// At most `max` bytes of `s`, cut on a character boundary (`…` marks a cut).
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Something the spec says this node depends on that did not accept a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreachable {
    /// `datastore`, `etcd`, `API VIP`, `rendezvous`.
    pub what: String,
    /// `host:port`.
    pub endpoint: String,
    pub error: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} unreachable: {}",
            self.what, self.endpoint, self.error
        )
    }
}

impl MemberReport {
    /// The report the agent wrote to the node at `root` (`AGENT_STATUS`): `Ok(None)` before
    /// it wrote any, `Err` naming why when it cannot be read.
    pub fn read_local(root: &model::node_files::NodeRoot) -> Result<Option<MemberReport>, String> {
        let path = root.path(model::node_files::AGENT_STATUS);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn with_etcd(mut self, etcd: Option<EtcdView>) -> MemberReport {
        self.etcd = etcd;
        self
    }

    pub fn with_readiness(mut self, readiness: Option<Readiness>) -> MemberReport {
        self.readiness = readiness;
        self
    }

    /// The JSON the rendezvous client seals.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a report back; `None` for a report this agent version cannot read.
    pub fn from_json(v: &serde_json::Value) -> Option<MemberReport> {
        serde_json::from_value(v.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_the_new_fields_still_reads() {
        // What an agent from before `reason` and `unreachable` heartbeats.
        let old = serde_json::json!({
            "node": "cp-1", "role": "control-plane", "phase": "joining", "sinceMs": 1,
            "attempt": 1, "lastError": null, "updatedMs": 2, "done": false,
        });
        let r = MemberReport::from_json(&old).unwrap();
        assert!(r.reason.is_none() && r.unreachable.is_empty());
        assert_eq!(r.to_json(), old, "absent fields are not written either");
    }

    #[test]
    fn a_reason_is_bounded_keeping_the_newest_lines() {
        let r = DistroReason {
            source: "k3s.service log".into(),
            phase: None,
            message: Some("m".repeat(5000)),
            log_tail: (0..50)
                .map(|i| format!("line {i} {}", "x".repeat(300)))
                .collect(),
        }
        .bounded();
        let total =
            r.message.as_ref().unwrap().len() + r.log_tail.iter().map(String::len).sum::<usize>();
        assert!(total <= MAX_REASON_BYTES, "{total}");
        assert!(r.log_tail.len() <= MAX_REASON_LINES && !r.log_tail.is_empty());
        assert!(r.log_tail.last().unwrap().starts_with("line 49 "));
        assert!(r.message.unwrap().ends_with('…'));
    }

    #[test]
    fn summaries_and_unreachable_read_as_one_line() {
        let mut r = DistroReason {
            source: "kubeadm init".into(),
            phase: Some("wait-control-plane".into()),
            message: Some("couldn't initialize a Kubernetes cluster".into()),
            log_tail: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            r.summary(),
            "kubeadm init: phase wait-control-plane: couldn't initialize a Kubernetes cluster"
        );
        r.message = None;
        assert_eq!(r.summary(), "kubeadm init: last line: b");
        let u = Unreachable {
            what: "datastore".into(),
            endpoint: "10.0.0.5:3306".into(),
            error: "connection refused".into(),
        };
        assert_eq!(
            u.to_string(),
            "datastore 10.0.0.5:3306 unreachable: connection refused"
        );
    }
}
