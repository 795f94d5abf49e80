//! Detached daemons standing in for static pods (etcd, kube-apiserver).
//!
//! Each daemon `NAME` has, under `<root>/var/lib/muster-standin/`:
//! `NAME.pid`, `NAME.log` (stdout+stderr, appended) and `NAME.cmd.json` (program, args,
//! env) so the stand-in kubelet (`kubeadm-standin kubelet-sync`) can start it again, like
//! the kubelet restarts a static pod whose manifest is present.

use anyhow::{Context, Result};
use model::node_files::NodeRoot;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

fn files(root: &NodeRoot, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = crate::state_dir(root)?;
    Ok((
        dir.join(format!("{name}.pid")),
        dir.join(format!("{name}.log")),
        dir.join(format!("{name}.cmd.json")),
    ))
}

/// Starts the daemon detached (own process group, stdin null, output to its log), records
/// its pid and command, and returns the pid. The caller does not wait for it.
pub fn spawn(root: &NodeRoot, spec: &DaemonSpec) -> Result<u32> {
    let (pid_file, log_file, cmd_file) = files(root, &spec.name)?;
    if let Some(pid) = running_pid(root, &spec.name)? {
        anyhow::bail!("{} is already running (pid {pid})", spec.name);
    }
    crate::write_file(&cmd_file, serde_json::to_vec_pretty(spec)?, 0o600)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let log2 = log.try_clone()?;
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // Under a `Type=notify` unit (k3s.service) the stand-in alone speaks for the unit;
        // Debian's etcd would send its own READY=1, which systemd rejects from a child
        // (real k3s embeds etcd in its own process).
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    let pid = child.id();
    // The child outlives us like a static pod outlives `kubeadm`; it is reaped by whoever
    // inherits it. Dropping the handle does not kill it.
    drop(child);
    crate::write_file(&pid_file, format!("{pid}\n"), 0o644)?;
    Ok(pid)
}

/// Starts a daemon again from its recorded command (the stand-in kubelet's job).
pub fn respawn(root: &NodeRoot, name: &str) -> Result<Option<u32>> {
    let (_, _, cmd_file) = files(root, name)?;
    if !cmd_file.exists() {
        return Ok(None);
    }
    if running_pid(root, name)?.is_some() {
        return Ok(None);
    }
    let spec: DaemonSpec = serde_json::from_str(&crate::read_file(&cmd_file)?)?;
    spawn(root, &spec).map(Some)
}

/// Whether `pid` is a live process (a zombie counts as dead).
pub use muster_lab_units::alive;

/// The daemon's pid if its pid file names a live process.
pub fn running_pid(root: &NodeRoot, name: &str) -> Result<Option<u32>> {
    let (pid_file, _, _) = files(root, name)?;
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(None);
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(None);
    };
    Ok(alive(pid).then_some(pid))
}

/// Stops the daemon's process group: SIGTERM, then SIGKILL after `grace`. Removes the pid
/// file. Returns whether something was running.
pub fn stop(root: &NodeRoot, name: &str, grace: Duration) -> Result<bool> {
    let (pid_file, _, _) = files(root, name)?;
    let Some(pid) = running_pid(root, name)? else {
        let _ = std::fs::remove_file(&pid_file);
        return Ok(false);
    };
    let group = Pid::from_raw(pid as i32);
    // Daemons we spawned lead their own group; a foreground process (k3s-standin under a
    // service manager) may not: signal the process itself as well.
    let _ = killpg(group, Signal::SIGTERM);
    let _ = nix::sys::signal::kill(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(true)
}

/// Forgets a daemon entirely (pid file and command record), as removing a manifest does.
pub fn forget(root: &NodeRoot, name: &str) -> Result<()> {
    let (pid_file, _, cmd_file) = files(root, name)?;
    let _ = std::fs::remove_file(pid_file);
    let _ = std::fs::remove_file(cmd_file);
    Ok(())
}
