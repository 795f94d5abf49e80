#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Issue #6's end-to-end suite on `muster::lab`: example specs assemble, faults are injected
//! while they do, and the seeds' failure rehearsals run; every test ends with the same
//! invariant check ([`Suite::assert_invariants`]). Gated: `MUSTER_E2E_TESTS=1`
//! (`scripts/test.sh --e2e`, which `.ci/run` passes).
//!
//! Real: the build, the rendezvous, the agents, etcd 3.4, keepalived, HAProxy, TLS,
//! namespaces. Stand-ins (tests/README.md): kubeadm, the kubelet, the API server; where a
//! spec says kube-vip the lab floats the VIP with keepalived (docs/lab.md).
//!
//! Needs root, the packages of scripts/deps/*.sh, and the `muster`/`nodeagent` binaries in
//! this test's target dir (`cargo test --workspace` builds them).

use muster_build::spec_source::LoadedSpec;
use muster_lab::{Lab, UpOptions, netns};
use protocol::wire::{AuditEntry, AuditEvent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Each assembly must finish within this.
const PATIENCE: Duration = Duration::from_secs(180);

/// The lab tier's switch (`harness::e2e_enabled`).
fn enabled() -> bool {
    muster_tests::harness::e2e_enabled()
}

fn bin_dir() -> PathBuf {
    muster_lab::standins::target_bin_dir()
}

fn load(example: Option<&str>) -> LoadedSpec {
    let path = example.map(|f| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(f)
    });
    muster_build::spec_source::load(path.as_deref()).unwrap()
}

/// A phase without its `#attempt`.
fn bare(phase: &str) -> &str {
    phase.split('#').next().unwrap_or(phase)
}

/// Restart an agent of `hosts` when it is in `phase` (a backoff counts as the phase it
/// resumes) and, if set, the stand-in knob `hung` fired there (`<state>/fired/<hung>`) and
/// `behind.1` other hosts are `joining` hung at knob `behind.0` (so this one surely waits
/// for a join slot).
struct Catch {
    hosts: Vec<String>,
    phase: &'static str,
    hung: Option<&'static str>,
    behind: Option<(&'static str, usize)>,
}

/// One lab for one test; taken down (and the test's duration printed) when dropped.
struct Suite {
    lab: Option<Lab>,
    tag: &'static str,
    began: Instant,
    cps: Vec<String>,
    workers: Vec<String>,
    worker_cap: usize,
    api_port: u16,
    _slot: muster_tests::harness::LabSlot,
}

impl Drop for Suite {
    fn drop(&mut self) {
        let Some(lab) = self.lab.take() else { return };
        if std::thread::panicking() {
            for n in &lab.record().nodes {
                let t = std::fs::read_to_string(n.dir.join("agent.log")).unwrap_or_default();
                eprintln!("==== {} agent log (last lines, newest first)", n.name);
                t.lines().rev().take(25).for_each(|l| eprintln!("{l}"));
            }
            let log = &lab.record().rendezvous.log;
            let t = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!(
                "==== rendezvous log {} (last lines, newest first)",
                log.display()
            );
            t.lines().rev().take(15).for_each(|l| eprintln!("{l}"));
        }
        eprintln!(
            "TEST DURATION {}: {:.1}s",
            self.tag,
            self.began.elapsed().as_secs_f64()
        );
        muster_tests::harness::finish(lab);
    }
}

impl Suite {
    /// Creates the lab of `example` (None: the built-in default); boots nothing.
    fn new(example: Option<&str>, tag: &'static str) -> Suite {
        Suite::with_env(example, tag, &[])
    }

    /// Like `new`, with extra environment for every node's processes (the agent included).
    fn with_env(example: Option<&str>, tag: &'static str, env: &[(&str, &str)]) -> Suite {
        Suite::with_spec(load(example), tag, env)
    }

    /// Like `with_env`, for a spec the test adjusted.
    fn with_spec(spec: LoadedSpec, tag: &'static str, env: &[(&str, &str)]) -> Suite {
        let slot = muster_tests::harness::lab_slot();
        let began = Instant::now();
        let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("suite-{tag}"));
        let mut opts = UpOptions::new(state, &bin_dir());
        opts.node_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lab = Lab::create(&spec, &opts).unwrap();
        let names = |role: &str| -> Vec<String> {
            let nodes = lab.record().nodes.iter();
            nodes
                .filter(|n| n.role == role)
                .map(|n| n.name.clone())
                .collect()
        };
        Suite {
            cps: names("control-plane"),
            workers: names("worker"),
            worker_cap: usize::try_from(spec.cluster.rendezvous.worker_join_cap).unwrap(),
            api_port: spec.cluster.ha.api_port,
            lab: Some(lab),
            tag,
            began,
            _slot: slot,
        }
    }

    fn lab(&self) -> &Lab {
        self.lab.as_ref().unwrap()
    }

    fn lab_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().unwrap()
    }

    fn all(&self) -> Vec<String> {
        self.lab()
            .record()
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    fn root(&self, host: &str) -> PathBuf {
        self.lab().node(host).unwrap().root.clone()
    }

    fn log(&self, host: &str, what: &str) -> String {
        let dir = &self.lab().node(host).unwrap().dir;
        std::fs::read_to_string(dir.join(what)).unwrap_or_default()
    }

    fn note(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.began.elapsed().as_secs_f64());
    }

    fn boot(&mut self, hosts: &[String]) {
        for h in hosts {
            self.lab_mut().boot(h).unwrap();
        }
    }

    /// Arms a stand-in knob (`<root>/var/lib/muster-standin/knobs`, appended).
    fn knob(&self, host: &str, line: &str) {
        use std::io::Write;
        let p = self.root(host).join(muster_standins::knobs::KNOB_FILE);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    fn phase(&self, host: &str) -> String {
        muster_lab::status::local_phase(self.lab().node(host).unwrap())
    }

    /// The persisted phase of a node's agent; a backoff counts as the phase it resumes.
    fn resumes(&self, host: &str) -> String {
        let p = self.root(host).join(model::node_files::AGENT_STATE);
        let v: Value = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let st = &v["state"];
        let phase = if st["phase"] == "backoff" {
            &st["then"]["phase"]
        } else {
            &st["phase"]
        };
        phase.as_str().unwrap_or("-").to_string()
    }

    /// Whether the stand-in knob `marker` (`hang-STEP`, ...) fired on `host`.
    fn fired(&self, host: &str, marker: &str) -> bool {
        let dir = self.root(host).join(muster_standins::STATE_DIR);
        dir.join("fired").join(marker).exists()
    }

    fn matches(&self, c: &Catch, h: &str) -> bool {
        let hung_joiners = |m: &str| {
            let others = c.hosts.iter().filter(|o| *o != h);
            others
                .filter(|o| self.resumes(o) == "joining" && self.fired(o, m))
                .count()
        };
        self.resumes(h) == c.phase
            && c.hung.is_none_or(|m| self.fired(h, m))
            && c.behind.is_none_or(|(m, n)| hung_joiners(m) >= n)
    }

    /// Walks each path (a list of catches, in order; the paths side by side): kills
    /// (SIGKILL, with the commands it runs) and starts the agent of the first node the
    /// path's next catch matches. Returns who was caught, per path.
    fn restart_agents_at(&self, paths: &[Vec<Catch>]) -> Vec<Vec<String>> {
        let mut caught: Vec<Vec<String>> = vec![Vec::new(); paths.len()];
        let deadline = Instant::now() + 2 * PATIENCE;
        loop {
            for (path, got) in paths.iter().zip(caught.iter_mut()) {
                let Some(c) = path.get(got.len()) else {
                    continue;
                };
                if let Some(h) = c.hosts.iter().find(|h| self.matches(c, h)) {
                    self.lab().restart_service(h, "agent").unwrap();
                    self.note(&format!("restarted {h}'s agent in {}", c.phase));
                    got.push(h.clone());
                }
            }
            let missing: Vec<&str> = paths
                .iter()
                .zip(&caught)
                .filter_map(|(p, g)| p.get(g.len()).map(|c| c.phase))
                .collect();
            if missing.is_empty() {
                return caught;
            }
            assert!(Instant::now() < deadline, "never caught: {missing:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until one of `hosts` is in `phase` (ignoring the attempt); returns which.
    fn await_phase(&self, hosts: &[String], phase: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(h) = hosts.iter().find(|h| bare(&self.phase(h)) == phase) {
                self.note(&format!("{h} is {phase}"));
                return h.clone();
            }
            assert!(
                Instant::now() < deadline,
                "none of {hosts:?} reached {phase}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (PATIENCE from now) until `which` are done; returns the time since the start.
    fn wait_done(&self, which: &[String]) -> Duration {
        let patience = self.began.elapsed() + PATIENCE;
        let took = self
            .lab()
            .wait_assembled(which, self.began, patience, |c| eprintln!("{c}"))
            .unwrap();
        self.note(&format!("{} nodes done", which.len()));
        took
    }

    /// `nodeagent status --json` of a node, run in its namespace.
    fn status(&self, host: &str) -> Value {
        let root = self.root(host);
        let agent = root.join("usr/bin/nodeagent");
        let argv = [
            agent.to_str().unwrap(),
            "status",
            "--json",
            "--root",
            root.to_str().unwrap(),
        ];
        let out = self.lab().exec(host, &argv).unwrap();
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    }

    /// The kubeadm stand-in's command log of a node, without timestamps.
    fn commands(&self, host: &str) -> Vec<String> {
        let log = self
            .root(host)
            .join(muster_standins::STATE_DIR)
            .join(muster_standins::kubeadm::COMMAND_LOG);
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    /// Whether the API port on the VIP accepts a TCP connection from `from`'s namespace.
    fn vip_answers(&self, from: &str) -> bool {
        let vip = self.lab().record().vip.unwrap();
        let addr = std::net::SocketAddr::from((vip, self.api_port));
        let ns = &self.lab().node(from).unwrap().ns;
        netns::in_netns(ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
        .unwrap_or(false)
    }

    /// A ConfigMap write through the VIP (the admin kubeconfig of `cp` names the VIP), from
    /// the first worker's namespace.
    fn write_through_vip(&self, cp: &str, name: &str) -> netns::Out {
        let argv = muster_tests::harness::configmap_post_argv(&self.root(cp), name);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.lab().exec(&self.workers[0], &argv).unwrap()
    }

    /// A GET through the VIP with `cp`'s admin kubeconfig, from the first worker's namespace.
    fn get_through_vip(&self, cp: &str, path: &str) -> netns::Out {
        let kubeconfig = self.root(cp).join("etc/kubernetes/admin.conf");
        let kubeconfig = kubeconfig.display().to_string();
        let argv = [
            "apiserver-standin",
            "get",
            path,
            "--kubeconfig",
            &kubeconfig,
            "--timeout-secs",
            "5",
        ];
        self.lab().exec(&self.workers[0], &argv).unwrap()
    }

    /// `kubeadm init` completed once on `host`; a run before that one is allowed only if it
    /// was cut short (the node halted during init) and undone by a reset before the rerun.
    fn assert_one_completed_init(&self, host: &str) {
        let cmds = self.commands(host);
        let runs: Vec<&[String]> = cmds.split(|l| l == "init started").skip(1).collect();
        let (last, earlier) = runs.split_last().expect("no init started");
        assert!(last.iter().any(|l| l == "init ok"), "{host}: {cmds:?}");
        for run in earlier {
            assert!(
                !run.iter().any(|l| l.starts_with("init ")) && run.iter().any(|l| l == "reset ok"),
                "{host}: an earlier init finished or was not reset: {cmds:?}"
            );
        }
        if !earlier.is_empty() {
            eprintln!(
                "{host}: kubeadm init interrupted {} time(s), reset, run again",
                earlier.len()
            );
        }
    }

    /// Stacked etcd: exactly the control planes are members, started voters, healthy.
    fn assert_stacked_etcd(&self, init_node: &str) {
        let out = self
            .lab()
            .etcdctl(init_node, &["member", "list", "-w", "json"])
            .unwrap();
        assert!(out.ok(), "{}", out.all());
        let members = muster_standins::etcd::parse_member_list(&out.stdout).unwrap();
        let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        let mut planned = self.cps.clone();
        planned.sort();
        assert_eq!(names, planned, "{members:?}");
        assert!(
            members.iter().all(|m| m.started() && !m.learner),
            "{members:?}"
        );
        let health = self
            .lab()
            .etcdctl(init_node, &["endpoint", "health", "--cluster"])
            .unwrap();
        assert!(health.ok(), "{}", health.all());
        assert_eq!(
            health.all().matches("is healthy").count(),
            self.cps.len(),
            "{}",
            health.all()
        );
    }

    /// External etcd: exactly its own members (one per endpoint), started voters, all
    /// healthy; no control plane is a member or runs a local etcd.
    fn assert_external_etcd(&self) {
        let ext = self.lab().external_etcd();
        let out = self
            .lab()
            .external_etcdctl(&["member", "list", "-w", "json"])
            .unwrap();
        assert!(out.ok(), "{}", out.all());
        let members = muster_standins::etcd::parse_member_list(&out.stdout).unwrap();
        let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        let want: Vec<String> = ext.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, want, "{members:?}");
        assert!(
            members.iter().all(|m| m.started() && !m.learner),
            "{members:?}"
        );
        for cp in &self.cps {
            let ip = self.lab().node(cp).unwrap().ip.to_string();
            assert!(
                !out.stdout.contains(&format!("{ip}:")),
                "{cp} ({ip}) is an etcd member: {}",
                out.stdout
            );
            let root = self.root(cp);
            assert!(
                !root.join("etc/kubernetes/manifests/etcd.yaml").exists()
                    && !root.join("var/lib/etcd").exists(),
                "{cp} runs a local etcd"
            );
        }
        let health = self
            .lab()
            .external_etcdctl(&["endpoint", "health"])
            .unwrap();
        assert!(health.ok(), "{}", health.all());
        assert_eq!(
            health.all().matches("is healthy").count(),
            ext.len(),
            "{}",
            health.all()
        );
    }

    /// Issue 14's "done when" with the real kubectl through the VIP
    /// (`harness::assert_ready_and_rolled_out`): every Node `Ready`, every add-on rolled
    /// out; its duration measured.
    fn assert_usable(&self) -> Option<muster_tests::harness::Usable> {
        let t = Instant::now();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kubectl-{}", self.tag));
        let u = muster_tests::harness::assert_ready_and_rolled_out(
            self.lab(),
            &bin_dir().join("muster"),
            &dir,
        );
        muster_tests::measured!(
            "KUBECTL READY+ROLLOUT CHECK {}: {:.1}s",
            self.tag,
            t.elapsed().as_secs_f64()
        );
        u
    }

    /// The checks every test ends with (issue #6).
    fn assert_invariants(&self) {
        let all = self.all();
        // ---- assembled, by every node's own `nodeagent status --json`. Healthy is where
        // a cluster settles: right after a rehearsal brought members back, a probe with
        // its 3 s timeout can still miss (seen with two labs at once), so each node gets
        // a minute to say it.
        for host in &all {
            let mut s = Value::Null;
            let settled = netns::wait_until(
                &format!("{host} done and healthy"),
                Duration::from_secs(60),
                Duration::from_secs(1),
                || {
                    s = self.status(host);
                    s["thisNode"]["phase"] == "done" && s["healthy"] == true
                },
            );
            assert!(settled.is_ok(), "{host} not done and healthy: {s:#}");
        }
        // ---- exactly one init ever: one grant, one `kubeadm init` run
        let audit = self.lab().audit().unwrap();
        let init_grants: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| e.subject == "init" && e.event == AuditEvent::Granted)
            .collect();
        assert_eq!(init_grants.len(), 1, "init grants: {init_grants:?}");
        let inits: Vec<(String, usize)> = all
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    self.commands(h)
                        .iter()
                        .filter(|l| *l == "init started")
                        .count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(inits.len(), 1, "nodes that ran kubeadm init: {inits:?}");
        self.assert_one_completed_init(&inits[0].0);
        assert_eq!(init_grants[0].holder.as_deref(), Some(inits[0].0.as_str()));
        // ---- control-plane joins one at a time, worker joins within the cap
        let held = |sem| muster_rendezvous::audit::max_concurrent_holders(&audit, sem).unwrap();
        assert_eq!(held("cp-join"), 1, "control-plane joins overlapped");
        let w = held("worker-join");
        assert!(
            w <= self.worker_cap,
            "worker joins: {w} at once (cap {})",
            self.worker_cap
        );
        eprintln!(
            "worker joins at once: at most {w} (cap {})",
            self.worker_cap
        );
        // ---- etcd: the planned members, all started voters, all healthy
        if self.lab().external_etcd().is_empty() {
            self.assert_stacked_etcd(&inits[0].0);
        } else {
            self.assert_external_etcd();
        }
        // ---- the VIP: one holder, and it answers from a worker
        let holders = self.lab().vip_holders();
        assert_eq!(holders.len(), 1, "VIP holders: {holders:?}");
        assert!(
            self.vip_answers(&self.workers[0]),
            "the VIP does not answer"
        );
    }
}

// ------------------------------------------------------------------ example specs

/// Over how long the staggered test boots its nodes.
const STAGGER: Duration = Duration::from_secs(180);

/// `hosts` shuffled by `seed` (splitmix64), then the first worker moved to the front if a
/// control plane came before every worker: workers boot before control planes.
fn boot_order(mut hosts: Vec<String>, workers: &[String], seed: u64) -> Vec<String> {
    let mut z = seed;
    let mut next = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    for i in (1..hosts.len()).rev() {
        let j = usize::try_from(next() % (i as u64 + 1)).unwrap();
        hosts.swap(i, j);
    }
    if let Some(w) = hosts.iter().position(|h| workers.contains(h)) {
        let first = hosts.remove(w);
        hosts.insert(0, first);
    }
    hosts
}

#[test]
fn seed_004_haproxy_staggered_and_a_node_with_the_wrong_secret() {
    if !enabled() {
        return;
    }
    let mut s = Suite::new(Some("seed-004-kubeadm-haproxy.yaml"), "seed004");
    // One worker carries another cluster's secret.
    let intruder = s.workers.last().unwrap().clone();
    let secret_file = s.root(&intruder).join(model::node_files::CLUSTER_SECRET);
    let good_secret = std::fs::read_to_string(&secret_file).unwrap();
    std::fs::write(&secret_file, format!("{}\n", "ab".repeat(32))).unwrap();
    // Staggered: the load balancers first (the init's health check through the VIP gives
    // up after ~3 min), then the control planes and workers one by one in a shuffled order
    // (a worker first), spread over STAGGER. MUSTER_STAGGER_SEED replays an order.
    let lbs: Vec<String> = s
        .all()
        .into_iter()
        .filter(|h| !s.cps.contains(h) && !s.workers.contains(h))
        .collect();
    s.boot(&lbs);
    let seed = std::env::var("MUSTER_STAGGER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ s.began.elapsed().as_nanos() as u64);
    let nodes: Vec<String> = s.all().into_iter().filter(|h| !lbs.contains(h)).collect();
    let order = boot_order(nodes, &s.workers, seed);
    eprintln!("boot order (MUSTER_STAGGER_SEED={seed}): {lbs:?} then {order:?}");
    let gap = STAGGER / u32::try_from(order.len() - 1).unwrap();
    let start = Instant::now();
    for (i, h) in order.iter().enumerate() {
        let at = start + gap * u32::try_from(i).unwrap();
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        s.boot(std::slice::from_ref(h));
        s.note(&format!("booted {h}"));
    }
    let rest: Vec<String> = s.all().into_iter().filter(|h| *h != intruder).collect();
    let took = s.wait_done(&rest);
    muster_tests::measured!(
        "ASSEMBLY (staggered over {STAGGER:?}, one node refused): {:.1}s",
        took.as_secs_f64()
    );

    // ---- the intruder was refused and learned nothing (it may have booted last)
    netns::wait_until(
        "the intruder to be refused",
        PATIENCE,
        Duration::from_millis(200),
        || s.log(&intruder, "agent.log").contains("401"),
    )
    .unwrap_or_else(|e| eprintln!("{e}"));
    let phase = s.phase(&intruder);
    assert!(
        ["-", "preflight", "registering", "backoff"].contains(&bare(&phase)),
        "{intruder} got to {phase}"
    );
    let log = s.log(&intruder, "agent.log");
    assert!(log.contains("401"), "{intruder}: no 401 in its log:\n{log}");
    let ran = s.commands(&intruder);
    // Only the lab's kubelet stand-in at boot: the agent never ran kubeadm.
    assert!(ran.iter().all(|l| l.starts_with("kubelet-sync")), "{ran:?}");
    let pki = s.root(&intruder).join("etc/kubernetes/pki/ca.crt");
    assert!(!pki.exists(), "{intruder} holds the cluster CA");
    let st = s.status(&intruder);
    eprintln!("{intruder} status with the wrong secret: {st:#}");
    assert_ne!(st["healthy"], true);

    // ---- given the right secret, it joins
    std::fs::write(&secret_file, good_secret).unwrap();
    s.lab().restart_service(&intruder, "agent").unwrap();
    s.note(&format!("{intruder} restarted with the right secret"));
    s.wait_done(&s.all());
    s.assert_invariants();
    if let Some(u) = s.assert_usable() {
        let flannel = "DaemonSet kube-flannel/kube-flannel-ds";
        assert!(
            u.workloads.iter().any(|w| w == flannel),
            "{:?}",
            u.workloads
        );
    }
}

#[test]
fn seed_000_kube_vip_assembles_and_rehearses_quorum_loss_and_vip_failover() {
    if !enabled() {
        return;
    }
    // Seed 000 as its example says. Its cilium is rendered from a chart by `helm template`
    // at build time: here the test chart standing in for cilium's (cilium's own chart is
    // not on this machine) through the helm stand-in (the lab's `UpOptions::helm`), given
    // as the user's chart file. Longhorn and ingress-nginx from their pins. With
    // `kubeProxyReplacement: true`: cilium in kube-proxy's place, kubeadm's kube-proxy
    // addon skipped.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("seed000-spec");
    let chart = muster_lab::standins::cilium_test_chart(&dir).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-000-kubeadm-kube-vip.yaml"),
    )
    .unwrap()
    .replace(
        "    # manifests: [{name: cilium, file: cilium.yaml}]",
        &format!(
            "    manifests: [{{name: cilium, file: {}}}]\n    kubeProxyReplacement: true",
            chart.display()
        ),
    );
    std::fs::write(dir.join("seed-000.yaml"), text).unwrap();
    let spec = muster_build::spec_source::load(Some(&dir.join("seed-000.yaml"))).unwrap();
    assert!(
        spec.cluster
            .addons
            .manifests
            .iter()
            .any(|m| m.name == "cilium"),
        "the example's manifests line changed"
    );
    let mut s = Suite::with_spec(spec, "seed000", &[]);
    let all = s.all();
    s.boot(&all);
    let took = s.wait_done(&all);
    muster_tests::measured!("ASSEMBLY seed 000: {:.1}s", took.as_secs_f64());
    s.assert_invariants();
    if let Some(u) = s.assert_usable() {
        for w in [
            "DaemonSet kube-system/cilium",
            "DaemonSet longhorn-system/longhorn-manager",
            "Deployment ingress-nginx/ingress-nginx-controller",
        ] {
            assert!(u.workloads.iter().any(|x| x == w), "{w}: {:?}", u.workloads);
        }
    }
    // The init node applied the three add-ons (longhorn's and ingress-nginx's CRDs,
    // namespaces and workloads through server-side apply), read back through the VIP.
    for path in [
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cilium",
        "/apis/apps/v1/namespaces/longhorn-system/daemonsets/longhorn-manager",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/volumes.longhorn.io",
        "/apis/apps/v1/namespaces/ingress-nginx/deployments/ingress-nginx-controller",
        "/apis/networking.k8s.io/v1/ingressclasses/nginx",
        "/apis/apps/v1/namespaces/kube-system/deployments/cilium-operator",
    ] {
        netns::wait_until(path, PATIENCE, Duration::from_secs(1), || {
            s.get_through_vip(&s.cps[0], path).ok()
        })
        .unwrap();
    }
    // The chart was rendered with the spec's values: the API VIP and the pod network.
    let config = s.get_through_vip(
        &s.cps[0],
        "/api/v1/namespaces/kube-system/configmaps/cilium-config",
    );
    let vip = s.lab().record().vip.map(|v| v.to_string()).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config.stdout).unwrap();
    for (key, want) in [
        ("k8s-service-host", vip.as_str()),
        ("ipam", "cluster-pool"),
        ("hubble-tls-auto-method", "cronJob"),
        ("kubernetes-version", "v1.31.4"),
        ("kube-proxy-replacement", "true"),
    ] {
        assert_eq!(config["data"][key].as_str(), Some(want), "{key}: {config}");
    }
    // kubeadm skipped its kube-proxy addon (skipPhases in the InitConfiguration).
    let kube_proxy = s.get_through_vip(
        &s.cps[0],
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
    );
    assert!(
        !kube_proxy.ok(),
        "kube-proxy is there: {}",
        kube_proxy.all()
    );
    let cilium = s.get_through_vip(
        &s.cps[0],
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cilium",
    );
    assert!(cilium.ok(), "{}", cilium.all());

    // ---- stop two control planes: writes through the VIP fail, the survivor says why
    let holder = s.lab().vip_holders()[0].clone();
    let others: Vec<String> = s.cps.iter().filter(|c| **c != holder).cloned().collect();
    assert!(
        s.write_through_vip(&holder, "before").ok(),
        "write with all up"
    );
    for c in &others {
        s.lab_mut().stop(c).unwrap();
    }
    s.note(&format!("stopped {others:?}"));
    let w = s.write_through_vip(&holder, "without-quorum");
    eprintln!("write without quorum -> {:?}\n{}", w.code, w.all());
    assert!(!w.ok(), "a write succeeded without quorum");
    assert!(
        w.all().contains("504") && w.all().contains("quorum"),
        "the failed write says no clear status: {}",
        w.all()
    );
    // Its own member either says the quorum is lost or does not answer at all.
    let st = s.status(&holder);
    eprintln!(
        "survivor {holder}: etcdQuorumLost {}, localEtcd {}",
        st["etcdQuorumLost"], st["localEtcd"]
    );
    assert_eq!(st["healthy"], false, "{st:#}");
    assert!(
        st["etcdQuorumLost"] == true || st["localEtcd"]["error"].is_string(),
        "{st:#}"
    );
    let lab_status = s.lab().status().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&lab_status).unwrap());
    assert!(!lab_status.healthy);
    let row = lab_status.nodes.iter().find(|n| n.name == holder).unwrap();
    if row.agent_healthy {
        eprintln!("survivor again: {:#}", s.status(&holder));
    }
    assert!(
        !row.agent_healthy
            && lab_status
                .problems
                .iter()
                .any(|p| p.contains(holder.as_str())),
        "`lab status` does not report the lost quorum on {holder}"
    );

    // ---- start one back: writes succeed again
    s.lab_mut().start(&others[0]).unwrap();
    let back = Instant::now();
    netns::wait_until(
        "a write with quorum back",
        PATIENCE,
        Duration::from_secs(1),
        || s.write_through_vip(&holder, "quorum-back").ok(),
    )
    .unwrap();
    eprintln!(
        "writes succeed {:.1}s after starting {}",
        back.elapsed().as_secs_f64(),
        others[0]
    );
    s.lab_mut().start(&others[1]).unwrap();
    s.wait_done(&all);

    // ---- kill the VIP holder: how long until the VIP answers from another node
    s.lab_mut().stop(&holder).unwrap();
    let halted = Instant::now();
    netns::wait_until(
        "the VIP on another node",
        PATIENCE,
        Duration::from_millis(100),
        || s.vip_answers(&s.workers[0]),
    )
    .unwrap();
    eprintln!(
        "VIP FAILOVER: answers {:.2}s after halting {holder}, now on {:?}",
        halted.elapsed().as_secs_f64(),
        s.lab().vip_holders()
    );
    s.lab_mut().start(&holder).unwrap();
    s.wait_done(&all);
    netns::wait_until(
        "etcd healthy again",
        PATIENCE,
        Duration::from_secs(1),
        || s.status(&holder)["healthy"] == true,
    )
    .unwrap();
    s.assert_invariants();
}

#[test]
fn seed_004_external_etcd_assembles_and_survives_control_plane_loss_not_etcd_loss() {
    if !enabled() {
        return;
    }
    let mut s = Suite::new(Some("seed-004-kubeadm-external-etcd.yaml"), "seed004ext");
    let ext: Vec<String> = s
        .lab()
        .external_etcd()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(ext.len(), 3, "one member per endpoint");
    let all = s.all();
    s.boot(&all);
    let took = s.wait_done(&all);
    muster_tests::measured!(
        "ASSEMBLY seed 004 external etcd: {:.1}s",
        took.as_secs_f64()
    );
    s.assert_invariants();
    s.assert_usable();

    // ---- a write through the VIP lands in the external etcd
    let cp = s.cps[0].clone();
    let w = s.write_through_vip(&cp, "ext-first");
    assert!(w.ok(), "{}", w.all());
    let key = "/registry/configmaps/default/ext-first";
    let got = s
        .lab()
        .external_etcdctl(&["get", key, "--print-value-only"])
        .unwrap();
    assert!(
        got.ok() && got.stdout.contains("ext-first"),
        "{}",
        got.all()
    );

    // ---- two control planes stopped: writes through the VIP still succeed
    let (keep, gone) = (s.cps[0].clone(), s.cps[1..].to_vec());
    for c in &gone {
        s.lab_mut().stop(c).unwrap();
    }
    s.note(&format!("stopped {gone:?}"));
    let t = Instant::now();
    netns::wait_until(
        "a write through the VIP with one control plane",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || s.write_through_vip(&keep, "one-cp-left").ok(),
    )
    .unwrap();
    eprintln!(
        "WRITE with 2 of 3 control planes down: ok after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    for c in &gone {
        s.lab_mut().start(c).unwrap();
    }
    s.wait_done(&all);

    // ---- two external etcd members stopped: writes fail clearly, the CPs say quorum lost
    for m in &ext[1..] {
        s.lab().etcd_stop(m).unwrap();
    }
    s.note(&format!("stopped etcd members {:?}", &ext[1..]));
    let w = s.write_through_vip(&keep, "no-etcd-quorum");
    eprintln!("write without etcd quorum -> {:?}\n{}", w.code, w.all());
    assert!(!w.ok(), "a write succeeded without etcd quorum");
    assert!(
        w.all().contains("504") && w.all().contains("quorum"),
        "the failed write says no clear status: {}",
        w.all()
    );
    let st = s.status(&keep);
    eprintln!(
        "{keep}: etcdQuorumLost {}, localEtcd {}",
        st["etcdQuorumLost"], st["localEtcd"]
    );
    assert_eq!(st["etcdQuorumLost"], true, "{st:#}");
    assert_eq!(st["healthy"], false, "{st:#}");
    assert_eq!(st["localEtcd"]["kind"], "external", "{st:#}");
    let lab_status = s.lab().status().unwrap();
    assert!(!lab_status.healthy);
    assert!(
        lab_status
            .problems
            .iter()
            .any(|p| p.contains("external etcd member")),
        "{:?}",
        lab_status.problems
    );

    // ---- one member back: quorum again, writes succeed
    s.lab().etcd_start(&ext[1]).unwrap();
    let back = Instant::now();
    netns::wait_until(
        "a write with etcd quorum back",
        PATIENCE,
        Duration::from_secs(1),
        || s.write_through_vip(&keep, "etcd-quorum-back").ok(),
    )
    .unwrap();
    eprintln!(
        "writes succeed {:.1}s after starting {}",
        back.elapsed().as_secs_f64(),
        ext[1]
    );
    s.lab().etcd_start(&ext[2]).unwrap();
    netns::wait_until(
        "every external member healthy",
        PATIENCE,
        Duration::from_secs(1),
        || s.lab().external_etcd_health().iter().all(|(_, ok)| *ok),
    )
    .unwrap();
    s.assert_invariants();
}

// ------------------------------------------------------------------ faults

#[test]
fn init_winner_halted_during_init_and_rendezvous_restarted_mid_assembly() {
    if !enabled() {
        return;
    }
    let mut s = Suite::new(None, "initkill");
    // Whoever wins the election hangs once in init (after its etcd started), so it is
    // certainly in init when it is halted.
    for c in &s.cps {
        s.knob(c, "hang_at=upload-config");
    }
    let all = s.all();
    s.boot(&all);
    let winner = s.await_phase(&s.cps, "initializing");
    let fired = s
        .root(&winner)
        .join(muster_standins::STATE_DIR)
        .join("fired/hang-upload-config");
    netns::wait_until("init to hang", PATIENCE, Duration::from_millis(100), || {
        fired.exists()
    })
    .unwrap();
    s.lab_mut().stop(&winner).unwrap();
    s.note(&format!("halted the init winner {winner}"));
    std::thread::sleep(Duration::from_secs(3));
    s.lab_mut().start(&winner).unwrap();
    s.note(&format!("started {winner} again"));
    // The rendezvous dies while the first control-plane join runs.
    let joiner = s.await_phase(&s.cps, "joining");
    s.lab().restart_rendezvous().unwrap();
    s.note(&format!("rendezvous restarted while {joiner} joins"));
    let took = s.wait_done(&all);
    muster_tests::measured!(
        "ASSEMBLY with init halted + rendezvous restart: {:.1}s",
        took.as_secs_f64()
    );
    s.assert_invariants();
}

/// The init winner's agent is killed (with its `kubeadm init`) when the init did all its work
/// but the agent never saw it finish, then in `checking-health`, then in `publishing` (init
/// done, nothing published): it must converge on its own init, no other node inits. Every
/// other phase a node can be caught in on the control-plane and worker join paths gets an
/// agent restart too, and a control plane loses its cable during its join.
#[test]
fn agents_restarted_at_every_phase_and_a_control_plane_cut_during_its_join() {
    if !enabled() {
        return;
    }
    // Joins hang once until the agent abandons them (step timeout 25 s), so the joiners
    // behind them surely wait for a slot meanwhile (a slot freed in milliseconds left that
    // phase unobservable), and a hung join can be caught. On the control planes the init
    // hangs once after all its work (`kubelet-finalize`, its last step: certificates,
    // etcd, API server, uploaded certs, token all in place, the output never printed), and
    // the join material's `kubeadm token create` hangs once (the winner is then in
    // `publishing`).
    let mut s = Suite::with_env(None, "restarts", &[("NODEAGENT_STEP_TIMEOUT", "25")]);
    for c in &s.cps {
        s.knob(c, "hang_at=etcd-join");
        s.knob(c, "hang_at=kubelet-finalize");
        s.knob(c, "hang_at=token-create");
    }
    for w in &s.workers {
        s.knob(w, "hang_at=kubelet-start");
    }
    let all = s.all();
    s.boot(&all);
    let (cps, workers) = (s.cps.clone(), s.workers.clone());
    assert!(
        workers.len() > s.worker_cap,
        "no worker would wait for a slot"
    );
    let catch = |hosts: &[String], phase, hung| Catch {
        hosts: hosts.to_vec(),
        phase,
        hung,
        behind: None,
    };
    let waiting = |hosts: &[String], behind| Catch {
        behind: Some(behind),
        ..catch(hosts, "acquiring-join-slot", None)
    };
    let caught = s.restart_agents_at(&[
        vec![
            // ---- the init path (the winner)
            catch(&cps, "initializing", Some("hang-kubelet-finalize")),
            catch(&cps, "checking-health", None),
            catch(&cps, "publishing", Some("hang-token-create")),
        ],
        vec![
            // ---- the control-plane join path: waiting while the other one's join hangs
            catch(&cps, "waiting-for-init", None),
            waiting(&cps, ("hang-etcd-join", 1)),
            catch(&cps, "joining", Some("hang-etcd-join")),
            catch(&cps, "verifying", None),
        ],
        vec![
            // ---- the worker join path: waiting while the cap's worth of joins hang
            catch(&workers, "waiting-for-init", None),
            waiting(&workers, ("hang-kubelet-start", s.worker_cap)),
            catch(&workers, "joining", Some("hang-kubelet-start")),
            catch(&workers, "verifying", None),
        ],
    ]);
    // The winner's first `kubeadm init` was killed after doing all its work; the restarted
    // agent reset it and ran it again (`assert_invariants` checks the reset in between).
    let winner = &caught[0][0];
    let inits = s.commands(winner);
    let inits = inits.iter().filter(|l| *l == "init started").count();
    assert_eq!(inits, 2, "{winner}: {:?}", s.commands(winner));
    // A control plane loses its cable while it joins, for 10 s.
    let cut = s.await_phase(&s.cps, "joining");
    s.lab_mut().cut(&cut).unwrap();
    s.note(&format!("cut {cut}"));
    std::thread::sleep(Duration::from_secs(10));
    s.lab_mut().heal(&cut).unwrap();
    s.note(&format!("healed {cut}"));
    let took = s.wait_done(&all);
    muster_tests::measured!(
        "ASSEMBLY with restarts at every phase + a cut join: {:.1}s",
        took.as_secs_f64()
    );
    s.assert_invariants();
}

/// Every control-plane join fails once after its etcd member was added (compensated: the
/// member removed, the node reset, the slot released) and then hangs once: abandoned at the
/// agent's step timeout (short here), undone and retried, so the join slot is not held
/// until the lease runs out.
#[test]
fn a_failed_and_a_hung_control_plane_join_are_compensated() {
    if !enabled() {
        return;
    }
    let mut s = Suite::with_env(None, "hang", &[("NODEAGENT_STEP_TIMEOUT", "25")]);
    for c in &s.cps {
        s.knob(c, "fail_at=after-member-add");
        s.knob(c, "hang_at=etcd-join");
    }
    let all = s.all();
    s.boot(&all);
    s.wait_done(&all);
    s.assert_invariants();
    // Every control plane that joined hung once and was abandoned at the step timeout.
    let hung: Vec<&String> = s
        .cps
        .iter()
        .filter(|c| {
            let st = s.status(c);
            let n = &st["thisNode"];
            n["failures"].as_u64().unwrap_or(0) >= 2
                && n["lastFailure"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("did not finish within"))
        })
        .collect();
    assert_eq!(
        hung.len(),
        s.cps.len() - 1,
        "joiners that failed once, then were abandoned at the step timeout: {hung:?}"
    );
    // The failed join was compensated: a `kubeadm join` failed, a reset followed it.
    for c in &hung {
        let cmds = s.commands(c);
        let failed = cmds
            .iter()
            .position(|l| l.starts_with("join ") && l.ends_with(" failed"));
        let failed = failed.unwrap_or_else(|| panic!("{c}: no failed join: {cmds:?}"));
        assert!(
            cmds[failed..].iter().any(|l| l == "reset ok"),
            "{c}: no reset after the failed join: {cmds:?}"
        );
    }
}

/// A control plane that boots after the uploaded certificates expired still joins. The
/// stand-ins' clock jumps 3 h ahead on every node (`clock_offset` in each node's knob file,
/// which every stand-in process reads at each use: the API servers' expiry of stored
/// objects and kubeadm's); the agents keep the real clock, so the published material looks
/// fresh to them, and kubeadm's refusal must get it refreshed by a joined control plane.
#[test]
fn a_control_plane_booted_after_the_certificate_key_expired_still_joins() {
    if !enabled() {
        return;
    }
    let mut s = Suite::new(None, "latecp");
    let late = s.cps.last().unwrap().clone();
    let all = s.all();
    let early: Vec<String> = all.iter().filter(|h| **h != late).cloned().collect();
    s.boot(&early);
    s.wait_done(&early);
    for h in &all {
        s.knob(h, "clock_offset=3h");
    }
    s.note("the stand-ins' clock is 3 h ahead: the uploaded certificates (2 h) expired");
    s.boot(std::slice::from_ref(&late));
    let took = s.wait_done(&all);
    muster_tests::measured!(
        "ASSEMBLY with a control plane booted after the certificate key expired: {:.1}s",
        took.as_secs_f64()
    );
    s.assert_invariants();
    // ---- its first join was refused for the expired certificates, the material refreshed
    let cmds = s.commands(&late);
    let ended = |l: &&String| l.starts_with("join ") && *l != "join started";
    let first = cmds.iter().find(ended).unwrap();
    assert_eq!(first, "join failed", "{late}: {cmds:?}");
    let log = s.log(&late, "agent.log");
    assert!(
        log.contains("the join material was refused"),
        "{late} did not see its material refused:\n{log}"
    );
    let refreshed: Vec<&String> = early
        .iter()
        .filter(|h| {
            s.log(h, "agent.log")
                .contains("refreshing the join material")
        })
        .collect();
    assert!(
        !refreshed.is_empty(),
        "no control plane refreshed the material"
    );
    eprintln!("material refreshed by {refreshed:?} for {late}");
}

// ------------------------------------------------------------------ starting over (issue 16)

impl Suite {
    /// `muster ARGS --out BUILD` run where the rendezvous is reachable (the bridge
    /// namespace), as an operator runs it.
    fn operator(&self, args: &[&str]) -> netns::Out {
        let rec = self.lab().record();
        let mut cmd = netns::command(&rec.bridge_ns, &[], bin_dir().join("muster"));
        cmd.args(args).arg("--out").arg(&rec.build_dir);
        let out = netns::run(cmd, &format!("muster {args:?}"), Duration::from_secs(60)).unwrap();
        self.note(&format!("muster {args:?} -> {:?}", out.code));
        out
    }

    /// `muster status --json` (exit code ignored: it is 1 while not every node is done).
    fn cluster_status(&self) -> Value {
        let out = self.operator(&["status", "--json"]);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
    }

    /// The record `key` at the rendezvous (as the operator commands read it), from the
    /// bridge namespace; `write` replaces it (created if absent) first.
    fn record(&self, key: &'static str, write: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let rec = self.lab().record();
        let dir = muster_build::ops::BuildDir::load(&rec.build_dir).unwrap();
        netns::in_netns(&rec.bridge_ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = dir.client(Duration::from_secs(5)).unwrap();
                if let Some(bytes) = write {
                    match c.get(key).await.unwrap() {
                        Some(r) => c.cas(key, r.revision, &bytes, None, None).await,
                        None => c.create(key, &bytes, None, None).await,
                    }
                    .unwrap();
                }
                c.get(key).await.unwrap().map(|r| r.value)
            })
        })
        .unwrap()
    }

    /// The etcd member names a control plane's local member lists.
    fn etcd_members(&self, cp: &str) -> Vec<String> {
        let out = self
            .lab()
            .etcdctl(cp, &["member", "list", "-w", "json"])
            .unwrap();
        assert!(out.ok(), "{}", out.all());
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let mut names: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    }
}

/// Assembled, torn down (every machine halted and re-created from the same output),
/// `muster reset`, booted again: a new cluster assembles (a second init, generation 1),
/// with etcd holding exactly the three new members. The old assembly's `initialized`
/// record is written back after the reset (as a forgotten old machine could): the new
/// agents never join it, and the new initializer replaces it.
#[test]
fn reset_then_the_same_output_assembles_afresh() {
    if !enabled() {
        return;
    }
    let mut s = Suite::new(None, "reset-afresh");
    let all = s.all();
    s.boot(&all);
    s.wait_done(&all);
    let before = s.cluster_status();
    assert_eq!(before["initialized"]["generation"], 0, "{before:#}");
    let first_token = before["initialized"]["token"].as_u64().unwrap();
    let old_init = s.record(protocol::keys::INITIALIZED, None).unwrap();

    // Without a reset the re-created machines would try to join the dead cluster: the
    // reset comes first, then the machines boot from the same build output.
    for h in &all {
        s.lab_mut().stop(h).unwrap();
        s.lab_mut().reimage(h).unwrap();
    }
    let refused = s.operator(&["reset"]);
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    let out = s.operator(&["reset", "--yes", "--json"]);
    assert!(out.ok(), "{}", out.all());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (r["previousGeneration"].as_u64(), r["generation"].as_u64()),
        (Some(0), Some(1))
    );
    s.record(protocol::keys::INITIALIZED, Some(old_init));
    for h in &all {
        s.lab_mut().start(h).unwrap();
    }
    s.wait_done(&all);
    let after = s.cluster_status();
    assert_eq!(after["initialized"]["generation"], 1, "{after:#}");
    assert!(
        after["initialized"]["token"].as_u64().unwrap() > first_token,
        "a new init: {after:#}"
    );
    for host in &all {
        let st = s.status(host);
        assert_eq!(st["thisNode"]["phase"], "done", "{host}: {st:#}");
    }
    let grants = s
        .lab()
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == "init" && e.event == AuditEvent::Granted)
        .count();
    assert_eq!(grants, 2, "one init per generation");
    let saw_retired = all
        .iter()
        .filter(|h| {
            s.log(h, "agent.log")
                .contains("init record of retired generation 0")
        })
        .count();
    assert!(
        saw_retired > 0,
        "no agent met the written-back old init record"
    );
    let mut cps = s.cps.clone();
    cps.sort();
    assert_eq!(s.etcd_members(&s.cps[0]), cps);
}

/// The applies of `host`'s API stand-in (its audit, `apply_audit`), as `KIND NS/NAME`.
fn applies(s: &Suite, host: &str) -> Vec<String> {
    let root = model::node_files::NodeRoot::new(s.root(host));
    muster_standins::api::apply_audit::read(&root)
        .into_iter()
        .inspect(|a| assert_eq!(a.manager, "muster", "{a:?}"))
        .map(|a| format!("{} {}", a.kind, a.object))
        .collect()
}

/// Issue 14, exactly once: the init node is halted while it applies the add-ons (its API
/// stand-in holds the apply of flannel's DaemonSet: knob `hang_at=apply-DaemonSet-…`),
/// every control plane joined meanwhile. Another control plane takes the `addons` lease
/// once the halted node's expires, applies every object once and records it; the third
/// applies nothing. The halted node, started again, applies nothing either (it finds the
/// record) and every node is done, with Ready Nodes (flannel's DaemonSet exists).
#[test]
fn the_init_node_halted_mid_apply_is_taken_over_exactly_once() {
    if !enabled() {
        return;
    }
    const HUNG: &str = "apply-DaemonSet-kube-flannel-ds";
    let mut s = Suite::new(None, "addontakeover");
    let all = s.all();
    s.boot(&all);
    let winner = s.await_phase(&s.cps, "initializing");
    s.knob(&winner, &format!("hang_at={HUNG}"));
    let others: Vec<String> = s.cps.iter().filter(|c| **c != winner).cloned().collect();
    netns::wait_until(
        "the init node's apply to hang and the others to wait for the add-ons",
        PATIENCE,
        Duration::from_millis(100),
        || {
            s.fired(&winner, &format!("hang-{HUNG}"))
                && others.iter().all(|o| s.resumes(o) == "setting-up-addons")
        },
    )
    .unwrap();
    let before = applies(&s, &winner);
    assert!(
        !before.iter().any(|a| a.contains("kube-flannel-ds")),
        "{before:?}"
    );
    s.lab_mut().stop(&winner).unwrap();
    s.note(&format!(
        "halted {winner} mid-apply after {} objects",
        before.len()
    ));
    let rest: Vec<String> = all.iter().filter(|n| **n != winner).cloned().collect();
    s.wait_done(&rest);
    let rec: protocol::records::AddonsRecord =
        serde_json::from_slice(&s.record(protocol::keys::ADDONS_APPLIED, None).unwrap()).unwrap();
    assert!(others.contains(&rec.node), "{rec:?}");
    assert_eq!(rec.generation, 0);
    let taker = applies(&s, &rec.node);
    let mut unique = taker.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        taker.len(),
        "an object applied twice: {taker:?}"
    );
    assert_eq!(taker.len(), rec.objects, "{taker:?}");
    assert!(
        taker.iter().any(|a| a.contains("kube-flannel-ds")),
        "{taker:?}"
    );
    for o in others.iter().filter(|o| **o != rec.node) {
        assert_eq!(applies(&s, o), Vec::<String>::new(), "{o} applied");
    }
    // Every object the halted node applied is one the taker applied again, once.
    assert!(before.iter().all(|a| taker.contains(a)), "{before:?}");
    let grants: Vec<Option<String>> = s
        .lab()
        .audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == protocol::keys::ADDONS_SEMAPHORE && e.event == AuditEvent::Granted)
        .map(|e| e.holder)
        .collect();
    assert_eq!(
        grants,
        vec![Some(winner.clone()), Some(rec.node.clone())],
        "the lease: the init node, then the taker"
    );
    s.lab_mut().start(&winner).unwrap();
    s.note(&format!("started {winner} again"));
    s.wait_done(&all);
    assert_eq!(applies(&s, &winner), before, "{winner} applied again");
    assert_eq!(applies(&s, &rec.node), taker, "the taker applied again");
    let after: protocol::records::AddonsRecord =
        serde_json::from_slice(&s.record(protocol::keys::ADDONS_APPLIED, None).unwrap()).unwrap();
    assert_eq!(after, rec, "recorded once");
    s.assert_invariants();
}

/// The HAProxy pair spec (seed 004) with `cps` control planes and `workers` workers.
fn seed_004_sized(cps: u32, workers: u32) -> LoadedSpec {
    let base = load(Some("seed-004-kubeadm-haproxy.yaml"));
    let text = base
        .text
        .replace(
            "    controlPlanes: 3\n",
            &format!("    controlPlanes: {cps}\n"),
        )
        .replace("    workers: 2\n", &format!("    workers: {workers}\n"));
    LoadedSpec::parse(base.origin.clone(), text).unwrap()
}

/// What must not change on a running node while others are added: the pid of every
/// daemon the lab runs on it (agent, HAProxy, keepalived), its kubeadm stand-in's command
/// log (no second init or join, no reset) and its agent's phase and failure count.
#[derive(Debug, PartialEq)]
struct Untouched {
    pids: Vec<(String, Option<u32>)>,
    commands: Vec<String>,
    agent: String,
}

fn untouched(s: &Suite, host: &str) -> Untouched {
    let node = s.lab().node(host).unwrap();
    let pids = node
        .services
        .iter()
        .map(|svc| {
            (
                svc.name.clone(),
                muster_lab::process::running(&svc.pid_file),
            )
        })
        .collect();
    let state: Value = std::fs::read_to_string(s.root(host).join(model::node_files::AGENT_STATE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Untouched {
        pids,
        commands: s.commands(host),
        agent: format!("{} failures={}", state["state"]["phase"], state["failures"]),
    }
}

/// The backends the HAProxy of load balancer `lb` runs now (the config its master read
/// at its last start or reload: the lab's copy, made from the installed config on reload).
fn haproxy_backends(s: &Suite, lb: &str) -> Vec<String> {
    let live = s.lab().node(lb).unwrap().dir.join("haproxy.cfg");
    let text = std::fs::read_to_string(live).unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Issue 16, scale out by rebuild (HAProxy pair spec, seed 004 shape): 3+1 assembled →
/// rebuilt as 3+3, the two new workers booted from the rebuilt payload join and no running
/// node restarts anything → rebuilt as 5+3, both new control planes booted at once join
/// one at a time, and both load balancers' running HAProxy (reloaded, not restarted) send
/// to all five; the real kubectl through the VIP lists every node.
#[test]
fn scale_out_by_rebuild_new_workers_then_new_control_planes_reach_the_load_balancers() {
    if !enabled() {
        return;
    }
    let tag = "scale-out";
    let mut s = Suite::with_spec(seed_004_sized(3, 1), tag, &[]);
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("suite-{tag}"));
    let opts = UpOptions::new(state, &bin_dir());
    let first = s.all();
    s.boot(&first);
    s.wait_done(&first);
    let lbs: Vec<String> = s
        .lab()
        .record()
        .nodes
        .iter()
        .filter(|n| n.role == "load-balancer")
        .map(|n| n.name.clone())
        .collect();
    let before: Vec<_> = first.iter().map(|h| untouched(&s, h)).collect();
    for lb in &lbs {
        assert_eq!(haproxy_backends(&s, lb), ["cp1", "cp2", "cp3"], "{lb}");
    }

    // ---- 3+3: two new workers from the rebuilt payload
    let added = s.lab_mut().add_nodes(&seed_004_sized(3, 3), &opts).unwrap();
    assert_eq!(added, ["worker2", "worker3"]);
    s.note("rebuilt as 3+3");
    s.boot(&added);
    s.wait_done(&added);
    for (h, was) in first.iter().zip(&before) {
        assert_eq!(
            &untouched(&s, h),
            was,
            "{h} changed while workers were added"
        );
    }
    s.workers.extend(added.iter().cloned());

    // ---- 5+3: two new control planes, booted together
    let added = s.lab_mut().add_nodes(&seed_004_sized(5, 3), &opts).unwrap();
    assert_eq!(added, ["cp4", "cp5"]);
    s.note("rebuilt as 5+3");
    let lb_pids: Vec<_> = lbs.iter().map(|lb| untouched(&s, lb).pids).collect();
    s.boot(&added);
    s.wait_done(&added);
    s.cps.extend(added.iter().cloned());
    // Every config the agent installed was reloaded, and HAProxy's master re-read it (its
    // own words, "Reloading HAProxy" then "Loading success."), the last one listing five.
    let settled = |lb: &str| {
        let agent = s.log(lb, "agent.log");
        let haproxy = s.log(lb, "haproxy.log");
        let installed = agent.matches("new config installed").count();
        let reloaded = agent.matches("lab: daemon reloaded").count();
        let reloads = haproxy.matches("Reloading HAProxy").count();
        let loaded = haproxy
            .rfind("Reloading HAProxy")
            .is_some_and(|at| haproxy[at..].contains("Loading success."));
        installed >= 1 && installed == reloaded && reloaded == reloads && loaded
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for lb in &lbs {
        while haproxy_backends(&s, lb) != ["cp1", "cp2", "cp3", "cp4", "cp5"] || !settled(lb) {
            assert!(
                Instant::now() < deadline,
                "{lb} runs {:?}; agent:\n{}",
                haproxy_backends(&s, lb),
                s.log(lb, "agent.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s.note(&format!(
            "{lb}'s HAProxy reloaded with all five control planes"
        ));
    }
    // Reloaded in place (SIGUSR2 to the master), not restarted; the agent said so.
    for (lb, pids) in lbs.iter().zip(&lb_pids) {
        assert_eq!(&untouched(&s, lb).pids, pids, "{lb} restarted a daemon");
        let installed =
            std::fs::read_to_string(s.root(lb).join(model::node_files::HAPROXY_CONF)).unwrap();
        assert!(
            installed.contains("server cp5 192.168.1.105:6443 check"),
            "{installed}"
        );
    }
    // Nothing else restarted: the first nodes but the load balancers, exactly as before.
    for (h, was) in first.iter().zip(&before) {
        if !lbs.contains(h) {
            assert_eq!(
                &untouched(&s, h),
                was,
                "{h} changed while control planes were added"
            );
        }
    }
    // Joins one at a time: cp4's and cp5's grants never overlapped (nor anyone else's).
    let audit = s.lab().audit().unwrap();
    let grants: Vec<&str> = audit
        .iter()
        .filter(|e| e.subject == "cp-join" && e.event == AuditEvent::Granted)
        .filter_map(|e| e.holder.as_deref())
        .collect();
    eprintln!("cp-join grants in order: {grants:?}");
    assert!(
        grants.contains(&"cp4") && grants.contains(&"cp5"),
        "{grants:?}"
    );
    // The new control planes' API certificates name the VIP (kubeadm-config's certSANs
    // and the controlPlaneEndpoint), so clients through the VIP verify whichever answers.
    let vip = s.lab().record().vip.unwrap().to_string();
    for cp in &added {
        let crt = s.root(cp).join("etc/kubernetes/pki/apiserver.crt");
        let out = s
            .lab()
            .exec(
                cp,
                &[
                    "openssl",
                    "x509",
                    "-noout",
                    "-ext",
                    "subjectAltName",
                    "-in",
                    crt.to_str().unwrap(),
                ],
            )
            .unwrap();
        assert!(
            out.stdout.contains(&format!("IP Address:{vip}")),
            "{cp}: {}",
            out.all()
        );
    }
    s.assert_invariants();
    assert_real_kubectl_lists(
        &s,
        &s.cps.iter().chain(&s.workers).cloned().collect::<Vec<_>>(),
    );
}

/// `muster kubeconfig` (pointed at the VIP) then the real kubectl at the spec's minor,
/// from a worker's namespace through the VIP: `get nodes` lists exactly `want`.
fn assert_real_kubectl_lists(s: &Suite, want: &[String]) {
    let lab = s.lab();
    let (baked, _) = model::spec::load(&lab.record().spec_origin, &lab.record().spec_text).unwrap();
    let version = baked.distribution.version.to_string();
    let Some(kubectl) = muster_lab::standins::real_kubectl(&version).unwrap() else {
        eprintln!("no real kubectl for {version}: node list not checked");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubectl-scale-out");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("admin.kubeconfig");
    let from = &s.workers[0];
    muster_tests::harness::write_admin_kubeconfig(lab, &bin_dir().join("muster"), from, &kc);
    let out = muster_tests::harness::real_kubectl_in(
        lab,
        &kubectl,
        &kc,
        from,
        &["get", "nodes", "-o", "name"],
    );
    assert!(out.ok(), "kubectl get nodes: {}", out.all());
    let mut got: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.trim_start_matches("node/").to_string())
        .collect();
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got, want, "kubectl through the VIP");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16's removal, on one assembled 3+3 cluster: `muster remove` of a worker (a pod
/// placed on it is evicted by the drain) and of the control plane that initialized the
/// cluster; afterwards etcd's member list and the real kubectl's `get nodes` (through the
/// VIP, with the kubeconfig `muster kubeconfig` wrote) agree with what is left. Then
/// `--prune` with the spec rebuilt without a worker; then the quorum refusal: with two
/// etcd members left and one of them halted, removing the other is refused and changes
/// nothing. A removed node's agent ends in `removed` (tombstone) and stops heartbeating.
#[test]
fn remove_a_worker_and_the_init_control_plane_then_prune_then_quorum_refusal() {
    if !enabled() {
        return;
    }
    let spec = load(None);
    let k8s_version = spec.cluster.distribution.version.to_string();
    let mut s = Suite::with_spec(spec.clone(), "remove", &[]);
    let all = s.all();
    s.boot(&all);
    s.wait_done(&all);
    let init = s.cluster_status()["initialized"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    let mut workers = s.workers.clone();
    workers.sort();
    let (kept_worker, pruned_worker, removed_worker) =
        (workers[0].clone(), workers[1].clone(), workers[2].clone());
    let removal_began = Instant::now();

    // The kubeconfig `muster kubeconfig` writes, outside the lab's state dir.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remove-kubectl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("admin.kubeconfig");
    let out = s.operator(&["kubeconfig", "--write", kc.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.all());
    let kubectl = muster_lab::standins::real_kubectl(&k8s_version)
        .unwrap()
        .expect("no real kubectl for the spec's minor");
    let k = |s: &Suite, args: &[&str]| -> netns::Out {
        let out =
            muster_tests::harness::real_kubectl_in(s.lab(), &kubectl, &kc, &kept_worker, args);
        eprintln!(
            "--- kubectl {args:?} -> {:?}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        out
    };
    let nodes = |s: &Suite| -> Vec<String> {
        let out = k(s, &["get", "nodes", "-o", "name"]);
        assert!(out.ok(), "{}", out.all());
        let mut v: Vec<String> = out
            .stdout
            .lines()
            .map(|l| l.trim_start_matches("node/").to_string())
            .collect();
        v.sort();
        v
    };

    // ---- a worker, with a pod on it that the drain evicts
    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: default\nspec:\n  nodeName: {removed_worker}\n  containers:\n  - name: web\n    image: nginx\n"
        ),
    )
    .unwrap();
    let created = k(&s, &["create", "-f", pod.to_str().unwrap()]);
    assert!(created.ok(), "{}", created.all());
    let unconfirmed = s.operator(&["remove", &removed_worker]);
    assert_eq!(unconfirmed.code, Some(1), "{}", unconfirmed.all());
    assert!(
        unconfirmed.stderr.contains("confirm with --yes"),
        "{}",
        unconfirmed.all()
    );
    let out = s.operator(&["remove", &removed_worker, "--yes", "--json"]);
    assert!(out.ok(), "{}", out.all());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let w = &r["removed"][0];
    assert_eq!(w["node"], removed_worker.as_str(), "{r:#}");
    assert_eq!(w["nodeDeleted"], true, "{r:#}");
    assert_eq!(w["evicted"], serde_json::json!(["default/web-0"]), "{r:#}");
    assert!(
        w["etcdMember"].is_null(),
        "a worker has no etcd member: {r:#}"
    );
    assert!(
        out.stderr.contains("cordoned") && out.stderr.contains("evicted default/web-0"),
        "progress: {}",
        out.stderr
    );
    let gone = k(&s, &["get", "pod", "web-0", "-n", "default"]);
    assert!(
        !gone.ok() && gone.stderr.contains("NotFound"),
        "{}",
        gone.all()
    );

    // ---- the control plane that initialized the cluster
    let out = s.operator(&["remove", &init, "--yes", "--json"]);
    assert!(out.ok(), "{}", out.all());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["removed"][0]["etcdVotersAfter"], 2, "{r:#}");
    assert!(r["removed"][0]["etcdMember"].is_string(), "{r:#}");
    // As the operator would: the machine goes (the VIP moves off it if it held it).
    s.lab_mut().stop(&init).unwrap();
    let mut cps: Vec<String> = s.cps.iter().filter(|c| **c != init).cloned().collect();
    cps.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(s.lab().vip_holders().len() == 1 && s.vip_answers(&kept_worker)) {
        assert!(Instant::now() < deadline, "the VIP did not move off {init}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.etcd_members(&cps[0]), cps, "etcd after removing {init}");
    let mut want: Vec<String> = cps
        .iter()
        .chain([&kept_worker, &pruned_worker])
        .cloned()
        .collect();
    want.sort();
    assert_eq!(nodes(&s), want, "kubectl get nodes after removing {init}");
    s.note(&format!(
        "worker and init control plane removed in {:.1}s",
        removal_began.elapsed().as_secs_f64()
    ));

    // ---- --prune with the spec rebuilt without the last planned worker
    let rebuilt = dir.join("rebuilt");
    let build = s.lab().record().build_dir.clone();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(&build)
        .arg(&rebuilt)
        .status()
        .unwrap();
    assert!(copy.success());
    let fewer = spec.text.replace("workers: 3", "workers: 1");
    assert_ne!(fewer, spec.text, "the default spec names `workers: 3`");
    let spec1 = muster_build::spec_source::LoadedSpec::parse(spec.origin.clone(), fewer).unwrap();
    let bopts = muster_build::bake::BuildOptions {
        agent_bin: muster_lab::slim_agent::slim_agent(&bin_dir().join("nodeagent")),
        mtime: 0,
        helm: Default::default(),
        addons: muster_build::addons::source::Source::from_options(
            muster_lab::standins::default_addon_artifacts(),
        ),
    };
    muster_build::bake::build(&spec1, &rebuilt, &bopts).unwrap();
    let rec = s.lab().record();
    let mut cmd = netns::command(&rec.bridge_ns, &[], bin_dir().join("muster"));
    cmd.args(["remove", "--prune", "--yes", "--json", "--out"])
        .arg(&rebuilt);
    let out = netns::run(cmd, "muster remove --prune", Duration::from_secs(60)).unwrap();
    assert!(out.ok(), "{}", out.all());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let pruned: Vec<&str> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, vec![pruned_worker.as_str()], "{r:#}");
    let mut want: Vec<String> = cps.iter().chain([&kept_worker]).cloned().collect();
    want.sort();
    assert_eq!(nodes(&s), want, "kubectl get nodes after --prune");
    assert_eq!(s.etcd_members(&cps[0]), cps);

    // ---- the removed nodes' agents stopped for good
    let deadline = Instant::now() + Duration::from_secs(45);
    for n in [&removed_worker, &pruned_worker] {
        while s.resumes(n) != "removed" {
            assert!(Instant::now() < deadline, "{n}'s agent is {}", s.resumes(n));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let st = s.cluster_status();
    let removed: Vec<&str> = st["removed"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for n in [&removed_worker, &pruned_worker, &init] {
        assert!(
            removed.contains(&n.as_str()),
            "{n} not shown removed: {st:#}"
        );
    }

    // ---- quorum: two members left, one halted: removing the other is refused (etcd's
    // own `/health` is false on the survivor too, without quorum: "0 healthy of 2")
    s.lab_mut().stop(&cps[1]).unwrap();
    let out = s.operator(&["remove", &cps[0], "--yes"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains(&format!("refused to remove {}", cps[0]))
            && out
                .stderr
                .contains("healthy of 2 voting members and needs 2 to commit"),
        "{}",
        out.all()
    );
    assert!(
        !out.stderr.contains("cordoned"),
        "nothing changed before the refusal: {}",
        out.stderr
    );
    assert_eq!(s.etcd_members(&cps[0]), cps, "the refusal changed etcd");
    s.note(&format!(
        "removal steps took {:.1}s",
        removal_began.elapsed().as_secs_f64()
    ));
}
