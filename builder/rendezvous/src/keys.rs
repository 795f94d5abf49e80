//! Which clusters this service serves: one file per cluster, `KEYS_DIR/<cluster_id>.key`,
//! holding the cluster's request-signing key (64 hex digits, mode 0600). The service never
//! sees the cluster secret or the sealing key, so it cannot read what nodes store.

pub use protocol::key_file::{install, is_cluster_id};
use protocol::seal::SigningKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading cluster key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster key {path} is not 64 hex digits")]
    Malformed { path: PathBuf },
}

/// The key directory, read lazily: a cluster added while the service runs is picked up
/// on its first request.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    cache: Mutex<HashMap<String, SigningKey>>,
}

impl KeyDir {
    pub fn new(dir: PathBuf) -> KeyDir {
        KeyDir {
            dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The signing key of `cluster_id`, or `None` if this service does not serve it.
    pub fn lookup(&self, cluster_id: &str) -> Result<Option<SigningKey>, KeyError> {
        if !is_cluster_id(cluster_id) {
            return Ok(None);
        }
        if let Some(k) = lock(&self.cache).get(cluster_id) {
            return Ok(Some(k.clone()));
        }
        let path = self.dir.join(format!("{cluster_id}.key"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyError::Read { path, source }),
        };
        warn_if_exposed(&path, "cluster key");
        let key = SigningKey::from_hex(&text).map_err(|_| KeyError::Malformed { path })?;
        lock(&self.cache).insert(cluster_id.to_string(), key.clone());
        Ok(Some(key))
    }
}

pub use model::fsutil::exposed_mode;

/// Warns (it does not refuse: the operator may have reasons) when a secret file such as
/// a cluster key or the cluster secret is readable by group or others. `what` names it.
pub fn warn_if_exposed(path: &Path, what: &str) {
    if let Some(mode) = exposed_mode(path) {
        tracing::warn!(
            "{what} {} has mode {mode:o}: readable by group or others; chmod 600 it",
            path.display()
        );
    }
}

/// A poisoned lock only means another request panicked mid-update of a cache; the map
/// itself is still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::secret::ClusterSecret;
    use protocol::seal::ClusterKeys;

    #[test]
    fn installed_key_is_found_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = ClusterSecret::from_bytes([4; 32]);
        let path = install(dir.path(), &secret).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let keys = KeyDir::new(dir.path().to_path_buf());
        let found = keys.lookup(&secret.cluster_id()).unwrap().unwrap();
        assert_eq!(&found, ClusterKeys::derive(&secret).signing_key());
        let other = ClusterSecret::from_bytes([5; 32]).cluster_id();
        assert!(keys.lookup(&other).unwrap().is_none());
        assert!(keys.lookup("../../etc/passwd").unwrap().is_none());
    }

    #[test]
    fn a_key_readable_by_group_or_others_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = install(dir.path(), &ClusterSecret::from_bytes([6; 32])).unwrap();
        assert_eq!(exposed_mode(&path), None);
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(exposed_mode(&path), Some(mode));
        }
        assert_eq!(exposed_mode(&dir.path().join("missing.key")), None);
    }
}
