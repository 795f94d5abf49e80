//! A cluster of real VMs on this machine: one QEMU VM per planned node of a `muster build`
//! output, booted from a node image (`muster image build`), all inside one network
//! namespace so nothing touches the host's own network.
//!
//! Per node: a qcow2 overlay on the image, the node's NoCloud seed volume
//! (`nodes/<name>/seed.img`), a tap on the namespace's bridge with the planned MAC, direct
//! kernel boot, the console (ttyS0) and the test image's reporter port (ttyS1) to files.
//! In the namespace: the bridge carries the spec's gateway and rendezvous addresses, `muster
//! rendezvous` runs there with the build's certificate and keys, and an NTP server serves
//! this host's clock on the gateway. The accelerator is the one that really boots (`accel`).
//!
//! `VmCluster::up` → `wait_assembled` → `audit` / `members` / `report` → `down` (or drop).

use super::accel::{self, Accel, Probe};
use super::ntp::NtpServer;
use super::report::{BootTimeline, NodeReport};
use super::{DirectBoot, accel::PANIC_MARKER};
use model::Role;
use model::baked::BakedCluster;
use model::secret::ClusterSecret;
use protocol::wire::AuditEntry;
use protocol::{Client, ClientError, PlainMember};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what}: {}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: `{command}` failed: {detail}")]
    Command {
        what: String,
        command: String,
        detail: String,
    },
    #[error("{}: {detail}", path.display())]
    Build { path: PathBuf, detail: String },
    #[error("VM {node}: qemu exited ({status}); its console's last lines:\n{tail}")]
    VmExited {
        node: String,
        status: String,
        tail: String,
    },
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    #[error("not assembled within {seconds}s: {detail}")]
    Timeout { seconds: u64, detail: String },
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| ClusterError::Io { what, path, source }
}

/// How to run the VMs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Overlays, console logs, reports, the rendezvous' data and log go here.
    pub work_dir: PathBuf,
    /// The network namespace to create (and delete at `down`).
    pub netns: String,
    /// The `muster` binary that serves the rendezvous.
    pub muster_bin: PathBuf,
    /// Memory per VM. Under TCG one vCPU per VM; CPU, not memory, is the limit here.
    pub control_plane_memory_mib: u64,
    pub worker_memory_mib: u64,
    /// `None`: probe (a real KVM boot in a time box, else TCG).
    pub accel: Option<Accel>,
    /// Appended to the image's kernel command line ([`LAB_KERNEL_ARGS`] by default).
    pub extra_kernel_args: String,
}

/// What the lab adds to the image's kernel command line: no KVM modules in the guests
/// (under TCG `-cpu max` shows SVM: udev loaded kvm_amd, and nested VMs are not what the
/// lab tests) and no crypto self-tests when algorithms register (emulated CPU spent on
/// nothing the lab checks; their share of the boot was not measured on its own).
pub const LAB_KERNEL_ARGS: &str = "modprobe.blacklist=kvm,kvm_amd,kvm_intel cryptomgr.notests";

/// Namespaces of VM labs are `musvm<pid>`; a lab whose process died is swept by the next.
pub const NETNS_PREFIX: &str = "musvm";

impl ClusterOptions {
    /// Defaults that fit a 2-core, 23 GB machine with 6 VMs (about 5 GiB in all).
    pub fn new(work_dir: PathBuf, muster_bin: PathBuf) -> ClusterOptions {
        ClusterOptions {
            work_dir,
            netns: format!("{NETNS_PREFIX}{}", std::process::id()),
            muster_bin,
            control_plane_memory_mib: 1024,
            worker_memory_mib: 768,
            accel: None,
            extra_kernel_args: LAB_KERNEL_ARGS.into(),
        }
    }
}

/// A built node image: the qcow2, its kernel and initrd, and the kernel command line
/// (from `image.json`).
#[derive(Debug, Clone)]
pub struct VmImage {
    pub qcow2: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl VmImage {
    /// The outputs of `muster image build --out DIR`.
    pub fn from_dir(dir: &Path) -> Result<VmImage, ClusterError> {
        let report_path = dir.join(muster_build::image::REPORT);
        let text = std::fs::read(&report_path).map_err(io_err("image report", &report_path))?;
        let report: muster_build::image::ImageReport =
            serde_json::from_slice(&text).map_err(|e| ClusterError::Build {
                path: report_path.clone(),
                detail: e.to_string(),
            })?;
        let abs = |name: &str| {
            let p = dir.join(name);
            p.canonicalize().map_err(io_err("image file", &p))
        };
        Ok(VmImage {
            qcow2: abs(muster_build::image::QCOW2)?,
            kernel: abs(muster_build::image::KERNEL)?,
            initrd: abs(muster_build::image::INITRD)?,
            cmdline: report.kernel_cmdline,
        })
    }
}

/// When the host saw each boot milestone of one VM, in seconds after the VMs were started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootTimes {
    /// The kernel's first console line (`Linux version …`): firmware and kernel loading
    /// took until about then (to the console poll's resolution).
    pub kernel_started: Option<f64>,
    /// cloud-init finished all its stages with the node's seed as its datasource (its
    /// last console line names `DataSourceNoCloud [seed=/dev/vdb]`). The agent does not
    /// wait for this: it is ordered after the network, not after `cloud-final`.
    pub cloud_init_finished: Option<f64>,
    /// The agent's first output on the console (its `starting` line).
    pub agent_started: Option<f64>,
    /// The rendezvous first listed the node as a member.
    pub registered: Option<f64>,
    /// The node reported `done` at the rendezvous.
    pub joined: Option<f64>,
}

/// Console text of cloud-init's last line when it used the NoCloud seed volume.
pub const SEED_MARKER: &str = "DataSourceNoCloud [seed=/dev/vdb]";
/// Console text of the agent's first log line (`nodeagent: starting node=… version=…`).
pub const AGENT_MARKER: &str = "nodeagent: starting";
/// The kernel's first console line.
pub const KERNEL_MARKER: &str = "Linux version ";

struct Vm {
    name: String,
    role: Role,
    ip: Ipv4Addr,
    serial: PathBuf,
    report: PathBuf,
    child: Option<Child>,
    times: BootTimes,
}

/// The running VMs, the namespace and its services. `down` (or drop) removes everything.
pub struct VmCluster {
    opts: ClusterOptions,
    baked: BakedCluster,
    secret: ClusterSecret,
    vms: Vec<Vm>,
    rendezvous: Option<Child>,
    ntp: Option<NtpServer>,
    netns_made: bool,
    started: Instant,
    probe: Probe,
}

impl std::fmt::Debug for VmCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmCluster")
            .field("netns", &self.opts.netns)
            .field("nodes", &self.nodes())
            .field("accel", &self.probe.accel)
            .finish_non_exhaustive()
    }
}

fn sh(what: &str, cmd: &mut Command) -> Result<String, ClusterError> {
    let command = muster_build::image::run::describe(cmd);
    let out = cmd.output().map_err(|e| ClusterError::Command {
        what: what.into(),
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            what: what.into(),
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}

/// `host:port` of an `https://A.B.C.D:PORT` URL.
fn url_addr(url: &str) -> Option<(Ipv4Addr, u16)> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    Some((host.parse().ok()?, port.parse().ok()?))
}

/// Labs left behind by killed runs: `musvm<pid>` namespaces whose pid is gone. Their
/// processes (QEMU, the rendezvous) are killed and the namespaces deleted.
fn sweep_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("vm lab: removing {name}, left by a run that died");
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(p) = p.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Err(e) = sh(
            "deleting a stale namespace",
            Command::new("ip").args(["netns", "del", name]),
        ) {
            tracing::warn!("{e}");
        }
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl VmCluster {
    /// Boots one VM per planned node of `build_dir` (a `muster build` output) from `image`.
    /// Returns once every QEMU runs; the guests boot and assemble on their own.
    pub fn up(
        build_dir: &Path,
        image: &VmImage,
        opts: ClusterOptions,
    ) -> Result<VmCluster, ClusterError> {
        let baked_path = build_dir.join(muster_build::bake::CLUSTER_FILE);
        let text = std::fs::read(&baked_path).map_err(io_err("the baked cluster", &baked_path))?;
        let baked: BakedCluster =
            serde_json::from_slice(&text).map_err(|e| ClusterError::Build {
                path: baked_path.clone(),
                detail: e.to_string(),
            })?;
        let secret_path = build_dir.join(muster_build::bake::secret::SECRET_FILE);
        let secret_text = std::fs::read_to_string(&secret_path)
            .map_err(io_err("cluster secret", &secret_path))?;
        let secret =
            ClusterSecret::from_hex(secret_text.trim()).map_err(|e| ClusterError::Build {
                path: secret_path.clone(),
                detail: e.to_string(),
            })?;
        std::fs::create_dir_all(&opts.work_dir).map_err(io_err("work dir", &opts.work_dir))?;
        let probe = match opts.accel {
            Some(a) => Probe {
                accel: a,
                reason: "chosen by the caller".into(),
                seconds: 0.0,
            },
            None => accel::probe(&image.kernel, Some(&image.initrd), Duration::from_secs(20)),
        };
        eprintln!(
            "vm lab: accelerator {:?} ({}; probe {:.1}s)",
            probe.accel, probe.reason, probe.seconds
        );
        let mut c = VmCluster {
            opts,
            baked,
            secret,
            vms: Vec::new(),
            rendezvous: None,
            ntp: None,
            netns_made: false,
            started: Instant::now(),
            probe,
        };
        c.network()?;
        c.start_ntp()?;
        c.start_rendezvous(build_dir)?;
        c.start_vms(build_dir, image)?;
        Ok(c)
    }

    fn ip(&self, what: &str, args: &[&str]) -> Result<String, ClusterError> {
        sh(
            what,
            Command::new("ip").args(["-n", &self.opts.netns]).args(args),
        )
    }

    /// The namespace, its bridge with the gateway and rendezvous addresses, a tap per node.
    fn network(&mut self) -> Result<(), ClusterError> {
        sweep_stale_labs();
        let ns = self.opts.netns.clone();
        if Path::new("/var/run/netns").join(&ns).exists() {
            sh(
                "removing a stale namespace",
                Command::new("ip").args(["netns", "del", &ns]),
            )?;
        }
        sh(
            "making the namespace",
            Command::new("ip").args(["netns", "add", &ns]),
        )?;
        self.netns_made = true;
        let net = &self.baked.spec.network;
        let prefix = net.subnet.prefix_len();
        self.ip("loopback", &["link", "set", "lo", "up"])?;
        self.ip("bridge", &["link", "add", "br0", "type", "bridge"])?;
        let mut addrs = vec![net.gateway];
        if let Some((rdv, _)) = url_addr(self.baked.rendezvous.url.as_str())
            && !addrs.contains(&rdv)
        {
            addrs.push(rdv);
        }
        for a in addrs {
            self.ip(
                "bridge address",
                &["addr", "add", &format!("{a}/{prefix}"), "dev", "br0"],
            )?;
        }
        self.ip("bridge up", &["link", "set", "br0", "up"])?;
        for (i, _) in self.baked.nodes.iter().enumerate() {
            let tap = format!("tap{i}");
            self.ip("tap", &["tuntap", "add", &tap, "mode", "tap"])?;
            self.ip("tap up", &["link", "set", &tap, "master", "br0", "up"])?;
        }
        Ok(())
    }

    fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.opts.netns)
    }

    fn start_ntp(&mut self) -> Result<(), ClusterError> {
        let gw = self.baked.spec.network.gateway;
        let ntp = NtpServer::start(Some(self.netns_path()), (gw, 123).into())
            .map_err(io_err("NTP server on the gateway", &self.netns_path()))?;
        eprintln!("vm lab: NTP (this host's clock) on {gw}:123");
        self.ntp = Some(ntp);
        Ok(())
    }

    fn start_rendezvous(&mut self, build_dir: &Path) -> Result<(), ClusterError> {
        let url = self.baked.rendezvous.url.as_str().to_string();
        let (addr, port) = url_addr(&url).ok_or_else(|| ClusterError::Build {
            path: build_dir.join(muster_build::bake::CLUSTER_FILE),
            detail: format!("rendezvous url {url} is not https://ADDRESS:PORT"),
        })?;
        let log_path = self.opts.work_dir.join("rendezvous.log");
        let log = std::fs::File::create(&log_path).map_err(io_err("rendezvous log", &log_path))?;
        let log2 = log
            .try_clone()
            .map_err(io_err("rendezvous log", &log_path))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.opts.netns])
            .arg(&self.opts.muster_bin)
            .arg("rendezvous")
            .args(["--listen", &format!("{addr}:{port}")])
            .arg("--data")
            .arg(self.opts.work_dir.join("rendezvous-data"))
            .arg("--keys")
            .arg(build_dir.join(muster_build::bake::RENDEZVOUS_KEYS_DIR))
            .arg("--cert")
            .arg(build_dir.join(muster_build::bake::rendezvous_cert::CERT_FILE))
            .arg("--key")
            .arg(build_dir.join(muster_build::bake::rendezvous_cert::KEY_FILE))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err("starting muster rendezvous", &self.opts.muster_bin))?;
        self.rendezvous = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.opts.netns, "bash", "-c"])
                .arg(format!("</dev/tcp/{addr}/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                eprintln!("vm lab: rendezvous on {url}");
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.rendezvous.as_mut().map(Child::try_wait) {
                return Err(ClusterError::Rendezvous(format!(
                    "exited ({st}): {}",
                    tail(&log_path, 10)
                )));
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Rendezvous(format!(
                    "not listening on {addr}:{port} after 30s: {}",
                    tail(&log_path, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn start_vms(&mut self, build_dir: &Path, image: &VmImage) -> Result<(), ClusterError> {
        let dir = self.opts.work_dir.clone();
        self.started = Instant::now();
        for (i, node) in self.baked.nodes.clone().iter().enumerate() {
            let name = node.name.to_string();
            let overlay = dir.join(format!("{name}.qcow2"));
            if overlay.exists() {
                std::fs::remove_file(&overlay).map_err(io_err("old overlay", &overlay))?;
            }
            sh(
                "overlay",
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .arg(&image.qcow2)
                    .arg(&overlay),
            )?;
            let seed = build_dir
                .join(muster_build::bake::NODES_DIR)
                .join(&name)
                .join(muster_build::bake::SEED_FILE);
            if !seed.is_file() {
                return Err(ClusterError::Build {
                    path: seed,
                    detail: "the node's seed volume is missing".into(),
                });
            }
            let memory_mib = match node.role {
                Role::ControlPlane => self.opts.control_plane_memory_mib,
                _ => self.opts.worker_memory_mib,
            };
            let serial = dir.join(format!("{name}.console.log"));
            let report = dir.join(format!("{name}.report.log"));
            let vm = DirectBoot {
                kernel: image.kernel.clone(),
                initrd: image.initrd.clone(),
                cmdline: format!("{} {}", image.cmdline, self.opts.extra_kernel_args)
                    .trim_end()
                    .to_string(),
                disk: overlay,
                seed: Some(seed),
                tap: Some((format!("tap{i}"), node.mac.to_string().to_ascii_lowercase())),
                cpus: 1,
                memory_mib,
                serial_log: serial.clone(),
                report_log: Some(report.clone()),
            };
            let q = vm.command(self.probe.accel);
            let log_path = dir.join(format!("{name}.qemu.log"));
            let log = std::fs::File::create(&log_path).map_err(io_err("qemu log", &log_path))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &self.opts.netns])
                .arg(q.get_program())
                .args(q.get_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(io_err("starting qemu", &log_path))?;
            eprintln!(
                "vm lab: {name} ({}, {} MiB, {}) booting; console {}",
                node.role.as_str(),
                memory_mib,
                node.ip,
                serial.display()
            );
            self.vms.push(Vm {
                name,
                role: node.role,
                ip: node.ip,
                serial,
                report,
                child: Some(child),
                times: BootTimes::default(),
            });
        }
        Ok(())
    }

    pub fn nodes(&self) -> Vec<String> {
        self.vms.iter().map(|v| v.name.clone()).collect()
    }

    pub fn accel(&self) -> &Probe {
        &self.probe
    }

    pub fn baked(&self) -> &BakedCluster {
        &self.baked
    }

    /// The VM's console log (ttyS0).
    pub fn console_log(&self, node: &str) -> Option<&Path> {
        self.vm(node).map(|v| v.serial.as_path())
    }

    /// The newest report the VM's test-image reporter wrote on ttyS1.
    pub fn report(&self, node: &str) -> Option<NodeReport> {
        NodeReport::read(&self.vm(node)?.report)
    }

    /// The node's own `nodeagent status --json`, as its last report carried it.
    pub fn status(&self, node: &str) -> Option<serde_json::Value> {
        self.report(node)?.json("nodeagent status")
    }

    pub fn boot_times(&self, node: &str) -> Option<&BootTimes> {
        self.vm(node).map(|v| &v.times)
    }

    fn vm(&self, node: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.name == node)
    }

    /// Seconds since the VMs were started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs `f` with the cluster's own rendezvous client on a thread inside the namespace.
    fn with_client<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let ns = self.netns_path();
        let baked = self.baked.rendezvous.clone();
        let secret = self.secret.clone();
        std::thread::spawn(move || -> Result<T, String> {
            let f_ns = std::fs::File::open(&ns).map_err(|e| format!("{}: {e}", ns.display()))?;
            nix::sched::setns(f_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering {}: {e}", ns.display()))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client =
                    Client::from_baked(&baked, &secret, "vm-lab").map_err(|e| e.to_string())?;
                f(client).await.map_err(|e| e.to_string())
            })
        })
        .join()
        .map_err(|_| ClusterError::Rendezvous("the client thread panicked".into()))?
        .map_err(ClusterError::Rendezvous)
    }

    /// The members as the rendezvous lists them, with their opened reports.
    pub fn members(&self) -> Result<Vec<PlainMember>, ClusterError> {
        self.with_client(|c| async move { c.members().await.map(|(_, m)| m) })
    }

    /// The whole audit log of the cluster at the rendezvous, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, ClusterError> {
        self.with_client(|c| async move {
            let mut all: Vec<AuditEntry> = Vec::new();
            loop {
                let after = all.last().map_or(0, |e| e.seq);
                let page = c.audit(after).await?;
                if page.is_empty() {
                    return Ok(all);
                }
                all.extend(page);
            }
        })
    }

    /// Checks every QEMU still runs and notes console milestones.
    fn poll_vms(&mut self) -> Result<(), ClusterError> {
        let now = self.elapsed();
        for vm in &mut self.vms {
            if let Some(Ok(Some(status))) = vm.child.as_mut().map(Child::try_wait) {
                return Err(ClusterError::VmExited {
                    node: vm.name.clone(),
                    status: status.to_string(),
                    tail: tail(&vm.serial, 30),
                });
            }
            if vm.times.cloud_init_finished.is_none() && contains(&vm.serial, SEED_MARKER) {
                vm.times.cloud_init_finished = Some(now);
            }
            if vm.times.kernel_started.is_none() && contains(&vm.serial, KERNEL_MARKER) {
                vm.times.kernel_started = Some(now);
            }
            if vm.times.agent_started.is_none() && contains(&vm.serial, AGENT_MARKER) {
                vm.times.agent_started = Some(now);
            }
            if contains(&vm.serial, PANIC_MARKER) {
                return Err(ClusterError::VmExited {
                    node: vm.name.clone(),
                    status: "kernel panic".into(),
                    tail: tail(&vm.serial, 30),
                });
            }
        }
        Ok(())
    }

    /// Waits until every planned node reports `done` at the rendezvous (or `patience` runs
    /// out), printing each change of the nodes' phases. Returns the seconds from VM start.
    pub fn wait_assembled(&mut self, patience: Duration) -> Result<f64, ClusterError> {
        let mut last = String::new();
        loop {
            self.poll_vms()?;
            let now = self.elapsed();
            // The rendezvous may not answer a poll (busy under emulation): try again.
            let members = self.members().unwrap_or_default();
            let mut phases = BTreeMap::new();
            for vm in &mut self.vms {
                let m = members.iter().find(|m| m.name == vm.name);
                if m.is_some() && vm.times.registered.is_none() {
                    vm.times.registered = Some(now);
                }
                let done = m.is_some_and(|m| m.report["done"] == true);
                if done && vm.times.joined.is_none() {
                    vm.times.joined = Some(now);
                }
                let phase = match (m, vm.times.agent_started) {
                    (Some(m), _) => {
                        let p = m.report["phase"].as_str().unwrap_or("?").to_string();
                        match m.report["attempt"].as_u64() {
                            Some(a) if a > 0 => format!("{p}#{a}"),
                            _ => p,
                        }
                    }
                    (None, Some(_)) => "agent-started".into(),
                    (None, None) => "booting".into(),
                };
                phases.insert(vm.name.clone(), phase);
            }
            let line = format!("{phases:?}");
            if line != last {
                eprintln!("[{now:>6.1}s] {line}");
                last = line;
            }
            if self.vms.iter().all(|v| v.times.joined.is_some()) {
                return Ok(now);
            }
            if now > patience.as_secs_f64() {
                return Err(ClusterError::Timeout {
                    seconds: patience.as_secs(),
                    detail: last,
                });
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Waits until every VM's agent has started (its first console line) and its report
    /// carries the guest's boot timings (or `patience` runs out). Returns the seconds from
    /// VM start. For measuring boots without assembling (the VM test's
    /// `MUSTER_VM_BOOT_ONLY=1`).
    pub fn wait_booted(&mut self, patience: Duration) -> Result<f64, ClusterError> {
        loop {
            self.poll_vms()?;
            let now = self.elapsed();
            let waiting: Vec<String> = self
                .vms
                .iter()
                .filter(|v| {
                    v.times.agent_started.is_none()
                        || self
                            .boot_timeline(&v.name)
                            .and_then(|t| t.agent_started())
                            .is_none()
                })
                .map(|v| v.name.clone())
                .collect();
            if waiting.is_empty() {
                return Ok(now);
            }
            if now > patience.as_secs_f64() {
                return Err(ClusterError::Timeout {
                    seconds: patience.as_secs(),
                    detail: format!("not booted to the agent: {waiting:?}"),
                });
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// The guest's own boot timings, from the newest report that carries them.
    pub fn boot_timeline(&self, node: &str) -> Option<BootTimeline> {
        BootTimeline::from_report(&self.report(node)?)
    }

    /// The nodes of `role`.
    pub fn nodes_with(&self, role: Role) -> Vec<(String, Ipv4Addr)> {
        self.vms
            .iter()
            .filter(|v| v.role == role)
            .map(|v| (v.name.clone(), v.ip))
            .collect()
    }

    /// Stops the VMs, the rendezvous and the NTP server, and deletes the namespace.
    pub fn down(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        for vm in &mut self.vms {
            if let Some(mut c) = vm.child.take() {
                stop_child(&mut c, Duration::from_secs(3));
            }
        }
        if let Some(mut r) = self.rendezvous.take() {
            stop_child(&mut r, Duration::from_secs(5));
        }
        self.ntp = None;
        if self.netns_made {
            self.netns_made = false;
            if let Err(e) = sh(
                "deleting the namespace",
                Command::new("ip").args(["netns", "del", &self.opts.netns]),
            ) {
                tracing::warn!("{e}");
            }
        }
    }
}

impl Drop for VmCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_url_address() {
        assert_eq!(
            url_addr("https://10.0.0.2:7443"),
            Some((Ipv4Addr::new(10, 0, 0, 2), 7443))
        );
        assert_eq!(
            url_addr("https://10.0.0.2:7443/"),
            Some((Ipv4Addr::new(10, 0, 0, 2), 7443))
        );
        assert_eq!(url_addr("https://rdv.example:7443"), None);
        assert_eq!(url_addr("10.0.0.2"), None);
    }
}
