//! The rendezvous half of the upgrade's effects: the newest release, this node's progress
//! record, the one-slot upgrade lock (acquire, renew, release: a lease the rendezvous
//! expires if the node dies), the operator's resume request, every node's progress (for
//! [`super::view`]), and the payload download into the agent's state dir. The kubeadm,
//! k3s and API-server half is not written yet.

use super::state::Phase;
use protocol::release::{
    self, PROGRESS_PREFIX, Progress, RESUME, Release, ResumeRequest, UPGRADE_SEMAPHORE,
    UPGRADE_SLOTS,
};
use protocol::release_transfer::{self, TransferError};
use protocol::{AcquireResponse, Client, ClientError, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The progress record a phase publishes (`None` while idle: nothing to say).
pub fn progress_of(node: &str, phase: &Phase, now_ms: u64) -> Option<Progress> {
    let (sequence, step, detail, lock_token) = match phase {
        Phase::Idle => return None,
        Phase::Refused { sequence, reason } => (*sequence, None, Some(reason.clone()), None),
        Phase::Fetching { sequence, .. } | Phase::Done { sequence, .. } => {
            (*sequence, None, None, None)
        }
        Phase::Queued { sequence, why, .. } | Phase::Waiting { sequence, why, .. } => {
            (*sequence, None, Some(why.clone()), None)
        }
        Phase::Locking {
            sequence,
            resume,
            why,
            ..
        } => (
            *sequence,
            resume.map(|s| s.name().to_string()),
            (!why.is_empty()).then(|| why.clone()),
            None,
        ),
        Phase::Running {
            sequence,
            step,
            token,
            ..
        } => (*sequence, Some(step.name().to_string()), None, Some(*token)),
        Phase::Stopped {
            sequence,
            step,
            cause,
            token,
            ..
        } => (
            *sequence,
            Some(step.name().to_string()),
            Some(cause.clone()),
            Some(*token),
        ),
    };
    Some(Progress {
        node: node.to_string(),
        sequence,
        phase: phase.label().to_string(),
        step,
        detail,
        lock_token,
        at_ms: now_ms,
    })
}

#[derive(Debug)]
pub struct RendezvousSide {
    client: Client,
    http: reqwest::Client,
    node: String,
    /// Where payloads are downloaded (the agent's state dir).
    dir: PathBuf,
    lease: Duration,
}

impl RendezvousSide {
    pub fn new(
        client: Client,
        http: reqwest::Client,
        node: &str,
        dir: &Path,
        lease: Duration,
    ) -> Self {
        RendezvousSide {
            client,
            http,
            node: node.to_string(),
            dir: dir.to_path_buf(),
            lease,
        }
    }

    pub async fn newest_release(&self) -> Result<Option<Release>, TransferError> {
        Ok(release_transfer::current_release(&self.client)
            .await?
            .map(|(r, _)| r))
    }

    /// Writes this node's progress record (create, or replace whatever is there).
    pub async fn report(&self, phase: &Phase, now_ms: u64) -> Result<(), ClientError> {
        let Some(p) = progress_of(&self.node, phase, now_ms) else {
            return Ok(());
        };
        let key = release::progress_key(&self.node);
        let bytes = serde_json::to_vec(&p).map_err(|e| ClientError::Invalid {
            what: "progress record",
            problem: e.to_string(),
        })?;
        match self.client.get(&key).await? {
            Some(r) => self.client.cas(&key, r.revision, &bytes, None, None).await,
            None => self.client.create(&key, &bytes, None, None).await,
        }
        .map(|_| ())
    }

    /// Every node's progress record that reads (for the roll view).
    pub async fn progress(&self) -> Result<Vec<Progress>, ClientError> {
        let (_, records) = self.client.list(PROGRESS_PREFIX).await?;
        Ok(records
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.value).ok())
            .collect())
    }

    /// The upgrade lock: `Some(token)` when granted (the same token again while held).
    pub async fn acquire(&self) -> Result<Option<u64>, ClientError> {
        match self
            .client
            .acquire(UPGRADE_SEMAPHORE, UPGRADE_SLOTS, &self.node, self.lease)
            .await?
        {
            AcquireResponse::Granted { token, .. } => Ok(Some(token)),
            AcquireResponse::Busy { .. } => Ok(None),
        }
    }

    /// Extends the lease while a step runs; `false` when it was lost (fenced).
    pub async fn renew(&self, token: u64) -> Result<bool, ClientError> {
        match self
            .client
            .renew(UPGRADE_SEMAPHORE, &self.node, token, self.lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Some(ErrorKind::NotHeld) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn release(&self, token: u64) -> Result<bool, ClientError> {
        self.client
            .release(UPGRADE_SEMAPHORE, &self.node, token)
            .await
    }

    /// The operator's newest resume request `(sequence, count)`.
    pub async fn resume_request(&self) -> Result<Option<(u64, u64)>, ClientError> {
        Ok(self
            .client
            .get(RESUME)
            .await?
            .and_then(|r| serde_json::from_slice::<ResumeRequest>(&r.value).ok())
            .map(|r| (r.sequence, r.count)))
    }

    /// Downloads and verifies the payload of `release` (resuming a partial download) and
    /// keeps it as `payload-<sequence>.tar.gz` in the state dir.
    pub async fn fetch(&self, release: &Release) -> Result<PathBuf, TransferError> {
        let partial = self
            .dir
            .join(format!("payload-{}.partial", release.sequence));
        let done = self
            .dir
            .join(format!("payload-{}.tar.gz", release.sequence));
        let bytes =
            release_transfer::download(&self.client, &self.http, release, &partial, |_, _| {})
                .await?;
        model::fsutil::write_atomic(&done, &bytes, 0o600).map_err(|e| TransferError::Io {
            path: done.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let _ = std::fs::remove_file(&partial);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::steps::Step;

    #[test]
    fn progress_names_step_cause_and_token() {
        let to = "v1.31.2".parse().unwrap();
        assert_eq!(progress_of("cp-1", &Phase::Idle, 1), None);
        let p = progress_of(
            "cp-2",
            &Phase::Stopped {
                sequence: 2,
                to,
                token: 5,
                steps: vec![],
                step: Step::Drain,
                cause: "PDB web".into(),
                uncordoned: true,
                resumes_seen: 0,
            },
            9,
        )
        .unwrap();
        assert_eq!(
            (
                p.phase.as_str(),
                p.step.as_deref(),
                p.detail.as_deref(),
                p.lock_token
            ),
            ("stopped", Some("drain"), Some("PDB web"), Some(5))
        );
        let w = progress_of(
            "w-1",
            &Phase::Waiting {
                sequence: 2,
                to,
                why: "cp-1 first".into(),
            },
            9,
        )
        .unwrap();
        assert_eq!(
            (w.phase.as_str(), w.detail.as_deref()),
            ("waiting", Some("cp-1 first"))
        );
    }
}
