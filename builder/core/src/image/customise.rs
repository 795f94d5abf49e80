//! Turning a copy of the base into a node rootfs, all through `chroot` (no boot, no mounts):
//! the image-specific steps (`images/image-build.sh`), then the shared node preparation
//! (`images/provision.sh PAYLOAD`), then the kernel and initrd are copied out for direct
//! kernel boot.

use super::ImageError;
use super::files::io_err;
use super::payload::FORBIDDEN;
use super::run::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared node-preparation steps (also run by Packer); called by its interface.
pub use crate::render::images::PROVISION_SH;
/// Steps only this image needs: fstab, NoCloud datasource, networkd, no hostname.
pub const IMAGE_BUILD_SH: &str = include_str!("../../../../images/image-build.sh");

/// `chroot ROOTFS …` with a clean environment (nothing of the build host's leaks in).
pub fn chroot(rootfs: &Path) -> Command {
    let mut c = Command::new("chroot");
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg(rootfs);
    c
}

/// Copies `text` to `ROOTFS/tmp/NAME`, runs it with bash in the chroot, removes it.
pub fn run_script(
    step: &str,
    rootfs: &Path,
    name: &str,
    text: &str,
    args: &[&str],
) -> Result<(), ImageError> {
    let inside = rootfs.join("tmp").join(name);
    std::fs::write(&inside, text).map_err(io_err(step, &inside))?;
    let result = run(
        step,
        chroot(rootfs)
            .args(["/bin/bash", &format!("/tmp/{name}")])
            .args(args),
    );
    std::fs::remove_file(&inside).map_err(io_err(step, &inside))?;
    result.map(drop)
}

pub fn image_steps(rootfs: &Path, disabled_units: &[&str]) -> Result<(), ImageError> {
    run_script(
        "image-specific steps (images/image-build.sh)",
        rootfs,
        "image-build.sh",
        IMAGE_BUILD_SH,
        disabled_units,
    )
}

/// `chroot ROOTFS /bin/bash /tmp/provision.sh /tmp/payload.tar.gz`.
pub fn provision(rootfs: &Path, payload: &Path) -> Result<(), ImageError> {
    let step = "node preparation (images/provision.sh)";
    let inside = rootfs.join("tmp/payload.tar.gz");
    std::fs::copy(payload, &inside).map_err(io_err(step, payload))?;
    let result = run_script(
        step,
        rootfs,
        "provision.sh",
        PROVISION_SH,
        &["/tmp/payload.tar.gz"],
    );
    std::fs::remove_file(&inside).map_err(io_err(step, &inside))?;
    result
}

/// The newest `/boot/NAME-VERSION` of the rootfs.
fn newest(boot: &Path, prefix: &str) -> Result<Option<PathBuf>, ImageError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(boot)
        .map_err(io_err("finding the kernel", boot))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Copies the kernel and initrd out for direct kernel boot; returns the kernel version.
pub fn extract_boot(rootfs: &Path, kernel: &Path, initrd: &Path) -> Result<String, ImageError> {
    let step = "extracting kernel and initrd";
    let boot = rootfs.join("boot");
    let missing = |what: &str| ImageError::Missing {
        step: step.to_string(),
        what: format!("{what} in {}", boot.display()),
    };
    let k = newest(&boot, "vmlinuz-")?.ok_or_else(|| missing("vmlinuz-*"))?;
    let version = k
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    let i = boot.join(format!("initrd.img-{version}"));
    if !i.exists() {
        return Err(missing(&format!("initrd.img-{version}")));
    }
    std::fs::copy(&k, kernel).map_err(io_err(step, &k))?;
    std::fs::copy(&i, initrd).map_err(io_err(step, &i))?;
    Ok(version)
}

/// What must hold before the rootfs becomes a disk: no per-node secrets or identity, an
/// empty machine-id, no ssh host keys, nothing left in /tmp.
pub fn check_clean(rootfs: &Path) -> Result<(), ImageError> {
    let step = "checking the rootfs";
    let fail = |what: String| ImageError::Unclean {
        step: step.to_string(),
        what,
    };
    for rel in FORBIDDEN {
        if rootfs.join(rel).exists() {
            return Err(fail(format!("/{rel} is in the image")));
        }
    }
    let mid = rootfs.join("etc/machine-id");
    let len = std::fs::metadata(&mid).map_err(io_err(step, &mid))?.len();
    if len != 0 {
        return Err(fail("/etc/machine-id is not empty".into()));
    }
    let ssh = rootfs.join("etc/ssh");
    if let Ok(dir) = std::fs::read_dir(&ssh)
        && let Some(key) = dir
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
    {
        return Err(fail(format!(
            "ssh host key {} is in the image",
            key.path().display()
        )));
    }
    let tmp = rootfs.join("tmp");
    let leftovers = std::fs::read_dir(&tmp).map_err(io_err(step, &tmp))?.count();
    if leftovers != 0 {
        return Err(fail(format!("{leftovers} entries left in /tmp")));
    }
    Ok(())
}
