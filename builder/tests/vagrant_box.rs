#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! A cluster assembles under REAL Vagrant and vagrant-libvirt (Debian's vagrant 2.3.4,
//! vagrant-libvirt 0.11.2, libvirtd 9.0 driving QEMU) from `muster build`'s multi-node
//! Vagrantfile, meeting at a `muster rendezvous` on the host (issue 16). The spec is seed
//! 000's (the Vagrant example: kubeadm, cilium from the user's manifest, the cluster network
//! on eth1) cut down to 1 control plane + 1 worker, keepalived for the VIP, small sizes.
//! `muster build`, `muster lab image` (the TEST image: kubeadm, kubelet, kubectl from the
//! stand-in packages through the user's install path `--artifacts`, the stand-in images
//! pre-pulled, the API server's stand-in copied in as vm_cluster.rs does), `vagrant box add`
//! of its `node-libvirt.box`, then `vagrant up --parallel` of both machines (each machine's
//! trigger uploads its NoCloud seed into the pool, attached as vdb). On the host, on the
//! cluster network's address (the spec's gateway): `muster rendezvous` with the build's keys
//! and certificate, and an NTP server (the TEST image's chrony syncs with the gateway).
//! Checked from outside: `muster status --json` (every planned node done at the rendezvous,
//! the API endpoint answering TLS), `vagrant ssh` to each machine as the spec's access user
//! (host name, identity, the cluster address on eth1, cloud-init's NoCloud datasource, the
//! nodeagent unit active and `nodeagent status --json` done), and the real kubectl of the
//! spec's minor through the VIP with the kubeconfig `muster kubeconfig` writes (both Nodes).
//! Then `vagrant destroy -f`, `vagrant box remove`, and the pool and networks are removed.
//!
//! No KVM here: the Vagrantfile runs with `MUSTER_LIBVIRT_DRIVER=qemu` (libvirt domain type
//! `qemu`, TCG). Nothing leaves the machine: the management network and the cluster network
//! are isolated libvirt networks (no forwarding, no DNS on the cluster network), and Vagrant
//! keeps its state in the test's own `VAGRANT_HOME`.
//! Stand-ins (cannot be downloaded here): kubeadm (inside the kubeadm package), kubelet and
//! kubectl (packaged), kube-apiserver (TEST image only), the cilium manifest (a small
//! fixture standing in for the user's rendered one).
//!
//! Root, slow (minutes of emulated boot): runs only with `MUSTER_VM_TESTS=1` (`.ci/run`).
//! Starts `virtlogd` and `libvirtd` itself when libvirt does not answer (and stops what it
//! started). Needs scripts/deps/images.sh and vagrant-libvirt.sh, and the binaries `cargo
//! test --workspace` builds (muster, nodeagent, the stand-ins).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "vbox";
/// The spec's nodes and their cluster addresses (its address plan).
const NODES: [(&str, &str); 2] = [("vbox-cp-1", "10.253.0.11"), ("vbox-w-1", "10.253.0.21")];
const GATEWAY: &str = "10.253.0.1";
const VIP: &str = "10.253.0.10";
/// From `vagrant up`'s return to every node done at the rendezvous.
const PATIENCE: Duration = Duration::from_secs(15 * 60);
const BOX: &str = "muster-vagrant-test";
const POOL: &str = "muster-vagrant-test";
/// The Vagrantfile names the cluster network `muster-<cluster>`.
const NETWORK: &str = "muster-vbox";
const MGMT_NETWORK: &str = "muster-vagrant-mgmt";
const URI: &str = "qemu:///system";

fn enabled() -> bool {
    if std::env::var("MUSTER_VM_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set MUSTER_VM_TESTS=1 to boot the Vagrant box with vagrant-libvirt");
    false
}

/// Seed 000's spec (the Vagrant example), cut down to what two emulated VMs can carry:
/// 1 control plane + 1 worker, small sizes, keepalived for the VIP (the TEST image's
/// kube-vip stand-in is keepalived anyway), cilium from the user's manifest only (no
/// longhorn or ingress-nginx), the isolated test networks, the test's box and access key.
fn spec(pubkey: &str) -> String {
    let example = common::repo().join("examples/seed-000-kubeadm-kube-vip.yaml");
    let mut v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let yaml = |text: &str| -> serde_yaml::Value { serde_yaml::from_str(text).unwrap() };
    v["metadata"]["name"] = CLUSTER.into();
    let s = &mut v["spec"];
    assert_eq!(
        s["platform"]["type"], "vagrant",
        "seed 000 is the Vagrant example"
    );
    assert_eq!(s["network"]["interface"], "eth1");
    s["addons"] = yaml("{cni: cilium, manifests: [{name: cilium, file: cilium.yaml}]}");
    s["topology"] = yaml("{controlPlanes: 1, workers: 1}");
    s["sizes"] = yaml(
        "{controlPlane: {cpus: 2, memoryMiB: 2048, diskGiB: 8}, worker: {cpus: 2, memoryMiB: 1536, diskGiB: 8}}",
    );
    s["network"]["subnet"] = "10.253.0.0/24".into();
    s["network"]["gateway"] = GATEWAY.into();
    s["network"]["dns"] = yaml(&format!("[{GATEWAY}]"));
    s["ha"] = yaml(&format!("{{provider: keepalived, vip: {VIP}}}"));
    s["rendezvous"] = yaml(&format!("{{url: \"https://{GATEWAY}:7443\"}}"));
    s["platform"]["box"] = BOX.into();
    s["access"] = yaml(&format!(
        "{{user: muster, sshAuthorizedKeys: [\"{pubkey}\"]}}"
    ));
    serde_yaml::to_string(&v).unwrap()
}

/// Merged under the generated Vagrantfile (which does not set them): the management network
/// is isolated. (A serial console to a file cannot be set here: vagrant-libvirt 0.11.2's
/// config merge fails on `serial` in one Vagrantfile and not the next, "no implicit
/// conversion of Symbol into Array"; the guest's own logs are read over `vagrant ssh`.)
fn home_vagrantfile() -> String {
    format!(
        "# muster's Vagrant box test: nothing leaves this machine.
Vagrant.configure('2') do |config|
  config.vm.provider :libvirt do |lv|
    lv.management_network_name = '{MGMT_NETWORK}'
    lv.management_network_address = '10.254.121.0/24'
    lv.management_network_mode = 'none'
  end
end
"
    )
}

/// The cluster network, made before `vagrant up` so that it is isolated (vagrant-libvirt
/// would make it with NAT, as the Vagrantfile asks) and reused by vagrant-libvirt, which
/// finds it by name and address.
fn network_xml() -> String {
    format!(
        "<network>
  <name>{NETWORK}</name>
  <bridge name='musvbox0' stp='on' delay='0'/>
  <dns enable='no'/>
  <ip address='10.253.0.1' netmask='255.255.255.0'/>
</network>
"
    )
}

fn muster_bin(name: &str) -> PathBuf {
    muster_lab::standins::target_binary(name).unwrap()
}

fn output(what: &str, cmd: &mut Command) -> String {
    let o = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(o.status.success(), "{what} failed ({})", o.status);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs quietly; a failure is reported, not fatal (clean-up).
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn virsh() -> Command {
    let mut c = Command::new("virsh");
    c.args(["-q", "-c", URI]);
    c
}

fn libvirt_answers() -> bool {
    quiet(virsh().arg("version"))
}

/// virtlogd and libvirtd, started here when libvirt does not answer (no systemd in CI
/// containers). Stopped on drop if this test started them.
struct Libvirtd {
    started: Vec<&'static str>,
}

impl Libvirtd {
    fn ensure() -> Libvirtd {
        let mut started = Vec::new();
        if !libvirt_answers() {
            // `-d` fails when the daemon already runs (its pid file is locked): then it is
            // not ours to stop.
            for (daemon, pidfile) in [
                ("virtlogd", "/run/virtlogd.pid"),
                ("libvirtd", "/run/libvirtd.pid"),
            ] {
                if quiet(Command::new(daemon).arg("-d")) {
                    started.push(pidfile);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !libvirt_answers() {
                assert!(
                    Instant::now() < deadline,
                    "libvirtd does not answer on {URI}"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            eprintln!("started virtlogd and libvirtd ({URI})");
        }
        Libvirtd { started }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        for pidfile in self.started.iter().rev() {
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                quiet(Command::new("kill").arg(pid.to_string()));
            }
        }
    }
}

/// Everything `vagrant up` leaves behind, removed on drop (also when an assertion failed).
struct Vagrant {
    build: PathBuf,
    home: PathBuf,
    agent_sock: PathBuf,
    agent: Child,
    /// `muster rendezvous` and the NTP server on the cluster network's host address.
    rendezvous: Option<Child>,
    ntp: Option<muster_lab::vm::ntp::NtpServer>,
}

impl Vagrant {
    fn cmd(&self) -> Command {
        let mut c = Command::new("vagrant");
        c.current_dir(&self.build)
            .env("VAGRANT_HOME", &self.home)
            .env("SSH_AUTH_SOCK", &self.agent_sock)
            .env("MUSTER_LIBVIRT_DRIVER", "qemu")
            .env("MUSTER_LIBVIRT_POOL", POOL)
            .env("MUSTER_LIBVIRT_URI", URI)
            .env("MUSTER_BOOT_TIMEOUT", "1200")
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_NO_COLOR", "1");
        c
    }

    fn ssh(&self, node: &str, script: &str) -> String {
        output(
            &format!("vagrant ssh {node}"),
            self.cmd().args(["ssh", node, "-c", script]),
        )
    }
}

impl Drop for Vagrant {
    fn drop(&mut self) {
        let t = Instant::now();
        let destroyed = quiet(self.cmd().args(["destroy", "-f"]));
        let removed = quiet(self.cmd().args(["box", "remove", "--force", BOX]));
        // vagrant-libvirt leaves the box's volume (and the seed) in the pool.
        if let Ok(o) = virsh().args(["vol-list", POOL, "--name"]).output() {
            for vol in String::from_utf8_lossy(&o.stdout).lines() {
                if !vol.trim().is_empty() {
                    quiet(virsh().args(["vol-delete", "--pool", POOL, vol.trim()]));
                }
            }
        }
        quiet(virsh().args(["pool-destroy", POOL]));
        quiet(virsh().args(["pool-undefine", POOL]));
        for net in [NETWORK, MGMT_NETWORK] {
            quiet(virsh().args(["net-destroy", net]));
            quiet(virsh().args(["net-undefine", net]));
        }
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        if let Some(mut r) = self.rendezvous.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
        drop(self.ntp.take());
        eprintln!(
            "clean-up: vagrant destroy {destroyed}, box remove {removed}, pool and networks removed ({:.1}s)",
            t.elapsed().as_secs_f64()
        );
    }
}

fn section<'a>(text: &'a str, name: &str) -> &'a str {
    let start = format!("@@ {name}\n");
    let from = text
        .find(&start)
        .map(|i| i + start.len())
        .unwrap_or_else(|| panic!("no section {name} in {text}"));
    let rest = &text[from..];
    &rest[..rest.find("@@ ").unwrap_or(rest.len())]
}

/// `muster status --json` once (it exits non-zero while the cluster is not all done).
fn status(muster: &std::path::Path, build: &std::path::Path) -> Option<serde_json::Value> {
    let o = Command::new(muster)
        .args(["status", "--json", "--timeout", "5s", "--out"])
        .arg(build)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).ok()
}

/// The nodes' phases as `muster status` shows them, for the progress lines.
fn phases(s: &serde_json::Value) -> String {
    s["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    let live = if n["live"] == true { "" } else { " (absent)" };
                    format!("{} {}{live}", n["name"].as_str().unwrap_or("?"), n["phase"])
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Starts `muster rendezvous` on the host's cluster-network address with the build's keys
/// and certificate, and waits until it listens.
fn start_rendezvous(
    muster: &std::path::Path,
    build: &std::path::Path,
    d: &std::path::Path,
) -> Child {
    use muster_build::bake::{RENDEZVOUS_KEYS_DIR, rendezvous_cert};
    let log = std::fs::File::create(d.join("rendezvous.log")).unwrap();
    let mut child = Command::new(muster)
        .arg("rendezvous")
        .args(["--listen", &format!("{GATEWAY}:7443")])
        .arg("--data")
        .arg(d.join("rendezvous-data"))
        .arg("--keys")
        .arg(build.join(RENDEZVOUS_KEYS_DIR))
        .arg("--cert")
        .arg(build.join(rendezvous_cert::CERT_FILE))
        .arg("--key")
        .arg(build.join(rendezvous_cert::KEY_FILE))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((GATEWAY, 7443)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "muster rendezvous exited ({st}): {}",
                std::fs::read_to_string(d.join("rendezvous.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the rendezvous does not listen");
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

#[test]
fn a_control_plane_and_a_worker_assemble_under_vagrant_libvirt() {
    if !enabled() {
        return;
    }
    let whole = Instant::now();
    let muster = muster_bin("muster");
    let nodeagent = muster_bin("nodeagent");
    for s in muster_lab::test_image::STANDINS {
        muster_bin(s);
    }
    let tmp =
        tempfile::tempdir_in(std::env::var_os("MUSTER_VM_WORKDIR").unwrap_or("/var/tmp".into()))
            .unwrap();
    let d = tmp.path();
    let _libvirtd = Libvirtd::ensure();
    // Left over by a killed run: the next `vagrant up` would trip over them.
    for net in [NETWORK, MGMT_NETWORK] {
        quiet(virsh().args(["net-destroy", net]));
        quiet(virsh().args(["net-undefine", net]));
    }
    quiet(virsh().args(["pool-destroy", POOL]));
    quiet(virsh().args(["pool-undefine", POOL]));

    // ---- the access key: the spec authorizes it, ssh-agent lends it to `vagrant ssh`
    let key = d.join("id_test");
    output(
        "ssh-keygen",
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "muster-vagrant-test",
                "-f",
            ])
            .arg(&key),
    );
    let pubkey = std::fs::read_to_string(d.join("id_test.pub")).unwrap();
    let spec_path = d.join("cluster.yaml");
    std::fs::write(&spec_path, spec(pubkey.trim())).unwrap();
    std::fs::copy(
        common::repo().join("tests/fixtures/addons/cilium-user.yaml"),
        d.join("cilium.yaml"),
    )
    .unwrap();

    // ---- muster build + muster lab image (the TEST image)
    let build = d.join("build");
    output(
        "muster build",
        &mut common::muster_build(&muster, &spec_path, &build, &nodeagent),
    );
    let vagrantfile = std::fs::read_to_string(build.join("Vagrantfile")).unwrap();
    for (n, ip) in NODES {
        assert!(
            vagrantfile.contains(&format!("name: '{n}'")) && vagrantfile.contains(ip),
            "{n} ({ip}) is not in the Vagrantfile:\n{vagrantfile}"
        );
    }
    let image_dir = d.join("image");
    let t = Instant::now();
    // The user's install path from --artifacts: the stand-in .debs through apt, the
    // stand-in images pre-pulled (upstream is unreachable here); the API server's stand-in
    // copied in (TEST image only).
    let arts = d.join("artifacts");
    let cluster = muster_build::spec_source::load(Some(&spec_path))
        .unwrap()
        .cluster;
    common::artifacts::standin_artifacts(&arts, &cluster);
    let report: serde_json::Value = serde_json::from_str(&output(
        "muster lab image",
        Command::new(&muster)
            .args(["lab", "image", "--json", "--artifacts"])
            .arg(&arts)
            .arg("--standins")
            .arg(muster_lab::standins::target_bin_dir())
            .arg("--out")
            .arg(&image_dir)
            .arg(&spec_path)
            .arg("--payload")
            .arg(build.join("payload.tar.gz")),
    ))
    .unwrap();
    let image_secs = t.elapsed().as_secs_f64();
    let stand_ins = common::test_image_standins(&report);
    assert_eq!(stand_ins, ["apiserver-standin"], "{report:#}");

    // ---- libvirt: the pool the seeds and the disks go to, the isolated cluster network
    let pool_dir = d.join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    output(
        "virsh pool-define-as",
        virsh()
            .args(["pool-define-as", POOL, "dir", "--target"])
            .arg(&pool_dir),
    );
    output("virsh pool-start", virsh().args(["pool-start", POOL]));
    let net_xml = d.join("network.xml");
    std::fs::write(&net_xml, network_xml()).unwrap();
    output("virsh net-define", virsh().arg("net-define").arg(&net_xml));
    output("virsh net-start", virsh().args(["net-start", NETWORK]));

    let home = d.join("vagrant.d");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("Vagrantfile"), home_vagrantfile()).unwrap();
    let agent_sock = d.join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut v = Vagrant {
        build: build.clone(),
        home,
        agent_sock: agent_sock.clone(),
        agent,
        rendezvous: None,
        ntp: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent_sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    output(
        "ssh-add",
        Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent_sock),
    );

    // ---- on the host, on the cluster network's address: the rendezvous and NTP
    v.rendezvous = Some(start_rendezvous(&muster, &build, d));
    v.ntp = Some(
        muster_lab::vm::ntp::NtpServer::start(None, format!("{GATEWAY}:123").parse().unwrap())
            .unwrap(),
    );

    // ---- vagrant box add + vagrant up, both machines at once
    let t = Instant::now();
    output(
        "vagrant box add",
        v.cmd()
            .args(["box", "add", "--name", BOX])
            .arg(image_dir.join("node-libvirt.box")),
    );
    let box_add_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let up = v
        .cmd()
        .args(["up", "--provider=libvirt", "--parallel"])
        .output()
        .unwrap();
    let up_secs = t.elapsed().as_secs_f64();
    let up_log = String::from_utf8_lossy(&up.stdout).replace('\r', "\n");
    let up_lines: Vec<&str> = up_log
        .lines()
        .filter(|l| !l.contains("Progress:"))
        .collect();
    if !up.status.success() {
        eprintln!("{}", up_lines.join("\n"));
        eprintln!("{}", String::from_utf8_lossy(&up.stderr));
        panic!("vagrant up failed ({})", up.status);
    }
    for (n, _) in NODES {
        // vagrant-libvirt made a `qemu` (TCG) domain from the box and the node's seed
        let mine: Vec<&str> = up_lines
            .iter()
            .copied()
            .filter(|l| l.contains(&format!("==> {n}:")))
            .collect();
        assert!(
            mine.iter()
                .any(|l| l.contains("Domain type:") && l.ends_with("qemu")),
            "{n}: {up_log}"
        );
        assert!(
            mine.iter()
                .any(|l| l.contains("Disk(vdb):") && l.contains(&format!("muster-{n}-seed.img"))),
            "{n}: {up_log}"
        );
        assert!(
            mine.iter().any(|l| l.contains("Machine booted and ready!")),
            "{n}: {up_log}"
        );
    }

    // ---- the agents assemble at the host's rendezvous
    let t = Instant::now();
    let mut last = String::new();
    let assembled = loop {
        let s = status(&muster, &build);
        if let Some(s) = &s {
            let line = phases(s);
            if line != last {
                eprintln!("[{:>6.1}s after up] {line}", t.elapsed().as_secs_f64());
                last = line;
            }
            if s["allDone"] == true {
                break s.clone();
            }
        }
        if t.elapsed() > PATIENCE {
            for (n, _) in NODES {
                let log = v
                    .cmd()
                    .args([
                        "ssh",
                        n,
                        "-c",
                        "sudo journalctl -u nodeagent.service -o cat --no-pager | tail -n 40",
                    ])
                    .output();
                if let Ok(o) = log {
                    eprintln!(
                        "==== {n}: nodeagent\n{}",
                        String::from_utf8_lossy(&o.stdout)
                    );
                }
            }
            eprintln!(
                "==== rendezvous log\n{}",
                std::fs::read_to_string(d.join("rendezvous.log")).unwrap_or_default()
            );
            panic!("not assembled {PATIENCE:?} after vagrant up: {s:#?}");
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    let assemble_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (n, _) in NODES {
        let row = assembled["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n} is not in muster status: {assembled:#}"));
        assert_eq!(row["done"], true, "{n}: {row:#}");
        assert_eq!(row["live"], true, "{n}: {row:#}");
    }
    assert!(
        assembled["initialized"]["node"] == NODES[0].0,
        "the control plane initialized the cluster: {assembled:#}"
    );
    assert_eq!(
        assembled["api"]["tls"], true,
        "the API through the VIP: {assembled:#}"
    );

    // ---- from outside, over `vagrant ssh` as the spec's user
    for (n, ip) in NODES {
        let out = v.ssh(
            n,
            "echo '@@ hostname'; hostname; \
             echo '@@ identity'; cat /etc/muster/node.json; \
             echo '@@ addresses'; ip -4 -o addr show; \
             echo '@@ cloud-init'; cat /run/cloud-init/status.json; \
             echo '@@ nodeagent'; systemctl show nodeagent.service -p Type -p ActiveState -p SubState -p StatusText; \
             echo '@@ status'; sudo nodeagent status --json; \
             echo '@@ user'; id -un; \
             echo '@@ end'",
        );
        eprintln!("{out}");
        assert_eq!(section(&out, "hostname").trim(), n);
        let identity: serde_json::Value = serde_json::from_str(section(&out, "identity")).unwrap();
        assert_eq!(identity["name"], n);
        assert!(
            section(&out, "addresses")
                .lines()
                .any(|l| l.contains("eth1") && l.contains(&format!("inet {ip}/24"))),
            "{n}: the seed's address is not on eth1: {out}"
        );
        assert!(
            section(&out, "addresses")
                .lines()
                .any(|l| l.contains("eth0") && l.contains("inet 10.254.121.")),
            "{n}: Vagrant's management NIC has no DHCP address: {out}"
        );
        // cloud-init read the seed volume vagrant attached, and its stages ran without errors
        let status: serde_json::Value = serde_json::from_str(section(&out, "cloud-init")).unwrap();
        let v1 = &status["v1"];
        assert!(
            v1["datasource"]
                .as_str()
                .is_some_and(|d| d.starts_with(muster_lab::vm::cluster::SEED_MARKER)),
            "{n}: {v1:#}"
        );
        // Every stage ran without errors, and the last one (modules-final, after
        // multi-user.target, which waited for the agent's READY=1) finished. Seen here:
        // the control plane's `modules-config` entry stays null although cloud-config ran
        // before cloud-final (systemd orders them), so only its errors are checked.
        for stage in ["init-local", "init", "modules-config", "modules-final"] {
            assert_eq!(
                v1[stage]["errors"],
                serde_json::json!([]),
                "{n}: {stage}: {v1:#}"
            );
        }
        for stage in ["init-local", "init", "modules-final"] {
            assert!(v1[stage]["finished"].is_number(), "{n}: {stage}: {v1:#}");
        }
        assert_eq!(section(&out, "user").trim(), "muster");
        let unit = section(&out, "nodeagent");
        assert!(unit.contains("Type=notify"), "{n}: {unit}");
        assert!(unit.contains("ActiveState=active"), "{n}: {unit}");
        assert!(unit.contains("SubState=running"), "{n}: {unit}");
        let s: serde_json::Value = serde_json::from_str(section(&out, "status")).unwrap();
        assert_eq!(s["thisNode"]["node"], n, "{n}: {s:#}");
        assert_eq!(s["thisNode"]["phase"], "done", "{n}: {s:#}");
        assert_eq!(s["cluster"]["initializedBy"], NODES[0].0, "{n}: {s:#}");
    }

    // ---- the real kubectl through the VIP, with the kubeconfig `muster kubeconfig` writes
    let kc = d.join("kube").join("admin.kubeconfig");
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    output(
        "muster kubeconfig",
        Command::new(&muster)
            .args(["kubeconfig", "--out"])
            .arg(&build)
            .arg("--write")
            .arg(&kc),
    );
    assert!(
        std::fs::read_to_string(&kc)
            .unwrap()
            .contains(&format!("https://{VIP}:6443")),
        "the kubeconfig does not name the VIP"
    );
    let version = cluster.distribution.version.to_string();
    match muster_lab::standins::real_kubectl(&version).unwrap() {
        Some(kubectl) => {
            let nodes = output(
                "kubectl get nodes",
                Command::new(&kubectl)
                    .env("HOME", kc.parent().unwrap())
                    .arg("--kubeconfig")
                    .arg(&kc)
                    .args(["--request-timeout=20s", "get", "nodes", "-o", "name"]),
            );
            let mut got: Vec<&str> = nodes
                .lines()
                .map(|l| l.trim_start_matches("node/"))
                .collect();
            got.sort();
            assert_eq!(
                got,
                NODES.map(|(n, _)| n),
                "kubectl get nodes through {VIP}"
            );
            eprintln!("kubectl {} through {VIP}: {got:?}", kubectl.display());
        }
        None => eprintln!("no real kubectl for {version}: the API was checked by muster status"),
    }
    let check_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    drop(v);
    common::measured(format_args!(
        "vagrant 1+1 (TCG): image build {image_secs:.1}s, box add {box_add_secs:.1}s, vagrant up --parallel {up_secs:.1}s, up to assembled {assemble_secs:.1}s, checks {check_secs:.1}s, destroy + clean-up {:.1}s; whole test {:.1}s",
        t.elapsed().as_secs_f64(),
        whole.elapsed().as_secs_f64()
    ));
}
