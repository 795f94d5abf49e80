//! A lab node's disk, as an image and cloud-init would leave it: the agent payload unpacked
//! into the node's root, then every `write_files` entry of the node's user-data (identity,
//! cluster secret) written under that root.

use crate::error::{LabError, Result};
use std::path::Path;

/// Unpacks `payload.tar.gz` into `root`.
pub fn unpack_payload(payload: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).map_err(LabError::io(root))?;
    let file = std::fs::File::open(payload).map_err(LabError::io(payload))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    ar.set_preserve_permissions(true);
    ar.unpack(root).map_err(LabError::io(payload))
}

/// What cloud-init does with the node's user-data here: every `write_files` entry (path,
/// content, permissions), under `root`.
pub fn apply_user_data(user_data: &Path, root: &Path) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |detail: String| LabError::Bad {
        path: user_data.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(user_data).map_err(LabError::io(user_data))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let files = doc["write_files"]
        .as_sequence()
        .ok_or_else(|| bad("no write_files".into()))?;
    for f in files {
        let path = f["path"]
            .as_str()
            .ok_or_else(|| bad("a write_files entry without path".into()))?;
        let content = f["content"]
            .as_str()
            .ok_or_else(|| bad(format!("{path}: no content")))?;
        let mode_text = f["permissions"].as_str().unwrap_or("0644");
        let mode = u32::from_str_radix(mode_text, 8)
            .map_err(|_| bad(format!("{path}: permissions `{mode_text}`")))?;
        let dst = root.join(path.trim_start_matches('/'));
        muster_build::bake::write::write_atomic(&dst, content.as_bytes(), mode)
            .map_err(LabError::io(&dst))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
            .map_err(LabError::io(&dst))?;
    }
    Ok(files.len())
}
