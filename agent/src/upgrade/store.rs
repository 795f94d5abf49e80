//! The upgrade phase on disk, beside the bootstrap state, written atomically before the
//! driver acts on it, so a reboot resumes through [`super::transition::restart`].

use super::state::Phase;
use crate::bootstrap::store::{StoreError, write_json};
use std::path::{Path, PathBuf};

/// Under the node root, beside `AGENT_STATE`.
pub const UPGRADE_STATE: &str = "var/lib/nodeagent/upgrade.json";

pub fn path(root: &Path) -> PathBuf {
    root.join(UPGRADE_STATE)
}

pub fn save(root: &Path, phase: &Phase) -> Result<(), StoreError> {
    write_json(path(root), phase, 0o600)
}

/// The saved phase; `None` when there is none (never upgraded). A file that does not read
/// is an error naming it, never a silent `Idle`: that could restart a roll mid-step.
pub fn load(root: &Path) -> Result<Option<Phase>, StoreError> {
    let p = path(root);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Read {
                path: p,
                detail: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Read {
            path: p,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::steps::Step;

    #[test]
    fn saved_phases_load_back_and_a_cut_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let phase = Phase::Running {
            sequence: 3,
            to: "v1.31.2".parse().unwrap(),
            token: 4,
            steps: vec![Step::Cordon, Step::Drain],
            step: Step::Drain,
            resumes_seen: 1,
        };
        save(dir.path(), &phase).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(phase));
        let text = std::fs::read(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), &text[..text.len() / 2]).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("upgrade.json"), "{err}");
    }
}
