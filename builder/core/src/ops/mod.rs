//! Operator commands over a build output dir, for any cluster (lab or real):
//! `muster status` (what every planned node reports at the rendezvous) and
//! `muster kubeconfig` (the admin kubeconfig, pointed at an API endpoint that answers).
//!
//! Both read the cluster secret and the baked config from the dir (`DIR/cluster.json`, or
//! `usr/lib/muster/cluster.json` inside `DIR/payload.tar.gz` for dirs built before it
//! existed) and talk to the rendezvous with the pinned certificate.

pub mod fleetlock;
pub mod kubeconfig;
pub mod probe;
pub mod remove;
pub mod reset;
pub mod status;
pub mod upgrade;

use crate::bake::secret::SECRET_FILE;
use crate::bake::{CLUSTER_FILE, PAYLOAD_FILE};
use model::baked::BakedCluster;
use model::node_files as nf;
use model::secret::ClusterSecret;
use protocol::{Client, ClientError, RetryPolicy, http_client};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name these commands use at the rendezvous (rate limiting, logs).
pub const CLIENT_NAME: &str = "muster-operator";

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{path}: {source} (is this a `muster build --out` dir?)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error(
        "{dir}: the cluster secret (cluster id {secret_id}) does not belong to the baked cluster (id {baked_id})"
    )]
    Mismatch {
        dir: PathBuf,
        secret_id: String,
        baked_id: String,
    },
    #[error("rendezvous {url}: {source}")]
    Rendezvous {
        url: String,
        #[source]
        source: ClientError,
    },
    #[error("rendezvous {url}: {what}")]
    Record { url: String, what: String },
}

/// What the operator commands need from a build output dir.
#[derive(Debug)]
pub struct BuildDir {
    pub dir: PathBuf,
    pub secret: ClusterSecret,
    pub baked: BakedCluster,
}

impl BuildDir {
    pub fn load(dir: &Path) -> Result<BuildDir, OpsError> {
        let secret_path = dir.join(SECRET_FILE);
        if let Some(mode) = model::fsutil::exposed_mode(&secret_path) {
            tracing::warn!(
                "the cluster secret {} has mode {mode:o}: readable by group or others; chmod 600 it",
                secret_path.display()
            );
        }
        let text = std::fs::read_to_string(&secret_path).map_err(|source| OpsError::Io {
            path: secret_path.clone(),
            source,
        })?;
        let secret = ClusterSecret::from_hex(text.trim()).map_err(|e| OpsError::Bad {
            path: secret_path.clone(),
            what: e.to_string(),
        })?;
        let (path, bytes) = read_baked(dir)?;
        let baked: BakedCluster = serde_json::from_slice(&bytes).map_err(|e| OpsError::Bad {
            path: path.clone(),
            what: format!("not a baked cluster config: {e}"),
        })?;
        if baked.cluster_id != secret.cluster_id() {
            return Err(OpsError::Mismatch {
                dir: dir.to_path_buf(),
                secret_id: secret.cluster_id(),
                baked_id: baked.cluster_id,
            });
        }
        Ok(BuildDir {
            dir: dir.to_path_buf(),
            secret,
            baked,
        })
    }

    pub fn rendezvous_url(&self) -> String {
        self.baked.rendezvous.url.as_str().to_string()
    }

    /// A rendezvous client with the pinned certificate; each request gives up after
    /// `timeout`, with one retry.
    pub fn client(&self, timeout: Duration) -> Result<Client, OpsError> {
        let url = self.rendezvous_url();
        let wrap = |source| OpsError::Rendezvous {
            url: url.clone(),
            source,
        };
        let base = reqwest::Url::parse(&url).map_err(|e| OpsError::Bad {
            path: self.dir.join(CLUSTER_FILE),
            what: format!("rendezvous url `{url}`: {e}"),
        })?;
        let pin = self
            .baked
            .rendezvous
            .cert_sha256
            .as_ref()
            .map(|p| p.as_str());
        let http = http_client(pin, timeout).map_err(|e| wrap(ClientError::from(e)))?;
        Ok(Client::new(base, http, &self.secret, CLIENT_NAME)
            .map_err(wrap)?
            .with_retry(RetryPolicy {
                attempts: 2,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_millis(500),
            }))
    }

    pub fn rendezvous_error(&self, source: ClientError) -> OpsError {
        OpsError::Rendezvous {
            url: self.rendezvous_url(),
            source,
        }
    }
}

/// `DIR/cluster.json`, else the copy inside the payload.
fn read_baked(dir: &Path) -> Result<(PathBuf, Vec<u8>), OpsError> {
    let path = dir.join(CLUSTER_FILE);
    match std::fs::read(&path) {
        Ok(b) => return Ok((path, b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(OpsError::Io { path, source }),
    }
    let tgz = dir.join(PAYLOAD_FILE);
    let io = |source| OpsError::Io {
        path: tgz.clone(),
        source,
    };
    let file = std::fs::File::open(&tgz).map_err(io)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
        if name.trim_start_matches("./") == nf::CLUSTER_CONFIG {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(io)?;
            return Ok((tgz.join(nf::CLUSTER_CONFIG), buf));
        }
    }
    Err(OpsError::Bad {
        path: tgz,
        what: format!("no {} inside", nf::CLUSTER_CONFIG),
    })
}

/// Milliseconds since the Unix epoch, as the agents report them.
pub use protocol::clock::now_ms;
