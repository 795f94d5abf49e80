//! The add-ons `muster build` baked (`node_files::ADDONS_DIR` + its index), applied by the
//! init node through the API with server-side apply (field manager `muster`). `order` is
//! the pure part (which object when: namespaces, CRDs, the rest, custom resources last);
//! `apply` talks to the API.

pub mod apply;
pub mod order;
pub mod readiness;

use model::addons::AddonIndex;
use model::node_files::{ADDONS_DIR, ADDONS_INDEX, NodeRoot};

#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error("{path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{file}: {detail}")]
    Manifest { file: String, detail: String },
    #[error("{step}: {url}: {detail}")]
    Api {
        step: &'static str,
        url: String,
        detail: String,
    },
}

/// The baked index and each file (name, text), in index order.
pub type Baked = (AddonIndex, Vec<(String, String)>);

/// The baked add-ons; `None` when the payload has none (k3s with its own flannel and
/// nothing else).
pub fn load(root: &NodeRoot) -> Result<Option<Baked>, AddonError> {
    let index_path = root.path(ADDONS_INDEX);
    let text = match std::fs::read_to_string(&index_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AddonError::Read {
                path: index_path.display().to_string(),
                detail: e.to_string(),
            });
        }
    };
    let index: AddonIndex = serde_json::from_str(&text).map_err(|e| AddonError::Read {
        path: index_path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut files = Vec::new();
    for a in &index.addons {
        let path = root.path(&format!("{ADDONS_DIR}/{}", a.file));
        let text = std::fs::read_to_string(&path).map_err(|e| AddonError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        files.push((a.file.clone(), text));
    }
    Ok(Some((index, files)))
}
