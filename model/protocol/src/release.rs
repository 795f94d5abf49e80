//! An upgrade release, as `muster upgrade` publishes it and every agent judges it (issue 15).
//!
//! The release record is sealed like every record (ChaCha20-Poly1305 with the cluster id and
//! the key bound as associated data), so only a holder of the cluster secret can write one a
//! node will open: the seal is the operator's signature, and the rendezvous sees ciphertext.
//! It names the payload by SHA-256 and size; the payload itself is either stored at the
//! rendezvous as sealed chunks (each a record under [`payload_chunk_key`], small enough for
//! the server's body limit) or fetched from a URL the operator gave. A download resumes
//! from the last whole chunk (or byte, with an HTTP `Range`) already on disk, and the digest
//! of the whole is checked before anything is installed.
//!
//! Everything here is pure: the judging of a release against the running cluster
//! ([`judge`]) refuses, before anything changes, a release for another cluster, a change
//! of distribution, a downgrade, a minor-version skip and a replayed (older) release.

use model::KubeVersion;
use model::spec::DistroKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The one release record: the newest release the operator published.
pub const RELEASE: &str = "upgrade/release";
/// The cluster's one-slot upgrade lock (a semaphore with one slot, fenced and leased).
pub const UPGRADE_SEMAPHORE: &str = "upgrade";
/// Slots of [`UPGRADE_SEMAPHORE`]: one node upgrades at a time.
pub const UPGRADE_SLOTS: u32 = 1;
/// Plain bytes per payload chunk: sealed and base64-encoded it stays well under the
/// rendezvous' 64 KiB request body limit.
pub const CHUNK_BYTES: u32 = 32 * 1024;

/// Key of chunk `index` of the payload of release `sequence`.
pub fn payload_chunk_key(sequence: u64, index: u32) -> String {
    format!("upgrade/payload/{sequence}/{index:06}")
}

/// Prefix of every chunk of release `sequence` (to list or clean them up).
pub fn payload_prefix(sequence: u64) -> String {
    format!("upgrade/payload/{sequence}/")
}

/// Key of a node's upgrade progress (its step, or the error that stopped the roll).
pub fn progress_key(node: &str) -> String {
    format!("upgrade/progress/{node}")
}

/// Prefix of every node's upgrade progress.
pub const PROGRESS_PREFIX: &str = "upgrade/progress/";

/// Key the operator writes to resume a stopped roll (`muster upgrade --resume`): the
/// sequence of the release to resume.
pub const RESUME: &str = "upgrade/resume";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The cluster this release is for; a node of another cluster refuses it.
    pub cluster_id: String,
    /// Strictly increasing per cluster: a node never goes back to an older release.
    pub sequence: u64,
    pub distribution: DistroKind,
    pub version: KubeVersion,
    pub payload: PayloadRef,
    pub published_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadRef {
    /// Hex SHA-256 of the whole payload (`payload.tar.gz` of the rebuilt build dir).
    pub sha256: String,
    pub size: u64,
    pub source: PayloadSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PayloadSource {
    /// Sealed chunks at the rendezvous under [`payload_chunk_key`].
    #[serde(rename_all = "camelCase")]
    Rendezvous { chunks: u32, chunk_bytes: u32 },
    /// Fetched (resumably, with HTTP `Range`) from where the operator put it.
    #[serde(rename_all = "camelCase")]
    Url { url: String },
}

/// What a node does with a release it may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run `from` → `to` (one minor version up at most, or a patch / k3s revision).
    Upgrade { from: KubeVersion, to: KubeVersion },
    /// The cluster already runs this version: nothing to do.
    AlreadyAt(KubeVersion),
}

/// Why a release is refused; nothing has changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "release {sequence} is for cluster {release_cluster}, not this cluster ({ours}): refused"
    )]
    OtherCluster {
        sequence: u64,
        release_cluster: String,
        ours: String,
    },
    #[error(
        "release {sequence} changes the distribution from {from:?} to {to:?}: an upgrade keeps the distribution; rebuild the cluster instead"
    )]
    DistributionChange {
        sequence: u64,
        from: DistroKind,
        to: DistroKind,
    },
    #[error(
        "release {sequence} is {to}, older than the running {from}: downgrades are not supported"
    )]
    Downgrade {
        sequence: u64,
        from: KubeVersion,
        to: KubeVersion,
    },
    #[error(
        "release {sequence} goes from {from} to {to}, skipping a minor version: Kubernetes upgrades one minor version at a time; publish v{}.{}.x first",
        from.major,
        from.minor + 1
    )]
    MinorSkip {
        sequence: u64,
        from: KubeVersion,
        to: KubeVersion,
    },
    #[error(
        "release {sequence} is older than release {seen} already seen: a replayed release is refused"
    )]
    Replayed { sequence: u64, seen: u64 },
}

/// Judges `release` against the cluster as this node knows it: its id, distribution, the
/// version its control plane runs, and the newest release sequence it accepted before.
pub fn judge(
    cluster_id: &str,
    distribution: DistroKind,
    running: KubeVersion,
    seen_sequence: Option<u64>,
    release: &Release,
) -> Result<Verdict, Refusal> {
    let sequence = release.sequence;
    if release.cluster_id != cluster_id {
        return Err(Refusal::OtherCluster {
            sequence,
            release_cluster: release.cluster_id.clone(),
            ours: cluster_id.to_string(),
        });
    }
    if let Some(seen) = seen_sequence.filter(|seen| sequence < *seen) {
        return Err(Refusal::Replayed { sequence, seen });
    }
    if release.distribution != distribution {
        return Err(Refusal::DistributionChange {
            sequence,
            from: distribution,
            to: release.distribution,
        });
    }
    let to = release.version;
    if to == running {
        return Ok(Verdict::AlreadyAt(to));
    }
    if to < running {
        return Err(Refusal::Downgrade {
            sequence,
            from: running,
            to,
        });
    }
    if to.major != running.major || to.minor > running.minor + 1 {
        return Err(Refusal::MinorSkip {
            sequence,
            from: running,
            to,
        });
    }
    Ok(Verdict::Upgrade { from: running, to })
}

/// What a node reports under [`progress_key`] while it takes part in a roll; `muster
/// upgrade --status` and `muster status` read these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub node: String,
    pub sequence: u64,
    /// `queued`, `fetching`, `waiting`, `upgrading`, `stopped`, `done`, `refused`.
    pub phase: String,
    /// The step under way (or that failed), e.g. `drain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it waits, or the cause that stopped the roll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fencing token of the upgrade lock while held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_token: Option<u64>,
    pub at_ms: u64,
}

/// The resume request `muster upgrade --resume` writes under [`RESUME`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRequest {
    pub sequence: u64,
    /// Bumped by every `--resume`, so a node resumes once per request.
    pub count: u64,
    pub at_ms: u64,
}

/// Hex SHA-256 of `bytes`, as [`PayloadRef::sha256`] holds it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Number of chunks of a payload of `size` bytes (an empty payload is one empty chunk).
pub fn chunk_count(size: u64, chunk_bytes: u32) -> u32 {
    let per = u64::from(chunk_bytes.max(1));
    // A payload over 4 G chunks cannot be published (the rendezvous' record limit is far
    // lower), so the count fits.
    u32::try_from(size.div_ceil(per).max(1)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of release {sequence}: chunk {index} is {got} bytes, expected {expected}")]
    ChunkSize {
        sequence: u64,
        index: u32,
        got: usize,
        expected: usize,
    },
    #[error("payload of release {sequence}: got {got} bytes, expected {expected}")]
    Size {
        sequence: u64,
        got: u64,
        expected: u64,
    },
    #[error(
        "payload of release {sequence}: SHA-256 {got} does not match the signed {expected}: refused (tampered or corrupted download)"
    )]
    Digest {
        sequence: u64,
        got: String,
        expected: String,
    },
}

/// A payload download in progress: bytes arrive in order (chunks or a byte stream), are
/// hashed as they come, and [`Download::finish`] checks size and digest. [`Download::resume`]
/// rebuilds it from the prefix already on disk, so an interrupted download continues.
pub struct Download {
    sequence: u64,
    expected_sha256: String,
    expected_size: u64,
    hasher: Sha256,
    received: u64,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("sequence", &self.sequence)
            .field("received", &self.received)
            .field("expected_size", &self.expected_size)
            .finish_non_exhaustive()
    }
}

impl Download {
    pub fn new(release: &Release) -> Download {
        Download {
            sequence: release.sequence,
            expected_sha256: release.payload.sha256.clone(),
            expected_size: release.payload.size,
            hasher: Sha256::new(),
            received: 0,
        }
    }

    /// A download that already has `prefix` (what an interrupted one left on disk). For a
    /// chunked source, `prefix` must be whole chunks: call [`Download::keep_whole_chunks`]
    /// first. A prefix longer than the payload is dropped.
    pub fn resume(release: &Release, prefix: &[u8]) -> Download {
        let mut d = Download::new(release);
        if prefix.len() as u64 <= d.expected_size {
            d.push(prefix);
        }
        d
    }

    /// How much of a partial file of `len` bytes a chunked download keeps: whole chunks.
    pub fn keep_whole_chunks(len: u64, chunk_bytes: u32) -> u64 {
        let per = u64::from(chunk_bytes.max(1));
        len - len % per
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk to fetch from the rendezvous.
    pub fn next_chunk(&self, chunk_bytes: u32) -> u32 {
        u32::try_from(self.received / u64::from(chunk_bytes.max(1))).unwrap_or(u32::MAX)
    }

    /// The HTTP `Range` header value that continues this download, if anything is on disk.
    pub fn range_header(&self) -> Option<String> {
        (self.received > 0).then(|| format!("bytes={}-", self.received))
    }

    /// Appends bytes of a stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.received += bytes.len() as u64;
    }

    /// Appends chunk `index` (must be [`Self::next_chunk`]): every chunk but the last is
    /// exactly `chunk_bytes` long.
    pub fn push_chunk(
        &mut self,
        index: u32,
        chunk_bytes: u32,
        bytes: &[u8],
    ) -> Result<(), PayloadError> {
        let per = u64::from(chunk_bytes.max(1));
        let start = u64::from(index) * per;
        let expected = per.min(self.expected_size.saturating_sub(start));
        if start != self.received || bytes.len() as u64 != expected {
            return Err(PayloadError::ChunkSize {
                sequence: self.sequence,
                index,
                got: bytes.len(),
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
            });
        }
        self.push(bytes);
        Ok(())
    }

    pub fn complete(&self) -> bool {
        self.received >= self.expected_size
    }

    /// Checks the whole: size, then digest.
    pub fn finish(self) -> Result<(), PayloadError> {
        if self.received != self.expected_size {
            return Err(PayloadError::Size {
                sequence: self.sequence,
                got: self.received,
                expected: self.expected_size,
            });
        }
        let got = hex::encode(self.hasher.finalize());
        if got != self.expected_sha256 {
            return Err(PayloadError::Digest {
                sequence: self.sequence,
                got,
                expected: self.expected_sha256,
            });
        }
        Ok(())
    }
}

/// Splits `payload` into the chunks stored at the rendezvous.
pub fn chunks(payload: &[u8], chunk_bytes: u32) -> Vec<&[u8]> {
    if payload.is_empty() {
        return vec![payload];
    }
    payload
        .chunks(usize::try_from(chunk_bytes.max(1)).unwrap_or(usize::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    fn release(version: &str, payload: &[u8]) -> Release {
        Release {
            cluster_id: "c1".into(),
            sequence: 3,
            distribution: DistroKind::Kubeadm,
            version: v(version),
            payload: PayloadRef {
                sha256: sha256_hex(payload),
                size: payload.len() as u64,
                source: PayloadSource::Rendezvous {
                    chunks: chunk_count(payload.len() as u64, 4),
                    chunk_bytes: 4,
                },
            },
            published_at_ms: 1,
        }
    }

    fn judge_k(running: &str, r: &Release) -> Result<Verdict, Refusal> {
        judge("c1", DistroKind::Kubeadm, v(running), Some(2), r)
    }

    #[test]
    fn one_minor_or_a_patch_up_is_an_upgrade() {
        let r = release("v1.31.2", b"x");
        assert_eq!(
            judge_k("v1.30.5", &r),
            Ok(Verdict::Upgrade {
                from: v("v1.30.5"),
                to: v("v1.31.2")
            })
        );
        assert!(matches!(
            judge_k("v1.31.0", &r),
            Ok(Verdict::Upgrade { .. })
        ));
        assert_eq!(judge_k("v1.31.2", &r), Ok(Verdict::AlreadyAt(v("v1.31.2"))));
    }

    #[test]
    fn refusals_before_anything_changes() {
        let r = release("v1.32.0", b"x");
        let skip = judge_k("v1.30.5", &r).unwrap_err();
        assert!(matches!(skip, Refusal::MinorSkip { .. }));
        assert!(skip.to_string().contains("publish v1.31.x first"), "{skip}");
        assert!(matches!(
            judge_k("v1.32.1", &r),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            judge("c2", DistroKind::Kubeadm, v("v1.31.0"), None, &r),
            Err(Refusal::OtherCluster { .. })
        ));
        assert!(matches!(
            judge("c1", DistroKind::K3s, v("v1.31.0"), None, &r),
            Err(Refusal::DistributionChange { .. })
        ));
        assert!(matches!(
            judge("c1", DistroKind::Kubeadm, v("v1.31.0"), Some(4), &r),
            Err(Refusal::Replayed {
                sequence: 3,
                seen: 4
            })
        ));
        // The same release seen again (a restart) is still judged normally.
        assert!(judge("c1", DistroKind::Kubeadm, v("v1.31.0"), Some(3), &r).is_ok());
    }

    #[test]
    fn k3s_revisions_order_after_their_patch() {
        let mut r = release("v1.31.6+k3s2", b"x");
        r.distribution = DistroKind::K3s;
        assert!(matches!(
            judge("c1", DistroKind::K3s, v("v1.31.6+k3s1"), None, &r),
            Ok(Verdict::Upgrade { .. })
        ));
        assert!(matches!(
            judge("c1", DistroKind::K3s, v("v1.31.7+k3s1"), None, &r),
            Err(Refusal::Downgrade { .. })
        ));
    }

    #[test]
    fn a_chunked_download_resumes_from_whole_chunks_and_checks_the_digest() {
        let payload = b"0123456789";
        let r = release("v1.31.0", payload);
        let parts = chunks(payload, 4);
        assert_eq!(parts.len() as u32, chunk_count(10, 4));
        assert_eq!(parts, vec![&b"0123"[..], b"4567", b"89"]);

        // Interrupted after 6 bytes on disk: keep the 4 of chunk 0, fetch from chunk 1.
        let keep = Download::keep_whole_chunks(6, 4);
        assert_eq!(keep, 4);
        let mut d = Download::resume(&r, &payload[..keep as usize]);
        assert_eq!(d.next_chunk(4), 1);
        assert!(matches!(
            d.push_chunk(2, 4, b"89"),
            Err(PayloadError::ChunkSize { index: 2, .. })
        ));
        d.push_chunk(1, 4, b"4567").unwrap();
        assert!(matches!(
            d.push_chunk(2, 4, b"8"),
            Err(PayloadError::ChunkSize { .. })
        ));
        d.push_chunk(2, 4, b"89").unwrap();
        assert!(d.complete());
        d.finish().unwrap();

        let mut bad = Download::new(&r);
        bad.push(b"0123456788");
        assert!(matches!(bad.finish(), Err(PayloadError::Digest { .. })));
        let mut short = Download::new(&r);
        short.push(b"01");
        assert!(matches!(short.finish(), Err(PayloadError::Size { .. })));
    }

    #[test]
    fn a_stream_download_resumes_with_a_range() {
        let payload = b"abcdef";
        let r = release("v1.31.0", payload);
        assert_eq!(Download::new(&r).range_header(), None);
        let mut d = Download::resume(&r, b"abc");
        assert_eq!(d.range_header().as_deref(), Some("bytes=3-"));
        d.push(b"def");
        d.finish().unwrap();
        // A partial file longer than the payload is not trusted.
        assert_eq!(Download::resume(&r, b"abcdefgh").received(), 0);
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let mut r = release("v1.31.0", b"x");
        let back: Release = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        r.payload.source = PayloadSource::Url {
            url: "https://example.test/p.tgz".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""kind":"url""#), "{text}");
        assert_eq!(serde_json::from_str::<Release>(&text).unwrap(), r);
        assert_eq!(payload_chunk_key(3, 12), "upgrade/payload/3/000012");
    }
}
