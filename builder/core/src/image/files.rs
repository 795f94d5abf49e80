//! File helpers for image outputs: atomic placement, SHA-256 sums, and removing a rootfs
//! tree safely (a killed debootstrap can leave /proc mounted inside it).

use super::ImageError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub fn io_err(step: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let step = step.to_string();
    let path = path.to_path_buf();
    move |source| ImageError::Io { step, path, source }
}

/// The temporary name an output is written under before `place` renames it.
pub fn staging(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.partial"))
}

/// Syncs `tmp` and renames it over `final_path`, then syncs the directory.
pub fn place(tmp: &Path, final_path: &Path) -> Result<(), ImageError> {
    let step = "placing output";
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err(step, tmp))?;
    std::fs::rename(tmp, final_path).map_err(io_err(step, final_path))?;
    if let Some(dir) = final_path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(step, dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = staging(path);
    File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_err("writing output", &tmp))?;
    place(&tmp, path)
}

pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = File::open(path).map_err(io_err("hashing", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("hashing", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `SHA256SUMS` in the format `sha256sum -c` reads: `<hex>  <name>`, sorted by name.
pub fn sums_text(entries: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(name, sum)| format!("{sum}  {name}\n"))
        .collect()
}

/// Parses `SHA256SUMS` text into (name, hex) pairs; `None` on a malformed line.
pub fn parse_sums(text: &str) -> Option<Vec<(String, String)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sum, name) = l.split_once(' ')?;
            let name = name.trim_start_matches([' ', '*']).trim_start_matches("./");
            let ok = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| (name.to_string(), sum.to_ascii_lowercase()))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mounts).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// Removes a rootfs tree, first detaching anything still mounted inside it.
pub fn remove_tree(dir: &Path) -> Result<(), ImageError> {
    if !dir.exists() {
        return Ok(());
    }
    for m in mounts_below(dir) {
        tracing::warn!(mount = %m.display(), "detaching a leftover mount");
        super::run::run(
            "detaching leftover mount",
            std::process::Command::new("umount").arg("-l").arg(&m),
        )?;
    }
    std::fs::remove_dir_all(dir).map_err(io_err("removing old tree", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_in_sha256sum_format() {
        let entries = vec![
            ("node.qcow2".to_string(), "a".repeat(64)),
            ("initrd.img".to_string(), "b".repeat(64)),
        ];
        let text = sums_text(&entries);
        assert_eq!(
            text,
            format!(
                "{}  initrd.img\n{}  node.qcow2\n",
                "b".repeat(64),
                "a".repeat(64)
            )
        );
        let parsed = parse_sums(&text).unwrap();
        assert_eq!(parsed[1], entries[0]);
        assert!(parse_sums("xyz  file\n").is_none());
        assert_eq!(
            parse_sums(&format!("{} *./usr/bin/x\n", "C".repeat(64))).unwrap()[0],
            ("usr/bin/x".to_string(), "c".repeat(64))
        );
    }

    #[test]
    fn atomic_write_leaves_no_partial() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        atomic_write(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert!(!staging(&p).exists());
        assert_eq!(
            sha256_file(&p).unwrap(),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
