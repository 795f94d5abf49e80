//! The Kubernetes distribution's own files in the payload, so that a rebuilt release
//! carries what an upgrade installs on a running node (issue 15). From the build's
//! `--artifacts DIR` (the directory `muster artifacts fetch` fills for the image build):
//! k3s's binary and airgap images tarball, each checked against the release's
//! `sha256sum-amd64.txt` before it goes in, at the paths the k3s install script and k3s's
//! airgap docs use; kubeadm's kubeadm, kubelet and kubectl .debs at exactly the spec's
//! version (the packages the image build installs from the same directory), each checked
//! against the repository's `Packages` index (a flat repository as `muster artifacts
//! fetch` writes it) or the directory's `SHA256SUMS` (a plain directory of .debs), under
//! [`nf::KUBE_PACKAGES_DIR`], where the agent's `install-kubeadm`/`install-kubelet` install
//! them with dpkg. Without such a directory the payload carries none (the image build
//! installs the distribution; `muster upgrade` refuses a k3s release without its binary).

use crate::image::artifacts::{parse_packages, version_cmp};
use crate::image::files::{parse_sums, sha256_file};
use crate::image::kubernetes::{K3S_AIRGAP, K3S_SUMS, check_artifacts};
use model::node_files as nf;
use model::spec::DistroKind;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error("the distribution's artifacts for the payload: {0}")]
    Artifacts(#[from] crate::image::ImageError),
    #[error("the distribution's artifacts for the payload: {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One payload file: path relative to `/`, mode, contents.
pub type PayloadFile = (String, u32, Vec<u8>);

/// The packages an upgrade installs from the payload, at exactly the spec's version.
pub const KUBE_PACKAGES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];

/// Whether `dir` holds the files of `kind`'s release (k3s: its `sha256sum-amd64.txt`;
/// kubeadm: a `Packages` index or .deb files at its top).
pub fn present(dir: &Path, kind: DistroKind) -> bool {
    match kind {
        DistroKind::K3s => dir.join(K3S_SUMS).is_file(),
        DistroKind::Kubeadm => {
            dir.join("Packages").is_file()
                || std::fs::read_dir(dir).is_ok_and(|mut d| {
                    d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".deb")))
                })
        }
    }
}

/// `name_version_arch.deb` (Debian's file naming) as (name, version).
pub fn deb_name(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".deb")?;
    let mut it = stem.splitn(3, '_');
    Some((it.next()?, it.next()?))
}

/// The .deb of each of [`KUBE_PACKAGES`] at `plain` (like 1.32.0; the newest package
/// revision) from `dir`, each with the sha256 it must have: from the `Packages` index
/// of a flat repository, else from a plain directory by file name, checked against its
/// `SHA256SUMS` when it has one. (path relative to `dir`, expected sha256 if known).
fn pick_debs(dir: &Path, plain: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let index = dir.join("Packages");
    if index.is_file() {
        let text =
            std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        let stanzas = parse_packages(&text);
        return crate::image::artifacts::pick(&stanzas, plain).map(|picked| {
            picked
                .into_iter()
                .filter(|s| KUBE_PACKAGES.contains(&s.package.as_str()))
                .map(|s| {
                    (
                        s.filename.trim_start_matches("./").to_string(),
                        Some(s.sha256),
                    )
                })
                .collect()
        });
    }
    let sums = match std::fs::read_to_string(dir.join("SHA256SUMS")) {
        Ok(t) => parse_sums(&t).ok_or("SHA256SUMS is malformed")?,
        Err(_) => Vec::new(),
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    files.sort();
    KUBE_PACKAGES
        .iter()
        .map(|name| {
            let best = files
                .iter()
                .filter_map(|f| deb_name(f).map(|(n, v)| (f, n, v)))
                .filter(|(_, n, v)| n == name && v.split('-').next() == Some(plain))
                .max_by(|a, b| version_cmp(a.2, b.2))
                .ok_or_else(|| format!("no .deb of {name} {plain}"))?;
            let want = sums
                .iter()
                .find(|(n, _)| n == best.0)
                .map(|(_, s)| s.clone());
            Ok((best.0.clone(), want))
        })
        .collect()
}

fn kubeadm_files(
    cluster: &model::Cluster,
    dir: &Path,
) -> Result<Vec<PayloadFile>, DistributionError> {
    let version = cluster.distribution.version.to_string();
    let plain = version.trim_start_matches('v');
    let bad = |file: &Path, problem: String| {
        DistributionError::Artifacts(crate::image::ImageError::Artifact {
            file: file.to_path_buf(),
            problem,
        })
    };
    let picked = pick_debs(dir, plain).map_err(|p| bad(dir, p))?;
    let mut out = Vec::new();
    for (rel, want) in picked {
        let path = dir.join(&rel);
        if let Some(want) = want {
            let got = sha256_file(&path)?;
            if got != want {
                return Err(bad(&path, format!("sha256 {got}, expected {want}")));
            }
        }
        let bytes = std::fs::read(&path).map_err(|source| DistributionError::Read {
            path: path.clone(),
            source,
        })?;
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        out.push((format!("{}/{name}", nf::KUBE_PACKAGES_DIR), 0o644, bytes));
    }
    Ok(out)
}

/// The distribution files the payload carries from `dir` (checked), or none when `dir`
/// holds no release of the cluster's distribution.
pub fn files(cluster: &model::Cluster, dir: &Path) -> Result<Vec<PayloadFile>, DistributionError> {
    let kind = cluster.distribution.kind;
    if !present(dir, kind) {
        return Ok(Vec::new());
    }
    if kind == DistroKind::Kubeadm {
        return kubeadm_files(cluster, dir);
    }
    // The same check as the image build's: every file against the release's sums.
    check_artifacts(dir, cluster)?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| DistributionError::Read { path, source })
    };
    Ok(match kind {
        DistroKind::K3s => vec![
            (nf::K3S_BINARY.to_string(), 0o755, read("k3s")?),
            (
                format!("{}/{K3S_AIRGAP}", nf::K3S_AIRGAP_DIR),
                0o644,
                read(K3S_AIRGAP)?,
            ),
        ],
        DistroKind::Kubeadm => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k3s_cluster() -> model::Cluster {
        let name = "seed-003-k3s-keepalived.yaml";
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples")
                .join(name),
        )
        .unwrap();
        model::spec::load(name, &text).unwrap().0
    }

    #[test]
    fn kubeadm_packages_at_exactly_the_version_go_in_checked() {
        let name = "seed-000-kubeadm-kube-vip.yaml";
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples")
                .join(name),
        )
        .unwrap();
        let c = model::spec::load(name, &text).unwrap().0;
        let plain = c.distribution.version.to_string();
        let plain = plain.trim_start_matches('v').to_string();
        let d = tempfile::tempdir().unwrap();
        assert!(
            files(&c, d.path()).unwrap().is_empty(),
            "no packages: nothing"
        );
        for (pkg, v) in [
            ("kubeadm", format!("{plain}-1.1")),
            ("kubeadm", format!("{plain}-1.2")),
            ("kubeadm", "1.0.0-1.1".to_string()),
            ("kubelet", format!("{plain}-1.1")),
            ("kubectl", format!("{plain}-1.1")),
            ("cri-tools", "1.31.1-1.1".to_string()),
        ] {
            std::fs::write(
                d.path().join(format!("{pkg}_{v}_amd64.deb")),
                format!("{pkg} {v}"),
            )
            .unwrap();
        }
        let got: Vec<String> = files(&c, d.path())
            .unwrap()
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(
            got,
            [
                format!("usr/lib/muster/packages/kubeadm_{plain}-1.2_amd64.deb"),
                format!("usr/lib/muster/packages/kubelet_{plain}-1.1_amd64.deb"),
                format!("usr/lib/muster/packages/kubectl_{plain}-1.1_amd64.deb"),
            ]
        );
        // A SHA256SUMS that disagrees refuses the build, naming the file.
        std::fs::write(
            d.path().join("SHA256SUMS"),
            format!("{}  kubelet_{plain}-1.1_amd64.deb\n", "0".repeat(64)),
        )
        .unwrap();
        let err = files(&c, d.path()).unwrap_err().to_string();
        assert!(
            err.contains("kubelet_") && err.contains("expected 0000"),
            "{err}"
        );
        std::fs::remove_file(d.path().join(format!("kubectl_{plain}-1.1_amd64.deb"))).unwrap();
        std::fs::remove_file(d.path().join("SHA256SUMS")).unwrap();
        let err = files(&c, d.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("no .deb of kubectl {plain}")),
            "{err}"
        );
        assert_eq!(
            deb_name("kubeadm_1.32.0-1.1_amd64.deb"),
            Some(("kubeadm", "1.32.0-1.1"))
        );
    }

    #[test]
    fn k3s_release_files_go_in_checked_against_the_release_sums() {
        let c = k3s_cluster();
        let d = tempfile::tempdir().unwrap();
        assert!(
            files(&c, d.path()).unwrap().is_empty(),
            "no release: nothing"
        );
        std::fs::write(d.path().join("k3s"), b"binary").unwrap();
        std::fs::write(d.path().join(K3S_AIRGAP), b"images").unwrap();
        let sum = |b: &[u8]| crate::bake::payload::sha256_hex(b);
        std::fs::write(
            d.path().join(K3S_SUMS),
            format!(
                "{}  k3s\n{}  {K3S_AIRGAP}\n",
                sum(b"binary"),
                sum(b"images")
            ),
        )
        .unwrap();
        let got = files(&c, d.path()).unwrap();
        assert_eq!(
            got,
            vec![
                ("usr/local/bin/k3s".to_string(), 0o755, b"binary".to_vec()),
                (
                    format!("var/lib/rancher/k3s/agent/images/{K3S_AIRGAP}"),
                    0o644,
                    b"images".to_vec()
                ),
            ]
        );
        std::fs::write(d.path().join("k3s"), b"tampered").unwrap();
        let err = files(&c, d.path()).unwrap_err().to_string();
        assert!(
            err.contains("k3s: sha256") && err.contains("expected"),
            "{err}"
        );
    }
}
