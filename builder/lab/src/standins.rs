//! The stand-ins (package `muster-tests`, tests/README.md) the lab puts first on each node's
//! PATH: kubeadm, k3s and the API server cannot be downloaded here, so these programs accept
//! the same command lines and do real etcd, TLS and quorum work underneath. They are NOT
//! kubeadm or k3s.

use crate::error::{LabError, Result};
use std::path::{Path, PathBuf};

/// Names of the stand-in binaries cargo builds (`tests/src/bin`).
pub const KUBEADM_STANDIN: &str = "kubeadm-standin";
pub const K3S_STANDIN: &str = "k3s-standin";
pub const APISERVER_STANDIN: &str = "apiserver-standin";
/// Renders charts at build time (`UpOptions::helm`); not on the nodes' PATH.
pub const HELM_STANDIN: &str = "helm-standin";

/// `(name on PATH, stand-in binary)`.
pub const LINKS: [(&str, &str); 6] = [
    ("kubeadm", KUBEADM_STANDIN),
    ("k3s", K3S_STANDIN),
    ("k3s-killall.sh", K3S_STANDIN),
    (KUBEADM_STANDIN, KUBEADM_STANDIN),
    (K3S_STANDIN, K3S_STANDIN),
    (APISERVER_STANDIN, APISERVER_STANDIN),
];

/// The add-on artifacts the lab builds with: the upstream manifests checked into the
/// repository (`tests/fixtures/artifacts`, the real pinned bytes), since the lab rehearses
/// offline. `None` outside a source checkout: the build then uses the add-on cache.
pub fn default_addon_artifacts() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/artifacts");
    dir.is_dir().then_some(dir)
}

/// The test chart standing in for cilium's (`tests/fixtures/charts/cilium`: NOT cilium's
/// chart), packaged as Helm packages charts (`DIR/cilium-1.18.4.tgz`, byte-stable), for a
/// spec that brings it as `manifests: [{name: cilium, file: …}]` and the helm stand-in.
pub fn cilium_test_chart(dir: &Path) -> Result<PathBuf> {
    let charts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/charts");
    let out = dir.join("cilium-1.18.4.tgz");
    std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
    let o = std::process::Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .args(["-I", "gzip -n", "-cf"])
        .arg(&out)
        .arg("-C")
        .arg(&charts)
        .arg("cilium")
        .output()
        .map_err(LabError::io(&charts))?;
    if !o.status.success() {
        return Err(LabError::Command {
            cmd: format!("tar -cf {} -C {} cilium", out.display(), charts.display()),
            detail: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    Ok(out)
}

/// The directory of the running executable (cargo puts the stand-ins next to `muster`).
pub fn default_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo put the workspace's binaries, seen from a running test or bench
/// (`target/<profile>/deps/<test>` → `target/<profile>`).
pub fn target_bin_dir() -> PathBuf {
    let deps = default_dir();
    deps.parent().map_or(deps.clone(), Path::to_path_buf)
}

/// A workspace binary (`muster`, `nodeagent`, a stand-in) beside the running test.
pub fn target_binary(name: &str) -> Result<PathBuf> {
    let p = target_bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(LabError::MissingBinary {
            what: format!("`{name}`"),
            path: p,
            flag: "a debug build from `cargo build --workspace --bins`",
        })
    }
}

/// Fails unless every stand-in binary is in `bin_dir`.
pub fn check(bin_dir: &Path) -> Result<()> {
    for (_, bin) in LINKS {
        let p = bin_dir.join(bin);
        if !p.is_file() {
            return Err(LabError::MissingBinary {
                what: format!("the stand-in `{bin}`"),
                path: p,
                flag: "--standins DIR",
            });
        }
    }
    Ok(())
}

/// Makes `dir` hold `kubeadm → kubeadm-standin`, `k3s → k3s-standin`, `k3s-killall.sh →
/// k3s-standin` and links to the stand-ins under their own names (from `bin_dir`), and
/// returns it: put it first on the `PATH` of the agent under test.
pub fn path_dir(bin_dir: &Path, dir: &Path) -> Result<PathBuf> {
    check(bin_dir)?;
    std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
    let bin_dir = std::fs::canonicalize(bin_dir).map_err(LabError::io(bin_dir))?;
    for (name, target) in LINKS {
        let link = dir.join(name);
        // Replace atomically so concurrent harnesses never see a missing link.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(bin_dir.join(target), &tmp).map_err(LabError::io(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(LabError::io(&link))?;
    }
    Ok(dir.to_path_buf())
}

/// `PATH` with `first` in front of this process's own.
pub fn path_env(first: &Path) -> String {
    format!(
        "{}:{}",
        first.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    )
}

/// Where this machine kind ships real kubectl clients, one per minor
/// (`kubectl.1.27` .. `kubectl.1.33`).
pub const REAL_KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The real `kubectl` at the minor of `k8s_version` (`v1.31.4` -> `kubectl.1.31`), for
/// tests that read the lab cluster with the real client. `Ok(None)` when it is absent
/// (tests skip, loudly); an error when it is absent and `CI` is set (CI requires it).
pub fn real_kubectl(k8s_version: &str) -> Result<Option<PathBuf>> {
    let mut parts = k8s_version.trim_start_matches('v').split('.');
    let minor = match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => {
            return Err(LabError::Command {
                cmd: "real kubectl".into(),
                detail: format!("{k8s_version:?} is no Kubernetes version (vMAJOR.MINOR.PATCH)"),
            });
        }
    };
    let path = Path::new(REAL_KUBECTL_DIR).join(format!("kubectl.{minor}"));
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var_os("CI").is_some() {
        return Err(LabError::MissingBinary {
            what: format!("the real kubectl {minor} (CI requires it)"),
            path,
            flag: "nothing: install the google-cloud-sdk kubectl clients",
        });
    }
    eprintln!(
        "\n!!!!! SKIPPED: the real kubectl {minor} is not at {} (CI requires it) !!!!!\n",
        path.display()
    );
    Ok(None)
}
