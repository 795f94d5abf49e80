#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Issue #5's acceptance test: three control planes and three workers, each a real
//! `nodeagent` in its own network namespace, assemble into one cluster through a real
//! `muster rendezvous`, from what a real `muster build` produced.
//!
//! Real: the build output, the rendezvous (TLS, pinned cert, sealed records, audit log),
//! the agents, etcd 3.4 members, TLS everywhere, keepalived holding the VIP, namespaces.
//! Stand-ins (tests/README.md): kubeadm, the kubelet and the API server. kube-vip cannot
//! run without a kubelet, so keepalived (the VIP provider muster supports for exactly this
//! shape) holds the spec's VIP in the lab, tracking the local API port like kube-vip's
//! leader election would follow a healthy control plane.
//!
//! Needs root, iproute2, etcd-server, etcd-client, keepalived, and the `muster` and
//! `nodeagent` binaries next to this test's directory: `cargo test --workspace` builds them
//! (both packages have integration tests); alone, run `cargo build --workspace --bins` first.

use model::rendezvous::{AuditEntry, AuditEvent};
use muster_tests::netns::{self, Daemon, Lab};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CPS: [(&str, &str, u8); 3] = [
    ("cp1", "lab-cp-1", 11),
    ("cp2", "lab-cp-2", 12),
    ("cp3", "lab-cp-3", 13),
];
const WORKERS: [(&str, &str, u8); 3] = [
    ("w1", "lab-w-1", 21),
    ("w2", "lab-w-2", 22),
    ("w3", "lab-w-3", 23),
];
const RENDEZVOUS_OCTET: u8 = 2;
const VIP_OCTET: u8 = 10;
const WORKER_CAP: usize = 2;
/// The whole assembly must finish within this (CI fast suite: under 3 min per test).
const ASSEMBLY_PATIENCE: Duration = Duration::from_secs(150);

fn hosts() -> Vec<(&'static str, &'static str, u8)> {
    CPS.iter().chain(WORKERS.iter()).copied().collect()
}

/// `target/debug` (this test binary is `target/debug/deps/assembly-…`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: `cargo test --workspace` builds it, or run `cargo build --workspace --bins`",
        p.display()
    );
    p
}

fn spec(lab: &Lab) -> String {
    let net = lab.subnet();
    format!(
        "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: lab
spec:
  distribution:
    kind: kubeadm
    version: \"v1.31.4\"
  topology:
    controlPlanes: 3
    workers: 3
  network:
    subnet: {net}.0/24
    gateway: {net}.1
    dns: [{net}.1]
    interface: eth0
    addressPlan:
      controlPlanes: 11
      workers: 21
  ha:
    provider: kube-vip
    vip: {net}.{VIP_OCTET}
  rendezvous:
    url: \"https://{net}.{RENDEZVOUS_OCTET}:7443\"
    workerJoinCap: {WORKER_CAP}
  platform:
    type: vagrant
    provider: libvirt
    box: debian/bookworm64
"
    )
}

/// What cloud-init does with the node's user-data: every `write_files` entry, under `root`.
fn apply_user_data(user_data: &Path, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(user_data).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let files = doc["write_files"].as_sequence().expect("write_files");
    assert!(!files.is_empty());
    for f in files {
        let path = f["path"].as_str().unwrap().trim_start_matches('/');
        let content = f["content"].as_str().unwrap();
        let mode = u32::from_str_radix(f["permissions"].as_str().unwrap_or("0644"), 8).unwrap();
        let dst = root.join(path);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(&dst, content).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// keepalived for the VIP on one control plane (flags and settings: lab-netns.md).
fn keepalived_conf(lab: &Lab, host: &str, prio: u32, peers: &[String]) -> String {
    let vip = lab.ip(VIP_OCTET);
    let peers: String = peers.iter().map(|p| format!("        {p}\n")).collect();
    let check = lab.dir().join("check_api.sh");
    format!(
        "global_defs {{\n    router_id {host}\n    enable_script_security\n    script_user root\n}}\n\
         vrrp_script chk_api {{\n    script \"{check}\"\n    interval 1\n    timeout 2\n    fall 2\n    rise 2\n}}\n\
         vrrp_instance api_vip {{\n    state BACKUP\n    nopreempt\n    interface eth0\n    virtual_router_id 51\n    priority {prio}\n    advert_int 1\n    unicast_peer {{\n{peers}    }}\n    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n    track_script {{\n        chk_api\n    }}\n}}\n",
        check = check.display()
    )
}

struct Cluster {
    lab: Lab,
    build: PathBuf,
    /// Dropped before the lab (fields drop in order): agents, keepalived, rendezvous.
    daemons: Vec<Daemon>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().rev() {
            d.stop(Duration::from_secs(3));
        }
        if std::thread::panicking() {
            eprintln!(
                "lab kept for inspection only with MUSTER_LAB_KEEP=1; logs were in {}",
                self.lab.dir().display()
            );
            for (host, _, _) in hosts() {
                let log = self.lab.dir().join(format!("{host}-agent.log"));
                if let Ok(t) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = t.lines().rev().take(25).collect();
                    eprintln!("==== {host} agent log (last lines, newest first)");
                    for l in tail {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

fn check_script(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let p = lab.dir().join("check_api.sh");
    std::fs::write(
        &p,
        "#!/bin/bash\n# lab: keepalived health check of the local API port\nexec /usr/bin/timeout 2 /bin/bash -c '</dev/tcp/127.0.0.1/6443'\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Lab, build, node roots, rendezvous and keepalived; the agents are not started yet.
fn prepare(tag: &str) -> Cluster {
    netns::require(&[("keepalived", "keepalived"), ("unshare", "util-linux")]).unwrap();
    let muster = binary("muster");
    let nodeagent = binary("nodeagent");
    let standins = Path::new(env!("CARGO_BIN_EXE_kubeadm-standin"))
        .parent()
        .unwrap();
    let host_octets: Vec<(&str, u8)> = hosts().iter().map(|(h, _, o)| (*h, *o)).collect();
    let lab = Lab::new(tag, standins, &host_octets).unwrap();
    let mut c = Cluster {
        build: lab.dir().join("build"),
        lab,
        daemons: Vec::new(),
    };
    let lab = &c.lab;

    // ---- muster build, as an operator runs it
    let spec_path = lab.dir().join("cluster.yaml");
    std::fs::write(&spec_path, spec(lab)).unwrap();
    let t = Instant::now();
    let out = Command::new(&muster)
        .arg("build")
        .arg(&spec_path)
        .arg("--out")
        .arg(&c.build)
        .arg("--agent-bin")
        .arg(&nodeagent)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "muster build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("muster build: {:?}", t.elapsed());

    // ---- each node's disk: the image's payload, then cloud-init's write_files
    let payload = c.build.join("payload.tar.gz");
    for (host, name, _) in hosts() {
        let root = lab.root(host);
        std::fs::create_dir_all(&root).unwrap();
        let st = Command::new("tar")
            .arg("xzf")
            .arg(&payload)
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "unpacking the payload for {host}");
        apply_user_data(&c.build.join("nodes").join(name).join("user-data"), &root);
        assert!(root.join("etc/muster/node.json").is_file());
        assert!(root.join("etc/muster/cluster-secret").is_file());
        assert!(root.join("usr/bin/nodeagent").is_file());
    }

    // ---- the rendezvous in the bridge namespace, on the spec's address
    let rdv_ip = lab.bridge_addr(RENDEZVOUS_OCTET).unwrap();
    let listen = format!("{rdv_ip}:7443");
    let data = lab.dir().join("rendezvous");
    let (keys, cert, key) = (
        c.build.join("rendezvous-keys"),
        c.build.join("rendezvous.crt"),
        c.build.join("rendezvous.key"),
    );
    let args = [
        muster.to_str().unwrap(),
        "rendezvous",
        "--listen",
        &listen,
        "--data",
        data.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let rdv = lab
        .spawn_in(
            "rendezvous",
            &lab.bridge_ns(),
            &[],
            &args,
            &lab.dir().join("rendezvous.log"),
        )
        .unwrap();
    c.daemons.push(rdv);
    let br = lab.bridge_ns();
    let probe = format!("</dev/tcp/{rdv_ip}/7443");
    netns::wait_until(
        "the rendezvous to listen",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            Command::new("ip")
                .args(["netns", "exec", &br, "bash", "-c", &probe])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    )
    .unwrap();

    // ---- keepalived holding the VIP on the control plane whose API answers
    check_script(lab);
    for (i, (host, _, _)) in CPS.iter().enumerate() {
        let peers: Vec<String> = CPS
            .iter()
            .filter(|(h, _, _)| h != host)
            .map(|(_, _, o)| lab.ip(*o))
            .collect();
        let prio = 150 - 10 * u32::try_from(i).unwrap();
        let conf = lab.dir().join(format!("{host}-keepalived.conf"));
        std::fs::write(&conf, keepalived_conf(lab, host, prio, &peers)).unwrap();
        let run = lab.dir().join(format!("{host}-keepalived"));
        let pid = |k: &str| format!("{}.{k}.pid", run.display());
        let args = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-G",
            "-P",
            "-f",
            conf.to_str().unwrap(),
            "-p",
            &pid("main"),
            "-r",
            &pid("vrrp"),
            "-c",
            &pid("chk"),
        ];
        let d = lab
            .spawn_in(
                &format!("{host}/keepalived"),
                &lab.ns(host),
                &[],
                &args,
                &lab.dir().join(format!("{host}-keepalived.log")),
            )
            .unwrap();
        c.daemons.push(d);
    }
    c
}

impl Cluster {
    /// Starts every agent at once, as the images boot: the payload's own `nodeagent`, in
    /// the node's namespace with its hostname, the stand-ins first on PATH.
    fn start_agents(&mut self) {
        let all: Vec<&str> = hosts().iter().map(|(h, _, _)| *h).collect();
        self.start_agents_on(&all);
    }

    fn start_agents_on(&mut self, which: &[&str]) {
        for (host, name, _) in hosts().into_iter().filter(|(h, _, _)| which.contains(h)) {
            let root = self.lab.root(host);
            let agent = root.join("usr/bin/nodeagent");
            let script = format!(
                "hostname {name} && exec {} run --lab --root {}",
                agent.display(),
                root.display()
            );
            let d = self
                .lab
                .spawn_in(
                    &format!("{host}/nodeagent"),
                    &self.lab.ns(host),
                    &[
                        ("MUSTER_NODE_ROOT", root.display().to_string()),
                        ("NODEAGENT_LOG", "info".to_string()),
                    ],
                    &["unshare", "--uts", "sh", "-c", &script],
                    &self.lab.dir().join(format!("{host}-agent.log")),
                )
                .unwrap();
            self.daemons.push(d);
        }
    }

    /// `nodeagent status --root ROOT --json` for one node, in its namespace (so it can
    /// reach the rendezvous and the VIP, as on a real node).
    fn status(&self, host: &str) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec"])
            .arg(self.lab.ns(host))
            .arg(binary("nodeagent"))
            .args(["status", "--json", "--root"])
            .arg(self.lab.root(host))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Polls every node's status until all are done, printing progress; returns the time.
    fn wait_assembled(&mut self, started: Instant) -> Duration {
        let all: Vec<&str> = hosts().iter().map(|(h, _, _)| *h).collect();
        self.wait_done(started, &all)
    }

    /// Polls every node's status until the `which` nodes are done, printing progress.
    fn wait_done(&mut self, started: Instant, which: &[&str]) -> Duration {
        let mut last = String::new();
        let deadline = started + ASSEMBLY_PATIENCE;
        loop {
            let phases: BTreeMap<&str, String> = hosts()
                .iter()
                .map(|(h, _, _)| {
                    let s = self.status(h);
                    let p = s["thisNode"]["phase"].as_str().unwrap_or("-").to_string();
                    let a = s["thisNode"]["attempt"].as_u64().unwrap_or(0);
                    (*h, if a > 0 { format!("{p}#{a}") } else { p })
                })
                .collect();
            let line = format!("{phases:?}");
            if line != last {
                eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
                last.clone_from(&line);
            }
            if which
                .iter()
                .all(|h| phases.get(h).is_some_and(|p| p == "done"))
            {
                return started.elapsed();
            }
            for d in &mut self.daemons {
                if let Some(st) = d.exited() {
                    panic!("{} exited early: {st}", d.name);
                }
            }
            assert!(
                Instant::now() < deadline,
                "not assembled within {ASSEMBLY_PATIENCE:?}: {line}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The rendezvous audit log, read from inside the bridge namespace (a thread that
    /// entered it; network namespaces are per thread) with the cluster's own client.
    fn audit(&self) -> Vec<AuditEntry> {
        let ns_path = PathBuf::from("/var/run/netns").join(self.lab.bridge_ns());
        let root = self.lab.node_root("cp1");
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns_path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (baked, id) = nodeagent::app::load(&root).unwrap();
                let secret = nodeagent::app::load_secret(&root).unwrap();
                let client = nodeagent::rendezvous::Client::from_baked(
                    &baked.rendezvous,
                    &secret,
                    id.name.as_str(),
                )
                .unwrap();
                let mut all: Vec<AuditEntry> = Vec::new();
                loop {
                    let after = all.last().map_or(0, |e| e.seq);
                    let page = client.audit(after).await.unwrap();
                    if page.is_empty() {
                        break all;
                    }
                    all.extend(page);
                }
            })
        })
        .join()
        .unwrap()
    }

    /// Lines of the kubeadm stand-in's command log on one node.
    fn commands(&self, host: &str) -> Vec<String> {
        std::fs::read_to_string(
            self.lab
                .root(host)
                .join(muster_tests::standin::STATE_DIR)
                .join(muster_tests::standin::kubeadm::COMMAND_LOG),
        )
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
        .collect()
    }

    /// The checks both tests share; returns the audit log.
    fn assert_assembled(&self) -> Vec<AuditEntry> {
        // ---- every node: done and healthy, by its own `nodeagent status`
        for (host, name, _) in hosts() {
            let s = self.status(host);
            assert_eq!(s["healthy"], true, "{host}: {s:#}");
            assert_eq!(s["thisNode"]["phase"], "done", "{host}: {s:#}");
            assert_eq!(s["thisNode"]["node"], name, "{host}: {s:#}");
            assert!(s["thisNode"]["lastError"].is_null(), "{host}: {s:#}");
        }

        // ---- exactly one init: one grant of the init semaphore, one `kubeadm init` run
        let audit = self.audit();
        let grants = |sem: &str| -> Vec<&AuditEntry> {
            audit
                .iter()
                .filter(|e| e.subject == sem && e.event == AuditEvent::Granted)
                .collect()
        };
        let init_grants = grants("init");
        assert_eq!(init_grants.len(), 1, "init grants: {init_grants:?}");
        let initializer = init_grants[0].holder.clone().unwrap();
        let inits: Vec<(&str, usize)> = hosts()
            .iter()
            .map(|(h, _, _)| {
                let n = self
                    .commands(h)
                    .iter()
                    .filter(|l| l.as_str() == "init started")
                    .count();
                (*h, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(inits.len(), 1, "nodes that ran kubeadm init: {inits:?}");
        assert_eq!(inits[0].1, 1, "kubeadm init ran more than once: {inits:?}");
        let init_host = CPS.iter().find(|(h, _, _)| *h == inits[0].0).unwrap();
        assert_eq!(
            init_host.1, initializer,
            "init grant holder vs kubeadm init"
        );

        // ---- one node's `nodeagent status` shows the cluster as the rendezvous sees it
        let s = self.status("cp1");
        let c = &s["cluster"];
        assert_eq!(c["reachable"], true, "{s:#}");
        assert_eq!(c["members"].as_array().map(Vec::len), Some(6), "{s:#}");
        assert_eq!(c["initializedBy"], initializer.as_str(), "{s:#}");
        assert_eq!(
            c["cpJoinHolders"].as_array().map(Vec::len),
            Some(0),
            "{s:#}"
        );

        // ---- control-plane joins one at a time; workers at most the cap at once
        let cp = muster::rendezvous::audit::max_concurrent_holders(&audit, "cp-join").unwrap();
        assert_eq!(cp, 1, "control-plane joins overlapped");
        assert!(
            grants("cp-join").len() >= 2,
            "two control planes must have joined"
        );
        let w = muster::rendezvous::audit::max_concurrent_holders(&audit, "worker-join").unwrap();
        assert!(
            (1..=WORKER_CAP).contains(&w),
            "worker joins: {w} at once (cap {WORKER_CAP})"
        );
        eprintln!(
            "workers joining at once: at most {w} (cap {WORKER_CAP}){}",
            if w < WORKER_CAP {
                " — no overlap this run (timing)"
            } else {
                ""
            }
        );

        // ---- the VIP: held by keepalived on exactly one control plane
        let vip = format!("inet {}/", self.lab.ip(VIP_OCTET));
        let holders: Vec<&str> = CPS
            .iter()
            .filter(|(h, _, _)| {
                let out = Command::new("ip")
                    .args(["-n", &self.lab.ns(h), "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(&vip)
            })
            .map(|(h, _, _)| *h)
            .collect();
        assert_eq!(holders.len(), 1, "VIP holders: {holders:?}");

        // ---- etcd: exactly the three planned members, all started
        let members = self.lab.members(init_host.0).unwrap();
        let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            CPS.iter()
                .map(|(_, n, _)| n.to_string())
                .collect::<Vec<_>>(),
            "{members:?}"
        );
        assert!(members.iter().all(|m| m.started()), "{members:?}");
        for (_, _, octet) in CPS {
            let peer = format!("https://{}:2380", self.lab.ip(octet));
            assert!(
                members.iter().any(|m| m.peer_urls.contains(&peer)),
                "no member with {peer}: {members:?}"
            );
        }
        let health = self
            .lab
            .etcdctl(init_host.0, &["endpoint", "health", "--cluster"])
            .unwrap();
        assert!(health.ok(), "{}", health.all());

        // ---- every worker joined with kubeadm exactly once and left a kubelet identity
        for (host, _, _) in WORKERS {
            let joins = self
                .commands(host)
                .iter()
                .filter(|l| l.as_str() == "join ok")
                .count();
            assert_eq!(joins, 1, "{host}: {:?}", self.commands(host));
            assert!(
                self.lab
                    .root(host)
                    .join("var/lib/kubelet/pki/kubelet-client-current.pem")
                    .is_file()
            );
        }
        audit
    }
}

#[test]
fn six_agents_assemble_one_cluster() {
    let mut c = prepare("asm");
    let t = Instant::now();
    c.start_agents();
    let took = c.wait_assembled(t);
    c.assert_assembled();
    eprintln!(
        "ASSEMBLY WALL TIME: {:.1}s (3 control planes + 3 workers)",
        took.as_secs_f64()
    );
    drop(c);
    assert!(
        netns::own_namespaces().is_empty(),
        "{:?}",
        netns::own_namespaces()
    );
}

#[test]
fn a_failed_control_plane_join_is_compensated() {
    let mut c = prepare("fail");
    // Every control plane's first join fails in kubeadm's etcd phase, at `member add`
    // (once per node root, stand-in knob; which node initializes is up to the election,
    // so all three are armed and the two joiners each fail once).
    //
    // Not `crash_at=after-member-add` here: when the FIRST joiner dies after adding its
    // member, the cluster is one started member of two and has lost quorum, so neither
    // removing the stale member nor a new join's discovery (which reads cluster-info
    // through the API) can succeed — a wedge kubeadm's etcd learner mode exists for. The
    // stand-in adds plain members; see the report in docs/testing.md.
    for (host, _, _) in CPS {
        c.lab
            .write(
                host,
                &format!("{}/knobs", muster_tests::standin::STATE_DIR),
                "fail_at=member-add\n",
            )
            .unwrap();
    }
    let t = Instant::now();
    c.start_agents();
    let took = c.wait_assembled(t);
    let audit = c.assert_assembled();

    let joiners: Vec<_> = CPS
        .iter()
        .filter(|(h, _, _)| !c.commands(h).iter().any(|l| l == "init started"))
        .collect();
    assert_eq!(joiners.len(), 2);
    for (host, name, _) in joiners {
        let cmds = c.commands(host);
        // Compensated: the crashed join, a reset, then a successful join.
        // The first join failed (the knob), then a reset, then a join that succeeded.
        let failed = cmds
            .iter()
            .position(|l| l == "join failed")
            .unwrap_or_else(|| panic!("{host}: no failed join: {cmds:?}"));
        let reset = cmds
            .iter()
            .skip(failed)
            .position(|l| l == "reset ok")
            .unwrap_or_else(|| panic!("{host}: no reset after the crash: {cmds:?}"));
        assert!(
            cmds.iter().skip(failed + reset).any(|l| l == "join ok"),
            "{host}: {cmds:?}"
        );
        // Its status tells the truth about what it recovered from.
        let s = c.status(host);
        let n = &s["thisNode"];
        assert!(n["failures"].as_u64().unwrap_or(0) >= 1, "{host}: {s:#}");
        assert!(
            n["lastFailure"]["attempt"].as_u64().unwrap_or(0) >= 1,
            "{host}: {s:#}"
        );
        let err = n["lastFailure"]["error"].as_str().unwrap_or("");
        assert!(
            err.contains("join") && err.contains("injected failure"),
            "{host}: {s:#}"
        );
        eprintln!("{host} recovered from: {err}");
        // The audit shows the slot taken for the crashed join and again for the retry.
        let grants = audit
            .iter()
            .filter(|e| {
                e.subject == "cp-join"
                    && e.event == AuditEvent::Granted
                    && e.holder.as_deref() == Some(name)
            })
            .count();
        assert!(grants >= 2, "{host}: cp-join grants {grants}");
    }
    eprintln!(
        "ASSEMBLY WALL TIME with failed joins: {:.1}s",
        took.as_secs_f64()
    );
    drop(c);
    assert!(
        netns::own_namespaces().is_empty(),
        "{:?}",
        netns::own_namespaces()
    );
}

#[test]
fn a_crashed_third_member_is_cleaned_and_retried() {
    let mut c = prepare("crash");
    // The last control plane boots late and its first join dies right after
    // `etcdctl member add` (SIGKILL): an unstarted etcd member stays behind (kubeadm#2095).
    // As the third member the cluster keeps quorum (2 of 3), so the stale member can be
    // removed. (As the second it could not: see the comment of the test above.)
    let (late, late_name, _) = CPS[2];
    c.lab
        .write(
            late,
            &format!("{}/knobs", muster_tests::standin::STATE_DIR),
            "crash_at=after-member-add\n",
        )
        .unwrap();
    let t = Instant::now();
    let early: Vec<&str> = hosts()
        .iter()
        .map(|(h, _, _)| *h)
        .filter(|h| *h != late)
        .collect();
    c.start_agents_on(&early);
    c.wait_done(t, &[CPS[0].0, CPS[1].0]);
    eprintln!("[{:>6.1}s] starting {late}", t.elapsed().as_secs_f64());
    c.start_agents_on(&[late]);
    let took = c.wait_assembled(t);
    let audit = c.assert_assembled();

    let cmds = c.commands(late);
    // The first join never finished (SIGKILLed: no outcome line), then a reset and a join.
    let first = cmds
        .iter()
        .position(|l| l == "join started")
        .unwrap_or_else(|| panic!("{late}: no join: {cmds:?}"));
    assert_eq!(
        cmds.get(first + 1).map(String::as_str),
        Some("reset started"),
        "{late}: the first join did not crash: {cmds:?}"
    );
    assert!(
        cmds.iter().skip(first).any(|l| l == "reset ok"),
        "{late}: {cmds:?}"
    );
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("join ok"),
        "{late}: {cmds:?}"
    );
    let s = c.status(late);
    let n = &s["thisNode"];
    assert!(n["failures"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    assert!(
        n["lastFailure"]["attempt"].as_u64().unwrap_or(0) >= 1,
        "{s:#}"
    );
    let err = n["lastFailure"]["error"].as_str().unwrap_or("");
    assert!(err.contains("join"), "{s:#}");
    eprintln!("{late} recovered from: {err}");
    let grants = audit
        .iter()
        .filter(|e| {
            e.subject == "cp-join"
                && e.event == AuditEvent::Granted
                && e.holder.as_deref() == Some(late_name)
        })
        .count();
    assert!(grants >= 2, "{late}: cp-join grants {grants}");
    // The stale member was removed (quorum held), not reused by the retried join.
    let log = std::fs::read_to_string(c.lab.dir().join(format!("{late}-agent.log"))).unwrap();
    assert!(
        log.contains("removing stale etcd member"),
        "{late} never removed its stale member"
    );
    assert!(
        !log.contains("the join reuses it"),
        "{late} could not remove its stale member"
    );
    eprintln!(
        "ASSEMBLY WALL TIME with a crashed third member: {:.1}s",
        took.as_secs_f64()
    );
    drop(c);
    assert!(
        netns::own_namespaces().is_empty(),
        "{:?}",
        netns::own_namespaces()
    );
}
