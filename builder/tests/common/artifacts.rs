//! Stand-in artifacts for `muster image build --artifacts DIR`: the Kubernetes packages as
//! .debs holding the stand-ins, and container images as minimal OCI archives. Shared by the
//! install-path test and the VM image tests, so both build images through the same path.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}\n{}", super::show(&o));
    o
}

/// `dpkg-deb --build` of one package holding `files` (path in the package, contents, mode).
pub fn deb(out: &Path, name: &str, version: &str, depends: &str, files: &[(&str, Vec<u8>)]) {
    let tree = out.join(format!(".{name}-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: muster tests <t@muster.invalid>\n\
         Description: STAND-IN {name} for muster's tests\n"
    );
    if !depends.is_empty() {
        control.push_str(&format!("Depends: {depends}\n"));
    }
    std::fs::write(tree.join("DEBIAN/control"), control).unwrap();
    for (path, contents) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "--build"])
        .arg(&tree)
        .arg(out.join(format!("{name}_{version}_amd64.deb"))));
    std::fs::remove_dir_all(&tree).unwrap();
}

pub fn script(text: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# STAND-IN\n{text}\n").into_bytes()
}

/// kubeadm (the kubeadm stand-in), kubelet, kubectl at `version` (like 1.31.4, package
/// revision -1.1), cri-tools and kubernetes-cni as .debs in `debs`.
pub fn standin_debs(debs: &Path, version: &str) {
    std::fs::create_dir_all(debs).unwrap();
    let kubeadm =
        std::fs::read(muster_lab::standins::target_binary("kubeadm-standin").unwrap()).unwrap();
    let rev = format!("{version}-1.1");
    deb(
        debs,
        "kubeadm",
        &rev,
        "cri-tools (>= 1.30.0), kubernetes-cni",
        &[("usr/bin/kubeadm", kubeadm)],
    );
    for name in ["kubelet", "kubectl"] {
        let body = script(&format!("echo \"{name} stand-in v{version}\""));
        deb(debs, name, &rev, "", &[(&format!("usr/bin/{name}"), body)]);
    }
    deb(
        debs,
        "cri-tools",
        "1.31.1-1.1",
        "",
        &[("usr/bin/crictl", script("echo crictl stand-in"))],
    );
    deb(
        debs,
        "kubernetes-cni",
        "1.5.1-1.1",
        "",
        &[("opt/cni/bin/bridge", script("echo cni stand-in"))],
    );
}

/// A minimal OCI image archive (what `ctr images export` writes) for `image`: one layer
/// with one file naming it, a config, a manifest, an index naming the image.
pub fn oci_archive(image: &str, tar_path: &Path, work: &Path) {
    use sha2::{Digest, Sha256};
    let d = work.join(format!(
        "oci-{}",
        muster_build::image::prepull::tarball_name(image)
    ));
    let blobs = d.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len())
    };
    let mut layer = tar::Builder::new(Vec::new());
    let text = format!("stand-in image {image}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    layer
        .append_data(&mut h, "standin-image", text.as_bytes())
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let (layer_digest, layer_size) = blob(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": image},
        }],
    });
    std::fs::write(d.join("index.json"), index.to_string()).unwrap();
    std::fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    sh(Command::new("tar")
        .arg("-C")
        .arg(&d)
        .arg("-cf")
        .arg(tar_path)
        .arg("."));
}

/// A complete `--artifacts DIR` for a kubeadm `cluster` whose add-ons have no pinned
/// manifest (a stand-in cannot match a pinned manifest's sha256): the stand-in .debs at the
/// spec's version (a plain .deb directory) and one OCI archive per image its nodes need,
/// with `images/SHA256SUMS`.
pub fn standin_artifacts(dir: &Path, cluster: &model::Cluster) {
    use muster_build::image::prepull;
    let version = cluster.distribution.version.to_string();
    standin_debs(dir, version.trim_start_matches('v'));
    let needs = prepull::needs(cluster).unwrap();
    assert!(
        needs.manifests.is_empty(),
        "pick a spec without pinned add-on manifests"
    );
    let images = dir.join(prepull::IMAGES_DIR);
    std::fs::create_dir_all(&images).unwrap();
    let work = dir.join(".oci");
    for i in &needs.images {
        oci_archive(i, &images.join(prepull::tarball_name(i)), &work);
    }
    std::fs::remove_dir_all(&work).unwrap();
    let sums = sh(Command::new("sha256sum")
        .args(needs.images.iter().map(|i| prepull::tarball_name(i)))
        .current_dir(&images));
    std::fs::write(images.join(prepull::IMAGE_SUMS), &sums.stdout).unwrap();
}
