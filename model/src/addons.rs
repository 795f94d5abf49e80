//! The index of the add-on manifests baked into the payload (`node_files::ADDONS_INDEX`):
//! written by `muster build`, read by the agent that applies them.

use serde::{Deserialize, Serialize};

/// What the build baked, in the order it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddonIndex {
    pub addons: Vec<BakedAddon>,
}

/// One baked manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BakedAddon {
    /// The add-on (`flannel`, `metallb`, `metallb-pool`, ...).
    pub name: String,
    /// The spec field that asked for it.
    pub field: String,
    /// Upstream release, or `muster` for objects muster derives from the spec.
    pub version: String,
    /// File name under `node_files::ADDONS_DIR`.
    pub file: String,
    /// SHA-256 of the baked (adapted) file.
    pub sha256: String,
    /// Where the upstream bytes came from and their pinned SHA-256; absent for derived files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AddonSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddonSource {
    pub url: String,
    pub sha256: String,
}

impl AddonIndex {
    /// The digest the cluster records once it applied this index: SHA-256 over each
    /// file's name and SHA-256, in order. The same bytes give the same digest.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for a in &self.addons {
            h.update(a.file.as_bytes());
            h.update(b" ");
            h.update(a.sha256.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}
