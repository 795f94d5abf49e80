//! `muster lab`: the whole cluster on one machine, one network namespace per planned node
//! (docs/lab.md). Real: the build output, the rendezvous, the agents, etcd, keepalived,
//! HAProxy, nginx, TLS. Stand-ins (package `muster-standins`): kubeadm, k3s, the API server and
//! the kubelet's restart of static pods.
//!
//! The API tests drive:
//! ```text
//! let lab = Lab::create(&spec, &UpOptions::new(state_dir, bin_dir))?;  // nothing booted
//! lab.boot_all()?;  /  lab.boot("lab-cp-3")?;                         // like power-on
//! lab.wait_assembled(&names, patience, |change| ...)?;
//! lab.stop(node) / lab.start(node) / lab.cut(node) / lab.heal(node);
//! lab.exec(node, &["etcdctl", ...])?;  lab.status()?;  lab.audit()?;  lab.down()?;
//! ```
//! `Lab::up` is create + boot_all + wait_assembled. Every daemon is detached: a lab outlives
//! the process that made it, and `Lab::open(state_dir)` finds it again from `lab.json`.

pub mod cli;
pub mod disk;
pub mod error;
pub mod etcd;
pub mod mariadb;
pub mod netns;
pub mod prereq;
pub mod process;
pub mod record;
pub mod scratch;
pub mod slim_agent;
pub mod standins;
pub mod status;
pub mod test_image;
pub mod vip;
pub mod vm;
pub mod vms;

pub use error::{LabError, Result};
pub use record::{LabRecord, NodeRecord};
pub use status::{LabStatus, PhaseChange};

use model::spec::{DistroKind, Role};
use muster_build::spec_source::LoadedSpec;
use process::Service;
use protocol::wire::AuditEntry;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `muster lab` keeps a lab unless told otherwise: under /run, because neither the
/// namespaces nor the processes survive a reboot, so the state should not either.
pub const DEFAULT_STATE_DIR: &str = "/run/muster/lab";
/// How long `lab up` waits for the nodes to assemble.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(300);

/// Where the lab's programs come from and where it lives.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub state_dir: PathBuf,
    /// The stand-in binaries (kubeadm-standin, ...).
    pub standins: PathBuf,
    /// The nodeagent packed into the payload.
    pub agent_bin: PathBuf,
    /// The `muster` that serves the rendezvous.
    pub muster_bin: PathBuf,
    /// Extra environment for every process on every node (stand-in knobs).
    pub node_env: Vec<(String, String)>,
    /// `muster build --artifacts`: where the add-on manifests come from (else the cache).
    pub artifacts: Option<PathBuf>,
    /// `muster build --helm`: what renders charts (cilium's). The lab's is the helm
    /// stand-in beside the others: it renders the test chart a lab spec brings, not
    /// cilium's real one.
    pub helm: muster_build::addons::chart::Helm,
}

impl UpOptions {
    /// Everything from one cargo target dir (`target/release`, `target/debug`); the agent
    /// packed is its copy without debug sections (`slim_agent`, made here if stale).
    pub fn new(state_dir: impl Into<PathBuf>, bin_dir: &Path) -> UpOptions {
        UpOptions {
            state_dir: state_dir.into(),
            standins: bin_dir.to_path_buf(),
            agent_bin: slim_agent::slim_agent(&bin_dir.join("nodeagent")),
            muster_bin: bin_dir.join("muster"),
            node_env: Vec::new(),
            artifacts: standins::default_addon_artifacts(),
            helm: muster_build::addons::chart::Helm {
                program: bin_dir.join(standins::HELM_STANDIN),
            },
        }
    }
}

/// One lab, on disk in its state dir (`lab.json`).
#[derive(Debug)]
pub struct Lab {
    rec: LabRecord,
}

/// The namespace prefix of the lab in `state_dir`: short (interface and namespace names
/// stay small) and the same for every command that names the same dir.
pub fn lab_id(state_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let hash = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("ml{}", &hex::encode(hash)[..6])
}

fn rendezvous_addr(spec: &LoadedSpec) -> Result<SocketAddrV4> {
    let url = &spec.cluster.rendezvous.url;
    let auth = url.authority();
    let default_port = if url.is_https() { 443 } else { 80 };
    let parsed = auth.parse::<SocketAddrV4>().ok().or_else(|| {
        auth.parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddrV4::new(ip, default_port))
    });
    let addr = parsed.ok_or_else(|| {
        LabError::Unsupported(vec![format!(
            "rendezvous url {}: the lab needs an IPv4 address there, not a name",
            url.as_str()
        )])
    })?;
    if !spec.cluster.network.subnet.contains(addr.ip()) {
        return Err(LabError::Unsupported(vec![format!(
            "rendezvous {} is outside network.subnet {}: the lab serves it on the cluster's own subnet",
            addr.ip(),
            spec.cluster.network.subnet
        )]));
    }
    Ok(addr)
}

/// What the lab cannot do without: a spec it supports, a rendezvous address on the
/// cluster's subnet, the host's tools, the stand-ins and both binaries. The rendezvous
/// address, when all is there.
fn check_can_run(spec: &LoadedSpec, opts: &UpOptions) -> Result<SocketAddrV4> {
    let c = &spec.cluster;
    let why = prereq::unsupported(c);
    if !why.is_empty() {
        return Err(LabError::Unsupported(why));
    }
    let rdv = rendezvous_addr(spec)?;
    prereq::check(c)?;
    standins::check(&opts.standins)?;
    for (what, path, flag) in [
        ("nodeagent", &opts.agent_bin, "--agent-bin"),
        ("muster", &opts.muster_bin, "the muster binary"),
    ] {
        if !path.is_file() {
            return Err(LabError::MissingBinary {
                what: what.into(),
                path: path.clone(),
                flag,
            });
        }
    }
    Ok(rdv)
}

/// The lab's id and its state dir (made, absolute), after sweeping what a crashed lab
/// left there; refuses a running one.
fn claim_state_dir(state: &Path) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(state).map_err(LabError::io(state))?;
    let id = lab_id(state);
    sweep(state, &id)?;
    std::fs::create_dir_all(state).map_err(LabError::io(state))?;
    let state = std::fs::canonicalize(state).map_err(LabError::io(state))?;
    Ok((id, state))
}

/// One record per planned node, with its namespace, veth and dirs under `state/nodes`.
fn node_records(spec: &LoadedSpec, id: &str, state: &Path) -> Vec<NodeRecord> {
    let iface = spec.cluster.network.interface.to_string();
    spec.plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node_record(n, &iface, id, state, format!("v{i}")))
        .collect()
}

/// The record of planned node `n`: namespace `<id>-<name>`, bridge-side veth `veth`.
fn node_record(
    n: &model::PlannedNode,
    iface: &str,
    id: &str,
    state: &Path,
    veth: String,
) -> NodeRecord {
    let dir = state.join("nodes").join(n.name.as_str());
    NodeRecord {
        name: n.name.to_string(),
        role: role_name(n.role),
        ip: n.ip,
        ns: format!("{id}-{}", n.name),
        veth,
        iface: iface.to_string(),
        root: dir.join("root"),
        dir,
        services: Vec::new(),
        reloadable: Vec::new(),
        halted: false,
        cut: false,
    }
}

/// `muster rendezvous` in namespace `ns`, serving the build's keys and certificate.
fn rendezvous_service(
    opts: &UpOptions,
    listen: SocketAddrV4,
    ns: String,
    state: &Path,
    build_dir: &Path,
) -> Service {
    let rdv_dir = state.join("rendezvous");
    let b = |f: &str| build_dir.join(f).display().to_string();
    Service {
        name: "rendezvous".into(),
        ns,
        argv: vec![
            opts.muster_bin.display().to_string(),
            "rendezvous".into(),
            "--listen".into(),
            listen.to_string(),
            "--data".into(),
            rdv_dir.join("data").display().to_string(),
            "--keys".into(),
            b(muster_build::bake::RENDEZVOUS_KEYS_DIR),
            "--cert".into(),
            b("rendezvous.crt"),
            "--key".into(),
            b("rendezvous.key"),
        ],
        env: Vec::new(),
        log: rdv_dir.join("rendezvous.log"),
        pid_file: rdv_dir.join("rendezvous.pid"),
    }
}

fn role_name(r: Role) -> String {
    match r {
        Role::ControlPlane => "control-plane",
        Role::Worker => "worker",
        Role::LoadBalancer => "load-balancer",
    }
    .to_string()
}

impl Lab {
    /// Builds the payload, the namespaces, the node disks and starts the rendezvous; boots no
    /// node. Sweeps what a crashed lab in the same state dir left; refuses a running one.
    pub fn create(spec: &LoadedSpec, opts: &UpOptions) -> Result<Lab> {
        let c = &spec.cluster;
        let rdv = check_can_run(spec, opts)?;
        let (id, state) = claim_state_dir(&opts.state_dir)?;

        // ---- the build, as an operator runs it
        let build_dir = state.join("build");
        let bopts = muster_build::bake::BuildOptions {
            agent_bin: opts.agent_bin.clone(),
            mtime: 0,
            helm: opts.helm.clone(),
            addons: muster_build::addons::source::Source::from_options(opts.artifacts.clone()),
        };
        // External etcd: the lab's own PKI replaces the spec's files (lab_etcd_spec).
        let lab_spec = lab_etcd_spec(spec, &state)?;
        muster_build::bake::build(lab_spec.as_ref().unwrap_or(spec), &build_dir, &bopts)?;
        let plan = &spec.plan;
        let path_dir = standins::path_dir(&opts.standins, &state.join("standin-path"))?;

        // ---- the record first, so a failure below can be swept
        let bridge_ns = format!("{id}-br");
        let prefix = c.network.subnet.prefix_len();
        let nodes = node_records(spec, &id, &state);
        let rdv_ns = nodes
            .iter()
            .find(|n| n.ip == *rdv.ip())
            .map_or_else(|| bridge_ns.clone(), |n| n.ns.clone());
        let rendezvous = rendezvous_service(opts, rdv, rdv_ns, &state, &build_dir);
        let mut lab = Lab {
            rec: LabRecord {
                format: record::FORMAT,
                id,
                state_dir: state.clone(),
                cluster: c.name.to_string(),
                spec_origin: spec.origin.clone(),
                spec_text: spec.text.clone(),
                build_dir: build_dir.clone(),
                standins_dir: opts.standins.clone(),
                path_dir,
                bridge_ns: bridge_ns.clone(),
                rendezvous,
                rendezvous_listen: rdv,
                api_endpoint: plan.api_endpoint.clone(),
                vip: c.ha.vip,
                vip_provider: plan.vip_provider.to_string(),
                vip_in_lab: vip::describe(c),
                nodes,
                node_env: opts.node_env.clone(),
                created_ms: muster_build::ops::now_ms(),
                assembled_ms: None,
                datastore_ns: None,
                datastore: None,
                external_etcd: Vec::new(),
            },
        };
        lab.rec.save()?;
        if let Err(e) = lab.materialize(spec, plan, prefix) {
            let _ = lab.teardown();
            return Err(e);
        }
        Ok(lab)
    }

    /// Namespaces, disks, VIP configs, the rendezvous.
    fn materialize(&mut self, spec: &LoadedSpec, plan: &model::Plan, prefix: u8) -> Result<()> {
        let rec = &mut self.rec;
        netns::create_bridge(&rec.bridge_ns)?;
        for (n, planned) in rec.nodes.iter_mut().zip(&plan.nodes) {
            make_machine(n, &rec.bridge_ns, &rec.build_dir, spec, planned, prefix)?;
        }
        // The rendezvous host's address first: a datastore there shares it.
        if rec.rendezvous.ns == rec.bridge_ns {
            let cidr = format!("{}/{prefix}", rec.rendezvous_listen.ip());
            netns::add_addr(&rec.bridge_ns, netns::BRIDGE, &cidr)?;
        }
        match &spec.cluster.datastore {
            model::spec::Datastore::ExternalSql { endpoint } => {
                start_datastore(rec, &spec.cluster, endpoint)?;
            }
            model::spec::Datastore::ExternalEtcd { .. } => {
                start_external_etcd(rec, &spec.cluster)?;
            }
            model::spec::Datastore::StackedEtcd => {}
        }
        rec.save()?;
        self.start_rendezvous()
    }

    /// Starts the rendezvous (same arguments, same data dir) and waits until it listens.
    fn start_rendezvous(&self) -> Result<()> {
        let rec = &self.rec;
        process::start(&rec.rendezvous)?;
        let (ns, addr) = (rec.rendezvous.ns.clone(), rec.rendezvous_listen);
        let log = rec.rendezvous.log.clone();
        let pid_file = rec.rendezvous.pid_file.clone();
        netns::wait_until(
            "the rendezvous to listen",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let addr = std::net::SocketAddr::V4(addr);
                netns::in_netns(&ns, move || {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
                })
                .unwrap_or(false)
                    || process::running(&pid_file).is_none()
            },
        )?;
        if process::running(&pid_file).is_none() {
            return Err(LabError::Died {
                node: "rendezvous".into(),
                what: "muster rendezvous".into(),
                log,
            });
        }
        Ok(())
    }

    /// Kills the rendezvous (SIGKILL, as a crash) and starts it again from its data dir.
    pub fn restart_rendezvous(&self) -> Result<()> {
        process::stop(&self.rec.rendezvous.pid_file, Duration::ZERO);
        self.start_rendezvous()
    }

    /// Kills one daemon of a running node (`agent`, `keepalived`, ...; SIGKILL to its
    /// session, as a crash) and starts it again with the node's environment.
    pub fn restart_service(&self, name: &str, service: &str) -> Result<()> {
        let node = self.rec.node(name)?;
        let mut s = node
            .services
            .iter()
            .find(|s| s.name == service)
            .cloned()
            .ok_or_else(|| LabError::Command {
                cmd: format!("restarting {service} on {name}"),
                detail: "the node runs no such service".into(),
            })?;
        process::stop(&s.pid_file, Duration::ZERO);
        s.env.extend(self.node_env(node));
        process::start(&s).map(|_| ())
    }

    /// create + boot every node + wait until every node is done, reporting each phase change.
    pub fn up(
        spec: &LoadedSpec,
        opts: &UpOptions,
        patience: Duration,
        on_change: impl FnMut(&PhaseChange),
    ) -> Result<(Lab, Duration)> {
        let mut lab = Lab::create(spec, opts)?;
        let started = Instant::now();
        lab.boot_all()?;
        let names: Vec<String> = lab.rec.nodes.iter().map(|n| n.name.clone()).collect();
        let took = lab.wait_assembled(&names, started, patience, on_change)?;
        lab.set_assembled(took)?;
        Ok((lab, took))
    }

    /// Records how long assembly took (shown by `lab status`).
    pub fn set_assembled(&mut self, took: Duration) -> Result<()> {
        self.rec.assembled_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        self.rec.save()
    }

    /// The lab recorded in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Lab> {
        Ok(Lab {
            rec: LabRecord::load(state_dir)?,
        })
    }

    pub fn record(&self) -> &LabRecord {
        &self.rec
    }

    pub fn node(&self, name: &str) -> Result<&NodeRecord> {
        self.rec.node(name)
    }

    /// The environment of every process on `node`: the stand-ins first on PATH, the node root.
    pub fn node_env(&self, node: &NodeRecord) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), standins::path_env(&self.rec.path_dir)),
            (
                "MUSTER_NODE_ROOT".to_string(),
                node.root.display().to_string(),
            ),
            // The caller's filter if it set one (`NODEAGENT_LOG=nodeagent=debug muster lab
            // up` shows where each phase's time goes), else info.
            (
                "NODEAGENT_LOG".to_string(),
                std::env::var("NODEAGENT_LOG").unwrap_or_else(|_| "info".to_string()),
            ),
        ];
        env.extend(self.rec.node_env.iter().cloned());
        env
    }

    /// Powers a node on: the kubelet (stand-in: `kubeadm kubelet-sync`) starts the static
    /// pods whose manifests are on its disk, or (k3s) the enabled k3s units start as
    /// systemd starts them at boot; then its daemons (the SQL datastore on its host, the
    /// VIP/LB daemons) and its agent start.
    pub fn boot(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        let env = self.node_env(&node);
        let kubeadm = self.spec_kind()? == DistroKind::Kubeadm;
        if kubeadm && node.role != "load-balancer" {
            let mut cmd = netns::command(&node.ns, &env, "kubeadm");
            cmd.arg("kubelet-sync");
            let out = netns::run(
                cmd,
                &format!("{name}: kubeadm kubelet-sync"),
                Duration::from_secs(60),
            )?;
            let log = node.dir.join("kubelet.log");
            append(&log, &out.all())?;
            if !out.ok() {
                return Err(LabError::Command {
                    cmd: format!("{name}: kubeadm kubelet-sync (the kubelet stand-in)"),
                    detail: out.all(),
                });
            }
        }
        if !kubeadm {
            self.start_enabled_units(&node, &env)?;
        }
        clear_stale_pid_files(&node.dir.join("run"));
        // The agent reloads these daemons after installing a new config; a machine boots
        // them with the config on its disk (the one the agent installed, if any).
        let root = model::node_files::NodeRoot::new(&node.root);
        for d in &node.reloadable {
            d.write(&root)
                .and_then(|()| d.refresh_copy(&root))
                .map_err(|e| LabError::Command {
                    cmd: format!("{name}: preparing {}", d.unit),
                    detail: e.to_string(),
                })?;
        }
        if self.rec.rendezvous.ns == node.ns {
            // The rendezvous runs on this machine (seed 002's infra host): it boots with it.
            let mut r = self.rec.rendezvous.clone();
            r.env.extend(env.iter().cloned());
            process::start(&r)?;
        }
        for s in &node.services {
            let mut s = s.clone();
            s.env.extend(env.iter().cloned());
            process::start(&s)?;
        }
        Ok(())
    }

    /// What systemd does at boot for the units the agent enabled (`k3s.service`,
    /// `k3s-agent.service`): their commands start, detached, with the node's hostname and
    /// environment, pid files where the agent's lab runner looks
    /// ([`muster_lab_units`]), so the agent finds them running.
    fn start_enabled_units(&self, node: &NodeRecord, env: &[(String, String)]) -> Result<()> {
        use muster_lab_units as lab_units;
        let root = model::node_files::NodeRoot::new(&node.root);
        // A booting machine has an empty /run.
        clear_stale_pid_files(&root.path(lab_units::RUN_DIR));
        for u in lab_units::enabled(&root) {
            process::start(&Service {
                name: u.unit,
                ns: node.ns.clone(),
                argv: as_host(&node.name, &u.argv.join(" ")),
                env: env.to_vec(),
                log: u.log,
                pid_file: u.pid_file,
            })?;
        }
        Ok(())
    }

    pub fn boot_all(&mut self) -> Result<()> {
        let names: Vec<String> = self.rec.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.boot(&n)?;
        }
        Ok(())
    }

    fn spec_kind(&self) -> Result<DistroKind> {
        let (cluster, _) =
            model::spec::load(&self.rec.spec_origin, &self.rec.spec_text).map_err(|e| {
                LabError::Bad {
                    path: LabRecord::path(&self.rec.state_dir),
                    detail: format!("the recorded spec no longer loads: {e}"),
                }
            })?;
        Ok(cluster.distribution.kind)
    }

    /// Halts a node: every process in its namespace is killed (agent, VIP daemons, etcd, the
    /// API server), the VIP it may hold is gone with it, its link goes down.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        self.rec.node_mut(name)?.halted = true;
        self.rec.save()?;
        let left = netns::kill_all(&node.ns);
        clear_stale_pid_files(&node.dir.join("run"));
        if let Some(vip) = self.rec.vip {
            let prefix = self.prefix()?;
            netns::remove_addr(&node.ns, &node.iface, &format!("{vip}/{prefix}"));
        }
        netns::set_link(&self.rec.bridge_ns, &node.veth, false)?;
        if !left.is_empty() {
            return Err(LabError::Command {
                cmd: format!("halting {name}"),
                detail: format!("processes still alive: {left:?}"),
            });
        }
        Ok(())
    }

    /// Powers a halted node on again ([`Lab::boot`]); its link comes up unless it is cut.
    pub fn start(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        if !node.cut {
            netns::set_link(&self.rec.bridge_ns, &node.veth, true)?;
        }
        self.rec.node_mut(name)?.halted = false;
        self.rec.save()?;
        self.boot(name)
    }

    /// A fresh disk for a halted node, as a machine re-created from the same build output:
    /// its root is wiped, the payload unpacked and its user data applied again (agent
    /// state, etcd data, the stand-ins' state all gone). Boot it with [`Lab::start`].
    pub fn reimage(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        if !node.halted {
            return Err(LabError::Bad {
                path: node.root.clone(),
                detail: format!("{name} is running: stop it before re-imaging it"),
            });
        }
        match std::fs::remove_dir_all(&node.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(&node.root)(e)),
        }
        let build = &self.rec.build_dir;
        disk::unpack_payload(&build.join(muster_build::bake::PAYLOAD_FILE), &node.root)?;
        let user_data = build
            .join(muster_build::bake::NODES_DIR)
            .join(name)
            .join(muster_build::render::cloud_init::USER_DATA);
        disk::apply_user_data(&user_data, &node.root)?;
        clear_stale_pid_files(&node.dir.join("run"));
        Ok(())
    }

    /// Grows the lab to `spec`, the lab's spec with more nodes, as an operator grows a
    /// cluster: `muster build` again into the same build dir (same cluster secret, same
    /// rendezvous certificate), then new machines for exactly the nodes the lab does not
    /// have yet, made from the rebuilt payload and their own seeds. The running nodes are
    /// not touched (their disks keep the payload they were made from). Boots nothing: boot
    /// the new nodes with [`Lab::boot`]. Refused: another cluster, a spec that drops or
    /// moves a node the lab has, an external etcd (its PKI is the lab's first build's).
    /// Returns the new nodes' names, in plan order.
    pub fn add_nodes(&mut self, spec: &LoadedSpec, opts: &UpOptions) -> Result<Vec<String>> {
        let c = &spec.cluster;
        let mut why = Vec::new();
        if c.name.as_str() != self.rec.cluster {
            why.push(format!(
                "the spec is cluster {}, the lab runs {}",
                c.name, self.rec.cluster
            ));
        }
        if c.external_etcd().is_some() {
            why.push("growing a lab with an external etcd cluster".into());
        }
        for n in &self.rec.nodes {
            match spec.plan.nodes.iter().find(|p| p.name.as_str() == n.name) {
                None => why.push(format!(
                    "{} is no longer planned (add_nodes only adds)",
                    n.name
                )),
                Some(p) if p.ip != n.ip || role_name(p.role) != n.role => why.push(format!(
                    "{} moved: {} {} in the lab, {} {} in the spec",
                    n.name,
                    n.role,
                    n.ip,
                    role_name(p.role),
                    p.ip
                )),
                Some(_) => {}
            }
        }
        if !why.is_empty() {
            return Err(LabError::Unsupported(why));
        }
        let bopts = muster_build::bake::BuildOptions {
            agent_bin: opts.agent_bin.clone(),
            mtime: 0,
            helm: opts.helm.clone(),
            addons: muster_build::addons::source::Source::from_options(opts.artifacts.clone()),
        };
        let report = muster_build::bake::build(spec, &self.rec.build_dir, &bopts)?;
        if let Some(changes) = &report.changes {
            tracing::info!(?changes, "rebuilt for the grown spec");
        }
        self.rec.spec_text = spec.text.clone();
        self.rec.spec_origin = spec.origin.clone();
        self.rec.save()?;
        let prefix = c.network.subnet.prefix_len();
        let iface = c.network.interface.to_string();
        let mut added = Vec::new();
        for planned in &spec.plan.nodes {
            if self
                .rec
                .nodes
                .iter()
                .any(|n| n.name == planned.name.as_str())
            {
                continue;
            }
            let veth = format!("v{}", self.rec.nodes.len());
            let state = self.rec.state_dir.clone();
            let mut n = node_record(planned, &iface, &self.rec.id, &state, veth);
            // Recorded first, so a failure below is swept with the lab.
            self.rec.nodes.push(n.clone());
            self.rec.save()?;
            let (bridge, build) = (self.rec.bridge_ns.clone(), self.rec.build_dir.clone());
            make_machine(&mut n, &bridge, &build, spec, planned, prefix)?;
            added.push(n.name.clone());
            let name = n.name.clone();
            *self.rec.node_mut(&name)? = n;
            self.rec.save()?;
        }
        Ok(added)
    }

    /// Link loss: the node's cable is pulled (its processes keep running).
    pub fn cut(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        netns::set_link(&self.rec.bridge_ns, &node.veth, false)?;
        self.rec.node_mut(name)?.cut = true;
        self.rec.save()
    }

    /// Plugs the cable back in (a halted node's link stays down until `start`).
    pub fn heal(&mut self, name: &str) -> Result<()> {
        let node = self.rec.node(name)?.clone();
        if !node.halted {
            netns::set_link(&self.rec.bridge_ns, &node.veth, true)?;
        }
        self.rec.node_mut(name)?.cut = false;
        self.rec.save()
    }

    fn prefix(&self) -> Result<u8> {
        let (cluster, _) =
            model::spec::load(&self.rec.spec_origin, &self.rec.spec_text).map_err(|e| {
                LabError::Bad {
                    path: LabRecord::path(&self.rec.state_dir),
                    detail: e.to_string(),
                }
            })?;
        Ok(cluster.network.subnet.prefix_len())
    }

    /// `ip netns exec` into the node with its environment (root, stand-ins on PATH).
    pub fn command(
        &self,
        name: &str,
        argv: &[impl AsRef<std::ffi::OsStr>],
    ) -> Result<std::process::Command> {
        let node = self.rec.node(name)?;
        let (program, args) = argv.split_first().ok_or_else(|| LabError::Command {
            cmd: format!("exec on {name}"),
            detail: "no command given".into(),
        })?;
        let mut cmd = netns::command(&node.ns, &self.node_env(node), program);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `argv` on the node to completion and returns what it printed.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<netns::Out> {
        let cmd = self.command(name, argv)?;
        netns::run(
            cmd,
            &format!("{name}: {}", argv.join(" ")),
            netns::EXEC_DEADLINE,
        )
    }

    /// `etcdctl` against the node's local member with kubeadm's API-server client certificate.
    pub fn etcdctl(&self, name: &str, args: &[&str]) -> Result<netns::Out> {
        let root = &self.rec.node(name)?.root;
        let mut argv = vec!["env".to_string(), "ETCDCTL_API=3".into(), "etcdctl".into()];
        argv.extend(etcdctl_flags(root));
        argv.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.exec(name, &refs)
    }

    /// The external etcd's members (external-etcd specs; empty otherwise).
    pub fn external_etcd(&self) -> &[etcd::Member] {
        &self.rec.external_etcd
    }

    fn etcd_member(&self, name: &str) -> Result<&etcd::Member> {
        self.rec
            .external_etcd
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| LabError::UnknownNode {
                name: name.to_string(),
                known: self
                    .rec
                    .external_etcd
                    .iter()
                    .map(|m| m.name.clone())
                    .collect(),
            })
    }

    /// Stops one external etcd member (SIGTERM, as `systemctl stop etcd` would).
    pub fn etcd_stop(&self, name: &str) -> Result<()> {
        let m = self.etcd_member(name)?;
        process::stop(&m.service.pid_file, Duration::from_secs(5));
        Ok(())
    }

    /// Starts a stopped external etcd member again from its data dir.
    pub fn etcd_start(&self, name: &str) -> Result<()> {
        let m = self.etcd_member(name)?;
        // Past the first start the cluster exists: the member rejoins from its data dir.
        process::start(&m.service)?;
        Ok(())
    }

    /// `etcdctl` against the external etcd cluster (every endpoint) with the API server's
    /// client certificate, run from the first member's namespace.
    pub fn external_etcdctl(&self, args: &[&str]) -> Result<netns::Out> {
        let first = self.rec.external_etcd.first().ok_or_else(|| {
            LabError::Unsupported(vec!["this lab has no external etcd cluster".into()])
        })?;
        let pki = etcd::Pki {
            dir: self.rec.state_dir.join(etcd::DIR).join("pki"),
        };
        let urls: Vec<String> = self
            .rec
            .external_etcd
            .iter()
            .map(|m| m.client_url())
            .collect();
        let mut cmd = netns::command(&first.ns, &[("ETCDCTL_API".into(), "3".into())], "etcdctl");
        cmd.args(etcd::etcdctl_flags(&pki, &urls)).args(args);
        netns::run(
            cmd,
            &format!("etcdctl {}", args.join(" ")),
            netns::EXEC_DEADLINE,
        )
    }

    /// Each external etcd member and whether `etcdctl endpoint health` says it is healthy.
    pub fn external_etcd_health(&self) -> Vec<(String, bool)> {
        let pki = etcd::Pki {
            dir: self.rec.state_dir.join(etcd::DIR).join("pki"),
        };
        self.rec
            .external_etcd
            .iter()
            .map(|m| {
                let mut cmd =
                    netns::command(&m.ns, &[("ETCDCTL_API".into(), "3".into())], "etcdctl");
                cmd.args(etcd::etcdctl_flags(&pki, &[m.client_url()]))
                    .args(["endpoint", "health"]);
                let ok = process::running(&m.service.pid_file).is_some()
                    && netns::run(cmd, "etcdctl endpoint health", Duration::from_secs(10))
                        .is_ok_and(|o| o.ok());
                (m.name.clone(), ok)
            })
            .collect()
    }

    /// Nodes whose interface holds the VIP right now.
    pub fn vip_holders(&self) -> Vec<String> {
        let Some(vip) = self.rec.vip else {
            return Vec::new();
        };
        self.rec
            .nodes
            .iter()
            .filter(|n| netns::has_addr(&n.ns, &n.iface, &vip.to_string()))
            .map(|n| n.name.clone())
            .collect()
    }

    /// The rendezvous audit log, read as the operator (the build dir's secret) from inside
    /// the rendezvous' namespace.
    pub fn audit(&self) -> Result<Vec<AuditEntry>> {
        let build = self.rec.build_dir.clone();
        netns::in_netns(
            &self.rec.rendezvous.ns,
            move || -> Result<Vec<AuditEntry>> {
                let dir = muster_build::ops::BuildDir::load(&build)?;
                let client = dir.client(Duration::from_secs(5))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(LabError::io("tokio runtime"))?;
                rt.block_on(protocol::status::audit_log(&client))
                    .map_err(|e| LabError::Ops(dir.rendezvous_error(e)))
            },
        )?
    }

    /// Kills everything, deletes the namespaces and the state dir. Returns what could not be
    /// removed (empty when all is gone).
    pub fn down(self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&self) -> Vec<String> {
        let mut left = Vec::new();
        for ns in self.rec.namespaces() {
            if let Err(e) = netns::delete(&ns) {
                left.push(e.to_string());
            }
        }
        left.extend(remove_state(&self.rec.state_dir));
        left
    }
}

/// One machine of the plan made from the build in `build_dir`: its link on the bridge with
/// its planned address, its disk (payload and user data), its daemons.
fn make_machine(
    n: &mut NodeRecord,
    bridge_ns: &str,
    build_dir: &Path,
    spec: &LoadedSpec,
    planned: &model::PlannedNode,
    prefix: u8,
) -> Result<()> {
    netns::add_host(
        bridge_ns,
        &netns::HostLink {
            ns: &n.ns,
            veth: &n.veth,
            iface: &n.iface,
            cidr: &format!("{}/{prefix}", n.ip),
        },
    )?;
    disk::unpack_payload(&build_dir.join(muster_build::bake::PAYLOAD_FILE), &n.root)?;
    let user_data = build_dir
        .join(muster_build::bake::NODES_DIR)
        .join(&n.name)
        .join(muster_build::render::cloud_init::USER_DATA);
    disk::apply_user_data(&user_data, &n.root)?;
    let dirs = vip::NodeDirs {
        dir: &n.dir,
        root: &n.root,
    };
    (n.services, n.reloadable) = vip::services(&spec.cluster, &spec.plan, planned, &n.ns, &dirs)?;
    n.services.push(agent_service(n));
    Ok(())
}

/// `etcdctl` flags for a node's local member: with kubeadm's API-server client certificate
/// (kubeadm's own paths under the node's root), or on a k3s server with embedded etcd, with
/// k3s's etcd client certificate.
pub fn etcdctl_flags(root: &Path) -> Vec<String> {
    let k3s = root.join("var/lib/rancher/k3s/server/tls/etcd");
    let (ca, cert, key) = if k3s.join("client.crt").is_file() {
        (
            k3s.join("server-ca.crt"),
            k3s.join("client.crt"),
            k3s.join("client.key"),
        )
    } else {
        let pki = root.join("etc/kubernetes/pki");
        (
            pki.join("etcd/ca.crt"),
            pki.join("apiserver-etcd-client.crt"),
            pki.join("apiserver-etcd-client.key"),
        )
    };
    vec![
        "--endpoints=https://127.0.0.1:2379".into(),
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
        "--command-timeout=5s".into(),
    ]
}

/// `command` (a shell command line) with the node's hostname: `unshare --uts`, then
/// `hostname`, then exec (the pid stays the command's).
fn as_host(node: &str, command: &str) -> Vec<String> {
    vec![
        "unshare".into(),
        "--uts".into(),
        "sh".into(),
        "-c".into(),
        format!("hostname {node} && exec {command}"),
    ]
}

/// Agent: the payload's own `nodeagent`, with the node's hostname (`unshare --uts`).
fn agent_service(n: &NodeRecord) -> Service {
    let agent = n.root.join(model::node_files::AGENT_BINARY);
    let command = format!("{} run --lab --root {}", agent.display(), n.root.display());
    Service {
        name: "agent".into(),
        ns: n.ns.clone(),
        argv: as_host(&n.name, &command),
        env: Vec::new(),
        log: n.dir.join("agent.log"),
        pid_file: n.dir.join("run").join("agent.pid"),
    }
}

/// A booting machine has an empty /run: pid files (`*.pid`) of dead processes go
/// (keepalived refuses to start over its own pid file while PID 1 has not reaped the old,
/// killed process yet).
fn clear_stale_pid_files(run: &Path) {
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "pid") && process::running(&p).is_none() {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(LabError::io(path))?;
    f.write_all(text.as_bytes()).map_err(LabError::io(path))
}

/// Where the lab's SQL datastore server lives in the state dir.
const DATASTORE_DIR: &str = "mariadb";
/// What the lab puts in its state dir; nothing else there is touched.
const STATE_ENTRIES: [&str; 7] = [
    record::FILE,
    "build",
    "standin-path",
    "rendezvous",
    "nodes",
    DATASTORE_DIR,
    etcd::DIR,
];

/// Starts the external-sql datastore (MariaDB) at the endpoint's address before any node
/// boots: in the namespace of the planned node that owns the address (then it is one of
/// that node's services, halted and booted with it), in the rendezvous's namespace when the
/// endpoint is the rendezvous host (one address, one host: a second namespace with the same
/// address on the bridge took the traffic and refused it), else in a namespace of its own
/// on the bridge (`<id>-datastore`).
fn start_datastore(rec: &mut LabRecord, c: &model::Cluster, endpoint: &str) -> Result<()> {
    let dsn = mariadb::endpoint_dsn(endpoint)?;
    let ip: Ipv4Addr = dsn.host.parse().map_err(|_| {
        LabError::Unsupported(vec![format!(
            "datastore endpoint host {}: the lab needs an IPv4 address there, not a name",
            dsn.host
        )])
    })?;
    if !c.network.subnet.contains(&ip) {
        return Err(LabError::Unsupported(vec![format!(
            "datastore endpoint {ip} is outside network.subnet {}: the lab serves it on the \
             cluster's own subnet",
            c.network.subnet
        )]));
    }
    let on_node = rec.nodes.iter().position(|n| n.ip == ip);
    let ns = match on_node {
        Some(i) => rec.nodes[i].ns.clone(),
        None if *rec.rendezvous_listen.ip() == ip => rec.rendezvous.ns.clone(),
        None => {
            let ns = format!("{}-datastore", rec.id);
            rec.datastore_ns = Some(ns.clone());
            rec.save()?;
            netns::add_host(
                &rec.bridge_ns,
                &netns::HostLink {
                    ns: &ns,
                    veth: "vdb",
                    iface: &c.network.interface.to_string(),
                    cidr: &format!("{ip}/{}", c.network.subnet.prefix_len()),
                },
            )?;
            ns
        }
    };
    let listen = std::net::SocketAddr::from((ip, dsn.port));
    let dir = rec.state_dir.join(DATASTORE_DIR);
    let svc = mariadb::launch(&dir, Some(&ns), listen, endpoint)?;
    match on_node {
        Some(i) => rec.nodes[i].services.insert(0, svc),
        None => rec.datastore = Some(svc),
    }
    rec.save()
}

/// The members of the lab's external etcd: `etcd-N` at the N-th endpoint's address.
fn etcd_members(c: &model::Cluster) -> Result<Vec<(String, Ipv4Addr, u16)>> {
    let Some(endpoints) = c.external_etcd() else {
        return Ok(Vec::new());
    };
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (ip, port) = etcd::endpoint_addr(e)?;
            if !c.network.subnet.contains(&ip) {
                return Err(LabError::Unsupported(vec![format!(
                    "etcd endpoint {ip} is outside network.subnet {}: the lab serves it on the \
                     cluster's own subnet",
                    c.network.subnet
                )]));
            }
            Ok((format!("etcd-{}", i + 1), ip, port))
        })
        .collect()
}

/// For an external-etcd spec: the spec with the lab's etcd PKI (made in the state dir) in
/// place of its `caFile`/`certFile`/`keyFile`; `None` for every other spec.
fn lab_etcd_spec(spec: &LoadedSpec, state: &Path) -> Result<Option<LoadedSpec>> {
    let members = etcd_members(&spec.cluster)?;
    if members.is_empty() {
        return Ok(None);
    }
    let named: Vec<(String, Ipv4Addr)> =
        members.iter().map(|(n, ip, _)| (n.clone(), *ip)).collect();
    let pki = etcd::generate(&state.join(etcd::DIR).join("pki"), &named)?;
    let mut lab = spec.clone();
    if let model::spec::Datastore::ExternalEtcd {
        ca_file,
        cert_file,
        key_file,
        ..
    } = &mut lab.cluster.datastore
    {
        *ca_file = Some(pki.ca().display().to_string());
        *cert_file = Some(pki.client_cert().display().to_string());
        *key_file = Some(pki.client_key().display().to_string());
    }
    Ok(Some(lab))
}

/// What the lab runs for the datastore, in words (says when it differs from the spec).
pub fn describe_datastore(c: &model::Cluster) -> Option<String> {
    let endpoints = c.external_etcd()?;
    Some(format!(
        "external etcd: a REAL {}-member etcd cluster (TLS, client-cert auth) at {}; the lab \
         makes its own etcd CA and API-server client certificate (in <state>/etcd/pki) and \
         builds with them instead of the spec's caFile/certFile/keyFile",
        endpoints.len(),
        endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Starts the external etcd cluster, each member in a namespace of its own on the bridge
/// at its endpoint's address, before any node boots; waits until every member is healthy.
fn start_external_etcd(rec: &mut LabRecord, c: &model::Cluster) -> Result<()> {
    let members = etcd_members(c)?;
    let dir = rec.state_dir.join(etcd::DIR);
    let pki = etcd::Pki {
        dir: dir.join("pki"),
    };
    let named: Vec<(String, Ipv4Addr)> =
        members.iter().map(|(n, ip, _)| (n.clone(), *ip)).collect();
    let initial = etcd::initial_cluster(&named);
    for (i, (name, ip, port)) in members.iter().enumerate() {
        let ns = format!("{}-{name}", rec.id);
        let service = etcd::member_service(&dir, &pki, &ns, (name, *ip, *port), &initial)?;
        rec.external_etcd.push(etcd::Member {
            name: name.clone(),
            ip: *ip,
            client_port: *port,
            ns: ns.clone(),
            service,
        });
        rec.save()?;
        netns::add_host(
            &rec.bridge_ns,
            &netns::HostLink {
                ns: &ns,
                veth: &format!("ve{i}"),
                iface: &c.network.interface.to_string(),
                cidr: &format!("{ip}/{}", c.network.subnet.prefix_len()),
            },
        )?;
    }
    for m in &rec.external_etcd {
        process::start(&m.service)?;
    }
    let lab = Lab { rec: rec.clone() };
    netns::wait_until(
        "the external etcd cluster to be healthy",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || lab.external_etcd_health().iter().all(|(_, ok)| *ok),
    )
}

/// Removes the lab's entries from `dir`, then `dir` itself if that left it empty. Returns
/// what could not be removed.
fn remove_state(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for entry in STATE_ENTRIES {
        let p = dir.join(entry);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                left.push(format!("{}: {e}", p.display()));
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            left.push(format!("{}: {e}", dir.display()));
        }
        _ => {}
    }
    left
}

/// What a crashed lab in `state_dir` left (namespaces `<id>-*`, processes, files) is removed;
/// a lab whose rendezvous still runs is refused.
pub fn sweep(state_dir: &Path, id: &str) -> Result<()> {
    if let Ok(rec) = LabRecord::load(state_dir)
        && let Some(pid) = process::running(&rec.rendezvous.pid_file)
    {
        return Err(LabError::AlreadyUp {
            dir: state_dir.to_path_buf(),
            pid,
        });
    }
    let mine = format!("{id}-");
    let mut left = Vec::new();
    for ns in netns::list().into_iter().filter(|n| n.starts_with(&mine)) {
        tracing::info!(namespace = %ns, "sweeping a namespace a crashed lab left");
        if let Err(e) = netns::delete(&ns) {
            left.push(e.to_string());
        }
    }
    // The dir itself may hold the user's other files; only the lab's entries must go.
    left.extend(
        remove_state(state_dir)
            .into_iter()
            .filter(|l| !l.starts_with(&format!("{}:", state_dir.display()))),
    );
    if left.is_empty() {
        Ok(())
    } else {
        Err(LabError::Command {
            cmd: format!("sweeping the earlier lab in {}", state_dir.display()),
            detail: left.join("; "),
        })
    }
}

/// Removes the lab in `state_dir` from whatever is there (a record or only namespaces):
/// `muster lab down`. Returns the leftovers.
pub fn down_dir(state_dir: &Path) -> Vec<String> {
    match Lab::open(state_dir) {
        Ok(lab) => lab.down(),
        Err(_) => {
            let id = lab_id(state_dir);
            let mine = format!("{id}-");
            let mut left: Vec<String> = netns::list()
                .into_iter()
                .filter(|n| n.starts_with(&mine))
                .filter_map(|ns| netns::delete(&ns).err().map(|e| e.to_string()))
                .collect();
            left.extend(remove_state(state_dir));
            left
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_url(url: &str) -> LoadedSpec {
        let text = muster_build::spec_source::DEFAULT_SPEC.replace("https://10.240.0.2:7443", url);
        LoadedSpec::parse("t".into(), text).unwrap()
    }

    #[test]
    fn the_rendezvous_must_be_an_address_on_the_cluster_subnet() {
        let ok = rendezvous_addr(&spec_with_url("https://10.240.0.2:7443")).unwrap();
        assert_eq!(ok.to_string(), "10.240.0.2:7443");
        let default_port = rendezvous_addr(&spec_with_url("https://10.240.0.3")).unwrap();
        assert_eq!(default_port.port(), 443);
        let outside = rendezvous_addr(&spec_with_url("https://192.168.9.1:7443")).unwrap_err();
        assert!(
            outside.to_string().contains("outside network.subnet"),
            "{outside}"
        );
        let name = rendezvous_addr(&spec_with_url("https://rdv.lan:7443")).unwrap_err();
        assert!(name.to_string().contains("not a name"), "{name}");
    }

    #[test]
    fn the_lab_id_is_short_and_follows_the_state_dir() {
        let a = lab_id(Path::new("/nonexistent/a"));
        assert_eq!(a, lab_id(Path::new("/nonexistent/a")));
        assert_ne!(a, lab_id(Path::new("/nonexistent/b")));
        assert_eq!(a.len(), 8);
    }
}
