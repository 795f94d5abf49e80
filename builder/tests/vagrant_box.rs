#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! The Vagrant box boots under REAL Vagrant and vagrant-libvirt (Debian's vagrant 2.3.4,
//! vagrant-libvirt 0.11.2, libvirtd 9.0 driving QEMU): `muster build` of a one-node spec
//! for `platform: vagrant/libvirt`, `muster image build` (the product image, real nodeagent,
//! no stand-ins), `vagrant box add` of `node-libvirt.box`, `vagrant up` from the generated
//! Vagrantfile (its trigger uploads the node's NoCloud seed into the pool and attaches it as
//! vdb), then from outside: `vagrant ssh` as the spec's access user (key from the seed via
//! ssh-agent) reads the host name, the identity, the cluster address on eth1, cloud-init's
//! `/run/cloud-init/status.json` (datasource `DataSourceNoCloud [seed=/dev/vdb]`, stages
//! without errors) and the nodeagent unit as systemd sees it. Then `vagrant destroy -f`,
//! `vagrant box remove`, and the pool and networks are removed.
//!
//! No KVM here: the Vagrantfile runs with `MUSTER_LIBVIRT_DRIVER=qemu` (libvirt domain type
//! `qemu`, TCG). Nothing leaves the machine: the management network and the cluster network
//! are isolated libvirt networks (no forwarding, no DNS on the cluster network), and Vagrant
//! keeps its state in the test's own `VAGRANT_HOME`. There is no rendezvous, so the agent
//! stays in its preflight/backoff loop (`activating`); that it runs and reports its status
//! to systemd is what is checked, not assembly (the VM cluster tests do that).
//!
//! Root, slow (~4 min of emulated boot): runs only with `MUSTER_VM_TESTS=1` (`.ci/run`).
//! Starts `virtlogd` and `libvirtd` itself when libvirt does not answer (and stops what it
//! started). Needs scripts/deps/images.sh and vagrant-libvirt.sh.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "vbox";
const NODE: &str = "vbox-cp-1";
const NODE_IP: &str = "10.253.0.11";
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

fn spec(pubkey: &str) -> String {
    format!(
        "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: {CLUSTER}
spec:
  distribution:
    kind: kubeadm
    version: \"v1.31.4\"
  topology:
    controlPlanes: 1
    workers: 0
  sizes:
    controlPlane: {{ cpus: 2, memoryMiB: 2048, diskGiB: 8 }}
  network:
    subnet: 10.253.0.0/24
    gateway: 10.253.0.1
    dns: [10.253.0.1]
    interface: eth1            # Vagrant's management NIC is eth0
    addressPlan:
      controlPlanes: 11
  ha:
    provider: keepalived
    vip: 10.253.0.10
  addons:
    cni: cilium                # the user's rendered manifest (a small fixture standing in
    manifests:                 # for it): its image is pre-pulled from the payload's list
    - name: cilium
      file: cilium.yaml
  rendezvous:
    url: \"https://10.253.0.1:7443\"
  platform:
    type: vagrant
    provider: libvirt
    box: {BOX}
  access:
    user: muster
    sshAuthorizedKeys: [\"{pubkey}\"]
"
    )
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

    fn ssh(&self, script: &str) -> String {
        output("vagrant ssh", self.cmd().args(["ssh", NODE, "-c", script]))
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

#[test]
fn the_vagrant_box_boots_under_vagrant_libvirt() {
    if !enabled() {
        return;
    }
    let muster = muster_bin("muster");
    let nodeagent = muster_bin("nodeagent");
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

    // ---- muster build + muster image build (the product image)
    let build = d.join("build");
    output(
        "muster build",
        &mut common::muster_build(&muster, &spec_path, &build, &nodeagent),
    );
    let image_dir = d.join("image");
    let t = Instant::now();
    // The user's install path from --artifacts: the stand-in .debs through apt, the
    // stand-in images pre-pulled (upstream is unreachable here).
    let arts = d.join("artifacts");
    let cluster = muster_build::spec_source::load(Some(&spec_path))
        .unwrap()
        .cluster;
    common::artifacts::standin_artifacts(&arts, &cluster, &build.join("payload.tar.gz"));
    output(
        "muster image build",
        Command::new(&muster)
            .args(["image", "build", "--json", "--artifacts"])
            .arg(&arts)
            .arg("--out")
            .arg(&image_dir)
            .arg(&spec_path)
            .arg("--payload")
            .arg(build.join("payload.tar.gz")),
    );
    let image_secs = t.elapsed().as_secs_f64();

    // ---- libvirt: the pool the seed and the disks go to, the isolated cluster network
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
    let v = Vagrant {
        build: build.clone(),
        home,
        agent_sock,
        agent,
    };

    // ---- vagrant box add + vagrant up
    let t = Instant::now();
    output(
        "vagrant box add",
        v.cmd()
            .args(["box", "add", "--name", BOX])
            .arg(image_dir.join("node-libvirt.box")),
    );
    let box_add_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let up = v.cmd().args(["up", "--provider=libvirt"]).output().unwrap();
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
    // vagrant-libvirt made a `qemu` (TCG) domain from the box and the seed volume
    assert!(
        up_lines
            .iter()
            .any(|l| l.contains("Domain type:") && l.ends_with("qemu")),
        "{up_log}"
    );
    assert!(
        up_lines
            .iter()
            .any(|l| l.contains("Disk(vdb):") && l.contains(&format!("muster-{NODE}-seed.img"))),
        "{up_log}"
    );
    assert!(
        up_lines
            .iter()
            .any(|l| l.contains("Machine booted and ready!")),
        "{up_log}"
    );

    // ---- from outside, over `vagrant ssh` as the spec's user
    let out = v.ssh(
        // `vagrant up` returns once ssh answers: first wait (up to 10 min) for cloud-init's
        // config stage. Its final stage waits for multi-user.target, which waits for the
        // agent's READY=1: never, without a rendezvous.
        "for _ in $(seq 600); do python3 -c \"import json,sys; \
           d=json.load(open('/run/cloud-init/status.json'))['v1']; \
           sys.exit(0 if d['modules-config']['finished'] else 1)\" 2>/dev/null && break; sleep 1; done; \
         echo '@@ hostname'; hostname; \
         echo '@@ identity'; cat /etc/muster/node.json; \
         echo '@@ addresses'; ip -4 -o addr show; \
         echo '@@ cloud-init'; cat /run/cloud-init/status.json; \
         echo '@@ nodeagent'; systemctl show nodeagent.service -p Type -p ActiveState -p MainPID -p StatusText; \
         echo '@@ user'; id -un; \
         echo '@@ agent log'; sudo journalctl -u nodeagent.service -o cat --no-pager | tail -n 5; \
         echo '@@ end'",
    );
    eprintln!("{out}");
    assert_eq!(section(&out, "hostname").trim(), NODE);
    let identity: serde_json::Value = serde_json::from_str(section(&out, "identity")).unwrap();
    assert_eq!(identity["name"], NODE);
    assert!(
        section(&out, "addresses")
            .lines()
            .any(|l| l.contains("eth1") && l.contains(&format!("inet {NODE_IP}/24"))),
        "the seed's address is not on eth1: {out}"
    );
    assert!(
        section(&out, "addresses")
            .lines()
            .any(|l| l.contains("eth0") && l.contains("inet 10.254.121.")),
        "Vagrant's management NIC has no DHCP address: {out}"
    );
    // cloud-init read the seed volume vagrant attached, and its stages ran without errors
    let status: serde_json::Value = serde_json::from_str(section(&out, "cloud-init")).unwrap();
    let v1 = &status["v1"];
    assert!(
        v1["datasource"]
            .as_str()
            .is_some_and(|d| d.starts_with(muster_lab::vm::cluster::SEED_MARKER)),
        "{v1:#}"
    );
    for stage in ["init-local", "init", "modules-config"] {
        assert!(v1[stage]["finished"].is_number(), "{stage}: {v1:#}");
        assert_eq!(
            v1[stage]["errors"],
            serde_json::json!([]),
            "{stage}: {v1:#}"
        );
    }
    assert_eq!(section(&out, "user").trim(), "muster");
    let unit = section(&out, "nodeagent");
    assert!(unit.contains("Type=notify"), "{unit}");
    assert!(
        unit.lines()
            .any(|l| l.strip_prefix("MainPID=").is_some_and(|p| p != "0")),
        "nodeagent is not running: {unit}"
    );
    // No rendezvous on this network: the agent runs and tells systemd why it waits.
    assert!(
        unit.contains("ActiveState=activating") || unit.contains("ActiveState=active"),
        "{unit}"
    );
    assert!(
        unit.lines()
            .any(|l| l.strip_prefix("StatusText=").is_some_and(|s| !s.is_empty())),
        "no STATUS= from the agent: {unit}"
    );
    assert!(
        !section(&out, "agent log").trim().is_empty(),
        "the agent logged nothing"
    );

    let t = Instant::now();
    drop(v);
    common::measured(format_args!(
        "vagrant box (TCG): image build {image_secs:.1}s, box add {box_add_secs:.1}s, vagrant up {up_secs:.1}s, destroy + clean-up {:.1}s",
        t.elapsed().as_secs_f64()
    ));
}
