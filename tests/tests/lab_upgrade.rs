#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Issue 15 end to end in the namespace lab: a kubeadm cluster (3 control planes, 1
//! worker) assembled at v1.31.4 is rebuilt at v1.32.0 and `muster upgrade` publishes the
//! rebuilt payload; the agents roll it themselves. A failure injected once in the second
//! control plane's `kubeadm upgrade node` stops the roll there (the third control plane
//! and the worker wait; `--status` names node and step) until `muster upgrade --resume`.
//! Meanwhile the worker is re-created from the rebuilt image (at v1.32.0): it waits in
//! `waiting-for-control-plane-version` until the control planes run v1.32.0, then joins,
//! never taking the upgrade lock; the third control plane is re-created too while the roll
//! is stopped and joins at once (the first control plane runs v1.32.0), replacing its etcd
//! member, never taking the lock; re-created again after the roll the worker joins
//! directly, and so does the first control plane (its etcd member replaced).
//! Checked: every node ends `done` at the
//! new version; a sampler (a thread, every 500 ms through the whole roll, the stop and the
//! resume included) finds etcd's quorum held (`etcdctl endpoint health` on each stacked
//! member) and the VIP taking writes (a ConfigMap created through it with the admin
//! kubeconfig) with no run of failures longer than a keepalived failover ([`FAILOVER`]); the rendezvous audit log shows one upgrade-lock holder at a time and every
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How often the sampler checks etcd and writes through the VIP.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The longest a run of failed writes through the VIP may last, measured from the first
/// failed write to the next one that succeeds: one failover of the lab's kube-vip stand-in
/// (the default spec says kube-vip), the bound its keepalived timing gives
/// (`KeepalivedTiming::failover_bound_s`: detecting the dead API server, then a backup's
/// election).
const FAILOVER: Duration =
    Duration::from_secs(muster_lab::vip::KUBE_VIP_STANDIN_TIMING.failover_bound_s() as u64);

/// What the sampler saw through the roll.
#[derive(Debug, Default)]
struct Samples {
    taken: u32,
    /// Samples where fewer than a quorum of the stacked members answered `endpoint health`,
    /// as (seconds into the sampling, healthy members).
    quorum_lost: Vec<(f64, usize)>,
    writes_failed: u32,
    /// The longest run of failed writes: how many, and from the first failure's start to
    /// the next success's start (or the end of sampling).
    longest_run: u32,
    longest_gap: Duration,
    /// The first few failures' output, to say why.
    failures: Vec<String>,
}

/// A thread that, every [`SAMPLE_EVERY`] until stopped, asks each of `cps`' local etcd
/// members for `endpoint health` (quorum: more than half healthy) and creates a ConfigMap
/// through the VIP with `cp_root`'s admin kubeconfig from `from`'s namespace. It reads the
/// lab through its own handle ([`Lab::open`]): the test keeps driving its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Samples>,
}

impl Sampler {
    fn start(lab: &Lab, cps: &[String], from: &str) -> Sampler {
        let state = lab.record().state_dir.clone();
        let cp_root = lab.node(&cps[0]).unwrap().root.clone();
        let (cps, from) = (cps.to_vec(), from.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            let lab = Lab::open(&state).unwrap();
            let quorum = cps.len() / 2 + 1;
            let began = Instant::now();
            let mut s = Samples::default();
            let (mut run, mut run_began) = (0u32, None::<Instant>);
            while !stopping.load(Ordering::SeqCst) {
                let at = Instant::now();
                let healthy = cps
                    .iter()
                    .filter(|cp| {
                        lab.etcdctl(cp, &["endpoint", "health"])
                            .is_ok_and(|o| o.ok())
                    })
                    .count();
                if healthy < quorum {
                    s.quorum_lost
                        .push((at.duration_since(began).as_secs_f64(), healthy));
                }
                let argv = muster_tests::harness::configmap_post_argv(
                    &cp_root,
                    &format!("roll-sample-{}", s.taken),
                );
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let wrote = lab.exec(&from, &argv);
                s.taken += 1;
                if wrote.as_ref().is_ok_and(|o| o.ok()) {
                    if let Some(b) = run_began.take() {
                        s.longest_gap = s.longest_gap.max(at.duration_since(b));
                    }
                    run = 0;
                } else {
                    s.writes_failed += 1;
                    run += 1;
                    s.longest_run = s.longest_run.max(run);
                    run_began.get_or_insert(at);
                    if s.failures.len() < 5 {
                        s.failures.push(match wrote {
                            Ok(o) => o.all(),
                            Err(e) => e.to_string(),
                        });
                    }
                }
                std::thread::sleep(SAMPLE_EVERY.saturating_sub(at.elapsed()));
            }
            if let Some(b) = run_began {
                s.longest_gap = s.longest_gap.max(b.elapsed());
            }
            s
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
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

/// The node's upgrade phase once it reads `want` (the agent's first upgrade round runs
/// right after the tick that made the node done, so an assembled node may not have
/// written it yet), or what it reads after `within`.
fn upgrade_phase_within(lab: &Lab, node: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = upgrade_phase(lab, node);
        if p["phase"] == want || Instant::now() >= deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `nodeagent status` run on `node` (its namespace, its root), with `extra` arguments.
fn nodeagent_status(lab: &Lab, node: &str, extra: &[&str]) -> muster_lab::netns::Out {
    let agent = bin_dir().join("nodeagent").display().to_string();
    let root = lab.node(node).unwrap().root.display().to_string();
    let mut argv = vec![agent.as_str(), "status", "--root", root.as_str()];
    argv.extend_from_slice(extra);
    lab.exec(node, &argv).unwrap()
}

/// The pid of the node's agent (the lab's pid file: the process it spawned execs into the
/// agent).
fn agent_pid(lab: &Lab, node: &str) -> u32 {
    let dir = &lab.node(node).unwrap().dir;
    std::fs::read_to_string(dir.join("run/agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A node's bootstrap state (`ROOT/var/lib/nodeagent/state.json`: `state`, `history`).
fn agent_state(lab: &Lab, node: &str) -> Value {
    let root = &lab.node(node).unwrap().root;
    std::fs::read(root.join(model::node_files::AGENT_STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The kubeadm stand-in's command log on a node (empty when it ran nothing).
/// `node` halted, re-imaged and started: it assembles, having checked the control plane's
/// version without waiting for it (the control plane runs the node's version already).
fn recreate_joins_without_waiting(lab: &mut Lab, node: &str) {
    let started = Instant::now();
    lab.stop(node).unwrap();
    lab.reimage(node).unwrap();
    lab.start(node).unwrap();
    lab.wait_assembled(&[node.to_string()], started, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    let s = agent_state(lab, node);
    let phases: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"checking-control-plane-version")
            && !phases.contains(&"waiting-for-control-plane-version"),
        "{node} re-created after the roll joins without waiting: {phases:?}"
    );
}

/// Control plane `cp` re-created ([`recreate_joins_without_waiting`]): it ran `kubeadm
/// join`, and etcd (as `survivor` lists it) has three members again, `cp`'s a new voter in
/// place of its previous machine's. How long it took.
fn recreate_control_plane(lab: &mut Lab, cp: &str, survivor: &str) -> Duration {
    let old_id = etcd_members(lab, survivor)
        .iter()
        .find(|m| m.name == cp)
        .map(|m| m.id)
        .unwrap();
    let began = Instant::now();
    recreate_joins_without_waiting(lab, cp);
    let took = began.elapsed();
    let commands = kubeadm_commands(lab, cp);
    assert!(commands.contains("join"), "{cp}: {commands}");
    let members = etcd_members(lab, survivor);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members
            .iter()
            .any(|m| m.name == cp && m.id != old_id && !m.learner),
        "{cp}'s member replaced by a voter: {members:?}"
    );
    took
}

/// The stacked etcd's members as `node`'s local member lists them.
fn etcd_members(lab: &Lab, node: &str) -> Vec<muster_standins::etcd::Member> {
    let out = lab
        .etcdctl(node, &["member", "list", "-w", "json"])
        .unwrap();
    assert!(out.ok(), "member list on {node}: {}", out.all());
    muster_standins::etcd::parse_member_list(&out.stdout).unwrap()
}

fn kubeadm_commands(lab: &Lab, node: &str) -> String {
    let root = &lab.node(node).unwrap().root;
    std::fs::read_to_string(root.join("var/lib/muster-standin/commands.log")).unwrap_or_default()
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
    let _slot = muster_tests::harness::lab_slot();
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

    // ---- the operator rebuilds at the next minor and publishes it, with an agent binary
    // of other bytes (the same program with a marker appended: ELF ignores trailing
    // bytes) so the roll must move every agent to the release's own.
    let build_dir = lab.record().build_dir.clone();
    let next_agent = dir.join("nodeagent-next");
    let mut bytes = std::fs::read(&opts.agent_bin).unwrap();
    bytes.extend_from_slice(b"\nlab_upgrade: the release's agent\n");
    std::fs::write(&next_agent, &bytes).unwrap();
    let next_digest = sha256_hex(&bytes);
    let agents_before: Vec<(String, u32)> = all
        .iter()
        .map(|n| (n.clone(), agent_pid(&lab, n)))
        .collect();
    let bopts = muster_build::bake::BuildOptions {
        agent_bin: next_agent.clone(),
        mtime: 0,
        helm: opts.helm.clone(),
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
    let bridge_ns = lab.record().bridge_ns.clone();
    let muster = |args: &[&str]| {
        let mut cmd = netns::command(&bridge_ns, &[], bin_dir().join("muster"));
        cmd.args(args).arg("--out").arg(&build_dir);
        let out = netns::run(cmd, &format!("muster {args:?}"), Duration::from_secs(60)).unwrap();
        eprintln!("muster {args:?} -> {:?}\n{}", out.code, out.stdout);
        out
    };
    // The sampler writes from the first control plane's namespace: the worker and the last
    // control plane are re-created during the roll (their links down meanwhile).
    let sampler = Sampler::start(&lab, &cps, &sorted_cps[0]);
    let roll_began = Instant::now();
    let out = muster(&["upgrade"]);
    assert!(out.ok(), "muster upgrade: {}", out.all());
    let phases = |lab: &Lab| -> Vec<(String, Value)> {
        all.iter()
            .map(|n| (n.clone(), upgrade_phase(lab, n)))
            .collect()
    };
    let deadline = Instant::now() + PATIENCE;
    let stopped = loop {
        let p = phases(&lab);
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
    // step (queueing for, fetching and checking the release is no change to the node).
    std::thread::sleep(Duration::from_secs(3));
    for (n, p) in phases(&lab) {
        if n != failing && n != sorted_cps[0] {
            assert!(
                p["phase"] == "waiting" || p["phase"] == "queued" || p["phase"] == "fetching",
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
    // `nodeagent status` on the stopped node says where it and the roll stand.
    let local = nodeagent_status(&lab, &failing, &[]);
    assert!(
        local.stdout.contains(&format!(
            "  upgrade: STOPPED upgrading to {TO} (release 1) at step upgrade-node"
        )) && local
            .stdout
            .contains(&format!("upgrade lock: {failing} (token"))
            && local
                .stdout
                .contains(&format!("STOPPED at {failing} step upgrade-node")),
        "nodeagent status shows this node's stop and the roll: {}",
        local.all()
    );

    // ---- a worker re-created from the rebuilt image (at the new version) during the roll:
    // the control planes still run the old one (the roll is stopped at the second), so it
    // waits, saying why, and does not join.
    let recreated = workers[0].clone();
    lab.stop(&recreated).unwrap();
    lab.reimage(&recreated).unwrap();
    lab.start(&recreated).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let waiting = loop {
        let s = agent_state(&lab, &recreated);
        if s["state"]["phase"] == "waiting-for-control-plane-version" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the re-created {recreated} did not wait for the control plane: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let why = waiting["state"]["lastError"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        why.contains(TO) && why.contains(FROM) && why.contains("newer than the control plane"),
        "the reason names both versions: {waiting}"
    );
    let status = muster(&["status"]);
    assert!(
        status.stdout.contains("waiting-for-control-plane-version")
            && status.stdout.contains("newer than the control plane"),
        "muster status shows the waiting worker and why: {}",
        status.all()
    );
    let local = nodeagent_status(&lab, &recreated, &["--json"]);
    assert!(
        local.stdout.contains("waiting-for-control-plane-version") && local.stdout.contains(TO),
        "nodeagent status shows the waiting phase and why: {}",
        local.all()
    );
    // The roll is stopped: the control plane's version cannot move, so neither may it.
    std::thread::sleep(Duration::from_secs(3));
    let still = agent_state(&lab, &recreated);
    assert_eq!(
        still["state"]["phase"], "waiting-for-control-plane-version",
        "{still}"
    );
    assert!(
        !kubeadm_commands(&lab, &recreated).contains("join"),
        "the re-created worker ran kubeadm join before the control plane reached {TO}"
    );

    // ---- the last control plane re-created from the rebuilt image while the roll is
    // stopped: the first control plane runs the new version (the roll has moved the
    // control plane's version, which a control-plane join deploys), so it joins at once,
    // replacing its old etcd member (which would otherwise hold the next control plane's
    // turn for ever: no quorum to spare); it never takes the upgrade lock.
    let cp_mid = sorted_cps[2].clone();
    let took = recreate_control_plane(&mut lab, &cp_mid, &sorted_cps[0]);
    assert_eq!(
        upgrade_phase_within(&lab, &cp_mid, "done", Duration::from_secs(30))["phase"],
        "done",
        "the re-created {cp_mid} runs {TO} without upgrading"
    );
    eprintln!(
        "re-created control plane {cp_mid} joined during the stopped roll in {:.1}s",
        took.as_secs_f64()
    );
    // Still stopped: the worker still waits (the second control plane runs the old version).
    assert_eq!(upgrade_phase(&lab, &failing)["phase"], "stopped");
    assert_eq!(
        agent_state(&lab, &recreated)["state"]["phase"],
        "waiting-for-control-plane-version"
    );

    let out = muster(&["upgrade", "--resume"]);
    assert!(out.ok(), "muster upgrade --resume: {}", out.all());

    // ---- the agents finish the roll
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = phases(&lab);
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
    let samples = sampler.finish();
    eprintln!("rolled to {TO} in {:.1}s", roll.as_secs_f64());
    // ---- every agent now runs the release's binary, in the same process (exec'd in
    // place, so systemd's main PID and the lab's pid file stay right); the re-created
    // worker booted the new image, so it ran it from the start.
    for (n, pid_before) in &agents_before {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pid = agent_pid(&lab, n);
            let exe = std::fs::read(format!("/proc/{pid}/exe")).map(|b| sha256_hex(&b));
            if exe.as_deref().ok() == Some(next_digest.as_str()) {
                if *n != recreated && *n != cp_mid {
                    assert_eq!(pid, *pid_before, "{n}: the agent was restarted, not exec'd");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{n}: agent pid {pid} does not run the release's binary: {exe:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    muster_tests::measured!(
        "lab_upgrade kubeadm roll sampled every {} ms: {} samples, etcd quorum lost in {}, {} VIP writes failed, longest run {} ({:.1}s; bound {}s)",
        SAMPLE_EVERY.as_millis(),
        samples.taken,
        samples.quorum_lost.len(),
        samples.writes_failed,
        samples.longest_run,
        samples.longest_gap.as_secs_f64(),
        FAILOVER.as_secs()
    );
    // The sampler ran through the roll (the stop and the resume included), not a blink of it.
    assert!(samples.taken >= 10, "too few samples: {samples:?}");
    assert!(
        samples.quorum_lost.is_empty(),
        "etcd lost its quorum during the roll (seconds in, healthy members): {:?}",
        samples.quorum_lost
    );
    assert!(
        samples.longest_gap <= FAILOVER && samples.writes_failed < samples.taken,
        "writes through the VIP failed for longer than a failover ({}s): {samples:?}",
        FAILOVER.as_secs()
    );
    let status = muster(&["upgrade", "--status"]);
    assert!(status.ok(), "--status after the roll: {}", status.all());

    // ---- one holder at a time, every control plane in order; the re-created worker and
    // control plane run the release already: they count as done and never take the
    // upgrade lock.
    let upgraded_cps = &sorted_cps[..2];
    assert_one_holder_in_order(&lab, upgraded_cps);
    assert_eq!(
        upgrade_phase_within(&lab, &recreated, "done", Duration::from_secs(30))["phase"],
        "done",
        "the re-created worker is done at {TO} without upgrading"
    );
    // It joined (took a worker-join slot) only once the last control plane to upgrade
    // had taken its turn.
    let audit = lab.audit().unwrap();
    let last_cp_turn = audit
        .iter()
        .rposition(|e| {
            e.subject == protocol::release::UPGRADE_SEMAPHORE
                && e.event == AuditEvent::Granted
                && e.holder.as_deref() == Some(sorted_cps[1].as_str())
        })
        .expect("the last control plane to upgrade took the upgrade lock");
    let joined = audit
        .iter()
        .rposition(|e| {
            e.subject == protocol::keys::WORKER_JOIN_SEMAPHORE
                && e.event == AuditEvent::Granted
                && e.holder.as_deref() == Some(recreated.as_str())
        })
        .expect("the re-created worker took a worker-join slot");
    assert!(
        joined > last_cp_turn,
        "the re-created worker joined before {} took its turn",
        sorted_cps[1]
    );

    // ---- the real kubectl sees every Node Ready at the new version through the VIP
    assert_nodes_at(&lab, &dir, &workers[0], &all, TO);

    // ---- re-created again after the roll: the control plane runs its version, so it
    // joins directly, never waiting.
    let again = Instant::now();
    recreate_joins_without_waiting(&mut lab, &recreated);
    assert_eq!(
        upgrade_phase_within(&lab, &recreated, "done", Duration::from_secs(30))["phase"],
        "done"
    );
    assert_one_holder_in_order(&lab, upgraded_cps);
    assert_nodes_at(&lab, &dir, &workers[0], &all, TO);
    eprintln!(
        "re-created {recreated} joined after the roll in {:.1}s",
        again.elapsed().as_secs_f64()
    );

    // ---- a control plane re-created after the roll, the one that initialized the
    // cluster: its previous machine's Node and etcd member are its own (the agent must not
    // wait on its own Node); it joins once, replacing the member.
    let cp = sorted_cps[0].clone();
    let took = recreate_control_plane(&mut lab, &cp, &sorted_cps[1]);
    assert_nodes_at(&lab, &dir, &workers[0], &all, TO);
    eprintln!(
        "re-created control plane {cp} joined after the roll in {:.1}s",
        took.as_secs_f64()
    );
    eprintln!(
        "TEST DURATION lab_upgrade: {:.1}s (assembly {:.1}s, roll {:.1}s)",
        began.elapsed().as_secs_f64(),
        assembled.as_secs_f64(),
        roll.as_secs_f64()
    );
    muster_tests::harness::finish(lab);
}

/// The audit log's upgrade lock: never granted to one node while another holds it, and
/// first taken by the nodes in exactly the order `want`.
fn assert_one_holder_in_order(lab: &Lab, want: &[String]) {
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
    assert_eq!(order, want, "lock order: {events:?}");
}

/// The real kubectl at `version`'s minor, through the VIP from `from`, reads every one of
/// `all` at `version`, not cordoned and `Ready`.
fn assert_nodes_at(lab: &Lab, dir: &Path, from: &str, all: &[String], version: &str) {
    let Some(kubectl) = muster_lab::standins::real_kubectl(version).unwrap() else {
        eprintln!("no real kubectl for {version}: the Node versions were not read by it");
        return;
    };
    let kc = dir.join("admin.kubeconfig");
    muster_tests::harness::write_admin_kubeconfig(lab, &bin_dir().join("muster"), from, &kc);
    let out = muster_tests::harness::real_kubectl_in(
        lab,
        &kubectl,
        &kc,
        from,
        &["get", "nodes", "-o", "json"],
    );
    assert!(out.ok(), "kubectl get nodes: {}", out.all());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut seen: Vec<(String, String, bool, bool)> = v["items"]
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
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String, bool, bool)> = all
        .iter()
        .map(|n| (n.clone(), version.to_string(), false, true))
        .collect();
    want.sort();
    assert_eq!(seen, want, "nodes as the real kubectl reads them");
}

// ---------------------------------------------------------------- k3s

const K3S_FROM: &str = "v1.31.6+k3s1";
const K3S_TO: &str = "v1.32.2+k3s1";

/// A stand-in k3s release at `version` as `muster build --artifacts DIR` takes it (the
/// layout `muster artifacts fetch` writes): `k3s` (a STAND-IN: it execs the k3s stand-in at
/// this release, so the binary a node runs decides the version its server and Node
/// report), the airgap images tarball (stand-in bytes naming the release),
/// `sha256sum-amd64.txt` listing both, and the lab's add-on manifests under `addons/`.
fn standin_k3s_release(dir: &Path, version: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join(format!("artifacts-{version}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("addons")).unwrap();
    let fixtures = muster_lab::standins::default_addon_artifacts().unwrap();
    for e in std::fs::read_dir(fixtures.join("addons")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join("addons").join(e.file_name())).unwrap();
    }
    let k3s = format!(
        "#!/bin/sh\n# STAND-IN k3s {version}: the k3s stand-in (NOT k3s) at this release\n\
         exec env MUSTER_STANDIN_K8S_VERSION={version} k3s-standin \"$@\"\n"
    );
    let airgap = format!("STAND-IN airgap images of k3s {version}\n");
    let airgap_name = muster_build::image::kubernetes::K3S_AIRGAP;
    std::fs::write(out.join("k3s"), &k3s).unwrap();
    std::fs::set_permissions(out.join("k3s"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(out.join(airgap_name), &airgap).unwrap();
    let sum = |b: &str| muster_build::bake::payload::sha256_hex(b.as_bytes());
    std::fs::write(
        out.join(muster_build::image::kubernetes::K3S_SUMS),
        format!("{}  k3s\n{}  {airgap_name}\n", sum(&k3s), sum(&airgap)),
    )
    .unwrap();
    out
}

/// Seed 003 (three k3s servers, keepalived) with one agent, at `version`.
fn k3s_spec_at(dir: &Path, version: &str) -> muster_build::spec_source::LoadedSpec {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-003-k3s-keepalived.yaml"),
    )
    .unwrap();
    assert!(text.contains(&format!("{K3S_FROM:?}")) && text.contains("workers: 0"));
    let text = text
        .replace(&format!("{K3S_FROM:?}"), &format!("{version:?}"))
        .replace("workers: 0", "workers: 1");
    let path = dir.join(format!("k3s-spec-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    muster_build::spec_source::load(Some(&path)).unwrap()
}

#[test]
fn a_k3s_cluster_is_upgraded_one_minor_version_servers_first() {
    if !enabled() {
        return;
    }
    let _slot = muster_tests::harness::lab_slot();
    let began = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab-upgrade-k3s");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = UpOptions::new(dir.join("lab"), &bin_dir());
    opts.artifacts = Some(standin_k3s_release(&dir, K3S_FROM));
    let mut lab = Lab::create(&k3s_spec_at(&dir, K3S_FROM), &opts).unwrap();
    let all: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let with_role = |want: &str| -> Vec<String> {
        let mut v: Vec<String> = lab
            .record()
            .nodes
            .iter()
            .filter(|n| n.role == want)
            .map(|n| n.name.clone())
            .collect();
        v.sort();
        v
    };
    let (servers, agents) = (with_role("control-plane"), with_role("worker"));
    assert_eq!((servers.len(), agents.len()), (3, 1), "{all:?}");
    for n in &all {
        lab.boot(n).unwrap();
    }
    let assembled = lab
        .wait_assembled(&all, began, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    eprintln!("assembled at {K3S_FROM} in {:.1}s", assembled.as_secs_f64());

    // ---- the operator rebuilds one minor up with the new release and publishes it
    let build_dir = lab.record().build_dir.clone();
    let to_release = standin_k3s_release(&dir, K3S_TO);
    let bopts = muster_build::bake::BuildOptions {
        agent_bin: opts.agent_bin.clone(),
        mtime: 0,
        helm: Default::default(),
        addons: muster_build::addons::source::Source::Artifacts(to_release.clone()),
    };
    muster_build::bake::build(&k3s_spec_at(&dir, K3S_TO), &build_dir, &bopts).unwrap();
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
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p: Vec<(String, Value)> = all
            .iter()
            .map(|n| (n.clone(), upgrade_phase(&lab, n)))
            .collect();
        if p.iter()
            .all(|(_, s)| s["phase"] == "done" && s["to"] == K3S_TO)
        {
            break;
        }
        if let Some((n, s)) = p.iter().find(|(_, s)| s["phase"] == "stopped") {
            panic!("the roll stopped at {n}: {s}");
        }
        assert!(Instant::now() < deadline, "the roll did not finish: {p:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let roll = roll_began.elapsed();
    eprintln!("rolled to {K3S_TO} in {:.1}s", roll.as_secs_f64());

    // ---- every node runs the release's binary and has its airgap images where k3s reads them
    let airgap =
        std::fs::read(to_release.join(muster_build::image::kubernetes::K3S_AIRGAP)).unwrap();
    let binary = std::fs::read(to_release.join("k3s")).unwrap();
    for n in &all {
        let root = &lab.node(n).unwrap().root;
        let at = |rel: &str| std::fs::read(root.join(rel)).unwrap();
        assert_eq!(at("usr/local/bin/k3s"), binary, "{n}: the k3s binary");
        assert_eq!(
            at(&format!(
                "var/lib/rancher/k3s/agent/images/{}",
                muster_build::image::kubernetes::K3S_AIRGAP
            )),
            airgap,
            "{n}: the airgap images"
        );
        let version = lab
            .exec(
                n,
                &[
                    root.join("usr/local/bin/k3s").to_str().unwrap(),
                    "--version",
                ],
            )
            .unwrap();
        assert!(
            version
                .stdout
                .starts_with(&format!("k3s version {K3S_TO} ")),
            "{n}: {}",
            version.all()
        );
    }

    // ---- one holder at a time, every server before the agent
    let want: Vec<String> = servers.iter().chain(&agents).cloned().collect();
    assert_one_holder_in_order(&lab, &want);

    // ---- the real kubectl sees every Node at the new version through the VIP
    assert_nodes_at(&lab, &dir, &agents[0], &all, K3S_TO);
    eprintln!(
        "TEST DURATION lab_upgrade k3s: {:.1}s (assembly {:.1}s, roll {:.1}s)",
        began.elapsed().as_secs_f64(),
        assembled.as_secs_f64(),
        roll.as_secs_f64()
    );
    muster_tests::harness::finish(lab);
}
