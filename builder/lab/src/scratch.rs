//! A scratch lab for tests that drive the stand-ins by hand (tests/tests/standins.rs): hosts
//! on a bridge, a per-process prefix (`mst<pid>-<tag>`) and subnet, a sweep of what crashed
//! earlier test processes left, daemons owned by the test ([`netns::Daemon`]), and a `Drop`
//! that kills every process in the namespaces and deletes them. One at a time per process.
//! Whole clusters use [`crate::Lab`] instead.

use crate::error::{LabError, Result};
use crate::netns::{self, Daemon, Out};
use std::path::{Path, PathBuf};

/// Namespaces of every scratch lab start with this, then the owning process id.
pub const PREFIX: &str = "mst";
/// Scratch dirs are `<tmp>/muster-standin-lab-<pid>/<tag>`.
const DIR_PREFIX: &str = "muster-standin-lab-";

/// Namespaces of this process's scratch labs still present (a leak check for tests).
pub fn own_namespaces() -> Vec<String> {
    let mine = format!("{PREFIX}{}-", std::process::id());
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect()
}

/// Removes namespaces and dirs of earlier test processes that are gone.
pub fn sweep_leftovers() {
    let me = std::process::id();
    let gone = |pid: u32| pid != me && !netns::alive(pid);
    for ns in netns::list() {
        let pid = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(gone) {
            let _ = netns::delete(&ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name
                .strip_prefix(DIR_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(gone)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Debug)]
pub struct ScratchLab {
    _serial: std::sync::MutexGuard<'static, ()>,
    id: String,
    dir: PathBuf,
    subnet: String,
    namespaces: Vec<String>,
    path_dir: PathBuf,
}

impl Drop for ScratchLab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = netns::delete(ns);
        }
        if std::env::var_os("MUSTER_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::remove_dir(parent); // only when empty
            }
        }
    }
}

impl ScratchLab {
    /// Bridge namespace `<id>-br` and one namespace per `(host, last octet)` with `eth0` at
    /// `<subnet>.<octet>/24` and `lo` up. `bin_dir` holds the stand-ins.
    pub fn new(tag: &str, bin_dir: &Path, hosts: &[(&str, u8)]) -> Result<ScratchLab> {
        let serial = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !nix::unistd::Uid::effective().is_root() {
            return Err(LabError::NotRoot);
        }
        for (tool, package) in crate::prereq::ALWAYS {
            crate::prereq::require(tool, package)?;
        }
        sweep_leftovers();
        let pid = std::process::id();
        let dir = std::env::temp_dir()
            .join(format!("{DIR_PREFIX}{pid}"))
            .join(tag);
        std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
        let path_dir = crate::standins::path_dir(bin_dir, &dir.join("standin-path"))?;
        let mut lab = ScratchLab {
            _serial: serial,
            id: format!("{PREFIX}{pid}-{tag}"),
            dir,
            // 10.200–10.239: clear of the default pod networks (flannel's 10.244/16, k3s's
            // 10.42/16) and service ranges, which a spec's subnet must not overlap.
            subnet: format!("10.{}.{}", 200 + (pid % 40), (pid / 40) % 250),
            namespaces: vec![],
            path_dir,
        };
        let br = lab.bridge_ns();
        netns::create_bridge(&br)?;
        lab.namespaces.push(br.clone());
        for (host, octet) in hosts {
            let ns = lab.ns(host);
            let link = netns::HostLink {
                ns: &ns,
                veth: &format!("v-{host}"),
                iface: "eth0",
                cidr: &format!("{}/24", lab.ip(*octet)),
            };
            let added = netns::add_host(&br, &link);
            lab.namespaces.push(ns.clone());
            added?;
            let manifests = lab.root(host).join("etc/kubernetes/manifests");
            std::fs::create_dir_all(&manifests).map_err(LabError::io(&manifests))?;
        }
        Ok(lab)
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
    pub fn node_root(&self, host: &str) -> model::node_files::NodeRoot {
        model::node_files::NodeRoot::new(self.root(host))
    }

    fn env(&self, host: &str) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), crate::standins::path_env(&self.path_dir)),
            (
                "MUSTER_NODE_ROOT".into(),
                self.root(host).display().to_string(),
            ),
        ]
    }

    /// Writes `rel` under the host's root; returns the absolute path.
    pub fn write(&self, host: &str, rel: &str, text: &str) -> Result<String> {
        let p = self.root(host).join(rel);
        muster_build::bake::write::write_atomic(&p, text.as_bytes(), 0o644)
            .map_err(LabError::io(&p))?;
        Ok(p.display().to_string())
    }

    /// Runs PROGRAM in the host's namespace with the stand-in PATH and node root, to
    /// completion (within [`netns::EXEC_DEADLINE`]), and echoes what it printed to stderr.
    pub fn exec(
        &self,
        host: &str,
        env: &[(&str, &str)],
        program: &str,
        args: &[&str],
    ) -> Result<Out> {
        let mut all = self.env(host);
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cmd = netns::command(&self.ns(host), &all, program);
        cmd.args(args);
        let out = netns::run(
            cmd,
            &format!("{host}: {program} {args:?}"),
            netns::EXEC_DEADLINE,
        )?;
        eprintln!(
            "--- {host}: {program} {args:?} -> {:?}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        Ok(out)
    }

    /// Gives the bridge itself an address, so a server in the bridge namespace (e.g. the
    /// rendezvous) is reachable from every host.
    pub fn bridge_addr(&self, octet: u8) -> Result<String> {
        let ip = self.ip(octet);
        netns::add_addr(&self.bridge_ns(), "br0", &format!("{ip}/24"))?;
        Ok(ip)
    }

    /// Starts `argv` in namespace `ns` (a full name: [`Self::ns`] or [`Self::bridge_ns`])
    /// with the stand-in PATH and `env`, owned by the caller; output appended to `log`.
    pub fn spawn_in(
        &self,
        name: &str,
        ns: &str,
        env: &[(&str, String)],
        argv: &[&str],
        log: &Path,
    ) -> Result<Daemon> {
        let (program, args) = argv.split_first().ok_or_else(|| LabError::Command {
            cmd: format!("starting {name}"),
            detail: "empty command line".into(),
        })?;
        let mut all = vec![(
            "PATH".to_string(),
            crate::standins::path_env(&self.path_dir),
        )];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut cmd = netns::command(ns, &all, program);
        cmd.args(args);
        Daemon::spawn(name, cmd, log)
    }

    /// Starts PROGRAM in the host's namespace with the stand-in PATH and node root, owned by
    /// the caller; output to `<lab>/<host>-<program>.log`.
    pub fn spawn(&self, host: &str, program: &str, args: &[&str]) -> Result<Daemon> {
        let mut cmd = netns::command(&self.ns(host), &self.env(host), program);
        cmd.args(args);
        Daemon::spawn(
            &format!("{host}/{program}"),
            cmd,
            &self.dir.join(format!("{host}-{program}.log")),
        )
    }

    /// `etcdctl` against the host's local member with the kubeadm API-server client cert.
    pub fn etcdctl(&self, host: &str, args: &[&str]) -> Result<Out> {
        let mut full = crate::etcdctl_flags(&self.root(host));
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        self.exec(host, &[("ETCDCTL_API", "3")], "etcdctl", &refs)
    }
}
