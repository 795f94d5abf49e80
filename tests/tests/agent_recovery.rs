#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! Control-plane recovery with real agents in namespaces: three control planes (no
//! workers) built by a real `muster build`, a real `muster rendezvous`, real etcd 3.4
//! members; kubeadm, the kubelet and the API server are the stand-ins (tests/README.md).
//!
//! The VIP is a static address on cp1, which is started first and initializes; cp2 and cp3
//! start once it is done (keepalived, as in `assembly.rs`, is not needed for what these
//! tests force). Each test asserts the end state through etcd itself and through
//! `nodeagent status` run in a node's namespace.
//!
//! - the FIRST control-plane join dies right after `etcdctl member add` (kubeadm ≥ v1.29
//!   adds a learner, which costs no vote): the stale learner is removed, the join retried,
//!   and the cluster ends with exactly the three planned voting members;
//! - the same with kubeadm v1.28 (plain member add, no learner mode): quorum is lost and
//!   the cluster cannot recover on its own — the known limit docs/testing.md describes —
//!   and `nodeagent status` says so (exit code 1, `etcdQuorumLost`);
//! - a re-imaged control plane (same name and address, wiped disk) whose old member is
//!   still in etcd: its agent removes the old member and joins again;
//! - a control plane whose PATH lacks `kubeadm` (an image built without Kubernetes) says
//!   `preflight failed: kubeadm not found …` through `nodeagent status` and `muster status`
//!   and never takes part in the election, while the other two assemble;
//! - k3s on an external SQL datastore that refuses connections: `nodeagent status` and
//!   `muster status` name the datastore as unreachable and show k3s's fatal line.
//!
//! Needs root, iproute2, etcd-server, etcd-client, util-linux, and the `muster` and
//! `nodeagent` binaries in `target/debug` (`cargo build --workspace --bins`).

use muster_lab::netns::{self, Daemon};
use muster_lab::scratch::ScratchLab as Lab;
use muster_standins::{STATE_DIR, daemon, etcd, kubeadm::COMMAND_LOG};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CPS: [(&str, &str, u8); 3] = [
    ("cp1", "rec-cp-1", 11),
    ("cp2", "rec-cp-2", 12),
    ("cp3", "rec-cp-3", 13),
];
const RENDEZVOUS_OCTET: u8 = 2;
const VIP_OCTET: u8 = 10;
const PATIENCE: Duration = Duration::from_secs(75);

fn bin(name: &str) -> PathBuf {
    muster_lab::standins::target_binary(name).unwrap()
}

fn spec(lab: &Lab) -> String {
    spec_with(lab, "kind: kubeadm\n    version: \"v1.31.4\"", "")
}

/// k3s servers on an SQL datastore at the rendezvous host's port 3306, where nothing
/// listens.
fn k3s_sql_spec(lab: &Lab) -> String {
    let net = lab.subnet();
    spec_with(
        lab,
        "kind: k3s\n    version: \"v1.31.6+k3s1\"",
        &format!(
            "  datastore:\n    type: external-sql\n    endpoint: \"mysql://k3s:s3cret@tcp({net}.{RENDEZVOUS_OCTET}:3306)/k3s\"\n"
        ),
    )
}

fn spec_with(lab: &Lab, distribution: &str, datastore: &str) -> String {
    let net = lab.subnet();
    format!(
        "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: rec
spec:
  distribution:
    {distribution}
  topology:
    controlPlanes: 3
    workers: 0
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
{datastore}  rendezvous:
    url: \"https://{net}.{RENDEZVOUS_OCTET}:7443\"
  platform:
    type: vagrant
    provider: libvirt
    box: debian/bookworm64
"
    )
}

struct Rig {
    lab: Lab,
    build: PathBuf,
    /// Extra environment of every agent (and so of the stand-ins it runs).
    env: Vec<(&'static str, String)>,
    /// Agents by host, then the rendezvous (dropped last).
    agents: Vec<(String, Daemon)>,
    rendezvous: Option<Daemon>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, d) in self.agents.iter_mut().rev() {
            d.stop(Duration::from_secs(3));
        }
        if let Some(r) = &mut self.rendezvous {
            r.stop(Duration::from_secs(3));
        }
        if std::thread::panicking() {
            for (host, _, _) in CPS {
                let log = self.lab.dir().join(format!("{host}-agent.log"));
                if let Ok(t) = std::fs::read_to_string(&log) {
                    eprintln!("==== {host} agent log (last 30 lines)");
                    let lines: Vec<&str> = t.lines().collect();
                    for l in &lines[lines.len().saturating_sub(30)..] {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// The node's disk as the image and cloud-init leave it: the payload, then every
/// `write_files` entry of its user-data.
fn image_disk(build: &Path, name: &str, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root).unwrap();
    let st = Command::new("tar")
        .arg("xzf")
        .arg(build.join("payload.tar.gz"))
        .arg("-C")
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(build.join("nodes").join(name).join("user-data")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for f in doc["write_files"].as_sequence().expect("write_files") {
        let dst = root.join(f["path"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(&dst, f["content"].as_str().unwrap()).unwrap();
        let mode = u32::from_str_radix(f["permissions"].as_str().unwrap_or("0644"), 8).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/kubernetes/manifests")).unwrap();
}

impl Rig {
    /// Lab, `muster build`, node disks, the rendezvous and the static VIP on cp1.
    fn new(tag: &str, env: Vec<(&'static str, String)>) -> Rig {
        Rig::with_spec(tag, env, spec)
    }

    fn with_spec(tag: &str, env: Vec<(&'static str, String)>, spec: fn(&Lab) -> String) -> Rig {
        let standins = muster_lab::standins::target_bin_dir();
        let standins = standins.as_path();
        let hosts: Vec<(&str, u8)> = CPS.iter().map(|(h, _, o)| (*h, *o)).collect();
        let lab = Lab::new(tag, standins, &hosts).unwrap();
        let build = lab.dir().join("build");
        let spec_path = lab.dir().join("cluster.yaml");
        std::fs::write(&spec_path, spec(&lab)).unwrap();
        let out = Command::new(bin("muster"))
            .arg("build")
            .arg(&spec_path)
            .arg("--out")
            .arg(&build)
            .arg("--agent-bin")
            .arg(bin("nodeagent"))
            .arg("--artifacts")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/artifacts"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "muster build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (host, name, _) in CPS {
            image_disk(&build, name, &lab.root(host));
        }
        let rdv_ip = lab.bridge_addr(RENDEZVOUS_OCTET).unwrap();
        let file = |f: &str| build.join(f).display().to_string();
        let data = lab.dir().join("rendezvous").display().to_string();
        let listen = format!("{rdv_ip}:7443");
        let muster = bin("muster");
        let args = [
            muster.to_str().unwrap(),
            "rendezvous",
            "--listen",
            &listen,
            "--data",
            &data,
            "--keys",
            &file("rendezvous-keys"),
            "--cert",
            &file("rendezvous.crt"),
            "--key",
            &file("rendezvous.key"),
        ];
        let log = lab.dir().join("rendezvous.log");
        let rendezvous = lab
            .spawn_in("rendezvous", &lab.bridge_ns(), &[], &args, &log)
            .unwrap();
        netns::must(
            "ip",
            &[
                "-n",
                &lab.ns("cp1"),
                "addr",
                "add",
                &format!("{}/32", lab.ip(VIP_OCTET)),
                "dev",
                "eth0",
            ],
        )
        .unwrap();
        Rig {
            lab,
            build,
            env,
            agents: Vec::new(),
            rendezvous: Some(rendezvous),
        }
    }

    fn name(host: &str) -> &'static str {
        CPS.iter().find(|(h, _, _)| *h == host).unwrap().1
    }

    /// Starts `host`'s agent as its image boots it: the payload's `nodeagent`, in the
    /// node's namespace with its hostname, the stand-ins first on PATH.
    fn start(&mut self, host: &str) {
        self.start_with(host, &[]);
    }

    /// `start` with extra environment for this agent only (e.g. another PATH).
    fn start_with(&mut self, host: &str, extra: &[(&'static str, String)]) {
        let root = self.lab.root(host);
        let script = format!(
            "hostname {} && exec {} run --lab --root {}",
            Rig::name(host),
            root.join("usr/bin/nodeagent").display(),
            root.display()
        );
        let mut env = vec![
            ("MUSTER_NODE_ROOT", root.display().to_string()),
            ("NODEAGENT_LOG", "info".to_string()),
            // Plain `key=value` lines (no colours) that the tests search.
            ("NODEAGENT_LOG_FORMAT", "journald".to_string()),
        ];
        env.extend(self.env.iter().cloned());
        env.extend(extra.iter().cloned());
        let d = self
            .lab
            .spawn_in(
                &format!("{host}/nodeagent"),
                &self.lab.ns(host),
                &env,
                &["unshare", "--uts", "sh", "-c", &script],
                &self.lab.dir().join(format!("{host}-agent.log")),
            )
            .unwrap();
        self.agents.push((host.to_string(), d));
    }

    /// `nodeagent status --json` in the node's namespace, and its exit code.
    fn status(&self, host: &str) -> (serde_json::Value, i32) {
        let out = Command::new("ip")
            .args(["netns", "exec"])
            .arg(self.lab.ns(host))
            .arg(bin("nodeagent"))
            .args(["status", "--json", "--root"])
            .arg(self.lab.root(host))
            .output()
            .unwrap();
        (
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            out.status.code().unwrap_or(-1),
        )
    }

    /// `muster status --json` from `host`'s namespace (the rendezvous is on the lab bridge).
    fn muster_status(&self, host: &str) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec"])
            .arg(self.lab.ns(host))
            .arg(bin("muster"))
            .args(["status", "--json", "--out"])
            .arg(&self.build)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "muster status --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits (up to `PATIENCE`) until `muster status --json` run on `host` satisfies `done`:
    /// that view is the rendezvous's, one report behind a node's own state file.
    fn wait_muster_status(
        &self,
        host: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let what = format!("muster status on {host}: not {what}");
        poll_until(&what, || self.muster_status(host), done)
    }

    /// Waits (up to `PATIENCE`) until `host`'s `nodeagent status --json` satisfies `done`.
    fn wait_status(
        &self,
        host: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let what = format!("{host}: not {what}");
        poll_until(&what, || self.status(host).0, done)
    }

    fn phase(&self, host: &str) -> String {
        let s = std::fs::read_to_string(
            self.lab
                .root(host)
                .join(model::node_files::AGENT_STATE.trim_start_matches('/')),
        )
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .unwrap_or_default();
        let p = s["state"]["phase"].as_str().unwrap_or("-").to_string();
        match s["state"]["attempt"].as_u64() {
            Some(a) if a > 0 => format!("{p}#{a}"),
            _ => p,
        }
    }

    /// Waits until every host in `which` is done, printing phase changes.
    fn wait_done(&mut self, t0: Instant, which: &[&str]) {
        let mut last = String::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line: Vec<String> = CPS
                .iter()
                .map(|(h, _, _)| format!("{h}={}", self.phase(h)))
                .collect();
            let line = line.join(" ");
            if line != last {
                eprintln!("[{:>5.1}s] {line}", t0.elapsed().as_secs_f64());
                last.clone_from(&line);
            }
            if which.iter().all(|h| self.phase(h) == "done") {
                return;
            }
            for (_, d) in &mut self.agents {
                if let Some(st) = d.exited() {
                    panic!("{} exited early: {st}", d.name);
                }
            }
            assert!(
                Instant::now() < deadline,
                "not done within {PATIENCE:?}: {line}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn commands(&self, host: &str) -> Vec<String> {
        std::fs::read_to_string(self.lab.root(host).join(STATE_DIR).join(COMMAND_LOG))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    fn agent_log(&self, host: &str) -> String {
        std::fs::read_to_string(self.lab.dir().join(format!("{host}-agent.log"))).unwrap()
    }

    fn knob(&self, host: &str, text: &str) {
        self.lab
            .write(host, &format!("{STATE_DIR}/knobs"), text)
            .unwrap();
    }

    /// cp1 alone first (it initializes: the VIP is its address), then `rest`.
    fn assemble(&mut self, rest: &[&str]) -> Instant {
        let t0 = Instant::now();
        self.start("cp1");
        self.wait_done(t0, &["cp1"]);
        for h in rest {
            self.start(h);
        }
        t0
    }

    /// etcd has exactly the three planned members, all started voters, all healthy; and
    /// `nodeagent status` on cp1 (live) and on `reported_on` (from the reports) say so.
    fn assert_three_voters(&self, reported_on: &str) {
        let members = etcd_members(&self.lab, "cp1");
        let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        let planned: Vec<&str> = CPS.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(names, planned, "{members:?}");
        assert!(
            members.iter().all(|m| m.started() && !m.learner),
            "{members:?}"
        );
        for (_, _, octet) in CPS {
            let peer = format!("https://{}:2380", self.lab.ip(octet));
            assert!(members.iter().any(|m| m.peer_urls.contains(&peer)));
        }
        let health = self
            .lab
            .etcdctl("cp1", &["endpoint", "health", "--cluster"])
            .unwrap();
        assert!(health.ok(), "{}", health.all());

        let (s, code) = self.status("cp1");
        assert_eq!(code, 0, "{s:#}");
        let live = &s["localEtcd"]["view"];
        assert_eq!(live["source"], "live", "{s:#}");
        assert_eq!(live["quorum"]["voting"], 3, "{s:#}");
        assert_eq!(live["quorum"]["healthyVoting"], 3, "{s:#}");
        assert_eq!(live["quorum"]["learners"], 0, "{s:#}");
        assert_eq!(live["quorum"]["failuresTolerated"], 1, "{s:#}");
        assert_eq!(s["etcdQuorumLost"], false);
        // Another node sees a control plane's reported view through the rendezvous.
        let (s, code) = self.status(reported_on);
        assert_eq!(code, 0, "{s:#}");
        let rep = &s["cluster"]["etcd"];
        assert_eq!(rep["source"], "reported", "{s:#}");
        assert!(rep["quorum"]["hasQuorum"] == true, "{s:#}");
        assert!(rep["ageSeconds"].as_u64().unwrap() < 90, "{s:#}");
    }
}

#[test]
fn the_first_control_plane_join_dying_after_member_add_is_recovered() {
    let mut r = Rig::new("first", Vec::new());
    // Both joiners die right after their first `member add` (once per node root): the one
    // that gets the join slot first leaves a learner next to the single voter.
    for h in ["cp2", "cp3"] {
        r.knob(h, "crash_at=after-member-add\n");
    }
    let t0 = r.assemble(&["cp2", "cp3"]);
    r.wait_done(t0, &["cp1", "cp2", "cp3"]);
    eprintln!("assembled in {:.1}s", t0.elapsed().as_secs_f64());
    r.assert_three_voters("cp2");
    for h in ["cp2", "cp3"] {
        let cmds = r.commands(h);
        let first = cmds.iter().position(|l| l == "join started").unwrap();
        assert_eq!(
            cmds.get(first + 1).map(String::as_str),
            Some("reset started"),
            "{h}: the first join did not die: {cmds:?}"
        );
        assert_eq!(cmds.last().map(String::as_str), Some("join ok"), "{h}");
        let log = r.agent_log(h);
        assert!(
            log.contains("removing stale etcd member") && log.contains("learner=true"),
            "{h} never removed its stale learner"
        );
    }
    // cp1 initialized once and never had to undo anything.
    let cmds = r.commands("cp1");
    assert_eq!(cmds.iter().filter(|l| *l == "init started").count(), 1);
    let init = cmds.iter().position(|l| l == "init ok").unwrap();
    assert!(
        !cmds[init..].iter().any(|l| l.starts_with("reset")),
        "{cmds:?}"
    );
}

#[test]
fn without_learner_mode_a_dead_second_member_costs_the_quorum_and_status_says_so() {
    // kubeadm v1.28 without the EtcdLearnerMode gate (muster bakes it for v1.28; a config
    // made without it, by hand or by an older muster, is the known limit): `member add`
    // adds a voting member. The spec pins v1.28 so the node's preflight finds the version
    // it expects; the gate is taken out of the baked templates.
    let mut r = Rig::with_spec("nolearner", Vec::new(), |lab| {
        spec_with(lab, "kind: kubeadm\n    version: \"v1.28.15\"", "")
    });
    for (host, name, _) in CPS {
        let tree = r.lab.root(host).join("usr/lib/muster/nodes").join(name);
        for t in [
            "etc/muster/kubeadm/init.yaml",
            "etc/muster/kubeadm/join.yaml",
        ] {
            let f = tree.join(t);
            if let Ok(text) = std::fs::read_to_string(&f) {
                let without = text.replace("featureGates:\n  EtcdLearnerMode: true\n", "");
                std::fs::write(&f, without).unwrap();
            }
        }
        let init = tree.join("etc/muster/kubeadm/init.yaml");
        if let Ok(text) = std::fs::read_to_string(&init) {
            assert!(
                !text.contains("EtcdLearnerMode"),
                "{host}: gate left in {text}"
            );
        }
    }
    r.knob("cp2", "crash_at=after-member-add\n");
    let t0 = r.assemble(&["cp2"]);
    netns::wait_until(
        "cp2's first join to die",
        PATIENCE,
        Duration::from_millis(500),
        || {
            // The reset that compensates the join (cleaning resets before a join, too).
            let c = r.commands("cp2");
            c.iter()
                .position(|l| l == "join started")
                .is_some_and(|j| c[j..].iter().any(|l| l == "reset started"))
        },
    )
    .unwrap();
    eprintln!(
        "cp2 died after member add at {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let members = etcd_members(&r.lab, "cp1");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|m| !m.learner), "{members:?}");
    // The truth from cp1 (its daemon stopped: `status` works without it).
    r.agents.retain_mut(|(h, d)| {
        if h == "cp1" {
            d.stop(Duration::from_secs(3));
        }
        h != "cp1"
    });
    let (s, code) = r.status("cp1");
    assert_eq!(code, 1, "{s:#}");
    assert_eq!(s["thisNode"]["phase"], "done", "{s:#}");
    assert_eq!(s["etcdQuorumLost"], true, "{s:#}");
    let q = &s["localEtcd"]["view"]["quorum"];
    assert_eq!(
        (q["voting"].as_u64(), q["healthyVoting"].as_u64()),
        // etcd's own `/health` is false on every member once the quorum is gone.
        (Some(2), Some(0)),
        "{s:#}"
    );
    assert_eq!(q["hasQuorum"], false, "{s:#}");
    let text = Command::new("ip")
        .args(["netns", "exec"])
        .arg(r.lab.ns("cp1"))
        .arg(bin("nodeagent"))
        .args(["status", "--root"])
        .arg(r.lab.root("cp1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("LOST") && text.contains("(unstarted)"),
        "{text}"
    );
    assert!(
        text.ends_with("not healthy: etcd has lost its quorum\n"),
        "{text}"
    );
}

#[test]
fn a_reimaged_control_plane_replaces_its_old_member() {
    let mut r = Rig::new("reimage", Vec::new());
    let t0 = r.assemble(&["cp2", "cp3"]);
    r.wait_done(t0, &["cp1", "cp2", "cp3"]);
    let old = etcd_members(&r.lab, "cp1");
    let old_id = old.iter().find(|m| m.name == Rig::name("cp3")).unwrap().id;

    // cp3 dies and comes back from its image: same name and address, empty disk.
    eprintln!("[{:>5.1}s] re-imaging cp3", t0.elapsed().as_secs_f64());
    r.agents.retain_mut(|(h, d)| {
        if h == "cp3" {
            d.stop(Duration::from_secs(3));
        }
        h != "cp3"
    });
    let root3 = r.lab.node_root("cp3");
    for d in [muster_standins::api::DAEMON, "etcd"] {
        daemon::stop(&root3, d, Duration::from_secs(5)).unwrap();
    }
    std::fs::remove_dir_all(r.lab.root("cp3")).unwrap();
    image_disk(&r.build, Rig::name("cp3"), &r.lab.root("cp3"));
    let members = etcd_members(&r.lab, "cp1");
    assert!(
        members.iter().any(|m| m.id == old_id),
        "the old member is still there: {members:?}"
    );
    r.start("cp3");
    r.wait_done(t0, &["cp3"]);
    eprintln!("[{:>5.1}s] cp3 rejoined", t0.elapsed().as_secs_f64());
    r.assert_three_voters("cp2");
    let members = etcd_members(&r.lab, "cp1");
    assert!(
        !members.iter().any(|m| m.id == old_id),
        "the old member was not replaced: {members:?}"
    );
    let log = r.agent_log("cp3");
    assert!(
        log.contains("removing stale etcd member") && log.contains(&format!("id={old_id}")),
        "cp3 never removed its old member"
    );
    assert_eq!(
        r.commands("cp3"),
        ["reset started", "reset ok", "join started", "join ok"]
    );
}

#[test]
fn a_node_without_kubeadm_says_so_and_the_rest_assembles() {
    let mut rig = Rig::new("rec-nokubeadm", Vec::new());
    let t0 = rig.assemble(&["cp2"]);
    // The image without Kubernetes: the host's own PATH, no stand-ins on it.
    let bare = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    assert!(
        !std::env::split_paths(&bare).any(|d| d.join("kubeadm").exists()),
        "this test needs a host without a real kubeadm on PATH"
    );
    rig.start_with("cp3", &[("PATH", bare)]);
    rig.wait_done(t0, &["cp1", "cp2"]);
    let want = "preflight failed: kubeadm not found (image built without Kubernetes?)";
    let s = rig.wait_status("cp3", "failing its preflight", |s| {
        s["thisNode"]["lastError"].as_str() == Some(want)
    });
    assert_ne!(s["thisNode"]["phase"], "done", "{s:#}");
    // The rendezvous's view: cp3's row names the failure; cp1 and cp2 are done there
    // once their last reports arrive (a node's state file is one report ahead).
    let done_rows = |m: &serde_json::Value| -> Vec<String> {
        m["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["done"] == true)
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    };
    let m = rig.wait_muster_status("cp1", "showing cp1 and cp2 done and cp3's failure", |m| {
        status_row(m, "cp3")["lastError"].as_str() == Some(want)
            && done_rows(m) == [Rig::name("cp1"), Rig::name("cp2")]
    });
    assert_ne!(status_row(&m, "cp3")["phase"], "done", "{m:#}");
    // It never stood for election nor joined: not one kubeadm command ran there.
    assert!(rig.commands("cp3").is_empty(), "{:?}", rig.commands("cp3"));
    let log = rig.agent_log("cp3");
    assert!(
        !log.contains("to=electing") && !log.contains("to=initializing"),
        "{log}"
    );
}

#[test]
fn an_unreachable_sql_datastore_is_named_with_k3s_fatal_line() {
    // The stand-in's patience for its datastore cut to 2 s (real k3s exits at once).
    let env = vec![("MUSTER_STANDIN_DATASTORE_PATIENCE_MS", "2000".to_string())];
    let mut rig = Rig::with_spec("rec-sqldown", env, k3s_sql_spec);
    rig.start("cp1");
    let datastore = format!("{}.{RENDEZVOUS_OCTET}:3306", rig.lab.subnet());
    let s = rig.wait_status("cp1", "naming the datastore and k3s's fatal line", |s| {
        let n = &s["thisNode"];
        let named = n["unreachable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["what"] == "datastore"));
        let fatal = n["reason"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("datastore"));
        named && fatal
    });
    let n = &s["thisNode"];
    let u = n["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["what"] == "datastore")
        .unwrap();
    assert_eq!(u["endpoint"].as_str(), Some(datastore.as_str()), "{s:#}");
    assert_eq!(u["error"], "connection refused", "{s:#}");
    assert_eq!(n["reason"]["source"], "k3s.service log", "{s:#}");
    // The text form says it in one line, as the issue asks.
    let out = Command::new("ip")
        .args(["netns", "exec"])
        .arg(rig.lab.ns("cp1"))
        .arg(bin("nodeagent"))
        .args(["status", "--root"])
        .arg(rig.lab.root("cp1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "datastore {datastore} unreachable: connection refused"
        )),
        "{text}"
    );
    assert!(
        text.contains("distribution says: k3s.service log: "),
        "{text}"
    );
    // And the operator's view from the rendezvous, once the report carrying it is there.
    rig.wait_muster_status("cp1", "naming the datastore and k3s's fatal line", |m| {
        let row = status_row(m, "cp1");
        let named = row["unreachable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["endpoint"] == datastore.as_str()));
        let fatal = row["reason"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("datastore"));
        named && fatal
    });
}

/// `host`'s row in `muster status --json` (`Null` while the rendezvous has none).
fn status_row(m: &serde_json::Value, host: &str) -> serde_json::Value {
    m["nodes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|n| n["name"] == Rig::name(host)))
        .cloned()
        .unwrap_or_default()
}

/// Reads every 500 ms until `done` holds (and returns that reading) or `PATIENCE` runs out.
fn poll_until(
    what: &str,
    read: impl Fn() -> serde_json::Value,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = read();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {PATIENCE:?}; last: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `etcdctl member list` through the host's local member.
fn etcd_members(lab: &Lab, host: &str) -> Vec<etcd::Member> {
    let out = lab
        .etcdctl(host, &["member", "list", "-w", "json"])
        .unwrap();
    assert!(out.ok(), "member list on {host}: {}", out.all());
    etcd::parse_member_list(&out.stdout).unwrap()
}
