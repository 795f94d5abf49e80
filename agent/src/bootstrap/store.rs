//! The persisted bootstrap: the state and every phase's start and end time, written
//! atomically to `AGENT_STATE` after each transition so a restart resumes where it stopped.

use super::state::State;
use model::node_files::{AGENT_STATE, AGENT_STATUS, NodeRoot};
use protocol::clock::Millis;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
#[cfg(any(test, feature = "testkit"))]
use std::sync::{Arc, Mutex};

pub const STATE_FORMAT: u32 = 1;
/// History entries kept (a node stuck in a retry loop must not grow the file forever).
const MAX_HISTORY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseSpan {
    pub phase: String,
    pub started_ms: Millis,
    pub ended_ms: Option<Millis>,
    pub attempt: u32,
    /// In a health confirmation (`checking-health`, `verifying`): when the last run of
    /// consecutive healthy probes began (its first healthy answer). Before it the node or
    /// what it probes was not healthy yet; after it the confirmation holds for the rest of
    /// the run. Lets a reader (the lab benchmark) tell the component's convergence from
    /// the guarantee's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_from_ms: Option<Millis>,
}

pub use protocol::status::Failure;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    pub format: u32,
    pub node: String,
    pub state: State,
    pub history: Vec<PhaseSpan>,
    /// How many transitions carried a new error (retries included); 0 on a clean run.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_failure: Option<Failure>,
}

impl Persisted {
    pub fn new(node: &str, now: Millis) -> Self {
        let state = State::initial();
        Persisted {
            format: STATE_FORMAT,
            node: node.to_string(),
            history: vec![PhaseSpan {
                phase: state.phase.name().to_string(),
                started_ms: now,
                ended_ms: None,
                attempt: 0,
                healthy_from_ms: None,
            }],
            state,
            failures: 0,
            last_failure: None,
        }
    }

    /// Records the move to `next`: ends the open span, opens a new one if the phase changed.
    pub fn enter(&mut self, next: State, now: Millis) -> bool {
        let changed =
            next.phase.name() != self.state.phase.name() || next.attempt != self.state.attempt;
        if let Some(error) = &next.last_error
            && (next.attempt != self.state.attempt || next.last_error != self.state.last_error)
        {
            self.failures = self.failures.saturating_add(1);
            self.last_failure = Some(Failure {
                phase: next.phase.name().to_string(),
                attempt: next.attempt,
                error: error.clone(),
                at_ms: now,
            });
        }
        if changed {
            if let Some(last) = self.history.last_mut()
                && last.ended_ms.is_none()
            {
                last.ended_ms = Some(now);
            }
            self.history.push(PhaseSpan {
                phase: next.phase.name().to_string(),
                started_ms: now,
                ended_ms: None,
                attempt: next.attempt,
                healthy_from_ms: None,
            });
            if self.history.len() > MAX_HISTORY {
                let excess = self.history.len() - MAX_HISTORY;
                self.history.drain(..excess);
            }
        }
        // A run of healthy probes begins (the first, or the first after a failure).
        if next.phase.healthy_probes() == Some(1)
            && let Some(last) = self.history.last_mut()
        {
            last.healthy_from_ms = Some(now);
        }
        self.state = next;
        changed
    }

    /// When the current phase started.
    pub fn since_ms(&self) -> Option<Millis> {
        self.history.last().map(|s| s.started_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the agent state {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot encode {path}: {detail}")]
    Encode { path: PathBuf, detail: String },
    #[error(transparent)]
    Write(#[from] model::fsutil::WriteError),
}

/// Pretty JSON with a final newline, written atomically; an encoding failure is an error
/// (never an empty file in place of the state).
pub(crate) fn write_json<T: Serialize>(
    path: PathBuf,
    value: &T,
    mode: u32,
) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Encode {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    bytes.push(b'\n');
    model::fsutil::write_atomic(&path, &bytes, mode)?;
    Ok(())
}

pub trait Store {
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    fn save(&self, p: &Persisted) -> Result<(), StoreError>;
    /// The status report `nodeagent status` reads when the daemon is down.
    fn save_status(&self, report: &serde_json::Value) -> Result<(), StoreError>;
}

/// `AGENT_STATE` and `AGENT_STATUS` under a node root.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: NodeRoot,
}

impl FileStore {
    pub fn new(root: NodeRoot) -> Self {
        FileStore { root }
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let path = self.root.path(AGENT_STATE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Read {
                    path,
                    detail: e.to_string(),
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Read {
                path,
                detail: e.to_string(),
            })
    }

    fn save(&self, p: &Persisted) -> Result<(), StoreError> {
        write_json(self.root.path(AGENT_STATE), p, 0o600)
    }

    fn save_status(&self, report: &serde_json::Value) -> Result<(), StoreError> {
        write_json(self.root.path(AGENT_STATUS), report, 0o644)
    }
}

#[cfg(any(test, feature = "testkit"))]
/// In memory; clones share the content, so it survives a simulated crash of the driver.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<(Option<Persisted>, Option<serde_json::Value>)>>,
}

#[cfg(any(test, feature = "testkit"))]
impl MemStore {
    /// Loses everything, as re-imaging a node does.
    pub fn wipe(&self) {
        if let Ok(mut g) = self.inner.lock() {
            *g = (None, None);
        }
    }
    pub fn status(&self) -> Option<serde_json::Value> {
        self.inner.lock().ok().and_then(|g| g.1.clone())
    }
}

#[cfg(any(test, feature = "testkit"))]
impl Store for MemStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.inner.lock().ok().and_then(|g| g.0.clone()))
    }
    fn save(&self, p: &Persisted) -> Result<(), StoreError> {
        if let Ok(mut g) = self.inner.lock() {
            g.0 = Some(p.clone());
        }
        Ok(())
    }
    fn save_status(&self, report: &serde_json::Value) -> Result<(), StoreError> {
        if let Ok(mut g) = self.inner.lock() {
            g.1 = Some(report.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::state::Phase;

    #[test]
    fn file_store_round_trips_and_records_spans() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(NodeRoot::new(dir.path()));
        assert!(store.load().unwrap().is_none());
        let mut p = Persisted::new("cp-1", 1_000);
        let mut next = p.state.clone();
        next.phase = Phase::Registering;
        assert!(p.enter(next.clone(), 2_000));
        assert!(!p.enter(next, 2_500), "same phase: no new span");
        store.save(&p).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back, p);
        assert_eq!(back.history[0].ended_ms, Some(2_000));
        assert_eq!(back.history[1].phase, "registering");
        assert_eq!(back.since_ms(), Some(2_000));
    }

    #[test]
    fn a_health_confirmation_records_when_its_last_healthy_run_began() {
        let mut p = Persisted::new("cp-2", 1_000);
        let mut at = |successes, failures, now| {
            let mut next = p.state.clone();
            next.phase = Phase::Verifying {
                token: 7,
                successes,
                failures,
            };
            p.enter(next, now);
            p.history.last().unwrap().healthy_from_ms
        };
        assert_eq!(at(0, 0, 2_000), None, "entered, nothing probed yet");
        assert_eq!(at(1, 0, 2_100), Some(2_100));
        assert_eq!(at(0, 1, 2_300), Some(2_100), "a failure keeps the old mark");
        assert_eq!(at(1, 1, 2_500), Some(2_500), "a new run begins");
        assert_eq!(at(2, 1, 2_700), Some(2_500));
        let text = serde_json::to_string(&p.history).unwrap();
        assert!(text.contains("\"healthyFromMs\":2500"), "{text}");
        assert!(!text.contains("\"healthyFromMs\":null"), "{text}");
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        std::fs::create_dir_all(root.path("var/lib/nodeagent")).unwrap();
        std::fs::write(root.path(AGENT_STATE), "{").unwrap();
        let e = FileStore::new(root).load().unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }
}
