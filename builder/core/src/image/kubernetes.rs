//! The Kubernetes distribution in the image, through ONE install path
//! (`images/install-kubernetes.sh`, run in the chroot before provision.sh): kubeadm,
//! kubelet, kubectl (held), cri-tools and kubernetes-cni through apt from a signed flat
//! repository, or the k3s binary and airgap images checked against the release's sums.
//! Only the [`Source`] differs between an upstream build, an air-gapped one
//! (`--artifacts DIR`) and the tests (a local signed repository and release dir).

use super::ImageError;
use super::files::{io_err, remove_tree, sha256_file};
use super::packages::LeftOut;
use super::run::run;
use model::spec::DistroKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The script every build runs (shared with Packer).
pub use crate::render::images::INSTALL_KUBERNETES_SH;

/// The pkgs.k8s.io signing key, "isv:kubernetes OBS Project
/// <isv:kubernetes@build.opensuse.org>" (key id 234654DA9A296436). Also pinned in the
/// script; a unit test keeps the two the same.
pub const K8S_KEY_FINGERPRINT: &str = "DE15B14486CD377B9E876E1A234654DA9A296436";
/// k3s's airgap images, for amd64, as the release names them.
pub const K3S_AIRGAP: &str = "k3s-airgap-images-amd64.tar.zst";
/// The release's checksum file.
pub const K3S_SUMS: &str = "sha256sum-amd64.txt";
/// Where an `--artifacts` dir is copied in the chroot while the script runs.
const STAGE: &str = "tmp/muster-artifacts";

/// Where the Kubernetes distribution comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// pkgs.k8s.io or the GitHub release of the spec's version.
    Upstream,
    /// `--artifacts DIR`: the same files in a local directory, checked the same way.
    Artifacts(PathBuf),
    /// TEST ONLY (`--source-override`): another repository or release URL and, for apt,
    /// the fingerprint of the key it is signed with. Everything else is as upstream.
    Override {
        url: String,
        key_fingerprint: Option<String>,
    },
    /// `--allow-incomplete`: no Kubernetes in the image, on purpose; listed as left out.
    LeftOut,
}

/// `https://pkgs.k8s.io/core:/stable:/vX.Y/deb/` for the spec's version.
pub fn apt_repo(cluster: &model::Cluster) -> String {
    let v = cluster.distribution.version;
    format!(
        "https://pkgs.k8s.io/core:/stable:/v{}.{}/deb/",
        v.major, v.minor
    )
}

/// The GitHub release download URL of the spec's k3s version (`+` escaped).
pub fn k3s_release(cluster: &model::Cluster) -> String {
    format!(
        "https://github.com/k3s-io/k3s/releases/download/{}",
        cluster.distribution.version.to_string().replace('+', "%2B")
    )
}

/// The upstream location of this spec's distribution.
pub fn upstream(cluster: &model::Cluster) -> String {
    match cluster.distribution.kind {
        DistroKind::Kubeadm => apt_repo(cluster),
        DistroKind::K3s => k3s_release(cluster),
    }
}

/// What the install path puts into the image for the spec's distribution, one line each:
/// kubeadm's five packages from the apt repository (kubeadm, kubelet and kubectl at exactly
/// the spec's version, held), or k3s's binary and airgap images tarball where k3s's airgap
/// docs put them. Nothing else of Kubernetes comes into the image (no etcd package: kubeadm
/// runs etcd as a static pod, k3s embeds it). `images/install-kubernetes.sh` installs
/// exactly these; `builder/tests/install_kubernetes.rs` checks it in a real root.
pub fn installs(cluster: &model::Cluster) -> Vec<String> {
    let version = cluster.distribution.version.to_string();
    match cluster.distribution.kind {
        DistroKind::Kubeadm => {
            let plain = version.trim_start_matches('v');
            let mut v: Vec<String> = ["kubeadm", "kubelet", "kubectl"]
                .iter()
                .map(|p| format!("{p} {plain} (held)"))
                .collect();
            v.extend(["cri-tools".to_string(), "kubernetes-cni".to_string()]);
            v
        }
        DistroKind::K3s => vec![
            format!("/usr/local/bin/k3s {version}"),
            format!("/var/lib/rancher/k3s/agent/images/{K3S_AIRGAP}"),
        ],
    }
}

/// What a build with [`Source::LeftOut`] lacks.
pub fn left_out(cluster: &model::Cluster) -> LeftOut {
    let version = cluster.distribution.version;
    LeftOut {
        what: match cluster.distribution.kind {
            DistroKind::Kubeadm => {
                format!("kubeadm, kubelet, kubectl {version}, cri-tools, kubernetes-cni")
            }
            DistroKind::K3s => format!("k3s {version} (binary and airgap images)"),
        },
        source: upstream(cluster),
    }
}

impl Source {
    /// The source the build's flags name: `--source-override` (TEST ONLY, with its key's
    /// fingerprint) before `--artifacts DIR`, else upstream; `left_out` (`--allow-incomplete`)
    /// only when neither is given.
    pub fn from_flags(
        artifacts: Option<PathBuf>,
        left_out: bool,
        source_override: Option<String>,
        key_fingerprint: Option<String>,
    ) -> Source {
        match (artifacts, source_override) {
            (_, Some(url)) => Source::Override {
                url,
                key_fingerprint,
            },
            (Some(dir), None) => Source::Artifacts(dir),
            (None, None) if left_out => Source::LeftOut,
            (None, None) => Source::Upstream,
        }
    }

    /// One line: where the distribution comes from.
    pub fn describe(&self, cluster: &model::Cluster) -> String {
        match self {
            Source::Upstream => upstream(cluster),
            Source::Artifacts(dir) => format!("--artifacts {}", dir.display()),
            Source::Override { url, .. } => format!("{url} (TEST source override)"),
            Source::LeftOut => "none (--allow-incomplete)".into(),
        }
    }

    /// A digest input: the source and, for a local dir, every file's sha256.
    pub fn key_part(&self, cluster: &model::Cluster) -> Result<String, ImageError> {
        let mut s = format!(
            "{} {:?} ",
            cluster.distribution.version, cluster.distribution.kind
        );
        match self {
            Source::Upstream => s.push_str(&format!("upstream {K8S_KEY_FINGERPRINT}")),
            Source::Override {
                url,
                key_fingerprint,
            } => s.push_str(&format!("override {url} {key_fingerprint:?}")),
            Source::LeftOut => s.push_str("left out"),
            Source::Artifacts(dir) => {
                for (name, path) in dir_files(dir)? {
                    s.push_str(&format!("{name}={} ", sha256_file(&path)?));
                }
            }
        }
        s.push_str(INSTALL_KUBERNETES_SH);
        Ok(s)
    }
}

/// The regular files under `dir` (relative name, path), sorted.
fn dir_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(io_err("reading --artifacts", &d))? {
            let p = e.map_err(io_err("reading --artifacts", &d))?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.is_file() {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn artifact(file: &Path, problem: impl Into<String>) -> ImageError {
    ImageError::Artifact {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

/// The `name  sha256` pairs of a release's checksum file.
pub fn parse_release_sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let sum = it.next()?;
            let name = it.next()?.trim_start_matches('*');
            Some((name.to_string(), sum.to_lowercase()))
        })
        .collect()
}

/// Checks `file` against the sum `sums` lists for `name` (the error names the file and
/// the sha256 it should have).
pub fn check_sum(sums: &[(String, String)], name: &str, file: &Path) -> Result<(), ImageError> {
    let want = sums
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.as_str())
        .ok_or_else(|| artifact(file, format!("{K3S_SUMS} lists no {name}")))?;
    if !file.is_file() {
        return Err(artifact(
            file,
            format!("missing (expected sha256 {want}, from {K3S_SUMS})"),
        ));
    }
    let got = sha256_file(file)?;
    if got != want {
        return Err(artifact(
            file,
            format!("sha256 {got}, expected {want} (from {K3S_SUMS})"),
        ));
    }
    Ok(())
}

/// Checks an `--artifacts` dir on the build host before anything runs: the files the
/// spec's distribution needs are there, and the k3s files match their sums. (apt checks the
/// repository's signature and the packages' sums in the chroot.)
pub fn check_artifacts(dir: &Path, cluster: &model::Cluster) -> Result<(), ImageError> {
    if !dir.is_dir() {
        return Err(artifact(dir, "no such directory (--artifacts)"));
    }
    match cluster.distribution.kind {
        // A plain directory of .deb files (no index): install-kubernetes.sh picks them.
        DistroKind::Kubeadm if !dir.join("Release").exists() && has_debs(dir)? => {}
        DistroKind::Kubeadm => {
            for name in ["Release.key", "Release"] {
                if !dir.join(name).is_file() {
                    return Err(artifact(
                        &dir.join(name),
                        "missing: --artifacts for a kubeadm spec is a flat apt repository \
                         (Release, Release.gpg or InRelease, Packages, Release.key and the \
                         .debs), as `muster artifacts fetch` writes it, or a directory of \
                         .deb files",
                    ));
                }
            }
            if !["Release.gpg", "InRelease"]
                .iter()
                .any(|n| dir.join(n).is_file())
            {
                return Err(artifact(
                    &dir.join("Release.gpg"),
                    "missing (and no InRelease): the repository is not signed",
                ));
            }
            if !["Packages", "Packages.gz", "Packages.xz"]
                .iter()
                .any(|n| dir.join(n).is_file())
            {
                return Err(artifact(&dir.join("Packages"), "missing"));
            }
        }
        DistroKind::K3s => {
            let sums_path = dir.join(K3S_SUMS);
            let text = std::fs::read_to_string(&sums_path).map_err(|e| {
                artifact(&sums_path, format!("cannot read the release's sums: {e}"))
            })?;
            let sums = parse_release_sums(&text);
            for name in ["k3s", K3S_AIRGAP] {
                check_sum(&sums, name, &dir.join(name))?;
            }
        }
    }
    Ok(())
}

/// Whether `dir` holds .deb files at its top.
fn has_debs(dir: &Path) -> Result<bool, ImageError> {
    Ok(dir_files(dir)?
        .iter()
        .any(|(name, _)| !name.contains('/') && name.ends_with(".deb")))
}

/// Runs the install path in `rootfs` (a chroot) from `source`. Nothing for
/// [`Source::LeftOut`].
pub fn install(rootfs: &Path, cluster: &model::Cluster, source: &Source) -> Result<(), ImageError> {
    let step = "installing Kubernetes (images/install-kubernetes.sh)";
    let version = cluster.distribution.version.to_string();
    let distro = crate::render::images::distro_arg(cluster);
    let mut args = vec![version, distro.to_string()];
    let stage = rootfs.join(STAGE);
    match source {
        Source::LeftOut => return Ok(()),
        Source::Upstream => {}
        Source::Override {
            url,
            key_fingerprint,
        } => {
            args.push(url.clone());
            args.extend(key_fingerprint.clone());
        }
        Source::Artifacts(dir) => {
            check_artifacts(dir, cluster)?;
            remove_tree(&stage)?;
            run(
                step,
                Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(dir)
                    .arg(&stage),
            )?;
            args.push(match cluster.distribution.kind {
                DistroKind::Kubeadm => format!("file:/{STAGE}/"),
                DistroKind::K3s => format!("/{STAGE}"),
            });
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = super::customise::run_script(
        step,
        rootfs,
        "install-kubernetes.sh",
        INSTALL_KUBERNETES_SH,
        &args,
    );
    remove_tree(&stage)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_pins_the_same_key() {
        assert!(
            INSTALL_KUBERNETES_SH.contains(&format!("K8S_KEY_FINGERPRINT={K8S_KEY_FINGERPRINT}"))
        );
    }

    #[test]
    fn release_sums_name_file_and_expected_sum() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k3s");
        std::fs::write(&f, b"k3s").unwrap();
        let good = sha256_file(&f).unwrap();
        let sums = parse_release_sums(&format!("{good}  k3s\n{}  *other\n", "a".repeat(64)));
        check_sum(&sums, "k3s", &f).unwrap();
        std::fs::write(&f, b"tampered").unwrap();
        let err = check_sum(&sums, "k3s", &f).unwrap_err().to_string();
        assert!(
            err.contains("k3s") && err.contains(&format!("expected {good}")),
            "{err}"
        );
        let err = check_sum(&sums, "other", &d.path().join("other"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing (expected sha256 aaaa"), "{err}");
        let err = check_sum(&sums, "nope", &f).unwrap_err().to_string();
        assert!(err.contains("lists no nope"), "{err}");
    }
}
