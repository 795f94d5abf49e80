#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Issue #7's VM end-to-end test: a cluster of real VMs assembles from the seed volumes
//! alone. `muster build` (1 control plane + 1 worker in CI, 3 + 1 on demand; keepalived on
//! the control planes, addresses on the lab bridge), `muster lab image` (the base comes from
//! the image cache when there is one), then one QEMU VM per node (`muster_lab::vm::cluster`),
//! and every check is made from OUTSIDE the VMs: their consoles (ttyS0), the test image's
//! reporter (ttyS1: `systemctl show`, `nodeagent status --json`, `etcdctl member list`),
//! and the rendezvous (member reports, audit log) read with the agent's own client.
//!
//! Real: the image (debootstrap, provision.sh, mkfs.ext4 -d, qcow2), the kernel, systemd,
//! D-Bus, cloud-init with the NoCloud seed, networkd, chrony, containerd, keepalived,
//! Debian's etcd, the muster nodeagent (Type=notify, units over D-Bus), the rendezvous.
//! The kubeadm image is built through the user's install path (issue 13): kubeadm,
//! kubelet, kubectl, cri-tools and kubernetes-cni installed by apt from a signed apt
//! repository with pkgs.k8s.io's layout (key made in the test, served over HTTP from the
//! test) whose packages hold the stand-ins, and a stand-in archive of every image the nodes
//! run pre-pulled by the image's real containerd/ctr; each node's report shows the packages
//! (held) and containerd's images as the booted node has them.
//! Stand-ins: kubeadm (inside the kubeadm package), kubelet and kubectl (packaged scripts),
//! kube-apiserver (copied in by the TEST image step only, images/test-image.sh), k3s (the
//! k3s run still gets the stand-ins copied in, in place of the distribution), which cannot
//! be downloaded here.
//!
//! The same flow for k3s (`a_k3s_cluster_of_vms_assembles_from_its_seeds`): 3 servers with
//! the stand-in's embedded etcd (Debian's etcd) and 1 agent, keepalived on the servers;
//! k3s.service and k3s-agent.service are `Type=notify` units, so `active` proves the
//! stand-in's READY=1 reached systemd.
//!
//! Root, slow (minutes of emulated boot): runs only with `MUSTER_VM_TESTS=1
//! MUSTER_VM_CLUSTER=1`, on demand (CI's VM tier runs one cluster, the Vagrant test's 1 + 1
//! in `vagrant_box.rs`); the k3s cluster also needs `MUSTER_VM_K3S=1` (see docs/testing.md
//! for the measured times). The two never run at once (a lock: one VM cluster at a time).
//! One worker proves a worker join; the VMs share the host's cores under TCG, so each more
//! VM slows every boot and join (issue 17: CI's time budget). The default is one control
//! plane and one worker: a 3 + 1 run on CI's 2 cores (2026-12-03) starved etcd (agents started at
//! 248 s, two control-plane joins undone, quorum lost after assembly, 944 s). The HA joins
//! one at a time run in the namespace lab on every CI run; in VMs on demand:
//! `MUSTER_VM_CONTROL_PLANES=3` (and `MUSTER_VM_WORKERS=2` or `3` for 3 + 2, 3 + 3); `MUSTER_VM_BOOT_ONLY=1` stops once every
//! agent has started and prints where the boots went. Needs the binaries `cargo test
//! --workspace` builds (`cargo build --workspace --bins` otherwise): muster, nodeagent and
//! the stand-ins, in this test's target directory.

mod common;

use model::Role;
use muster_lab::vm::cluster::{ClusterOptions, SEED_MARKER, VmCluster, VmImage};
use protocol::wire::AuditEvent;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One VM cluster at a time (both tests live in this binary; cargo runs tests in parallel).
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distro {
    Kubeadm,
    K3s,
}

const NET: &str = "10.252.0";
const VIP_OCTET: u8 = 10;
const WORKER_CAP: usize = 2;
/// From VM start to every node done. 3 + 2 assembled in 440–531 s on 2 shared cores, but
/// five VMs' boot alone (QEMU start to the agent's first line) has ranged from ~290 s to
/// ~450 s, and a run with the slow boot needed more than 15 min; the VM tier's CI budget
/// (~25 min) is spent on this test when the machine is slow. A CI run (2026-11-23) ran
/// out of 22 min with one control plane still verifying: its etcd kept electing leaders
/// under TCG (the TEST image now tunes etcd for slow hosts). With that fix the same test
/// assembled in 791.8 s alone and in 1376.1 s inside a whole `.ci/run`: 30 min keeps a
/// margin (the whole CI run took 63 min of its 90).
const PATIENCE: Duration = Duration::from_secs(30 * 60);

/// On demand since the Vagrant test (1 + 1 from the same kind of image, assembling at a
/// rendezvous on the host) became the VM tier's one cluster run: two cluster runs of
/// emulated boots cost CI's budget ~4 min for the same proof.
fn enabled() -> bool {
    if std::env::var("MUSTER_VM_TESTS").as_deref() == Ok("1")
        && std::env::var("MUSTER_VM_CLUSTER").as_deref() == Ok("1")
    {
        return true;
    }
    eprintln!(
        "skipped: set MUSTER_VM_TESTS=1 MUSTER_VM_CLUSTER=1 to boot a cluster of QEMU VMs \
         (slow, root; CI's cluster run is the Vagrant test's)"
    );
    false
}

fn k3s_enabled() -> bool {
    if std::env::var("MUSTER_VM_K3S").as_deref() == Ok("1") {
        return enabled();
    }
    eprintln!(
        "skipped: set MUSTER_VM_TESTS=1 MUSTER_VM_CLUSTER=1 MUSTER_VM_K3S=1 to boot a k3s \
         cluster of VMs"
    );
    false
}

fn bin_dir() -> PathBuf {
    muster_lab::standins::target_bin_dir()
}

fn binary(name: &str) -> PathBuf {
    muster_lab::standins::target_binary(name).unwrap()
}

/// The spec's VIP provider: `keepalived` (CI: the agent enables and starts keepalived over
/// D-Bus), or `kube-vip` with `MUSTER_VM_HA=kube-vip` (on demand: the built-in default's
/// provider, floated by the TEST image's kube-vip stand-in).
fn ha_provider() -> &'static str {
    match std::env::var("MUSTER_VM_HA").as_deref() {
        Ok("kube-vip") => "kube-vip",
        Ok("keepalived") | Err(_) => "keepalived",
        Ok(other) => panic!("MUSTER_VM_HA={other}: use keepalived or kube-vip"),
    }
}

fn spec(distro: Distro, control_planes: usize, workers: usize, provider: &str) -> String {
    let (name, distribution) = match distro {
        Distro::Kubeadm => ("vmlab", "kind: kubeadm\n    version: \"v1.31.4\""),
        Distro::K3s => (
            "vmk3s",
            "kind: k3s\n    version: \"v1.31.6+k3s1\"\n    disable: [servicelb, traefik]",
        ),
    };
    format!(
        "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: {name}
spec:
  distribution:
    {distribution}
  topology:
    controlPlanes: {control_planes}
    workers: {workers}
  network:
    subnet: {NET}.0/24
    gateway: {NET}.1
    dns: [{NET}.1]
    interface: eth0
    addressPlan:
      controlPlanes: 11
      workers: 21
  ha:
    provider: {provider}
    vip: {NET}.{VIP_OCTET}
  rendezvous:
    url: \"https://{NET}.2:7443\"
    workerJoinCap: {WORKER_CAP}
  platform:
    type: qemu
"
    )
}

fn run(what: &str, cmd: &mut Command) -> Vec<u8> {
    let o = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(o.status.success(), "{what} failed ({})", o.status);
    o.stdout
}

/// The test's files (consoles, reports, rendezvous log), removed after a pass and kept for
/// diagnosis after a failure (the VMs are stopped first: the cluster is dropped before).
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(t) = self.0.take()
        {
            eprintln!("kept for diagnosis: {}", t.keep().display());
        }
    }
}

/// The nodes holding the VIP, each read from a report written after `since` (seconds since
/// the VMs started): snapshots of different moments could show a VIP that moved as two.
fn vip_holders(c: &VmCluster, names: &[String], since: f64) -> Vec<String> {
    let vip = format!("inet {NET}.{VIP_OCTET}/");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rs: Vec<_> = names.iter().map(|n| c.report(n)).collect();
        let fresh = rs
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.uptime_s >= since));
        if fresh || Instant::now() >= deadline {
            assert!(fresh, "a node wrote no report since {since:.0}s");
            return names
                .iter()
                .zip(&rs)
                .filter(|(_, r)| r.as_ref().unwrap().text("addresses").contains(&vip))
                .map(|(n, _)| n.clone())
                .collect();
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `MUSTER_VM_BOOT_ONLY=1` (on demand, for measuring boots): stop once every VM's agent
/// has started and print the boot breakdown; nothing is assembled or checked beyond that.
fn boot_only() -> bool {
    std::env::var("MUSTER_VM_BOOT_ONLY").as_deref() == Ok("1")
}

fn dump_consoles(c: &VmCluster) {
    for n in c.nodes() {
        eprintln!("==== {n}: console, last lines");
        let text = console(c, &n);
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{l}");
        }
        if let Some(r) = c.report(&n) {
            eprintln!("==== {n}: last report {:#?}", r.sections);
        }
    }
}

/// `lo–hi` of some seconds.
fn span(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{lo:.1}–{hi:.1}")
    }
}

/// Where each VM's boot went, from the guest's own clock (the reporter's `boot` sections):
/// one line per VM, cloud-init's stages and slowest modules, and a MEASURED summary per
/// cause (min–max over the VMs).
fn boot_breakdown(c: &VmCluster, names: &[String], distro: Distro) {
    let mut per_cause: Vec<(&'static str, Vec<f64>)> = Vec::new();
    let mut guest_agent = Vec::new();
    let mut host_slack = Vec::new();
    let mut kernel_seen = Vec::new();
    let mut after_kernel_slack = Vec::new();
    let mut modules: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut slowest: Option<(f64, String, String)> = None;
    let mut busy_share = Vec::new();
    let mut waiting = Vec::new();
    let mut uncounted = Vec::new();
    let mut snapshot_late = Vec::new();
    let mut unit_cpu: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for n in names {
        let Some(t) = c.boot_timeline(n) else {
            eprintln!("{n}: no boot timings in its reports");
            continue;
        };
        let steps = t.steps();
        let line: Vec<String> = steps
            .iter()
            .map(|s| format!("{} {:.1}", s.cause, s.seconds()))
            .collect();
        let agent = t.agent_started();
        let host_times = c.boot_times(n);
        let host = host_times.and_then(|b| b.agent_started);
        eprintln!(
            "{n}: boot (guest s): {}; agent started at {:.1} (guest), its first console line seen at {:.1} after VM start (host)",
            line.join(" | "),
            agent.unwrap_or(f64::NAN),
            host.unwrap_or(f64::NAN),
        );
        for s in &steps {
            match per_cause.iter_mut().find(|(c, _)| *c == s.cause) {
                Some((_, v)) => v.push(s.seconds()),
                None => per_cause.push((s.cause, vec![s.seconds()])),
            }
        }
        if let Some(a) = agent {
            guest_agent.push(a);
            if let Some(h) = host {
                host_slack.push(h - a);
                if let Some(k) = host_times.and_then(|b| b.kernel_started) {
                    kernel_seen.push(k);
                    after_kernel_slack.push(h - k - a);
                }
            }
            if slowest.as_ref().is_none_or(|(s, _, _)| a > *s) {
                slowest = Some((a, n.clone(), t.blame.clone()));
            }
        }
        let stages: Vec<String> = t
            .cloud_init_stages()
            .iter()
            .map(|s| match s.to_first_line {
                Some(py) => format!(
                    "{} {:.1} (Python's start to its first log line {py:.1}, its events {:.1})",
                    s.unit, s.whole, s.events
                ),
                None => format!("{} {:.1} (its events {:.1})", s.unit, s.whole, s.events),
            })
            .collect();
        let top: Vec<String> = t
            .slowest_cloud_init_events(6)
            .iter()
            .map(|(m, s)| format!("{m} {s:.1}"))
            .collect();
        eprintln!(
            "{n}: cloud-init stages {}; slowest events {}",
            stages.join(", "),
            top.join(", ")
        );
        for (secs, lines) in &t.cloud_init_gaps {
            eprintln!("{n}: cloud-init log silent {secs:.1} s: {lines}");
        }
        if let Some(cpu) = &t.cpu {
            let top: Vec<String> = cpu
                .units
                .iter()
                .take(10)
                .map(|(u, s)| format!("{} {s:.1}", u.trim_end_matches(".service")))
                .collect();
            eprintln!(
                "{n}: guest CPU over its first {:.0} s: busy {:.1} (user {:.1}, system {:.1}, irq {:.1}), idle {:.1}, iowait {:.1}, not counted {:.1}; by unit: {}; outside units (kernel threads, initramfs) {:.1}; PID 1 itself {}, {} reloads, generators ran {} s, units loaded in {} s; {} kernel modules",
                cpu.uptime,
                cpu.busy(),
                cpu.user,
                cpu.system,
                cpu.irq,
                cpu.idle,
                cpu.iowait,
                cpu.uncounted(),
                top.join(", "),
                cpu.outside_units(),
                cpu.pid1.map_or("-".into(), |s| format!("{s:.1}")),
                cpu.reloads.map_or("-".into(), |n| n.to_string()),
                t.generators.map_or("-".into(), |s| format!("{s:.1}")),
                t.units_load.map_or("-".into(), |s| format!("{s:.1}")),
                cpu.modules.map_or("-".into(), |m| m.to_string()),
            );
            if !cpu.module_names.is_empty() {
                eprintln!("{n}: kernel modules: {}", cpu.module_names.join(" "));
            }
            if let Some(d) = cpu.ds_identify {
                eprintln!("{n}: cloud-init's ds-identify (a generator) ran {d:.1} s");
            }

            busy_share.push(cpu.busy() / cpu.uptime);
            waiting.push(cpu.idle + cpu.iowait);
            uncounted.push(cpu.uncounted());
            snapshot_late.extend(agent.map(|a| cpu.uptime - a));
            for (u, s) in &cpu.units {
                unit_cpu.entry(u.clone()).or_default().push(*s);
            }
            unit_cpu
                .entry("(outside units)".into())
                .or_default()
                .push(cpu.outside_units());
        }
        eprintln!("{n}: clock: {}", t.clock.trim().replace('\n', "; "));
        eprintln!(
            "{n}: ssh host keys: {}",
            t.ssh_host_keys.trim().replace('\n', "; ")
        );
        let units: Vec<String> = t
            .units
            .iter()
            .map(|(u, x)| {
                let at = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
                format!("{u} {}→{}", at(x.started), at(x.active))
            })
            .collect();
        eprintln!("{n}: units (guest s, start→active): {}", units.join(", "));
        for (m, s) in t.slowest_cloud_init_events(usize::MAX) {
            modules.entry(m).or_default().push(s);
        }
    }
    if let Some((_, n, blame)) = slowest.filter(|(_, _, b)| !b.is_empty()) {
        eprintln!("{n} (slowest to its agent): systemd-analyze blame\n{blame}");
    }
    let causes: Vec<String> = per_cause
        .iter()
        .map(|(c, v)| format!("{c} {}", span(v)))
        .collect();
    common::measured(format_args!(
        "{distro:?}: boot to agent per cause, guest seconds (min–max of {} VMs): {}; agent started at {} guest s; host's first sight of it minus that {} = the kernel's first console line seen at {} s (firmware, kernel load, console poll) + {} s (from the agent's start to its first console line, `starting`, and the poll)",
        names.len(),
        causes.join("; "),
        span(&guest_agent),
        span(&host_slack),
        span(&kernel_seen),
        span(&after_kernel_slack),
    ));
    if !busy_share.is_empty() {
        let mut by_unit: Vec<(String, Vec<f64>)> = unit_cpu.into_iter().collect();
        by_unit.sort_by(|a, b| b.1.iter().sum::<f64>().total_cmp(&a.1.iter().sum::<f64>()));
        let by_unit: Vec<String> = by_unit
            .iter()
            .take(8)
            .map(|(u, v)| format!("{} {}", u.trim_end_matches(".service"), span(v)))
            .collect();
        common::measured(format_args!(
            "{distro:?}: guest CPU up to the agent's start (read {} s after it): busy {} of the time, idle or iowait {} s, not counted by the guest (its vCPU waiting for a host core) {} s; CPU seconds by unit (min–max): {}",
            span(&snapshot_late),
            span(&busy_share.iter().map(|b| b * 100.0).collect::<Vec<_>>()) + " %",
            span(&waiting),
            span(&uncounted),
            by_unit.join(", "),
        ));
    }
    let mut top: Vec<(String, Vec<f64>)> = modules.into_iter().collect();
    top.sort_by(|a, b| {
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        max(&b.1).total_cmp(&max(&a.1))
    });
    let top: Vec<String> = top
        .iter()
        .take(6)
        .map(|(m, v)| format!("{m} {}", span(v)))
        .collect();
    common::measured(format_args!(
        "{distro:?}: slowest cloud-init events (s, min–max): {}",
        top.join(", ")
    ));
}

fn console(c: &VmCluster, node: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(c.console_log(node).unwrap()).unwrap()).replace('\r', "")
}

/// A node count from the environment (`default` when unset); a value that is not a
/// number of 1..=5 is a mistake worth stopping for.
fn count_from_env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.parse() {
            Ok(n @ 1..=5) => n,
            _ => panic!("{name}={v}: give a number from 1 to 5"),
        },
    }
}

#[test]
fn a_cluster_of_vms_assembles_from_its_seeds() {
    if !enabled() {
        return;
    }
    assembles(
        Distro::Kubeadm,
        count_from_env("MUSTER_VM_CONTROL_PLANES", 1),
        count_from_env("MUSTER_VM_WORKERS", 1),
    );
}

#[test]
fn a_k3s_cluster_of_vms_assembles_from_its_seeds() {
    if !k3s_enabled() {
        return;
    }
    assembles(
        Distro::K3s,
        count_from_env("MUSTER_VM_CONTROL_PLANES", 1),
        1,
    );
}

fn assembles(distro: Distro, control_planes: usize, workers: usize) {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let muster = binary("muster");
    let nodeagent = binary("nodeagent");
    for s in ["kubeadm-standin", "k3s-standin", "apiserver-standin"] {
        binary(s);
    }
    let tmp = KeptOnFailure(Some(
        tempfile::tempdir_in(std::env::var_os("MUSTER_VM_WORKDIR").unwrap_or("/var/tmp".into()))
            .unwrap(),
    ));
    let d = tmp.path();
    let spec_path = d.join("cluster.yaml");
    let provider = ha_provider();
    std::fs::write(&spec_path, spec(distro, control_planes, workers, provider)).unwrap();

    // ---- muster build, as an operator runs it
    let build = d.join("build");
    run(
        "muster build",
        common::muster_build(&muster, &spec_path, &build, &nodeagent).stdout(Stdio::null()),
    );

    // ---- what the user's install path installs from (kubeadm), as upstream serves it but
    // with stand-ins inside: a signed apt repository with pkgs.k8s.io's layout (key made
    // here, served over HTTP) holding kubeadm (the kubeadm stand-in), kubelet, kubectl,
    // cri-tools and kubernetes-cni at the spec's version, and a stand-in OCI archive of
    // every image the nodes run (muster's and the pinned flannel manifest's).
    let cluster = muster_build::spec_source::load(Some(&spec_path))
        .unwrap()
        .cluster;
    let t = Instant::now();
    let sources = d.join("sources");
    let mut install_path = Vec::new();
    let mut prepulled = Vec::new();
    if distro == Distro::Kubeadm {
        let version = cluster.distribution.version.to_string();
        let (url, fpr) =
            common::artifacts::served_signed_repo(&sources, version.trim_start_matches('v'));
        let artifacts = sources.join("artifacts");
        prepulled =
            common::artifacts::standin_images(&artifacts, &cluster, &build.join("payload.tar.gz"));
        install_path.extend(["--artifacts".into(), artifacts.display().to_string()]);
        install_path.extend(["--source-override".into(), url]);
        install_path.extend(["--source-key-fingerprint".into(), fpr]);
    }
    let sources_secs = t.elapsed().as_secs_f64();

    // ---- the TEST image: the distribution through the install path, the images
    // pre-pulled by the real ctr, the payload, the API server stand-in (test-only), chrony
    // on the lab's NTP server
    let image_dir = d.join("image");
    let t = Instant::now();
    let report: serde_json::Value = serde_json::from_slice(&run(
        "muster lab image",
        Command::new(&muster)
            .args(["lab", "image", "--json", "--out"])
            .arg(&image_dir)
            .arg(&spec_path)
            .arg("--payload")
            .arg(build.join("payload.tar.gz"))
            .arg("--standins")
            .arg(bin_dir())
            .args(&install_path),
    ))
    .unwrap();
    let image_secs = t.elapsed().as_secs_f64();
    common::measured(format_args!(
        "{distro:?}: image build: {image_secs:.1}s (base rootfs cached: {}), its signed apt repository and stand-in image archives made in {sources_secs:.1}s",
        report["base"]["cached"]
    ));
    let stand_ins = common::test_image_standins(&report);
    assert_eq!(common::prepulled_images(&report), prepulled);
    match distro {
        Distro::Kubeadm => {
            // Only the API server's stand-in is copied in (test-only); kubeadm came
            // through apt.
            assert_eq!(stand_ins, ["apiserver-standin"]);
            assert!(
                report["kubernetesSource"]
                    .as_str()
                    .unwrap()
                    .ends_with("(TEST source override)"),
                "{}",
                report["kubernetesSource"]
            );
            assert!(prepulled.len() >= 8, "{prepulled:?}");
        }
        Distro::K3s => assert_eq!(
            stand_ins,
            ["kubeadm-standin", "k3s-standin", "apiserver-standin"]
        ),
    }

    // ---- the VMs
    let opts = ClusterOptions::new(d.join("vms"), muster.clone());
    let image = VmImage::from_dir(&image_dir).unwrap();
    let mut c = VmCluster::up(&build, &image, opts).unwrap();
    if boot_only() {
        let booted = c.wait_booted(PATIENCE);
        if let Err(e) = &booted {
            dump_consoles(&c);
            panic!("{e}");
        }
        let names = c.nodes();
        for n in &names {
            let unit = c.report(n).unwrap().unit("nodeagent.service");
            assert_eq!(unit["Type"], "notify", "{n}: {unit:?}");
        }
        boot_breakdown(&c, &names, distro);
        c.down();
        return;
    }
    let result = c.wait_assembled(PATIENCE);
    if let Err(e) = &result {
        dump_consoles(&c);
        panic!("{e}");
    }
    let assembled = result.unwrap();
    let names = c.nodes();
    let cps = c.nodes_with(Role::ControlPlane);
    let wks = c.nodes_with(Role::Worker);

    // ---- the reports written after assembly (the reporter writes every ~10 s)
    let deadline = Instant::now() + Duration::from_secs(180);
    let reports = loop {
        let rs: Vec<_> = names.iter().map(|n| c.report(n)).collect();
        // Healthy, not only done: etcd's quorum as the node sees it must hold too.
        let all_healthy = rs.iter().all(|r| {
            r.as_ref().is_some_and(|r| {
                r.json("nodeagent status")
                    .is_some_and(|s| s["thisNode"]["phase"] == "done" && s["healthy"] == true)
            })
        });
        if all_healthy || Instant::now() >= deadline {
            // Past the deadline the per-node assertions below say what is wrong.
            break rs
                .into_iter()
                .map(|r| r.expect("a node wrote no report"))
                .collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_secs(3));
    };

    for (n, r) in names.iter().zip(&reports) {
        let planned = c
            .baked()
            .nodes
            .iter()
            .find(|p| p.name.as_str() == n)
            .unwrap();
        let ip = planned.ip.to_string();
        // cloud-init applied the node's identity and address from its seed volume
        let con = console(&c, n);
        assert!(
            con.contains(SEED_MARKER),
            "{n}: cloud-init never read the seed"
        );
        assert!(
            con.lines()
                .any(|l| l.contains("ci-info") && l.contains("eth0") && l.contains(&ip)),
            "{n}: cloud-init's network table has no eth0 with {ip}"
        );
        assert_eq!(r.hostname, *n, "{n}: host name");
        assert_eq!(r.json("identity").unwrap()["name"], n.as_str());
        assert!(
            r.text("addresses")
                .lines()
                .any(|l| l.contains("eth0") && l.contains(&format!("inet {ip}/24"))),
            "{n}: {}",
            r.text("addresses")
        );
        // the agent ran under systemd as Type=notify and told systemd it was ready
        let unit = r.unit("nodeagent.service");
        assert_eq!(unit["Type"], "notify", "{n}: {unit:?}");
        assert_eq!(unit["NotifyAccess"], "main", "{n}: {unit:?}");
        assert_eq!(unit["ActiveState"], "active", "{n}: {unit:?}");
        assert_eq!(unit["SubState"], "running", "{n}: {unit:?}");
        assert!(
            !unit["StatusText"].is_empty(),
            "{n}: no STATUS= from the agent: {unit:?}"
        );
        if distro == Distro::K3s {
            // k3s's own units are Type=notify: `active` means the stand-in sent READY=1
            let is_cp = cps.iter().any(|(c, _)| c == n);
            let (running, idle) = if is_cp {
                ("k3s.service", "k3s-agent.service")
            } else {
                ("k3s-agent.service", "k3s.service")
            };
            let k = r.unit(running);
            assert_eq!(k["Type"], "notify", "{n}: {running} {k:?}");
            assert_eq!(k["ActiveState"], "active", "{n}: {running} {k:?}");
            assert_eq!(k["SubState"], "running", "{n}: {running} {k:?}");
            assert_eq!(r.unit(idle)["ActiveState"], "inactive", "{n}: {idle}");
            eprintln!(
                "{n}: {running} Type={} {}/{} NRestarts={}",
                k["Type"], k["ActiveState"], k["SubState"], k["NRestarts"]
            );
        }
        // what the install path put into the image, as the booted node has it
        if distro == Distro::Kubeadm {
            let version = cluster.distribution.version.to_string();
            let plain = version.trim_start_matches('v');
            let packages: Vec<&str> = r.text("packages").lines().collect();
            for p in ["kubeadm", "kubelet", "kubectl"] {
                let want = format!("{p} {plain}-1.1");
                assert!(packages.contains(&want.as_str()), "{n}: {packages:?}");
                assert!(
                    r.text("held").lines().any(|l| l == p),
                    "{n}: {p} not held: {}",
                    r.text("held")
                );
            }
            for p in ["cri-tools ", "kubernetes-cni "] {
                assert!(
                    packages.iter().any(|l| l.starts_with(p)),
                    "{n}: {packages:?}"
                );
            }
            let mut images: Vec<&str> = r.text("prepulled images").lines().collect();
            images.sort();
            assert_eq!(images, prepulled, "{n}: containerd's k8s.io images");
        }
        // preflight passed for real: the runtime runs and the clock is synchronized
        assert_eq!(r.unit("containerd.service")["ActiveState"], "active", "{n}");
        assert!(
            r.text("time").contains("NTPSynchronized=yes"),
            "{n}: {}",
            r.text("time")
        );
        // the node's own view: joined and healthy
        let s = r.json("nodeagent status").unwrap();
        assert_eq!(s["healthy"], true, "{n}: {s:#}");
        assert_eq!(s["thisNode"]["node"], n.as_str(), "{n}: {s:#}");
        assert!(s["thisNode"]["lastError"].is_null(), "{n}: {s:#}");
        eprintln!(
            "{n}: nodeagent Type={} {}/{} NRestarts={} status=\"{}\"; keepalived {} ({})",
            unit["Type"],
            unit["ActiveState"],
            unit["SubState"],
            unit["NRestarts"],
            unit["StatusText"],
            r.unit("keepalived.service")
                .get("ActiveState")
                .map_or("-", String::as_str),
            r.unit("keepalived.service")
                .get("UnitFileState")
                .map_or("-", String::as_str),
        );
    }

    // ---- units driven over D-Bus: the image ships keepalived disabled (the workers, whose
    // agent never touches it, show that); on every control plane the agent enabled and
    // started it over D-Bus. Under kube-vip the agent leaves keepalived alone and the
    // kube-vip stand-in (started by its path unit when the agent put kube-vip's manifest in
    // place) runs on the control planes only.
    for (n, r) in names.iter().zip(&reports) {
        let is_cp = cps.iter().any(|(c, _)| c == n);
        let k = r.unit("keepalived.service");
        let kv = r.unit("kube-vip-standin.service");
        let expect = |unit: &std::collections::BTreeMap<String, String>, file, active| {
            assert_eq!(unit["UnitFileState"], file, "{n}: {unit:?}");
            assert_eq!(unit["ActiveState"], active, "{n}: {unit:?}");
        };
        match (provider, is_cp) {
            ("kube-vip", true) => {
                expect(&k, "disabled", "inactive");
                expect(&kv, "static", "active");
            }
            ("kube-vip", false) => {
                expect(&k, "disabled", "inactive");
                expect(&kv, "static", "inactive");
            }
            (_, true) => expect(&k, "enabled", "active"),
            (_, false) => expect(&k, "disabled", "inactive"),
        }
    }
    // keepalived holds the VIP on exactly one control plane: in one round of reports all
    // written after this point; a VIP still moving gets two more rounds, two holders that
    // stay are a split brain.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let holders = vip_holders(&c, &names, c.elapsed());
        eprintln!("VIP holders at {:.0}s: {holders:?}", c.elapsed());
        let settled = holders.len() == 1 && cps.iter().any(|(n, _)| *n == holders[0]);
        rounds.push(holders);
        if settled {
            break;
        }
    }
    let last = rounds.last().unwrap();
    assert_eq!(last.len(), 1, "VIP holders, round by round: {rounds:?}");

    // ---- exactly one init; control-plane joins never overlapped (the audit log)
    let audit = c.audit().unwrap();
    let grants = |sem: &str| {
        audit
            .iter()
            .filter(|e| e.subject == sem && e.event == AuditEvent::Granted)
            .count()
    };
    // Exactly one init completed: init grants never overlapped, and under TCG a first init
    // can fail (the stand-in's etcd write timed out): then it was undone (`kubeadm reset`)
    // before the slot passed on. The initializer is the holder whose init token fenced the
    // `initialized` record; a late node may be granted the slot after it, find the record
    // and release.
    let init = muster_rendezvous::audit::max_concurrent_holders(&audit, "init").unwrap();
    assert_eq!(init, 1, "init grants overlapped");
    let initializer = muster_rendezvous::audit::creator_of(&audit, "init", "initialized")
        .unwrap_or_else(|| panic!("no fenced `initialized` record in the audit: {audit:?}"));
    eprintln!(
        "init grants: {}; initialized by {initializer}",
        grants("init")
    );
    for (n, r) in names.iter().zip(&reports) {
        let by = &r.json("nodeagent status").unwrap()["cluster"]["initializedBy"];
        assert_eq!(by, initializer.as_str(), "{n}: initializedBy");
    }
    if distro == Distro::Kubeadm {
        for (n, r) in names.iter().zip(&reports) {
            let log = r.text("kubeadm commands");
            let lines: Vec<&str> = log
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(_, e)| e)
                .collect();
            let completed = lines.contains(&"init ok");
            assert_eq!(
                completed,
                *n == initializer,
                "{n}: kubeadm init completed?\n{log}"
            );
            if let Some(last_failed) = lines.iter().rposition(|l| *l == "init failed") {
                assert!(
                    lines[last_failed..].contains(&"reset ok"),
                    "{n}: a failed init was not undone:\n{log}"
                );
                eprintln!("{n}: a failed kubeadm init, undone by kubeadm reset");
            }
        }
    }
    let cp = muster_rendezvous::audit::max_concurrent_holders(&audit, "cp-join").unwrap();
    let joining = cps.len() - 1;
    assert_eq!(cp, joining.min(1), "control-plane joins overlapped");
    // Each joining control plane at least once (a failed join is undone and retried).
    assert!(
        grants("cp-join") >= joining,
        "cp-join grants: {}",
        grants("cp-join")
    );
    let w = muster_rendezvous::audit::max_concurrent_holders(&audit, "worker-join").unwrap();
    assert!((1..=WORKER_CAP).contains(&w), "worker joins at once: {w}");
    assert!(grants("worker-join") >= wks.len());

    // ---- the rendezvous lists every planned node, done
    let members = c.members().unwrap();
    for n in &names {
        let m = members.iter().find(|m| &m.name == n).unwrap();
        assert_eq!(m.report["done"], true, "{n}: {:?}", m.report);
    }

    // ---- etcd has exactly the planned control planes as started members
    let init_report = &reports[names.iter().position(|n| *n == initializer).unwrap()];
    let etcd = init_report.json("etcd members").unwrap();
    let mut etcd_names: Vec<String> = etcd["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    etcd_names.sort();
    let mut planned: Vec<String> = cps.iter().map(|(n, _)| n.clone()).collect();
    planned.sort();
    assert_eq!(etcd_names, planned, "{etcd:#}");
    for (n, ip) in &cps {
        assert!(
            etcd["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["peerURLs"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == &format!("https://{ip}:2380"))))
                && etcd["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["clientURLs"].as_array().is_some_and(|u| !u.is_empty())),
            "{n}: {etcd:#}"
        );
    }

    // ---- the timings
    let mut booted = Vec::new();
    for n in &names {
        let t = c.boot_times(n).unwrap();
        eprintln!(
            "{n:<14} agent started {:>6.1}s  registered {:>6.1}s  joined {:>6.1}s  cloud-init finished {:>6.1}s",
            t.agent_started.unwrap_or(f64::NAN),
            t.registered.unwrap_or(f64::NAN),
            t.joined.unwrap_or(f64::NAN),
            t.cloud_init_finished.unwrap_or(f64::NAN),
        );
        booted.push(t.agent_started.or(t.registered).unwrap_or(f64::NAN));
    }
    let slowest_boot = booted.iter().copied().fold(0.0, f64::max);
    boot_breakdown(&c, &names, distro);
    common::measured(format_args!(
        "{distro:?}: {} VMs under {:?}: booted (agent started) in {slowest_boot:.1}s; VM start to assembled cluster {assembled:.1}s; image build {image_secs:.1}s",
        names.len(),
        c.accel().accel
    ));
    c.down();
}
