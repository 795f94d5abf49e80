//! Stand-in artifacts for `muster image build --artifacts DIR`: the Kubernetes packages as
//! .debs holding the stand-ins, and container images as minimal OCI archives. Shared by the
//! install-path test and the VM image tests, so both build images through the same path.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
    let d = oci_layout(image, work);
    sh(Command::new("tar")
        .arg("-C")
        .arg(&d)
        .arg("-cf")
        .arg(tar_path)
        .arg("."));
}

/// [`oci_archive`]'s OCI image layout, as a directory under `work` (returned): what the
/// registry stand-in serves.
pub fn oci_layout(image: &str, work: &Path) -> PathBuf {
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
    d
}

/// A complete `--artifacts DIR` for a kubeadm `cluster`: the stand-in .debs at the spec's
/// version (a plain .deb directory) and [`standin_images`]. Returns the images.
pub fn standin_artifacts(dir: &Path, cluster: &model::Cluster, payload: &Path) -> Vec<String> {
    let version = cluster.distribution.version.to_string();
    standin_debs(dir, version.trim_start_matches('v'));
    standin_images(dir, cluster, payload)
}

/// The images part of an `--artifacts DIR` for `cluster`: its pinned add-on manifests
/// (the real upstream bytes, from [`super::ADDON_ARTIFACTS`], so their sha256 matches the
/// pin) in `DIR/addons/`, and one stand-in OCI archive per image its nodes need (muster's,
/// those the manifests name and those `payload`, from `muster build`, lists: a user's
/// files' and charts') in `DIR/images/` with `SHA256SUMS`. Returns the images.
pub fn standin_images(dir: &Path, cluster: &model::Cluster, payload: &Path) -> Vec<String> {
    use muster_build::image::prepull;
    let needs = prepull::needs(cluster).unwrap();
    if !needs.manifests.is_empty() {
        let addons = dir.join(prepull::MANIFESTS_DIR);
        std::fs::create_dir_all(&addons).unwrap();
        for m in &needs.manifests {
            let name = prepull::manifest_name(m);
            std::fs::copy(
                Path::new(super::ADDON_ARTIFACTS)
                    .join(prepull::MANIFESTS_DIR)
                    .join(&name),
                addons.join(&name),
            )
            .unwrap();
        }
    }
    let listed = muster_build::image::payload::inspect(payload)
        .unwrap()
        .prepull_images;
    let all = prepull::with_listed(prepull::resolve(&needs, dir).unwrap(), &listed);
    let images = dir.join(prepull::IMAGES_DIR);
    std::fs::create_dir_all(&images).unwrap();
    let work = dir.join(".oci");
    for i in &all {
        oci_archive(i, &images.join(prepull::tarball_name(i)), &work);
    }
    std::fs::remove_dir_all(&work).unwrap();
    let sums = sh(Command::new("sha256sum")
        .args(all.iter().map(|i| prepull::tarball_name(i)))
        .current_dir(&images));
    std::fs::write(images.join(prepull::IMAGE_SUMS), &sums.stdout).unwrap();
    all
}

/// A signed apt repository with pkgs.k8s.io's flat layout under `dir`, holding the
/// stand-in packages at `version` (like 1.31.4), signed by a key made here, served over
/// HTTP: the repository's URL (for `--source-override`) and the key's fingerprint (for
/// `--source-key-fingerprint`). Served until the test process exits.
pub fn served_signed_repo(dir: &Path, version: &str) -> (String, String) {
    let gnupg = dir.join("gnupg");
    let fpr = gpg_key(&gnupg, "muster-test-repo");
    let www = dir.join("www");
    apt_repo(&www.join("k8s"), version, &gnupg, &gnupg);
    (format!("{}/k8s/", serve(www)), fpr)
}

/// A gpg home with one signing key; its fingerprint.
pub fn gpg_key(home: &Path, name: &str) -> String {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    sh(Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .arg(format!("{name} <{name}@muster.invalid>"))
        .args(["ed25519", "sign", "never"]));
    let o = sh(Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--with-colons", "--list-keys"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .unwrap()
}

/// A flat apt repository in `dir` with the packages at `version` (like 1.31.4), signed by
/// `signer`'s key; `Release.key` is `published`'s public key.
pub fn apt_repo(dir: &Path, version: &str, signer: &Path, published: &Path) {
    standin_debs(&dir.join("amd64"), version);
    flat_repo_index(dir, signer, published);
}

/// The signed index of a flat apt repository whose .debs are in `dir/amd64/`: `Packages`,
/// `Release`, `Release.gpg` and `InRelease` signed by `signer`'s key, and `Release.key`,
/// `published`'s public key (armored).
pub fn flat_repo_index(dir: &Path, signer: &Path, published: &Path) {
    let packages = sh(Command::new("apt-ftparchive")
        .args(["packages", "amd64"])
        .current_dir(dir));
    std::fs::write(dir.join("Packages"), &packages.stdout).unwrap();
    let release = sh(Command::new("apt-ftparchive")
        .args(["-o", "APT::FTPArchive::Release::Origin=muster-test"])
        .args(["release", "."])
        .current_dir(dir));
    std::fs::write(dir.join("Release"), &release.stdout).unwrap();
    let gpg = |args: &[&str]| {
        sh(Command::new("gpg")
            .arg("--homedir")
            .arg(signer)
            .args(["--batch", "--yes"])
            .args(args)
            .current_dir(dir));
    };
    gpg(&["--armor", "--detach-sign", "-o", "Release.gpg", "Release"]);
    gpg(&["--clearsign", "-o", "InRelease", "Release"]);
    let key = sh(Command::new("gpg")
        .arg("--homedir")
        .arg(published)
        .args(["--armor", "--export"]));
    std::fs::write(dir.join("Release.key"), &key.stdout).unwrap();
}

/// The request line of one HTTP/1.1 request on `stream`, its headers read and dropped
/// (the test servers here answer GET/HEAD only, one request per connection).
pub fn read_request(stream: &std::net::TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
    }
    Some(first)
}

/// Serves the files under `root` over HTTP/1.1 (GET, one request per connection) on
/// 127.0.0.1, which the chroot shares; returns the base URL.
pub fn serve(root: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let Some(first) = read_request(&stream) else {
                    return;
                };
                let path = first.split_whitespace().nth(1).unwrap_or("/");
                let rel = path.trim_start_matches('/').replace("%2B", "+");
                let file = root.join(&rel);
                let response = match std::fs::read(&file) {
                    Ok(body) if !rel.contains("..") && file.is_file() => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        if !first.starts_with("HEAD") {
                            r.extend(body);
                        }
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}
