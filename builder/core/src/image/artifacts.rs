//! `muster artifacts fetch`: fills a directory with what `muster build --artifacts DIR` and
//! `muster image build --artifacts DIR` take, from the same upstream sources the builds use
//! (so a machine without internet can build). kubeadm: the subset of the pkgs.k8s.io flat
//! repository the image needs (Release.key, Release, Release.gpg/InRelease, Packages and
//! the .debs), its chain of trust checked ([`super::apt_trust`]: the pinned key, the
//! signature, Packages' sum) and each .deb against the sha256 Packages lists. k3s: the
//! binary, the airgap images and `sha256sum-amd64.txt`, checked against it. Then the pinned
//! add-on manifests and charts (sha256 checked), rendered as `muster build` renders them to
//! learn every image the nodes run, and those images. The directory appears complete or
//! not at all.

use super::files::{io_err, remove_tree, sha256_file};
use super::kubernetes::{self, K3S_AIRGAP, K3S_SUMS, check_sum, parse_release_sums};
use super::{ArtifactReport, ImageError};
use model::spec::DistroKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// curl's exit codes for "could not get there at all": DNS, connect, timeout, TLS.
const UNREACHABLE_CODES: [i32; 6] = [5, 6, 7, 28, 35, 60];

/// The Debian packages the image takes from the Kubernetes repository; the first three at
/// exactly the spec's version.
pub const APT_PACKAGES: [&str; 5] = [
    "kubeadm",
    "kubelet",
    "kubectl",
    "cri-tools",
    "kubernetes-cni",
];

/// Downloads `url` to `dest` with curl; unreachable hosts get their own error.
pub(crate) fn download(url: &str, dest: &Path) -> Result<(), ImageError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("fetching", parent))?;
    }
    let out = Command::new("curl")
        .args(["-fsSL", "--connect-timeout", "20", "--max-time", "1800"])
        .args(["--retry", "2", "-o"])
        .arg(dest)
        .arg(url)
        .output()
        .map_err(|source| ImageError::Spawn {
            step: format!("fetching {url}"),
            program: "curl".into(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    // curl prints one line per try: the last says it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.trim().lines().last().unwrap_or_default().to_string();
    match out.status.code() {
        Some(c) if UNREACHABLE_CODES.contains(&c) => Err(ImageError::Unreachable {
            url: url.to_string(),
            detail,
        }),
        _ => Err(ImageError::Artifact {
            file: dest.to_path_buf(),
            problem: format!("cannot download {url}: {detail}"),
        }),
    }
}

/// One stanza of an apt `Packages` index: the fields the fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
}

/// The stanzas of a `Packages` index (others' fields ignored).
pub fn parse_packages(text: &str) -> Vec<Stanza> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            Some(Stanza {
                package: field("Package")?,
                version: field("Version")?,
                filename: field("Filename")?,
                sha256: field("SHA256")?,
            })
        })
        .collect()
}

/// Compares Debian-like versions by their runs of digits and of other characters (enough
/// for the Kubernetes repository's `1.31.4-1.1`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for ch in s.chars() {
            if !cur.is_empty() && cur.chars().all(|c| c.is_ascii_digit()) != ch.is_ascii_digit() {
                out.push(std::mem::take(&mut cur));
            }
            cur.push(ch);
        }
        out.push(cur);
        out.into_iter()
            .map(|p| p.parse::<u64>().map_err(|_| p))
            .collect()
    }
    parts(a).cmp(&parts(b))
}

/// The stanzas the image installs: kubeadm, kubelet, kubectl at `plain` (like 1.31.4,
/// newest package revision), cri-tools and kubernetes-cni at their newest (what apt picks).
pub fn pick(stanzas: &[Stanza], plain: &str) -> Result<Vec<Stanza>, String> {
    APT_PACKAGES
        .iter()
        .map(|name| {
            let exact = ["kubeadm", "kubelet", "kubectl"].contains(name);
            stanzas
                .iter()
                .filter(|s| s.package == *name)
                .filter(|s| !exact || s.version.split('-').next() == Some(plain))
                .max_by(|a, b| version_cmp(&a.version, &b.version))
                .cloned()
                .ok_or_else(|| {
                    if exact {
                        format!("the repository has no {name} {plain}")
                    } else {
                        format!("the repository has no {name}")
                    }
                })
        })
        .collect()
}

/// What a fetch reaches beyond the spec: the container images' puller, Helm for the
/// charts, and (tests only) another distribution source.
#[allow(
    missing_debug_implementations,
    reason = "holds a chart renderer trait object"
)]
pub struct FetchOptions<'a> {
    /// How the container images are pulled ([`super::prepull::pull_images`]).
    pub puller: &'a super::prepull::Puller,
    /// Renders the pinned charts (cilium's) to learn their images, as `muster build` does.
    pub charts: &'a dyn crate::addons::chart::Renderer,
    /// [`kubernetes::Source::Upstream`], or a TEST ONLY [`kubernetes::Source::Override`].
    pub source: &'a kubernetes::Source,
}

/// Fills `out` (which must not exist or be empty) for `spec`'s distribution, add-ons and
/// images.
pub fn fetch(
    spec: &crate::spec_source::LoadedSpec,
    out: &Path,
    opts: &FetchOptions<'_>,
) -> Result<Vec<ArtifactReport>, ImageError> {
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ImageError::Artifact {
            file: out.to_path_buf(),
            problem: "not empty: fetch into a new directory".into(),
        });
    }
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    remove_tree(&partial)?;
    std::fs::create_dir_all(&partial).map_err(io_err("fetching", &partial))?;
    let result = fetch_distribution(&spec.cluster, &partial, opts.source).and_then(|mut names| {
        names.extend(fetch_addons_and_images(spec, &partial, opts)?);
        Ok(names)
    });
    let names = match result {
        Ok(n) => n,
        Err(e) => {
            remove_tree(&partial)?;
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).map_err(io_err("fetching", out))?;
    }
    std::fs::rename(&partial, out).map_err(io_err("fetching", out))?;
    names
        .into_iter()
        .map(|name| {
            let path = out.join(&name);
            Ok(ArtifactReport {
                bytes: std::fs::metadata(&path)
                    .map_err(io_err("fetching", &path))?
                    .len(),
                sha256: sha256_file(&path)?,
                name,
            })
        })
        .collect()
}

/// The distribution's files into `dir` from upstream or `source`'s override, checked.
/// Returns the files written, relative to `dir`.
pub fn fetch_distribution(
    cluster: &model::Cluster,
    dir: &Path,
    source: &kubernetes::Source,
) -> Result<Vec<String>, ImageError> {
    let (url, fingerprint) = match source {
        kubernetes::Source::Override {
            url,
            key_fingerprint,
        } => (
            format!("{}/", url.trim_end_matches('/')),
            key_fingerprint
                .clone()
                .unwrap_or_else(|| kubernetes::K8S_KEY_FINGERPRINT.to_string()),
        ),
        _ => (
            kubernetes::upstream(cluster),
            kubernetes::K8S_KEY_FINGERPRINT.to_string(),
        ),
    };
    match cluster.distribution.kind {
        DistroKind::Kubeadm => fetch_apt(cluster, dir, &url, &fingerprint),
        DistroKind::K3s => fetch_k3s(dir, url.trim_end_matches('/')),
    }
}

/// The add-ons' pinned files into `dir/addons/`, rendered as `muster build` renders them
/// (charts with the spec's values, the user's files read beside the spec) to learn their
/// images, then every image the nodes run pulled into `dir/images/`.
fn fetch_addons_and_images(
    spec: &crate::spec_source::LoadedSpec,
    dir: &Path,
    opts: &FetchOptions<'_>,
) -> Result<Vec<String>, ImageError> {
    let cluster = &spec.cluster;
    let needs = super::prepull::needs(cluster)?;
    let mut names = super::prepull::fetch_addons(&needs, dir)?;
    let source = crate::addons::source::Source::Artifacts(dir.to_path_buf());
    let baked = crate::addons::bake::bake(
        cluster,
        &crate::addons::bake::Inputs {
            source: &source,
            charts: opts.charts,
            spec_dir: &spec.dir(),
            api_address: model::plan::api_address(cluster, &spec.plan.nodes),
        },
    )
    .map_err(|e| ImageError::Artifact {
        file: dir.join(super::prepull::MANIFESTS_DIR),
        problem: format!("rendering the add-ons to learn their images: {e}"),
    })?;
    let images = super::prepull::with_listed(needs.images.clone(), &baked.images);
    names.extend(super::prepull::pull_images(dir, &images, opts.puller)?);
    Ok(names)
}

fn fetch_apt(
    cluster: &model::Cluster,
    dir: &Path,
    repo: &str,
    fingerprint: &str,
) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    for name in ["Release.key", "Release"] {
        download(&format!("{repo}{name}"), &dir.join(name))?;
        names.push(name.to_string());
    }
    // Either signature will do (apt takes InRelease first); a missing one leaves no file.
    for name in ["Release.gpg", "InRelease"] {
        if download(&format!("{repo}{name}"), &dir.join(name)).is_ok() {
            names.push(name.to_string());
        } else {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    download(&format!("{repo}Packages"), &dir.join("Packages"))?;
    names.push("Packages".into());
    super::apt_trust::verify(dir, repo, fingerprint)?;
    let path = dir.join("Packages");
    let text = std::fs::read_to_string(&path).map_err(io_err("fetching", &path))?;
    let plain = cluster.distribution.version.to_string();
    let plain = plain.trim_start_matches('v');
    let picked = pick(&parse_packages(&text), plain).map_err(|problem| ImageError::Artifact {
        file: path.clone(),
        problem: format!("{problem} ({repo})"),
    })?;
    for s in picked {
        let rel = s.filename.trim_start_matches("./").to_string();
        let dest = dir.join(&rel);
        download(&format!("{repo}{rel}"), &dest)?;
        let got = sha256_file(&dest)?;
        if got != s.sha256 {
            return Err(ImageError::Artifact {
                file: dest,
                problem: format!("sha256 {got}, expected {} (from Packages)", s.sha256),
            });
        }
        names.push(rel);
    }
    Ok(names)
}

fn fetch_k3s(dir: &Path, release: &str) -> Result<Vec<String>, ImageError> {
    let sums_path = dir.join(K3S_SUMS);
    download(&format!("{release}/{K3S_SUMS}"), &sums_path)?;
    let text = std::fs::read_to_string(&sums_path).map_err(io_err("fetching", &sums_path))?;
    let sums = parse_release_sums(&text);
    for name in ["k3s", K3S_AIRGAP] {
        download(&format!("{release}/{name}"), &dir.join(name))?;
        check_sum(&sums, name, &dir.join(name))?;
    }
    Ok(vec![K3S_SUMS.into(), "k3s".into(), K3S_AIRGAP.into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "Package: kubeadm\nVersion: 1.31.3-1.1\nFilename: amd64/kubeadm_1.31.3-1.1_amd64.deb\nSHA256: aa\n\n\
Package: kubeadm\nVersion: 1.31.4-1.1\nFilename: amd64/kubeadm_1.31.4-1.1_amd64.deb\nSHA256: bb\n\n\
Package: kubelet\nVersion: 1.31.4-1.1\nFilename: amd64/kubelet_1.31.4-1.1_amd64.deb\nSHA256: cc\n\n\
Package: kubectl\nVersion: 1.31.4-1.1\nFilename: amd64/kubectl_1.31.4-1.1_amd64.deb\nSHA256: dd\n\n\
Package: cri-tools\nVersion: 1.31.1-1.1\nFilename: amd64/cri-tools_1.31.1-1.1_amd64.deb\nSHA256: ee\n\n\
Package: cri-tools\nVersion: 1.9.0-1.1\nFilename: amd64/cri-tools_1.9.0-1.1_amd64.deb\nSHA256: ff\n\n\
Package: kubernetes-cni\nVersion: 1.5.1-1.1\nFilename: amd64/kubernetes-cni_1.5.1-1.1_amd64.deb\nSHA256: 11\n";

    #[test]
    fn picks_the_exact_version_and_the_newest_tools() {
        let picked = pick(&parse_packages(PACKAGES), "1.31.4").unwrap();
        let names: Vec<_> = picked
            .iter()
            .map(|s| format!("{} {}", s.package, s.version))
            .collect();
        assert_eq!(
            names,
            [
                "kubeadm 1.31.4-1.1",
                "kubelet 1.31.4-1.1",
                "kubectl 1.31.4-1.1",
                "cri-tools 1.31.1-1.1",
                "kubernetes-cni 1.5.1-1.1"
            ]
        );
        let err = pick(&parse_packages(PACKAGES), "1.31.9").unwrap_err();
        assert_eq!(err, "the repository has no kubeadm 1.31.9");
    }

    #[test]
    fn unreachable_upstream_says_so() {
        let d = tempfile::tempdir().unwrap();
        // Port 9 on an unrouted test address: nothing answers.
        let err = download("http://127.0.0.1:9/Release", &d.path().join("Release"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("UPSTREAM UNREACHABLE"), "{err}");
    }
}
