#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
//! The stand-ins in a namespace lab: real etcd members, real TLS, real quorum.
//! Needs root, iproute2, etcd-server and etcd-client (scripts/install-test-deps.sh).

use model::node_files::NodeRoot;
use muster_tests::standin::{daemon, etcd, pki};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "mst";

fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (install it: scripts/install-test-deps.sh)"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = sh(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_tools() {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file());
        assert!(
            found,
            "`{tool}` is missing: apt-get install -y {pkg} (scripts/install-test-deps.sh)"
        );
    }
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the namespace lab needs root (ip netns)"
    );
}

fn netns_list() -> Vec<String> {
    String::from_utf8_lossy(&sh("ip", &["netns", "list"]).stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn kill_netns(ns: &str) {
    let pids = String::from_utf8_lossy(&sh("ip", &["netns", "pids", ns]).stdout).to_string();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = sh("ip", &["netns", "del", ns]);
}

/// Removes namespaces and dirs of earlier runs whose process is gone.
fn sweep_leftovers() {
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| p != std::process::id() && !daemon::alive(p)) {
            kill_netns(&ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name
                .strip_prefix("muster-standin-lab-")
                .and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !daemon::alive(pid)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// One lab at a time (lab-netns.md): tests in this binary take this lock.
static LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Lab {
    _serial: std::sync::MutexGuard<'static, ()>,
    id: String,
    dir: PathBuf,
    subnet: String,
    namespaces: Vec<String>,
    path_dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_netns(ns);
        }
        if std::env::var_os("MUSTER_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::remove_dir(parent); // only when empty
            }
        }
    }
}

impl Lab {
    fn new(tag: &str, hosts: &[(&str, u8)]) -> Lab {
        let serial = LAB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        require_tools();
        sweep_leftovers();
        let pid = std::process::id();
        let id = format!("{PREFIX}{pid}-{tag}");
        let subnet = format!("10.{}.{}", 200 + (pid % 50), (pid / 50) % 250);
        let dir = std::env::temp_dir()
            .join(format!("muster-standin-lab-{pid}"))
            .join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubeadm-standin"))
            .parent()
            .unwrap();
        let path_dir = muster_tests::standin::path_dir(bin_dir).unwrap();
        let mut lab = Lab {
            _serial: serial,
            id: id.clone(),
            dir,
            subnet,
            namespaces: vec![],
            path_dir,
        };
        let br = format!("{id}-br");
        must("ip", &["netns", "add", &br]);
        lab.namespaces.push(br.clone());
        must(
            "ip",
            &[
                "-n",
                &br,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        );
        must("ip", &["-n", &br, "link", "set", "br0", "up"]);
        for (host, octet) in hosts {
            let ns = lab.ns(host);
            must("ip", &["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            let veth = format!("v-{host}");
            must(
                "ip",
                &[
                    "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            must(
                "ip",
                &["-n", &br, "link", "set", &veth, "master", "br0", "up"],
            );
            must(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}.{octet}/24", lab.subnet),
                    "dev",
                    "eth0",
                ],
            );
            must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            std::fs::create_dir_all(lab.root(host).join("etc/kubernetes/manifests")).unwrap();
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.id)
    }
    fn ip(&self, octet: u8) -> String {
        format!("{}.{octet}", self.subnet)
    }
    fn root(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }
    fn node_root(&self, host: &str) -> NodeRoot {
        NodeRoot::new(self.root(host))
    }

    /// Runs PROGRAM inside the host's namespace with the stand-in PATH and node root.
    fn run(&self, host: &str, env: &[(&str, &str)], program: &str, args: &[&str]) -> Out {
        let path = format!(
            "{}:{}",
            self.path_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .env("PATH", path)
            .env("MUSTER_NODE_ROOT", self.root(host))
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both pipes on threads so a chatty child never blocks; enforce a deadline.
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t1 = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut so, &mut s);
            s
        });
        let t2 = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut se, &mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(150);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{program} {args:?} on {host} did not finish within 150 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = Out {
            code: status.code(),
            stdout: t1.join().unwrap(),
            stderr: t2.join().unwrap(),
        };
        eprintln!(
            "--- {host}: {program} {args:?} -> {:?}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        out
    }

    fn kubeadm(&self, host: &str, env: &[(&str, &str)], args: &[&str]) -> Out {
        self.run(host, env, "kubeadm", args)
    }

    fn write(&self, host: &str, rel: &str, text: &str) -> String {
        let p = self.root(host).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn etcdctl(&self, host: &str, args: &[&str]) -> Out {
        let pki = self.root(host).join("etc/kubernetes/pki");
        let mut full = vec![
            "--endpoints=https://127.0.0.1:2379".to_string(),
            format!("--cacert={}", pki.join("etcd/ca.crt").display()),
            format!("--cert={}", pki.join("apiserver-etcd-client.crt").display()),
            format!("--key={}", pki.join("apiserver-etcd-client.key").display()),
            "--command-timeout=5s".to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        self.run(host, &[("ETCDCTL_API", "3")], "etcdctl", &refs)
    }

    fn members(&self, host: &str) -> Vec<etcd::Member> {
        let out = self.etcdctl(host, &["member", "list", "-w", "json"]);
        assert!(out.ok(), "member list failed: {}", out.stderr);
        etcd::parse_member_list(&out.stdout).unwrap()
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
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
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

fn wait_until(what: &str, patience: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn kubeadm_standin_ha_lifecycle() {
    let lab = Lab::new("kadm", &[("cp1", 11), ("cp2", 12), ("cp3", 13), ("w1", 21)]);
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
    let cfg = lab.write("cp1", "etc/muster/kubeadm.yaml", &init_config(&lab, &vip));
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
    let cfg2 = lab.write(
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
    let cfg2 = lab.write(
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
    let cfg3 = lab.write(
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
    let members = lab.members("cp1");
    assert_eq!(members.len(), 3, "{members:?}");
    let stale: Vec<_> = members.iter().filter(|m| !m.started()).collect();
    assert_eq!(stale.len(), 1, "{members:?}");
    assert_eq!(
        stale[0].peer_urls,
        vec![format!("https://{}:2380", lab.ip(13))]
    );
    // What the agent does: remove the stale member, reset, restore kube-vip, join again.
    let out = lab.etcdctl("cp1", &["member", "remove", &format!("{:x}", stale[0].id)]);
    assert!(out.ok(), "{}", out.all());
    let out = lab.kubeadm("cp3", &[], &["reset", "-f"]);
    assert!(out.ok(), "{}", out.all());
    lab.write(
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
    let members = lab.members("cp2");
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| m.started()), "{members:?}");
    let mut names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3"]);
    let out = lab.etcdctl("cp1", &["endpoint", "health", "--cluster"]);
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
    lab.write(
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
}

/// A foreground process in a namespace (like `k3s server` under its unit), killed on drop.
struct Foreground(std::process::Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Lab {
    fn spawn(&self, host: &str, program: &str, args: &[&str]) -> Foreground {
        let path = format!(
            "{}:{}",
            self.path_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(self.dir.join(format!("{host}-{program}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .env("PATH", path)
            .env("MUSTER_NODE_ROOT", self.root(host))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Foreground(child)
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

#[test]
fn k3s_standin_server_join_agent() {
    let lab = Lab::new("k3s", &[("s1", 31), ("s2", 32), ("a1", 41)]);
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
    lab.write("s1", "etc/rancher/k3s/config.yaml", &format!(
        "cluster-init: true\ntoken: lab-secret\ntls-san:\n  - {vip}\nnode-ip: {}\nnode-name: s1\n", lab.ip(31)));
    let _s1 = lab.spawn("s1", "k3s", &["server"]);
    let token_file = lab.root("s1").join("var/lib/rancher/k3s/server/token");
    wait_until("s1 ready", Duration::from_secs(60), || {
        lab.root("s1")
            .join("var/lib/rancher/k3s/server/db/.standin-ready")
            .exists()
            && lab.k3s_api("s1", "/readyz").ok()
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

    lab.write("s2", "etc/rancher/k3s/config.yaml", &format!(
        "server: https://{vip}:6443\ntoken: {token}\ntls-san: [{vip}]\nnode-ip: {}\nnode-name: s2\n", lab.ip(32)));
    let _s2 = lab.spawn("s2", "k3s", &["server"]);
    wait_until("s2 ready", Duration::from_secs(60), || {
        lab.k3s_api("s2", "/readyz").ok()
    });
    let members = lab.k3s_members("s1");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|m| m.started()), "{members:?}");

    let _a1 = lab.spawn(
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
    wait_until("a1 registered", Duration::from_secs(30), || {
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
