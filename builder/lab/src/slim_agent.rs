//! The nodeagent the lab packs: the same build without its debug sections.
//!
//! A debug `nodeagent` is ~78 MB, ~70% of it DWARF; every lab build gzips it into the
//! payload and every node unpacks it, which cost seconds per build (three builds in the
//! scale-out test alone). `strip --strip-debug` keeps the code, symbols and behaviour and
//! drops only what a debugger reads. The copy sits next to the original and is re-made when
//! the original changes; without `strip` the original is packed as before.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

/// The stripped copy of `agent` (re-made if stale), or `agent` itself when it cannot be
/// made (no `strip`, read-only dir): packing the full binary is slower, never wrong.
pub fn slim_agent(agent: &Path) -> PathBuf {
    match make(agent) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(agent = %agent.display(), "packing the unstripped agent: {e}");
            agent.to_path_buf()
        }
    }
}

/// Identifies the original build: a different size or mtime means a new build.
fn stamp(agent: &Path) -> std::io::Result<String> {
    let md = std::fs::metadata(agent)?;
    let mtime = md
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{} {}\n", md.len(), mtime))
}

fn make(agent: &Path) -> Result<PathBuf, String> {
    let name = agent
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} has no file name", agent.display()))?;
    let dir = agent.parent().unwrap_or(Path::new("."));
    let slim = dir.join(format!("{name}.lab-slim"));
    let stamp_file = dir.join(format!("{name}.lab-slim.stamp"));
    let want = stamp(agent).map_err(|e| format!("reading {}: {e}", agent.display()))?;
    if slim.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&want) {
        return Ok(slim);
    }
    // Concurrent tests each strip into their own temp file; the renames are atomic, and
    // the stamp is written after the binary so a reader never pairs a new stamp with an
    // old copy.
    let tmp = dir.join(format!(".{name}.lab-slim.{}", std::process::id()));
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(agent)
        .output()
        .map_err(|e| format!("running strip: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "strip --strip-debug {}: {}",
            agent.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&tmp, &slim).map_err(|e| format!("renaming to {}: {e}", slim.display()))?;
    model::fsutil::write_atomic(&stamp_file, want.as_bytes(), 0o644)
        .map_err(|e| format!("writing {}: {e}", stamp_file.display()))?;
    Ok(slim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_without_debug_sections_that_still_runs_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        // Any ELF with debug info does: the test binary itself.
        let me = std::env::current_exe().unwrap();
        let agent = dir.path().join("nodeagent");
        std::fs::copy(&me, &agent).unwrap();
        let slim = slim_agent(&agent);
        assert_eq!(slim, dir.path().join("nodeagent.lab-slim"));
        let (full, small) = (
            std::fs::metadata(&agent).unwrap().len(),
            std::fs::metadata(&slim).unwrap().len(),
        );
        assert!(small < full, "{small} !< {full}");
        let listed = Command::new(&slim).arg("--list").output().unwrap();
        assert!(listed.status.success());
        assert!(String::from_utf8_lossy(&listed.stdout).contains("slim_agent"));
        // Unchanged original: the same copy, not re-made.
        let before = std::fs::metadata(&slim).unwrap().modified().unwrap();
        assert_eq!(slim_agent(&agent), slim);
        assert_eq!(
            std::fs::metadata(&slim).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn without_a_strippable_binary_the_original_is_packed() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("nodeagent");
        std::fs::write(&agent, b"not an ELF").unwrap();
        assert_eq!(slim_agent(&agent), agent);
    }
}
