//! Shared code of the stand-in binaries (`kubeadm-standin`, `k3s-standin`,
//! `apiserver-standin`, `helm-standin`).
//!
//! Underneath they do real work: etcd members ([`etcd`]), TLS ([`pki`]), and for k3s on an
//! external SQL datastore a real MariaDB holding the API objects and the bootstrap data
//! ([`sql`]; the server itself is started by `muster_lab::mariadb`).
//!
//! Every stand-in resolves its files under a node root taken from `MUSTER_NODE_ROOT`
//! (default `/`), so several lab nodes can share one machine, each in its own network
//! namespace and root directory.

pub mod api;
pub mod client;
pub mod clock;
pub mod daemon;
pub mod etcd;
pub mod helm;
pub mod k3s;
pub mod knobs;
pub mod kubeadm;
pub mod pki;
pub mod sql;
pub mod yaml;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Env var naming the node root.
pub const NODE_ROOT_ENV: &str = "MUSTER_NODE_ROOT";
/// Where the stand-ins keep pid files, logs, knobs and their own records, under the root.
pub const STATE_DIR: &str = "var/lib/muster-standin";

/// Names of the stand-in binaries (this package's `[[bin]]`s). The lab, which puts them on
/// each node's PATH, keeps its own list (`muster_lab::standins`); a test in `muster-tests`
/// checks the two agree.
pub const KUBEADM_STANDIN: &str = "kubeadm-standin";
pub const K3S_STANDIN: &str = "k3s-standin";
pub const APISERVER_STANDIN: &str = "apiserver-standin";
pub const HELM_STANDIN: &str = "helm-standin";

/// Tells systemd the service is up (`READY=1`), as k3s does under its `Type=notify` units
/// (`units/k3s.service`, `k3s-agent.service`): without it the unit stays `activating`.
/// Nothing when not started by systemd (`NOTIFY_SOCKET` unset, e.g. in the netns lab).
pub fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        Ok(()) => println!("level=info msg=\"sent READY=1 to systemd\" (muster stand-in)"),
        Err(e) => eprintln!("level=warning msg=\"sd_notify READY=1: {e}\""),
    }
}

/// The node root of this process: `$MUSTER_NODE_ROOT` or `/`.
pub fn node_root() -> model::node_files::NodeRoot {
    let root = std::env::var_os(NODE_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    model::node_files::NodeRoot::new(root)
}

/// The release this stand-in claims to be: `$MUSTER_STANDIN_K8S_VERSION`, else the one the
/// node's baked spec pins (a node's image carries the spec's release, and the agent's
/// preflight checks it), else `default`.
pub fn release(default: &str) -> String {
    if let Ok(v) = std::env::var("MUSTER_STANDIN_K8S_VERSION")
        && !v.is_empty()
    {
        return v;
    }
    let baked = node_root().path(model::node_files::CLUSTER_CONFIG);
    std::fs::read(&baked)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.pointer("/spec/distribution/version")
                .and_then(|x| x.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| default.to_string())
}

/// `<root>/var/lib/muster-standin`, created if missing.
pub fn state_dir(root: &model::node_files::NodeRoot) -> Result<PathBuf> {
    let dir = root.path(STATE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Finds a sibling stand-in binary (next to the running executable), else on `PATH`.
pub fn sibling_binary(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from(name)
}

/// Finds a required external tool on PATH, with an install hint when missing.
pub fn require_tool(name: &str, debian_package: &str) -> Result<PathBuf> {
    muster_lab_units::find_tool(name).with_context(|| {
        format!("`{name}` not found on PATH or in the sbin dirs (install the Debian package {debian_package})")
    })
}

/// Writes a file atomically (temp file + rename), creating parent directories.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let parent = path
        .parent()
        .with_context(|| format!("{} has no parent", path.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents.as_ref())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a file to a string with the path in the error.
pub fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
