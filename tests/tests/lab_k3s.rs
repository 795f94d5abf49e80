#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! The three k3s seeds assemble in `muster lab` (end-to-end tier: set `MUSTER_E2E_TESTS=1`):
//! seed 003 (three servers, keepalived on them, stacked etcd), seed 001 (three servers, two
//! workers, an HAProxy + keepalived load-balancer pair) and seed 002 (two servers on an
//! external MariaDB datastore, nginx on the infra machine that also hosts the database).
//!
//! Real: the build output, the rendezvous and its audit log, the agents (whose lab service
//! runner really runs `k3s server` / `k3s agent`), etcd 3.4 members, keepalived, HAProxy,
//! nginx, MariaDB, namespaces. Stand-ins (NOT the real tools): k3s (`k3s-standin`) and the
//! API server inside it.
//!
//! Needs root, the lab's packages (scripts/deps/*.sh) and the binaries in this test's target
//! dir: `cargo build --workspace --bins` first when run alone.

use muster_lab::{Lab, UpOptions, netns};
use protocol::wire::{AuditEntry, AuditEvent};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a seed may take to assemble.
const PATIENCE: Duration = Duration::from_secs(150);

fn enabled() -> bool {
    muster_tests::harness::e2e_enabled()
}

/// `target/debug` (this test binary is `target/debug/deps/lab_k3s-…`).
fn bin_dir() -> PathBuf {
    muster_lab::standins::target_bin_dir()
}

struct Seed {
    lab: Option<Lab>,
    _slot: muster_tests::harness::LabSlot,
}

impl Drop for Seed {
    fn drop(&mut self) {
        let Some(lab) = self.lab.take() else { return };
        if std::thread::panicking() {
            for n in &lab.record().nodes {
                for log in [
                    n.dir.join("agent.log"),
                    n.root.join("run/muster-lab/k3s.service.log"),
                    n.root.join("run/muster-lab/k3s-agent.service.log"),
                ] {
                    if let Ok(t) = std::fs::read_to_string(&log) {
                        eprintln!("==== {} (last lines, newest first)", log.display());
                        for l in t.lines().rev().take(15) {
                            eprintln!("{l}");
                        }
                    }
                }
            }
        }
        muster_tests::harness::finish(lab);
    }
}

impl Seed {
    fn lab(&self) -> &Lab {
        self.lab.as_ref().unwrap()
    }

    fn names(&self, role: &str) -> Vec<String> {
        self.lab()
            .record()
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.clone())
            .collect()
    }

    fn root(&self, host: &str) -> PathBuf {
        self.lab().node(host).unwrap().root.clone()
    }

    /// `apiserver-standin VERB PATH` on `host` with `kubeconfig_of`'s k3s admin kubeconfig,
    /// against `server`.
    fn api(
        &self,
        host: &str,
        kubeconfig_of: &str,
        server: &str,
        verb: &str,
        path: &str,
        data: Option<&str>,
    ) -> netns::Out {
        let kc = self.root(kubeconfig_of).join("etc/rancher/k3s/k3s.yaml");
        let kc = kc.to_str().unwrap();
        let mut argv = vec![
            "apiserver-standin",
            verb,
            path,
            "--kubeconfig",
            kc,
            "--server",
            server,
            "--timeout-secs",
            "8",
        ];
        if let Some(d) = data {
            argv.extend(["--data", d]);
        }
        self.lab().exec(host, &argv).unwrap()
    }
}

fn load_example(example: &str) -> muster_build::spec_source::LoadedSpec {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example);
    muster_build::spec_source::load(Some(&path)).unwrap()
}

/// Creates the lab of `spec`; boots nothing.
fn create(spec: &muster_build::spec_source::LoadedSpec, tag: &str) -> Seed {
    let slot = muster_tests::harness::lab_slot();
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-k3s-{tag}"));
    let opts = UpOptions::new(state, &bin_dir());
    let t = Instant::now();
    let seed = Seed {
        lab: Some(Lab::create(spec, &opts).unwrap()),
        _slot: slot,
    };
    eprintln!("{}: lab created in {:?}", spec.origin, t.elapsed());
    seed
}

/// Creates the lab of `example`, boots every node and waits until all are done; prints how
/// long each step took.
fn assemble(example: &str, tag: &str) -> Seed {
    let mut seed = create(&load_example(example), tag);
    let started = Instant::now();
    let lab = seed.lab.as_mut().unwrap();
    lab.boot_all().unwrap();
    let names: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let took = lab
        .wait_assembled(&names, started, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    muster_tests::measured!("ASSEMBLY {example}: {:.1}s", took.as_secs_f64());
    seed
}

/// Issue 14's "done when" with the real kubectl through the VIP
/// (`harness::assert_ready_and_rolled_out`): every Node `Ready`, every add-on rolled out;
/// its duration measured.
fn assert_usable(seed: &Seed, tag: &str) -> Option<muster_tests::harness::Usable> {
    let t = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kubectl-k3s-{tag}"));
    let u = muster_tests::harness::assert_ready_and_rolled_out(
        seed.lab(),
        &bin_dir().join("muster"),
        &dir,
    );
    muster_tests::measured!(
        "KUBECTL READY+ROLLOUT CHECK k3s {tag}: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    u
}

/// `kubectl ARGS -o json` with what [`assert_usable`] set up; asserts it succeeded.
fn kubectl_json(
    seed: &Seed,
    u: &muster_tests::harness::Usable,
    args: &[&str],
) -> serde_json::Value {
    let mut argv = args.to_vec();
    argv.extend(["-o", "json"]);
    let out = muster_tests::harness::real_kubectl_in(
        seed.lab(),
        &u.kubectl,
        &u.kubeconfig,
        &u.from,
        &argv,
    );
    assert!(out.ok(), "kubectl {argv:?}: {}", out.all());
    serde_json::from_str(&out.stdout).unwrap()
}

/// The MetalLB pool `muster` and its L2Advertisement as the real kubectl lists them
/// (`get ipaddresspools -A`, `get l2advertisements -A`): the pool's addresses.
fn assert_metallb_pool(seed: &Seed, u: &muster_tests::harness::Usable, want: &[&str]) {
    let pools = kubectl_json(seed, u, &["get", "ipaddresspools", "-A"]);
    let pool = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"] == "muster" && p["metadata"]["namespace"] == "metallb-system"
        })
        .unwrap_or_else(|| panic!("no pool metallb-system/muster: {pools:#}"));
    assert_eq!(
        pool["spec"]["addresses"],
        serde_json::json!(want),
        "{pool:#}"
    );
    let l2 = kubectl_json(seed, u, &["get", "l2advertisements", "-A"]);
    assert!(
        l2["items"].as_array().unwrap().iter().any(|a| {
            a["metadata"]["namespace"] == "metallb-system"
                && a["spec"]["ipAddressPools"] == serde_json::json!(["muster"])
        }),
        "no L2Advertisement of the pool: {l2:#}"
    );
}

/// Exactly one init, control-plane joins one at a time, every node done by its own status;
/// returns the audit log.
fn assert_assembled(seed: &Seed) -> Vec<AuditEntry> {
    assert_assembled_with(seed, 1)
}

/// [`assert_assembled`] with at most `max_cp_joins` control-plane joins at once (k3s on an
/// SQL datastore joins its servers in parallel: every server holds a slot of `cp-join`).
fn assert_assembled_with(seed: &Seed, max_cp_joins: usize) -> Vec<AuditEntry> {
    let audit = seed.lab().audit().unwrap();
    let inits: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.subject == "init" && e.event == AuditEvent::Granted)
        .collect();
    assert_eq!(inits.len(), 1, "init grants: {inits:?}");
    let initializer = inits[0].holder.clone().unwrap();
    assert!(
        seed.names("control-plane").contains(&initializer),
        "{initializer} initialized but is no server"
    );
    let cp = muster_rendezvous::audit::max_concurrent_holders(&audit, "cp-join").unwrap();
    assert!(
        (1..=max_cp_joins).contains(&cp),
        "{cp} control-plane joins at once (at most {max_cp_joins})"
    );
    for n in &seed.lab().record().nodes {
        let agent = n.root.join("usr/bin/nodeagent");
        let root = n.root.display().to_string();
        let out = seed
            .lab()
            .exec(
                &n.name,
                &[agent.to_str().unwrap(), "status", "--json", "--root", &root],
            )
            .unwrap();
        let s: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: status --json: {e}: {}", n.name, out.all()));
        assert_eq!(s["thisNode"]["phase"], "done", "{}: {s:#}", n.name);
        assert_eq!(s["thisNode"]["node"], n.name.as_str(), "{}: {s:#}", n.name);
    }
    audit
}

/// The API answers at the cluster's endpoint (the VIP, or the LB's address) from `from`.
fn assert_endpoint_answers(seed: &Seed, from: &str) {
    let endpoint = format!("https://{}", seed.lab().record().api_endpoint);
    let server = seed.names("control-plane")[0].clone();
    let out = seed.api(from, &server, &endpoint, "get", "/readyz", None);
    assert!(out.ok(), "{endpoint} from {from}: {}", out.all());
    eprintln!("{endpoint} answers from {from}");
}

/// The embedded etcd has exactly the planned servers as members.
fn assert_etcd_members(seed: &Seed) {
    let servers = seed.names("control-plane");
    for host in &servers {
        let out = seed
            .lab()
            .etcdctl(host, &["member", "list", "-w", "json"])
            .unwrap();
        assert!(out.ok(), "member list on {host}: {}", out.all());
        let members = muster_standins::etcd::parse_member_list(&out.stdout).unwrap();
        let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        let mut want = servers.clone();
        want.sort();
        assert_eq!(names, want, "etcd members seen from {host}");
    }
}

#[test]
fn seed_003_k3s_keepalived_assembles() {
    if !enabled() {
        return;
    }
    let t = Instant::now();
    let seed = assemble("seed-003-k3s-keepalived.yaml", "003");
    assert_assembled(&seed);
    // No workers in this seed: the VIP from the third server.
    let third = seed.names("control-plane")[2].clone();
    assert_endpoint_answers(&seed, &third);
    assert_etcd_members(&seed);
    // Issue 14, with the real kubectl through the VIP: every Node Ready, ingress-nginx and
    // MetalLB rolled out; the second VIP is MetalLB's one-address pool (advertised over
    // L2) and ingress-nginx's controller is a LoadBalancer Service, which MetalLB gives
    // that address (no MetalLB controller runs in the lab to assign it: the stand-in
    // stores the Service as applied).
    if let Some(u) = assert_usable(&seed, "003") {
        assert_metallb_pool(&seed, &u, &["192.168.26.254/32"]);
        let svc = kubectl_json(
            &seed,
            &u,
            &[
                "-n",
                "ingress-nginx",
                "get",
                "service",
                "ingress-nginx-controller",
            ],
        );
        assert_eq!(svc["spec"]["type"], "LoadBalancer", "{svc:#}");
        assert!(
            u.workloads
                .iter()
                .any(|w| w == "Deployment ingress-nginx/ingress-nginx-controller"),
            "{:?}",
            u.workloads
        );
    }
    // The same through the API stand-in's client, from the third server: MetalLB's
    // one-address pool, and ingress-nginx's controller Service asking for it.
    let own = |h: &str| format!("https://{}:6443", seed.lab().node(h).unwrap().ip);
    let pool = seed.api(
        &third,
        &third,
        &own(&third),
        "get",
        "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/muster",
        None,
    );
    assert!(
        pool.ok() && pool.stdout.contains("192.168.26.254"),
        "{}",
        pool.all()
    );
    let svc = seed.api(
        &third,
        &third,
        &own(&third),
        "get",
        "/api/v1/namespaces/ingress-nginx/services/ingress-nginx-controller",
        None,
    );
    assert!(
        svc.ok() && svc.stdout.contains("LoadBalancer"),
        "{}",
        svc.all()
    );
    // A done server halted and booted again: its enabled k3s unit (and etcd member) comes
    // back through the lab's boot step, as systemd starts enabled units at boot.
    let mut seed = seed;
    let lab = seed.lab.as_mut().unwrap();
    lab.stop(&third).unwrap();
    let root = lab.node(&third).unwrap().root.clone();
    let pid_file = root.join("run/muster-lab/k3s.service.pid");
    let halted_pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let t_boot = Instant::now();
    lab.start(&third).unwrap();
    let own = format!("https://{}:6443", lab.node(&third).unwrap().ip);
    netns::wait_until(
        "the rebooted server's k3s to answer",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || seed.api(&third, &third, &own, "get", "/readyz", None).ok(),
    )
    .unwrap();
    let booted_pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_ne!(halted_pid, booted_pid, "k3s was not started again");
    eprintln!("{third}: k3s back after boot in {:?}", t_boot.elapsed());
    assert_etcd_members(&seed);
    eprintln!("seed_003_k3s_keepalived_assembles: {:?}", t.elapsed());
}

#[test]
fn seed_001_k3s_haproxy_assembles() {
    if !enabled() {
        return;
    }
    let t = Instant::now();
    let seed = assemble("seed-001-k3s-haproxy-proxmox.yaml", "001");
    assert_assembled(&seed);
    let worker = seed.names("worker")[0].clone();
    assert_endpoint_answers(&seed, &worker);
    assert_etcd_members(&seed);
    assert_usable(&seed, "001");
    eprintln!("seed_001_k3s_haproxy_assembles: {:?}", t.elapsed());
}

#[test]
fn seed_002_k3s_mariadb_assembles_and_both_servers_share_the_data() {
    if !enabled() {
        return;
    }
    let t = Instant::now();
    let seed = assemble("seed-002-k3s-nginx-mariadb.yaml", "002");
    assert_assembled(&seed);
    let worker = seed.names("worker")[0].clone();
    assert_endpoint_answers(&seed, &worker);
    // An object written through one server is read through the other.
    let servers = seed.names("control-plane");
    let (a, b) = (&servers[0], &servers[1]);
    let url = |host: &str| format!("https://{}:6443", seed.lab().node(host).unwrap().ip);
    let body = r#"{"metadata":{"name":"lab-k3s-shared"},"data":{"k":"v"}}"#;
    let w = seed.api(
        a,
        a,
        &url(a),
        "post",
        "/api/v1/namespaces/default/configmaps",
        Some(body),
    );
    assert!(w.ok(), "write via {a}: {}", w.all());
    let r = seed.api(
        b,
        b,
        &url(b),
        "get",
        "/api/v1/namespaces/default/configmaps/lab-k3s-shared",
        None,
    );
    assert!(r.ok(), "read via {b}: {}", r.all());
    assert!(r.stdout.contains("lab-k3s-shared"), "{}", r.stdout);
    // Issue 14: the init server applied the baked MetalLB (its CRDs established first) and
    // the pool of seed 002's table.
    let pool = seed.api(
        b,
        b,
        &url(b),
        "get",
        "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/muster",
        None,
    );
    assert!(pool.ok(), "the MetalLB pool: {}", pool.all());
    assert!(
        pool.stdout.contains("192.168.0.170-192.168.0.175"),
        "{}",
        pool.stdout
    );
    let speaker = seed.api(
        b,
        b,
        &url(b),
        "get",
        "/apis/apps/v1/namespaces/metallb-system/daemonsets/speaker",
        None,
    );
    assert!(speaker.ok(), "MetalLB's speaker: {}", speaker.all());
    // With the real kubectl through the VIP: every Node Ready, MetalLB rolled out, seed
    // 002's pool (its table: 192.168.0.170-175) and its L2Advertisement listed.
    if let Some(u) = assert_usable(&seed, "002") {
        assert_metallb_pool(&seed, &u, &["192.168.0.170-192.168.0.175"]);
        for w in [
            "Deployment metallb-system/controller",
            "DaemonSet metallb-system/speaker",
        ] {
            assert!(u.workloads.iter().any(|x| x == w), "{w}: {:?}", u.workloads);
        }
    }
    eprintln!(
        "seed_002_k3s_mariadb_assembles_and_both_servers_share_the_data: {:?}",
        t.elapsed()
    );
}

/// Issue 18, defect 11 (a spec the project had not seen): k3s servers on an external SQL
/// datastore whose endpoint is the rendezvous host's address, not a node's. The lab used to
/// put MariaDB in a namespace of its own with the rendezvous's address, so the servers got
/// `Connection refused` and the lab timed out; the datastore now shares the rendezvous's
/// namespace.
#[test]
fn k3s_on_sql_at_the_rendezvous_host_assembles() {
    if !enabled() {
        return;
    }
    let seed =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-003-k3s-keepalived.yaml");
    let text = std::fs::read_to_string(seed).unwrap().replace(
        "  rendezvous:\n",
        "  datastore:\n    type: external-sql\n    endpoint: \"mysql://k3s:lab-secret@tcp(192.168.26.1:3306)/k3s\"\n  rendezvous:\n",
    );
    assert!(
        text.contains("tcp(192.168.26.1:3306)"),
        "the datastore was not added"
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("k3s-sql-at-rendezvous.yaml");
    std::fs::write(&path, text).unwrap();
    let seed = assemble(path.to_str().unwrap(), "sql-at-rendezvous");
    // Three servers on SQL: the two joiners may join at once (two `cp-join` slots).
    assert_assembled_with(&seed, 2);
}

/// Issue 14's broken case: k3s told to use cilium turns its own flannel off, and the
/// user's cilium manifest here installs no agent DaemonSet (a fixture holding only its
/// ConfigMap), so the pod network is missing. The servers assemble, but no
/// Node is ever Ready, so no node reports done: the servers wait in `awaiting-ready` and
/// the workers in `verifying` (observed for 10 s once every server waits; the API
/// stand-in reads Nodes NotReady without a CNI, like a kubelet).
#[test]
fn a_cluster_without_its_cni_never_reports_done() {
    if !enabled() {
        return;
    }
    let t = Instant::now();
    let mut spec = load_example("seed-001-k3s-haproxy-proxmox.yaml");
    spec.cluster.addons.cni = model::spec::Cni::Cilium;
    spec.cluster.addons.manifests = vec![model::spec::AddonManifest {
        name: "cilium".into(),
        url: None,
        file: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/addons/cilium-without-agent.yaml")
                .display()
                .to_string(),
        ),
        sha256: None,
    }];
    let mut seed = create(&spec, "nocni");
    let lab = seed.lab.as_mut().unwrap();
    lab.boot_all().unwrap();
    let servers: Vec<String> = seed.names("control-plane");
    let workers: Vec<String> = seed.names("worker");
    assert!(!workers.is_empty());
    // The servers assemble (init, joins) and then wait for their own Nodes to be Ready,
    // which never comes: no server is done either.
    muster_lab::netns::wait_until(
        "every server to wait for its Node to be Ready",
        PATIENCE,
        Duration::from_millis(200),
        || {
            servers.iter().all(|h| {
                let p = muster_lab::status::local_phase(seed.lab().node(h).unwrap());
                p.split('#').next() == Some("awaiting-ready")
            })
        },
    )
    .unwrap();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(10) {
        for w in workers.iter().chain(&servers) {
            let n = seed.lab().node(w).unwrap();
            let agent = n.root.join("usr/bin/nodeagent");
            let root = n.root.display().to_string();
            let out = seed
                .lab()
                .exec(
                    w,
                    &[agent.to_str().unwrap(), "status", "--json", "--root", &root],
                )
                .unwrap();
            let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            assert_ne!(
                s["thisNode"]["phase"], "done",
                "{w} done without a CNI: {s:#}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // The API says why: the worker's Node is NotReady for the network plugin.
    let server = &servers[0];
    let url = format!("https://{}:6443", seed.lab().node(server).unwrap().ip);
    let node = seed.api(
        server,
        server,
        &url,
        "get",
        &format!("/api/v1/nodes/{}", workers[0]),
        None,
    );
    assert!(node.ok(), "{}", node.all());
    assert!(
        node.stdout.contains("NetworkPluginNotReady"),
        "{}",
        node.stdout
    );
    eprintln!(
        "TEST DURATION a_cluster_without_its_cni_never_reports_done: {:?}",
        t.elapsed()
    );
}

/// `example` with each `(from, to)` replaced once (each must be there).
fn edited(example: &str, edits: &[(&str, &str)]) -> muster_build::spec_source::LoadedSpec {
    let base = load_example(example);
    let mut text = base.text.clone();
    for (from, to) in edits {
        assert!(text.contains(from), "{example} has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    muster_build::spec_source::LoadedSpec::parse(base.origin.clone(), text).unwrap()
}

/// Issue 16, the followers HAProxy's scale-out test (lab_suite.rs) does not cover: `example`
/// (edited by `first`) assembles, then the spec grows by one server (`grown`), the lab adds
/// it from the rebuilt build (`Lab::add_nodes`) and it joins. Every node of `role` running
/// `unit` (nginx on the load balancer, keepalived on the servers) gets a config naming the
/// new server (`needle` of its address) from its agent, which checked it with the daemon's
/// own checker, installed it and reloaded the daemon: same main pid (reloaded, not
/// restarted), and the config the daemon re-read (the lab's copy, made at the reload)
/// names the new server. Returns the followers' daemon logs and the audit log.
fn a_new_server_reaches_the_followers(
    example: &str,
    tag: &str,
    first: &[(&str, &str)],
    grown: &[(&str, &str)],
    role: &str,
    unit: &str,
    needle: impl Fn(&std::net::Ipv4Addr) -> String,
) -> (Vec<String>, Vec<AuditEntry>) {
    let t = Instant::now();
    let mut seed = create(&edited(example, first), tag);
    let started = Instant::now();
    let lab = seed.lab.as_mut().unwrap();
    lab.boot_all().unwrap();
    let names: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    lab.wait_assembled(&names, started, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    let assembled = t.elapsed();
    let followers = seed.names(role);
    assert!(!followers.is_empty(), "no {role} in {example}");
    let daemon = |s: &Seed, n: &str| {
        s.lab()
            .node(n)
            .unwrap()
            .reloadable
            .iter()
            .find(|d| d.unit == unit)
            .unwrap_or_else(|| panic!("{n} runs no membership-following {unit}"))
            .clone()
    };
    let pids: Vec<Option<u32>> = followers.iter().map(|n| daemon(&seed, n).pid()).collect();
    assert!(pids.iter().all(Option::is_some), "{unit} runs: {pids:?}");

    // ---- the spec grows by one server; the lab adds it from the rebuilt build
    let t_grow = Instant::now();
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-k3s-{tag}"));
    let opts = UpOptions::new(state, &bin_dir());
    let lab = seed.lab.as_mut().unwrap();
    let added = lab.add_nodes(&edited(example, grown), &opts).unwrap();
    assert_eq!(added.len(), 1, "{added:?}");
    let new = added[0].clone();
    let ip = lab.node(&new).unwrap().ip;
    lab.boot(&new).unwrap();
    lab.wait_assembled(&added, t_grow, PATIENCE, |c| eprintln!("{c}"))
        .unwrap();
    let joined = t_grow.elapsed();
    let want = needle(&ip);
    for f in &followers {
        let d = daemon(&seed, f);
        let agent_log = seed.lab().node(f).unwrap().dir.join("agent.log");
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        netns::wait_until(
            &format!("{f}'s {unit} to be reloaded with {new} ({want})"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let log = read(&agent_log);
                read(&d.copy).contains(&want)
                    && log.contains("new config installed")
                    && log.contains("lab: daemon reloaded")
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nagent:\n{}", read(&agent_log)));
        let installed = read(&seed.root(f).join(&d.config));
        assert!(
            installed.contains(&want),
            "{f}: installed {unit}:\n{installed}"
        );
    }
    let now: Vec<Option<u32>> = followers.iter().map(|n| daemon(&seed, n).pid()).collect();
    assert_eq!(now, pids, "{unit} was restarted, not reloaded");
    muster_tests::measured!(
        "MEMBERSHIP {example} + {new}: assembled {:.1}s, grown, joined and {unit} reloaded on {} in {:.1}s (followed {:.1}s after the join)",
        assembled.as_secs_f64(),
        followers.join(", "),
        t_grow.elapsed().as_secs_f64(),
        (t_grow.elapsed() - joined).as_secs_f64()
    );
    let logs = followers
        .iter()
        .map(|f| {
            let svc = seed
                .lab()
                .node(f)
                .unwrap()
                .services
                .iter()
                .find(|s| format!("{}.service", s.name) == unit)
                .unwrap()
                .log
                .clone();
            std::fs::read_to_string(svc).unwrap_or_default()
        })
        .collect();
    (logs, seed.lab().audit().unwrap())
}

/// Seed 002's nginx (stream) load balancer follows a third server: its upstream block
/// gains the new server's API address, `nginx -t` passed and nginx re-read it on SIGHUP.
/// Its first run (2026-12-04) found that the third server never joined: k3s on an SQL
/// datastore gives every server a `cp-join` slot, the rendezvous had fixed the semaphore
/// at the first build's 2 slots and refused the grown build's acquire with 3 (`409
/// slots_mismatch`). Now a live member's acquire resizes it: the audit log shows the one
/// resize 2 → 3 by the new server, and no grant beyond the count in force.
#[test]
fn nginx_upstreams_follow_a_new_server() {
    if !enabled() {
        return;
    }
    let (logs, audit) = a_new_server_reaches_the_followers(
        "seed-002-k3s-nginx-mariadb.yaml",
        "nginx-follows",
        &[("    workers: 3\n", "    workers: 0\n")],
        &[
            ("    workers: 3\n", "    workers: 0\n"),
            ("    controlPlanes: 2 ", "    controlPlanes: 3 "),
        ],
        "load-balancer",
        "nginx.service",
        |ip| format!("server {ip}:6443"),
    );
    eprintln!("nginx log:\n{}", logs.join("\n----\n"));
    let resizes: Vec<(Option<u32>, Option<u32>)> = audit
        .iter()
        .filter(|e| e.subject == "cp-join" && e.event == AuditEvent::Resized)
        .map(|e| (e.previous_slots, e.slots))
        .collect();
    assert_eq!(resizes, [(Some(2), Some(3))], "cp-join resizes");
    let proof = muster_rendezvous::audit::grants_within_slots(&audit, "cp-join")
        .unwrap_or_else(|e| panic!("cp-join granted beyond its count: {e:?}"));
    assert_eq!(proof.counts, [2, 3], "cp-join slot counts");
}

/// Seed 003's keepalived on the servers follows a fourth server: every running server's
/// unicast peers gain its address, `keepalived -t` passed and keepalived re-read it.
/// Its first run (2026-12-04) found that no running server's agent installed a new
/// keepalived config within 30 s. Why: the agent checked the rendered config with
/// `keepalived -t` as installed, naming the product's check script path, while the lab's
/// keepalived reads a copy with that path re-rooted under the node (the product path
/// does not exist on the lab's host); `keepalived -t` fails on a script it cannot find
/// (exit 5, "Disabling track script chk_api since not found/accessible"), so every pass
/// kept the running config. The agent now checks the text the daemon will read
/// (`Systemd::as_read`: the lab's rewrites; on a node the config itself).
/// The first fix alone still failed: `NodeSystemd` (what `nodeagent run` uses) did not
/// forward `as_read` to `LabSystemd`; with that forwarded it passed (2026-12-04 12:25).
#[test]
fn keepalived_peers_follow_a_new_server() {
    if !enabled() {
        return;
    }
    let (logs, _) = a_new_server_reaches_the_followers(
        "seed-003-k3s-keepalived.yaml",
        "keepalived-follows",
        &[],
        &[("    controlPlanes: 3\n", "    controlPlanes: 4\n")],
        "control-plane",
        "keepalived.service",
        |ip| format!("        {ip}\n"),
    );
    eprintln!("keepalived logs:\n{}", logs.join("\n----\n"));
}
