//! `muster upgrade`: publish the rebuilt build dir's payload as the cluster's next release
//! (sealed chunks at the rendezvous, or a URL the operator serves it from), show the roll
//! (`--status`: the release, who holds the upgrade lock, each node's phase, step and why it
//! waits or what stopped it) and resume a stopped roll (`--resume`). The agents roll it
//! themselves; this command never drives a node.

use super::{BuildDir, OpsError};
use crate::bake::PAYLOAD_FILE;
use protocol::release::{self, RESUME, Release, ResumeRequest};
use protocol::release_transfer::{self, Publication, TransferError};
use std::time::Duration;

fn transfer(dir: &BuildDir, e: TransferError) -> OpsError {
    match e {
        TransferError::Rendezvous { source, .. } => dir.rendezvous_error(source),
        other => OpsError::Record {
            url: dir.rendezvous_url(),
            what: other.to_string(),
        },
    }
}

/// Publishes the build dir's payload as the next release. A release that the previous
/// one already rules out (downgrade, minor skip, another distribution) is refused here,
/// before anything is written; the agents judge every release again against what they run.
pub async fn publish(
    dir: &BuildDir,
    url: Option<String>,
    timeout: Duration,
    progress: impl FnMut(u32, u32),
) -> Result<Release, OpsError> {
    let path = dir.dir.join(PAYLOAD_FILE);
    let payload = std::fs::read(&path).map_err(|source| OpsError::Io {
        path: path.clone(),
        source,
    })?;
    // Hundreds of chunk writes in a row meet the rendezvous's per-client rate limit (429
    // rate_limited, 50 requests/s): such a refusal is waited out and retried, as the
    // agents' clients do, instead of failing the publication halfway.
    let client = dir.client(timeout)?.with_retry(protocol::RetryPolicy {
        attempts: 10,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(2),
    });
    let distribution = dir.baked.spec.distribution.kind;
    let version = dir.baked.spec.distribution.version;
    refuse_incomplete(&path, &payload, distribution, version)?;
    if let Some((previous, _)) = release_transfer::current_release(&client)
        .await
        .map_err(|e| transfer(dir, e))?
    {
        let candidate = Release {
            cluster_id: client.cluster_id().to_string(),
            sequence: previous.sequence + 1,
            distribution,
            version,
            payload: previous.payload.clone(),
            published_at_ms: 0,
        };
        let verdict = release::judge(
            &previous.cluster_id,
            previous.distribution,
            previous.version,
            Some(previous.sequence),
            &candidate,
        );
        match verdict {
            Err(refusal) => {
                return Err(OpsError::Bad {
                    path: dir.dir.join(crate::bake::CLUSTER_FILE),
                    what: format!(
                        "refused against the previous release {} ({}): {refusal}",
                        previous.sequence, previous.version
                    ),
                });
            }
            Ok(release::Verdict::AlreadyAt(_))
                if release::sha256_hex(&payload) == previous.payload.sha256 =>
            {
                return Ok(previous);
            }
            Ok(_) => {}
        }
    }
    release_transfer::publish(
        &client,
        Publication {
            distribution,
            version,
            payload: &payload,
            url,
            now_ms: super::now_ms(),
        },
        progress,
    )
    .await
    .map_err(|e| transfer(dir, e))
}

/// A k3s release is upgraded by swapping the binary: a payload built without the release
/// (`muster build` without `--artifacts DIR` holding it) is refused here, before anything
/// is published, instead of stopping the roll at the first node's `swap-k3s`. A kubeadm
/// payload without the kubeadm, kubelet and kubectl .debs is published with a warning.
fn refuse_incomplete(
    path: &std::path::Path,
    payload: &[u8],
    distribution: model::spec::DistroKind,
    version: model::KubeVersion,
) -> Result<(), OpsError> {
    let bad = |what: String| OpsError::Bad {
        path: path.to_path_buf(),
        what,
    };
    let info =
        crate::image::payload::inspect_bytes(path, payload).map_err(|e| bad(e.to_string()))?;
    if distribution == model::spec::DistroKind::Kubeadm {
        // Not refused: the lab's node roots install no .debs, and a node may have been
        // given the packages another way. But a real node keeps its old kubeadm, which
        // refuses `kubeadm upgrade apply` to a newer version than itself.
        let missing = missing_kube_packages(&info.files);
        if !missing.is_empty() {
            tracing::warn!(
                "{} carries no {} .deb: each node keeps the packages it has, and an older \
                 kubeadm refuses to upgrade the cluster to {version}; rebuild with \
                 `muster build --artifacts DIR`, DIR holding the release's .debs (`muster \
                 artifacts fetch` writes them)",
                path.display(),
                missing.join(", ")
            );
        }
        return Ok(());
    }
    if !payload_has_k3s(&info.files) {
        return Err(bad(format!(
            "carries no k3s binary ({}): a k3s upgrade installs k3s {version} from the payload; \
             rebuild with `muster build --artifacts DIR`, DIR holding the release's k3s, \
             {} and {} (`muster artifacts fetch` writes them)",
            model::node_files::K3S_BINARY,
            crate::image::kubernetes::K3S_AIRGAP,
            crate::image::kubernetes::K3S_SUMS,
        )));
    }
    Ok(())
}

/// The Kubernetes packages an upgrade installs (`bake::distribution::KUBE_PACKAGES`) that
/// a payload's file list carries no .deb of.
fn missing_kube_packages(files: &[String]) -> Vec<&'static str> {
    let dir = format!("{}/", model::node_files::KUBE_PACKAGES_DIR);
    crate::bake::distribution::KUBE_PACKAGES
        .into_iter()
        .filter(|p| {
            !files.iter().any(|f| {
                f.strip_prefix(&dir)
                    .and_then(crate::bake::distribution::deb_name)
                    .is_some_and(|(name, _)| name == *p)
            })
        })
        .collect()
}

/// Whether a payload's file list holds the k3s binary and airgap images.
fn payload_has_k3s(files: &[String]) -> bool {
    let airgap = format!(
        "{}/{}",
        model::node_files::K3S_AIRGAP_DIR,
        crate::image::kubernetes::K3S_AIRGAP
    );
    files.iter().any(|f| f == model::node_files::K3S_BINARY) && files.contains(&airgap)
}

pub use protocol::roll::{NO_REPORT, NodeProgress, ReleaseSummary, UpgradeStatus, render};

/// The roll as the rendezvous shows it, for the build dir's planned nodes.
pub async fn status(dir: &BuildDir, timeout: Duration) -> Result<UpgradeStatus, OpsError> {
    let client = dir.client(timeout)?;
    let audit = protocol::status::audit_log(&client)
        .await
        .map_err(|e| dir.rendezvous_error(e))?;
    read(dir, &client, &audit).await
}

/// [`status`] with the audit log the caller read already (`muster status`).
pub async fn read(
    dir: &BuildDir,
    client: &protocol::Client,
    audit: &[protocol::AuditEntry],
) -> Result<UpgradeStatus, OpsError> {
    protocol::roll::read(client, &dir.baked.upgrading_nodes(), audit)
        .await
        .map_err(|e| match e {
            protocol::roll::RollError::Release(t) => transfer(dir, t),
            protocol::roll::RollError::Rendezvous(c) => dir.rendezvous_error(c),
        })
}

/// `muster upgrade --resume`: asks the stopped node to retry its failed step (one resume
/// per call: the request count goes up by one).
pub async fn resume(dir: &BuildDir, timeout: Duration) -> Result<ResumeRequest, OpsError> {
    let client = dir.client(timeout)?;
    let Some((release, _)) = release_transfer::current_release(&client)
        .await
        .map_err(|e| transfer(dir, e))?
    else {
        return Err(OpsError::Record {
            url: dir.rendezvous_url(),
            what: "no release published: nothing to resume".into(),
        });
    };
    let existing = client
        .get(RESUME)
        .await
        .map_err(|e| dir.rendezvous_error(e))?;
    let previous = existing
        .as_ref()
        .and_then(|r| serde_json::from_slice::<ResumeRequest>(&r.value).ok());
    let request = ResumeRequest {
        sequence: release.sequence,
        count: previous.map_or(1, |p| p.count + 1),
        at_ms: super::now_ms(),
    };
    let bytes = serde_json::to_vec(&request).map_err(|e| OpsError::Record {
        url: dir.rendezvous_url(),
        what: e.to_string(),
    })?;
    match existing {
        Some(r) => client.cas(RESUME, r.revision, &bytes, None, None).await,
        None => client.create(RESUME, &bytes, None, None).await,
    }
    .map_err(|e| dir.rendezvous_error(e))?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeadm_payload_is_missing_the_packages_it_carries_no_deb_of() {
        let dir = model::node_files::KUBE_PACKAGES_DIR;
        let files = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("{dir}/{n}")).collect()
        };
        assert_eq!(
            missing_kube_packages(&["usr/bin/nodeagent".to_string()]),
            ["kubeadm", "kubelet", "kubectl"]
        );
        assert_eq!(
            missing_kube_packages(&files(&[
                "kubeadm_1.32.0-1.1_amd64.deb",
                "kubelet_1.32.0-1.1_amd64.deb"
            ])),
            ["kubectl"]
        );
        assert!(
            missing_kube_packages(&files(&[
                "kubeadm_1.32.0-1.1_amd64.deb",
                "kubelet_1.32.0-1.1_amd64.deb",
                "kubectl_1.32.0-1.1_amd64.deb"
            ]))
            .is_empty()
        );
    }
}
