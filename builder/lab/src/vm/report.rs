//! What a TEST image's reporter (`images/test-image.sh`) writes to a VM's second serial
//! port: blocks of named sections, the newest complete block wins. Read from outside the VM.

use std::collections::BTreeMap;
use std::path::Path;

pub const BEGIN: &str = "=== MUSTER-TEST-REPORT BEGIN ";
pub const END: &str = "=== MUSTER-TEST-REPORT END";

/// One report: the VM's host name, its uptime when written, and the sections' text.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    pub hostname: String,
    pub uptime_s: f64,
    pub sections: BTreeMap<String, String>,
}

impl NodeReport {
    /// The newest complete report in `text` (`\r` from the tty is ignored).
    pub fn parse_last(text: &str) -> Option<NodeReport> {
        let text = text.replace('\r', "");
        let end = text.rfind(END)?;
        let begin = text[..end].rfind(BEGIN)?;
        let block = &text[begin + BEGIN.len()..end];
        let (head, body) = block.split_once('\n')?;
        let mut words = head.split_whitespace();
        let hostname = words.next()?.to_string();
        let uptime_s = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        let mut sections = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in body.lines() {
            if let Some(name) = line.strip_prefix("@@ ") {
                if let Some((n, t)) = current.take() {
                    sections.insert(n, t);
                }
                current = Some((name.trim().to_string(), String::new()));
            } else if let Some((_, t)) = current.as_mut() {
                t.push_str(line);
                t.push('\n');
            }
        }
        if let Some((n, t)) = current {
            sections.insert(n, t);
        }
        Some(NodeReport {
            hostname,
            uptime_s,
            sections,
        })
    }

    pub fn read(path: &Path) -> Option<NodeReport> {
        let bytes = std::fs::read(path).ok()?;
        NodeReport::parse_last(&String::from_utf8_lossy(&bytes))
    }

    /// `systemctl show` properties of `unit` (e.g. `ActiveState` → `active`).
    pub fn unit(&self, unit: &str) -> BTreeMap<String, String> {
        self.sections
            .get(&format!("unit {unit}"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A section holding JSON (`nodeagent status`, `etcd members`, `identity`).
    pub fn json(&self, section: &str) -> Option<serde_json::Value> {
        serde_json::from_str(self.sections.get(section)?.trim()).ok()
    }

    pub fn text(&self, section: &str) -> &str {
        self.sections.get(section).map_or("", String::as_str)
    }
}

/// When one unit started and became active, guest monotonic seconds (`None`: not yet, or
/// never).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitTimes {
    pub started: Option<f64>,
    pub active: Option<f64>,
    /// The main process started (a `Type=notify` unit is active only once it says READY).
    pub main_started: Option<f64>,
}

/// The guest's own boot timings from a report's `boot …` sections (the TEST image's
/// reporter): monotonic seconds since the kernel started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootTimeline {
    /// The kernel handed over to the initramfs (`Run /init as init process`).
    pub initramfs: Option<f64>,
    /// systemd (the real root's) started.
    pub userspace: Option<f64>,
    /// systemd's boot finished (`multi-user.target` reached: after the agent's READY=1).
    pub finished: Option<f64>,
    /// How long systemd's generators ran, and its unit loading took, at its last (re)load.
    pub generators: Option<f64>,
    pub units_load: Option<f64>,
    pub units: BTreeMap<String, UnitTimes>,
    /// cloud-init's events (`init-network/config-ssh`, …) and how long each took.
    pub cloud_init: Vec<(String, f64)>,
    /// Each cloud-init stage's first log line (`init-local`, `init`, `modules:final`, …) in
    /// guest seconds: from its unit's start to there is Python starting and importing.
    pub cloud_init_starts: BTreeMap<String, f64>,
    /// The longest silences inside cloud-init's stages: seconds, and the log lines before
    /// and after (`A >>> B`), longest first.
    pub cloud_init_gaps: Vec<(f64, String)>,
    /// Where the guest's CPU went up to the agent's start (`None`: no snapshot in the report).
    pub cpu: Option<BootCpu>,
    /// `systemd-analyze blame`, first lines (once the boot finished).
    pub blame: String,
    /// The host keys in /etc/ssh and any key generation the journal shows.
    pub ssh_host_keys: String,
    /// The kernel's clock lines (TSC calibration, clocksource switches) from dmesg.
    pub clock: String,
}

/// The guest's CPU time over its boot, taken when the reporter first saw the agent started:
/// `/proc/stat`'s total split into busy and waiting, and each systemd unit's own share (a
/// finished unit keeps its last figure). Guest seconds: under TCG a guest's "busy" second
/// is a second its vCPU was running guest code or waiting for a host core to run it on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootCpu {
    /// The guest's uptime at the snapshot.
    pub uptime: f64,
    pub user: f64,
    pub system: f64,
    /// Hardware and soft interrupts.
    pub irq: f64,
    pub idle: f64,
    pub iowait: f64,
    /// PID 1's own CPU (user + system); init.scope's figure also holds the generators.
    pub pid1: Option<f64>,
    /// How often PID 1 reloaded (each reload runs the generators again).
    pub reloads: Option<u32>,
    /// cloud-init's `ds-identify` (run by its generator): from its start to its result, in
    /// its first run.
    pub ds_identify: Option<f64>,
    /// Kernel modules loaded: how many, and their names.
    pub modules: Option<u32>,
    pub module_names: Vec<String>,
    /// Every `/proc/stat` count summed (busy, idle, iowait, steal, …).
    pub counted: f64,
    /// Each unit that used any CPU, most first.
    pub units: Vec<(String, f64)>,
}

impl BootCpu {
    /// `/proc/stat` counts in USER_HZ, 100 per second on Linux.
    const USER_HZ: f64 = 100.0;

    /// The reporter's `boot cpu` section: `uptime SECONDS`, `/proc/stat`'s `cpu` line, then
    /// `systemctl show -p Id -p CPUUsageNSec` blocks.
    fn parse(text: &str) -> Option<BootCpu> {
        let mut lines = text.lines();
        let uptime = lines.next()?.strip_prefix("uptime ")?.trim().parse().ok()?;
        let ticks: Vec<f64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|t| t.parse::<f64>().map(|t| t / Self::USER_HZ))
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq …
        let [user, nice, system, idle, iowait, irq, softirq, ..] = ticks[..] else {
            return None;
        };
        let mut rest: Vec<&str> = lines.collect();
        // "pid1 UTIME STIME reloads N modules M"
        let (mut pid1, mut reloads, mut modules) = (None, None, None);
        if let Some(l) = rest.first().and_then(|l| l.strip_prefix("pid1 ")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let [u, s, "reloads", n, "modules", m] = f[..] {
                modules = m.parse().ok();
                pid1 = u
                    .parse::<f64>()
                    .ok()
                    .zip(s.parse::<f64>().ok())
                    .map(|(u, s)| (u + s) / Self::USER_HZ);
                reloads = n.parse().ok();
            }
            rest.remove(0);
        }
        let module_names = rest
            .iter()
            .find_map(|l| l.strip_prefix("loaded "))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut units: Vec<(String, f64)> = rest
            .join("\n")
            .split("\n\n")
            .filter_map(|block| {
                let p = props(block);
                let ns: u64 = p.get("CPUUsageNSec")?.trim().parse().ok()?;
                // u64::MAX: accounting off for the unit.
                let id = p.get("Id")?.clone();
                (ns > 0 && ns != u64::MAX).then_some((id, ns as f64 / 1e9))
            })
            .collect();
        units.sort_by(|a, b| b.1.total_cmp(&a.1));
        // "ds-identify [up 12.34s] ds-identify …" then "ds-identify [up 15.60s] returning 0"
        let ups: Vec<f64> = rest
            .iter()
            .filter_map(|l| l.strip_prefix("ds-identify [up ")?.split_once("s]"))
            .filter_map(|(up, _)| up.parse().ok())
            .collect();
        let ds_identify = match ups[..] {
            [start, end, ..] if end >= start => Some(end - start),
            _ => None,
        };

        Some(BootCpu {
            uptime,
            user: user + nice,
            system,
            irq: irq + softirq,
            idle,
            iowait,
            pid1,
            reloads,
            ds_identify,
            modules,
            module_names,
            counted: ticks.iter().take(8).sum(),
            units,
        })
    }

    pub fn busy(&self) -> f64 {
        self.user + self.system + self.irq
    }

    /// Guest seconds `/proc/stat` never counted: the kernel counts one tick per timer
    /// interrupt it handles, so time the vCPU spent waiting for a host core (TCG reports
    /// no steal time) goes missing from every count.
    pub fn uncounted(&self) -> f64 {
        self.uptime - self.counted
    }

    /// What no unit accounts for: the kernel's own threads, the initramfs, systemd before
    /// it accounts (busy minus the units' sum). Negative when the vCPU waited for host
    /// cores: the units' figures come from the scheduler's clock, which counts that wait,
    /// and `busy` from ticks, which do not.
    pub fn outside_units(&self) -> f64 {
        self.busy() - self.units.iter().map(|(_, s)| s).sum::<f64>()
    }
}

/// One cloud-init stage's unit run, guest seconds ([`BootTimeline::cloud_init_stages`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudInitStage {
    pub unit: &'static str,
    pub whole: f64,
    /// From the unit's start to the stage's first log line: Python starting and importing.
    pub to_first_line: Option<f64>,
    /// cloud-init's own events inside the stage.
    pub events: f64,
}

/// One step on the way from the kernel to the agent: from `from` to `to` seconds of guest
/// time.
#[derive(Debug, Clone, PartialEq)]
pub struct BootStep {
    pub cause: &'static str,
    pub from: f64,
    pub to: f64,
}

impl BootStep {
    pub fn seconds(&self) -> f64 {
        self.to - self.from
    }
}

/// `1234567` µs (systemd's monotonic timestamps; 0 = never) as seconds.
fn usec(v: Option<&String>) -> Option<f64> {
    let us: u64 = v?.trim().parse().ok()?;
    (us > 0).then(|| us as f64 / 1e6)
}

/// Which side of a `A B` line holds the seconds.
enum Order {
    SecondsFirst,
    TextFirst,
}

/// The lines `SECONDS TEXT` (or `TEXT SECONDS`) of a section as `(seconds, text)`; lines
/// that do not parse are left out.
fn seconds_and_text(text: &str, order: Order) -> impl Iterator<Item = (f64, &str)> {
    text.lines().filter_map(move |l| {
        let (a, b) = l.trim().split_once(' ')?;
        let (secs, rest) = match order {
            Order::SecondsFirst => (a, b),
            Order::TextFirst => (b, a),
        };
        Some((secs.parse().ok()?, rest.trim()))
    })
}

fn props(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl BootTimeline {
    /// `None` when the report has no boot sections (the agent has not started yet).
    pub fn from_report(r: &NodeReport) -> Option<BootTimeline> {
        let units_text = r.sections.get("boot units")?;
        let mut t = BootTimeline {
            // "[    3.141592] Run /init as init process"
            initramfs: r
                .text("boot kernel")
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .and_then(|(secs, _)| secs.trim().parse().ok()),
            ..BootTimeline::default()
        };
        let manager = props(r.text("boot manager"));
        t.userspace = usec(manager.get("UserspaceTimestampMonotonic"));
        t.finished = usec(manager.get("FinishTimestampMonotonic"));
        let took = |from: &str, to: &str| Some(usec(manager.get(to))? - usec(manager.get(from))?);
        t.generators = took(
            "GeneratorsStartTimestampMonotonic",
            "GeneratorsFinishTimestampMonotonic",
        );
        t.units_load = took(
            "UnitsLoadStartTimestampMonotonic",
            "UnitsLoadFinishTimestampMonotonic",
        );
        // `systemctl show A B`: one block of properties per unit, blank lines between.
        for block in units_text.split("\n\n") {
            let p = props(block);
            let Some(id) = p.get("Id") else { continue };
            if p.get("LoadState").is_some_and(|s| s != "loaded") {
                continue;
            }
            t.units.insert(
                id.clone(),
                UnitTimes {
                    started: usec(p.get("InactiveExitTimestampMonotonic")),
                    active: usec(p.get("ActiveEnterTimestampMonotonic")),
                    main_started: usec(p.get("ExecMainStartTimestampMonotonic")),
                },
            );
        }
        t.cloud_init = seconds_and_text(r.text("boot cloud-init"), Order::SecondsFirst)
            .map(|(secs, name)| (name.to_string(), secs))
            .collect();
        t.cloud_init_starts = seconds_and_text(r.text("boot cloud-init starts"), Order::TextFirst)
            .map(|(up, stage)| (stage.to_string(), up))
            .collect();
        t.cloud_init_gaps = seconds_and_text(r.text("boot cloud-init gaps"), Order::SecondsFirst)
            .map(|(secs, lines)| (secs, lines.to_string()))
            .collect();
        t.cpu = BootCpu::parse(r.text("boot cpu"));
        t.blame = r.text("boot blame").to_string();
        t.ssh_host_keys = r.text("boot ssh host keys").to_string();
        t.clock = r.text("boot clock").to_string();
        Some(t)
    }

    fn unit(&self, name: &str) -> UnitTimes {
        self.units.get(name).cloned().unwrap_or_default()
    }

    /// When the agent's process started (guest seconds).
    pub fn agent_started(&self) -> Option<f64> {
        let a = self.unit("nodeagent.service");
        a.main_started.or(a.started)
    }

    /// The path from the kernel's start to the agent's, one step per cause, in boot order;
    /// a step whose ends the report does not have is left out. The steps follow the units'
    /// ordering (nodeagent.service is after network-online.target, which is after
    /// cloud-init.service; cloud-init.service after the network is up and cloud-init-local).
    pub fn steps(&self) -> Vec<BootStep> {
        let ci_local = self.unit("cloud-init-local.service");
        let ci = self.unit("cloud-init.service");
        let marks: [(&'static str, Option<f64>); 8] = [
            ("kernel", Some(0.0)),
            ("initramfs", self.initramfs),
            ("early userspace (systemd, udev coldplug)", self.userspace),
            ("cloud-init local stage", ci_local.started),
            ("network up (networkd, wait-online)", ci_local.active),
            ("cloud-init network stage", ci.started),
            ("containerd, chrony, network-online → agent", ci.active),
            ("(agent started)", self.agent_started()),
        ];
        let mut steps = Vec::new();
        let known: Vec<(&'static str, f64)> = marks
            .iter()
            .filter_map(|(cause, at)| at.map(|at| (*cause, at)))
            .collect();
        for pair in known.windows(2) {
            let ((cause, from), (_, to)) = (pair[0], pair[1]);
            if to >= from {
                steps.push(BootStep { cause, from, to });
            }
        }
        steps
    }

    /// cloud-init's slowest events inside its stages (`init-network/config-ssh`,
    /// `init-local/search-NoCloud`, …), longest first.
    pub fn slowest_cloud_init_events(&self, n: usize) -> Vec<(String, f64)> {
        let mut m: Vec<(String, f64)> = self
            .cloud_init
            .iter()
            .filter(|(name, _)| name.contains('/'))
            .cloned()
            .collect();
        m.sort_by(|a, b| b.1.total_cmp(&a.1));
        m.truncate(n);
        m
    }

    /// Each cloud-init stage's unit that ran (`cloud-init-local`, `cloud-init`,
    /// `cloud-config`, `cloud-final`): its whole run, how long Python took from the unit's
    /// start to the stage's first log line (when the report has it), and how much
    /// cloud-init's own events inside the stage account for. cloud-init logs no finish
    /// event for a whole stage, so the unit's times stand in for it.
    pub fn cloud_init_stages(&self) -> Vec<CloudInitStage> {
        [
            ("cloud-init-local.service", "init-local", "init-local/"),
            ("cloud-init.service", "init", "init-network/"),
            ("cloud-config.service", "modules:config", "modules-config/"),
            ("cloud-final.service", "modules:final", "modules-final/"),
        ]
        .iter()
        .filter_map(|(unit, stage, prefix)| {
            let u = self.unit(unit);
            let started = u.started?;
            let whole = u.active? - started;
            let events = self
                .cloud_init
                .iter()
                .filter(|(n, _)| n.starts_with(prefix) && !n[prefix.len()..].contains('/'))
                .map(|(_, s)| s)
                .sum();
            let to_first_line = self.cloud_init_starts.get(*stage).map(|up| up - started);
            Some(CloudInitStage {
                unit,
                whole,
                to_first_line,
                events,
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_complete_block_wins() {
        let text = "noise\r\n=== MUSTER-TEST-REPORT BEGIN cp-1 12.5\r\n@@ unit nodeagent.service\r\nType=notify\r\nActiveState=activating\r\n=== MUSTER-TEST-REPORT END\r\n\
            === MUSTER-TEST-REPORT BEGIN cp-1 22.5\n@@ unit nodeagent.service\nType=notify\nActiveState=active\n@@ nodeagent status\n{\"healthy\": true}\n=== MUSTER-TEST-REPORT END\n\
            === MUSTER-TEST-REPORT BEGIN cp-1 32.5\n@@ unit nodeagent.service\nType=no";
        let r = NodeReport::parse_last(text).unwrap();
        assert_eq!(r.hostname, "cp-1");
        assert_eq!(r.uptime_s, 22.5);
        assert_eq!(r.unit("nodeagent.service")["ActiveState"], "active");
        assert_eq!(r.unit("nodeagent.service")["Type"], "notify");
        assert_eq!(r.json("nodeagent status").unwrap()["healthy"], true);
        assert!(r.unit("keepalived.service").is_empty());
        assert!(NodeReport::parse_last("=== MUSTER-TEST-REPORT BEGIN x 1\n").is_none());
        assert!(BootTimeline::from_report(&r).is_none());
    }

    #[test]
    fn boot_steps_follow_the_units_to_the_agent() {
        // As the TEST image's reporter writes them (systemctl show, dmesg, the awk over
        // cloud-init.log); cloud-config.service is masked, chrony's block unloaded.
        let text = "=== MUSTER-TEST-REPORT BEGIN cp-1 300.0
@@ boot kernel
[    4.500000] Run /init as init process
@@ boot manager
UserspaceTimestampMonotonic=9000000
FinishTimestampMonotonic=0
@@ boot units
Id=cloud-init-local.service
LoadState=loaded
InactiveExitTimestampMonotonic=15000000
ActiveEnterTimestampMonotonic=45000000
ExecMainStartTimestampMonotonic=15000100

Id=cloud-init.service
LoadState=loaded
InactiveExitTimestampMonotonic=50000000
ActiveEnterTimestampMonotonic=110000000
ExecMainStartTimestampMonotonic=50000100

Id=cloud-config.service
LoadState=masked
InactiveExitTimestampMonotonic=0
ActiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=0

Id=nodeagent.service
LoadState=loaded
InactiveExitTimestampMonotonic=130000000
ActiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=130000500
@@ boot cloud-init
0.100 init-local/check-cache
3.200 init-network/config-ssh
0.400 init-network/config-users-groups
@@ boot cloud-init starts
init-local 25.5
init 52.25
@@ boot cloud-init gaps
12.500 util.py[DEBUG]: Running command ['udevadm', 'settle'] >>> util.py[DEBUG]: Reading from /proc/uptime
1.250 a >>> b
@@ boot ssh host keys
/etc/ssh/ssh_host_ed25519_key
=== MUSTER-TEST-REPORT END
";
        let r = NodeReport::parse_last(text).unwrap();
        let t = BootTimeline::from_report(&r).unwrap();
        assert_eq!(t.initramfs, Some(4.5));
        assert_eq!(t.userspace, Some(9.0));
        assert_eq!(t.finished, None);
        assert!(!t.units.contains_key("cloud-config.service"), "masked");
        assert_eq!(t.agent_started(), Some(130.0005));
        let steps: Vec<(&str, f64)> = t
            .steps()
            .iter()
            .map(|s| (s.cause, (s.seconds() * 10.0).round() / 10.0))
            .collect();
        assert_eq!(
            steps,
            [
                ("kernel", 4.5),
                ("initramfs", 4.5),
                ("early userspace (systemd, udev coldplug)", 6.0),
                ("cloud-init local stage", 30.0),
                ("network up (networkd, wait-online)", 5.0),
                ("cloud-init network stage", 60.0),
                ("containerd, chrony, network-online → agent", 20.0),
            ]
        );
        let last = t.steps().last().cloned().unwrap();
        assert_eq!(last.to, t.agent_started().unwrap());
        assert_eq!(
            t.slowest_cloud_init_events(1),
            [("init-network/config-ssh".to_string(), 3.2)]
        );
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let stages: Vec<(&str, f64, Option<f64>, f64)> = t
            .cloud_init_stages()
            .into_iter()
            .map(|s| (s.unit, s.whole, s.to_first_line.map(round), round(s.events)))
            .collect();
        assert_eq!(
            stages,
            [
                ("cloud-init-local.service", 30.0, Some(10.5), 0.1),
                ("cloud-init.service", 60.0, Some(2.25), 3.6),
            ]
        );
        assert_eq!(t.cloud_init_gaps.len(), 2);
        assert_eq!(t.cloud_init_gaps[0].0, 12.5);
        assert!(t.cloud_init_gaps[0].1.contains("'settle'] >>> "));
        assert!(t.ssh_host_keys.contains("ed25519"));
    }
    #[test]
    fn boot_cpu_splits_busy_from_waiting_and_names_units() {
        // Lines of a real `boot cpu` section and `boot manager` (vmlab-w-1, session 23's
        // fourth five-VM run; the `loaded` line from the eighth), a few of its 96 unit
        // blocks kept.
        let text = "=== MUSTER-TEST-REPORT BEGIN vmlab-w-1 298.1
@@ boot manager
UserspaceTimestampMonotonic=34543266
FinishTimestampMonotonic=0
GeneratorsStartTimestampMonotonic=37475691
GeneratorsFinishTimestampMonotonic=51586554
UnitsLoadStartTimestampMonotonic=51587577
UnitsLoadFinishTimestampMonotonic=57162208
@@ boot units
Id=nodeagent.service
LoadState=loaded
InactiveExitTimestampMonotonic=285400000
ActiveEnterTimestampMonotonic=0
ExecMainStartTimestampMonotonic=285400100
@@ boot cpu
uptime 292.26
cpu  10456 84 12344 87 114 0 573 0 0 0
pid1 1035 2053 reloads 0 modules 42
loaded aesni_intel autofs4 binfmt_misc br_netfilter bridge button configfs crc32_pclmul crc32c_intel crct10dif_pclmul cryptd crypto_simd dm_mod efi_pstore evdev failover fat fuse ghash_clmulni_intel ip_tables llc loop net_failover nls_ascii nls_cp437 overlay qemu_fw_cfg serio_raw sha1_ssse3 sha256_ssse3 sha512_generic sha512_ssse3 stp vfat virtio virtio_blk virtio_net virtio_pci virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring x_tables 
CPUUsageNSec=389957000
Id=getty@tty1.service

CPUUsageNSec=29805649000
Id=systemd-udevd.service

CPUUsageNSec=[not set]
Id=cloud-final.service

CPUUsageNSec=49080043000
Id=cloud-init-local.service

CPUUsageNSec=44192309000
Id=init.scope

ds-identify [up 49.12s] ds-identify 
ds-identify [up 51.36s] returning 0
=== MUSTER-TEST-REPORT END
";
        let r = NodeReport::parse_last(text).unwrap();
        let t = BootTimeline::from_report(&r).unwrap();
        let round = |v: f64| (v * 100.0).round() / 100.0;
        assert_eq!(t.generators.map(round), Some(14.11));
        assert_eq!(t.units_load.map(round), Some(5.57));
        let cpu = t.cpu.unwrap();
        assert_eq!(cpu.uptime, 292.26);
        // user + nice, system, irq + softirq; idle and iowait apart.
        assert_eq!(
            [cpu.user, cpu.system, cpu.irq, cpu.idle, cpu.iowait].map(round),
            [105.4, 123.44, 5.73, 0.87, 1.14]
        );
        assert_eq!(round(cpu.busy()), 234.57);
        assert_eq!(round(cpu.uncounted()), 55.68);
        assert_eq!(cpu.pid1.map(round), Some(30.88));
        assert_eq!((cpu.reloads, cpu.modules), (Some(0), Some(42)));
        assert_eq!(cpu.module_names.len(), 42);
        assert_eq!(cpu.module_names[0], "aesni_intel");
        assert_eq!(cpu.module_names[41], "x_tables");
        assert_eq!(cpu.ds_identify.map(round), Some(2.24));
        // Most first; a unit with accounting off ("[not set]") left out.
        let units: Vec<(&str, f64)> = cpu
            .units
            .iter()
            .map(|(u, s)| (u.as_str(), round(*s)))
            .collect();
        assert_eq!(
            units,
            [
                ("cloud-init-local.service", 49.08),
                ("init.scope", 44.19),
                ("systemd-udevd.service", 29.81),
                ("getty@tty1.service", 0.39),
            ]
        );
        assert_eq!(round(cpu.outside_units()), 111.1);
        // Without the section, or with a line it does not know, no figures at all.
        assert!(BootCpu::parse("").is_none());
        assert!(BootCpu::parse("uptime 12.0\ncpu 1 2\n").is_none());
    }
}
