//! The agent payload: a reproducible `tar.gz` of files at their final paths (relative to
//! `/`). Entries are sorted, every parent directory has its own entry, owner root:root
//! (0/0), fixed modes and one fixed mtime; gzip with a fixed header (no name, mtime 0,
//! fixed level). Same files in, same bytes out.

use crate::render::FileSet;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256sum` format: `<hex>  <path>` per file, sorted by path.
pub fn sha256sums(files: &FileSet) -> String {
    let mut s = String::new();
    for (path, a) in &files.files {
        let _ = writeln!(s, "{}  {path}", sha256_hex(&a.contents));
    }
    s
}

/// Packs `files` (paths relative to `/`) into a gzip'd tar with all timestamps `mtime`.
pub fn pack(files: &FileSet, mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    for path in files.files.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    // One sorted list of entries; a directory sorts before what is inside it.
    let mut entries: Vec<(String, Option<&crate::render::Artifact>)> = dirs
        .into_iter()
        .map(|d| (format!("{d}/"), None))
        .chain(files.files.iter().map(|(p, a)| (p.clone(), Some(a))))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, artifact) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        h.set_mtime(mtime);
        match artifact {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            Some(a) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(a.mode);
                h.set_size(a.contents.len() as u64);
                tar.append_data(&mut h, &path, a.contents.as_slice())?;
            }
        }
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}
