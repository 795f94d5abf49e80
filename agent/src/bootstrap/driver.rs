//! The driver: performs the actions `state::step` asks for against the rendezvous
//! (`Coordinator`), the distribution (`Distro`), systemd and the node's files (`Host`),
//! persists every transition, heartbeats the member report and notifies systemd.

use super::state::{self, Action, Config, Event, Phase, State};
use super::store::{Persisted, Store};
use crate::coord::{Acquired, Coordinator, Created, ErrorKind, Fence};
use crate::distro::{Distro, EtcdAccess, InitSecrets};
use crate::host::Host;
use crate::systemd::{Notifier, Systemd};
use protocol::clock::{Clock, Millis};
use protocol::etcd_view::EtcdView;
use protocol::keys;
use protocol::records::{
    InitRecord, JoinMaterial, RefreshRequest, new_bootstrap_token, new_certificate_key,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Fixed facts and tunables of this node's run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub ip: Ipv4Addr,
    /// Every control plane (name, address), this node included if it is one.
    pub control_planes: Vec<(String, Ipv4Addr)>,
    pub lease_ttl: Duration,
    /// The longest an init or join may run: past it the call is abandoned (its process
    /// killed) and compensated like a failure. Below `lease_ttl`, so a hung kubeadm never
    /// holds a join slot until its lease runs out (it would not: the lease is renewed
    /// while the call runs).
    pub step_timeout: Duration,
    pub heartbeat_ttl: Duration,
    pub heartbeat_every_ms: u64,
    pub token_ttl_ms: u64,
    /// `None` for k3s (no certificate key).
    pub cert_key_ttl_ms: Option<u64>,
    /// Material expiring within this margin counts as expired.
    pub material_margin_ms: u64,
    /// Units started on a load-balancer node (haproxy/nginx, keepalived).
    pub lb_units: Vec<String>,
    /// Units started on control planes before init/join (keepalived as VIP provider).
    pub vip_units: Vec<String>,
    /// kubeadm ≥ 1.29 with kube-vip: the init node mounts super-admin.conf during init.
    pub kube_vip_super_admin: bool,
    /// The external etcd cluster's client URLs (kubeadm `etcd.external`); empty when etcd
    /// is stacked on the control planes (or there is none).
    pub external_etcd: Vec<String>,
}

impl Settings {
    pub fn peer_url(&self) -> String {
        format!("https://{}:2380", self.ip)
    }

    /// Every control plane's etcd client endpoint, this node's first.
    pub fn etcd_endpoints_own_first(&self) -> Vec<String> {
        let mut own = self.etcd_endpoints(true);
        let mine = format!("https://{}:2379", self.ip);
        own.sort_by_key(|e| *e != mine);
        own
    }

    /// Where this node's view of etcd asks: the external cluster's endpoints, or every
    /// control plane's (its own first) when etcd is stacked.
    pub fn etcd_view_endpoints(&self) -> Vec<String> {
        if self.external_etcd.is_empty() {
            self.etcd_endpoints_own_first()
        } else {
            self.external_etcd.clone()
        }
    }

    /// A control plane has a view of etcd: stacked members, or an external cluster.
    pub fn has_etcd_view(&self, stacked_etcd: bool) -> bool {
        stacked_etcd || !self.external_etcd.is_empty()
    }

    fn etcd_endpoints(&self, include_self: bool) -> Vec<String> {
        self.control_planes
            .iter()
            .filter(|(n, _)| include_self || *n != self.node)
            .map(|(_, ip)| format!("https://{ip}:2379"))
            .collect()
    }
}

/// What one tick did: the phase now and how long to wait before the next tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub phase: &'static str,
    pub wait: Duration,
    pub done: bool,
}

#[derive(Debug)]
pub struct Driver<C, D, S, H, K, St, N> {
    pub cfg: Config,
    pub settings: Settings,
    pub coord: C,
    pub distro: D,
    pub systemd: S,
    pub host: H,
    pub clock: K,
    pub store: St,
    pub notifier: N,
    persisted: Persisted,
    rng: rand::rngs::StdRng,
    last_heartbeat: Option<Millis>,
    ready_sent: bool,
}

type Outcome = Result<Event, Event>;

impl<C, D, S, H, K, St, N> Driver<C, D, S, H, K, St, N>
where
    C: Coordinator,
    D: Distro,
    S: Systemd,
    H: Host,
    K: Clock,
    St: Store,
    N: Notifier,
{
    /// Loads the persisted state (resuming a cut-short phase safely) or starts afresh.
    #[allow(clippy::too_many_arguments, reason = "every seam is injected")]
    pub fn new(
        cfg: Config,
        settings: Settings,
        coord: C,
        distro: D,
        systemd: S,
        host: H,
        clock: K,
        store: St,
        notifier: N,
        rng_seed: u64,
    ) -> Result<Self, super::store::StoreError> {
        use rand::SeedableRng;
        let now = clock.now_ms();
        let persisted = match store.load()? {
            Some(mut p) if p.node == settings.node => {
                let resumed = p.state.clone().resume();
                p.enter(resumed, now);
                p
            }
            _ => Persisted::new(&settings.node, now),
        };
        store.save(&persisted)?;
        Ok(Driver {
            cfg,
            settings,
            coord,
            distro,
            systemd,
            host,
            clock,
            store,
            notifier,
            persisted,
            rng: rand::rngs::StdRng::seed_from_u64(rng_seed),
            last_heartbeat: None,
            ready_sent: false,
        })
    }

    pub fn state(&self) -> &State {
        &self.persisted.state
    }

    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    /// The member report: heartbeated to the rendezvous and written to `AGENT_STATUS`.
    pub fn report(&self) -> serde_json::Value {
        crate::report::member_report(self.cfg.role, &self.persisted, self.clock.now_ms()).to_json()
    }

    /// On a joined control plane: its view of etcd (members, health, quorum) through its
    /// own credentials; stacked: its own endpoint first; external: the external cluster's
    /// endpoints with the API server's client certificate. `None` elsewhere or when no
    /// member answers (logged).
    pub async fn etcd_view(&self) -> Option<EtcdView> {
        if !(self.cfg.role == model::Role::ControlPlane
            && self.settings.has_etcd_view(self.cfg.stacked_etcd)
            && self.persisted.state.phase == Phase::Done)
        {
            return None;
        }
        let creds = match self.distro.etcd_view_creds().await {
            Ok(c) => c?,
            Err(e) => {
                tracing::debug!(error = %e, "no etcd credentials for the etcd view");
                return None;
            }
        };
        let access = EtcdAccess {
            endpoints: self.settings.etcd_view_endpoints(),
            creds,
        };
        match crate::etcd_query::observe(
            &self.distro,
            &access,
            &self.settings.node,
            self.clock.now_ms(),
            crate::etcd_query::MEMBER_DEADLINE,
        )
        .await
        {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "cannot observe etcd for the member report");
                None
            }
        }
    }

    /// Runs the actions of the current phase, steps, persists. Never fails: errors become
    /// events and are carried in the state.
    pub async fn tick(&mut self) -> Tick {
        let acts = state::actions(&self.cfg, &self.persisted.state.phase);
        let mut event = Event::Done;
        for a in &acts {
            match self.perform(a).await {
                Ok(Event::Done) => {}
                Ok(e) | Err(e) => {
                    event = e;
                    break;
                }
            }
        }
        let before = self.persisted.state.phase.name();
        let (next, _) = state::step(&self.cfg, self.persisted.state.clone(), event.clone());
        let now = self.clock.now_ms();
        if next.phase.name() != before {
            tracing::info!(
                node = %self.settings.node,
                from = before,
                to = next.phase.name(),
                attempt = next.attempt,
                error = next.last_error.as_deref().unwrap_or(""),
                "phase"
            );
        }
        let changed = self.persisted.enter(next, now);
        if let Err(e) = self.store.save(&self.persisted) {
            tracing::error!(error = %e, "cannot persist the agent state");
        }
        if changed {
            self.notifier.status(&self.status_line());
            let _ = self.store.save_status(&self.report());
        }
        if !self.ready_sent
            && self.persisted.state.phase != Phase::Preflight
            && self.persisted.state.phase != Phase::Registering
            && !matches!(self.persisted.state.phase, Phase::Backoff { .. })
        {
            self.notifier.ready();
            self.ready_sent = true;
        }
        let due = self
            .last_heartbeat
            .is_none_or(|t| now.saturating_sub(t) >= self.settings.heartbeat_every_ms);
        if (changed || due) && self.persisted.state.phase != Phase::Preflight {
            self.heartbeat().await;
        }
        let done = self.persisted.state.phase == Phase::Done;
        let wait = if done {
            state::idle_ms(&self.cfg)
        } else {
            state::delay_before(&self.cfg, &self.persisted.state)
        };
        Tick {
            phase: self.persisted.state.phase.name(),
            wait: Duration::from_millis(wait),
            done,
        }
    }

    /// Ticks forever (until `stop` resolves), sleeping between ticks.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let t = self.tick().await;
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = self.clock.sleep(t.wait) => {}
            }
        }
        self.notifier.stopping();
    }

    fn status_line(&self) -> String {
        let s = &self.persisted.state;
        match &s.last_error {
            Some(e) if s.attempt > 0 => {
                format!("{} (attempt {}): {e}", s.phase.name(), s.attempt)
            }
            _ => s.phase.name().to_string(),
        }
    }

    async fn heartbeat(&mut self) {
        let report =
            crate::report::member_report(self.cfg.role, &self.persisted, self.clock.now_ms())
                .with_etcd(self.etcd_view().await)
                .to_json();
        match self
            .coord
            .heartbeat(
                &self.settings.node,
                self.cfg.role,
                &report,
                self.settings.heartbeat_ttl,
            )
            .await
        {
            Ok(()) => self.last_heartbeat = Some(self.clock.now_ms()),
            Err(e) => tracing::warn!(error = %e, "heartbeat"),
        }
    }

    async fn perform(&mut self, a: &Action) -> Outcome {
        let failed = |step: &str, e: &dyn std::fmt::Display| Event::Failed(format!("{step}: {e}"));
        match a {
            Action::InstallNodeTree => self
                .host
                .install_node_tree()
                .map(|()| Event::Done)
                .map_err(|e| failed("install node tree", &e)),
            Action::Preflight => self
                .host
                .preflight()
                .map(|()| Event::Done)
                .map_err(|e| failed("preflight", &e)),
            Action::StartVipServices => {
                for u in self.settings.vip_units.clone() {
                    self.start_unit(&u).await?;
                }
                Ok(Event::Done)
            }
            Action::StartLb => {
                for u in self.settings.lb_units.clone() {
                    self.start_unit(&u).await?;
                }
                Ok(Event::Done)
            }
            Action::Register => {
                let report = self.report();
                self.coord
                    .heartbeat(
                        &self.settings.node,
                        self.cfg.role,
                        &report,
                        self.settings.heartbeat_ttl,
                    )
                    .await
                    .map_err(|e| failed("register", &e))?;
                self.last_heartbeat = Some(self.clock.now_ms());
                Ok(Event::Done)
            }
            Action::CheckInitialized => {
                let r = self
                    .coord
                    .get(keys::INITIALIZED)
                    .await
                    .map_err(|e| failed("check initialized", &e))?;
                Ok(Event::Initialized(r.is_some()))
            }
            Action::EnsureNotInitialized => {
                let r = self
                    .coord
                    .get(keys::INITIALIZED)
                    .await
                    .map_err(|e| failed("check initialized", &e))?;
                Ok(if r.is_some() {
                    Event::AlreadyInitialized
                } else {
                    Event::Done
                })
            }
            Action::Acquire { semaphore, slots } => {
                let r = self
                    .coord
                    .acquire(
                        semaphore,
                        *slots,
                        &self.settings.node,
                        self.settings.lease_ttl,
                    )
                    .await
                    .map_err(|e| failed("acquire", &e))?;
                Ok(match r {
                    Acquired::Granted { token, .. } => Event::Granted { token },
                    Acquired::Busy { .. } => Event::Busy,
                })
            }
            Action::Renew(f) => self.renew(f).await.map(|()| Event::Done),
            Action::Release(f) => {
                self.coord
                    .release(&f.semaphore, &self.settings.node, f.token)
                    .await
                    .map_err(|e| failed("release", &e))?;
                Ok(Event::Done)
            }
            Action::Reset => {
                self.distro.reset().await.map_err(|e| failed("reset", &e))?;
                Ok(Event::Done)
            }
            Action::KubeVipSuperAdmin => {
                let r = if self.settings.kube_vip_super_admin {
                    self.host.kube_vip_super_admin()
                } else {
                    self.host.restore_kube_vip()
                };
                r.map(|()| Event::Done)
                    .map_err(|e| failed("kube-vip manifest", &e))
            }
            Action::RestoreExternalEtcd => self
                .host
                .restore_external_etcd()
                .map(|()| Event::Done)
                .map_err(|e| failed("restore the external etcd client files", &e)),
            Action::RestoreKubeVip => self
                .host
                .restore_kube_vip()
                .map(|()| Event::Done)
                .map_err(|e| failed("restore kube-vip manifest", &e)),
            Action::Init(f) => {
                let secrets = InitSecrets {
                    token: new_bootstrap_token(&mut self.rng),
                    certificate_key: new_certificate_key(&mut self.rng),
                };
                let r = self.with_lease(f, DistroCall::Init(&secrets)).await?;
                r.map_err(|e| failed("init", &e))?;
                Ok(Event::Done)
            }
            Action::ProbeInitHealth => {
                let local = self.distro.local_api_ready().await.unwrap_or(false);
                let vip = local && self.distro.vip_api_ready().await.unwrap_or(false);
                Ok(Event::Probe(local && vip))
            }
            Action::Publish(f) => self.publish(f).await,
            Action::FetchMaterial { control_plane } => self
                .fresh_material(*control_plane)
                .await
                .map(|_| Event::Done),
            Action::RemoveStaleMembers => self.remove_members(true).await,
            Action::RemoveOwnMember => self.remove_members(false).await,
            Action::Join {
                control_plane,
                fence,
            } => {
                let (m, revision) = self.fresh_material(*control_plane).await?;
                let call = if *control_plane {
                    DistroCall::JoinControlPlane(&m)
                } else {
                    DistroCall::JoinWorker(&m)
                };
                match self.with_lease(fence, call).await? {
                    // The cluster's clock says the material expired, ours did not: have it
                    // refreshed rather than retry with it until it is (never).
                    Err(e @ crate::distro::DistroError::MaterialRejected { .. }) => {
                        tracing::warn!(error = %e, revision,
                            "the join material was refused; requesting fresh material");
                        self.request_refresh(Some(revision)).await?;
                        Err(Event::MaterialStale)
                    }
                    r => {
                        r.map_err(|e| failed("join", &e))?;
                        Ok(Event::Done)
                    }
                }
            }
            Action::VerifyJoin { control_plane } => {
                let ok = if *control_plane {
                    self.verify_control_plane().await
                } else {
                    self.distro.kubelet_registered().await.unwrap_or(false)
                };
                Ok(Event::Probe(ok))
            }
            Action::ServeRefresh => {
                if let Err(e) = self.serve_refresh().await {
                    tracing::warn!(event = ?e, "serving a refresh request");
                }
                Ok(Event::Done)
            }
        }
    }

    async fn start_unit(&self, unit: &str) -> Result<(), Event> {
        self.systemd
            .enable(&[unit])
            .await
            .and(self.systemd.start(unit).await)
            .map_err(|e| Event::Failed(e.to_string()))
    }

    /// Renews a lease and makes sure the answer came back well inside its TTL (within
    /// `budget`): an answer delayed longer proves nothing about holding the slot now.
    async fn renew_within(&self, f: &Fence, budget: Duration) -> Result<(), Event> {
        let ttl = self.settings.lease_ttl;
        let budget = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..3 {
            let sent = self.clock.now_ms();
            match self
                .coord
                .renew(&f.semaphore, &self.settings.node, f.token, ttl)
                .await
            {
                Ok(()) if self.clock.now_ms().saturating_sub(sent) <= budget => return Ok(()),
                Ok(()) => continue,
                Err(e) if e.kind == ErrorKind::Fenced => return Err(Event::Fenced(e.to_string())),
                Err(e) => return Err(Event::Failed(format!("renew: {e}"))),
            }
        }
        Err(Event::Failed(format!(
            "renew {}: answers came back too late to trust the lease",
            f.semaphore
        )))
    }

    async fn renew(&self, f: &Fence) -> Result<(), Event> {
        self.renew_within(f, self.settings.lease_ttl / 3).await
    }

    /// Runs a long distro call under the lease: renewed (with a tight budget) right before
    /// the call, with no await in between, then every TTL/3 while the call runs (sooner
    /// after a failed renewal). A lease lost meanwhile turns the outcome into `Fenced`; the
    /// call itself cannot be stopped half-way. The lease TTL must exceed the longest call.
    async fn with_lease(
        &self,
        f: &Fence,
        call: DistroCall<'_>,
    ) -> Result<crate::distro::DistroResult<()>, Event> {
        self.renew_within(f, self.settings.lease_ttl / 6).await?;
        let fut = async {
            match call {
                DistroCall::Init(s) => self.distro.init(s).await.map(|_| ()),
                DistroCall::JoinControlPlane(m) => self.distro.join_control_plane(m).await,
                DistroCall::JoinWorker(m) => self.distro.join_worker(m).await,
            }
        };
        let what = match call {
            DistroCall::Init(_) => "init",
            DistroCall::JoinControlPlane(_) => "join control plane",
            DistroCall::JoinWorker(_) => "join worker",
        };
        let limit = self.settings.step_timeout;
        let fut = async {
            tokio::select! {
                r = fut => r,
                () = self.clock.sleep(limit) => Err(crate::distro::DistroError::Other {
                    step: what,
                    detail: format!("did not finish within {limit:?}; abandoned (its process killed) to be undone and retried"),
                }),
            }
        };
        let period = self.settings.lease_ttl / 3;
        let renewer = async {
            let mut wait = period;
            loop {
                self.clock.sleep(wait).await;
                match self.renew(f).await {
                    Ok(()) => wait = period,
                    Err(e @ Event::Fenced(_)) => return e,
                    Err(_) => wait = Duration::from_secs(1),
                }
            }
        };
        tokio::pin!(fut);
        tokio::pin!(renewer);
        let mut lost: Option<Event> = None;
        loop {
            tokio::select! {
                biased;
                r = &mut fut => {
                    return match lost {
                        Some(e) => Err(e),
                        None => Ok(r),
                    };
                }
                e = &mut renewer, if lost.is_none() => {
                    tracing::error!(semaphore = %f.semaphore, "lease lost during a long step");
                    lost = Some(e);
                }
            }
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, Event> {
        let r = self
            .coord
            .get(key)
            .await
            .map_err(|e| Event::Failed(format!("read {key}: {e}")))?;
        match r {
            None => Ok(None),
            Some(rec) => serde_json::from_slice(&rec.value)
                .map(|v| Some((v, rec.revision)))
                .map_err(|e| Event::Failed(format!("read {key}: {e}"))),
        }
    }

    /// The published material and its revision, if it belongs to the published init, is
    /// fresh enough and no join was refused with it; otherwise a refresh is requested (or
    /// already pending) and `MaterialStale` returned.
    async fn fresh_material(&self, control_plane: bool) -> Result<(JoinMaterial, u64), Event> {
        let init: Option<(InitRecord, u64)> = self.read_json(keys::INITIALIZED).await?;
        let Some((init, _)) = init else {
            return Err(Event::Failed("the cluster is not initialized yet".into()));
        };
        let m: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let pending = self.refresh_request().await?;
        let now = self.clock.now_ms();
        match m {
            Some((_, rev)) if pending.as_ref().is_some_and(|r| r.rejects(rev)) => {
                Err(Event::MaterialStale)
            }
            Some((m, rev))
                if m.init_token == init.token
                    && m.fresh_for(control_plane, now, self.settings.material_margin_ms) =>
            {
                Ok((m, rev))
            }
            _ => {
                self.request_refresh(None).await?;
                Err(Event::MaterialStale)
            }
        }
    }

    async fn refresh_request(&self) -> Result<Option<RefreshRequest>, Event> {
        let r = self
            .coord
            .get(keys::REFRESH_REQUEST)
            .await
            .map_err(|e| Event::Failed(format!("read refresh request: {e}")))?;
        Ok(r.map(|r| {
            RefreshRequest::parse(&r.value).unwrap_or(RefreshRequest {
                by: String::new(),
                at_ms: 0,
                rejected_revision: None,
            })
        }))
    }

    /// Asks the joined control planes for fresh material; with `rejected_revision`, says
    /// that material was refused (replacing a plain request, so it is refreshed for sure).
    async fn request_refresh(&self, rejected_revision: Option<u64>) -> Result<(), Event> {
        let failed = |e: crate::coord::CoordError| {
            Event::Failed(format!("request fresh join material: {e}"))
        };
        let req = serde_json::to_vec(&RefreshRequest {
            by: self.settings.node.clone(),
            at_ms: self.clock.now_ms(),
            rejected_revision,
        })
        .unwrap_or_default();
        let ttl = Some(Duration::from_secs(600));
        let created = self
            .coord
            .create(keys::REFRESH_REQUEST, &req, ttl, None)
            .await
            .map_err(failed)?;
        if let (Created::Exists { value, revision }, Some(rejected)) = (created, rejected_revision)
            && !RefreshRequest::parse(&value).is_some_and(|r| r.rejects(rejected))
        {
            match self
                .coord
                .compare_and_swap(keys::REFRESH_REQUEST, revision, &req, None)
                .await
            {
                // Changed meanwhile (served, or replaced): the next join attempt sees which.
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    async fn new_material(
        &mut self,
        init_token: u64,
        key: Option<protocol::records::Secret>,
    ) -> Result<JoinMaterial, Event> {
        let key = match (key, self.settings.cert_key_ttl_ms) {
            (Some(k), Some(_)) => Some(k),
            (None, Some(_)) => Some(new_certificate_key(&mut self.rng)),
            (_, None) => None,
        };
        let issued = self
            .distro
            .refresh_join_material(key.as_ref())
            .await
            .map_err(|e| Event::Failed(format!("issue join material: {e}")))?;
        let creds = self
            .distro
            .credentials()
            .await
            .map_err(|e| Event::Failed(format!("issue join material: {e}")))?;
        let now = self.clock.now_ms();
        Ok(JoinMaterial {
            init_token,
            token: issued.token,
            token_expires_ms: now.saturating_add(self.settings.token_ttl_ms),
            ca_cert_hash: issued.ca_cert_hash,
            certificate_key_expires_ms: issued
                .certificate_key
                .as_ref()
                .and(self.settings.cert_key_ttl_ms.map(|t| now.saturating_add(t))),
            certificate_key: issued.certificate_key,
            admin_kubeconfig: creds.admin_kubeconfig,
            etcd: creds.etcd,
        })
    }

    /// Join material, then the durable `initialized` record, both fenced by the init token.
    /// If our record is there already (written, its answer lost, then the lease expired
    /// while we retried), the cluster is ours and initialized: done, never undone.
    async fn publish(&mut self, f: &Fence) -> Outcome {
        let me = self.settings.node.clone();
        let ours = move |r: &InitRecord| r.token == f.token && r.node == me;
        let published: Option<(InitRecord, u64)> = self.read_json(keys::INITIALIZED).await?;
        if published.as_ref().is_some_and(|(r, _)| ours(r)) {
            return Ok(Event::Done);
        }
        self.renew(f).await?;
        let fenced_or_failed = |what: &str, e: crate::coord::CoordError| {
            if e.kind == ErrorKind::Fenced {
                Event::Fenced(format!("{what}: {e}"))
            } else {
                Event::Failed(format!("{what}: {e}"))
            }
        };
        let m = self.new_material(f.token, None).await?;
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        match self
            .coord
            .create(keys::JOIN_MATERIAL, &bytes, None, Some(f))
            .await
            .map_err(|e| fenced_or_failed("publish join material", e))?
        {
            Created::Created { .. } => {}
            Created::Exists { revision, .. } => {
                self.coord
                    .compare_and_swap(keys::JOIN_MATERIAL, revision, &bytes, Some(f))
                    .await
                    .map_err(|e| fenced_or_failed("publish join material", e))?;
            }
        }
        let rec = InitRecord {
            node: self.settings.node.clone(),
            token: f.token,
            at_ms: self.clock.now_ms(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        match self
            .coord
            .create(keys::INITIALIZED, &bytes, None, Some(f))
            .await
            .map_err(|e| fenced_or_failed("publish initialized", e))?
        {
            Created::Created { .. } => Ok(Event::Done),
            Created::Exists { value, .. } => match serde_json::from_slice::<InitRecord>(&value) {
                // Our own earlier write whose answer was lost.
                Ok(r) if ours(&r) => Ok(Event::Done),
                Ok(r) => Err(Event::Fenced(format!(
                    "the cluster was initialized by {} (token {})",
                    r.node, r.token
                ))),
                Err(e) => Err(Event::Failed(format!("read initialized: {e}"))),
            },
        }
    }

    async fn etcd_access(&self, include_self: bool) -> Result<EtcdAccess, Event> {
        let m: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let creds = m
            .and_then(|(m, _)| m.etcd)
            .ok_or_else(|| Event::Failed("the join material has no etcd access".into()))?;
        Ok(EtcdAccess {
            endpoints: self.settings.etcd_endpoints(include_self),
            creds,
        })
    }

    /// Removes this node's member (by name or peer URL) and, with `unstarted`, every member
    /// that never started and every learner: only the holder of the one join slot may be
    /// joining, and a join holds the slot until its member is a started voter, so these are
    /// left from failed joins (etcd also allows one learner at a time). Removal goes through
    /// the other control planes' endpoints; it needs quorum, which an unstarted or started
    /// learner never costs (kubeadm's EtcdLearnerMode, k3s).
    async fn remove_members(&self, unstarted: bool) -> Outcome {
        let access = self.etcd_access(false).await?;
        let members = self
            .distro
            .etcd_members(&access)
            .await
            .map_err(|e| Event::Failed(format!("list etcd members: {e}")))?;
        let peer = self.settings.peer_url();
        for m in members {
            let mine = m.name == self.settings.node || m.peer_urls.contains(&peer);
            if mine || (unstarted && (!m.started() || m.is_learner)) {
                tracing::info!(id = m.id, name = %m.name, learner = m.is_learner,
                    started = m.started(), "removing stale etcd member");
                let removed = self.distro.remove_etcd_member(&access, m.id).await;
                match removed {
                    Ok(()) => {}
                    // Our own unstarted VOTING member (kubeadm < 1.29 adds plain members):
                    // when it was the second member it cost the cluster its quorum, so etcd
                    // cannot remove it (a membership change needs quorum). The join reuses
                    // it instead (kubeadm's plain AddMember takes an existing peer URL as
                    // added) and starting it restores the quorum, if the API still answers
                    // for the join's discovery (docs/testing.md: the remaining risk).
                    Err(e) if !m.started() && !m.is_learner && m.peer_urls.contains(&peer) => {
                        tracing::warn!(id = m.id, error = %e,
                            "cannot remove this node's unstarted etcd member; the join reuses it");
                    }
                    Err(e) => {
                        return Err(Event::Failed(format!("remove etcd member {}: {e}", m.id)));
                    }
                }
            }
        }
        Ok(Event::Done)
    }

    async fn verify_control_plane(&self) -> bool {
        if !self.distro.local_api_ready().await.unwrap_or(false) {
            return false;
        }
        if !self.cfg.stacked_etcd {
            return true;
        }
        let Ok(access) = self.etcd_access(true).await else {
            return false;
        };
        match self.distro.etcd_members(&access).await {
            Ok(ms) => ms
                .iter()
                .any(|m| m.name == self.settings.node && m.started() && !m.is_learner),
            Err(_) => false,
        }
    }

    /// On a joined control plane: answer a joiner's request for fresh material.
    async fn serve_refresh(&mut self) -> Outcome {
        let Some(req) = self.refresh_request().await? else {
            return Ok(Event::Done);
        };
        let init: Option<(InitRecord, u64)> = self.read_json(keys::INITIALIZED).await?;
        let Some((init, _)) = init else {
            return Ok(Event::Done);
        };
        let cur: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let now = self.clock.now_ms();
        // Fresh enough to outlive a join by a wide margin: only clear the request.
        let fresh_margin = self.settings.material_margin_ms.saturating_mul(2);
        let (key, rev) = match &cur {
            Some((m, rev)) if m.init_token == init.token => {
                if !req.rejects(*rev)
                    && m.fresh_for(true, now, fresh_margin)
                    && m.fresh_for(false, now, fresh_margin)
                {
                    let _ = self.coord.delete(keys::REFRESH_REQUEST, None).await;
                    return Ok(Event::Done);
                }
                (m.certificate_key.clone(), Some(*rev))
            }
            Some((_, rev)) => (None, Some(*rev)),
            None => (None, None),
        };
        tracing::info!(by = %req.by, rejected = ?req.rejected_revision,
            "refreshing the join material for a late joiner");
        let m = self.new_material(init.token, key).await?;
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let written = match rev {
            Some(rev) => self
                .coord
                .compare_and_swap(keys::JOIN_MATERIAL, rev, &bytes, None)
                .await
                .map(|_| ()),
            None => self
                .coord
                .create(keys::JOIN_MATERIAL, &bytes, None, None)
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => {}
            // Another control plane refreshed it first.
            Err(e) if e.kind == ErrorKind::Conflict => {}
            Err(e) => return Err(Event::Failed(format!("write join material: {e}"))),
        }
        self.coord
            .delete(keys::REFRESH_REQUEST, None)
            .await
            .map_err(|e| Event::Failed(format!("clear refresh request: {e}")))?;
        Ok(Event::Done)
    }
}

enum DistroCall<'a> {
    Init(&'a InitSecrets),
    JoinControlPlane(&'a JoinMaterial),
    JoinWorker(&'a JoinMaterial),
}
