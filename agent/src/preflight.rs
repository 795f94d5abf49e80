//! Host checks before anything is installed: swap off, br_netfilter, sysctls, container
//! runtime socket, time synced, and the cluster NIC carrying the planned address. Each is
//! reported by name; in lab mode the ones a network namespace cannot satisfy are skipped.

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
    /// Whether the kernel clock is synchronized (`timedatectl`'s `NTPSynchronized`: set by
    /// chrony and ntpd too, which never write systemd-timesyncd's marker file).
    pub clock_synchronized: Option<bool>,
    pub runtime_socket: String,
    /// Ask the host (`probe_host`) before every run, so an address or a time sync that
    /// arrives after the agent started lets a retry pass.
    pub probe_host: bool,
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

/// Fills in what files cannot show: the addresses (`ip -j addr show`) and, outside the lab,
/// whether the clock is synchronized (`timedatectl show -p NTPSynchronized --value`).
pub fn probe_host(o: &mut Options) {
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
    o.ip_addr_json = output("ip", &["-j", "addr", "show"]);
    if !o.lab {
        o.clock_synchronized = output("timedatectl", &["show", "-p", "NTPSynchronized", "--value"])
            .map(|v| v.trim() == "yes");
    }
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

fn time_synced(root: &NodeRoot, o: &Options) -> Result<(), String> {
    if root.path("run/systemd/timesync/synchronized").exists() || o.clock_synchronized == Some(true)
    {
        Ok(())
    } else {
        Err("the clock is not synchronized (timedatectl: NTPSynchronized is not yes)".into())
    }
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
        let json = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ip-addr-j.json"),
        )
        .unwrap();
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
            clock_synchronized: Some(true),
            ..o.clone()
        };
        let failed: Vec<_> = run(&root, &synced).failures().map(|c| c.name).collect();
        assert!(!failed.contains(&"time-synced"), "{failed:?}");
        let lab = run(&root, &Options::lab());
        assert_eq!(lab.failures().count(), 0);
        assert!(lab.checks.iter().all(|c| c.outcome == Outcome::Skipped));
    }
}
