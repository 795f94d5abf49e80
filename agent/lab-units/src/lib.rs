//! LAB ONLY (`nodeagent run --lab`): the service runner for the units whose command the lab
//! cannot run on its own — `k3s.service` (`k3s server`) and `k3s-agent.service`
//! (`k3s agent`), the command lines the k3s install script puts in those units (`k3s` from
//! PATH; in the lab the k3s stand-in is first there). muster's config file
//! (`/etc/rancher/k3s/config.yaml` and its drop-ins) carries everything else, as on a node.
//!
//! A started unit runs DETACHED: its own session (`setsid`), output appended to
//! `<root>/run/muster-lab/<unit>.log`, its pid in `<root>/run/muster-lab/<unit>.pid`. Its
//! state is whether that pid is alive, so a restarted agent finds the unit running.
//! Enabling a unit leaves a marker where systemd would (`<root>/etc/systemd/system/
//! multi-user.target.wants/<unit>`); the lab's boot step starts the enabled units, as
//! systemd does at boot ([`enabled`]).

pub mod daemon;

use model::fsutil::write_atomic;
use model::node_files::NodeRoot;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pid and log files of the units the runner started, under the node's root.
pub const RUN_DIR: &str = "run/muster-lab";
/// Where enabling a unit leaves its marker, under the node's root (systemd's own place).
pub const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
/// How long a stopped unit gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The command line of a unit the runner runs; `None` for every other unit.
pub fn command(unit: &str) -> Option<&'static [&'static str]> {
    match unit {
        "k3s.service" => Some(&["k3s", "server"]),
        "k3s-agent.service" => Some(&["k3s", "agent"]),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lab unit {unit}: {detail}")]
pub struct LabUnitError {
    pub unit: String,
    pub detail: String,
}

fn fail(unit: &str, detail: impl std::fmt::Display) -> LabUnitError {
    LabUnitError {
        unit: unit.to_string(),
        detail: detail.to_string(),
    }
}

/// One runnable unit on one node's disk.
#[derive(Debug, Clone)]
pub struct LabUnit {
    pub unit: String,
    pub argv: Vec<String>,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

/// Where the k3s install script puts the binary its units run, under the node's root.
pub use model::node_files::K3S_BINARY;

/// The runnable unit `unit` on the node at `root`, if the runner knows it: its program is
/// the node's own [`K3S_BINARY`] when there is one (read at every start, so a swapped
/// binary runs after a restart), else the command's name on PATH.
pub fn unit(root: &NodeRoot, unit: &str) -> Option<LabUnit> {
    let argv = command(unit)?;
    let dir = root.path(RUN_DIR);
    let installed = root.path(K3S_BINARY);
    let argv = argv.iter().enumerate().map(|(i, a)| match i {
        0 if installed.is_file() => installed.display().to_string(),
        _ => a.to_string(),
    });
    Some(LabUnit {
        unit: unit.to_string(),
        argv: argv.collect(),
        pid_file: dir.join(format!("{unit}.pid")),
        log: dir.join(format!("{unit}.log")),
    })
}

/// The runnable units enabled on the node at `root`, in name order.
pub fn enabled(root: &NodeRoot) -> Vec<LabUnit> {
    let Ok(entries) = std::fs::read_dir(root.path(WANTS_DIR)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().filter_map(|n| unit(root, n)).collect()
}

/// Waits (up to 5 s) until `setsid` has made `pid` the leader of its own session, so a
/// stop right after the start reaches the whole group (the child runs `setsid()` only
/// after the fork returned here). Returns early when the process is gone.
fn wait_for_own_session(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let target = nix::unistd::Pid::from_raw(raw);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && alive(pid) {
        if nix::unistd::getsid(Some(target)).is_ok_and(|sid| sid == target) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

impl LabUnit {
    /// The pid in the pid file, if it names a live process.
    pub fn running(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// `active` while its process lives; `failed` when it was started and died; else
    /// `inactive`.
    pub fn active_state(&self) -> &'static str {
        if self.running().is_some() {
            "active"
        } else if self.pid_file.exists() {
            "failed"
        } else {
            "inactive"
        }
    }

    /// Starts the command detached (a no-op while it runs, like `systemctl start`).
    pub fn start(&self) -> Result<u32, LabUnitError> {
        if let Some(pid) = self.running() {
            return Ok(pid);
        }
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| fail(&self.unit, "empty command line"))?;
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&self.unit, e))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| fail(&self.unit, format!("{}: {e}", self.log.display())))?;
        let err = log.try_clone().map_err(|e| fail(&self.unit, e))?;
        let mut child = Command::new("setsid")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| fail(&self.unit, format!("setsid {}: {e}", self.argv.join(" "))))?;
        let pid = child.id();
        // Reaped by this thread while the agent lives, by init after.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        wait_for_own_session(pid);
        write_atomic(&self.pid_file, format!("{pid}\n").as_bytes(), 0o644)
            .map_err(|e| fail(&self.unit, e))?;
        tracing::info!(unit = %self.unit, pid, cmd = %self.argv.join(" "), "lab: unit started");
        Ok(pid)
    }

    /// SIGTERM to its session's process group, SIGKILL after the grace period; the pid
    /// file goes (the unit reads `inactive`). Returns whether it was running.
    pub fn stop(&self) -> bool {
        self.stop_within(STOP_GRACE)
    }

    fn stop_within(&self, grace: Duration) -> bool {
        use nix::sys::signal::{Signal, killpg};
        let running = self.running();
        if let Some(pid) = running
            && let Ok(raw) = i32::try_from(pid)
        {
            let group = nix::unistd::Pid::from_raw(raw);
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(group, Signal::SIGKILL);
            tracing::info!(unit = %self.unit, pid, "lab: unit stopped");
        }
        let _ = std::fs::remove_file(&self.pid_file);
        running.is_some()
    }

    /// Leaves the enable marker (an empty file where systemd puts its symlink).
    pub fn enable(&self, root: &NodeRoot) -> Result<(), LabUnitError> {
        write_atomic(&root.path(WANTS_DIR).join(&self.unit), b"", 0o644)
            .map_err(|e| fail(&self.unit, e))
    }
}

/// Finds `tool` on PATH, then in the sbin dirs (sudo's PATH may lack them).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit whose command is `argv` (the k3s stand-in is not built for agent tests).
    fn fake(root: &NodeRoot, argv: &[&str]) -> LabUnit {
        let mut u = unit(root, "k3s.service").unwrap();
        u.argv = argv.iter().map(|a| a.to_string()).collect();
        u
    }

    #[test]
    fn only_the_k3s_units_have_commands() {
        assert_eq!(command("k3s.service"), Some(&["k3s", "server"][..]));
        assert_eq!(command("k3s-agent.service"), Some(&["k3s", "agent"][..]));
        assert_eq!(command("keepalived.service"), None);
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let u = unit(&root, "k3s-agent.service").unwrap();
        assert_eq!(
            u.pid_file,
            dir.path().join("run/muster-lab/k3s-agent.service.pid")
        );
        assert_eq!(
            u.log,
            dir.path().join("run/muster-lab/k3s-agent.service.log")
        );
        assert_eq!(u.argv, ["k3s", "agent"]);
        // The node's own binary, once the image or an upgrade put one there.
        std::fs::create_dir_all(dir.path().join("usr/local/bin")).unwrap();
        std::fs::write(dir.path().join(K3S_BINARY), "#!/bin/sh\n").unwrap();
        let u = unit(&root, "k3s-agent.service").unwrap();
        assert_eq!(
            u.argv,
            [
                dir.path().join(K3S_BINARY).display().to_string(),
                "agent".into()
            ]
        );
    }

    #[test]
    fn start_runs_detached_and_state_follows_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let u = fake(&root, &["sh", "-c", "echo up; exec sleep 30"]);
        assert_eq!(u.active_state(), "inactive");
        let pid = u.start().unwrap();
        assert_eq!(u.active_state(), "active");
        // Started again while it runs: the same process.
        assert_eq!(u.start().unwrap(), pid);
        // Its own session (start waits for `setsid`): a process group of its own.
        let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(sid.as_raw(), pid as i32);
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(pgid.as_raw(), pid as i32);
        // A second runner (a restarted agent) finds it through the pid file.
        let again = unit(&root, "k3s.service").unwrap();
        assert_eq!(again.running(), Some(pid));
        // Its output goes to the unit's log (waited for before the stop: a loaded machine
        // may not have run the `echo` yet).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&u.log).unwrap().contains("up") {
            assert!(Instant::now() < deadline, "nothing logged");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(u.stop_within(Duration::from_secs(5)));
        assert!(!alive(pid));
        assert_eq!(u.active_state(), "inactive");
        assert!(!u.stop_within(Duration::from_secs(1)));
    }

    #[test]
    fn a_unit_that_died_reads_failed_and_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let u = fake(&root, &["sh", "-c", "exit 3"]);
        let pid = u.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < deadline, "exit 3 did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(u.active_state(), "failed");
        let long = fake(&root, &["sleep", "30"]);
        let pid2 = long.start().unwrap();
        assert_ne!(pid, pid2);
        assert_eq!(long.active_state(), "active");
        assert!(long.stop_within(Duration::from_secs(5)));
    }

    #[test]
    fn enabled_lists_the_runnable_enabled_units() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        assert!(enabled(&root).is_empty());
        unit(&root, "k3s-agent.service")
            .unwrap()
            .enable(&root)
            .unwrap();
        // A unit the runner does not know is enabled too, but not its business.
        std::fs::write(root.path(WANTS_DIR).join("keepalived.service"), "").unwrap();
        let names: Vec<String> = enabled(&root).into_iter().map(|u| u.unit).collect();
        assert_eq!(names, vec!["k3s-agent.service".to_string()]);
    }
}
