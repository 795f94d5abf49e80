//! Every unit in `units/` through `systemd-analyze verify` in a scratch root holding the
//! unit, stub executables at its Exec paths and a copy of /usr/lib/systemd/system. The
//! verifier exits 0 on unknown keys and bad values, so ANY stderr is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{repo, show};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn systemd_analyze() -> PathBuf {
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join("systemd-analyze");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "systemd-analyze is not installed: apt-get install -y systemd (scripts/install-test-deps.sh)"
    )
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp {} {}", from.display(), to.display());
}

/// Verifies one unit text; returns the verifier's output.
fn verify(name: &str, text: &str) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &r.join("usr/lib/systemd/system"),
    );
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::write(r.join("etc/systemd/system").join(name), text).unwrap();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !key.trim().starts_with("Exec") {
            continue;
        }
        let exe = value.trim().trim_start_matches(['-', '@', ':', '+', '!']);
        let exe = exe.split_whitespace().next().unwrap_or("");
        if exe.starts_with('/') {
            let stub = r.join(exe.trim_start_matches('/'));
            std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
            std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", r.display()))
        .arg(format!("/etc/systemd/system/{name}"))
        .output()
        .unwrap()
}

fn clean(o: &Output) -> bool {
    o.status.success() && o.stderr.is_empty()
}

#[test]
fn every_unit_verifies_without_a_word() {
    let mut checked = 0;
    for e in std::fs::read_dir(repo().join("units")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer") || name.ends_with(".socket")) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let o = verify(&name, &text);
        assert!(clean(&o), "{name}: systemd-analyze verify\n{}", show(&o));
        checked += 1;
    }
    assert!(checked >= 1, "no units found");
}

#[test]
fn a_broken_unit_is_caught() {
    let good = std::fs::read_to_string(repo().join("units/nodeagent.service")).unwrap();
    // An unknown key: systemd-analyze still exits 0 but complains on stderr.
    let o = verify(
        "broken.service",
        &good.replace("[Service]", "[Service]\nRestartt=always"),
    );
    assert!(!clean(&o), "unknown key passed\n{}", show(&o));
    // A bad value.
    let o = verify(
        "broken.service",
        &good.replace("Type=notify", "Type=sometimes"),
    );
    assert!(!clean(&o), "bad Type passed\n{}", show(&o));
    // A missing executable.
    let o = verify(
        "broken.service",
        &good.replace(
            "ExecStart=/usr/bin/nodeagent run",
            "ExecStart=nodeagent run",
        ),
    );
    assert!(!clean(&o), "relative ExecStart passed\n{}", show(&o));
}
