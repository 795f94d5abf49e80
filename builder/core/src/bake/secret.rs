//! The cluster secret in the output dir (`DIR/cluster-secret`, mode 0600) and the record
//! that ties the dir to one cluster (`DIR/muster-build.json`). A first build generates the
//! secret; later builds reuse it, so a rebuild for an upgrade keeps the cluster id. A dir
//! that belongs to another cluster, or holds files that are not a muster build, is refused.

use crate::bake::write::write_atomic;
use model::secret::ClusterSecret;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const SECRET_FILE: &str = "cluster-secret";
pub const RECORD_FILE: &str = "muster-build.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildRecord {
    pub format: u32,
    pub cluster: String,
    pub cluster_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{dir} holds the build of cluster `{found}`, not `{wanted}`: choose another --out dir")]
    OtherCluster {
        dir: PathBuf,
        found: String,
        wanted: String,
    },
    #[error(
        "{dir}: the cluster secret there (cluster id {secret_id}) does not match the dir's record (cluster id {record_id}); refusing to mix two clusters' outputs"
    )]
    SecretMismatch {
        dir: PathBuf,
        record_id: String,
        secret_id: String,
    },
    #[error(
        "{dir} is not empty and is not a muster build output (no {RECORD_FILE}): choose an empty or new --out dir"
    )]
    NotABuildDir { dir: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The secret for `cluster` in `dir`, and whether it was created now.
pub fn claim_dir(dir: &Path, cluster: &str) -> Result<(ClusterSecret, bool), DirError> {
    let record_path = dir.join(RECORD_FILE);
    let secret_path = dir.join(SECRET_FILE);
    if record_path.exists() {
        let text = std::fs::read_to_string(&record_path).map_err(io(&record_path))?;
        let record: BuildRecord = serde_json::from_str(&text).map_err(|e| DirError::Bad {
            path: record_path.clone(),
            what: e.to_string(),
        })?;
        if record.cluster != cluster {
            return Err(DirError::OtherCluster {
                dir: dir.to_path_buf(),
                found: record.cluster,
                wanted: cluster.to_string(),
            });
        }
        let text = std::fs::read_to_string(&secret_path).map_err(io(&secret_path))?;
        let secret = ClusterSecret::from_hex(&text).map_err(|e| DirError::Bad {
            path: secret_path.clone(),
            what: e.to_string(),
        })?;
        if secret.cluster_id() != record.cluster_id {
            return Err(DirError::SecretMismatch {
                dir: dir.to_path_buf(),
                record_id: record.cluster_id,
                secret_id: secret.cluster_id(),
            });
        }
        return Ok((secret, false));
    }
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(DirError::NotABuildDir {
                dir: dir.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = ClusterSecret::from_bytes(bytes);
    write_atomic(
        &secret_path,
        format!("{}\n", secret.to_hex()).as_bytes(),
        0o600,
    )
    .map_err(io(&secret_path))?;
    let record = BuildRecord {
        format: 1,
        cluster: cluster.to_string(),
        cluster_id: secret.cluster_id(),
    };
    let text = serde_json::to_string_pretty(&record).map_err(|e| DirError::Bad {
        path: record_path.clone(),
        what: e.to_string(),
    })? + "\n";
    write_atomic(&record_path, text.as_bytes(), 0o644).map_err(io(&record_path))?;
    Ok((secret, true))
}
