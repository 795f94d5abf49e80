//! The Debian base rootfs, made with debootstrap from the Debian mirror and cached by a hash
//! of suite, mirror and package list. Downloaded .debs are kept too (`--cache-dir`), so even
//! a new package list downloads only what is new.
//!
//! Cache layout (`CACHE` = `--cache`):
//! - `CACHE/debs/`             debootstrap's package cache
//! - `CACHE/base/KEY/rootfs/`  a finished base (present only once complete)
//! - `CACHE/base/KEY.partial/` a base being made; removed and redone if a build died

use super::ImageError;
use super::files::{io_err, remove_tree};
use super::packages::{MIRROR, SUITE, Selection};
use super::run::run;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bump when the way a base is made changes, so old caches are not reused.
const RECIPE: &str = "muster-base-1 minbase apt-clean";

#[derive(Debug, Clone)]
pub struct Base {
    pub key: String,
    pub rootfs: PathBuf,
    pub cached: bool,
}

/// The cache key of a base: first 16 hex digits of SHA-256 over recipe, suite, mirror and
/// the sorted package list.
pub fn key(selection: &Selection) -> String {
    let mut h = Sha256::new();
    for part in [RECIPE, SUITE, MIRROR] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    for p in &selection.packages {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..16].to_string()
}

pub fn cached(cache: &Path, selection: &Selection) -> Option<Base> {
    let key = key(selection);
    let rootfs = cache.join("base").join(&key).join("rootfs");
    rootfs.join("etc/os-release").exists().then_some(Base {
        key,
        rootfs,
        cached: true,
    })
}

/// Runs debootstrap (with the shared .deb cache) and cleans apt's caches out of the result.
pub fn make(cache: &Path, selection: &Selection) -> Result<Base, ImageError> {
    let step = "debootstrap";
    let key = key(selection);
    let bases = cache.join("base");
    let partial = bases.join(format!("{key}.partial"));
    let done = bases.join(&key);
    let debs = cache.join("debs");
    remove_tree(&partial)?;
    for dir in [&partial, &debs] {
        std::fs::create_dir_all(dir).map_err(io_err(step, dir))?;
    }
    let rootfs = partial.join("rootfs");
    run(
        step,
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(format!("--include={}", selection.packages.join(",")))
            .arg(SUITE)
            .arg(&rootfs)
            .arg(MIRROR)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run(
        step,
        super::customise::chroot(&rootfs).args(["apt-get", "clean"]),
    )?;
    let lists = rootfs.join("var/lib/apt/lists");
    for entry in std::fs::read_dir(&lists).map_err(io_err(step, &lists))? {
        let path = entry.map_err(io_err(step, &lists))?.path();
        if path.is_file() {
            std::fs::remove_file(&path).map_err(io_err(step, &path))?;
        }
    }
    std::fs::write(
        partial.join("packages.txt"),
        selection.packages.join("\n") + "\n",
    )
    .map_err(io_err(step, &partial))?;
    remove_tree(&done)?;
    std::fs::rename(&partial, &done).map_err(io_err(step, &done))?;
    Ok(Base {
        key,
        rootfs: done.join("rootfs"),
        cached: false,
    })
}

/// A private copy of the base for one build (`cp -a`, reflinked where the filesystem can).
pub fn copy_to(base: &Base, dest: &Path) -> Result<(), ImageError> {
    remove_tree(dest)?;
    run(
        "copying base rootfs",
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&base.rootfs)
            .arg(dest),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pkgs: &[&str]) -> Selection {
        Selection {
            packages: pkgs.iter().map(|s| s.to_string()).collect(),
            left_out: vec![],
        }
    }

    #[test]
    fn key_follows_the_package_list_only() {
        let a = key(&sel(&["a", "b"]));
        assert_eq!(a.len(), 16);
        assert_eq!(a, key(&sel(&["a", "b"])));
        assert_ne!(a, key(&sel(&["a", "b", "c"])));
    }
}
