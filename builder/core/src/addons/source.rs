//! Where `muster build` takes a pinned add-on manifest (or packaged chart) from: the
//! `--artifacts DIR` of an offline build (`DIR/addons/<name>-<version>.yaml` or `.tgz`, the same directory as the image's
//! artifacts), else a cache keyed by SHA-256 (`~/.cache/muster/addons/<sha256>`), filled
//! once from the pinned URL. Every byte is checked against the pin before it is used.

use super::PinnedManifest;
use crate::image::artifacts::download;
use crate::image::files::{atomic_write, sha256_file};
use std::path::{Path, PathBuf};

/// The subdirectory of an artifacts directory holding add-on manifests.
pub const ARTIFACTS_SUBDIR: &str = "addons";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Offline: only this artifacts directory (`DIR/addons/<name>-<version>.yaml`).
    Artifacts(PathBuf),
    /// Online: this cache, filled from the pinned URL on a miss.
    Cache(PathBuf),
}

impl Source {
    /// `--artifacts DIR` when given, else the cache (`MUSTER_ADDON_CACHE`, else
    /// `~/.cache/muster/addons`).
    pub fn from_options(artifacts: Option<PathBuf>) -> Source {
        if let Some(dir) = artifacts {
            return Source::Artifacts(dir);
        }
        let cache = match (
            std::env::var_os("MUSTER_ADDON_CACHE"),
            std::env::var_os("HOME"),
        ) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => PathBuf::from(home).join(".cache/muster/addons"),
            (None, None) => PathBuf::from(".muster-cache/addons"),
        };
        Source::Cache(cache)
    }
}

/// The file name of `m` inside an artifacts directory's `addons/`: `.tgz` for a packaged
/// Helm chart, `.yaml` for a manifest.
pub fn artifact_name(m: &PinnedManifest) -> String {
    let ext = if super::chart::is_chart(&m.url) {
        "tgz"
    } else {
        "yaml"
    };
    format!("{}-{}.{ext}", m.name, m.version)
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "add-on {} {}: cannot get {} (pinned sha256 {}): {detail}; offline, put the file at {hint}",
        pin.name, pin.version, pin.url, pin.sha256
    )]
    Unavailable {
        pin: Box<PinnedManifest>,
        detail: String,
        hint: String,
    },
    #[error(
        "add-on {} {}: {} has sha256 {got}, expected {} (the pin for {})",
        pin.name, pin.version, path.display(), pin.sha256, pin.url
    )]
    Mismatch {
        pin: Box<PinnedManifest>,
        path: PathBuf,
        got: String,
    },
}

/// The pinned bytes of `m`.
pub fn fetch(source: &Source, m: &PinnedManifest) -> Result<Vec<u8>, SourceError> {
    let unavailable = |detail: String, hint: String| SourceError::Unavailable {
        pin: Box::new(m.clone()),
        detail,
        hint,
    };
    let path = match source {
        Source::Artifacts(dir) => {
            let path = dir.join(ARTIFACTS_SUBDIR).join(artifact_name(m));
            if !path.is_file() {
                return Err(unavailable(
                    format!("not in the artifacts directory {}", dir.display()),
                    path.display().to_string(),
                ));
            }
            path
        }
        Source::Cache(dir) => {
            let path = dir.join(m.sha256.as_ref());
            if !path.is_file() {
                fill_cache(m, &path).map_err(|detail| {
                    unavailable(
                        detail,
                        format!(
                            "ARTIFACTS/{ARTIFACTS_SUBDIR}/{} (muster build --artifacts ARTIFACTS)",
                            artifact_name(m)
                        ),
                    )
                })?;
            }
            path
        }
    };
    check(m, &path)
}

/// Downloads `m` into the cache at `path` (atomically; a wrong download never lands).
fn fill_cache(m: &PinnedManifest, path: &Path) -> Result<(), String> {
    let tmp = path.with_extension("download");
    download(&m.url, &tmp).map_err(|e| e.to_string())?;
    let got = sha256_file(&tmp).map_err(|e| e.to_string())?;
    if got != m.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("the download has sha256 {got}"));
    }
    let bytes = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    atomic_write(path, &bytes).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

fn check(m: &PinnedManifest, path: &Path) -> Result<Vec<u8>, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| SourceError::Unavailable {
        pin: Box::new(m.clone()),
        detail: format!("{}: {e}", path.display()),
        hint: path.display().to_string(),
    })?;
    let got = crate::bake::payload::sha256_hex(&bytes);
    if got != m.sha256 {
        return Err(SourceError::Mismatch {
            pin: Box::new(m.clone()),
            path: path.to_path_buf(),
            got,
        });
    }
    Ok(bytes)
}
