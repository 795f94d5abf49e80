//! The rendezvous's key directory: one file per cluster it serves, `KEYS_DIR/<cluster_id>.key`,
//! holding the cluster's request-signing key (64 hex digits, mode 0600). `muster build`
//! writes it ([`install`]); `muster rendezvous` reads it. The service never sees the
//! cluster secret or the sealing key, so it cannot read what nodes store.

use crate::seal::ClusterKeys;
use model::fsutil::{WriteError, write_atomic};
use model::secret::ClusterSecret;
use std::path::{Path, PathBuf};

/// A cluster id is 24 lowercase hex digits (see `ClusterSecret::cluster_id`); checking
/// it also keeps it safe to use as a file name.
pub fn is_cluster_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `dir/<cluster_id>.key` for `secret`, atomically, mode 0600, so the service
/// accepts the cluster's nodes.
pub fn install(dir: &Path, secret: &ClusterSecret) -> Result<PathBuf, WriteError> {
    let keys = ClusterKeys::derive(secret);
    let path = dir.join(format!("{}.key", keys.cluster_id()));
    let line = format!("{}\n", keys.signing_key().to_hex());
    write_atomic(&path, line.as_bytes(), 0o600)?;
    Ok(path)
}
