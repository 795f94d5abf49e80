#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
//! The stand-ins in a namespace lab: real etcd members, real TLS, real quorum.
//! Needs root, iproute2, etcd-server and etcd-client (scripts/install-test-deps.sh).
//! The lab itself (namespaces, cleanup) is the builder's `muster_lab::scratch`.

use muster_lab::netns::{self, Daemon, Out};
use muster_lab::scratch::ScratchLab as Lab;
use muster_standins::{daemon, etcd, pki};
use std::path::Path;
use std::time::Duration;

/// The objects the real-kubectl checks apply: a namespace, a ConfigMap and a CRD, then a
/// custom resource of it (shared with the lab assembly test).
const KUBECTL_DEMO_BASE: &str = include_str!("../../fixtures/kubectl-demo/base.yaml");
const KUBECTL_DEMO_CR: &str = include_str!("../../fixtures/kubectl-demo/cr.yaml");

fn must(cmd: &str, args: &[&str]) {
    netns::must(cmd, args).unwrap();
}

fn new_lab(tag: &str, hosts: &[(&str, u8)]) -> Lab {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubeadm-standin"))
        .parent()
        .unwrap();
    Lab::new(tag, bin_dir, hosts).unwrap()
}

/// The test-side conveniences: panic instead of returning errors.
trait LabExt {
    fn run(&self, host: &str, env: &[(&str, &str)], program: &str, args: &[&str]) -> Out;
    fn kubeadm(&self, host: &str, env: &[(&str, &str)], args: &[&str]) -> Out;
    fn put(&self, host: &str, rel: &str, text: &str) -> String;
    fn members_of(&self, host: &str) -> Vec<etcd::Member>;
    fn ctl(&self, host: &str, args: &[&str]) -> Out;
    fn api(&self, host: &str, verb: &str, path: &str, data: Option<&str>) -> Out;
    fn start(&self, host: &str, program: &str, args: &[&str]) -> Daemon;
    fn k3s_api(&self, host: &str, path: &str) -> Out;
    fn k3s_members(&self, host: &str) -> Vec<etcd::Member>;
}

impl LabExt for Lab {
    fn run(&self, host: &str, env: &[(&str, &str)], program: &str, args: &[&str]) -> Out {
        self.exec(host, env, program, args).unwrap()
    }

    fn kubeadm(&self, host: &str, env: &[(&str, &str)], args: &[&str]) -> Out {
        self.run(host, env, "kubeadm", args)
    }

    fn put(&self, host: &str, rel: &str, text: &str) -> String {
        self.write(host, rel, text).unwrap()
    }

    fn members_of(&self, host: &str) -> Vec<etcd::Member> {
        let out = self.ctl(host, &["member", "list", "-w", "json"]);
        assert!(out.ok(), "member list on {host}: {}", out.all());
        etcd::parse_member_list(&out.stdout).unwrap()
    }

    fn ctl(&self, host: &str, args: &[&str]) -> Out {
        self.etcdctl(host, args).unwrap()
    }

    /// `apiserver-standin VERB PATH` with the host's admin.conf (through its server URL).
    fn api(&self, host: &str, verb: &str, path: &str, data: Option<&str>) -> Out {
        let kc = self
            .root(host)
            .join("etc/kubernetes/admin.conf")
            .display()
            .to_string();
        let mut args = vec![verb, path, "--kubeconfig", &kc, "--timeout-secs", "8"];
        if let Some(d) = data {
            args.extend(["--data", d]);
        }
        self.run(host, &[], "apiserver-standin", &args)
    }

    fn start(&self, host: &str, program: &str, args: &[&str]) -> Daemon {
        self.spawn(host, program, args).unwrap()
    }

    fn k3s_api(&self, host: &str, path: &str) -> Out {
        let kc = self
            .root(host)
            .join("etc/rancher/k3s/k3s.yaml")
            .display()
            .to_string();
        self.run(
            host,
            &[],
            "apiserver-standin",
            &["get", path, "--kubeconfig", &kc, "--timeout-secs", "8"],
        )
    }

    fn k3s_members(&self, host: &str) -> Vec<etcd::Member> {
        let e = self.root(host).join("var/lib/rancher/k3s/server/tls/etcd");
        let out = self.run(
            host,
            &[("ETCDCTL_API", "3")],
            "etcdctl",
            &[
                "--endpoints=https://127.0.0.1:2379",
                &format!("--cacert={}", e.join("server-ca.crt").display()),
                &format!("--cert={}", e.join("client.crt").display()),
                &format!("--key={}", e.join("client.key").display()),
                "member",
                "list",
                "-w",
                "json",
            ],
        );
        assert!(out.ok(), "{}", out.all());
        etcd::parse_member_list(&out.stdout).unwrap()
    }
}

fn wait_until(what: &str, patience: Duration, f: impl FnMut() -> bool) {
    netns::wait_until(what, patience, Duration::from_millis(500), f).unwrap();
}

/// Waits for `f` while `daemon` runs; on its exit or on timeout, fails with its log's tail
/// (under CI load the interesting line is in that log, not in the poll's last error).
fn wait_on(daemon: &mut Daemon, what: &str, patience: Duration, mut f: impl FnMut() -> bool) {
    let mut exited = None;
    let r = netns::wait_until(what, patience, Duration::from_millis(500), || {
        exited = daemon.exited();
        exited.is_some() || f()
    });
    if r.is_err() || exited.is_some() {
        panic!(
            "{what}: {} ({:?}); last lines of {}:\n{}",
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            exited,
            daemon.log.display(),
            daemon.log_tail(40)
        );
    }
}

fn word_after<'a>(text: &'a str, flag: &str) -> &'a str {
    let i = text
        .find(flag)
        .unwrap_or_else(|| panic!("{flag} not in output:\n{text}"));
    text[i + flag.len()..].split_whitespace().next().unwrap()
}

fn init_config(lab: &Lab, vip: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 24h0m0s
localAPIEndpoint:
  advertiseAddress: {cp1}
  bindPort: 6443
nodeRegistration:
  name: cp1
  kubeletExtraArgs:
  - name: node-ip
    value: {cp1}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.4
controlPlaneEndpoint: {vip}:6443
apiServer:
  certSANs: [{vip}, k8s.muster.lab]
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
",
        cp1 = lab.ip(11)
    )
}

fn join_config(vip: &str, token: &str, hash: &str, name: &str, cp: Option<(&str, &str)>) -> String {
    let mut s = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {vip}:6443
    token: {token}
    caCertHashes: [\"{hash}\"]
nodeRegistration:
  name: {name}
"
    );
    if let Some((addr, key)) = cp {
        s.push_str(&format!(
            "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {addr}\n    bindPort: 6443\n  certificateKey: {key}\n"
        ));
    }
    s
}

#[test]
fn kubeadm_standin_ha_lifecycle() {
    let lab = new_lab("kadm", &[("cp1", 11), ("cp2", 12), ("cp3", 13), ("w1", 21)]);
    let vip = lab.ip(10);
    // A static VIP on cp1 (no keepalived here): joins go through it, like through kube-vip.
    must(
        "ip",
        &[
            "-n",
            &lab.ns("cp1"),
            "addr",
            "add",
            &format!("{vip}/32"),
            "dev",
            "eth0",
        ],
    );

    // ---- init on cp1
    let cfg = lab.put("cp1", "etc/muster/kubeadm.yaml", &init_config(&lab, &vip));
    let out = lab.kubeadm("cp1", &[], &["init", "--config", &cfg, "--upload-certs"]);
    assert!(out.ok(), "init failed: {}", out.all());
    assert!(
        out.stdout
            .contains("You can now join any number of control-plane nodes")
    );
    let token = word_after(&out.stdout, "--token ").to_string();
    let hash = word_after(&out.stdout, "--discovery-token-ca-cert-hash ").to_string();
    let key = word_after(&out.stdout, "--certificate-key ").to_string();
    assert_eq!(token, "abcdef.0123456789abcdef");
    assert!(hash.starts_with("sha256:"));
    let cp1_pki = lab.root("cp1").join("etc/kubernetes/pki");
    for f in [
        "ca.crt",
        "ca.key",
        "etcd/ca.crt",
        "etcd/server.crt",
        "etcd/peer.key",
        "etcd/healthcheck-client.crt",
        "apiserver.crt",
        "sa.key",
    ] {
        assert!(cp1_pki.join(f).exists(), "{f} missing");
    }
    assert!(
        lab.root("cp1")
            .join("etc/kubernetes/super-admin.conf")
            .exists()
    );
    assert!(
        lab.root("cp1")
            .join("etc/kubernetes/manifests/etcd.yaml")
            .exists()
    );

    // ---- cp2 joins late: the uploaded certs look expired, as kubeadm reports it
    let late = [("MUSTER_STANDIN_CLOCK_OFFSET", "3h")];
    let cfg2 = lab.put(
        "cp2",
        "etc/muster/join.yaml",
        &join_config(&vip, &token, &hash, "cp2", Some((&lab.ip(12), &key))),
    );
    let out = lab.kubeadm("cp2", &late, &["join", "--config", &cfg2]);
    assert!(!out.ok());
    assert!(
        out.stderr
            .contains("error execution phase control-plane-prepare/download-certs")
            && out.stderr.contains("This Secret might have expired")
            && out
                .stderr
                .contains("kubeadm init phase upload-certs --upload-certs"),
        "{}",
        out.stderr
    );
    // A control plane re-uploads (at the same late time) and the join succeeds.
    let out = lab.kubeadm(
        "cp1",
        &late,
        &["init", "phase", "upload-certs", "--upload-certs"],
    );
    assert!(out.ok(), "{}", out.all());
    let key2 = out
        .stdout
        .lines()
        .skip_while(|l| !l.contains("Using certificate key"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(key2, key);
    let cfg2 = lab.put(
        "cp2",
        "etc/muster/join.yaml",
        &join_config(&vip, &token, &hash, "cp2", Some((&lab.ip(12), &key2))),
    );
    let out = lab.kubeadm("cp2", &late, &["join", "--config", &cfg2]);
    assert!(out.ok(), "cp2 join: {}", out.all());
    assert!(
        out.stdout
            .contains("a new control plane instance was created")
    );

    // ---- cp3 crashes after `member add`: a stale, unstarted member stays (kubeadm#2095)
    let cfg3 = lab.put(
        "cp3",
        "etc/muster/join.yaml",
        &join_config(&vip, &token, &hash, "cp3", Some((&lab.ip(13), &key2))),
    );
    let out = lab.kubeadm(
        "cp3",
        &[("MUSTER_STANDIN_CRASH_AT", "after-member-add")],
        &["join", "--config", &cfg3],
    );
    assert!(!out.ok(), "the crash knob did not fire");
    let members = lab.members_of("cp1");
    assert_eq!(members.len(), 3, "{members:?}");
    let stale: Vec<_> = members.iter().filter(|m| !m.started()).collect();
    assert_eq!(stale.len(), 1, "{members:?}");
    assert_eq!(
        stale[0].peer_urls,
        vec![format!("https://{}:2380", lab.ip(13))]
    );
    // kubeadm v1.31 (the stand-in's default version) adds members as learners: the stale
    // one costs no vote, so the cluster keeps its quorum (writes still commit).
    assert!(stale[0].learner, "{members:?}");
    assert!(members.iter().filter(|m| m.started()).all(|m| !m.learner));
    let out = lab.ctl("cp1", &["endpoint", "health", "--cluster"]);
    assert!(out.all().contains("is healthy"), "{}", out.all());
    // What the agent does: remove the stale member, reset, restore kube-vip, join again.
    let out = lab.ctl("cp1", &["member", "remove", &format!("{:x}", stale[0].id)]);
    assert!(out.ok(), "{}", out.all());
    let out = lab.kubeadm("cp3", &[], &["reset", "-f"]);
    assert!(out.ok(), "{}", out.all());
    lab.put(
        "cp3",
        "etc/kubernetes/manifests/kube-vip.yaml",
        "# kube-vip (restored by the agent)\n",
    );
    let out = lab.kubeadm("cp3", &[], &["join", "--config", &cfg3]);
    assert!(
        !out.ok()
            && out
                .stderr
                .contains("[ERROR DirAvailable--etc-kubernetes-manifests]"),
        "{}",
        out.all()
    );
    let out = lab.kubeadm(
        "cp3",
        &[],
        &[
            "join",
            "--config",
            &cfg3,
            "--ignore-preflight-errors=DirAvailable--etc-kubernetes-manifests",
        ],
    );
    assert!(out.ok(), "cp3 join: {}", out.all());

    // ---- exactly three started, healthy members; the VIP in every apiserver cert
    let members = lab.members_of("cp2");
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| m.started()), "{members:?}");
    let mut names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3"]);
    let out = lab.ctl("cp1", &["endpoint", "health", "--cluster"]);
    assert!(out.ok(), "{}", out.all());
    for host in ["cp1", "cp2", "cp3"] {
        let cert = std::fs::read_to_string(lab.root(host).join("etc/kubernetes/pki/apiserver.crt"))
            .unwrap();
        let sans = pki::cert_sans(&cert).unwrap();
        for want in [
            vip.as_str(),
            "k8s.muster.lab",
            "127.0.0.1",
            "kubernetes.default.svc",
        ] {
            assert!(
                sans.iter().any(|s| s == want),
                "{host} apiserver cert lacks {want}: {sans:?}"
            );
        }
        assert!(sans.contains(&lab.ip(match host {
            "cp1" => 11,
            "cp2" => 12,
            _ => 13,
        })));
    }

    // ---- a worker joins (flag form, as kubeadm prints it) and is registered
    let out = lab.kubeadm(
        "w1",
        &[],
        &[
            "join",
            &format!("{vip}:6443"),
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &hash,
            "--node-name",
            "w1",
        ],
    );
    assert!(out.ok(), "worker join: {}", out.all());
    assert!(lab.root("w1").join("etc/kubernetes/kubelet.conf").exists());
    let out = lab.api("cp2", "get", "/api/v1/nodes/w1", None);
    assert!(out.ok() && out.stdout.contains("\"w1\""), "{}", out.all());
    // A wrong CA pin is refused like kubeadm does.
    let bad = format!("sha256:{}", "0".repeat(64));
    let out = lab.kubeadm(
        "w1",
        &[],
        &[
            "join",
            &format!("{vip}:6443"),
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &bad,
            "--ignore-preflight-errors=all",
        ],
    );
    assert!(
        !out.ok() && out.stderr.contains("none of the public keys"),
        "{}",
        out.all()
    );

    // ---- token create prints a join command
    let out = lab.kubeadm(
        "cp1",
        &[],
        &["token", "create", "--ttl", "2h", "--print-join-command"],
    );
    assert!(
        out.ok()
            && out
                .stdout
                .starts_with(&format!("kubeadm join {vip}:6443 --token ")),
        "{}",
        out.all()
    );

    // ---- quorum: two of three etcd down -> readyz and writes fail; one back -> recovers
    let cm = r#"{"metadata":{"name":"rehearsal-1"},"data":{"k":"v"}}"#;
    let out = lab.api(
        "cp1",
        "post",
        "/api/v1/namespaces/default/configmaps",
        Some(cm),
    );
    assert!(out.ok(), "{}", out.all());
    for host in ["cp2", "cp3"] {
        assert!(daemon::stop(&lab.node_root(host), "etcd", Duration::from_secs(3)).unwrap());
    }
    let out = lab.api("cp1", "get", "/readyz", None);
    assert!(
        !out.ok(),
        "readyz should fail without quorum: {}",
        out.all()
    );
    let cm2 = r#"{"metadata":{"name":"rehearsal-2"},"data":{"k":"v"}}"#;
    let out = lab.api(
        "cp1",
        "post",
        "/api/v1/namespaces/default/configmaps",
        Some(cm2),
    );
    assert!(
        !out.ok(),
        "a write without quorum should fail: {}",
        out.all()
    );
    let out = lab.run("cp2", &[], "kubeadm", &["kubelet-sync"]);
    assert!(out.ok(), "{}", out.all());
    wait_until(
        "readyz after one member is back",
        Duration::from_secs(30),
        || lab.api("cp1", "get", "/readyz", None).ok(),
    );
    let out = lab.api(
        "cp1",
        "post",
        "/api/v1/namespaces/default/configmaps",
        Some(cm2),
    );
    assert!(out.ok(), "{}", out.all());

    // ---- reset wipes state and empties manifests
    lab.put(
        "cp3",
        "etc/kubernetes/manifests/kube-vip.yaml",
        "# kube-vip\n",
    );
    let out = lab.kubeadm("cp3", &[], &["reset", "-f"]);
    assert!(out.ok(), "{}", out.all());
    let r3 = lab.root("cp3");
    assert_eq!(
        std::fs::read_dir(r3.join("etc/kubernetes/manifests"))
            .unwrap()
            .count(),
        0
    );
    assert!(!r3.join("var/lib/etcd").exists());
    assert!(!r3.join("etc/kubernetes/admin.conf").exists());
    assert_eq!(
        std::fs::read_dir(r3.join("etc/kubernetes/pki"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    assert!(
        daemon::running_pid(&lab.node_root("cp3"), "kube-apiserver")
            .unwrap()
            .is_none()
    );
    assert!(
        daemon::running_pid(&lab.node_root("cp3"), "etcd")
            .unwrap()
            .is_none()
    );

    // ---- upgrade (issue 15): kubeadm's version policy against the cluster version kept
    // in the kubeadm-config ConfigMap; the kubeadm "package" is the stand-in at the
    // version MUSTER_STANDIN_K8S_VERSION names.
    let kubeadm_at = |v: &'static str| [("MUSTER_STANDIN_K8S_VERSION", v)];
    let out = lab.kubeadm("cp1", &kubeadm_at("v1.31.4"), &["upgrade", "plan"]);
    assert!(
        out.ok() && out.stdout.contains("Cluster version: v1.31.4"),
        "{}",
        out.all()
    );
    let out = lab.kubeadm(
        "cp1",
        &kubeadm_at("v1.33.0"),
        &["upgrade", "apply", "v1.33.0", "--yes"],
    );
    assert!(
        !out.ok()
            && out
                .stderr
                .contains("kubeadm can upgrade only 1 minor version at a time"),
        "{}",
        out.all()
    );
    let out = lab.kubeadm(
        "cp1",
        &kubeadm_at("v1.31.4"),
        &["upgrade", "apply", "v1.32.1", "--yes"],
    );
    assert!(
        !out.ok() && out.stderr.contains("Upgrade kubeadm first"),
        "{}",
        out.all()
    );
    let out = lab.kubeadm(
        "cp1",
        &kubeadm_at("v1.32.1"),
        &["upgrade", "apply", "v1.32.1", "--yes"],
    );
    assert!(
        out.ok()
            && out
                .stdout
                .contains("SUCCESS! Your cluster was upgraded to \"v1.32.1\""),
        "{}",
        out.all()
    );
    let out = lab.kubeadm("cp2", &kubeadm_at("v1.31.4"), &["upgrade", "node"]);
    assert!(
        !out.ok()
            && out
                .stderr
                .contains("older than the cluster version v1.32.1"),
        "{}",
        out.all()
    );
    let out = lab.kubeadm("cp2", &kubeadm_at("v1.32.1"), &["upgrade", "node"]);
    assert!(out.ok(), "{}", out.all());
    // kube-proxy (init's addon) followed the upgrade.
    let ds = lab.api(
        "cp1",
        "get",
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
        None,
    );
    assert!(
        ds.ok() && ds.stdout.contains("registry.k8s.io/kube-proxy:v1.32.1"),
        "{}",
        ds.all()
    );
}

#[test]
fn k3s_standin_server_join_agent() {
    let lab = new_lab("k3s", &[("s1", 31), ("s2", 32), ("a1", 41)]);
    let vip = lab.ip(30);
    must(
        "ip",
        &[
            "-n",
            &lab.ns("s1"),
            "addr",
            "add",
            &format!("{vip}/32"),
            "dev",
            "eth0",
        ],
    );
    lab.put("s1", "etc/rancher/k3s/config.yaml", &format!(
        "cluster-init: true\ntoken: lab-secret\ntls-san:\n  - {vip}\nnode-ip: {}\nnode-name: s1\n", lab.ip(31)));
    let mut s1 = lab.start("s1", "k3s", &["server"]);
    let token_file = lab.root("s1").join("var/lib/rancher/k3s/server/token");
    wait_on(&mut s1, "s1 ready", Duration::from_secs(120), || {
        lab.root("s1")
            .join("var/lib/rancher/k3s/server/db/.standin-ready")
            .exists()
            && lab.k3s_api("s1", "/readyz").ok()
            // Its Node is registered after the bootstrap token and data are stored; a
            // joining server that comes earlier is refused (401), as with the real k3s.
            && lab.k3s_api("s1", "/api/v1/nodes/s1").ok()
    });
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        token.starts_with("K10") && token.ends_with("::server:lab-secret"),
        "{token}"
    );
    let cert = std::fs::read_to_string(
        lab.root("s1")
            .join("var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt"),
    )
    .unwrap();
    assert!(pki::cert_sans(&cert).unwrap().contains(&vip));

    lab.put("s2", "etc/rancher/k3s/config.yaml", &format!(
        "server: https://{vip}:6443\ntoken: {token}\ntls-san: [{vip}]\nnode-ip: {}\nnode-name: s2\n", lab.ip(32)));
    let mut s2 = lab.start("s2", "k3s", &["server"]);
    // The stand-in's own bounds: member add 30 s, learner promotion 120 s (CI runs this next
    // to the kubeadm lifecycle test on 2 cores).
    wait_on(&mut s2, "s2 ready", Duration::from_secs(180), || {
        lab.k3s_api("s2", "/readyz").ok()
    });
    let members = lab.k3s_members("s1");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|m| m.started()), "{members:?}");

    let mut a1 = lab.start(
        "a1",
        "k3s",
        &[
            "agent",
            "--server",
            &format!("https://{vip}:6443"),
            "--token",
            &token,
            "--node-name",
            "a1",
        ],
    );
    wait_on(&mut a1, "a1 registered", Duration::from_secs(60), || {
        lab.k3s_api("s2", "/api/v1/nodes/a1").ok()
    });

    // A wrong CA hash in the token is refused.
    let bad = format!("K10{}::server:lab-secret", "0".repeat(64));
    let out = lab.run(
        "a1",
        &[],
        "k3s",
        &[
            "agent",
            "--server",
            &format!("https://{vip}:6443"),
            "--token",
            &bad,
            "--node-name",
            "a2",
        ],
    );
    assert!(
        !out.ok() && out.stderr.contains("CA certificate hash"),
        "{}",
        out.all()
    );

    // k3s-killall.sh on s2 stops its server and etcd; reset wipes the state.
    let out = lab.run("s2", &[], "k3s-killall.sh", &[]);
    assert!(out.ok(), "{}", out.all());
    assert!(
        daemon::running_pid(&lab.node_root("s2"), "k3s-etcd")
            .unwrap()
            .is_none()
    );
    let out = lab.run("s2", &[], "k3s", &["reset"]);
    assert!(out.ok(), "{}", out.all());
    assert!(!lab.root("s2").join("var/lib/rancher/k3s").exists());
    assert!(lab.root("s2").join("etc/rancher/k3s/config.yaml").exists());
}

/// The kubeadm stand-in's external-etcd mode against a REAL one-member etcd with TLS and
/// client-cert auth in its own namespace (the lab's PKI maker): init fails clearly while
/// etcd is unreachable, then succeeds without a local member; the API server stores in the
/// external etcd; `kubeadm reset` leaves that cluster alone.
#[test]
fn kubeadm_standin_on_an_external_etcd() {
    let lab = new_lab("kext", &[("cp1", 11), ("etcd1", 81)]);
    let vip = lab.ip(11);
    let etcd_ip: std::net::Ipv4Addr = lab.ip(81).parse().unwrap();
    let members = vec![("etcd-1".to_string(), etcd_ip)];
    let pki = muster_lab::etcd::generate(&lab.dir().join("etcd-pki"), &members).unwrap();
    // The control plane's files at kubeadm's paths, as the agent puts them from its seed
    // (again after each reset, which empties the pki dir).
    let place_files = || {
        for (src, rel) in [
            (pki.ca(), model::node_files::ETCD_EXTERNAL_CA),
            (
                pki.client_cert(),
                model::node_files::ETCD_EXTERNAL_CLIENT_CERT,
            ),
            (
                pki.client_key(),
                model::node_files::ETCD_EXTERNAL_CLIENT_KEY,
            ),
        ] {
            lab.put("cp1", rel, &std::fs::read_to_string(src).unwrap());
        }
    };
    place_files();
    let endpoint = format!("https://{etcd_ip}:2379");
    let cfg = init_config(&lab, &vip).replace(
        "apiServer:\n",
        &format!(
            "etcd:\n  external:\n    endpoints: [\"{endpoint}\"]\n    caFile: /{}\n    certFile: /{}\n    keyFile: /{}\napiServer:\n",
            model::node_files::ETCD_EXTERNAL_CA,
            model::node_files::ETCD_EXTERNAL_CLIENT_CERT,
            model::node_files::ETCD_EXTERNAL_CLIENT_KEY
        ),
    );
    let cfg = lab.put("cp1", "etc/muster/kubeadm.yaml", &cfg);

    // ---- etcd not running yet: init fails in preflight, naming the check
    let out = lab.kubeadm("cp1", &[], &["init", "--config", &cfg, "--upload-certs"]);
    assert!(!out.ok(), "init succeeded without etcd: {}", out.all());
    assert!(
        out.all().contains("[ERROR ExternalEtcdVersion]") && out.all().contains(&endpoint),
        "{}",
        out.all()
    );

    // ---- a real member with client-cert auth
    let svc = muster_lab::etcd::member_service(
        &lab.dir().join("etcd"),
        &pki,
        &lab.ns("etcd1"),
        ("etcd-1", etcd_ip, 2379),
        &muster_lab::etcd::initial_cluster(&members),
    )
    .unwrap();
    let argv: Vec<&str> = svc.argv.iter().map(String::as_str).collect();
    std::fs::create_dir_all(svc.log.parent().unwrap()).unwrap();
    let _etcd = lab
        .spawn_in("etcd-1", &lab.ns("etcd1"), &[], &argv, &svc.log)
        .unwrap();
    let ctl = |args: &[&str]| {
        let mut full = muster_lab::etcd::etcdctl_flags(&pki, std::slice::from_ref(&endpoint));
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        lab.run("etcd1", &[("ETCDCTL_API", "3")], "etcdctl", &refs)
    };
    wait_until("etcd-1 healthy", Duration::from_secs(30), || {
        ctl(&["endpoint", "health"]).ok()
    });
    // Without a client certificate etcd refuses (client-cert auth is on).
    let anon = lab.run(
        "etcd1",
        &[("ETCDCTL_API", "3")],
        "etcdctl",
        &[
            &format!("--endpoints={endpoint}"),
            &format!("--cacert={}", pki.ca().display()),
            "--command-timeout=3s",
            "get",
            "x",
        ],
    );
    assert!(!anon.ok(), "etcd answered without a client certificate");

    // ---- init: no local member, the API server on the external etcd
    let reset = lab.kubeadm("cp1", &[], &["reset", "-f"]);
    assert!(reset.ok(), "{}", reset.all());
    place_files();
    let out = lab.kubeadm("cp1", &[], &["init", "--config", &cfg, "--upload-certs"]);
    assert!(out.ok(), "init failed: {}", out.all());
    let root = lab.root("cp1");
    assert!(!root.join("etc/kubernetes/manifests/etcd.yaml").exists());
    assert!(!root.join("etc/kubernetes/pki/etcd/ca.key").exists());
    assert_eq!(
        std::fs::read_to_string(root.join(model::node_files::ETCD_EXTERNAL_CLIENT_KEY)).unwrap(),
        std::fs::read_to_string(pki.client_key()).unwrap(),
        "init replaced the user's client key"
    );
    let w = lab.api(
        "cp1",
        "post",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"metadata":{"name":"ext"},"data":{"k":"v"}}"#),
    );
    assert!(w.ok(), "{}", w.all());
    let got = ctl(&[
        "get",
        "/registry/configmaps/default/ext",
        "--print-value-only",
    ]);
    assert!(got.ok() && got.stdout.contains("\"ext\""), "{}", got.all());
    let list = ctl(&["member", "list", "-w", "json"]);
    let ms = etcd::parse_member_list(&list.stdout).unwrap();
    assert_eq!(ms.len(), 1, "{ms:?}");

    // ---- reset leaves the external cluster and its data alone
    let reset = lab.kubeadm("cp1", &[], &["reset", "-f"]);
    assert!(reset.ok(), "{}", reset.all());
    assert!(
        reset.stdout.contains("Assuming external etcd"),
        "{}",
        reset.all()
    );
    let got = ctl(&[
        "get",
        "/registry/configmaps/default/ext",
        "--print-value-only",
    ]);
    assert!(got.ok() && got.stdout.contains("\"ext\""), "{}", got.all());
    assert_eq!(
        etcd::parse_member_list(&ctl(&["member", "list", "-w", "json"]).stdout)
            .unwrap()
            .len(),
        1
    );
}

/// The API stand-in serves what the real kubectl needs (issues 13 and 14): discovery,
/// `get nodes -o wide` from its Table, `api-resources`, server-side apply of a Namespace, a
/// ConfigMap, a CRD and (once established) a custom resource, idempotent re-applies; and
/// it is strict where the real server is (a namespace that does not exist, a custom
/// resource whose CRD is not there).
#[test]
fn the_real_kubectl_reads_and_applies_through_the_api_standin() {
    let Some(kubectl) = muster_lab::standins::real_kubectl("v1.31.4").unwrap() else {
        return;
    };
    let kubectl = kubectl.display().to_string();
    let lab = new_lab("kctl", &[("cp1", 11)]);
    let ip = lab.ip(11);
    let cfg = lab.put("cp1", "etc/muster/kubeadm.yaml", &init_config(&lab, &ip));
    let out = lab.kubeadm("cp1", &[], &["init", "--config", &cfg]);
    assert!(out.ok(), "init failed: {}", out.all());
    let kc = lab
        .root("cp1")
        .join("etc/kubernetes/admin.conf")
        .display()
        .to_string();
    let home = lab.dir().join("home").display().to_string();
    let k = |args: &[&str]| -> Out {
        let mut all = vec!["--kubeconfig", &kc, "--request-timeout=10s"];
        all.extend(args);
        lab.run("cp1", &[("HOME", &home)], &kubectl, &all)
    };

    // ---- reading: version, discovery, nodes from the Table (Ready from the stored condition)
    let v = k(&["version", "-o", "json"]);
    assert!(v.ok(), "{}", v.all());
    let v: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1", "{v:#}");
    let nodes = k(&["get", "nodes", "-o", "wide"]);
    assert!(nodes.ok(), "{}", nodes.all());
    let header = nodes.stdout.lines().next().unwrap_or("");
    for col in ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"] {
        assert!(header.contains(col), "{}", nodes.stdout);
    }
    let row = nodes
        .stdout
        .lines()
        .find(|l| l.starts_with("cp1 "))
        .unwrap_or_else(|| panic!("no cp1 row: {}", nodes.stdout));
    // No pod network yet (issue 14): the stand-in reads the Node NotReady.
    assert!(
        row.contains(" NotReady ") && row.contains("control-plane") && row.contains(&ip),
        "{row}"
    );
    // A CNI's DaemonSet makes it Ready.
    let ds = lab.put(
        "cp1",
        "manifests/cni.yaml",
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-system
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec:
      containers: [{name: kube-flannel, image: ghcr.io/flannel-io/flannel:v0.28.9}]
",
    );
    let cni = k(&[
        "apply",
        "--server-side",
        "--field-manager=muster",
        "-f",
        &ds,
    ]);
    assert!(cni.ok(), "{}", cni.all());
    let nodes = k(&["get", "nodes"]);
    let row = nodes
        .stdout
        .lines()
        .find(|l| l.starts_with("cp1 "))
        .unwrap_or_else(|| panic!("no cp1 row: {}", nodes.stdout));
    assert!(row.contains(" Ready "), "{row}");
    // kubeadm's kube-proxy addon, at the cluster's version.
    let ds = k(&[
        "get",
        "daemonset",
        "-n",
        "kube-system",
        "kube-proxy",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert!(
        ds.ok() && ds.stdout == "registry.k8s.io/kube-proxy:v1.31.4",
        "{}",
        ds.all()
    );
    let ar = k(&["api-resources"]);
    assert!(ar.ok(), "{}", ar.all());
    for r in [
        "configmaps",
        "namespaces",
        "customresourcedefinitions",
        "deployments",
    ] {
        assert!(ar.stdout.contains(r), "{r} missing: {}", ar.stdout);
    }

    // ---- a custom resource before its CRD: the server refuses (404), as the real one does
    let early = lab.api(
        "cp1",
        "post",
        "/apis/example.com/v1/namespaces/default/widgets",
        Some(r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w0"}}"#),
    );
    assert!(!early.ok(), "{}", early.all());
    assert!(
        early.all().contains("404") || early.all().contains("NotFound"),
        "{}",
        early.all()
    );

    // ---- server-side apply: namespace, ConfigMap, CRD; then the custom resource
    let base = lab.put("cp1", "manifests/base.yaml", KUBECTL_DEMO_BASE);
    let cr = lab.put("cp1", "manifests/cr.yaml", KUBECTL_DEMO_CR);
    let applied = k(&[
        "apply",
        "--server-side",
        "--field-manager=muster",
        "-f",
        &base,
    ]);
    assert!(applied.ok(), "{}", applied.all());
    let wait = k(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
    assert!(wait.ok(), "{}", wait.all());
    let applied = k(&[
        "apply",
        "--server-side",
        "--field-manager=muster",
        "-f",
        &cr,
    ]);
    assert!(applied.ok(), "{}", applied.all());
    let got = k(&["get", "-n", "demo", "configmaps,widgets", "-o", "name"]);
    assert!(got.ok(), "{}", got.all());
    assert!(
        got.stdout.contains("configmap/settings") && got.stdout.contains("widget.example.com/w1"),
        "{}",
        got.stdout
    );
    let rv = |what: &str| {
        let o = k(&[
            "get",
            "-n",
            "demo",
            what,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        assert!(o.ok(), "{}", o.all());
        o.stdout
    };
    let before = rv("configmap/settings");
    let again = k(&[
        "apply",
        "--server-side",
        "--field-manager=muster",
        "-f",
        &base,
    ]);
    assert!(again.ok(), "{}", again.all());
    assert_eq!(rv("configmap/settings"), before, "an identical apply wrote");
    let size = k(&[
        "get",
        "-n",
        "demo",
        "wd",
        "w1",
        "-o",
        "jsonpath={.spec.size}",
    ]);
    assert_eq!(size.stdout.trim(), "3", "{}", size.all());
    // Stored where the real server keeps it, in the real etcd.
    let key = lab.ctl(
        "cp1",
        &[
            "get",
            "/registry/example.com/widgets/demo/w1",
            "--print-value-only",
        ],
    );
    assert!(key.ok() && key.stdout.contains("\"w1\""), "{}", key.all());

    // ---- another manager changing a field muster applied: a conflict, unless forced
    let other = lab.put(
        "cp1",
        "manifests/other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\ndata:\n  color: red\n",
    );
    let clash = k(&[
        "apply",
        "--server-side",
        "--field-manager=someone",
        "-f",
        &other,
    ]);
    assert!(!clash.ok(), "{}", clash.all());
    assert!(clash.all().contains("conflict"), "{}", clash.all());

    // ---- strict: a namespaced object in a namespace that does not exist
    let lost = lab.put(
        "cp1",
        "manifests/lost.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nowhere\ndata: {}\n",
    );
    let refused = k(&["apply", "--server-side", "-f", &lost]);
    assert!(!refused.ok(), "{}", refused.all());
    assert!(
        refused.all().contains("namespaces \"nowhere\" not found"),
        "{}",
        refused.all()
    );

    // ---- deleting the CRD takes its kind away again
    let del = k(&["delete", "crd", "widgets.example.com"]);
    assert!(del.ok(), "{}", del.all());
    let gone = lab.api(
        "cp1",
        "get",
        "/apis/example.com/v1/namespaces/demo/widgets/w1",
        None,
    );
    assert!(!gone.ok(), "{}", gone.all());
}

/// A kubelet's credential (`kubelet.conf`: `system:node:cp1` in `system:nodes`) is held by
/// the API stand-in to what the real server lets a kubelet do (the Node authorizer,
/// kubeadm's RBAC for nodes, NodeRestriction), checked with the real kubectl: it lists pods
/// only with its own `spec.nodeName` selector, reads no Secret but kubeadm's two
/// ConfigMaps, cordons and uncordons its own Node but changes no taint and no
/// `node-restriction.kubernetes.io/` label, and evicts only pods bound to itself. The
/// admin credential is not restricted.
#[test]
fn a_kubelets_credential_is_held_to_what_the_node_authorizer_allows() {
    let Some(kubectl) = muster_lab::standins::real_kubectl("v1.31.4").unwrap() else {
        return;
    };
    let kubectl = kubectl.display().to_string();
    let lab = new_lab("nodeauth", &[("cp1", 11)]);
    let ip = lab.ip(11);
    // (Also: kube-proxy's addon skipped, as muster asks when cilium replaces it.)
    let cfg = lab.put(
        "cp1",
        "etc/muster/kubeadm.yaml",
        &init_config(&lab, &ip).replace(
            "kind: InitConfiguration\n",
            "kind: InitConfiguration\nskipPhases: [addon/kube-proxy]\n",
        ),
    );
    let out = lab.kubeadm("cp1", &[], &["init", "--config", &cfg]);
    assert!(out.ok(), "init failed: {}", out.all());
    assert!(
        out.stdout.contains("Skipping phase addon/kube-proxy"),
        "{}",
        out.all()
    );
    let conf = |f: &str| {
        lab.root("cp1")
            .join("etc/kubernetes")
            .join(f)
            .display()
            .to_string()
    };
    let (admin, kubelet) = (conf("admin.conf"), conf("kubelet.conf"));
    let home = lab.dir().join("home").display().to_string();
    let k = |kc: &str, args: &[&str]| -> Out {
        let mut all = vec!["--kubeconfig", kc, "--request-timeout=10s"];
        all.extend(args);
        lab.run("cp1", &[("HOME", &home)], &kubectl, &all)
    };
    let refused = |o: &Out, want: &str| {
        assert!(!o.ok(), "allowed: {}", o.all());
        assert!(
            o.all().contains("Forbidden") || o.all().contains("forbidden"),
            "{}",
            o.all()
        );
        assert!(o.all().contains(want), "{want} not in {}", o.all());
    };
    // Two pods: one bound to cp1, one to another node.
    for (pod, node) in [("here", "cp1"), ("there", "elsewhere")] {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{pod}","namespace":"default"}},"spec":{{"nodeName":"{node}","containers":[{{"name":"c","image":"registry.k8s.io/pause:3.10"}}]}},"status":{{"phase":"Running"}}}}"#
        );
        let o = lab.api(
            "cp1",
            "post",
            "/api/v1/namespaces/default/pods",
            Some(&body),
        );
        assert!(o.ok(), "{}", o.all());
    }

    // ---- pods: only its own, by selector
    refused(&k(&kubelet, &["get", "pods", "-A"]), "spec.nodeName=cp1");
    let own = k(
        &kubelet,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=cp1",
            "-o",
            "name",
        ],
    );
    assert!(own.ok(), "{}", own.all());
    assert!(
        own.stdout.contains("pod/here") && !own.stdout.contains("there"),
        "{}",
        own.stdout
    );
    let all = k(&admin, &["get", "pods", "-A", "-o", "name"]);
    assert!(
        all.ok() && all.stdout.contains("pod/there"),
        "{}",
        all.all()
    );

    // ---- secrets and ConfigMaps
    refused(
        &k(&kubelet, &["get", "secrets", "-n", "kube-system"]),
        "system:node:cp1",
    );
    refused(
        &k(
            &kubelet,
            &["get", "configmap", "-n", "kube-system", "kube-proxy"],
        ),
        "system:node:cp1",
    );
    let cc = k(
        &kubelet,
        &[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "kubeadm-config",
            "-o",
            "name",
        ],
    );
    assert!(cc.ok(), "{}", cc.all());

    // ---- its own Node: cordon and uncordon yes, taints and restricted labels no
    for verb in ["cordon", "uncordon"] {
        let o = k(&kubelet, &[verb, "cp1"]);
        assert!(o.ok(), "{verb}: {}", o.all());
    }
    refused(
        &k(
            &kubelet,
            &["taint", "node", "cp1", "muster=test:NoSchedule"],
        ),
        "taints",
    );
    refused(
        &k(
            &kubelet,
            &[
                "label",
                "node",
                "cp1",
                "node-restriction.kubernetes.io/pool=a",
            ],
        ),
        "node-restriction.kubernetes.io/",
    );
    let taint = k(&admin, &["taint", "node", "cp1", "muster=test:NoSchedule"]);
    assert!(taint.ok(), "{}", taint.all());

    // ---- evictions: only pods bound to itself
    let eviction = |pod: &str| {
        let body = lab.put(
            "cp1",
            &format!("manifests/evict-{pod}.json"),
            &format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
            ),
        );
        k(
            &kubelet,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
                "-f",
                &body,
            ],
        )
    };
    refused(&eviction("there"), "spec.nodeName set to itself");
    let o = eviction("here");
    assert!(o.ok(), "{}", o.all());
    let left = k(&admin, &["get", "pods", "-A", "-o", "name"]);
    assert!(
        left.ok() && !left.stdout.contains("pod/here") && left.stdout.contains("pod/there"),
        "{}",
        left.all()
    );
    let ds = k(
        &admin,
        &["get", "daemonsets", "-n", "kube-system", "-o", "name"],
    );
    assert!(ds.ok() && !ds.stdout.contains("kube-proxy"), "{}", ds.all());
}
