//! Image recipes: golden files for every example, and every artifact through its real
//! validator (packer, vagrant, shellcheck, bash -n, systemd-analyze). A missing validator
//! is a failure naming what to install (`scripts/install-test-deps.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{repo, show};

use muster_build::render::{FileSet, images, packer, proxmox, vagrant};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> Vec<(String, model::Cluster, model::Plan)> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        let (cluster, warnings) = model::spec::load(&p.display().to_string(), &text).unwrap();
        let plan = model::plan::resolve(&cluster, warnings.items);
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((stem, cluster, plan));
    }
    out
}

fn render_all(c: &model::Cluster, p: &model::Plan) -> FileSet {
    let mut all = FileSet::default();
    for set in [
        images::render(c, p),
        packer::render(c, p),
        vagrant::render(c, p),
        proxmox::render(c, p),
    ] {
        all.files.extend(set.files);
    }
    all
}

fn write(dir: &Path, files: &FileSet) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, a) in &files.files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &a.contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(a.mode)).unwrap();
    }
}

/// The path of a validator, or a failure naming the package to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: apt-get install -y {package} (or run scripts/install-test-deps.sh)"
        )
    })
}

#[test]
fn golden_files_for_every_example() {
    let bless = std::env::var_os("MUSTER_BLESS").is_some();
    let root = repo().join("builder/tests/golden-images");
    let mut failures = Vec::new();
    for (stem, c, p) in examples() {
        let files = render_all(&c, &p);
        assert_eq!(
            files,
            render_all(&c, &p),
            "{stem}: rendering is not repeatable"
        );
        // Every spec gets the qemu template; Proxmox and Vagrant files only on their platform.
        assert!(files.get("packer/qemu/muster.pkr.hcl").is_some());
        let is_proxmox = matches!(c.platform, model::spec::Platform::Proxmox { .. });
        let is_vagrant = matches!(c.platform, model::spec::Platform::Vagrant { .. });
        assert_eq!(
            files.get("proxmox/create-vms.sh").is_some(),
            is_proxmox,
            "{stem}"
        );
        assert_eq!(
            files.get("packer/proxmox-clone/muster.pkr.hcl").is_some(),
            is_proxmox
        );
        assert_eq!(files.get("Vagrantfile").is_some(), is_vagrant, "{stem}");
        let dir = root.join(&stem);
        // The image scripts are copies of images/*.sh: one golden copy is the repo's own.
        let files = FileSet {
            files: files
                .files
                .into_iter()
                .filter(|(k, _)| !k.starts_with("images/"))
                .collect(),
        };
        if bless {
            let _ = std::fs::remove_dir_all(&dir);
            write(&dir, &files);
            continue;
        }
        for (rel, a) in &files.files {
            match std::fs::read(dir.join(rel)) {
                Ok(want) if want == a.contents => {}
                Ok(_) => failures.push(format!("{stem}/{rel} differs")),
                Err(_) => failures.push(format!("{stem}/{rel} missing")),
            }
        }
        let mut on_disk = Vec::new();
        collect(&dir, &dir, &mut on_disk);
        for rel in on_disk {
            if !files.files.contains_key(&rel) {
                failures.push(format!("{stem}/{rel} is stale"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden files differ (MUSTER_BLESS=1 to regenerate):\n{}",
        failures.join("\n")
    );
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(base, &p, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
}

fn packer(args: &[&str], dir: &Path) -> Output {
    Command::new(tool("packer", "packer"))
        .args(args)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PROXMOX_PASSWORD", "not-a-secret")
        .output()
        .unwrap()
}

#[test]
fn packer_templates_validate_and_are_formatted() {
    let mut checked = 0;
    for (stem, c, p) in examples() {
        let out = tempfile::tempdir().unwrap();
        write(out.path(), &render_all(&c, &p));
        std::fs::write(out.path().join("payload.tar.gz"), b"stand-in").unwrap();
        for dir in [
            packer::QEMU_DIR,
            packer::PROXMOX_CLONE_DIR,
            packer::PROXMOX_ISO_DIR,
        ] {
            let d = out.path().join(dir);
            if !d.exists() {
                continue;
            }
            let v = packer(&["validate", packer::MAIN], &d);
            assert!(
                v.status.success(),
                "{stem} {dir}: packer validate\n{}",
                show(&v)
            );
            for f in [packer::MAIN, packer::VERSIONS] {
                let fmt = packer(&["fmt", "-check", "-diff", f], &d);
                assert!(
                    fmt.status.success(),
                    "{stem} {dir}/{f}: packer fmt\n{}",
                    show(&fmt)
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} template directories checked");
}

#[test]
fn packer_checks_catch_broken_templates() {
    let (_, c, p) = examples().into_iter().next().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(out.path(), &render_all(&c, &p));
    let d = out.path().join(packer::QEMU_DIR);
    let main = d.join(packer::MAIN);
    let good = std::fs::read_to_string(&main).unwrap();
    // An argument the qemu builder does not know.
    std::fs::write(&main, good.replace("  disk_image ", "  disk_imagez ")).unwrap();
    let v = packer(&["validate", packer::MAIN], &d);
    assert!(
        !v.status.success(),
        "broken template passed validate\n{}",
        show(&v)
    );
    // Misaligned but valid.
    std::fs::write(&main, good.replace("  disk_image ", "  disk_image  ")).unwrap();
    let f = packer(&["fmt", "-check", packer::MAIN], &d);
    assert!(
        !f.status.success(),
        "unformatted template passed fmt -check"
    );
    // required_plugins in the main file is what Packer 1.6.6 rejects.
    let versions = std::fs::read_to_string(d.join(packer::VERSIONS)).unwrap();
    std::fs::write(&main, format!("{good}\n{versions}")).unwrap();
    let v = packer(&["validate", packer::MAIN], &d);
    assert!(
        !v.status.success(),
        "1.6.6 accepted required_plugins?\n{}",
        show(&v)
    );
}

fn vagrant_validate(dir: &Path) -> Output {
    let vagrant = tool("vagrant", "vagrant vagrant-libvirt");
    // VirtualBox blocks validate only when VBoxManage answers with a version.
    let stub = dir.join(".stub-bin");
    std::fs::create_dir_all(&stub).unwrap();
    let vbm = stub.join("VBoxManage");
    std::fs::write(&vbm, "#!/bin/sh\necho 7.0.20r163906\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&vbm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        stub.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(vagrant)
        .arg("validate")
        .current_dir(dir)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_HOME", dir.join(".vagrant.d"))
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn vagrantfiles_validate() {
    let mut checked = 0;
    for (stem, c, p) in examples() {
        let files = vagrant::render(&c, &p);
        if files.files.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files);
        let v = vagrant_validate(dir.path());
        assert!(v.status.success(), "{stem}: vagrant validate\n{}", show(&v));
        checked += 1;
    }
    assert!(checked >= 2, "libvirt and virtualbox examples expected");
}

#[test]
fn vagrant_validate_catches_a_broken_vagrantfile() {
    let (_, c, p) = examples()
        .into_iter()
        .find(|(s, ..)| s.starts_with("seed-000"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = vagrant::render(&c, &p);
    let a = files.files.get_mut(vagrant::VAGRANTFILE_PATH).unwrap();
    let text = String::from_utf8(a.contents.clone()).unwrap();
    a.contents = text
        .replace(
            "lv.cpus = n[:cpus]",
            "lv.cpus = n[:cpus]\n        lv.no_such_option = 1",
        )
        .into_bytes();
    write(dir.path(), &files);
    let v = vagrant_validate(dir.path());
    assert!(
        !v.status.success(),
        "broken Vagrantfile passed\n{}",
        show(&v)
    );
}

fn shellcheck(path: &Path) -> Output {
    Command::new(tool("shellcheck", "shellcheck"))
        .args(["--shell=bash", "--severity=style"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn shell_scripts_pass_bash_n_and_shellcheck() {
    let mut scripts: Vec<PathBuf> = vec![
        repo().join("images/provision.sh"),
        repo().join("images/install-kubernetes.sh"),
        repo().join("images/image-build.sh"),
        repo().join("images/test-image.sh"),
        repo().join("scripts/make-test-rootfs.sh"),
        repo().join("scripts/deps/images.sh"),
    ];
    let out = tempfile::tempdir().unwrap();
    for (stem, c, p) in examples() {
        let files = proxmox::render(&c, &p);
        let dir = out.path().join(&stem);
        write(&dir, &files);
        scripts.extend(files.files.keys().map(|k| dir.join(k)));
    }
    assert!(scripts.iter().any(|s| s.ends_with("create-vms.sh")));
    for s in &scripts {
        let n = Command::new("bash").arg("-n").arg(s).output().unwrap();
        assert!(n.status.success(), "bash -n {}\n{}", s.display(), show(&n));
        let sc = shellcheck(s);
        assert!(
            sc.status.success(),
            "shellcheck {}\n{}",
            s.display(),
            show(&sc)
        );
    }
    // A broken sample proves the checks can fail.
    let bad = out.path().join("bad.sh");
    std::fs::write(&bad, "#!/bin/bash\nrm -rf $1/*\n").unwrap();
    assert!(
        !shellcheck(&bad).status.success(),
        "shellcheck passed an unquoted rm"
    );
    std::fs::write(&bad, "#!/bin/bash\nif true; then\n").unwrap();
    let n = Command::new("bash").arg("-n").arg(&bad).output().unwrap();
    assert!(!n.status.success(), "bash -n passed an unclosed if");
}

#[test]
fn proxmox_script_follows_the_plan() {
    let (_, c, p) = examples()
        .into_iter()
        .find(|(s, ..)| s.starts_with("seed-001"))
        .unwrap();
    let files = proxmox::render(&c, &p);
    let script = String::from_utf8(
        files
            .get(proxmox::CREATE_VMS_PATH)
            .unwrap()
            .contents
            .clone(),
    )
    .unwrap();
    assert!(script.contains("set -euo pipefail"));
    assert!(script.contains("create_vm 301 k3s-server-01 2 4096 32 BC:24:11:66:6F:07"));
    assert!(script.contains("create_vm 322 k3s-lb-02 1 2048 32 BC:24:11:6B:DC:F9"));
    assert!(script.contains("TEMPLATE=${MUSTER_TEMPLATE:-9001}"));
    assert!(script.contains(r#"qm clone "$TEMPLATE" "$vmid" --name "$name" --full"#));
}

/// A `qm` stand-in for create-vms.sh: VMs are files under `$QM_STATE` holding their name.
const FAKE_QM: &str = r#"#!/bin/bash
set -eu
echo "qm $*" >> "$QM_STATE/log"
case "$1" in
  status) [ -f "$QM_STATE/$2" ] || exit 2; [ -f "$QM_STATE/$2.running" ] && echo "status: running" || echo "status: stopped" ;;
  config) [ -f "$QM_STATE/$2" ] || exit 2; echo "name: $(cat "$QM_STATE/$2")" ;;
  clone) echo "$5" > "$QM_STATE/$3" ;;
  start) touch "$QM_STATE/$2.running" ;;
  set|resize) ;;
  *) echo "fake qm: $1?" >&2; exit 1 ;;
esac
"#;

/// `create-vms.sh` of a plan written to a temp dir (with a seed image per node), run with
/// the `qm` stand-in on PATH; VMs live under `state`.
struct QmLab {
    dir: tempfile::TempDir,
    state: PathBuf,
}

impl QmLab {
    fn new(c: &model::Cluster, p: &model::Plan) -> QmLab {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(bin.join("qm"), FAKE_QM).unwrap();
        std::fs::set_permissions(
            bin.join("qm"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let lab = QmLab { dir, state };
        lab.render(c, p);
        lab
    }

    /// (Re)writes the plan's script and seed images: a rebuild into the same dir.
    fn render(&self, c: &model::Cluster, p: &model::Plan) {
        write(self.dir.path(), &proxmox::render(c, p));
        for n in &p.nodes {
            let d = self.dir.path().join("nodes").join(n.name.as_str());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("seed.img"), b"seed").unwrap();
        }
    }

    fn run(&self) -> std::process::Output {
        let bin = self.dir.path().join("bin");
        Command::new("bash")
            .arg(self.dir.path().join(proxmox::CREATE_VMS_PATH))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("QM_STATE", &self.state)
            .output()
            .unwrap()
    }
}

#[test]
fn proxmox_script_creates_only_new_nodes_and_refuses_an_id_of_another_vm() {
    let (_, c, p) = examples()
        .into_iter()
        .find(|(s, ..)| s.starts_with("seed-001"))
        .unwrap();
    let lab = QmLab::new(&c, &p);
    let state = lab.state.clone();
    let run = || lab.run();
    // The template, and the two servers an earlier run created.
    std::fs::write(state.join("9001"), "node-image").unwrap();
    std::fs::write(state.join("301"), "k3s-server-01").unwrap();
    std::fs::write(state.join("302"), "k3s-server-02").unwrap();
    let out = run();
    assert!(out.status.success(), "{}", show(&out));
    let log = std::fs::read_to_string(state.join("log")).unwrap();
    let clones: Vec<&str> = log.lines().filter(|l| l.starts_with("qm clone")).collect();
    assert_eq!(clones.len(), p.nodes.len() - 2, "{log}");
    assert!(
        !log.contains("clone 9001 301") && !log.contains("clone 9001 302"),
        "{log}"
    );
    assert!(
        log.contains("qm clone 9001 311 --name k3s-worker-01 --full"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("322")).unwrap().trim(),
        "k3s-lb-02"
    );

    // An id held by a VM of another name stops the script; that VM is not touched.
    std::fs::remove_file(state.join("log")).unwrap();
    std::fs::remove_file(state.join("322")).unwrap();
    std::fs::write(state.join("322"), "someone-else").unwrap();
    let out = run();
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VM 322 is 'someone-else', not k3s-lb-02: refusing to touch it"),
        "{err}"
    );
    let log = std::fs::read_to_string(state.join("log")).unwrap();
    assert!(!log.contains(" 322 --"), "{log}");
    assert!(!log.contains("qm start"), "{log}");
}

/// Issue 16: seed 001 rebuilt with a third worker. The script (golden) creates exactly the
/// new worker, at its own id, when every old VM exists; no old VM is cloned or started again.
#[test]
fn proxmox_script_after_adding_a_worker_creates_only_it() {
    let (_, c, p) = examples()
        .into_iter()
        .find(|(s, ..)| s.starts_with("seed-001"))
        .unwrap();
    let text = std::fs::read_to_string(repo().join("examples/seed-001-k3s-haproxy-proxmox.yaml"))
        .unwrap()
        .replacen("    workers: 2\n", "    workers: 3\n", 1);
    let (grown, w) = model::spec::load("seed-001-plus-a-worker.yaml", &text).unwrap();
    let gp = model::plan::resolve(&grown, w.items);
    assert_eq!(gp.nodes.len(), p.nodes.len() + 1);

    let script = proxmox::render(&grown, &gp);
    let got = &script.files.get(proxmox::CREATE_VMS_PATH).unwrap().contents;
    let golden =
        repo().join("builder/tests/golden-images/grown/seed-001-plus-a-worker/create-vms.sh");
    if std::env::var_os("MUSTER_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, got).unwrap();
    }
    assert_eq!(
        &std::fs::read(&golden).unwrap(),
        got,
        "{} differs (MUSTER_BLESS=1 to regenerate)",
        golden.display()
    );

    // Every VM of the first build exists (created and running).
    let lab = QmLab::new(&c, &p);
    std::fs::write(lab.state.join("9001"), "node-image").unwrap();
    let out = lab.run();
    assert!(out.status.success(), "{}", show(&out));
    std::fs::remove_file(lab.state.join("log")).unwrap();
    lab.render(&grown, &gp);
    let out = lab.run();
    assert!(out.status.success(), "{}", show(&out));
    let log = std::fs::read_to_string(lab.state.join("log")).unwrap();
    let clones: Vec<&str> = log.lines().filter(|l| l.starts_with("qm clone")).collect();
    assert_eq!(
        clones,
        ["qm clone 9001 313 --name k3s-worker-03 --full"],
        "{log}"
    );
    let starts: Vec<&str> = log.lines().filter(|l| l.starts_with("qm start")).collect();
    assert_eq!(starts, ["qm start 313"], "{log}");
    for n in &p.nodes {
        let id = n.vmid.unwrap();
        assert_eq!(
            std::fs::read_to_string(lab.state.join(id.to_string()))
                .unwrap()
                .trim(),
            n.name.as_str(),
            "{id} kept its VM"
        );
    }
}

/// `muster image build` fails early and leaves nothing behind: a kubeadm spec without the
/// images its nodes pull (no `--artifacts`, and the registries unreachable: the test
/// points every proxy at a closed port, so the build's own pull fails whatever network
/// this machine has) names them and the way to get them; a missing
/// image tarball names the file and its expected sha256; an `--out` the build made is gone
/// again, with no staging dir beside it. Without `--payload` the CLI refuses at once.
#[test]
fn image_build_fails_early_and_leaves_no_half_built_out() {
    let d = tempfile::tempdir().unwrap();
    // A payload whose pre-pull list names an image only rendering showed (cilium's chart).
    let chart_image = "quay.io/cilium/cilium:v1.18.4";
    let payload = d.path().join("payload.tar.gz");
    let mut files = FileSet::default();
    files.add("usr/bin/nodeagent", 0o755, "#!/bin/sh\n");
    files.add(
        model::node_files::PREPULL_IMAGES,
        0o644,
        format!("{chart_image}\nregistry.k8s.io/pause:3.10\n"),
    );
    std::fs::write(
        &payload,
        muster_build::image::payload::pack(&files).unwrap(),
    )
    .unwrap();
    let spec = repo().join("examples/seed-000-kubeadm-kube-vip.yaml");
    let out = d.path().join("new").join("out");
    let run = |extra: &[&std::ffi::OsStr]| {
        let o = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["image", "build"])
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--payload")
            .arg(&payload)
            .arg("--cache")
            .arg(d.path().join("cache"))
            .args(extra)
            .env("https_proxy", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(!out.exists(), "a failed build left {}", out.display());
        let left: Vec<_> = std::fs::read_dir(d.path().join("new"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left beside --out: {left:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&[]);
    assert!(
        err.contains("pulling them for this build")
            && err.contains("run container images from registries")
            && err.contains("registry.k8s.io/pause:3.10")
            && err.contains("muster artifacts fetch"),
        "{err}"
    );
    let artifacts = d.path().join("artifacts");
    std::fs::create_dir_all(artifacts.join("images")).unwrap();
    // The pinned add-on manifests are there (their images are looked for next).
    std::fs::create_dir_all(artifacts.join("addons")).unwrap();
    for f in [
        "longhorn-v1.12.1.yaml",
        "ingress-nginx-controller-v1.15.1.yaml",
    ] {
        std::fs::copy(
            Path::new(common::ADDON_ARTIFACTS).join("addons").join(f),
            artifacts.join("addons").join(f),
        )
        .unwrap();
    }
    // Every image is listed in SHA256SUMS, none is there: the first missing one is named
    // with the sum it should have.
    use muster_build::image::prepull;
    let cluster = muster_build::spec_source::load(Some(&spec))
        .unwrap()
        .cluster;
    let wanted = prepull::resolve(&prepull::needs(&cluster).unwrap(), &artifacts).unwrap();
    assert!(wanted.iter().any(|i| i.contains("kube-vip")), "{wanted:?}");
    let sums: String = wanted
        .iter()
        .map(|i| format!("{}  {}\n", "c".repeat(64), prepull::tarball_name(i)))
        .collect();
    std::fs::write(artifacts.join("images/SHA256SUMS"), sums).unwrap();
    let err = run(&["--artifacts".as_ref(), artifacts.as_os_str()]);
    assert!(
        wanted.iter().any(|i| err.contains(&format!(
            "{}: missing: the image {i} (expected sha256 {})",
            prepull::tarball_name(i),
            "c".repeat(64)
        ))),
        "{err}"
    );
    // Every image the spec names is there; the one only the payload lists is not: named.
    let mut sums = String::new();
    for i in &wanted {
        let tar = artifacts.join("images").join(prepull::tarball_name(i));
        std::fs::write(&tar, i.as_bytes()).unwrap();
        let sum = muster_build::image::files::sha256_file(&tar).unwrap();
        sums.push_str(&format!("{sum}  {}\n", prepull::tarball_name(i)));
    }
    sums.push_str(&format!(
        "{}  {}\n",
        "c".repeat(64),
        prepull::tarball_name(chart_image)
    ));
    std::fs::write(artifacts.join("images/SHA256SUMS"), sums).unwrap();
    let err = run(&["--artifacts".as_ref(), artifacts.as_os_str()]);
    assert!(
        err.contains(&format!(
            "{}: missing: the image {chart_image} (expected sha256 {})",
            prepull::tarball_name(chart_image),
            "c".repeat(64)
        )),
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["image", "build", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--payload"),
        "{}",
        show(&o)
    );
    assert!(!out.exists());
}
