//! The agent moves to the release's own `nodeagent` once this node runs the release
//! (issue 15: "the agent itself is updated from the same payload"). The payload's node
//! tree replaced the binary on disk at the install step; the process keeps running the
//! old one until it execs the new one, which resumes from the persisted state. When it
//! may is pure ([`may_restart`]); whether there is another binary is [`BinaryWatch`]
//! (asked only then: it reads files); the exec is `main`'s.

use super::state::Phase;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Restart only between rolls: a node in the middle of its steps finishes them with the
/// agent that began them, and a node that runs no release has nothing new.
pub fn may_restart(phase: &Phase) -> bool {
    matches!(phase, Phase::Done { .. })
}

/// The agent binary this process was started from, and whether the file at its path has
/// since been replaced by one with other contents.
#[derive(Debug)]
pub struct BinaryWatch {
    path: PathBuf,
    /// The running image (Linux keeps it readable even after the file is replaced).
    running: PathBuf,
    /// `(device, inode)` of the file last found equal to the running image.
    same_as: Option<(u64, u64)>,
}

impl BinaryWatch {
    /// `path`: where the payload installs the agent (`ROOT/usr/bin/nodeagent`).
    pub fn new(path: PathBuf) -> BinaryWatch {
        BinaryWatch::comparing(path, PathBuf::from("/proc/self/exe"))
    }

    /// [`Self::new`] against another running image (tests).
    pub fn comparing(path: PathBuf, running: PathBuf) -> BinaryWatch {
        BinaryWatch {
            path,
            running,
            same_as: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the path now holds other bytes than the running image. A file
    /// seen equal once is not read again until it is replaced (another inode); a file
    /// that cannot be read counts as unchanged (nothing better to exec).
    pub fn changed(&mut self) -> bool {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return false;
        };
        let id = (meta.dev(), meta.ino());
        if self.same_as == Some(id) {
            return false;
        }
        match (digest(&self.path), digest(&self.running)) {
            (Ok(on_disk), Ok(running)) if on_disk == running => {
                self.same_as = Some(id);
                false
            }
            (Ok(_), Ok(_)) => true,
            (on_disk, running) => {
                tracing::warn!(path = %self.path.display(), ?on_disk, ?running,
                    "cannot compare the agent binary with the running one");
                false
            }
        }
    }
}

fn digest(path: &Path) -> Result<[u8; 32], String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::KubeVersion;

    #[test]
    fn only_a_done_node_restarts() {
        let to: KubeVersion = "v1.32.0".parse().unwrap();
        assert!(may_restart(&Phase::Done { sequence: 1, to }));
        let running = Phase::Running {
            sequence: 1,
            to,
            token: 1,
            steps: vec![super::super::steps::Step::Drain],
            step: super::super::steps::Step::Drain,
            resumes_seen: 0,
        };
        assert!(!may_restart(&running));
        assert!(!may_restart(&Phase::Idle));
    }

    #[test]
    fn a_replaced_file_with_other_bytes_is_a_change_the_same_bytes_are_not() {
        let d = tempfile::tempdir().unwrap();
        let running = d.path().join("running");
        let installed = d.path().join("nodeagent");
        std::fs::write(&running, b"agent v1").unwrap();
        std::fs::write(&installed, b"agent v1").unwrap();
        let mut w = BinaryWatch::comparing(installed.clone(), running.clone());
        assert!(!w.changed(), "same bytes");
        assert!(!w.changed(), "same file, not read again");
        // Installed as the payload installs files: a new file renamed over the old.
        let tmp = d.path().join("nodeagent.tmp");
        std::fs::write(&tmp, b"agent v2").unwrap();
        std::fs::rename(&tmp, &installed).unwrap();
        assert!(w.changed());
        // A reinstall of identical bytes (a release that did not change the agent).
        std::fs::write(&tmp, b"agent v1").unwrap();
        std::fs::rename(&tmp, &installed).unwrap();
        assert!(!w.changed());
        std::fs::remove_file(&installed).unwrap();
        assert!(!w.changed(), "no file: nothing to exec");
    }
}
