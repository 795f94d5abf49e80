//! Renderers: pure functions from a validated spec (and plan) to files. Same input, same
//! bytes. Each submodule renders one kind of artifact; `FileSet` collects them.

use std::collections::BTreeMap;

/// One generated file: where it goes (relative path), its mode, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Files keyed by relative path, sorted, so iteration order (and any archive) is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    pub files: BTreeMap<String, Artifact>,
}

impl FileSet {
    pub fn add(&mut self, path: impl Into<String>, mode: u32, contents: impl Into<Vec<u8>>) {
        self.files.insert(
            path.into(),
            Artifact {
                mode,
                contents: contents.into(),
            },
        );
    }

    /// Adds every file of `other` under `prefix/`.
    pub fn extend_under(&mut self, prefix: &str, other: FileSet) {
        for (path, a) in other.files {
            self.files
                .insert(format!("{}/{path}", prefix.trim_end_matches('/')), a);
        }
    }

    pub fn get(&self, path: &str) -> Option<&Artifact> {
        self.files.get(path)
    }
}

pub mod hcl;
pub mod images;
pub mod packer;
pub mod proxmox;
pub mod quote;
pub mod vagrant;
