//! Atomic file writes: a temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The temp file beside `path` that is renamed over it once written and synced.
fn tmp_of(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes and fsyncs `path`'s temp file with `mode`; the caller renames it into place.
fn write_tmp(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp_of(path))?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    f.sync_all()
}

/// One file, atomically: `model::fsutil::write_atomic`, the error as the I/O error the
/// build's own errors wrap with the path.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    model::fsutil::write_atomic(path, contents, mode).map_err(|e| e.source)
}

/// Writes many files, each atomically (temp file, fsync, rename), and fsyncs every
/// directory involved once at the end. Temp files are written and fsynced on up to 32 threads
/// at once so the filesystem can commit them together (one fsync after another cost ~90%
/// of a 100-node build here: 4.8 s on disk vs 0.6 s on tmpfs, before this).
pub fn write_all_atomic(
    files: &[(std::path::PathBuf, Vec<u8>, u32)],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    use std::collections::BTreeSet;
    let threads = 32;
    let chunk = files.len().div_ceil(threads).max(1);
    let first_error = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    for (p, c, m) in part {
                        write_tmp(p, c, *m).map_err(|e| (p.clone(), e))?;
                    }
                    Ok::<(), (std::path::PathBuf, std::io::Error)>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err((
                        std::path::PathBuf::from("(writer thread)"),
                        std::io::Error::other("writer thread panicked"),
                    ))
                })
            })
            .find_map(Result::err)
    });
    if let Some(err) = first_error {
        for (p, _, _) in files {
            let _ = fs::remove_file(tmp_of(p));
        }
        return Err(err);
    }
    let mut dirs = BTreeSet::new();
    for (p, _, _) in files {
        fs::rename(tmp_of(p), p).map_err(|e| (p.clone(), e))?;
        dirs.insert(p.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    for d in dirs {
        File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| (d.clone(), e))?;
    }
    Ok(())
}
