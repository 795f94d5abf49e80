//! A home lab in network namespaces: one bridge namespace, one namespace per host joined to the bridge by
//! a veth, a per-run prefix and subnet, a sweep of crashed earlier runs, and a `Drop` that
//! kills every process left in the namespaces and deletes them. Needs root and iproute2.
//!
//! Used by the stand-in tests and the assembly test; one lab at a time per test binary.

use crate::standin::{daemon, etcd};
use anyhow::{Context, Result, bail};
use model::node_files::NodeRoot;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Namespaces of every lab start with this, then the owning test process id.
pub const PREFIX: &str = "mst";
/// Lab dirs are `<tmp>/muster-standin-lab-<pid>/<tag>`.
const DIR_PREFIX: &str = "muster-standin-lab-";
/// A command run with [`Lab::exec`] must finish within this.
pub const EXEC_DEADLINE: Duration = Duration::from_secs(150);

fn sh(cmd: &str, args: &[&str]) -> Result<Output> {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd} (scripts/install-test-deps.sh installs it)"))
}

/// Runs a command that must succeed.
pub fn must(cmd: &str, args: &[&str]) -> Result<()> {
    let out = sh(cmd, args)?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Fails unless we are root and every tool is on PATH (with the Debian package to install).
pub fn require(tools: &[(&str, &str)]) -> Result<()> {
    for (tool, pkg) in tools {
        crate::standin::require_tool(tool, pkg)?;
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the namespace lab needs root (ip netns)");
    }
    Ok(())
}

fn netns_list() -> Vec<String> {
    sh("ip", &["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in the namespace, then deletes it (`ip netns del` alone would leave
/// them running in an anonymous namespace).
pub fn kill_netns(ns: &str) {
    let pids = sh("ip", &["netns", "pids", ns])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = sh("ip", &["netns", "del", ns]);
}

/// Namespaces of this process's labs still present (for a leak check at the end of a test).
pub fn own_namespaces() -> Vec<String> {
    let mine = format!("{PREFIX}{}-", std::process::id());
    netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect()
}

/// Removes namespaces and dirs of earlier runs whose process is gone.
pub fn sweep_leftovers() {
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| p != std::process::id() && !daemon::alive(p)) {
            kill_netns(&ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name
                .strip_prefix(DIR_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !daemon::alive(pid)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// One lab at a time (lab-netns.md): every lab of a test binary takes this lock.
static LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a command printed and how it ended.
#[derive(Debug)]
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

/// A long-running process in a namespace, in its own process group; the group is killed
/// and the process reaped on drop (PID 1 here reaps orphans late).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub name: String,
}

impl Daemon {
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

#[derive(Debug)]
pub struct Lab {
    _serial: std::sync::MutexGuard<'static, ()>,
    id: String,
    dir: PathBuf,
    subnet: String,
    namespaces: Vec<String>,
    path_dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_netns(ns);
        }
        if std::env::var_os("MUSTER_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::remove_dir(parent); // only when empty
            }
        }
    }
}

impl Lab {
    /// Bridge namespace `<id>-br` (bridge `br0`) and one namespace per `(host, last octet)`
    /// with `eth0` at `<subnet>.<octet>/24` and `lo` up. `bin_dir` holds the stand-ins.
    pub fn new(tag: &str, bin_dir: &Path, hosts: &[(&str, u8)]) -> Result<Lab> {
        let serial = LAB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        require(&[
            ("ip", "iproute2"),
            ("etcd", "etcd-server"),
            ("etcdctl", "etcd-client"),
        ])?;
        sweep_leftovers();
        let pid = std::process::id();
        let id = format!("{PREFIX}{pid}-{tag}");
        let subnet = format!("10.{}.{}", 200 + (pid % 50), (pid / 50) % 250);
        let dir = std::env::temp_dir()
            .join(format!("{DIR_PREFIX}{pid}"))
            .join(tag);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path_dir = crate::standin::path_dir(bin_dir)?;
        let mut lab = Lab {
            _serial: serial,
            id: id.clone(),
            dir,
            subnet,
            namespaces: vec![],
            path_dir,
        };
        let br = lab.bridge_ns();
        must("ip", &["netns", "add", &br])?;
        lab.namespaces.push(br.clone());
        must(
            "ip",
            &[
                "-n",
                &br,
                "link",
                "add",
                "br0",
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
        must("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        must("ip", &["-n", &br, "link", "set", "lo", "up"])?;
        for (host, octet) in hosts {
            let ns = lab.ns(host);
            must("ip", &["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let veth = format!("v-{host}");
            must(
                "ip",
                &[
                    "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            must(
                "ip",
                &["-n", &br, "link", "set", &veth, "master", "br0", "up"],
            )?;
            let addr = format!("{}/24", lab.ip(*octet));
            must("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            must("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            must("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let manifests = lab.root(host).join("etc/kubernetes/manifests");
            std::fs::create_dir_all(&manifests)
                .with_context(|| format!("creating {}", manifests.display()))?;
        }
        Ok(lab)
    }

    /// Gives the bridge itself an address (a server in the bridge namespace, e.g. the
    /// rendezvous, is then reachable from every host).
    pub fn bridge_addr(&self, octet: u8) -> Result<String> {
        let ip = self.ip(octet);
        must(
            "ip",
            &[
                "-n",
                &self.bridge_ns(),
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "br0",
            ],
        )?;
        Ok(ip)
    }

    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.id)
    }
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.id)
    }
    /// `a.b.c` of the lab's /24.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }
    pub fn ip(&self, octet: u8) -> String {
        format!("{}.{octet}", self.subnet)
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn root(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }
    pub fn node_root(&self, host: &str) -> NodeRoot {
        NodeRoot::new(self.root(host))
    }
    /// The stand-in PATH dir (`kubeadm`, `k3s`, `apiserver-standin`, ...).
    pub fn path_dir(&self) -> &Path {
        &self.path_dir
    }

    /// `PATH` with the stand-ins first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.path_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Writes `rel` under the host's root; returns the absolute path.
    pub fn write(&self, host: &str, rel: &str, text: &str) -> Result<String> {
        let p = self.root(host).join(rel);
        crate::standin::write_file(&p, text, 0o644)?;
        Ok(p.display().to_string())
    }

    /// Runs PROGRAM inside the host's namespace with the stand-in PATH and node root, to
    /// completion (within [`EXEC_DEADLINE`]), and echoes what it printed to stderr.
    pub fn exec(
        &self,
        host: &str,
        env: &[(&str, &str)],
        program: &str,
        args: &[&str],
    ) -> Result<Out> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .env("PATH", self.path_env())
            .env("MUSTER_NODE_ROOT", self.root(host))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
        // Read both pipes on threads so a chatty child never blocks; enforce a deadline.
        let mut so = child.stdout.take().context("no stdout pipe")?;
        let mut se = child.stderr.take().context("no stderr pipe")?;
        let t1 = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut so, &mut s);
            s
        });
        let t2 = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut se, &mut s);
            s
        });
        let deadline = Instant::now() + EXEC_DEADLINE;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{program} {args:?} on {host} did not finish within {EXEC_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = Out {
            code: status.code(),
            stdout: t1.join().unwrap_or_default(),
            stderr: t2.join().unwrap_or_default(),
        };
        eprintln!(
            "--- {host}: {program} {args:?} -> {:?}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        Ok(out)
    }

    /// Starts `argv` in namespace `ns` (a full name: [`Lab::ns`] or [`Lab::bridge_ns`]) in
    /// its own process group, output appended to `log`.
    pub fn spawn_in(
        &self,
        name: &str,
        ns: &str,
        env: &[(&str, String)],
        argv: &[&str],
        log: &Path,
    ) -> Result<Daemon> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(argv)
            .env("PATH", self.path_env())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {argv:?}"))?;
        Ok(Daemon {
            child,
            name: name.to_string(),
        })
    }

    /// Starts PROGRAM in the host's namespace with the stand-in PATH and node root; output
    /// to `<lab>/<host>-<program>.log`.
    pub fn spawn(&self, host: &str, program: &str, args: &[&str]) -> Result<Daemon> {
        let log = self.dir.join(format!("{host}-{program}.log"));
        let mut argv = vec![program];
        argv.extend_from_slice(args);
        let root = self.root(host).display().to_string();
        self.spawn_in(
            &format!("{host}/{program}"),
            &self.ns(host),
            &[("MUSTER_NODE_ROOT", root)],
            &argv,
            &log,
        )
    }

    /// `etcdctl` against the host's local member with the kubeadm apiserver client cert.
    pub fn etcdctl(&self, host: &str, args: &[&str]) -> Result<Out> {
        let pki = self.root(host).join("etc/kubernetes/pki");
        let mut full = vec![
            "--endpoints=https://127.0.0.1:2379".to_string(),
            format!("--cacert={}", pki.join("etcd/ca.crt").display()),
            format!("--cert={}", pki.join("apiserver-etcd-client.crt").display()),
            format!("--key={}", pki.join("apiserver-etcd-client.key").display()),
            "--command-timeout=5s".to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        self.exec(host, &[("ETCDCTL_API", "3")], "etcdctl", &refs)
    }

    /// `etcdctl member list` through the host's member.
    pub fn members(&self, host: &str) -> Result<Vec<etcd::Member>> {
        let out = self.etcdctl(host, &["member", "list", "-w", "json"])?;
        if !out.ok() {
            bail!("member list on {host} failed: {}", out.stderr);
        }
        etcd::parse_member_list(&out.stdout)
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
            bail!("timed out after {patience:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
    Ok(())
}
