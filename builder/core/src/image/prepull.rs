//! Pre-pulled container images: what a node of the spec runs from a registry (kubeadm's
//! control-plane, etcd, CoreDNS and pause images, kube-vip, the CNI add-on's images), put
//! into containerd's `k8s.io` namespace in the image so the first boot pulls nothing.
//!
//! The images come as tarballs (`ctr images export` / `docker save` archives) in
//! `--artifacts DIR/images/`, one per image, listed with their sha256 in
//! `DIR/images/SHA256SUMS`; add-on images are read from the pinned add-on manifest in
//! `DIR/addons/` (checked against its pinned sha256). The import runs at build time, in
//! the image's own containerd (`images/import-images.sh` in the chroot, in a private mount
//! namespace with only /proc and a tmpfs /run): the image then holds the images unpacked,
//! and no first-boot step stands between containerd and the kubelet. k3s needs none of
//! this for its own images: its airgap tarball carries them.

use super::ImageError;
use super::files::{io_err, remove_tree, sha256_file};
use super::kubernetes::parse_release_sums;
use super::run::run;
use crate::addons::{self, Install, PinnedManifest};
use model::spec::{Datastore, DistroKind, VipProvider};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the image tarballs sit in an `--artifacts` dir.
pub const IMAGES_DIR: &str = "images";
/// Where the pinned add-on manifests sit in an `--artifacts` dir: where `muster build`
/// takes them from too (one artifacts directory for both).
pub const MANIFESTS_DIR: &str = addons::source::ARTIFACTS_SUBDIR;
/// The sums of the image tarballs (sha256sum format), in [`IMAGES_DIR`].
pub const IMAGE_SUMS: &str = "SHA256SUMS";
/// Where the tarballs are staged in the chroot while the import runs.
const STAGE: &str = "tmp/muster-images";

/// The images kubeadm's `config images list` names per minor release (its constants at the
/// minor's first release): etcd, CoreDNS, pause. The four control-plane images carry the
/// spec's exact version. A patch release that moves one of these needs its row updated;
/// `kubeadm config images list --kubernetes-version vX.Y.Z` shows what a kubeadm wants.
const KUBEADM_IMAGES: &[(u32, &str, &str, &str)] = &[
    // (minor, etcd, coredns, pause)
    (27, "3.5.7-0", "v1.10.1", "3.9"),
    (28, "3.5.9-0", "v1.10.1", "3.9"),
    (29, "3.5.10-0", "v1.11.1", "3.9"),
    (30, "3.5.12-0", "v1.11.1", "3.9"),
    (31, "3.5.15-0", "v1.11.3", "3.10"),
    (32, "3.5.16-0", "v1.11.3", "3.10"),
    (33, "3.5.21-0", "v1.12.0", "3.10"),
];

/// What a spec's nodes pull from registries, before the add-on manifests are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Images named by muster itself (kubeadm's and kube-vip), sorted.
    pub images: Vec<String>,
    /// Pinned add-on manifests whose `image:` fields are needed too.
    pub manifests: Vec<PinnedManifest>,
    /// Pinned charts (cilium's): `muster artifacts fetch` downloads them for an offline
    /// `muster build`; their images are known only once rendered (not pre-pulled here).
    pub charts: Vec<PinnedManifest>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.manifests.is_empty() && self.charts.is_empty()
    }

    /// One line for messages and the report.
    pub fn describe(&self) -> String {
        let mut parts = self.images.clone();
        parts.extend(
            self.manifests
                .iter()
                .chain(&self.charts)
                .map(|m| format!("the images of {} {}", m.name, m.version)),
        );
        parts.join(", ")
    }
}

/// The images the nodes of `cluster` run from a registry. Pure.
pub fn needs(cluster: &model::Cluster) -> Result<Needs, ImageError> {
    let mut images = Vec::new();
    let version = cluster.distribution.version;
    if cluster.distribution.kind == DistroKind::Kubeadm {
        let Some((_, etcd, coredns, pause)) =
            KUBEADM_IMAGES.iter().find(|(m, ..)| *m == version.minor)
        else {
            return Err(ImageError::Artifact {
                file: PathBuf::from(IMAGES_DIR),
                problem: format!(
                    "muster does not know kubeadm {version}'s images (it knows 1.{}–1.{})",
                    KUBEADM_IMAGES[0].0,
                    KUBEADM_IMAGES[KUBEADM_IMAGES.len() - 1].0
                ),
            });
        };
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ] {
            // kubeadm skips its kube-proxy add-on when cilium replaces it.
            if c == "kube-proxy" && cluster.addons.kube_proxy_replacement {
                continue;
            }
            images.push(format!("registry.k8s.io/{c}:{version}"));
        }
        images.push(format!("registry.k8s.io/coredns/coredns:{coredns}"));
        images.push(format!("registry.k8s.io/pause:{pause}"));
        if matches!(cluster.datastore, Datastore::StackedEtcd) {
            images.push(format!("registry.k8s.io/etcd:{etcd}"));
        }
    }
    if cluster.ha.provider == VipProvider::KubeVip {
        images.push(crate::render::kube_vip::KUBE_VIP_IMAGE.to_string());
    }
    images.sort();
    images.dedup();
    let (charts, manifests) = addons::resolve(cluster)
        .into_iter()
        .filter_map(|a| match a.install {
            Install::Manifest(m) | Install::User(addons::UserSource::Url(m)) => Some(m),
            // A local file's images are not pre-pulled: the image build has no spec dir.
            Install::User(addons::UserSource::File { .. })
            | Install::Bundled
            | Install::NoSource => None,
        })
        // A chart's images are known once `muster build` rendered it: the payload's
        // `prepull-images` lists them (what a Packer build pulls).
        .partition(|m| addons::chart::is_chart(&m.url));
    Ok(Needs {
        images,
        manifests,
        charts,
    })
}

/// The tarball name of `image` in [`IMAGES_DIR`] (the rule import-images.sh uses).
pub fn tarball_name(image: &str) -> String {
    format!("{}.tar", image.replace(['/', ':', '@'], "_"))
}

/// The file name of a pinned manifest in [`MANIFESTS_DIR`].
pub fn manifest_name(m: &PinnedManifest) -> String {
    addons::source::artifact_name(m)
}

fn artifact(file: &Path, problem: impl Into<String>) -> ImageError {
    ImageError::Artifact {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

/// Every image the nodes need, the add-on manifests read from `dir/addons/` (each
/// checked against its pinned sha256). Sorted.
pub fn resolve(needs: &Needs, dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut images = needs.images.clone();
    // The same read-and-check `muster build` takes its add-ons through.
    let source = addons::source::Source::Artifacts(dir.to_path_buf());
    for m in &needs.manifests {
        let bytes = addons::source::fetch(&source, m).map_err(|e| {
            let path = dir.join(MANIFESTS_DIR).join(manifest_name(m));
            match e {
                addons::source::SourceError::Mismatch { got, .. } => artifact(
                    &path,
                    format!(
                        "sha256 {got}, expected {} (the pinned {} {})",
                        m.sha256, m.name, m.version
                    ),
                ),
                addons::source::SourceError::Unavailable { detail, .. } if path.is_file() => {
                    artifact(&path, format!("cannot read it: {detail}"))
                }
                addons::source::SourceError::Unavailable { .. } => artifact(
                    &path,
                    format!(
                        "missing: {} {} from {} (expected sha256 {})",
                        m.name, m.version, m.url, m.sha256
                    ),
                ),
            }
        })?;
        let path = dir.join(MANIFESTS_DIR).join(manifest_name(m));
        let text = String::from_utf8(bytes)
            .map_err(|e| artifact(&path, format!("not UTF-8 text: {e}")))?;
        images.extend(addons::images(&text));
    }
    images.sort();
    images.dedup();
    Ok(images)
}

/// Checks on the build host that `dir/images/` has a tarball for each of `images`,
/// matching its sum in `dir/images/SHA256SUMS` (errors name the file and its expected
/// sha256). import-images.sh checks them again where it runs.
pub fn check(dir: &Path, images: &[String]) -> Result<(), ImageError> {
    let sums_path = dir.join(IMAGES_DIR).join(IMAGE_SUMS);
    let text = std::fs::read_to_string(&sums_path).map_err(|e| {
        artifact(
            &sums_path,
            format!(
                "cannot read the image tarballs' sums ({e}); the nodes need {}",
                images.join(", ")
            ),
        )
    })?;
    let sums = parse_release_sums(&text);
    for image in images {
        let name = tarball_name(image);
        let path = dir.join(IMAGES_DIR).join(&name);
        let Some((_, want)) = sums.iter().find(|(n, _)| *n == name) else {
            return Err(artifact(
                &sums_path,
                format!("lists no {name} (the image {image})"),
            ));
        };
        if !path.is_file() {
            return Err(artifact(
                &path,
                format!("missing: the image {image} (expected sha256 {want})"),
            ));
        }
        let got = sha256_file(&path)?;
        if got != *want {
            return Err(artifact(
                &path,
                format!("the image {image}: sha256 {got}, expected {want} (from {IMAGE_SUMS})"),
            ));
        }
    }
    Ok(())
}

/// Imports `images` from `dir/images/` into containerd's `k8s.io` namespace in `rootfs`:
/// the tarballs staged in the chroot, `images/import-images.sh` run there by the image's
/// own containerd, in a private mount namespace that gives it /proc and a tmpfs /run (gone
/// when the step ends), the staged tarballs removed after.
/// For k3s (`k3s`), the checked tarballs go to k3s's airgap images dir instead: k3s's own
/// containerd imports them when it starts.
pub fn import(rootfs: &Path, dir: &Path, images: &[String], k3s: bool) -> Result<(), ImageError> {
    let step = "pre-pulling images (images/import-images.sh)";
    if images.is_empty() {
        return Ok(());
    }
    check(dir, images)?;
    let stage = rootfs.join(STAGE);
    remove_tree(&stage)?;
    std::fs::create_dir_all(&stage).map_err(io_err(step, &stage))?;
    let mut names = vec![IMAGE_SUMS.to_string()];
    names.extend(images.iter().map(|i| tarball_name(i)));
    for name in &names {
        run(
            step,
            Command::new("cp")
                .arg("--reflink=auto")
                .arg(dir.join(IMAGES_DIR).join(name))
                .arg(stage.join(name)),
        )?;
    }
    let script = rootfs.join("tmp/import-images.sh");
    std::fs::write(&script, crate::render::images::IMPORT_IMAGES_SH)
        .map_err(io_err(step, &script))?;
    let root = rootfs.display().to_string();
    let result = run(
        step,
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .args(["/bin/sh", "-c"])
            .arg(
                "set -e; r=$1; shift; mount -t proc proc \"$r/proc\"; \
                 mount -t tmpfs tmpfs \"$r/run\"; \
                 exec chroot \"$r\" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                 /bin/bash /tmp/import-images.sh \"$@\"",
            )
            .arg("import-images")
            .arg(&root)
            .args(k3s.then_some("--k3s"))
            .arg(format!("/{STAGE}"))
            .args(images),
    );
    remove_tree(&stage)?;
    std::fs::remove_file(&script).map_err(io_err(step, &script))?;
    result.map(drop)
}

/// How the build host pulls images: which containerd and where its registry hosts come
/// from. The default is the host's `ctr` and containerd, and the registries as the image
/// names say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Puller {
    /// containerd's `ctr` (default: `ctr` on PATH).
    pub ctr: PathBuf,
    /// containerd's socket (default: ctr's own, /run/containerd/containerd.sock).
    pub address: Option<PathBuf>,
    /// `--registry-hosts DIR`: registry hosts in containerd's hosts.toml layout
    /// (`DIR/<registry>/hosts.toml`), passed as `ctr --hosts-dir`: a local mirror, a
    /// plain-HTTP registry, a private CA.
    pub hosts_dir: Option<PathBuf>,
}

impl Default for Puller {
    fn default() -> Self {
        Self {
            ctr: PathBuf::from("ctr"),
            address: None,
            hosts_dir: None,
        }
    }
}

/// The containerd namespace the host's pulls go to (apart from the host's own images).
pub const FETCH_NAMESPACE: &str = "muster-fetch";

/// `muster artifacts fetch`'s part: the pinned add-on manifests and charts (each checked
/// against its sha256) into `dir/addons/`, then every image the nodes need pulled and
/// exported into `dir/images/` ([`pull_images`]): the spec's and the manifests' images and
/// `listed` (what rendering the add-ons showed: charts' and user files' images). Returns
/// the files written, relative to `dir`.
pub fn fetch(
    cluster: &model::Cluster,
    dir: &Path,
    puller: &Puller,
    listed: &[String],
) -> Result<Vec<String>, ImageError> {
    let needs = needs(cluster)?;
    let mut names = fetch_addons(&needs, dir)?;
    let images = with_listed(resolve(&needs, dir)?, listed);
    names.extend(pull_images(dir, &images, puller)?);
    Ok(names)
}

/// The pinned add-on manifests and charts of `needs` downloaded into `dir/addons/`, each
/// checked against its pinned sha256 (a mismatch names the file, the URL and both sums).
/// Returns the files written, relative to `dir`.
pub fn fetch_addons(needs: &Needs, dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    for m in needs.manifests.iter().chain(&needs.charts) {
        let rel = format!("{MANIFESTS_DIR}/{}", manifest_name(m));
        let path = dir.join(&rel);
        super::artifacts::download(&m.url, &path)?;
        let got = super::files::sha256_file(&path)?;
        if got != m.sha256 {
            return Err(artifact(
                &path,
                format!(
                    "sha256 {got}, expected {} (the pinned {} {} from {})",
                    m.sha256, m.name, m.version, m.url
                ),
            ));
        }
        names.push(rel);
    }
    Ok(names)
}

/// `images` with `listed` added, sorted, each once.
pub fn with_listed(mut images: Vec<String>, listed: &[String]) -> Vec<String> {
    images.extend(listed.iter().cloned());
    images.sort();
    images.dedup();
    images
}

/// `images` pulled by the host's containerd (`ctr images pull`, in [`FETCH_NAMESPACE`])
/// and exported (`ctr images export`) into `dir/images/`, one tarball each, with
/// `dir/images/SHA256SUMS`: an `--artifacts DIR` import-images.sh accepts. An image no
/// registry has fails naming it. Returns the files written, relative to `dir`.
pub fn pull_images(
    dir: &Path,
    images: &[String],
    puller: &Puller,
) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    if images.is_empty() {
        return Ok(names);
    }
    let step = "pulling images (ctr)";
    let images_dir = dir.join(IMAGES_DIR);
    std::fs::create_dir_all(&images_dir).map_err(io_err(step, &images_dir))?;
    let ctr = |args: &[&str]| {
        let mut c = Command::new(&puller.ctr);
        if let Some(a) = &puller.address {
            c.arg("--address").arg(a);
        }
        c.args(["--namespace", FETCH_NAMESPACE]).args(args);
        c
    };
    run(step, &mut ctr(&["version"])).map_err(|e| ImageError::Artifact {
        file: images_dir.clone(),
        problem: format!(
            "the images are pulled with containerd's `ctr`, which needs a running containerd \
             on this machine (apt install containerd): {e}"
        ),
    })?;
    let mut sums = Vec::new();
    for image in images {
        let name = tarball_name(image);
        let tar = images_dir.join(&name);
        let mut pull = ctr(&["images", "pull", "--platform", "linux/amd64"]);
        if let Some(h) = &puller.hosts_dir {
            pull.arg("--hosts-dir").arg(h);
        }
        run(step, pull.arg(image)).map_err(|e| ImageError::Artifact {
            file: tar.clone(),
            problem: pull_failure(image, &e.to_string()),
        })?;
        let tar_text = tar.display().to_string();
        run(
            step,
            &mut ctr(&[
                "images",
                "export",
                "--platform",
                "linux/amd64",
                &tar_text,
                image,
            ]),
        )?;
        sums.push((name.clone(), sha256_file(&tar)?));
        names.push(format!("{IMAGES_DIR}/{name}"));
    }
    let sums_path = images_dir.join(IMAGE_SUMS);
    super::files::atomic_write(&sums_path, super::files::sums_text(&sums).as_bytes())?;
    names.push(format!("{IMAGES_DIR}/{IMAGE_SUMS}"));
    Ok(names)
}

/// What a failed `ctr images pull` of `image` means, in the words of import-images.sh: a
/// digest-pinned image (`name@sha256:…`, `name:tag@sha256:…`) whose bytes do not hash to
/// its digest was served other content (containerd checks every blob it fetches).
fn pull_failure(image: &str, error: &str) -> String {
    let mismatch = ["unexpected commit digest", "digest mismatch"]
        .iter()
        .any(|m| error.to_lowercase().contains(m));
    if image.contains("@sha256:") && mismatch {
        format!(
            "the image {image} does not match its pinned digest (the registry served other content): {error}"
        )
    } else {
        format!("pulling the image {image} failed: {error}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::addons::tests::example;

    #[test]
    fn a_pinned_image_served_other_content_is_named_as_such() {
        let pinned = format!("registry.k8s.io/pause:3.10@sha256:{}", "a".repeat(64));
        let e = "ctr: failed commit on ref \"manifest-sha256:aa\": unexpected commit digest sha256:bb, expected sha256:aa: failed precondition";
        assert!(
            pull_failure(&pinned, e).starts_with(&format!(
                "the image {pinned} does not match its pinned digest"
            )),
            "{}",
            pull_failure(&pinned, e)
        );
        let nf = "ctr: registry.k8s.io/pause:3.10: not found";
        assert_eq!(
            pull_failure(&pinned, nf),
            format!("pulling the image {pinned} failed: {nf}")
        );
        assert!(pull_failure("registry.k8s.io/pause:3.10", e).starts_with("pulling the image"));
    }

    #[test]
    fn tarball_names_follow_the_script() {
        assert_eq!(
            tarball_name("registry.k8s.io/coredns/coredns:v1.11.3"),
            "registry.k8s.io_coredns_coredns_v1.11.3.tar"
        );
        assert!(
            crate::render::images::IMPORT_IMAGES_SH.contains("tr '/:@' '___'"),
            "import-images.sh names tarballs the same way"
        );
    }

    #[test]
    fn manifests_and_tarballs_are_checked_naming_file_and_sum() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let text = "spec:\n  containers:\n  - name: cni\n    image: ghcr.io/x/cni:v1\n";
        std::fs::create_dir_all(dir.join(MANIFESTS_DIR)).unwrap();
        let pin = PinnedManifest {
            name: "x".into(),
            version: "v1".into(),
            url: "https://example.invalid/x.yaml".into(),
            sha256: "0000000000000000000000000000000000000000000000000000000000000000".into(),
        };
        let needs = Needs {
            images: vec!["registry.k8s.io/pause:3.10".into()],
            manifests: vec![pin.clone()],
            charts: Vec::new(),
        };
        let err = resolve(&needs, dir).unwrap_err().to_string();
        assert!(err.contains("x-v1.yaml: missing") && err.contains("expected sha256 0000"));
        std::fs::write(dir.join(MANIFESTS_DIR).join("x-v1.yaml"), text).unwrap();
        let err = resolve(&needs, dir).unwrap_err().to_string();
        assert!(err.contains("expected 0000"), "{err}");
        let sum = sha256_file(&dir.join(MANIFESTS_DIR).join("x-v1.yaml")).unwrap();
        let needs = Needs {
            manifests: vec![PinnedManifest {
                sha256: sum.into(),
                ..pin
            }],
            ..needs
        };
        let images = resolve(&needs, dir).unwrap();
        assert_eq!(images, ["ghcr.io/x/cni:v1", "registry.k8s.io/pause:3.10"]);

        let err = check(dir, &images).unwrap_err().to_string();
        assert!(err.contains("images/SHA256SUMS"), "{err}");
        std::fs::create_dir_all(dir.join(IMAGES_DIR)).unwrap();
        let tar = dir.join(IMAGES_DIR).join("registry.k8s.io_pause_3.10.tar");
        std::fs::write(&tar, b"pause").unwrap();
        let good = sha256_file(&tar).unwrap();
        std::fs::write(
            dir.join(IMAGES_DIR).join(IMAGE_SUMS),
            format!(
                "{good}  registry.k8s.io_pause_3.10.tar\n{}  ghcr.io_x_cni_v1.tar\n",
                "b".repeat(64)
            ),
        )
        .unwrap();
        let err = check(dir, &images).unwrap_err().to_string();
        assert!(
            err.contains(
                "ghcr.io_x_cni_v1.tar: missing: the image ghcr.io/x/cni:v1 (expected sha256 bbbb"
            ),
            "{err}"
        );
        std::fs::write(&tar, b"tampered").unwrap();
        let err = check(dir, &images[1..]).unwrap_err().to_string();
        assert!(err.contains(&format!("expected {good}")), "{err}");
    }

    /// kubeadm's images at version `v` as a test spells them out (not sorted): the four
    /// control-plane images, CoreDNS, pause and, with a stacked etcd, etcd.
    pub(crate) fn kubeadm_images(
        v: &str,
        etcd: Option<&str>,
        coredns: &str,
        pause: &str,
    ) -> Vec<String> {
        let mut l: Vec<String> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-proxy",
            "kube-scheduler",
        ]
        .iter()
        .map(|c| format!("registry.k8s.io/{c}:{v}"))
        .collect();
        l.push(format!("registry.k8s.io/coredns/coredns:{coredns}"));
        l.push(format!("registry.k8s.io/pause:{pause}"));
        l.extend(etcd.map(|e| format!("registry.k8s.io/etcd:{e}")));
        l
    }

    pub(crate) const FLANNEL: &[&str] = &[
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
        "ghcr.io/flannel-io/flannel:v0.28.9",
    ];
    pub(crate) const METALLB: &[&str] = &[
        "quay.io/metallb/controller:v0.15.3",
        "quay.io/metallb/speaker:v0.15.3",
    ];
    pub(crate) const INGRESS_NGINX: &[&str] = &[
        "registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1",
        "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.9@sha256:01038e7de14b78d702d2849c3aad72fd25903c4765af63cf16aa3398f5d5f2dd",
    ];
    /// longhorn's manager names the images it starts in flags and env values, not in
    /// `image:` fields: they are needed all the same.
    pub(crate) const LONGHORN: &[&str] = &[
        "docker.io/longhornio/backing-image-manager:v1.12.1",
        "docker.io/longhornio/csi-attacher:v4.12.0",
        "docker.io/longhornio/csi-node-driver-registrar:v2.17.0",
        "docker.io/longhornio/csi-provisioner:v5.3.0",
        "docker.io/longhornio/csi-resizer:v2.2.1",
        "docker.io/longhornio/csi-snapshotter:v8.6.0",
        "docker.io/longhornio/livenessprobe:v2.19.0",
        "docker.io/longhornio/longhorn-engine:v1.12.1",
        "docker.io/longhornio/longhorn-instance-manager:v1.12.1",
        "docker.io/longhornio/longhorn-manager:v1.12.1",
        "docker.io/longhornio/longhorn-share-manager:v1.12.1",
        "docker.io/longhornio/longhorn-ui:v1.12.1",
        "docker.io/longhornio/support-bundle-kit:v0.0.92",
    ];

    /// What each example's nodes pull, exactly (issue 13: the image holds what the spec's
    /// nodes need and nothing else), spelled out per example: muster's own images, the
    /// pinned manifests, and every image in the end (the manifests' images read from the
    /// real upstream bytes in tests/fixtures/artifacts, checked against their pins).
    #[test]
    fn every_example_needs_exactly_its_images() {
        let kubeadm = kubeadm_images;
        let kube_vip = "ghcr.io/kube-vip/kube-vip:v0.8.9".to_string();
        let with = |mut l: Vec<String>, extra: &[&String]| {
            l.extend(extra.iter().map(|s| s.to_string()));
            l.sort();
            l
        };
        let all = |own: &[String], addons: &[&[&str]]| {
            let mut l = own.to_vec();
            l.extend(addons.iter().flat_map(|a| a.iter().map(|s| s.to_string())));
            l.sort();
            l
        };
        let k131 = kubeadm("v1.31.4", Some("3.5.15-0"), "v1.11.3", "3.10");
        type Case<'a> = (&'a str, Vec<String>, Vec<&'a str>, Vec<&'a [&'a str]>);
        let cases: Vec<Case> = vec![
            (
                "default.yaml",
                with(k131.clone(), &[&kube_vip]),
                vec!["flannel"],
                vec![FLANNEL],
            ),
            // cilium has no pinned manifest (the user brings it): nothing of it pre-pulled.
            (
                "seed-000-kubeadm-kube-vip.yaml",
                with(k131, &[&kube_vip]),
                vec!["longhorn", "ingress-nginx"],
                vec![LONGHORN, INGRESS_NGINX],
            ),
            ("seed-001-k3s-haproxy-proxmox.yaml", vec![], vec![], vec![]),
            (
                "seed-002-k3s-nginx-mariadb.yaml",
                vec![],
                vec!["metallb"],
                vec![METALLB],
            ),
            (
                "seed-003-k3s-keepalived.yaml",
                vec![],
                vec!["metallb", "ingress-nginx"],
                vec![METALLB, INGRESS_NGINX],
            ),
            (
                "seed-004-kubeadm-external-etcd.yaml",
                with(kubeadm("v1.30.2", None, "v1.11.1", "3.9"), &[]),
                vec!["flannel"],
                vec![FLANNEL],
            ),
            (
                "seed-004-kubeadm-haproxy.yaml",
                with(kubeadm("v1.30.2", Some("3.5.12-0"), "v1.11.1", "3.9"), &[]),
                vec!["flannel"],
                vec![FLANNEL],
            ),
        ];
        let dir = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/artifacts");
        let on_disk = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .and_then(|x| x.to_str())
                    == Some("yaml")
            })
            .count();
        assert_eq!(on_disk, cases.len(), "every example spec has its case here");
        for (name, images, manifests, addon_images) in cases {
            let n = needs(&example(name)).unwrap();
            assert_eq!(n.images, images, "{name}");
            let got: Vec<_> = n.manifests.iter().map(|m| m.name.as_ref()).collect();
            assert_eq!(got, manifests, "{name}");
            assert_eq!(
                resolve(&n, &fixtures).unwrap(),
                all(&images, &addon_images),
                "{name}: every image"
            );
        }
    }
}
