//! Image recipes shared by every way of building a node image: `images/provision.sh` (THE
//! one list of node preparation steps, run by Packer in the build VM and by `muster image
//! build` in a chroot) and `images/install-kubernetes.sh`, THE install path of the
//! Kubernetes distribution (both run it by default).
//!
//! The scripts live in the repository's `images/` directory (shellcheck-clean, tested in a
//! debootstrap chroot) and are copied verbatim into the build output.

use super::FileSet;
use model::{Cluster, Plan};

/// Relative path of the preparation script in the build output.
pub const PROVISION_PATH: &str = "images/provision.sh";
/// Relative path of the distribution's installer in the build output.
pub const INSTALL_KUBERNETES_PATH: &str = "images/install-kubernetes.sh";
/// Relative path of the image pre-pull script in the build output.
pub const IMPORT_IMAGES_PATH: &str = "images/import-images.sh";

/// `provision.sh PAYLOAD_TARBALL [SHA256_OF_TARBALL | SHA256SUMS_FILE]`.
pub const PROVISION_SH: &str = include_str!("../../../../images/provision.sh");
/// `install-kubernetes.sh VERSION DISTRO [SOURCE [KEY_FINGERPRINT]]`; exits 2 when upstream
/// is unreachable (`image::kubernetes`).
pub const INSTALL_KUBERNETES_SH: &str = include_str!("../../../../images/install-kubernetes.sh");

/// `import-images.sh DIR REF...` / `--pull REF...`: images into containerd's k8s.io namespace
/// (`image::prepull`).
pub const IMPORT_IMAGES_SH: &str = include_str!("../../../../images/import-images.sh");

/// The image scripts. They do not depend on the spec: the payload carries what does.
pub fn render(_cluster: &Cluster, _plan: &Plan) -> FileSet {
    let mut files = FileSet::default();
    files.add(PROVISION_PATH, 0o755, PROVISION_SH);
    files.add(INSTALL_KUBERNETES_PATH, 0o755, INSTALL_KUBERNETES_SH);
    files.add(IMPORT_IMAGES_PATH, 0o755, IMPORT_IMAGES_SH);
    // What Packer uploads as the artifacts dir when `artifacts_dir` is empty.
    files.add(
        "images/no-artifacts/README",
        0o644,
        "Packer uploads this directory when -var artifacts_dir is empty: the distribution\n\
         then comes from upstream and there are no images to pre-pull.\n",
    );
    files
}

/// The `DISTRO` argument of install-kubernetes.sh for this cluster.
pub fn distro_arg(cluster: &Cluster) -> &'static str {
    match cluster.distribution.kind {
        model::spec::DistroKind::Kubeadm => "kubeadm",
        model::spec::DistroKind::K3s => "k3s",
    }
}
