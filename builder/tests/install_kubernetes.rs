//! The image's Kubernetes install path for real, as `muster image build` runs it
//! (`muster_build::image::kubernetes::install`: `images/install-kubernetes.sh` in a chroot),
//! in a copy of the cached Debian 12 test root (`scripts/make-test-rootfs.sh`). Upstream is
//! unreachable here, so the test builds what upstream serves, with stand-ins inside:
//! - a flat apt repository with pkgs.k8s.io's layout (`apt-ftparchive`, signed with `gpg`
//!   by a key made in the test) holding kubeadm, kubelet, kubectl, cri-tools and
//!   kubernetes-cni, served over HTTP from a thread of the test;
//! - a "GitHub release" directory with a stand-in `k3s`, an airgap tarball and a real
//!   `sha256sum-amd64.txt`.
//!
//! The only overrides are the source URL and the key fingerprint (`Source::Override`, as
//! the hidden `--source-override` passes them); `--artifacts` runs unchanged. Broken cases
//! (wrong signature, unpinned key, wrong sum, missing version, missing file) must fail with
//! their own message. Needs root, `apt-ftparchive` (apt-utils), gpg, zstd and dpkg-deb
//! (`scripts/install-test-deps.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::artifacts::{apt_repo, gpg_key, oci_archive, serve};
use common::{repo, show};

use muster_build::image::kubernetes::{self, Source};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEFAULT_ROOTFS: &str = "/var/cache/muster-test/bookworm-rootfs";

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}\n{}", show(&o));
    o
}

/// A copy of the cached test root (built on first use by scripts/make-test-rootfs.sh).
fn root_copy(scratch: &Path) -> PathBuf {
    let cached = std::env::var_os("MUSTER_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS));
    if !cached.join(".muster-rootfs-ready").exists() {
        sh(Command::new("bash")
            .arg(repo().join("scripts/make-test-rootfs.sh"))
            .arg(&cached));
    }
    let root = scratch.join("root");
    sh(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root));
    root
}

fn spec(name: &str) -> model::Cluster {
    muster_build::spec_source::load(Some(&repo().join("examples").join(name)))
        .unwrap()
        .cluster
}

fn chroot_out(root: &Path, args: &[&str]) -> String {
    let o = sh(Command::new("chroot").arg(root).args(args).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn expect_err(r: Result<(), muster_build::image::ImageError>, want: &str) -> String {
    let err = r.expect_err("must fail").to_string();
    assert!(err.contains(want), "want `{want}` in:\n{err}");
    err
}

fn require_root() {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "the install-path test needs root (chroot, dpkg)"
    );
}

#[test]
fn kubeadm_from_a_signed_apt_repository_and_its_broken_cases() {
    require_root();
    let scratch = tempfile::Builder::new()
        .prefix("install-k8s")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let s = scratch.path();
    let cluster = spec("default.yaml");
    let version = cluster.distribution.version.to_string();
    let plain = version.trim_start_matches('v');
    assert_eq!(
        plain, "1.31.4",
        "default.yaml's version moved: update the test"
    );

    let pinned = s.join("gnupg-pinned");
    let fpr = gpg_key(&pinned, "pinned");
    let other = s.join("gnupg-other");
    let other_fpr = gpg_key(&other, "other");
    let www = s.join("www");
    apt_repo(&www.join("good"), plain, &pinned, &pinned);
    apt_repo(&www.join("badsig"), plain, &other, &pinned);
    apt_repo(&www.join("older"), "1.31.3", &pinned, &pinned);
    apt_repo(&www.join("badsum"), plain, &pinned, &pinned);
    // A package replaced after the index was signed.
    let deb = www.join(format!("badsum/amd64/kubelet_{plain}-1.1_amd64.deb"));
    let mut bytes = std::fs::read(&deb).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(b"tampered");
    std::fs::write(&deb, bytes).unwrap();
    let base = serve(www.clone());
    let root = root_copy(s);
    let over = |repo: &str, key: &str| Source::Override {
        url: format!("{base}/{repo}/"),
        key_fingerprint: Some(key.to_string()),
    };

    // Broken cases first: each fails with its own message and leaves no source behind.
    expect_err(
        kubernetes::install(&root, &cluster, &over("badsig", &fpr)),
        "wrong signature",
    );
    expect_err(
        kubernetes::install(&root, &cluster, &over("good", &other_fpr)),
        &format!("but the pinned key is {other_fpr}"),
    );
    expect_err(
        kubernetes::install(&root, &cluster, &over("older", &fpr)),
        "no kubeadm 1.31.4",
    );
    expect_err(
        kubernetes::install(&root, &cluster, &over("badsum", &fpr)),
        "does not match the sha256 its signed Packages index lists",
    );
    // The upstream key is pinned: the test repository is refused without the override's key.
    let artifacts = s.join("artifacts");
    sh(Command::new("cp")
        .arg("-a")
        .arg(www.join("good"))
        .arg(&artifacts));
    let err = expect_err(
        kubernetes::install(&root, &cluster, &Source::Artifacts(artifacts.clone())),
        kubernetes::K8S_KEY_FINGERPRINT,
    );
    assert!(err.contains("refusing the repository"), "{err}");
    let incomplete = s.join("incomplete");
    std::fs::create_dir_all(&incomplete).unwrap();
    std::fs::copy(
        artifacts.join("Release.key"),
        incomplete.join("Release.key"),
    )
    .unwrap();
    expect_err(
        kubernetes::install(&root, &cluster, &Source::Artifacts(incomplete)),
        "Release: missing",
    );
    assert!(!root.join("etc/apt/sources.list.d/kubernetes.list").exists());
    assert!(!root.join("usr/bin/kubeadm").exists());

    // The good repository, through apt.
    kubernetes::install(&root, &cluster, &over("good", &fpr)).unwrap();
    let standin = muster_lab::standins::target_binary("kubeadm-standin").unwrap();
    assert_eq!(
        std::fs::read(root.join("usr/bin/kubeadm")).unwrap(),
        std::fs::read(standin).unwrap(),
        "/usr/bin/kubeadm is the package's (the stand-in)"
    );
    assert_installed(&root, plain);
    assert!(chroot_out(&root, &["kubelet"]).contains(&format!("v{plain}")));
    // A test source does not stay configured in the image; nothing is left in /tmp.
    assert!(!root.join("etc/apt/sources.list.d/kubernetes.list").exists());
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    // `--artifacts` as a plain directory of .deb files (no index): the same versions picked.
    chroot_out(
        &root,
        &["apt-mark", "unhold", "kubeadm", "kubelet", "kubectl"],
    );
    chroot_out(
        &root,
        &[
            "dpkg",
            "--purge",
            "kubeadm",
            "kubelet",
            "kubectl",
            "cri-tools",
            "kubernetes-cni",
        ],
    );
    let debs_of = |repo: &str, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(www.join(repo).join("amd64")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    };
    let older_debs = s.join("older-debs");
    debs_of("older", &older_debs);
    expect_err(
        kubernetes::install(&root, &cluster, &Source::Artifacts(older_debs)),
        "no .deb of kubeadm 1.31.4",
    );
    let debs = s.join("debs");
    debs_of("good", &debs);
    kubernetes::install(&root, &cluster, &Source::Artifacts(debs)).unwrap();
    assert_installed(&root, plain);
}

/// The five packages at the versions the install path picks, the first three held: what
/// `kubernetes::installs` (the image report's list) says it installs.
fn assert_installed(root: &Path, plain: &str) {
    let held = chroot_out(root, &["apt-mark", "showhold"]);
    let said = kubernetes::installs(&spec("default.yaml"));
    for line in &said {
        let p = line.split(' ').next().unwrap();
        let is_held = held.lines().any(|l| l == p);
        assert_eq!(is_held, line.ends_with("(held)"), "{p} held?\n{held}");
        if let Some(v) = line.split(' ').nth(1).filter(|v| *v != "(held)") {
            assert_eq!(v, plain, "{line}");
        }
    }
    let names: Vec<&str> = said.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "kubeadm",
            "kubelet",
            "kubectl",
            "cri-tools",
            "kubernetes-cni"
        ]
    );
    let status = chroot_out(
        root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version}\\n",
            "kubeadm",
            "kubelet",
            "kubectl",
            "cri-tools",
            "kubernetes-cni",
        ],
    );
    for want in [
        format!("kubeadm {plain}-1.1"),
        format!("kubelet {plain}-1.1"),
        format!("kubectl {plain}-1.1"),
        "cri-tools 1.31.1-1.1".into(),
        "kubernetes-cni 1.5.1-1.1".into(),
    ] {
        assert!(status.lines().any(|l| l == want), "{want} in\n{status}");
    }
}

/// `k3s` + airgap tarball + a real `sha256sum-amd64.txt` in `dir`.
fn k3s_release(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let k3s = muster_lab::standins::target_binary("k3s-standin").unwrap();
    std::fs::copy(k3s, dir.join("k3s")).unwrap();
    let images = dir.join(".images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("STAND-IN"), "no real images\n").unwrap();
    sh(Command::new("tar")
        .arg("--zstd")
        .arg("-cf")
        .arg(dir.join(kubernetes::K3S_AIRGAP))
        .arg("-C")
        .arg(&images)
        .arg("."));
    std::fs::remove_dir_all(&images).unwrap();
    let sums = sh(Command::new("sha256sum")
        .args(["k3s", kubernetes::K3S_AIRGAP])
        .current_dir(dir));
    std::fs::write(dir.join(kubernetes::K3S_SUMS), &sums.stdout).unwrap();
}

/// The sha256 a release dir's `sha256sum-amd64.txt` lists for the airgap tarball.
fn airgap_sum(release: &Path) -> String {
    let sums = std::fs::read_to_string(release.join(kubernetes::K3S_SUMS)).unwrap();
    sums.lines()
        .find(|l| l.ends_with(kubernetes::K3S_AIRGAP))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// Appends bytes to `file`: a download that no longer matches its sum.
fn tamper(file: &Path) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .unwrap()
        .write_all(b"tampered")
        .unwrap();
}

#[test]
fn k3s_from_its_release_files_with_their_sums() {
    require_root();
    let scratch = tempfile::Builder::new()
        .prefix("install-k3s")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let s = scratch.path();
    let cluster = spec("seed-002-k3s-nginx-mariadb.yaml");
    let version = cluster.distribution.version.to_string();
    let www = s.join("www");
    let good = www.join("good").join(&version);
    k3s_release(&good);
    let bad = www.join("bad").join(&version);
    k3s_release(&bad);
    let airgap = bad.join(kubernetes::K3S_AIRGAP);
    let want = airgap_sum(&bad);
    tamper(&airgap);
    let base = serve(www.clone());
    let root = root_copy(s);

    // Wrong sum: refused on the host (--artifacts) and in the chroot (a URL), naming the
    // file and the sha256 it should have.
    let err = expect_err(
        kubernetes::install(&root, &cluster, &Source::Artifacts(bad.clone())),
        &format!("expected {want}"),
    );
    assert!(err.contains(kubernetes::K3S_AIRGAP), "{err}");
    let url = |which: &str| Source::Override {
        url: format!("{base}/{which}/{}", version.replace('+', "%2B")),
        key_fingerprint: None,
    };
    let err = expect_err(
        kubernetes::install(&root, &cluster, &url("bad")),
        &format!("expected {want}"),
    );
    assert!(err.contains("refusing it"), "{err}");
    // A missing file.
    std::fs::remove_file(&airgap).unwrap();
    expect_err(
        kubernetes::install(&root, &cluster, &Source::Artifacts(bad.clone())),
        &format!("missing (expected sha256 {want}"),
    );
    // A missing version (nothing published under it).
    let missing = Source::Override {
        url: format!("{base}/good/v1.31.99%2Bk3s1"),
        key_fingerprint: None,
    };
    expect_err(
        kubernetes::install(&root, &cluster, &missing),
        kubernetes::K3S_SUMS,
    );
    assert!(!root.join("usr/local/bin/k3s").exists());

    // From the release URL, then from --artifacts: installed where k3s's airgap docs say,
    // as `kubernetes::installs` (the image report's list) says.
    let said = kubernetes::installs(&cluster);
    assert_eq!(said.len(), 2, "{said:?}");
    for source in [url("good"), Source::Artifacts(good.clone())] {
        kubernetes::install(&root, &cluster, &source).unwrap();
        for line in &said {
            let path = line.split(' ').next().unwrap().trim_start_matches('/');
            assert!(root.join(path).is_file(), "{line}: not installed");
        }
        assert_eq!(
            std::fs::read(root.join("usr/local/bin/k3s")).unwrap(),
            std::fs::read(good.join("k3s")).unwrap()
        );
        let img = root
            .join("var/lib/rancher/k3s/agent/images")
            .join(kubernetes::K3S_AIRGAP);
        assert_eq!(
            std::fs::read(img).unwrap(),
            std::fs::read(good.join(kubernetes::K3S_AIRGAP)).unwrap()
        );
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        std::fs::remove_file(root.join("usr/local/bin/k3s")).unwrap();
    }
}

/// `script` run by `/bin/sh` (`$1` is `root`, then `args`) in a private mount namespace
/// that gives `root` a /proc and a tmpfs /run, as the build gives its chroot for
/// import-images.sh; both are gone when it ends.
fn in_image(root: &Path, script: &str, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(format!(
            "set -e; r=$1; shift; mount -t proc proc \"$r/proc\"; mount -t tmpfs tmpfs \"$r/run\"; {script}"
        ))
        .arg("in-image")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// The images in containerd's k8s.io namespace of `root`, listed by the real `ctr` against
/// the image's own containerd (started for the purpose in [`in_image`]).
fn ctr_images(root: &Path) -> Vec<String> {
    let o = in_image(
        root,
        "chroot \"$r\" containerd --address /run/t.sock >/dev/null 2>&1 & \
         for i in $(seq 100); do chroot \"$r\" ctr --address /run/t.sock version >/dev/null 2>&1 && break; sleep 0.1; done; \
         chroot \"$r\" ctr --address /run/t.sock -n k8s.io images ls -q; kill $!; wait $! || true",
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    listed(&o)
}

/// The image names in `ctr images ls -q` output, sorted (the digests' own entries left out).
fn listed(o: &Output) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("sha256:"))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// A containerd of the test's own on this host (Debian's containerd 1.6 and `ctr`, the
/// test root's binaries copied to `bin`), its socket, root and state under `dir`; killed
/// when dropped.
struct Containerd {
    child: std::process::Child,
    bin: PathBuf,
    sock: PathBuf,
}

impl Containerd {
    fn start(bin: &Path, dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("containerd.sock");
        let child = Command::new(bin.join("containerd"))
            .arg("--address")
            .arg(&sock)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd {
            child,
            bin: bin.to_path_buf(),
            sock,
        };
        let answered = (0..100).any(|_| {
            let up = c
                .ctr()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if !up {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            up
        });
        assert!(
            answered,
            "the test's containerd did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap()
        );
        c
    }

    /// `ctr --address SOCK`.
    fn ctr(&self) -> Command {
        let mut c = Command::new(self.bin.join("ctr"));
        c.arg("--address").arg(&self.sock);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 13's pre-pull: the images a kubeadm + kube-vip node needs, as stand-in OCI
/// archives in `--artifacts DIR/images/`, imported by `image::prepull::import` (what the
/// build runs: images/import-images.sh with the image's real containerd and `ctr`) after
/// provision.sh, which must have left containerd with `SystemdCgroup = true`.
#[test]
fn images_are_prepulled_into_containerd_with_the_real_ctr() {
    use muster_build::image::{customise, payload, prepull};
    require_root();
    let scratch = tempfile::Builder::new()
        .prefix("prepull")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let s = scratch.path();
    let root = root_copy(s);

    // provision.sh as the build runs it, with a payload holding just a unit to enable.
    let mut files = muster_build::render::FileSet::default();
    files.add(
        "etc/systemd/system/nodeagent.service",
        0o644,
        "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    );
    let tarball = s.join("payload.tar.gz");
    std::fs::write(&tarball, payload::pack(&files).unwrap()).unwrap();
    customise::provision(&root, &tarball).unwrap();
    let dump = chroot_out(&root, &["containerd", "config", "dump"]);
    assert!(
        dump.lines().any(|l| l.trim() == "SystemdCgroup = true"),
        "containerd config dump lacks SystemdCgroup = true:\n{dump}"
    );

    // seed 000: kubeadm + kube-vip; cilium is the user's file (not pre-pulled); longhorn and
    // ingress-nginx are pinned manifests whose images are pre-pulled too.
    let cluster = spec("seed-000-kubeadm-kube-vip.yaml");
    let needs = prepull::needs(&cluster).unwrap();
    assert_eq!(needs.manifests.len(), 2, "{:?}", needs.manifests);
    let artifacts = s.join("artifacts");
    let addons = artifacts.join(prepull::MANIFESTS_DIR);
    std::fs::create_dir_all(&addons).unwrap();
    for m in &needs.manifests {
        let name = prepull::manifest_name(m);
        std::fs::copy(
            Path::new(common::ADDON_ARTIFACTS)
                .join(prepull::MANIFESTS_DIR)
                .join(&name),
            addons.join(&name),
        )
        .unwrap();
    }
    let images = prepull::resolve(&needs, &artifacts).unwrap();
    assert!(
        images.iter().any(|i| i.contains("/pause:"))
            && images.iter().any(|i| i.contains("longhorn-manager"))
            && images
                .iter()
                .any(|i| i.contains("ingress-nginx/controller")),
        "{images:?}"
    );
    let dir = artifacts.join(prepull::IMAGES_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    for i in &images {
        oci_archive(i, &dir.join(prepull::tarball_name(i)), s);
    }
    let sums = sh(Command::new("sha256sum")
        .args(images.iter().map(|i| prepull::tarball_name(i)))
        .current_dir(&dir));
    std::fs::write(dir.join(prepull::IMAGE_SUMS), &sums.stdout).unwrap();

    // Broken cases first: a tampered tarball, a tarball holding another image, a missing
    // one; each names the file, and nothing is imported.
    let pause = images
        .iter()
        .find(|i| i.contains("/pause:"))
        .unwrap()
        .clone();
    let pause_tar = dir.join(prepull::tarball_name(&pause));
    let good = std::fs::read(&pause_tar).unwrap();
    let want = String::from_utf8_lossy(&sums.stdout)
        .lines()
        .find(|l| l.ends_with(&prepull::tarball_name(&pause)))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&pause_tar, b"tampered").unwrap();
    expect_err(
        prepull::import(&root, &artifacts, &images, false),
        &format!("the image {pause}: sha256 "),
    );
    std::fs::remove_file(&pause_tar).unwrap();
    expect_err(
        prepull::import(&root, &artifacts, &images, false),
        &format!("missing: the image {pause} (expected sha256 {want})"),
    );
    // Another image's archive under pause's name, with a matching sum: the script finds
    // the image missing in containerd after the import.
    let other = s.join("other.tar");
    oci_archive("registry.k8s.io/not-pause:1", &other, s);
    std::fs::copy(&other, &pause_tar).unwrap();
    let fake_sum = muster_build::image::files::sha256_file(&pause_tar).unwrap();
    let fixed = String::from_utf8_lossy(&sums.stdout).replace(&want, &fake_sum);
    std::fs::write(dir.join(prepull::IMAGE_SUMS), &fixed).unwrap();
    expect_err(
        prepull::import(&root, &artifacts, &images, false),
        &format!("did not hold the image {pause}"),
    );
    std::fs::write(&pause_tar, &good).unwrap();
    std::fs::write(dir.join(prepull::IMAGE_SUMS), &sums.stdout).unwrap();

    // The real import: every image in k8s.io, listed again by a fresh containerd.
    let t = std::time::Instant::now();
    prepull::import(&root, &artifacts, &images, false).unwrap();
    eprintln!("import of {} images: {:.1?}", images.len(), t.elapsed());
    let mut listed = ctr_images(&root);
    listed.retain(|i| i != "registry.k8s.io/not-pause:1");
    assert_eq!(listed, images);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert!(!root.join("run/muster-containerd").exists());

    // k3s: the same checked tarballs where k3s's own containerd imports them at start.
    prepull::import(&root, &artifacts, &images, true).unwrap();
    for i in &images {
        let name = prepull::tarball_name(i);
        assert_eq!(
            std::fs::read(root.join("var/lib/rancher/k3s/agent/images").join(&name)).unwrap(),
            std::fs::read(dir.join(&name)).unwrap()
        );
    }

    // Packer's form: the add-on images named by a pinned manifest (`--manifest FILE SHA`),
    // the script run in the target as the Packer build runs it.
    std::fs::remove_dir_all(root.join("var/lib/rancher/k3s/agent/images")).unwrap();
    let manifest = "spec:\n  containers:\n  - name: a\n    image: \"registry.k8s.io/pause:3.10\"\n";
    std::fs::write(root.join("tmp/m.yaml"), manifest).unwrap();
    let msum = muster_build::image::files::sha256_file(&root.join("tmp/m.yaml")).unwrap();
    sh(Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(root.join("tmp/arts")));
    std::fs::write(
        root.join("tmp/import-images.sh"),
        muster_build::render::images::IMPORT_IMAGES_SH,
    )
    .unwrap();
    let script = |sum: &str| {
        Command::new("chroot")
            .arg(&root)
            .args(["/bin/bash", "/tmp/import-images.sh", "--k3s", "--manifest"])
            .args(["/tmp/m.yaml", sum, "/tmp/arts"])
            .output()
            .unwrap()
    };
    let o = script(&"0".repeat(64));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("has sha256 {msum}, expected 0000")),
        "{}",
        show(&o)
    );
    let o = script(&msum);
    assert!(o.status.success(), "{}", show(&o));
    let k3s_images: Vec<_> = std::fs::read_dir(root.join("var/lib/rancher/k3s/agent/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(k3s_images, [prepull::tarball_name(&pause)]);
}

/// import-images.sh run in `root` as the build runs it: [`in_image`], chrooted, a clean
/// environment.
fn import_images_in(root: &Path, args: &[&str]) -> Output {
    std::fs::write(
        root.join("tmp/import-images.sh"),
        muster_build::render::images::IMPORT_IMAGES_SH,
    )
    .unwrap();
    in_image(
        root,
        "exec chroot \"$r\" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
         /bin/bash /tmp/import-images.sh \"$@\"",
        args,
    )
}

/// The packages dpkg has installed in `root`, one `name version` a line.
fn packages(root: &Path) -> String {
    chroot_out(
        root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev} ${Package} ${Version}\\n",
        ],
    )
}

/// Where `ref` is asked for on the registry: (repository path, tag or digest).
fn registry_path(image: &str) -> (String, String) {
    let (name, reference) = match image.split_once('@') {
        Some((n, d)) => (n.to_string(), d.to_string()),
        None => {
            let (n, t) = image.rsplit_once(':').unwrap();
            (n.to_string(), t.to_string())
        }
    };
    let name = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => n.to_string(),
        _ => name,
    };
    (name.split_once('/').unwrap().1.to_string(), reference)
}

/// Issue 13's online pre-pull, against a registry stand-in (common::registry: the OCI
/// distribution API's read side over plain HTTP) with the real containerd and `ctr`, for
/// images named by tag, by digest (`name@sha256:…`) and by both (`name:tag@sha256:…`):
/// - in the image (Packer's default, `import-images.sh --pull`): the image's own containerd
///   pulls through a hosts.toml mirror for registry.k8s.io and docker.io, from
///   /etc/containerd/certs.d, the list from `--list` (the payload's prepull-images) and the
///   line;
/// - on the build host (`prepull::pull_images`, what `muster image build` and `muster
///   artifacts fetch` run without --artifacts): a private containerd pulls and exports
///   tarballs + SHA256SUMS that import-images.sh then checks and imports;
/// - k3s (`--pull --k3s`, `--hosts-dir`) in an image without containerd, as
///   install-kubernetes.sh makes a k3s image: Debian's containerd is installed from the
///   image's apt sources (here a signed repository served by the test holding the .debs
///   the test root was made from), pulls, and is purged again; the tarballs it exported
///   into k3s's images dir import with the real `ctr` into a fresh namespace;
/// - broken: a registry without one of the images, and one serving other content for a
///   pinned digest: both fail naming the image.
#[test]
fn images_are_pulled_from_a_registry_stand_in_with_the_real_ctr() {
    use common::registry;
    use muster_build::image::prepull;
    require_root();
    let scratch = tempfile::Builder::new()
        .prefix("pull")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let s = scratch.path();
    let root = root_copy(s);
    // The test root's containerd and ctr, for the test's own containerd on this host (the
    // k3s part takes them out of the root).
    let bin = s.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["containerd", "ctr"] {
        std::fs::copy(root.join("usr/bin").join(b), bin.join(b)).unwrap();
    }
    let tags = [
        "registry.k8s.io/pause:3.10",
        "registry.k8s.io/coredns/coredns:v1.11.3",
        "docker.io/longhornio/longhorn-manager:v1.12.1",
    ]
    .map(String::from);
    let reg = registry::start(&tags, &s.join("oci"));
    // By tag, by digest alone, by tag and digest.
    let mut images = vec![
        tags[0].clone(),
        format!("registry.k8s.io/coredns/coredns@{}", reg.digest(&tags[1])),
        reg.pinned(&tags[2]),
    ];
    images.sort();
    let upstreams = ["registry.k8s.io", "docker.io"];
    let missing = "registry.k8s.io/not-served:1";
    let forged = format!("registry.k8s.io/pause:3.10@sha256:{}", "0".repeat(64));

    // In the image, hosts from /etc/containerd/certs.d (where an image's mirrors live).
    reg.hosts_dir(&root.join("etc/containerd/certs.d"), &upstreams);
    std::fs::write(
        root.join("tmp/prepull-images"),
        format!("{}\n# a comment\n\n{}\n", images[0], images[1]),
    )
    .unwrap();
    let o = import_images_in(&root, &["--pull", missing, &images[2]]);
    assert!(!o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("error: pulling the image {missing} failed"))
            && err.contains("not found"),
        "{}",
        show(&o)
    );
    // A registry that answers a pinned digest with other bytes: containerd checks them.
    reg.serve_any_digest(true);
    let o = import_images_in(&root, &["--pull", &forged]);
    reg.serve_any_digest(false);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "error: the image {forged} does not match its pinned digest"
        )),
        "{}",
        show(&o)
    );
    let t = std::time::Instant::now();
    let o = import_images_in(
        &root,
        &["--pull", "--list", "/tmp/prepull-images", &images[2]],
    );
    assert!(o.status.success(), "{}", show(&o));
    common::measured(format_args!(
        "import-images.sh --pull of {} stand-in images from the registry stand-in: {:.1?}",
        images.len(),
        t.elapsed()
    ));
    assert_eq!(ctr_images(&root), images);
    // Each image's manifest came from the stand-in (there is no other registry here), by
    // tag or by the pinned digest.
    let requests = reg.requests.lock().unwrap().clone();
    for i in &images {
        let (path, reference) = registry_path(i);
        assert!(
            requests
                .iter()
                .any(|r| r.contains(&format!(" /v2/{path}/manifests/{reference}"))),
            "no manifest request for {i}: {requests:?}"
        );
    }
    assert!(!root.join("run/muster-containerd").exists());

    // On the build host: the test's containerd, the same stand-in through `--registry-hosts`.
    let host = Containerd::start(&bin, &s.join("host-containerd"));
    let puller = prepull::Puller {
        ctr: bin.join("ctr"),
        address: Some(host.sock.clone()),
        hosts_dir: Some(reg.hosts_dir(&s.join("hosts"), &upstreams)),
    };
    let artifacts = s.join("artifacts");
    let mut with_missing = images.clone();
    with_missing.push(missing.to_string());
    let err = prepull::pull_images(&artifacts, &with_missing, &puller)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("pulling the image {missing} failed")) && err.contains("not found"),
        "{err}"
    );
    reg.serve_any_digest(true);
    let err = prepull::pull_images(&artifacts, std::slice::from_ref(&forged), &puller);
    reg.serve_any_digest(false);
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the image {forged} does not match its pinned digest"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&artifacts).unwrap();
    let t = std::time::Instant::now();
    let fetched = prepull::pull_images(&artifacts, &images, &puller).unwrap();
    common::measured(format_args!(
        "prepull::pull_images of {} stand-in images from the registry stand-in (host containerd): {:.1?}",
        images.len(),
        t.elapsed()
    ));
    assert_eq!(fetched.len(), images.len() + 1, "{fetched:?}");
    prepull::check(&artifacts, &images).unwrap();
    // import-images.sh accepts the exported tarballs and their sums.
    std::fs::remove_dir_all(root.join("var/lib/containerd")).unwrap();
    prepull::import(&root, &artifacts, &images, false).unwrap();
    assert_eq!(ctr_images(&root), images);

    // k3s: an image without containerd (install-kubernetes.sh installs only k3s's files),
    // whose apt sources are a signed repository holding Debian's containerd and runc (the
    // .debs debootstrap fetched for the test root; the upstream mirror is not asked).
    chroot_out(&root, &["dpkg", "--purge", "containerd", "runc"]);
    let _ = std::fs::remove_dir_all(root.join("etc/containerd"));
    let _ = std::fs::remove_dir_all(root.join("var/lib/containerd"));
    assert!(!root.join("usr/bin/ctr").exists());
    let cache = std::env::var_os("MUSTER_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS))
        .parent()
        .unwrap()
        .join("debs");
    let repo = s.join("www/debian");
    std::fs::create_dir_all(repo.join("amd64")).unwrap();
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with("containerd_") || n.starts_with("runc_") {
            std::fs::copy(&p, repo.join("amd64").join(&n)).unwrap();
        }
    }
    assert_eq!(
        std::fs::read_dir(repo.join("amd64")).unwrap().count(),
        2,
        "containerd's and runc's .debs in {}",
        cache.display()
    );
    let gnupg = s.join("gnupg");
    gpg_key(&gnupg, "debian-standin");
    common::artifacts::flat_repo_index(&repo, &gnupg, &gnupg);
    let key = sh(Command::new("gpg")
        .arg("--homedir")
        .arg(&gnupg)
        .arg("--export"));
    std::fs::create_dir_all(root.join("etc/apt/keyrings")).unwrap();
    std::fs::write(
        root.join("etc/apt/keyrings/debian-standin.gpg"),
        &key.stdout,
    )
    .unwrap();
    std::fs::write(root.join("etc/apt/sources.list"), "").unwrap();
    for e in std::fs::read_dir(root.join("etc/apt/sources.list.d")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::write(
        root.join("etc/apt/sources.list.d/debian-standin.list"),
        format!(
            "deb [signed-by=/etc/apt/keyrings/debian-standin.gpg] {}/debian/ /\n",
            serve(s.join("www"))
        ),
    )
    .unwrap();
    let before = packages(&root);
    reg.hosts_dir(&root.join("tmp/hosts"), &upstreams);
    let t = std::time::Instant::now();
    let o = import_images_in(
        &root,
        &[
            "--pull",
            "--k3s",
            "--hosts-dir",
            "/tmp/hosts",
            "--list",
            "/tmp/prepull-images",
            &images[2],
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    common::measured(format_args!(
        "import-images.sh --pull --k3s of {} stand-in images, Debian's containerd installed and purged around it: {:.1?}",
        images.len(),
        t.elapsed()
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("removed the temporary packages: containerd runc"),
        "{}",
        show(&o)
    );
    // The image keeps only what a k3s node needs: the packages as before, no containerd,
    // no policy-rc.d, no pull root, no apt lists.
    assert_eq!(packages(&root), before);
    for gone in [
        "usr/bin/containerd",
        "usr/bin/ctr",
        "usr/sbin/runc",
        "usr/sbin/policy-rc.d",
        "var/tmp/muster-pull",
        "var/lib/containerd",
        "etc/containerd",
        "run/muster-containerd",
    ] {
        assert!(
            !root.join(gone).exists(),
            "{gone} left in the image: {}",
            String::from_utf8_lossy(&sh(Command::new("find").arg(root.join(gone))).stdout)
        );
    }
    assert_eq!(
        std::fs::read_dir(root.join("var/lib/apt/lists"))
            .unwrap()
            .count(),
        0
    );
    let k3s_dir = root.join("var/lib/rancher/k3s/agent/images");
    let mut k3s_images: Vec<_> = std::fs::read_dir(&k3s_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    k3s_images.sort();
    let mut want: Vec<_> = images.iter().map(|i| prepull::tarball_name(i)).collect();
    want.sort();
    assert_eq!(k3s_images, want);
    // What k3s's containerd does with them at its start: each imports with the real ctr
    // (into a fresh namespace) under its name.
    for tar in &k3s_images {
        let o = host
            .ctr()
            .args([
                "-n",
                "k3s-check",
                "images",
                "import",
                "--platform",
                "linux/amd64",
            ])
            .arg(k3s_dir.join(tar))
            .output()
            .unwrap();
        assert!(o.status.success(), "{tar}: {}", show(&o));
    }
    let o = host
        .ctr()
        .args(["-n", "k3s-check", "images", "ls", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(listed(&o), images);
}

/// `muster artifacts fetch` checks what it downloads before it keeps anything, with the
/// same served repositories and releases as the install tests:
/// - kubeadm (`artifacts::fetch_distribution`, the CLI's first part): Release.key must be
///   the pinned key, Release signed by it (Release.gpg, or InRelease alone), Packages the
///   one the signed Release lists, each .deb the one Packages lists, kubeadm at the spec's
///   version: each broken case fails with its own message;
/// - the CLI end to end for a k3s spec whose one add-on is a user's URL (no container
///   images, so no containerd is needed): the release files and the manifest land in
///   `--out` with the sums it prints; a tampered release or a wrong add-on sum fails naming
///   the file and the sha256 expected, and leaves neither `--out` nor a partial dir.
#[test]
fn artifacts_fetch_checks_the_repository_the_release_and_the_addons() {
    use muster_build::image::artifacts;
    let scratch = tempfile::Builder::new()
        .prefix("fetch")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let s = scratch.path();
    let cluster = spec("default.yaml");
    let plain = "1.31.4";
    assert_eq!(
        cluster.distribution.version.to_string(),
        format!("v{plain}")
    );
    let pinned = s.join("gnupg-pinned");
    let fpr = gpg_key(&pinned, "pinned");
    let other = s.join("gnupg-other");
    let other_fpr = gpg_key(&other, "other");
    let www = s.join("www");
    for (name, version, signer) in [
        ("good", plain, &pinned),
        ("inline", plain, &pinned),
        ("badsig", plain, &other),
        ("older", "1.31.3", &pinned),
        ("badindex", plain, &pinned),
        ("badsum", plain, &pinned),
    ] {
        apt_repo(&www.join(name), version, signer, &pinned);
    }
    std::fs::remove_file(www.join("inline/Release.gpg")).unwrap();
    // Packages changed after the Release was signed; a .deb replaced after Packages was.
    std::fs::OpenOptions::new()
        .append(true)
        .open(www.join("badindex/Packages"))
        .unwrap()
        .write_all(b"\nPackage: extra\nVersion: 1\nFilename: amd64/extra.deb\nSHA256: 00\n")
        .unwrap();
    let deb = www.join(format!("badsum/amd64/kubelet_{plain}-1.1_amd64.deb"));
    let mut bytes = std::fs::read(&deb).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(b"tampered");
    std::fs::write(&deb, bytes).unwrap();
    // A k3s release, good and tampered, and a user's add-on manifest.
    let k3s = spec("seed-003-k3s-keepalived.yaml");
    let version = k3s.distribution.version.to_string();
    k3s_release(&www.join("k3s-good").join(&version));
    k3s_release(&www.join("k3s-bad").join(&version));
    tamper(
        &www.join("k3s-bad")
            .join(&version)
            .join(kubernetes::K3S_AIRGAP),
    );
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello, namespace: default}\ndata: {a: b}\n";
    std::fs::write(www.join("hello.yaml"), manifest).unwrap();
    let base = serve(www.clone());

    let over = |repo: &str, key: &str| Source::Override {
        url: format!("{base}/{repo}/"),
        key_fingerprint: Some(key.to_string()),
    };
    let fetch = |source: &Source| {
        let d = tempfile::tempdir_in(s).unwrap();
        let r = artifacts::fetch_distribution(&cluster, d.path(), source);
        (d, r)
    };
    for (repo, key, want) in [
        ("badsig", &fpr, "wrong signature".to_string()),
        (
            "good",
            &other_fpr,
            format!("but the pinned key is {other_fpr}"),
        ),
        ("badindex", &fpr, "(from the signed Release)".to_string()),
        (
            "older",
            &fpr,
            format!("the repository has no kubeadm {plain}"),
        ),
        ("badsum", &fpr, "(from Packages)".to_string()),
    ] {
        let (_d, r) = fetch(&over(repo, key));
        let err = r.unwrap_err().to_string();
        assert!(err.contains(&want), "{repo}: {err}");
    }
    // The upstream key stays pinned without the override's fingerprint.
    let unpinned = Source::Override {
        url: format!("{base}/good/"),
        key_fingerprint: None,
    };
    let err = fetch(&unpinned).1.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "but the pinned key is {}",
            kubernetes::K8S_KEY_FINGERPRINT
        )),
        "{err}"
    );
    for repo in ["good", "inline"] {
        let (d, r) = fetch(&over(repo, &fpr));
        let names = r.unwrap();
        for want in [
            "Release.key".to_string(),
            "Packages".into(),
            format!("amd64/kubeadm_{plain}-1.1_amd64.deb"),
            "amd64/kubernetes-cni_1.5.1-1.1_amd64.deb".into(),
        ] {
            assert!(names.contains(&want), "{repo}: {want} in {names:?}");
            assert!(d.path().join(&want).is_file(), "{repo}: {want}");
        }
        assert_eq!(names.contains(&"Release.gpg".to_string()), repo == "good");
        // What was fetched is an --artifacts dir the image build accepts.
        kubernetes::check_artifacts(d.path(), &cluster).unwrap();
    }

    // The CLI end to end.
    let sum = muster_build::bake::payload::sha256_hex(manifest.as_bytes());
    let text =
        std::fs::read_to_string(repo().join("examples/seed-003-k3s-keepalived.yaml")).unwrap();
    let (head, rest) = text.split_once("  addons:\n").unwrap();
    let rest = &rest[rest.find("  topology:").unwrap()..];
    let with_sum = |sum: &str| {
        format!(
            "{head}  addons:\n    manifests: [{{name: hello, url: \"{base}/hello.yaml\", sha256: {sum}}}]\n{rest}"
        )
    };
    let spec_path = s.join("k3s.yaml");
    let release = |which: &str| format!("{base}/{which}/{}", version.replace('+', "%2B"));
    let run = |spec_text: &str, out: &Path, which: &str| {
        std::fs::write(&spec_path, spec_text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["artifacts", "fetch"])
            .arg(&spec_path)
            .arg("--out")
            .arg(out)
            .args(["--source-override", &release(which), "--json"])
            .output()
            .unwrap()
    };
    let out = s.join("fetched");
    let o = run(&with_sum(&sum), &out, "k3s-good");
    assert!(o.status.success(), "{}", show(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|a| a["name"].as_str().unwrap()).collect();
    for want in [kubernetes::K3S_SUMS, "k3s", kubernetes::K3S_AIRGAP] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let addon = names
        .iter()
        .find(|n| n.starts_with("addons/hello"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(out.join(addon)).unwrap(), manifest);
    for a in listed {
        let path = out.join(a["name"].as_str().unwrap());
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            muster_build::image::files::sha256_file(&path).unwrap()
        );
    }
    kubernetes::check_artifacts(&out, &k3s).unwrap();
    let o = run(&with_sum(&sum), &out, "k3s-good");
    assert!(!o.status.success());
    assert!(show(&o).contains("not empty"), "{}", show(&o));
    // Broken: nothing is left behind, and the error names the file and the sum expected.
    let want_airgap = airgap_sum(&www.join("k3s-bad").join(&version));
    let wrong = "0".repeat(64);
    for (spec_text, which, want) in [
        (
            with_sum(&sum),
            "k3s-bad",
            vec![
                kubernetes::K3S_AIRGAP.to_string(),
                format!("expected {want_airgap}"),
            ],
        ),
        (
            with_sum(&wrong),
            "k3s-good",
            vec![
                "hello".to_string(),
                format!("expected {wrong}"),
                format!("sha256 {sum}"),
            ],
        ),
    ] {
        let broken = s.join("broken");
        let o = run(&spec_text, &broken, which);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        for w in &want {
            assert!(err.contains(w.as_str()), "{w} in {err}");
        }
        assert!(!broken.exists());
        assert!(!s.join("broken.partial").exists());
    }
}
