//! Moving a release through the rendezvous: `muster upgrade` publishes the payload as sealed
//! chunks and then the release record; an agent downloads the payload into a partial file,
//! resuming from the whole chunks (or bytes, over HTTP `Range`) already there, and keeps it
//! only if size and SHA-256 match the signed record. The pure parts are in [`crate::release`].

use crate::client::{Client, ClientError};
use crate::release::{
    self, CHUNK_BYTES, Download, PayloadError, PayloadRef, PayloadSource, RELEASE, Release,
};
use crate::wire::ErrorKind;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("rendezvous record `{key}`: {source}")]
    Rendezvous {
        key: String,
        #[source]
        source: ClientError,
    },
    #[error("rendezvous record `{key}` is missing (was the release published completely?)")]
    Missing { key: String },
    #[error("rendezvous record `{key}`: {problem}")]
    Record { key: String, problem: String },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("downloading {url}: {problem}")]
    Http { url: String, problem: String },
}

/// The release record at the rendezvous with its revision (for the next CAS), if any.
pub async fn current_release(client: &Client) -> Result<Option<(Release, u64)>, TransferError> {
    let rec = client
        .get(RELEASE)
        .await
        .map_err(|source| TransferError::Rendezvous {
            key: RELEASE.into(),
            source,
        })?;
    match rec {
        None => Ok(None),
        Some(r) => {
            let release: Release =
                serde_json::from_slice(&r.value).map_err(|e| TransferError::Record {
                    key: RELEASE.into(),
                    problem: format!("not a release record: {e}"),
                })?;
            Ok(Some((release, r.revision)))
        }
    }
}

/// Writes `value` under `key`, whatever was there.
async fn put(client: &Client, key: &str, value: &[u8]) -> Result<u64, TransferError> {
    let wrap = |source| TransferError::Rendezvous {
        key: key.to_string(),
        source,
    };
    match client.create(key, value, None, None).await {
        Ok(rev) => Ok(rev),
        Err(e) if e.kind() == Some(ErrorKind::Exists) => {
            let existing = client.get(key).await.map_err(wrap)?;
            match existing {
                Some(r) if r.value == value => Ok(r.revision),
                Some(r) => client
                    .cas(key, r.revision, value, None, None)
                    .await
                    .map_err(wrap),
                None => client.create(key, value, None, None).await.map_err(wrap),
            }
        }
        Err(e) => Err(wrap(e)),
    }
}

/// What [`publish`] is asked to publish.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    pub distribution: model::spec::DistroKind,
    pub version: model::KubeVersion,
    pub payload: &'a [u8],
    /// `Some(url)`: the operator serves the payload; only its digest goes to the rendezvous.
    pub url: Option<String>,
    pub now_ms: u64,
}

/// Publishes a release: the payload chunks first (so a node that sees the record finds
/// them), then the record under the next sequence. `progress(done, total)` after each chunk.
pub async fn publish(
    client: &Client,
    what: Publication<'_>,
    mut progress: impl FnMut(u32, u32),
) -> Result<Release, TransferError> {
    let previous = current_release(client).await?;
    let sequence = previous.as_ref().map_or(1, |(r, _)| r.sequence + 1);
    let source = match &what.url {
        Some(url) => PayloadSource::Url { url: url.clone() },
        None => {
            let parts = release::chunks(what.payload, CHUNK_BYTES);
            let total = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            for (index, part) in (0u32..).zip(parts) {
                put(client, &release::payload_chunk_key(sequence, index), part).await?;
                progress(index + 1, total);
            }
            PayloadSource::Rendezvous {
                chunks: total,
                chunk_bytes: CHUNK_BYTES,
            }
        }
    };
    let record = Release {
        cluster_id: client.cluster_id().to_string(),
        sequence,
        distribution: what.distribution,
        version: what.version,
        payload: PayloadRef {
            sha256: release::sha256_hex(what.payload),
            size: what.payload.len() as u64,
            source,
        },
        published_at_ms: what.now_ms,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| TransferError::Record {
        key: RELEASE.into(),
        problem: e.to_string(),
    })?;
    let wrap = |source| TransferError::Rendezvous {
        key: RELEASE.into(),
        source,
    };
    match previous {
        None => client
            .create(RELEASE, &bytes, None, None)
            .await
            .map_err(wrap)?,
        Some((_, rev)) => client
            .cas(RELEASE, rev, &bytes, None, None)
            .await
            .map_err(wrap)?,
    };
    Ok(record)
}

/// Downloads the payload of `release` into `partial` (resuming what is there) and returns
/// it once its size and digest match; a payload that does not match is deleted.
pub async fn download(
    client: &Client,
    http: &reqwest::Client,
    release: &Release,
    partial: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<u8>, TransferError> {
    let io = |source| TransferError::Io {
        path: partial.to_path_buf(),
        source,
    };
    let mut have = match std::fs::read(partial) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    if let PayloadSource::Rendezvous { chunk_bytes, .. } = release.payload.source {
        have.truncate(
            usize::try_from(Download::keep_whole_chunks(have.len() as u64, chunk_bytes))
                .unwrap_or(0),
        );
    }
    let mut d = Download::resume(release, &have);
    if d.received() != have.len() as u64 {
        have.clear();
    }
    std::fs::write(partial, &have).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(partial)
        .map_err(io)?;
    let total = release.payload.size;
    match &release.payload.source {
        PayloadSource::Rendezvous {
            chunks,
            chunk_bytes,
        } => {
            let mut index = d.next_chunk(*chunk_bytes);
            while index < *chunks && !d.complete() {
                let key = release::payload_chunk_key(release.sequence, index);
                let rec = client
                    .get(&key)
                    .await
                    .map_err(|source| TransferError::Rendezvous {
                        key: key.clone(),
                        source,
                    })?
                    .ok_or_else(|| TransferError::Missing { key: key.clone() })?;
                d.push_chunk(index, *chunk_bytes, &rec.value)?;
                file.write_all(&rec.value).map_err(io)?;
                have.extend_from_slice(&rec.value);
                progress(d.received(), total);
                index += 1;
            }
        }
        PayloadSource::Url { url } => {
            let http_err = |problem: String| TransferError::Http {
                url: url.clone(),
                problem,
            };
            let mut req = http.get(url);
            if let Some(range) = d.range_header() {
                req = req.header(reqwest::header::RANGE, range);
            }
            let mut resp = req.send().await.map_err(|e| http_err(e.to_string()))?;
            let status = resp.status();
            if status == reqwest::StatusCode::OK && d.received() > 0 {
                // The server ignored the range: start over.
                d = Download::new(release);
                have.clear();
                file.set_len(0).map_err(io)?;
            } else if !status.is_success() {
                return Err(http_err(format!("HTTP {status}")));
            }
            while let Some(bytes) = resp.chunk().await.map_err(|e| http_err(e.to_string()))? {
                d.push(&bytes);
                file.write_all(&bytes).map_err(io)?;
                have.extend_from_slice(&bytes);
                progress(d.received(), total);
            }
        }
    }
    file.sync_all().map_err(io)?;
    if let Err(e) = d.finish() {
        // A corrupt download must not be resumed from.
        let _ = std::fs::remove_file(partial);
        return Err(e.into());
    }
    Ok(have)
}
