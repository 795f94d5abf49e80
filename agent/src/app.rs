//! Wiring a real node: baked config + identity → `Config`, `Settings`, the distro, and
//! the driver loop. Generic over the `Coordinator` so the rendezvous client plugs in here.

use crate::bootstrap::driver::{RunEnd, Settings};
use crate::bootstrap::{Config, Driver, FileStore};
use crate::coord::Coordinator;
use crate::distro::{NodeContext, k3s::K3s, kubeadm::Kubeadm};
use crate::exec::RealRunner;
use crate::host::FsHost;
use crate::preflight::Options;
use crate::systemd::{NodeSystemd, SdNotifier};
use model::Role;
use model::baked::{BakedCluster, NodeIdentity};
use model::node_files::{CLUSTER_CONFIG, NODE_IDENTITY, NodeRoot};
use model::spec::{Datastore, DistroKind, VipProvider};
use protocol::clock::SystemClock;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("node {0} is not in the baked cluster config")]
    UnknownNode(String),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    #[error("the upgrade's payload HTTP client: {0}")]
    UpgradeHttp(String),
    #[error(transparent)]
    Store(#[from] crate::bootstrap::store::StoreError),
}

fn read_json<T: serde::de::DeserializeOwned>(root: &NodeRoot, rel: &str) -> Result<T, AppError> {
    let path = root.path(rel);
    let err = |detail: String| AppError::Read {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

/// The cluster secret cloud-init delivered (`etc/muster/cluster-secret`, 64 hex digits).
pub fn load_secret(root: &NodeRoot) -> Result<model::secret::ClusterSecret, AppError> {
    let path = root.path(model::node_files::CLUSTER_SECRET);
    let err = |detail: String| AppError::Read {
        path: path.display().to_string(),
        detail,
    };
    if let Some(mode) = model::fsutil::exposed_mode(&path) {
        tracing::warn!(
            "the cluster secret {} has mode {mode:o}: readable by group or others; chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    model::secret::ClusterSecret::from_hex(&text).map_err(|e| err(e.to_string()))
}

pub fn load(root: &NodeRoot) -> Result<(BakedCluster, NodeIdentity), AppError> {
    Ok((
        read_json(root, CLUSTER_CONFIG)?,
        read_json(root, NODE_IDENTITY)?,
    ))
}

/// The pure configuration and the driver settings for this node.
pub fn configure(baked: &BakedCluster, id: &NodeIdentity) -> Result<(Config, Settings), AppError> {
    let me = baked
        .node(&id.name)
        .ok_or_else(|| AppError::UnknownNode(id.name.to_string()))?;
    let spec = &baked.spec;
    let kind = spec.distribution.kind;
    let seed = id
        .name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let mut cfg = Config::new(me.role, kind, spec.stacked_etcd(), seed);
    cfg.worker_join_slots = spec.rendezvous.worker_join_cap.max(1);
    cfg.version = Some(spec.distribution.version);
    if kind == DistroKind::K3s && matches!(spec.datastore, Datastore::ExternalSql { .. }) {
        // After the first server, the rest may start together (no etcd learner race).
        cfg.cp_join_slots = spec.topology.control_planes.max(1);
    }
    let provider = spec.ha.provider;
    let units = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let lb_units = match provider {
        VipProvider::Haproxy => units(&["haproxy.service", "keepalived.service"]),
        VipProvider::Nginx if spec.topology.load_balancers > 1 => {
            units(&["nginx.service", "keepalived.service"])
        }
        VipProvider::Nginx => units(&["nginx.service"]),
        _ => Vec::new(),
    };
    /// Renewed every 5 s while applying; a dead applier's lease ends within 15 s.
    const ADDONS_LEASE_TTL: Duration = Duration::from_secs(15);
    let settings = Settings {
        node: id.name.to_string(),
        ip: me.ip,
        control_planes: baked
            .nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| (n.name.to_string(), n.ip))
            .collect(),
        // Longer than the slowest kubeadm init/join (about a minute) with room to spare.
        lease_ttl: Duration::from_secs(300),
        addons_lease_ttl: ADDONS_LEASE_TTL,
        step_timeout: DEFAULT_STEP_TIMEOUT,
        heartbeat_ttl: Duration::from_secs(90),
        heartbeat_every_ms: 20_000,
        token_ttl_ms: match kind {
            DistroKind::Kubeadm => 24 * 3600 * 1000,
            DistroKind::K3s => 10 * 365 * 24 * 3600 * 1000,
        },
        cert_key_ttl_ms: (kind == DistroKind::Kubeadm).then_some(2 * 3600 * 1000),
        material_margin_ms: 10 * 60 * 1000,
        lb_units,
        vip_units: if provider == VipProvider::Keepalived {
            units(&["keepalived.service"])
        } else {
            Vec::new()
        },
        kube_vip_super_admin: kind == DistroKind::Kubeadm
            && provider == VipProvider::KubeVip
            && spec.distribution.version.needs_super_admin_conf(),
        external_etcd: spec
            .external_etcd()
            .map(|e| e.iter().map(|u| u.to_string()).collect())
            .unwrap_or_default(),
        depends_on: crate::bootstrap::diagnosis::Dependencies::of(baked, me.role),
        lb_follow: None,
    };
    Ok((cfg, settings))
}

/// How long an init or join may run before it is abandoned and undone (`--step-timeout`).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs the bootstrap on a real node until `stop` resolves, with the `baked` config and
/// identity [`load`] read from `root` (the caller has them already: it names the node in
/// its first log line and its rendezvous client).
/// `upgrade`: the rendezvous client the upgrade roll uses (the agent's own), `None` to
/// leave upgrades out (tests of the bootstrap alone).
pub async fn run_node<C: Coordinator>(
    root: NodeRoot,
    (baked, id): (BakedCluster, NodeIdentity),
    lab: bool,
    step_timeout: Duration,
    coord: C,
    upgrade: Option<protocol::Client>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<RunEnd, AppError> {
    let (mut cfg, mut settings) = configure(&baked, &id)?;
    settings.step_timeout = step_timeout;
    if let Some(me) = baked.node(&id.name)
        && crate::lb_follow::follows(&baked, me)
    {
        cfg.follows_members = true;
        settings.lb_follow = Some(crate::lb_follow::Follow {
            root: root.clone(),
            baked: std::sync::Arc::new(baked.clone()),
            node: me.clone(),
        });
    }
    let port = baked.spec.ha.api_port;
    let ctx = NodeContext {
        root: root.clone(),
        node: id.name.clone(),
        advertise: settings.ip,
        api_endpoint: baked.api_endpoint.clone(),
        api_port: port,
        external_etcd: baked.spec.external_etcd().is_some(),
    };
    let mut preflight = if lab {
        Options::lab()
    } else {
        Options::default()
    };
    preflight.runtime_socket = "run/containerd/containerd.sock".into();
    preflight.interface = Some(baked.spec.network.interface.to_string());
    preflight.address = Some(settings.ip);
    preflight.probe_host = true;
    // A load balancer runs no Kubernetes: its image need not carry it.
    preflight.tools = (cfg.role != model::Role::LoadBalancer).then(|| {
        crate::preflight::Tools::for_spec(
            baked.spec.distribution.kind,
            baked.spec.distribution.version.to_string(),
            lab,
        )
    });
    let host = FsHost {
        root: root.clone(),
        node: id.name.clone(),
        preflight,
    };
    // A namespace lab has no system bus: `--lab` uses the lab stand-in (systemd.rs).
    let systemd = NodeSystemd::for_run(lab.then(|| root.clone())).await?;
    let store = FileStore::new(root.clone());
    let seed = rand::random::<u64>();
    let roll = match upgrade {
        Some(client) => Some(upgrade_roll(&root, &baked, &id, client, systemd.clone())?),
        None => None,
    };
    let parts = Parts {
        cfg,
        settings,
        coord,
        systemd: systemd.clone(),
        host,
        store,
        seed,
        roll,
    };
    match baked.spec.distribution.kind {
        DistroKind::Kubeadm => drive(parts, Kubeadm::new(ctx, RealRunner::default()), stop).await,
        DistroKind::K3s => drive(parts, K3s::new(ctx, RealRunner::default(), systemd), stop).await,
    }
}

/// How long a drain may be held back (by PodDisruptionBudgets, terminating pods) before
/// the step fails and the roll stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restarted kubelet has to report Ready at the new version.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The upgrade lock's lease (renewed before every step; longer than the longest step).
const UPGRADE_LEASE: Duration = Duration::from_secs(300);

type Roll = crate::upgrade::live::Live<RealRunner, NodeSystemd>;

fn upgrade_roll(
    root: &NodeRoot,
    baked: &BakedCluster,
    id: &NodeIdentity,
    client: protocol::Client,
    systemd: NodeSystemd,
) -> Result<Roll, AppError> {
    use crate::upgrade::{live, node_side::NodeSide, rendezvous_side::RendezvousSide};
    let me = baked
        .node(&id.name)
        .ok_or_else(|| AppError::UnknownNode(id.name.to_string()))?;
    let identity = live::Identity {
        node: id.name.to_string(),
        cluster_id: baked.cluster_id.clone(),
        distribution: baked.spec.distribution.kind,
        role: me.role,
        running: baked.spec.distribution.version,
        planned: baked.upgrading_nodes(),
        max_unavailable: baked.spec.distribution.max_unavailable,
    };
    let state_dir = root.path("var/lib/nodeagent");
    let rdv = RendezvousSide::new(
        client,
        // A payload URL is fetched over plain HTTP (its integrity is the signed release's
        // SHA-256, checked before anything is installed); HTTPS URLs are not trusted yet.
        protocol::http_client(None, Duration::from_secs(60))
            .map_err(|e| AppError::UpgradeHttp(e.to_string()))?,
        id.name.as_str(),
        &state_dir,
        UPGRADE_LEASE,
    );
    let node = NodeSide {
        root: root.clone(),
        node: id.name.to_string(),
        runner: RealRunner::default(),
        systemd,
        drain_timeout: DRAIN_TIMEOUT,
        ready_timeout: READY_TIMEOUT,
    };
    Ok(live::Live::new(identity, root.clone(), rdv, node)?)
}

/// Everything a driver needs but the distribution, whose type picks the driver's type.
struct Parts<C> {
    cfg: Config,
    settings: Settings,
    coord: C,
    systemd: NodeSystemd,
    host: FsHost,
    store: FileStore,
    seed: u64,
    roll: Option<Roll>,
}

async fn drive<C: Coordinator, D: crate::distro::Distro>(
    p: Parts<C>,
    distro: D,
    stop: impl std::future::Future<Output = ()>,
) -> Result<RunEnd, AppError> {
    let mut d = Driver::new(
        p.cfg,
        p.settings,
        p.coord,
        distro,
        p.systemd,
        p.host,
        SystemClock,
        p.store,
        SdNotifier,
        p.seed,
    )?;
    Ok(match p.roll {
        Some(mut roll) => d.run_with(stop, &mut roll).await,
        None => d.run_with(stop, &mut ()).await,
    })
}
