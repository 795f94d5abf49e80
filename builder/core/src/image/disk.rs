//! The disk: a whole-disk ext4 filesystem made from a directory (`mkfs.ext4 -d`, no loop
//! device, no mount), converted to qcow2. Files inside a raw ext4 image are read with
//! `debugfs`, again without mounting.

use super::ImageError;
use super::run::run;
use std::path::Path;
use std::process::Command;

/// Parses a disk size like `2G`, `2048M` or `2147483648` into bytes (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&t[..i], 1 << 20),
        (i, 'G' | 'g') => (&t[..i], 1 << 30),
        (i, 'T' | 't') => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `mkfs.ext4 -q -L root -d ROOTFS RAW SIZE`: the rootfs becomes a filesystem image.
pub fn mkfs_ext4(rootfs: &Path, raw: &Path, bytes: u64) -> Result<(), ImageError> {
    if raw.exists() {
        std::fs::remove_file(raw).map_err(super::files::io_err("mkfs.ext4", raw))?;
    }
    run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "root", "-d"])
            .arg(rootfs)
            .arg(raw)
            .arg(format!("{}k", bytes / 1024)),
    )?;
    Ok(())
}

pub fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<(), ImageError> {
    run(
        "qemu-img convert",
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(qcow2),
    )?;
    Ok(())
}

/// `debugfs -R REQUEST RAW`: reads an ext4 image without mounting it.
fn debugfs(raw: &Path, request: &str) -> Result<std::process::Output, ImageError> {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(raw)
        .output()
        .map_err(|source| ImageError::Spawn {
            step: "debugfs".into(),
            program: "debugfs".into(),
            source,
        })
}

/// The bytes of `path` inside a raw ext4 image, `None` if it is not there.
pub fn read_file(raw: &Path, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let stat = debugfs(raw, &format!("stat {path}"))?;
    let err = String::from_utf8_lossy(&stat.stderr);
    if err.contains("File not found") {
        return Ok(None);
    }
    if !stat.status.success() || !String::from_utf8_lossy(&stat.stdout).contains("Inode:") {
        return Err(ImageError::Failed {
            step: "debugfs".into(),
            command: format!("debugfs -R 'stat {path}' {}", raw.display()),
            status: stat.status.to_string(),
            tail: err.into_owned(),
        });
    }
    Ok(Some(debugfs(raw, &format!("cat {path}"))?.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("2X"), None);
    }
}
