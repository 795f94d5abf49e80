//! `images/provision.sh` for real: run via `chroot` in a throwaway Debian 12 root made by
//! `debootstrap --variant=minbase bookworm` (with systemd, dbus, ssh, cloud-init, containerd
//! and chrony), cached under /var/cache/muster-test/ by `scripts/make-test-rootfs.sh`.
//! Needs root. A payload built here must be installed and the node prepared; a tampered
//! payload and a wrong tarball digest must be refused with nothing installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{repo, show};

use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEFAULT_ROOTFS: &str = "/var/cache/muster-test/bookworm-rootfs";

/// The cached debootstrap tree, built on first use.
fn cached_rootfs() -> PathBuf {
    let root = std::env::var_os("MUSTER_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS));
    if !root.join(".muster-rootfs-ready").exists() {
        let o = Command::new("bash")
            .arg(repo().join("scripts/make-test-rootfs.sh"))
            .arg(&root)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cannot build the test root {} (needs root, `apt-get install -y debootstrap` and the Debian mirror; \
             scripts/install-test-deps.sh prepares it):\n{}",
            root.display(),
            show(&o)
        );
    }
    root
}

struct Payload {
    tarball: Vec<u8>,
}

/// A gzip tar of `files` (path, mode, contents) plus a SHA256SUMS of them; `tamper` changes
/// one file after its sum was taken.
fn payload(files: &[(&str, u32, &[u8])], tamper: bool) -> Payload {
    let mut sums = String::new();
    for (path, _, data) in files {
        sums.push_str(&format!("{}  {path}\n", hex::encode(Sha256::digest(data))));
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("SHA256SUMS", 0o644, sums.as_bytes());
    for (i, (path, mode, data)) in files.iter().enumerate() {
        if tamper && i == 0 {
            let mut evil = data.to_vec();
            evil.extend_from_slice(b"\n# tampered\n");
            add(path, *mode, &evil);
        } else {
            add(path, *mode, data);
        }
    }
    let gz = tar.into_inner().unwrap();
    Payload {
        tarball: gz.finish().unwrap(),
    }
}

fn run_provision(root: &Path, tarball: &[u8], digest: Option<&str>) -> Output {
    std::fs::write(root.join("tmp/payload.tar.gz"), tarball).unwrap();
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(["/bin/bash", "/tmp/provision.sh", "/tmp/payload.tar.gz"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root");
    if let Some(d) = digest {
        cmd.arg(d);
    }
    cmd.output().unwrap()
}

#[test]
fn provision_sh_prepares_a_debian_root_and_refuses_tampered_payloads() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "the provision.sh chroot test needs root (chroot, file ownership)"
    );
    let cached = cached_rootfs();
    let scratch = tempfile::Builder::new()
        .prefix("provision-root")
        .tempdir_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .unwrap();
    let root = scratch.path().join("root");
    let cp = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root)
        .output()
        .unwrap();
    assert!(cp.status.success(), "copying the test root\n{}", show(&cp));
    std::fs::write(
        root.join("tmp/provision.sh"),
        muster_build::render::images::PROVISION_SH,
    )
    .unwrap();
    // A swap line the script must turn off.
    let mut fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap_or_default();
    fstab.push_str("/dev/vda2 none swap sw 0 0\n");
    std::fs::write(root.join("etc/fstab"), fstab).unwrap();

    let unit = std::fs::read(repo().join("units/nodeagent.service")).unwrap();
    let files: Vec<(&str, u32, &[u8])> = vec![
        (
            "usr/bin/nodeagent",
            0o755,
            b"#!/bin/sh\necho stand-in nodeagent\n",
        ),
        ("etc/systemd/system/nodeagent.service", 0o644, &unit),
        ("usr/lib/muster/cluster.json", 0o644, b"{\"format\":1}\n"),
        ("etc/muster/config.d/10-test.json", 0o600, b"{}\n"),
    ];

    // 1. Tampered contents: refused, nothing installed.
    let bad = payload(&files, true);
    let o = run_provision(&root, &bad.tarball, None);
    assert!(
        !o.status.success(),
        "tampered payload accepted\n{}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing"),
        "{}",
        show(&o)
    );
    assert!(!root.join("usr/bin/nodeagent").exists());

    // 2. Wrong digest of the tarball itself: refused.
    let good = payload(&files, false);
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let o = run_provision(&root, &good.tarball, Some(&wrong));
    assert!(
        !o.status.success(),
        "wrong tarball digest accepted\n{}",
        show(&o)
    );
    assert!(!root.join("usr/bin/nodeagent").exists());

    // 3. The real thing, with the tarball digest.
    let digest = hex::encode(Sha256::digest(&good.tarball));
    let o = run_provision(&root, &good.tarball, Some(&digest));
    assert!(o.status.success(), "provision.sh failed\n{}", show(&o));

    // Payload at its final paths, modes kept, owned by root.
    for (path, mode, data) in &files {
        let p = root.join(path);
        assert_eq!(std::fs::read(&p).unwrap(), *data, "{path}");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path} mode");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} owner");
    }
    // Enabled units (symlinks, made by systemctl in the chroot).
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    for unit in ["nodeagent.service", "chrony.service", "containerd.service"] {
        let link = wants.join(unit);
        assert!(
            std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "{unit} not enabled"
        );
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let sysctl = read("etc/sysctl.d/90-muster-k8s.conf");
    for line in [
        "net.ipv4.ip_forward = 1",
        "net.bridge.bridge-nf-call-iptables = 1",
        "net.bridge.bridge-nf-call-ip6tables = 1",
    ] {
        assert!(
            sysctl.lines().any(|l| l == line),
            "{line} missing:\n{sysctl}"
        );
    }
    let modules = read("etc/modules-load.d/muster-k8s.conf");
    assert!(modules.lines().any(|l| l == "br_netfilter"));
    assert!(modules.lines().any(|l| l == "overlay"));
    assert!(
        read("etc/fstab")
            .lines()
            .all(|l| l.starts_with('#') || !l.contains(" swap ")),
        "swap still in fstab"
    );
    let containerd = read("etc/containerd/config.toml");
    assert!(
        containerd
            .lines()
            .any(|l| l.trim() == "SystemdCgroup = true"),
        "containerd config lacks SystemdCgroup = true"
    );
    assert!(!containerd.contains("SystemdCgroup = false"));
    assert!(read("etc/cloud/cloud.cfg.d/90-muster-datasource.cfg").contains("NoCloud"));
    // Sysprep.
    assert_eq!(read("etc/machine-id"), "", "machine-id not empty");
    assert!(std::fs::symlink_metadata(root.join("var/lib/dbus/machine-id")).is_err());
    assert_eq!(read("etc/hostname"), "");
    let host_keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "ssh host keys left: {host_keys:?}");
    assert!(
        read("etc/systemd/system/ssh.service.d/muster-host-keys.conf")
            .contains("ExecStartPre=/usr/bin/ssh-keygen -A")
    );
    assert!(
        !root.join("var/lib/cloud/instance").exists(),
        "cloud-init clean did not run"
    );
    let lists = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(lists, 0, "apt lists not cleaned");
    let debs = std::fs::read_dir(root.join("var/cache/apt/archives"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .count();
    assert_eq!(debs, 0, "apt cache not cleaned");
    // The payload's staging dir is gone.
    let leftovers: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("muster-payload")
        })
        .collect();
    assert!(leftovers.is_empty(), "staging dir left in /tmp");

    // 4. A payload as `muster build` packs it: its sums in usr/lib/muster/SHA256SUMS, which
    //    is installed with the rest; a file it does not list is refused.
    let mut built = muster_build::render::FileSet::default();
    built.add("usr/bin/nodeagent", 0o755, "#!/bin/sh\necho built\n");
    let sums = muster_build::bake::payload::sha256sums(&built);
    built.add(model::node_files::PAYLOAD_SUMS, 0o644, sums.clone());
    let tarball = muster_build::bake::payload::pack(&built, 0).unwrap();
    let o = run_provision(&root, &tarball, None);
    assert!(
        o.status.success(),
        "muster build payload refused\n{}",
        show(&o)
    );
    assert_eq!(read("usr/bin/nodeagent"), "#!/bin/sh\necho built\n");
    assert_eq!(read(model::node_files::PAYLOAD_SUMS), sums);
    built.add("usr/bin/unlisted", 0o755, "#!/bin/sh\n");
    let tarball = muster_build::bake::payload::pack(&built, 0).unwrap();
    let o = run_provision(&root, &tarball, None);
    assert!(!o.status.success(), "unlisted file accepted\n{}", show(&o));
    assert!(!root.join("usr/bin/unlisted").exists());
}
