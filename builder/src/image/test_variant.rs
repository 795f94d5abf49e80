//! The TEST image variant (`muster image build --test-standins DIR`): after the shared node
//! preparation, `images/test-image.sh` installs muster's stand-ins for kubeadm, k3s and
//! kube-apiserver (which cannot be downloaded on the test machines), points chrony at the
//! VM lab's NTP server (the spec's gateway) and adds a reporter on the second serial port.
//! Never part of a user's image: only this option runs it, and the report lists it.

use super::ImageError;
use super::files::{io_err, remove_tree, sha256_file};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The test-only step, run in the chroot after `provision.sh`.
pub const TEST_IMAGE_SH: &str = include_str!("../../../images/test-image.sh");

/// The stand-in binaries the step installs (cargo builds them from tests/src/bin).
pub const STANDINS: [&str; 3] = ["kubeadm-standin", "k3s-standin", "apiserver-standin"];

/// Debian packages only the TEST image needs: real k3s embeds etcd, its stand-in runs
/// Debian's etcd (and `etcdctl`, which the stand-in, the reporter and test-image.sh use).
/// kubeadm specs already get them (Debian's etcd stands in for the static-pod image).
pub fn add_packages(selection: &mut super::packages::Selection, cluster: &model::Cluster) {
    if cluster.distribution.kind == model::spec::DistroKind::K3s {
        for p in ["etcd-server", "etcd-client"] {
            if !selection.packages.iter().any(|have| have == p) {
                selection.packages.push(p.to_string());
            }
        }
        selection.packages.sort();
    }
}

/// What the test variant put into the image, for `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestVariant {
    /// Stand-ins (NOT the real programs): name and sha256 of each binary.
    pub stand_ins: Vec<super::ArtifactReport>,
    /// The address chrony in the image syncs with.
    pub ntp_server: String,
    /// Where the image's manifest of stand-ins and test-only files is.
    pub manifest: String,
}

/// Hashes the stand-ins in `dir`; fails naming the first one missing.
pub fn inspect(dir: &Path, ntp_server: &str) -> Result<TestVariant, ImageError> {
    let mut stand_ins = Vec::new();
    for name in STANDINS {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|_| ImageError::Missing {
            step: "test stand-ins".into(),
            what: format!(
                "{} (build it with `cargo build -p muster-tests --bins`)",
                path.display()
            ),
        })?;
        stand_ins.push(super::ArtifactReport {
            name: name.to_string(),
            bytes: meta.len(),
            sha256: sha256_file(&path)?,
        });
    }
    Ok(TestVariant {
        stand_ins,
        ntp_server: ntp_server.to_string(),
        manifest: "/usr/share/doc/muster/TEST-IMAGE".into(),
    })
}

/// A digest of everything the step adds, for the build key.
pub fn key_part(v: &TestVariant) -> String {
    let mut s = format!("test-image {} ", v.ntp_server);
    for a in &v.stand_ins {
        s.push_str(&format!("{}={} ", a.name, a.sha256));
    }
    s.push_str(TEST_IMAGE_SH);
    s
}

/// Copies the stand-ins into `ROOTFS/tmp`, runs `images/test-image.sh` in the chroot and
/// removes the copies again.
pub fn apply(rootfs: &Path, dir: &Path, v: &TestVariant) -> Result<(), ImageError> {
    let step = "test image step (images/test-image.sh)";
    let stage_rel = "tmp/muster-test-standins";
    let stage: PathBuf = rootfs.join(stage_rel);
    std::fs::create_dir_all(&stage).map_err(io_err(step, &stage))?;
    for a in &v.stand_ins {
        let from = dir.join(&a.name);
        std::fs::copy(&from, stage.join(&a.name)).map_err(io_err(step, &from))?;
    }
    let result = super::customise::run_script(
        step,
        rootfs,
        "test-image.sh",
        TEST_IMAGE_SH,
        &[&format!("/{stage_rel}"), &v.ntp_server],
    );
    remove_tree(&stage)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_standin_is_named_and_key_follows_binaries() {
        let d = tempfile::tempdir().unwrap();
        let err = inspect(d.path(), "10.0.0.1").unwrap_err().to_string();
        assert!(err.contains("kubeadm-standin"), "{err}");
        for n in STANDINS {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let v = inspect(d.path(), "10.0.0.1").unwrap();
        assert_eq!(v.stand_ins.len(), 3);
        let k = key_part(&v);
        std::fs::write(d.path().join("k3s-standin"), "changed").unwrap();
        assert_ne!(k, key_part(&inspect(d.path(), "10.0.0.1").unwrap()));
        assert_ne!(k, key_part(&inspect(d.path(), "10.0.0.9").unwrap()));
    }

    #[test]
    fn k3s_test_images_get_debian_etcd_and_kubeadm_ones_are_unchanged() {
        let load = |name: &str| {
            let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
            model::spec::load(name, &std::fs::read_to_string(path).unwrap())
                .unwrap()
                .0
        };
        let k3s = load("seed-003-k3s-keepalived.yaml");
        let mut sel = super::super::packages::select(&k3s);
        assert!(!sel.packages.iter().any(|p| p.starts_with("etcd")));
        add_packages(&mut sel, &k3s);
        let mut sorted = sel.packages.clone();
        sorted.sort();
        assert_eq!(sel.packages, sorted);
        assert!(sel.packages.iter().any(|p| p == "etcd-server"));
        assert!(sel.packages.iter().any(|p| p == "etcd-client"));
        // Debian's etcd.service is disabled in the image: the stand-in runs its own member.
        assert!(super::super::packages::disabled_services(&sel).contains(&"etcd.service"));

        let kubeadm = load("default.yaml");
        let before = super::super::packages::select(&kubeadm);
        let mut after = before.clone();
        add_packages(&mut after, &kubeadm);
        assert_eq!(before, after);
    }
}
