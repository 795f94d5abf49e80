//! The lab's daemons (agents, keepalived, HAProxy, nginx, the rendezvous) run DETACHED: each
//! in a session of its own (`setsid`), inside its namespace (`ip netns exec`, which execs, so
//! the pid is the daemon's), output appended to its log, its pid in a pid file. They outlive
//! the `muster lab` command that started them; later commands find them by pid file.

use crate::error::{LabError, Result};
use crate::netns;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How to run one daemon of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `agent`, `keepalived`, `haproxy`, `nginx`, `rendezvous`.
    pub name: String,
    /// The network namespace; empty: this machine's own.
    pub ns: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

/// The pid in `pid_file` if it names a live process.
pub fn running(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    netns::alive(pid).then_some(pid)
}

/// Starts the service detached and records its pid. A child of this process is reaped by
/// a thread of ours while we live, by init afterwards.
pub fn start(s: &Service) -> Result<u32> {
    if let Some(pid) = running(&s.pid_file) {
        return Ok(pid);
    }
    let (program, args) = s.argv.split_first().ok_or_else(|| LabError::Command {
        cmd: format!("starting {}", s.name),
        detail: "empty command line".into(),
    })?;
    if let Some(dir) = s.log.parent() {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .map_err(LabError::io(&s.log))?;
    let err = log.try_clone().map_err(LabError::io(&s.log))?;
    let mut cmd = std::process::Command::new("setsid");
    if !s.ns.is_empty() {
        cmd.args(["ip", "netns", "exec", &s.ns]);
    }
    cmd.arg(program)
        .args(args)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    let mut child = cmd.spawn().map_err(|e| LabError::Command {
        cmd: format!("starting {} in {}: {}", s.name, s.ns, s.argv.join(" ")),
        detail: format!("{e} (setsid is in util-linux)"),
    })?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    muster_build::bake::write::write_atomic(&s.pid_file, format!("{pid}\n").as_bytes(), 0o644)
        .map_err(LabError::io(&s.pid_file))?;
    Ok(pid)
}

/// SIGTERM to the service's session group, SIGKILL after `grace`; removes the pid file.
/// Returns whether it was running.
pub fn stop(pid_file: &Path, grace: Duration) -> bool {
    use nix::sys::signal::{Signal, killpg};
    let Some(pid) = running(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return false;
    };
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let group = nix::unistd::Pid::from_raw(raw);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while netns::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(group, Signal::SIGKILL);
    // SIGKILL is delivered asynchronously: until the process has exited it still holds its
    // listening sockets and files, and a successor started now could find its port taken
    // while a connect probe still reached the dying one (seen in CI: a restarted
    // rendezvous that never came up).
    let gone_by = Instant::now() + KILL_PATIENCE;
    while netns::alive(pid) && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(pid_file);
    true
}

/// How long `stop` waits for a SIGKILLed process to be gone.
const KILL_PATIENCE: Duration = Duration::from_secs(10);
