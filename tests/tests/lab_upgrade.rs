#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Issue 15 end to end in the namespace lab: a kubeadm cluster (3 control planes, 1
//! worker) assembled at v1.31.4 is rebuilt at v1.32.0 and `muster upgrade` publishes the
//! rebuilt payload; the agents roll it themselves. A failure injected once in the second
//! control plane's `kubeadm upgrade node` stops the roll there (the third control plane
//! and the worker wait; `--status` names node and step) until `muster upgrade --resume`.
//! Checked: every node ends `done` at the
//! new version, the rendezvous audit log shows one upgrade-lock holder at a time and every
//! control plane before the worker, and the real kubectl (minor 1.32) reads every Node at
//! v1.32.0 through the VIP with the kubeconfig `muster kubeconfig` writes. Gated:
//! `MUSTER_E2E_TESTS=1`; run under `flock /tmp/muster-lab.lock`.
//!
//! Real: the build, the rendezvous (lock, audit log), the agents, etcd, keepalived, TLS,
//! kubectl. Stand-ins: kubeadm (`upgrade plan|apply|node`), the kubelet (its restart
//! reports its version on its Node), the API server (Node versions, cordon, Eviction).

use muster_lab::{Lab, UpOptions, netns};
use protocol::wire::{AuditEntry, AuditEvent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(180);
const FROM: &str = "v1.31.4";
const TO: &str = "v1.32.0";

fn enabled() -> bool {
    muster_tests::harness::e2e_enabled()
}

fn bin_dir() -> PathBuf {
    muster_lab::standins::target_bin_dir()
}

/// The built-in default with one worker, at `version`, written under `dir` and loaded.
fn spec_at(dir: &Path, version: &str) -> muster_build::spec_source::LoadedSpec {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/default.yaml"),
    )
    .unwrap()
    .replace("\"v1.31.4\"", &format!("{version:?}"))
    .replace("workers: 3", "workers: 1");
    let path = dir.join(format!("spec-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    muster_build::spec_source::load(Some(&path)).unwrap()
}

/// The upgrade phase a node persisted (`ROOT/var/lib/nodeagent/upgrade.json`).
fn upgrade_phase(lab: &Lab, node: &str) -> Value {
    let root = &lab.node(node).unwrap().root;
    std::fs::read(root.join("var/lib/nodeagent/upgrade.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The upgrade lock's grants and releases in the audit log, as (event, holder).
fn lock_events(audit: &[AuditEntry]) -> Vec<(AuditEvent, String)> {
    audit
        .iter()
        .filter(|e| e.subject == protocol::release::UPGRADE_SEMAPHORE)
        .map(|e| (e.event, e.holder.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn a_kubeadm_cluster_is_upgraded_one_minor_version_a_failed_step_stops_and_resumes() {
    if !enabled() {
        return;
    }
    let began = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab-upgrade");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let opts = UpOptions::new(dir.join("lab"), &bin_dir());
    let mut lab = Lab::create(&spec_at(&dir, FROM), &opts).unwrap();
    let all: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let role = |n: &str| {
        lab.record()
            .nodes
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .role
            .clone()
    };
    let cps: Vec<String> = all
        .iter()
        .filter(|n| role(n) == "control-plane")
        .cloned()
        .collect();
    let workers: Vec<String> = all
        .iter()
        .filter(|n| role(n) == "worker")
        .cloned()
        .collect();
    for n in &all {
        lab.boot(n).unwrap();
    }
    let assembled = lab
        .wait_assembled(&all, began, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    eprintln!("assembled at {FROM} in {:.1}s", assembled.as_secs_f64());

    // ---- the operator rebuilds at the next minor and publishes it
    let build_dir = lab.record().build_dir.clone();
    let bopts = muster_build::bake::BuildOptions {
        agent_bin: opts.agent_bin.clone(),
        mtime: 0,
        addons: muster_build::addons::source::Source::from_options(opts.artifacts.clone()),
    };
    muster_build::bake::build(&spec_at(&dir, TO), &build_dir, &bopts).unwrap();
    // A failure injected in the second control plane's `kubeadm upgrade node` (once).
    let mut sorted_cps = cps.clone();
    sorted_cps.sort();
    let failing = sorted_cps[1].clone();
    let knobs = lab
        .node(&failing)
        .unwrap()
        .root
        .join("var/lib/muster-standin");
    std::fs::create_dir_all(&knobs).unwrap();
    std::fs::write(knobs.join("knobs"), "fail_at=upgrade-node\n").unwrap();
    let muster = |args: &[&str]| {
        let mut cmd = netns::command(&lab.record().bridge_ns, &[], bin_dir().join("muster"));
        cmd.args(args).arg("--out").arg(&build_dir);
        let out = netns::run(cmd, &format!("muster {args:?}"), Duration::from_secs(60)).unwrap();
        eprintln!("muster {args:?} -> {:?}\n{}", out.code, out.stdout);
        out
    };
    let roll_began = Instant::now();
    let out = muster(&["upgrade"]);
    assert!(out.ok(), "muster upgrade: {}", out.all());
    let phases = || -> Vec<(String, Value)> {
        all.iter()
            .map(|n| (n.clone(), upgrade_phase(&lab, n)))
            .collect()
    };
    let deadline = Instant::now() + PATIENCE;
    let stopped = loop {
        let p = phases();
        if let Some((_, s)) = p
            .iter()
            .find(|(n, s)| *n == failing && s["phase"] == "stopped")
        {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the roll did not stop at {failing}: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stopped["step"], "upgrade-node", "{stopped}");
    assert!(
        stopped["cause"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{stopped}"
    );
    // The roll stays stopped: nobody after it in the order takes the lock or starts a
    // step (fetching and checking the release is no change to the node).
    std::thread::sleep(Duration::from_secs(3));
    for (n, p) in phases() {
        if n != failing && n != sorted_cps[0] {
            assert!(
                p["phase"] == "waiting" || p["phase"] == "fetching",
                "{n} moved while the roll was stopped: {p}"
            );
        }
    }
    let status = muster(&["upgrade", "--status"]);
    assert!(
        status.stdout.contains(&failing) && status.stdout.contains("upgrade-node"),
        "--status names the stopped node and step: {}",
        status.all()
    );
    let out = muster(&["upgrade", "--resume"]);
    assert!(out.ok(), "muster upgrade --resume: {}", out.all());

    // ---- the agents finish the roll
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = phases();
        if p.iter().all(|(_, s)| s["phase"] == "done" && s["to"] == TO) {
            break;
        }
        // Stopped until its agent reads the resume request; stopped after it took it
        // (`resumesSeen`) is a new failure.
        if let Some((n, s)) = p
            .iter()
            .find(|(_, s)| s["phase"] == "stopped" && s["resumesSeen"].as_u64() >= Some(1))
        {
            panic!("the roll stopped again at {n}: {s}");
        }
        assert!(Instant::now() < deadline, "the roll did not finish: {p:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let roll = roll_began.elapsed();
    eprintln!("rolled to {TO} in {:.1}s", roll.as_secs_f64());
    let status = muster(&["upgrade", "--status"]);
    assert!(status.ok(), "--status after the roll: {}", status.all());

    // ---- one holder at a time, every control plane before any worker
    let events = lock_events(&lab.audit().unwrap());
    let mut holder: Option<String> = None;
    let mut order: Vec<String> = Vec::new();
    for (event, who) in &events {
        match event {
            AuditEvent::Granted => {
                assert!(
                    holder.as_ref().is_none_or(|h| h == who),
                    "{who} granted the upgrade lock while {holder:?} held it: {events:?}"
                );
                if holder.is_none() && !order.contains(who) {
                    order.push(who.clone());
                }
                holder = Some(who.clone());
            }
            AuditEvent::Released | AuditEvent::Expired => {
                assert_eq!(holder.as_ref(), Some(who), "{events:?}");
                holder = None;
            }
            _ => {}
        }
    }
    let mut want = cps.clone();
    want.sort();
    let mut w = workers.clone();
    w.sort();
    want.extend(w);
    assert_eq!(order, want, "lock order: {events:?}");

    // ---- the real kubectl sees every Node at the new version through the VIP
    if let Some(kubectl) = muster_lab::standins::real_kubectl(TO).unwrap() {
        let kc = dir.join("admin.kubeconfig");
        let from = workers[0].clone();
        muster_tests::harness::write_admin_kubeconfig(&lab, &bin_dir().join("muster"), &from, &kc);
        let out = muster_tests::harness::real_kubectl_in(
            &lab,
            &kubectl,
            &kc,
            &from,
            &["get", "nodes", "-o", "json"],
        );
        assert!(out.ok(), "kubectl get nodes: {}", out.all());
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let mut seen: Vec<(String, String, bool)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    n["spec"]["unschedulable"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        seen.sort();
        let mut names = all.clone();
        names.sort();
        let want: Vec<(String, String, bool)> = names
            .into_iter()
            .map(|n| (n, TO.to_string(), false))
            .collect();
        assert_eq!(seen, want, "nodes as the real kubectl reads them");
    } else {
        eprintln!("no real kubectl for {TO}: the Node versions were not read by it");
    }
    eprintln!(
        "TEST DURATION lab_upgrade: {:.1}s (assembly {:.1}s, roll {:.1}s)",
        began.elapsed().as_secs_f64(),
        assembled.as_secs_f64(),
        roll.as_secs_f64()
    );
    muster_tests::harness::finish(lab);
}
