//! Network-namespace primitives (measured facts: /work/shared/notes/lab-netns.md): a bridge
//! in a namespace of its own, one namespace per host joined to it by a veth whose far end is
//! created directly inside the host, commands run with `ip netns exec` (it remounts `/sys`),
//! and teardown that kills every process inside a namespace before deleting it (`ip netns
//! del` alone leaves them running in an anonymous namespace). Needs root and iproute2.

use crate::error::{LabError, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command run to completion with [`run`] must finish within this.
pub const EXEC_DEADLINE: Duration = Duration::from_secs(150);
/// The bridge inside the bridge namespace.
pub const BRIDGE: &str = "br0";

fn show(cmd: &str, args: &[&str]) -> String {
    format!("{cmd} {}", args.join(" "))
}

/// Runs a command that must succeed (iproute2 and friends).
pub fn must(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: show(cmd, args),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: show(cmd, args),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn stdout_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Every network namespace on the machine (`ip netns list`).
pub fn list() -> Vec<String> {
    stdout_of("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Pids of the processes inside `ns`.
pub fn pids(ns: &str) -> Vec<u32> {
    stdout_of("ip", &["netns", "pids", ns])
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as dead: PID 1 here reaps orphans late).
pub use muster_lab_units::alive;

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }
}

/// SIGKILLs every process in `ns` and waits (up to 5 s) until none is left alive.
/// Returns the pids still alive after that.
pub fn kill_all(ns: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids(ns).into_iter().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        for pid in &left {
            signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills everything inside `ns`, then deletes it. Errors name what is left.
pub fn delete(ns: &str) -> Result<()> {
    let left = kill_all(ns);
    let _ = must("ip", &["netns", "del", ns]);
    if !left.is_empty() {
        return Err(LabError::Command {
            cmd: format!("killing the processes in {ns}"),
            detail: format!("still alive: {left:?}"),
        });
    }
    if list().iter().any(|n| n == ns) {
        return Err(LabError::Command {
            cmd: format!("ip netns del {ns}"),
            detail: "the namespace is still there".into(),
        });
    }
    Ok(())
}

/// A namespace holding the bridge `br0` (STP off, no forward delay, no multicast snooping:
/// VRRP multicast and new ports work at once), `lo` up.
pub fn create_bridge(ns: &str) -> Result<()> {
    must("ip", &["netns", "add", ns])?;
    must(
        "ip",
        &[
            "-n",
            ns,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ],
    )?;
    must("ip", &["-n", ns, "link", "set", BRIDGE, "up"])?;
    must("ip", &["-n", ns, "link", "set", "lo", "up"])
}

/// One host on the bridge: namespace `ns`, veth `veth` on the bridge side (≤ 15 chars),
/// `iface` inside the host with `cidr` (`a.b.c.d/len`), both ends and `lo` up.
#[derive(Debug, Clone)]
pub struct HostLink<'a> {
    pub ns: &'a str,
    pub veth: &'a str,
    pub iface: &'a str,
    pub cidr: &'a str,
}

pub fn add_host(bridge_ns: &str, h: &HostLink<'_>) -> Result<()> {
    must("ip", &["netns", "add", h.ns])?;
    must(
        "ip",
        &[
            "-n", bridge_ns, "link", "add", h.veth, "type", "veth", "peer", "name", h.iface,
            "netns", h.ns,
        ],
    )?;
    must(
        "ip",
        &[
            "-n", bridge_ns, "link", "set", h.veth, "master", BRIDGE, "up",
        ],
    )?;
    must("ip", &["-n", h.ns, "addr", "add", h.cidr, "dev", h.iface])?;
    must("ip", &["-n", h.ns, "link", "set", h.iface, "up"])?;
    must("ip", &["-n", h.ns, "link", "set", "lo", "up"])
}

/// Link loss: the bridge-side end of a host's veth down (or up again).
pub fn set_link(bridge_ns: &str, veth: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    must("ip", &["-n", bridge_ns, "link", "set", veth, state])
}

/// Adds `cidr` to `dev` in `ns`.
pub fn add_addr(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    must("ip", &["-n", ns, "addr", "add", cidr, "dev", dev])
}

/// Removes `cidr` from `dev` in `ns` if it is there (a halted machine forgets its VIP).
pub fn remove_addr(ns: &str, dev: &str, cidr: &str) {
    let _ = must("ip", &["-n", ns, "addr", "del", cidr, "dev", dev]);
}

/// Whether `ip` is configured on `dev` in `ns`.
pub fn has_addr(ns: &str, dev: &str, ip: &str) -> bool {
    let text = stdout_of("ip", &["-n", ns, "-4", "-o", "addr", "show", "dev", dev]);
    let needle = format!("inet {ip}/");
    text.contains(&needle)
}

/// `ip netns exec NS PROGRAM` with the given environment, stdin null.
pub fn command(
    ns: &str,
    env: &[(String, String)],
    program: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `f` on a thread that entered `ns` (network namespaces are per thread), for
/// in-process clients (the rendezvous audit, probes).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = Path::new("/var/run/netns").join(ns);
    let file = std::fs::File::open(&path).map_err(LabError::io(&path))?;
    let ns_name = ns.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            LabError::Command {
                cmd: format!("setns {ns_name}"),
                detail: e.to_string(),
            }
        })?;
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Command {
        cmd: format!("a thread in {ns}"),
        detail: "panicked".into(),
    })?
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion within `deadline`, capturing both streams (read on threads so
/// a chatty child never blocks).
pub fn run(mut cmd: Command, what: &str, deadline: Duration) -> Result<Out> {
    let fail = |detail: String| LabError::Command {
        cmd: what.to_string(),
        detail,
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let so = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let se = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("did not finish within {deadline:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Out {
        code: status.code(),
        stdout: so.join().unwrap_or_default(),
        stderr: se.join().unwrap_or_default(),
    })
}

/// A long-running process owned by the caller, in its own process group; the group is
/// killed and the process reaped on drop. For harnesses that start daemons by hand; the
/// lab's own daemons are detached instead (`process`).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in its own process group, output appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(LabError::io(log))?;
        let err = file.try_clone().map_err(LabError::io(log))?;
        let child = cmd
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: format!("starting {name}"),
                detail: e.to_string(),
            })?;
        Ok(Daemon {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// The last `lines` lines of its log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(reading {}: {e})", self.log.display()));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the group, SIGKILL after `patience`; reaps.
    pub fn stop(&mut self, patience: Duration) {
        use nix::sys::signal::{Signal, killpg};
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        let pgid = nix::unistd::Pid::from_raw(pid);
        if self.exited().is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = Instant::now() + patience;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Polls `f` every `every` until it holds or `patience` runs out.
pub fn wait_until(
    what: &str,
    patience: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    while !f() {
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: what.to_string(),
                patience,
            });
        }
        std::thread::sleep(every);
    }
    Ok(())
}
