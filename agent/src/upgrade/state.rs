//! The upgrade state one agent persists (next to its bootstrap state), so a reboot in the
//! middle of a node's upgrade resumes at the step it was at: every step is idempotent.

use super::steps::Step;
use model::KubeVersion;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Phase {
    /// No release newer than what runs.
    Idle,
    /// The newest release was refused (another cluster, downgrade, minor skip, ...):
    /// nothing changed.
    #[serde(rename_all = "camelCase")]
    Refused { sequence: u64, reason: String },
    /// A release to upgrade to, its download not yet begun: downloads go in the roll's
    /// order, a window at a time (`why` says how many nodes are before it).
    #[serde(rename_all = "camelCase")]
    Queued {
        sequence: u64,
        to: KubeVersion,
        why: String,
    },
    /// Downloading and verifying the payload.
    #[serde(rename_all = "camelCase")]
    Fetching { sequence: u64, to: KubeVersion },
    /// Verified; not this node's turn yet (`why` says what it waits for).
    #[serde(rename_all = "camelCase")]
    Waiting {
        sequence: u64,
        to: KubeVersion,
        why: String,
    },
    /// Its turn: taking the upgrade lock. `resume`: the step to run again (after a lost
    /// lease, or `muster upgrade --resume`).
    #[serde(rename_all = "camelCase")]
    Locking {
        sequence: u64,
        to: KubeVersion,
        resume: Option<Step>,
        /// The newest resume request already acted on (a failure after it waits for the next).
        resumes_seen: u64,
        /// What it waits for (status shows it): the lock held by another node, the turn
        /// refused (etcd, order), or why it is taking the lock (again). Empty in a phase
        /// persisted before it had this field.
        #[serde(default)]
        why: String,
    },
    /// Holding the lock (fencing `token`), running `step` of `steps`.
    #[serde(rename_all = "camelCase")]
    Running {
        sequence: u64,
        to: KubeVersion,
        token: u64,
        steps: Vec<Step>,
        step: Step,
        resumes_seen: u64,
    },
    /// A step failed: the roll stops here, the lock stays held with the error, and
    /// nothing else starts until `muster upgrade --resume` (a resume request with a count
    /// above `resumes_seen`).
    #[serde(rename_all = "camelCase")]
    Stopped {
        sequence: u64,
        to: KubeVersion,
        token: u64,
        steps: Vec<Step>,
        step: Step,
        cause: String,
        uncordoned: bool,
        resumes_seen: u64,
    },
    /// This node runs `to`.
    #[serde(rename_all = "camelCase")]
    Done { sequence: u64, to: KubeVersion },
}

impl Phase {
    /// The label progress records and status show.
    pub fn label(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Refused { .. } => "refused",
            Phase::Queued { .. } => "queued",
            Phase::Fetching { .. } => "fetching",
            Phase::Waiting { .. } => "waiting",
            Phase::Locking { .. } => "locking",
            Phase::Running { .. } => "upgrading",
            Phase::Stopped { .. } => "stopped",
            Phase::Done { .. } => "done",
        }
    }

    /// The same phase saying `why` it waits: `Queued`, `Waiting` and `Locking` keep every
    /// other field; the other phases have no `why` and are returned as they are.
    pub fn with_why(self, why: impl Into<String>) -> Phase {
        match self {
            Phase::Queued { sequence, to, .. } => Phase::Queued {
                sequence,
                to,
                why: why.into(),
            },
            Phase::Waiting { sequence, to, .. } => Phase::Waiting {
                sequence,
                to,
                why: why.into(),
            },
            Phase::Locking {
                sequence,
                to,
                resume,
                resumes_seen,
                ..
            } => Phase::Locking {
                sequence,
                to,
                resume,
                resumes_seen,
                why: why.into(),
            },
            p => p,
        }
    }

    /// One line for `nodeagent status`; `None` while idle (no roll to speak of).
    pub fn describe(&self) -> Option<String> {
        let line = match self {
            Phase::Idle => return None,
            Phase::Refused { sequence, reason } => {
                format!("release {sequence} refused: {reason}")
            }
            Phase::Queued { sequence, to, why } => {
                format!("queued to download release {sequence} ({to}): {why}")
            }
            Phase::Fetching { sequence, to } => {
                format!("fetching release {sequence} ({to})")
            }
            Phase::Waiting { sequence, to, why } => {
                format!("waiting to upgrade to {to} (release {sequence}): {why}")
            }
            Phase::Locking {
                sequence, to, why, ..
            } => format!("taking the upgrade lock for {to} (release {sequence}) {why}")
                .trim_end()
                .to_string(),
            Phase::Running {
                sequence, to, step, ..
            } => format!("upgrading to {to} (release {sequence}), step {step}"),
            Phase::Stopped {
                sequence,
                to,
                step,
                cause,
                ..
            } => format!(
                "STOPPED upgrading to {to} (release {sequence}) at step {step}: {cause}; \
                 fix it and run `muster upgrade --resume`"
            ),
            Phase::Done { sequence, to } => format!("runs {to} (release {sequence})"),
        };
        Some(line)
    }

    /// Whether this node is in the middle of its own upgrade (a new release must not
    /// interrupt it).
    pub fn in_flight(&self) -> bool {
        matches!(
            self,
            Phase::Locking { .. } | Phase::Running { .. } | Phase::Stopped { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_says_where_the_node_stands_in_the_roll() {
        let to: KubeVersion = "v1.32.0".parse().unwrap();
        assert_eq!(Phase::Idle.describe(), None);
        let running = Phase::Running {
            sequence: 2,
            to,
            token: 7,
            steps: vec![Step::Cordon, Step::Drain],
            step: Step::Drain,
            resumes_seen: 0,
        };
        assert_eq!(
            running.describe().unwrap(),
            "upgrading to v1.32.0 (release 2), step drain"
        );
        let stopped = Phase::Stopped {
            sequence: 2,
            to,
            token: 7,
            steps: vec![Step::Drain],
            step: Step::Drain,
            cause: "PodDisruptionBudget default/web allows no disruption".into(),
            uncordoned: true,
            resumes_seen: 0,
        };
        let s = stopped.describe().unwrap();
        assert!(
            s.starts_with("STOPPED") && s.contains("PodDisruptionBudget") && s.contains("--resume"),
            "{s}"
        );
        let waiting = Phase::Waiting {
            sequence: 2,
            to,
            why: "control plane cp-1 upgrades first".into(),
        };
        assert!(waiting.describe().unwrap().ends_with("cp-1 upgrades first"));
        let locking = Phase::Locking {
            sequence: 2,
            to,
            resume: None,
            resumes_seen: 0,
            why: String::new(),
        };
        assert_eq!(
            locking.describe().unwrap(),
            "taking the upgrade lock for v1.32.0 (release 2)"
        );
        assert_eq!(
            Phase::Done { sequence: 2, to }.describe().unwrap(),
            "runs v1.32.0 (release 2)"
        );
    }

    #[test]
    fn with_why_changes_only_the_reason() {
        let to: KubeVersion = "v1.32.0".parse().unwrap();
        let locking = Phase::Locking {
            sequence: 3,
            to,
            resume: Some(Step::Drain),
            resumes_seen: 2,
            why: "old".into(),
        };
        assert_eq!(
            locking.with_why("new"),
            Phase::Locking {
                sequence: 3,
                to,
                resume: Some(Step::Drain),
                resumes_seen: 2,
                why: "new".into(),
            }
        );
        let waiting = Phase::Waiting {
            sequence: 3,
            to,
            why: "old".into(),
        };
        assert_eq!(
            waiting.with_why("new"),
            Phase::Waiting {
                sequence: 3,
                to,
                why: "new".into(),
            }
        );
        let done = Phase::Done { sequence: 3, to };
        assert_eq!(done.clone().with_why("x"), done, "no reason to carry");
    }

    #[test]
    fn a_running_phase_round_trips_as_persisted() {
        let p = Phase::Running {
            sequence: 2,
            to: "v1.31.2".parse().unwrap(),
            token: 7,
            steps: vec![Step::Cordon, Step::Drain],
            step: Step::Drain,
            resumes_seen: 0,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.contains(r#""phase":"running""#) && text.contains(r#""step":"drain""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Phase>(&text).unwrap(), p);
    }
}
