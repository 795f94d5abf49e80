//! The agent payload (`payload.tar.gz`): files at their final paths relative to `/`, with a
//! `SHA256SUMS` listing every one. Checked here before anything is baked, so a bad or
//! secret-carrying payload fails the build with its name; `images/provision.sh` checks the
//! sums again on the target.

use super::ImageError;
use super::files::{io_err, parse_sums, sums_text};
use crate::render::FileSet;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

pub const SUMS: &str = "SHA256SUMS";

/// Paths that must never be in an image every node shares: per-node identity and secrets
/// arrive with cloud-init.
pub const FORBIDDEN: &[&str] = &[
    model::node_files::CLUSTER_SECRET,
    model::node_files::NODE_IDENTITY,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadInfo {
    pub path: String,
    /// SHA-256 of the tarball itself (part of the build's identity).
    pub sha256: String,
    /// Files it installs, relative to `/`, sorted.
    pub files: Vec<String>,
    /// The images `muster build` listed for the nodes to pre-pull
    /// ([`model::node_files::PREPULL_IMAGES`]: muster's own, the pinned manifests', the
    /// rendered charts' and the user's add-on files'), in its order. Not in the report.
    #[serde(skip)]
    pub prepull_images: Vec<String>,
}

fn bad(path: &Path, problem: impl Into<String>) -> ImageError {
    ImageError::Payload {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads and verifies a payload: every regular file listed in `SHA256SUMS` with a matching
/// sum, nothing unlisted, no absolute or `..` paths, none of [`FORBIDDEN`].
pub fn inspect(path: &Path) -> Result<PayloadInfo, ImageError> {
    let raw = std::fs::read(path).map_err(io_err("reading payload", path))?;
    inspect_bytes(path, &raw)
}

/// [`inspect`] of a payload already read (`raw`, the bytes of `path`).
pub fn inspect_bytes(path: &Path, raw: &[u8]) -> Result<PayloadInfo, ImageError> {
    let sha256 = hex::encode(Sha256::digest(raw));
    let (files, texts) = read_entries(path, raw)?;
    let (sums_name, sums_text) = [SUMS, model::node_files::PAYLOAD_SUMS]
        .into_iter()
        .find_map(|n| texts.get(n).map(|t| (n, t)))
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "no {SUMS} inside (at its top or {})",
                    model::node_files::PAYLOAD_SUMS
                ),
            )
        })?;
    check_sums(path, &files, sums_name, sums_text)?;
    // `muster build` writes no list when the nodes pull no images.
    let prepull_images = match texts.get(model::node_files::PREPULL_IMAGES) {
        Some(t) => listed_images(t),
        None => Vec::new(),
    };
    Ok(PayloadInfo {
        path: path.display().to_string(),
        sha256,
        files: files.into_keys().collect(),
        prepull_images,
    })
}

/// The images of a pre-pull list: one a line, `#` comments and blank lines skipped (the
/// rules of import-images.sh's `--list`).
pub fn listed_images(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(l))
        .map(|l| l.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Something per file, by its path relative to `/`.
type ByPath = BTreeMap<String, String>;

/// The sha256 of every regular file in the tarball `raw` (but its top `SHA256SUMS`) by
/// path, and the text of each sums file found (at the top, or where `muster build` puts
/// them, installed with the rest) and of the pre-pull list.
fn read_entries(path: &Path, raw: &[u8]) -> Result<(ByPath, ByPath), ImageError> {
    let mut archive = tar::Archive::new(GzDecoder::new(raw));
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(path, format!("not a tar.gz: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(path, format!("corrupt archive: {e}")))?;
        let entry_path = entry
            .path()
            .map_err(|e| bad(path, format!("bad entry name: {e}")))?
            .into_owned();
        let rel = relative_path(path, &entry_path)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(path, format!("reading {rel}: {e}")))?;
        if [
            SUMS,
            model::node_files::PAYLOAD_SUMS,
            model::node_files::PREPULL_IMAGES,
        ]
        .contains(&rel.as_str())
        {
            texts.insert(rel.clone(), String::from_utf8_lossy(&data).into_owned());
        }
        if rel != SUMS {
            files.insert(rel, hex::encode(Sha256::digest(&data)));
        }
    }
    Ok((files, texts))
}

/// An entry's path relative to `/` (`a/b`), refused when it leaves the root or is one of
/// [`FORBIDDEN`].
fn relative_path(path: &Path, entry_path: &Path) -> Result<String, ImageError> {
    let mut rel = Vec::new();
    for c in entry_path.components() {
        match c {
            Component::Normal(s) => rel.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(bad(
                    path,
                    format!("entry {} leaves the root", entry_path.display()),
                ));
            }
        }
    }
    let rel = rel.join("/");
    if FORBIDDEN.contains(&rel.as_str()) {
        return Err(bad(
            path,
            format!(
                "contains {rel}: per-node secrets and identity must not be baked into a shared image"
            ),
        ));
    }
    Ok(rel)
}

/// Every file `sums_name` lists is there with its sum, and every other file is listed.
fn check_sums(
    path: &Path,
    files: &BTreeMap<String, String>,
    sums_name: &str,
    sums_text: &str,
) -> Result<(), ImageError> {
    let listed =
        parse_sums(sums_text).ok_or_else(|| bad(path, format!("{sums_name} is malformed")))?;
    let mut listed_names = Vec::new();
    for (name, sum) in &listed {
        match files.get(name) {
            None => {
                return Err(bad(
                    path,
                    format!("{sums_name} lists {name}, which is missing"),
                ));
            }
            Some(actual) if actual != sum => {
                return Err(bad(
                    path,
                    format!("{name}: sha256 {actual}, {sums_name} says {sum}"),
                ));
            }
            Some(_) => listed_names.push(name.as_str()),
        }
    }
    if let Some(extra) = files
        .keys()
        .find(|f| !listed_names.contains(&f.as_str()) && f.as_str() != sums_name)
    {
        return Err(bad(path, format!("{extra} is not listed in {sums_name}")));
    }
    Ok(())
}

/// Packs `files` (paths relative to `/`) into a payload tarball with its `SHA256SUMS`.
/// Used by tests.
pub fn pack(files: &FileSet) -> Result<Vec<u8>, std::io::Error> {
    let sums: Vec<(String, String)> = files
        .files
        .iter()
        .map(|(p, a)| (p.clone(), hex::encode(Sha256::digest(&a.contents))))
        .collect();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut append = |path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, data)
    };
    append(SUMS, 0o644, sums_text(&sums).as_bytes())?;
    for (path, a) in &files.files {
        append(path, a.mode, &a.contents)?;
    }
    builder.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &FileSet) -> std::path::PathBuf {
        let p = dir.join("payload.tar.gz");
        std::fs::write(&p, pack(files).unwrap()).unwrap();
        p
    }

    #[test]
    fn packed_payload_verifies() {
        let d = tempfile::tempdir().unwrap();
        let mut fs = FileSet::default();
        fs.add("usr/bin/nodeagent", 0o755, "#!/bin/sh\n");
        fs.add("usr/lib/muster/cluster.json", 0o644, "{}");
        let info = inspect(&write(d.path(), &fs)).unwrap();
        assert_eq!(
            info.files,
            ["usr/bin/nodeagent", "usr/lib/muster/cluster.json"]
        );
        assert_eq!(info.sha256.len(), 64);
        let empty = inspect(&write(d.path(), &FileSet::default())).unwrap();
        assert!(empty.files.is_empty());
    }

    #[test]
    fn muster_build_payload_with_sums_in_usr_lib_muster_verifies() {
        let d = tempfile::tempdir().unwrap();
        let mut fs = FileSet::default();
        fs.add("usr/bin/nodeagent", 0o755, "#!/bin/sh\n");
        fs.add(
            model::node_files::PREPULL_IMAGES,
            0o644,
            "quay.io/cilium/cilium:v1.18.4 # the chart's\n\n  registry.k8s.io/pause:3.10\n",
        );
        let sums = crate::bake::payload::sha256sums(&fs);
        fs.add(model::node_files::PAYLOAD_SUMS, 0o644, sums);
        let p = d.path().join("payload.tar.gz");
        std::fs::write(&p, crate::bake::payload::pack(&fs, 0).unwrap()).unwrap();
        let info = inspect(&p).unwrap();
        assert_eq!(
            info.files,
            [
                "usr/bin/nodeagent",
                model::node_files::PAYLOAD_SUMS,
                model::node_files::PREPULL_IMAGES
            ]
        );
        assert_eq!(
            info.prepull_images,
            [
                "quay.io/cilium/cilium:v1.18.4",
                "registry.k8s.io/pause:3.10"
            ]
        );
        fs.add("usr/bin/extra", 0o755, "unlisted");
        std::fs::write(&p, crate::bake::payload::pack(&fs, 0).unwrap()).unwrap();
        let err = inspect(&p).unwrap_err().to_string();
        assert!(err.contains("usr/bin/extra is not listed"), "{err}");
    }

    #[test]
    fn secret_in_payload_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut fs = FileSet::default();
        fs.add(model::node_files::CLUSTER_SECRET, 0o600, "s3cret");
        let err = inspect(&write(d.path(), &fs)).unwrap_err().to_string();
        assert!(err.contains("etc/muster/cluster-secret"), "{err}");
    }

    #[test]
    fn tampered_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, data) in [
            (SUMS, format!("{}  usr/bin/nodeagent\n", "0".repeat(64))),
            ("usr/bin/nodeagent", "x".to_string()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            builder.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        let p = d.path().join("p.tar.gz");
        std::fs::write(&p, builder.into_inner().unwrap().finish().unwrap()).unwrap();
        let err = inspect(&p).unwrap_err().to_string();
        assert!(err.contains("usr/bin/nodeagent: sha256"), "{err}");
    }
}
