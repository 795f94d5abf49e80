//! Host checks before anything is installed: swap off, br_netfilter, sysctls, container
//! runtime socket, time synced, the cluster NIC carrying the planned address, and the
//! distribution's programs on PATH at the spec's pinned version (an image built without
//! Kubernetes is said so, instead of failing `kubeadm init` forever). Each is reported by
//! name; in lab mode the ones a network namespace cannot satisfy are skipped.

use model::node_files::NodeRoot;
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip what a namespace cannot satisfy (swap, modules, sysctls, time, runtime socket).
    pub lab: bool,
    pub interface: Option<String>,
    pub address: Option<Ipv4Addr>,
    /// Output of `ip -j addr show`; `None` skips the address check.
    pub ip_addr_json: Option<String>,
    /// What the host said of its clock's synchronization (`probe_host`), when
    /// systemd-timesyncd's marker file does not say it already.
    pub clock: Option<ClockProbe>,
    pub runtime_socket: String,
    /// Ask the host (`probe_host`) before every run, so an address or a time sync that
    /// arrives after the agent started lets a retry pass.
    pub probe_host: bool,
    /// The distribution's programs and pinned version; `None` skips those checks.
    pub tools: Option<Tools>,
    /// What `probe_host` found of them.
    pub tools_found: Option<ToolsFound>,
}

/// The programs a node of the spec's distribution runs, and the version the spec pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub kind: model::spec::DistroKind,
    /// As the tools print it: `v1.31.4` (kubeadm), `v1.31.6+k3s1` (k3s).
    pub pinned: String,
    /// Must be on PATH; the first one is asked for its version.
    pub required: Vec<&'static str>,
}

impl Tools {
    /// kubeadm nodes need kubeadm, kubelet, kubectl and containerd; k3s nodes the k3s
    /// binary (it embeds its runtime). The lab's namespaces run only the stand-in of the
    /// distribution's own command (kubeadm or k3s), so only that one is required there.
    pub fn for_spec(kind: model::spec::DistroKind, pinned: String, lab: bool) -> Tools {
        use model::spec::DistroKind;
        let required = match (kind, lab) {
            (DistroKind::Kubeadm, false) => vec!["kubeadm", "kubelet", "kubectl", "containerd"],
            (DistroKind::Kubeadm, true) => vec!["kubeadm"],
            (DistroKind::K3s, _) => vec!["k3s"],
        };
        Tools {
            kind,
            pinned,
            required,
        }
    }
}

/// Who said whether the clock is synchronized, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockProbe {
    /// chronyd's own view (`chronyc -n -c tracking`): its leap status, `Normal`,
    /// `Insert second`, `Delete second` or `Not synchronised`. Asked first: a Unix socket
    /// to the running daemon, where `timedatectl` starts systemd-timedated over D-Bus
    /// (10.9–12.3 s of a first boot's preflight under emulation, five guests).
    Chrony { leap_status: String },
    /// `timedatectl show -p NTPSynchronized --value` (the kernel's sync flag, which chrony,
    /// ntpd and timesyncd all set): for hosts without chronyd.
    Timedated { ntp_synchronized: bool },
}

impl ClockProbe {
    pub fn synchronized(&self) -> bool {
        match self {
            ClockProbe::Chrony { leap_status } => leap_status != CHRONY_UNSYNCHRONISED,
            ClockProbe::Timedated { ntp_synchronized } => *ntp_synchronized,
        }
    }
}

/// chronyc's leap status of a daemon with no selected source (British spelling, as printed).
const CHRONY_UNSYNCHRONISED: &str = "Not synchronised";

/// The leap status, the last of the 14 fields of `chronyc -c tracking`'s one CSV line;
/// `None` for anything else (an older chronyc's shape, an error text).
pub fn chrony_leap_status(csv: &str) -> Option<String> {
    let line = csv.lines().next()?;
    let fields: Vec<&str> = line.split(',').collect();
    let leap = fields.last()?.trim();
    (fields.len() == 14 && !leap.is_empty()).then(|| leap.to_string())
}

/// What the host has of [`Tools`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolsFound {
    /// Required programs not on PATH.
    pub missing: Vec<&'static str>,
    /// The version command's stdout (`kubeadm version -o short`, `k3s --version`), or why
    /// it could not run; `None` when the program itself is missing.
    pub version_output: Option<Result<String, String>>,
}

impl Options {
    pub fn lab() -> Self {
        Options {
            lab: true,
            runtime_socket: "run/containerd/containerd.sock".into(),
            ..Options::default()
        }
    }
}

/// Fills in what files cannot show: the addresses (`ip -j addr show`), the distribution's
/// programs and, outside the lab, whether the clock is synchronized ([`ClockProbe`]).
pub fn probe_host(root: &NodeRoot, o: &mut Options) {
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Each probe is a process (timedatectl may start systemd-timedated): under emulation
    // they take seconds before the checks' first line, so their times are logged.
    let started = std::time::Instant::now();
    o.ip_addr_json = output("ip", &["-j", "addr", "show"]);
    let ip_ms = started.elapsed().as_millis();
    if let Some(t) = &o.tools {
        o.tools_found = Some(find_tools(t));
    }
    let tools_ms = started.elapsed().as_millis() - ip_ms;
    if !o.lab && !root.path(TIMESYNCD_MARKER).exists() {
        o.clock = output("chronyc", &["-n", "-c", "tracking"])
            .as_deref()
            .and_then(chrony_leap_status)
            .map(|leap_status| ClockProbe::Chrony { leap_status })
            .or_else(|| {
                output("timedatectl", &["show", "-p", "NTPSynchronized", "--value"]).map(|v| {
                    ClockProbe::Timedated {
                        ntp_synchronized: v.trim() == "yes",
                    }
                })
            });
    }
    let clock_ms = started.elapsed().as_millis() - ip_ms - tools_ms;
    tracing::info!(ip_ms, tools_ms, clock_ms, "preflight probes");
}

/// Looks the required programs up on PATH and asks the first one its version.
fn find_tools(t: &Tools) -> ToolsFound {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&'static str> = t
        .required
        .iter()
        .copied()
        .filter(|p| !on_path(&path, p))
        .collect();
    let version_output = t
        .required
        .first()
        .filter(|p| !missing.contains(p))
        .map(|p| {
            let args: &[&str] = match t.kind {
                model::spec::DistroKind::Kubeadm => &["version", "-o", "short"],
                model::spec::DistroKind::K3s => &["--version"],
            };
            std::process::Command::new(p)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run `{p}`: {e}"))
                .and_then(|out| {
                    if out.status.success() {
                        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                    } else {
                        Err(format!(
                            "`{p} {}` exited with {}: {}",
                            args.join(" "),
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ))
                    }
                })
        });
    ToolsFound {
        missing,
        version_output,
    }
}

/// Whether an executable file `name` is in one of `path`'s directories.
fn on_path(path: &std::ffi::OsStr, name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether `/proc/swaps` lists any active swap (header line only = none).
pub fn swap_active(proc_swaps: &str) -> bool {
    proc_swaps.lines().skip(1).any(|l| !l.trim().is_empty())
}

/// Whether a module is listed in `/proc/modules`.
pub fn module_loaded(proc_modules: &str, name: &str) -> bool {
    proc_modules
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether `ip -j addr show` output has `addr` on interface `ifname`.
pub fn interface_has(ip_json: &str, ifname: &str, addr: Ipv4Addr) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(serde::Deserialize)]
    struct AddrInfo {
        family: String,
        local: String,
    }
    let links: Vec<Link> = serde_json::from_str(ip_json).map_err(|e| e.to_string())?;
    let want = addr.to_string();
    Ok(links.iter().any(|l| {
        l.ifname == ifname
            && l.addr_info
                .iter()
                .any(|a| a.family == "inet" && a.local == want)
    }))
}

fn read(root: &NodeRoot, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.path(rel)).ok()
}

/// The sysctls kubeadm's preflight wants set to 1: `(check name, path under root)`.
const SYSCTLS: [(&str, &str); 2] = [
    ("sysctl-ip-forward", "proc/sys/net/ipv4/ip_forward"),
    (
        "sysctl-bridge-nf-call-iptables",
        "proc/sys/net/bridge/bridge-nf-call-iptables",
    ),
];

/// Runs every check against files under `root` (`proc/…`, `sys/…`, `run/…`).
pub fn run(root: &NodeRoot, o: &Options) -> Report {
    // `(name, skipped in the lab, result)`: the lab's namespaces share the host's kernel.
    let mut results: Vec<(&'static str, bool, Result<(), String>)> = vec![
        ("swap-off", true, swap_off(root)),
        ("br-netfilter", true, br_netfilter(root)),
    ];
    for (name, rel) in SYSCTLS {
        results.push((name, true, sysctl_is_one(root, rel)));
    }
    results.push(("container-runtime-socket", true, runtime_socket(root, o)));
    results.push(("time-synced", true, time_synced(root, o)));
    if let Some(r) = cluster_address(o) {
        results.push(("cluster-address", false, r));
    }
    // Never skipped in the lab: the stand-ins are the lab's programs and answer as the
    // real ones do.
    if let (Some(t), Some(found)) = (&o.tools, &o.tools_found) {
        results.push(("kubernetes-binaries", false, binaries(found)));
        if let Some(r) = version(t, found) {
            results.push(("kubernetes-version", false, r));
        }
    }
    let checks = results
        .into_iter()
        .map(|(name, lab_skips, result)| {
            let (outcome, detail) = match result {
                _ if lab_skips && o.lab => (Outcome::Skipped, "lab mode".to_string()),
                Ok(()) => (Outcome::Pass, String::new()),
                Err(d) => (Outcome::Fail, d),
            };
            Check {
                name,
                outcome,
                detail,
            }
        })
        .collect();
    Report { checks }
}

fn swap_off(root: &NodeRoot) -> Result<(), String> {
    match read(root, "proc/swaps") {
        Some(t) if swap_active(&t) => Err("swap is on (/proc/swaps lists a device)".into()),
        Some(_) => Ok(()),
        None => Err("cannot read /proc/swaps".into()),
    }
}

fn br_netfilter(root: &NodeRoot) -> Result<(), String> {
    let loaded = read(root, "proc/modules").is_some_and(|m| module_loaded(&m, "br_netfilter"))
        || root.path("sys/module/br_netfilter").is_dir();
    if loaded {
        Ok(())
    } else {
        Err("module br_netfilter is not loaded".into())
    }
}

fn sysctl_is_one(root: &NodeRoot, rel: &str) -> Result<(), String> {
    match read(root, rel).as_deref().map(str::trim) {
        Some("1") => Ok(()),
        Some(v) => Err(format!("/{rel} is {v}, want 1")),
        None => Err(format!("cannot read /{rel}")),
    }
}

fn runtime_socket(root: &NodeRoot, o: &Options) -> Result<(), String> {
    if root.path(&o.runtime_socket).exists() {
        Ok(())
    } else {
        Err(format!("/{} is missing", o.runtime_socket))
    }
}

/// systemd-timesyncd's "synchronized" marker (chrony and ntpd never write it).
const TIMESYNCD_MARKER: &str = "run/systemd/timesync/synchronized";

fn time_synced(root: &NodeRoot, o: &Options) -> Result<(), String> {
    if root.path(TIMESYNCD_MARKER).exists() {
        return Ok(());
    }
    match &o.clock {
        Some(c) if c.synchronized() => Ok(()),
        Some(ClockProbe::Chrony { leap_status }) => Err(format!(
            "the clock is not synchronized (chronyc tracking: leap status {leap_status})"
        )),
        Some(ClockProbe::Timedated { .. }) => {
            Err("the clock is not synchronized (timedatectl: NTPSynchronized is not yes)".into())
        }
        None => Err(format!(
            "the clock is not synchronized (no /{TIMESYNCD_MARKER}; neither chronyc tracking nor \
             timedatectl answered)"
        )),
    }
}

/// Every required program on PATH; the message says what the image probably lacks.
pub fn binaries(found: &ToolsFound) -> Result<(), String> {
    if found.missing.is_empty() {
        return Ok(());
    }
    let hint = if found.missing.iter().all(|p| *p == "containerd") {
        "image built without a container runtime?"
    } else {
        "image built without Kubernetes?"
    };
    Err(format!("{} not found ({hint})", found.missing.join(", ")))
}

/// The first program's version against the pin; `None` when it is missing (said above).
pub fn version(t: &Tools, found: &ToolsFound) -> Option<Result<(), String>> {
    let program = t.required.first()?;
    let out = found.version_output.as_ref()?;
    Some(match out {
        Err(e) => Err(e.clone()),
        Ok(stdout) => {
            let parsed = match t.kind {
                model::spec::DistroKind::Kubeadm => {
                    crate::distro::parse::kubeadm_short_version(stdout)
                }
                model::spec::DistroKind::K3s => crate::distro::parse::k3s_version(stdout),
            };
            match parsed {
                Ok(v) if v == t.pinned => Ok(()),
                Ok(v) => Err(format!("{program} is {v}, the spec pins {}", t.pinned)),
                Err(e) => Err(e),
            }
        }
    })
}

/// Whether the cluster interface has the planned address; `None` when not asked (no
/// interface, address or `ip -j addr` output in the options).
fn cluster_address(o: &Options) -> Option<Result<(), String>> {
    let (Some(ifname), Some(addr), Some(json)) = (&o.interface, o.address, &o.ip_addr_json) else {
        return None;
    };
    Some(match interface_has(json, ifname, addr) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{ifname} does not have {addr}")),
        Err(e) => Err(format!("cannot parse `ip -j addr`: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture;

    #[test]
    fn parses_proc_files() {
        assert!(!swap_active(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        ));
        assert!(swap_active(
            "Filename Type Size Used Priority\n/swap.img file 2097148 0 -2\n"
        ));
        assert!(module_loaded(
            "br_netfilter 32768 0 - Live 0x0000000000000000\nbridge 311296 1 br_netfilter, Live 0x0\n",
            "br_netfilter"
        ));
        assert!(!module_loaded(
            "bridge 311296 0 - Live 0x0\n",
            "br_netfilter"
        ));
    }

    #[test]
    fn ip_json_fixture() {
        let json = test_fixture("ip-addr-j.json");
        assert!(interface_has(&json, "lo", "127.0.0.1".parse().unwrap()).unwrap());
        assert!(!interface_has(&json, "lo", "10.9.9.9".parse().unwrap()).unwrap());
        assert!(interface_has("not json", "lo", Ipv4Addr::LOCALHOST).is_err());
    }

    #[test]
    fn failures_are_named_and_lab_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        std::fs::create_dir_all(root.path("proc/sys/net/ipv4")).unwrap();
        std::fs::write(
            root.path("proc/swaps"),
            "Filename Type\n/dev/sda2 partition\n",
        )
        .unwrap();
        std::fs::write(root.path("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        let o = Options {
            runtime_socket: "run/containerd/containerd.sock".into(),
            ..Options::default()
        };
        let r = run(&root, &o);
        let failed: Vec<_> = r.failures().map(|c| c.name).collect();
        assert!(failed.contains(&"swap-off"));
        assert!(failed.contains(&"sysctl-ip-forward"));
        assert!(failed.contains(&"time-synced"));
        let synced = Options {
            clock: Some(ClockProbe::Timedated {
                ntp_synchronized: true,
            }),
            ..o.clone()
        };
        let failed: Vec<_> = run(&root, &synced).failures().map(|c| c.name).collect();
        assert!(!failed.contains(&"time-synced"), "{failed:?}");
        let lab = run(&root, &Options::lab());
        assert_eq!(lab.failures().count(), 0);
        assert!(lab.checks.iter().all(|c| c.outcome == Outcome::Skipped));
    }

    #[test]
    fn chrony_tracking_says_synchronized_or_not_and_the_check_names_it() {
        let normal = chrony_leap_status(&test_fixture("chronyc-n-c-tracking-normal-4.3.csv"));
        assert_eq!(normal.as_deref(), Some("Normal"));
        let not = chrony_leap_status(&test_fixture(
            "chronyc-n-c-tracking-not-synchronised-4.3.csv",
        ));
        assert_eq!(not.as_deref(), Some("Not synchronised"));
        // chronyc's answer when no daemon listens is on stderr; stdout is empty
        assert_eq!(chrony_leap_status(""), None);
        assert_eq!(chrony_leap_status("506 Cannot talk to daemon"), None);
        assert_eq!(chrony_leap_status("a,b,Normal"), None);

        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let check = |clock: Option<ClockProbe>| {
            let o = Options {
                clock,
                ..Options::default()
            };
            time_synced(&root, &o)
        };
        let chrony = |leap: Option<String>| {
            Some(ClockProbe::Chrony {
                leap_status: leap.unwrap(),
            })
        };
        assert_eq!(check(chrony(normal)), Ok(()));
        let err = check(chrony(not)).unwrap_err();
        assert!(err.contains("leap status Not synchronised"), "{err}");
        let err = check(None).unwrap_err();
        assert!(
            err.contains("neither chronyc tracking nor timedatectl"),
            "{err}"
        );
        let err = check(Some(ClockProbe::Timedated {
            ntp_synchronized: false,
        }))
        .unwrap_err();
        assert!(err.contains("NTPSynchronized"), "{err}");
        // timesyncd's marker is enough on its own
        std::fs::create_dir_all(root.path("run/systemd/timesync")).unwrap();
        std::fs::write(root.path(TIMESYNCD_MARKER), "").unwrap();
        assert_eq!(check(None), Ok(()));
    }

    fn kubeadm_tools() -> Tools {
        Tools::for_spec(model::spec::DistroKind::Kubeadm, "v1.31.4".into(), false)
    }

    #[test]
    fn missing_programs_are_named_with_what_the_image_lacks() {
        let found = ToolsFound {
            missing: vec!["kubeadm"],
            version_output: None,
        };
        assert_eq!(
            binaries(&found),
            Err("kubeadm not found (image built without Kubernetes?)".into())
        );
        assert_eq!(version(&kubeadm_tools(), &found), None);
        let runtime = ToolsFound {
            missing: vec!["containerd"],
            version_output: Some(Ok("v1.31.4\n".into())),
        };
        assert_eq!(
            binaries(&runtime),
            Err("containerd not found (image built without a container runtime?)".into())
        );
        // Even in the lab the binaries are checked: only the namespace's limits are skipped.
        let o = Options {
            tools: Some(Tools::for_spec(
                model::spec::DistroKind::Kubeadm,
                "v1.31.4".into(),
                true,
            )),
            tools_found: Some(found),
            ..Options::lab()
        };
        let dir = tempfile::tempdir().unwrap();
        let r = run(&NodeRoot::new(dir.path()), &o);
        let failed: Vec<_> = r.failures().map(|c| c.name).collect();
        assert_eq!(failed, ["kubernetes-binaries"]);
    }

    #[test]
    fn a_version_other_than_the_pin_names_both() {
        let found = |out: &str| ToolsFound {
            missing: Vec::new(),
            version_output: Some(Ok(out.into())),
        };
        assert_eq!(version(&kubeadm_tools(), &found("v1.31.4\n")), Some(Ok(())));
        assert_eq!(
            version(&kubeadm_tools(), &found("v1.30.2\n")),
            Some(Err("kubeadm is v1.30.2, the spec pins v1.31.4".into()))
        );
        let k3s = Tools::for_spec(model::spec::DistroKind::K3s, "v1.31.6+k3s1".into(), false);
        assert_eq!(
            version(
                &k3s,
                &found("k3s version v1.31.6+k3s1 (6ab750f9)\ngo version go1.22.12\n")
            ),
            Some(Ok(()))
        );
        assert_eq!(
            version(&k3s, &found("k3s version v1.30.1+k3s1 (80978b5b)\n")),
            Some(Err("k3s is v1.30.1+k3s1, the spec pins v1.31.6+k3s1".into()))
        );
        let broken = ToolsFound {
            missing: Vec::new(),
            version_output: Some(Err("`k3s --version` exited with 2: boom".into())),
        };
        assert!(version(&k3s, &broken).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn programs_are_found_on_path_only_when_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("kubeadm");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("kubelet"), "not executable").unwrap();
        let path = dir.path().as_os_str();
        assert!(on_path(path, "kubeadm"));
        assert!(!on_path(path, "kubelet"));
        assert!(!on_path(path, "kubectl"));
    }
}
