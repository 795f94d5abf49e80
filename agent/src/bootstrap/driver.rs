//! The driver: performs the actions `transition::step` asks for against the rendezvous
//! (`Coordinator`), the distribution (`Distro`), systemd and the node's files (`Host`),
//! persists every transition, heartbeats the member report and notifies systemd. It
//! decides nothing itself: what to do with what it reads is asked of `material_policy`
//! and `member_policy`, where to go next of `transition`.

mod exchange;

use super::actions::{self, Action, Wake};
use super::diagnosis::{self, ReasonAsk};
use super::member_policy::{self, Sweep};
use super::state::{Config, Phase, State};
use super::store::{Persisted, Store};
use super::stranded;
use super::transition::{self, Decision, Event};
use crate::coord::{Acquired, Coordinator, ErrorKind, Fence};
use crate::distro::{Distro, DistroError, DistroResult, EtcdAccess, InitSecrets};
use crate::host::Host;
use crate::systemd::{Notifier, Systemd};
use protocol::clock::{Clock, Millis};
use protocol::etcd_view::EtcdView;
use protocol::keys;
use protocol::records::{AddonsRecord, JoinMaterial, new_bootstrap_token, new_certificate_key};
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
    /// The `addons` lease's TTL: short, so a dead applier is taken over soon (the apply
    /// renews it every third of it).
    pub addons_lease_ttl: Duration,
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
    /// What the spec says this node depends on, probed for reachability while it waits.
    pub depends_on: super::diagnosis::Dependencies,
    /// Set on a node whose configs follow the membership (`Config::follows_members`).
    pub lb_follow: Option<crate::lb_follow::Follow>,
}

impl Settings {
    /// The TTL leases of `semaphore` are taken and renewed with.
    pub fn lease_ttl_of(&self, semaphore: &str) -> Duration {
        if semaphore == keys::ADDONS_SEMAPHORE {
            self.addons_lease_ttl
        } else {
            self.lease_ttl
        }
    }

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

/// After a watch answered with changes this node does not wait for, it asks again no
/// sooner than this: every report that changes (a phase entered, an etcd view that
/// moved) is a change, and a hundred waiting nodes re-watching on each would flood the
/// rendezvous (a heartbeat that changes nothing is none: `report::settled`). Costs at
/// most this much of wake latency, only when an unrelated change came just before the
/// awaited one.
const WATCH_SETTLE: Duration = Duration::from_millis(200);

/// Work the daemon does once its node is done, in the loop that heartbeats (the
/// upgrade roll: [`crate::upgrade::live::Live`]).
#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait WhenDone {
    /// One round; how soon it wants the next (`None`: when the loop comes round anyway).
    /// `etcd`: the round's view; `fresh` takes another whenever a decision needs one.
    async fn round(&mut self, etcd: Option<&EtcdView>, fresh: &impl EtcdSource)
    -> Option<Duration>;
    /// A binary the agent should exec instead of going on (the release's own agent, once
    /// this node runs the release).
    fn restart_into(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// Why [`Driver::run_with`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Asked to stop (SIGTERM), or the node was removed.
    Stopped,
    /// Exec this binary: it resumes from the persisted state.
    Restart(std::path::PathBuf),
}

/// A control plane's live look at etcd ([`Driver::etcd_view`]), taken when asked.
#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait EtcdSource {
    async fn etcd_view(&self) -> Option<EtcdView>;
}

/// Nothing to do once done.
impl WhenDone for () {
    async fn round(&mut self, _: Option<&EtcdView>, _: &impl EtcdSource) -> Option<Duration> {
        None
    }
}

impl<R: crate::exec::CommandRunner, S: Systemd> WhenDone for crate::upgrade::live::Live<R, S> {
    async fn round(
        &mut self,
        etcd: Option<&EtcdView>,
        fresh: &impl EtcdSource,
    ) -> Option<Duration> {
        crate::upgrade::live::Live::round(self, etcd, fresh).await
    }
    fn restart_into(&self) -> Option<std::path::PathBuf> {
        crate::upgrade::live::Live::restart_into(self).map(std::path::Path::to_path_buf)
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
    /// The actions of the current phase, as the last step returned them.
    pending: Vec<Action>,
    rng: rand::rngs::StdRng,
    last_heartbeat: Option<Millis>,
    /// The report the rendezvous holds: an unchanged report is heartbeated with its old
    /// timestamps, so it is no change there (see `report::settled`).
    heartbeated: Option<protocol::report::MemberReport>,
    ready_sent: bool,
    /// The distribution's reason for the last failed or stuck init/join (in the report).
    reason: Option<protocol::report::DistroReason>,
    /// Dependencies that refused or ignored the last probe (in the report).
    unreachable: Vec<protocol::report::Unreachable>,
    last_probe: Option<Millis>,
    /// Since when the API endpoint has been unreachable while joining (`stranded`).
    api_unreachable_since: Option<Millis>,
    last_reason_read: Option<Millis>,
    /// The cluster revision the last watch answered with: a wait watches for changes
    /// after it, and it was read before the tick that decided to wait, so a change made
    /// after that tick's reads is never missed.
    revision: Option<u64>,
    /// Daemons whose new config is installed but whose reload failed: reloaded again on
    /// the next pass (in memory: after a restart the agent reloads nothing it did not
    /// install itself).
    lb_pending: Vec<crate::lb_follow::Daemon>,
    /// What the last membership-following pass could not apply (in the report).
    lb_problem: Option<String>,
    /// The etcd credentials of the join material this node joined with (in memory): a
    /// control plane's health probes use them rather than read the material from the
    /// rendezvous on every probe; dropped when a probe with them fails.
    etcd_creds: Option<protocol::records::EtcdCreds>,
    /// A report the last tick decided to send when the next tick followed at once: it goes
    /// out beside that tick's actions (`tick`), its round trips off the critical path.
    deferred_report: Option<Outgoing>,
}

/// A member report on its way to the rendezvous, with what sending it needs (owned, so
/// it can travel beside the driver's own actions).
#[derive(Debug)]
struct Outgoing {
    node: String,
    role: model::Role,
    ttl: Duration,
    report: protocol::report::MemberReport,
}

/// What sending an [`Outgoing`] found.
enum Sent {
    /// The rendezvous holds the report.
    Held(Box<protocol::report::MemberReport>),
    /// `muster remove` left this node's tombstone: nothing was sent.
    Tombstoned,
    /// Not sent (logged); the next change or due heartbeat tries again.
    Failed,
}

impl Outgoing {
    /// The tombstone first, then the heartbeat: a removed node never registers itself
    /// again (a failed tombstone read is no tombstone).
    async fn send<C: Coordinator>(self, coord: C) -> Sent {
        let key = protocol::removal::tombstone_key(&self.node);
        match coord.get(&key).await {
            Ok(Some(_)) => return Sent::Tombstoned,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading the removal tombstone"),
        }
        match coord
            .heartbeat(&self.node, self.role, &self.report.to_json(), self.ttl)
            .await
        {
            Ok(_) => Sent::Held(Box::new(self.report)),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat");
                Sent::Failed
            }
        }
    }
}

/// How often the dependencies are probed while the node waits on them.
const PROBE_EVERY_MS: u64 = 10_000;
/// How often a failing health check reads the distribution's log again (its probes come
/// every 200 ms; the log need not be read that often).
const REASON_EVERY_MS: u64 = 5_000;
/// Each API read of the readiness view (Nodes, one add-on workload) within this: a hung
/// API delays a heartbeat by seconds, never wedges it.
const READINESS_CALL_DEADLINE: Duration = Duration::from_secs(3);

/// How an action that could finish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Run the phase's next action (after the last one, `step` gets `Event::Done`).
    Finished,
    /// The action's answer (`Initialized`, `Granted`, `Probe`, …) is the phase's event.
    Answer(Event),
}

/// Why an action could not finish: the event that decides its phase instead.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Nothing held was lost; the message names the step.
    Failed(String),
    /// The lease was lost.
    Fenced(String),
    /// The join material cannot be used; a refresh is asked for.
    MaterialStale,
}

impl Stop {
    fn failed(step: &str, e: impl std::fmt::Display) -> Stop {
        Stop::Failed(format!("{step}: {e}"))
    }
}

impl From<Stop> for Event {
    fn from(s: Stop) -> Event {
        match s {
            Stop::Failed(e) => Event::Failed(e),
            Stop::Fenced(e) => Event::Fenced(e),
            Stop::MaterialStale => Event::MaterialStale,
        }
    }
}

type Performed<T = Outcome> = Result<T, Stop>;

/// A local step's result as an action's.
fn local(step: &str, r: Result<(), String>) -> Performed {
    r.map(|()| Outcome::Finished)
        .map_err(|e| Stop::failed(step, e))
}

impl<C, D, S, H, K, St, N> EtcdSource for Driver<C, D, S, H, K, St, N>
where
    C: Coordinator,
    D: Distro,
    S: Systemd,
    H: Host,
    K: Clock,
    St: Store,
    N: Notifier,
{
    async fn etcd_view(&self) -> Option<EtcdView> {
        Driver::etcd_view(self).await
    }
}

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
        let pending = actions::actions(&cfg, &persisted.state.phase);
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
            pending,
            rng: rand::rngs::StdRng::seed_from_u64(rng_seed),
            last_heartbeat: None,
            ready_sent: false,
            reason: None,
            unreachable: Vec::new(),
            last_probe: None,
            api_unreachable_since: None,
            last_reason_read: None,
            revision: None,
            etcd_creds: None,
            deferred_report: None,
            heartbeated: None,
            lb_pending: Vec::new(),
            lb_problem: None,
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
        self.member_report().to_json()
    }

    fn member_report(&self) -> protocol::report::MemberReport {
        let mut r =
            crate::report::member_report(self.cfg.role, &self.persisted, self.clock.now_ms());
        r.reason = self.reason.clone();
        r.unreachable = self.unreachable.clone();
        r.ip = Some(self.settings.ip);
        r.lb_config = self.lb_problem.clone();
        r.stranded = stranded::verdict(
            self.api_unreachable_since,
            self.clock.now_ms(),
            stranded::STRANDED_AFTER_MS,
        );
        r
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

    /// On a control plane past its add-ons (awaiting its Node `Ready`, or done): every
    /// Node's readiness and the baked add-ons' rollout, read through the API with the admin
    /// identity, each call within a deadline (`addons::readiness`). `None` elsewhere or
    /// without admin credentials (logged).
    pub async fn readiness_view(&self) -> Option<protocol::readiness::Readiness> {
        if !(self.cfg.role == model::Role::ControlPlane
            && matches!(
                self.persisted.state.phase,
                Phase::AwaitingReady { .. } | Phase::Done
            ))
        {
            return None;
        }
        let (client, base) = match self.distro.admin_api().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "no admin API client for the readiness view");
                return None;
            }
        };
        let workloads = match self.host.addons() {
            Ok(Some((index, files))) => match crate::addons::order::objects(&files) {
                Ok(objects) => crate::addons::readiness::workloads(&index, &objects),
                Err(e) => {
                    tracing::warn!(error = %e, "the baked add-ons do not parse");
                    Vec::new()
                }
            },
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the baked add-ons");
                Vec::new()
            }
        };
        Some(
            crate::addons::readiness::observe(
                &client,
                &base,
                &workloads,
                &self.settings.node,
                self.clock.now_ms(),
                READINESS_CALL_DEADLINE,
            )
            .await,
        )
    }

    /// Runs the actions of the current phase, steps, persists. Never fails: errors become
    /// events and are carried in the state.
    pub async fn tick(&mut self) -> Tick {
        let started = self.clock.now_ms();
        let before = self.persisted.state.phase.clone();
        let event = match self.deferred_report.take() {
            // The last phase change's report goes out beside this phase's actions. Tombstoned:
            // what they did is moot, the node stops.
            Some(out) => {
                let send = out.send(self.coord.clone());
                let (event, sent) = tokio::join!(self.run_pending(), send);
                if self.apply_sent(sent) {
                    return self.removed_tick();
                }
                event
            }
            None => self.run_pending().await,
        };
        let mut changed = self.advance(event.clone());
        changed |= self.diagnose(&before, &event).await;
        let now = self.clock.now_ms();
        let phase = &self.persisted.state.phase;
        if !self.ready_sent
            && !matches!(
                phase,
                Phase::Preflight | Phase::Registering | Phase::Backoff { .. }
            )
        {
            self.notifier.ready();
            self.ready_sent = true;
        }
        let due = self
            .last_heartbeat
            .is_none_or(|t| now.saturating_sub(t) >= self.settings.heartbeat_every_ms);
        let phase = &self.persisted.state.phase;
        let report = (changed || due) && !matches!(phase, Phase::Preflight | Phase::Removed);
        let done = self.persisted.state.phase == Phase::Done;
        let wait_now = |d: &Self| {
            if done {
                actions::idle_ms(&d.cfg)
            } else {
                let spent = d.clock.now_ms().saturating_sub(started);
                actions::delay_before(&d.cfg, &d.persisted.state, spent)
            }
        };
        let mut wait = wait_now(self);
        if report {
            let out = self.outgoing_report().await;
            if wait == 0 && !done {
                // The next tick follows at once: send beside its actions (issue 17).
                self.deferred_report = Some(out);
            } else if self.send_now(out).await {
                return self.removed_tick();
            } else {
                // A probe interval counts the report's round trip too.
                wait = wait_now(self);
            }
        }
        Tick {
            phase: self.persisted.state.phase.name(),
            wait: Duration::from_millis(wait),
            done,
        }
    }

    /// Takes in what sending a report found; whether the node was removed.
    fn apply_sent(&mut self, sent: Sent) -> bool {
        match sent {
            Sent::Held(report) => {
                self.last_heartbeat = Some(self.clock.now_ms());
                self.heartbeated = Some(*report);
                false
            }
            Sent::Tombstoned => {
                self.enter_removed();
                true
            }
            Sent::Failed => false,
        }
    }

    fn removed_tick(&self) -> Tick {
        Tick {
            phase: self.persisted.state.phase.name(),
            wait: Duration::ZERO,
            done: false,
        }
    }

    /// Keeps the report's reason and reachability current (what `diagnosis` decides), and
    /// writes the status file when either changed; whether one did.
    async fn diagnose(&mut self, before: &Phase, event: &Event) -> bool {
        let old = (self.reason.clone(), self.unreachable.clone());
        let phase = self.persisted.state.phase.clone();
        let now = self.clock.now_ms();
        match diagnosis::reason_after(before, event, &phase) {
            ReasonAsk::Keep => {}
            ReasonAsk::Refresh => {
                if diagnosis::probe_due(self.last_reason_read, now, REASON_EVERY_MS) {
                    self.last_reason_read = Some(now);
                    self.note_reason(None).await;
                }
            }
            ReasonAsk::Clear => self.reason = None,
        }
        let targets = diagnosis::targets(&self.settings.depends_on, &phase);
        if targets.is_empty() {
            self.unreachable.clear();
        } else if diagnosis::probe_due(self.last_probe, now, PROBE_EVERY_MS) {
            self.last_probe = Some(now);
            self.unreachable =
                crate::reach::unreachable(&targets, crate::reach::CONNECT_TIMEOUT).await;
            for u in &self.unreachable {
                tracing::warn!(node = %self.settings.node, "{u}");
            }
            let probed_api = targets.iter().any(|t| t.what == stranded::API_ENDPOINT);
            self.api_unreachable_since = stranded::unreachable_since(
                self.api_unreachable_since,
                probed_api,
                &self.unreachable,
                now,
            );
        }
        let changed = old != (self.reason.clone(), self.unreachable.clone());
        if changed && let Err(e) = self.store.save_status(&self.report()) {
            tracing::warn!(error = %e, "cannot write the status report");
        }
        changed
    }

    /// Asks the distribution why its init or join failed (`failed`) or is not healthy.
    async fn note_reason(&mut self, failed: Option<&DistroError>) {
        if let Some(r) = self.distro.reason(failed).await {
            tracing::warn!(node = %self.settings.node, reason = %r.summary(), "the distribution says");
            self.reason = Some(r);
        }
    }

    /// Performs the current phase's actions until one does not simply finish.
    async fn run_pending(&mut self) -> Event {
        let acts = std::mem::take(&mut self.pending);
        for a in &acts {
            let began = self.clock.now_ms();
            let performed = self.perform(a).await;
            // Where a phase's time goes, action by action (`NODEAGENT_LOG=nodeagent=debug`).
            tracing::debug!(action = ?a, took_ms = self.clock.now_ms().saturating_sub(began), "performed");
            match performed {
                Ok(Outcome::Finished) => {}
                Ok(Outcome::Answer(e)) => return e,
                Err(stop) => return stop.into(),
            }
        }
        Event::Done
    }

    /// Steps with `event`, keeps the next actions, persists; whether the phase changed.
    fn advance(&mut self, event: Event) -> bool {
        let state = self.persisted.state.clone();
        let before = state.phase.name();
        let decision = transition::decide(&self.cfg, &state, event.clone());
        if decision == Decision::Hold {
            tracing::warn!(node = %self.settings.node, phase = before, ?event,
                "an outcome this phase cannot produce; holding the phase");
        }
        let (next, acts) = transition::enter(&self.cfg, state, decision);
        self.pending = acts;
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
        let changed = self.persisted.enter(next, self.clock.now_ms());
        if let Err(e) = self.store.save(&self.persisted) {
            tracing::error!(error = %e, "cannot persist the agent state");
        }
        if changed {
            self.notifier.status(&self.status_line());
            if let Err(e) = self.store.save_status(&self.report()) {
                tracing::warn!(error = %e, "cannot write the status report");
            }
        }
        changed
    }

    /// Ticks forever (until `stop` resolves), waiting between ticks: the tick's delay, cut
    /// short by a rendezvous change the state waits for (`actions::wakes_on`).
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        self.run_with(stop, &mut ()).await;
    }

    /// [`Self::run`], with `when_done` given a round in the same loop after every tick
    /// once the node is done (the upgrade roll), its etcd view to hand.
    pub async fn run_with(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
        when_done: &mut impl WhenDone,
    ) -> RunEnd {
        tokio::pin!(stop);
        let mut end = RunEnd::Stopped;
        loop {
            let t = self.tick().await;
            if self.persisted.state.phase == Phase::Removed {
                tracing::info!(node = %self.settings.node, "removed: the agent exits");
                break;
            }
            let mut wait = t.wait;
            if t.done {
                let etcd = self.etcd_view().await;
                if let Some(w) = when_done.round(etcd.as_ref(), &*self).await {
                    wait = wait.min(w);
                }
                if let Some(binary) = when_done.restart_into() {
                    self.notifier
                        .status("restarting into the release's agent binary");
                    end = RunEnd::Restart(binary);
                    break;
                }
            }
            let wakes = actions::wakes_on(&self.cfg, &self.persisted.state);
            let seen = tokio::select! {
                biased;
                () = &mut stop => break,
                seen = self.wait(&wakes, wait) => seen,
            };
            if seen.is_some() {
                self.revision = seen;
            }
        }
        if end == RunEnd::Stopped {
            self.notifier.stopping();
        }
        end
    }

    /// Waits `limit`, or until the rendezvous reports one of `wakes` (watching from the
    /// revision seen last; see `revision`). A watch that fails or answers without progress
    /// leaves the rest to the delay: the fallback never spins. The revision seen last.
    async fn wait(&self, wakes: &[Wake], limit: Duration) -> Option<u64> {
        if wakes.is_empty() || limit.is_zero() {
            self.clock.sleep(limit).await;
            return None;
        }
        let start = self.clock.now_ms();
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut after = self.revision.unwrap_or(0);
        let mut seen = None;
        loop {
            let elapsed = self.clock.now_ms().saturating_sub(start);
            let left = Duration::from_millis(limit_ms.saturating_sub(elapsed));
            if left.is_zero() {
                return seen;
            }
            match self.coord.watch(after, left).await {
                Ok(ch) if actions::woken(wakes, &ch) => {
                    tracing::debug!(node = %self.settings.node, revision = ch.revision,
                        phase = self.persisted.state.phase.name(), "woken by a rendezvous change");
                    return Some(ch.revision);
                }
                Ok(ch) if ch.revision != after => {
                    seen = Some(ch.revision);
                    after = ch.revision;
                    // Other members' reports change as they move: let unrelated changes
                    // gather before asking again (the next watch still returns every
                    // change after `after`).
                    self.clock.sleep(WATCH_SETTLE.min(left)).await;
                }
                Ok(_) => {
                    self.clock.sleep(left).await;
                    return seen;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch failed; waiting out the delay");
                    self.clock.sleep(left).await;
                    return seen;
                }
            }
        }
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

    /// Persists the terminal `removed` phase (`transition::on_tombstone`).
    fn enter_removed(&mut self) {
        let Some(next) = transition::on_tombstone(&self.persisted.state) else {
            return;
        };
        tracing::warn!(node = %self.settings.node, "removed from the cluster by `muster remove`: stopping, never rejoining");
        self.pending = Vec::new();
        self.persisted.enter(next, self.clock.now_ms());
        if let Err(e) = self.store.save(&self.persisted) {
            tracing::error!(error = %e, "cannot persist the agent state");
        }
        self.notifier.status(&self.status_line());
        if let Err(e) = self.store.save_status(&self.report()) {
            tracing::warn!(error = %e, "cannot write the status report");
        }
    }

    /// The member report to heartbeat now (`report::settled` against what the rendezvous
    /// holds).
    async fn outgoing_report(&self) -> Outgoing {
        let next = self
            .member_report()
            .with_etcd(self.etcd_view().await)
            .with_readiness(self.readiness_view().await);
        Outgoing {
            node: self.settings.node.clone(),
            role: self.cfg.role,
            ttl: self.settings.heartbeat_ttl,
            report: crate::report::settled(self.heartbeated.as_ref(), next),
        }
    }

    /// Sends `out` now and takes in what it found; whether the node was removed.
    async fn send_now(&mut self, out: Outgoing) -> bool {
        let sent = out.send(self.coord.clone()).await;
        self.apply_sent(sent)
    }

    /// Sends the member report now (a removal found meanwhile is taken in).
    async fn heartbeat(&mut self) {
        let out = self.outgoing_report().await;
        self.send_now(out).await;
    }

    /// Performs one action. Each arm is one effect; the protocol steps live in their own
    /// methods below and in `exchange`.
    async fn perform(&mut self, a: &Action) -> Performed {
        match a {
            Action::InstallNodeTree => local("install node tree", self.host.install_node_tree()),
            Action::Preflight => local("preflight failed", self.host.preflight()),
            Action::StartVipServices => self.start_units(&self.settings.vip_units).await,
            Action::StartLb => self.start_units(&self.settings.lb_units).await,
            Action::Register => self.register().await,
            Action::CheckInitialized => Ok(Outcome::Answer(Event::Initialized(
                self.initialized().await?,
            ))),
            Action::EnsureNotInitialized => Ok(if self.initialized().await? {
                Outcome::Answer(Event::AlreadyInitialized)
            } else {
                Outcome::Finished
            }),
            Action::Acquire { semaphore, slots } => self.acquire(semaphore, *slots).await,
            Action::Renew(f) => self.renew(f).await.map(|()| Outcome::Finished),
            Action::Release(f) => self.release(f).await,
            Action::ReleaseAfterJoin(f) => {
                if let Err(e) = self.release(f).await {
                    tracing::warn!(stop = ?e, "giving the join slot back early");
                }
                Ok(Outcome::Finished)
            }
            Action::Reset => self
                .distro
                .reset()
                .await
                .map(|()| Outcome::Finished)
                .map_err(|e| Stop::failed("reset", e)),
            Action::KubeVipSuperAdmin => local(
                "kube-vip manifest",
                if self.settings.kube_vip_super_admin {
                    self.host.kube_vip_super_admin()
                } else {
                    self.host.restore_kube_vip()
                },
            ),
            Action::RestoreExternalEtcd => local(
                "restore the external etcd client files",
                self.host.restore_external_etcd(),
            ),
            Action::RestoreKubeVip => {
                local("restore kube-vip manifest", self.host.restore_kube_vip())
            }
            Action::Init(f) => self.init(f).await,
            Action::ProbeInitHealth => Ok(Outcome::Answer(Event::Probe(self.init_healthy().await))),
            Action::CheckAddonsApplied => self.check_addons_applied().await,
            Action::ApplyAddons(f) => self.apply_addons(f).await,
            Action::RecordAddons(f) => self.record_addons(f).await,
            Action::VerifyReady => Ok(Outcome::Answer(Event::Probe(
                self.distro.node_ready().await.unwrap_or(false),
            ))),
            Action::Publish(f) => self.publish(f).await,
            Action::ReadControlPlaneVersion => self.control_plane_version().await,
            Action::FetchMaterial { control_plane } => self
                .fresh_material(*control_plane)
                .await
                .map(|_| Outcome::Finished),
            Action::RemoveStaleMembers => self.remove_members(Sweep::OwnAndLeftovers).await,
            Action::RemoveOwnMember => self.remove_members(Sweep::Own).await,
            Action::Join {
                control_plane,
                fence,
            } => self.join(*control_plane, fence).await,
            Action::VerifyJoin { control_plane } => Ok(Outcome::Answer(Event::Probe(
                self.join_healthy(*control_plane).await,
            ))),
            Action::FollowMembers => {
                self.follow_members().await;
                Ok(Outcome::Finished)
            }
            Action::ServeRefresh => {
                if let Err(e) = self.serve_refresh().await {
                    tracing::warn!(stop = ?e, "serving a refresh request");
                }
                Ok(Outcome::Finished)
            }
        }
    }

    /// One membership-following pass (`lb_follow::follow`); its problem goes into the
    /// report and the status file, and the heartbeat carries it.
    async fn follow_members(&mut self) {
        let Some(f) = self.settings.lb_follow.clone() else {
            return;
        };
        let members = match self.coord.members().await {
            Ok(m) => m,
            Err(e) => {
                // Nothing is known about the membership: the running config stays.
                tracing::debug!(error = %e, "cannot list members; following later");
                return;
            }
        };
        let runner = crate::exec::RealRunner::default();
        let pass =
            crate::lb_follow::follow(&f, &members, &self.lb_pending, &runner, &self.systemd).await;
        self.lb_pending = pass.unreloaded;
        let problem = crate::lb_follow::problem(&pass.errors);
        if problem != self.lb_problem {
            self.lb_problem = problem;
            if let Err(e) = self.store.save_status(&self.report()) {
                tracing::warn!(error = %e, "cannot write the status report");
            }
            self.heartbeat().await;
        }
    }

    /// This payload's add-ons (`None`: none baked) and whether the `addons-applied` record
    /// covers them in the current generation.
    async fn addons_applied(&self) -> Performed<Option<(crate::addons::Baked, bool)>> {
        let Some(baked) = self
            .host
            .addons()
            .map_err(|e| Stop::failed("read the baked add-ons", e))?
        else {
            return Ok(None);
        };
        let digest = baked.0.digest();
        let rec: Option<(AddonsRecord, u64)> = self.read_json(keys::ADDONS_APPLIED).await?;
        let current = self.current_generation().await?;
        let covered = rec.is_some_and(|(r, _)| r.covers(&digest, current));
        Ok(Some((baked, covered)))
    }

    async fn check_addons_applied(&self) -> Performed {
        Ok(match self.addons_applied().await? {
            None | Some((_, true)) => Outcome::Answer(Event::AddonsApplied),
            Some((_, false)) => Outcome::Finished,
        })
    }

    /// Applies the baked add-ons under the `addons` lease (renewed meanwhile; a lease lost
    /// during the apply is `Fenced`). A failure names the add-on, its file and the cause.
    async fn apply_addons(&self, f: &Fence) -> Performed {
        const STEP: &str = "apply add-ons";
        let Some(((index, files), _)) = self.addons_applied().await? else {
            return Ok(Outcome::Finished);
        };
        let objects = crate::addons::order::objects(&files).map_err(|e| Stop::failed(STEP, e))?;
        let (client, base) = self
            .distro
            .admin_api()
            .await
            .map_err(|e| Stop::failed(STEP, e))?;
        let mut api = crate::addons::apply::Api::new(client, base);
        let started = std::time::Instant::now();
        let applied = self
            .under_lease(f, crate::addons::apply::apply_all(&mut api, &objects))
            .await?;
        let n = applied.map_err(|s| {
            let addon = index
                .addons
                .iter()
                .find(|a| a.file == s.file)
                .map_or("?", |a| a.name.as_str());
            Stop::Failed(format!("{STEP}: add-on {addon}: {}", s.error))
        })?;
        tracing::info!(
            digest = %index.digest(),
            objects = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "add-ons applied"
        );
        Ok(Outcome::Finished)
    }

    /// Records the applied add-ons, fenced by the `addons` lease: once per payload digest
    /// and generation. A record of a retired generation or another payload is replaced.
    async fn record_addons(&self, f: &Fence) -> Performed {
        const WHAT: &str = "record the applied add-ons";
        let Some(((index, files), covered)) = self.addons_applied().await? else {
            return Ok(Outcome::Finished);
        };
        if covered {
            return Ok(Outcome::Finished);
        }
        let objects = crate::addons::order::objects(&files)
            .map_err(|e| Stop::failed(WHAT, e))?
            .len();
        let rec = AddonsRecord {
            node: self.settings.node.clone(),
            token: f.token,
            digest: index.digest(),
            generation: self.current_generation().await?,
            objects,
            at_ms: self.clock.now_ms(),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| Stop::failed(WHAT, e))?;
        let created = self
            .coord
            .create(keys::ADDONS_APPLIED, &bytes, None, Some(f))
            .await
            .map_err(|e| exchange::fenced_or_failed(WHAT, e))?;
        if let crate::coord::Created::Exists { revision, .. } = created {
            self.coord
                .compare_and_swap(keys::ADDONS_APPLIED, revision, &bytes, Some(f))
                .await
                .map_err(|e| exchange::fenced_or_failed(WHAT, e))?;
        }
        tracing::info!(digest = %rec.digest, generation = rec.generation, "add-ons recorded");
        Ok(Outcome::Finished)
    }

    async fn start_units(&self, units: &[String]) -> Performed {
        for unit in units {
            self.systemd
                .enable(&[unit.as_str()])
                .await
                .and(self.systemd.start(unit).await)
                .map_err(|e| Stop::Failed(e.to_string()))?;
        }
        Ok(Outcome::Finished)
    }

    async fn register(&mut self) -> Performed {
        let report = self.member_report();
        let revision = self
            .coord
            .heartbeat(
                &self.settings.node,
                self.cfg.role,
                &report.to_json(),
                self.settings.heartbeat_ttl,
            )
            .await
            .map_err(|e| Stop::failed("register", e))?;
        self.last_heartbeat = Some(self.clock.now_ms());
        self.heartbeated = Some(report);
        // Every read that decides a wait comes after this, so watching from here misses
        // nothing; a first watch from 0 would replay the whole change log.
        self.revision.get_or_insert(revision);
        Ok(Outcome::Finished)
    }

    /// Whether the durable `initialized` record exists and is of the current generation.
    async fn initialized(&self) -> Performed<bool> {
        Ok(self.current_init().await?.is_some())
    }

    async fn acquire(&self, semaphore: &str, slots: u32) -> Performed {
        let r = self
            .coord
            .acquire(
                semaphore,
                slots,
                &self.settings.node,
                self.settings.lease_ttl_of(semaphore),
            )
            .await
            .map_err(|e| Stop::failed("acquire", e))?;
        Ok(Outcome::Answer(match r {
            Acquired::Granted { token, .. } => Event::Granted { token },
            Acquired::Busy { .. } => Event::Busy,
        }))
    }

    async fn release(&self, f: &Fence) -> Performed {
        self.coord
            .release(&f.semaphore, &self.settings.node, f.token)
            .await
            .map_err(|e| Stop::failed("release", e))?;
        Ok(Outcome::Finished)
    }

    async fn init(&mut self, f: &Fence) -> Performed {
        let secrets = InitSecrets {
            token: new_bootstrap_token(&mut self.rng),
            certificate_key: new_certificate_key(&mut self.rng),
        };
        if let Err(e) = self.with_lease(f, DistroCall::Init(&secrets)).await? {
            self.note_reason(Some(&e)).await;
            return Err(Stop::failed("init", e));
        }
        Ok(Outcome::Finished)
    }

    /// The new control plane answers locally and through the VIP (asked at once).
    async fn init_healthy(&self) -> bool {
        let (local, vip) = tokio::join!(self.distro.local_api_ready(), self.distro.vip_api_ready());
        local.unwrap_or(false) && vip.unwrap_or(false)
    }

    async fn join(&mut self, control_plane: bool, fence: &Fence) -> Performed {
        let (m, revision) = self.fresh_material(control_plane).await?;
        self.etcd_creds.clone_from(&m.etcd);
        let call = if control_plane {
            DistroCall::JoinControlPlane(&m)
        } else {
            DistroCall::JoinWorker(&m)
        };
        match self.with_lease(fence, call).await? {
            Ok(()) => Ok(Outcome::Finished),
            // The cluster's clock says the material expired, ours did not: have it
            // refreshed rather than retry with it until it is (never).
            Err(e @ DistroError::MaterialRejected { .. }) => {
                tracing::warn!(error = %e, revision,
                    "the join material was refused; requesting fresh material");
                self.request_refresh(Some(revision)).await?;
                Err(Stop::MaterialStale)
            }
            Err(e) => {
                self.note_reason(Some(&e)).await;
                Err(Stop::failed("join", e))
            }
        }
    }

    /// The running control plane's version (`transition::may_join` decides what it means),
    /// read with the join material's admin kubeconfig; no material yet: cannot tell.
    async fn control_plane_version(&self) -> Performed {
        let m: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let seen = match m {
            Some((m, _)) => self
                .distro
                .control_plane_version(&m)
                .await
                .map_err(|e| Stop::failed("read the control plane's version", e))?,
            None => None,
        };
        Ok(Outcome::Answer(Event::ControlPlaneVersion(seen)))
    }

    /// A control plane is joined once its API answers and, on a stacked etcd, its member
    /// is a started voter; a worker once its Node is registered and Ready (issue 14: with
    /// a pod network).
    /// The API and etcd are asked at once; etcd with the credentials this node joined
    /// with, kept in memory (read from the join material only when none are kept, or
    /// after a probe with them failed).
    async fn join_healthy(&mut self, control_plane: bool) -> bool {
        if !control_plane {
            return self.distro.kubelet_registered().await.unwrap_or(false);
        }
        if !self.cfg.stacked_etcd {
            return self.distro.local_api_ready().await.unwrap_or(false);
        }
        let kept = self.etcd_creds.take();
        let (api, (voter, creds)) =
            tokio::join!(self.distro.local_api_ready(), self.etcd_voter(kept));
        self.etcd_creds = creds;
        api.unwrap_or(false) && voter
    }

    /// Whether this node's etcd member is a started, healthy voter, asked with `kept`
    /// credentials or the join material's; the credentials to keep (none after a failure).
    async fn etcd_voter(
        &self,
        kept: Option<protocol::records::EtcdCreds>,
    ) -> (bool, Option<protocol::records::EtcdCreds>) {
        let creds = match kept {
            Some(c) => c,
            None => match self.etcd_access(true).await {
                Ok(a) => a.creds,
                Err(_) => return (false, None),
            },
        };
        let access = EtcdAccess {
            endpoints: self.settings.etcd_endpoints(true),
            creds,
        };
        match self.distro.etcd_members(&access).await {
            Ok(ms) => (
                member_policy::is_healthy_voter(&ms, &self.settings.node),
                Some(access.creds),
            ),
            Err(_) => (false, None),
        }
    }

    async fn etcd_access(&self, include_self: bool) -> Performed<EtcdAccess> {
        let m: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let creds = m
            .and_then(|(m, _)| m.etcd)
            .ok_or_else(|| Stop::Failed("the join material has no etcd access".into()))?;
        Ok(EtcdAccess {
            endpoints: self.settings.etcd_endpoints(include_self),
            creds,
        })
    }

    /// Removes what `member_policy::stale_members` says, through the other control
    /// planes' endpoints (removal needs quorum).
    async fn remove_members(&self, sweep: Sweep) -> Performed {
        let access = self.etcd_access(false).await?;
        let members = self
            .distro
            .etcd_members(&access)
            .await
            .map_err(|e| Stop::failed("list etcd members", e))?;
        let peer = self.settings.peer_url();
        for r in member_policy::stale_members(&members, &self.settings.node, &peer, sweep) {
            tracing::info!(id = r.id, name = %r.name, learner = r.learner,
                started = r.started, "removing stale etcd member");
            match self.distro.remove_etcd_member(&access, r.id).await {
                Ok(()) => {}
                Err(e) if r.may_stay => {
                    tracing::warn!(id = r.id, error = %e,
                        "cannot remove this node's unstarted etcd member; the join reuses it");
                }
                Err(e) => return Err(Stop::failed(&format!("remove etcd member {}", r.id), e)),
            }
        }
        Ok(Outcome::Finished)
    }

    /// Renews a lease and makes sure the answer came back well inside its TTL (within
    /// `budget`): an answer delayed longer proves nothing about holding the slot now.
    async fn renew_within(&self, f: &Fence, budget: Duration) -> Performed<()> {
        let ttl = self.settings.lease_ttl_of(&f.semaphore);
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
                Err(e) if e.kind == ErrorKind::Fenced => return Err(Stop::Fenced(e.to_string())),
                Err(e) => return Err(Stop::failed("renew", e)),
            }
        }
        Err(Stop::Failed(format!(
            "renew {}: answers came back too late to trust the lease",
            f.semaphore
        )))
    }

    async fn renew(&self, f: &Fence) -> Performed<()> {
        self.renew_within(f, self.settings.lease_ttl_of(&f.semaphore) / 3)
            .await
    }

    /// Runs a long distro call under the lease (see `under_lease`), abandoned after
    /// `step_timeout`.
    async fn with_lease(&self, f: &Fence, call: DistroCall<'_>) -> Performed<DistroResult<()>> {
        let what = call.name();
        let limit = self.settings.step_timeout;
        let fut = async {
            tokio::select! {
                r = call.run(&self.distro) => r,
                () = self.clock.sleep(limit) => Err(DistroError::Other {
                    step: what,
                    detail: format!("did not finish within {limit:?}; abandoned (its process killed) to be undone and retried"),
                }),
            }
        };
        self.under_lease(f, fut).await
    }

    /// Runs `fut` under the lease: renewed (with a tight budget) right before, with no
    /// await in between, then every TTL/3 while it runs (sooner after a failed renewal). A
    /// lease lost meanwhile turns the outcome into `Fenced`; `fut` itself cannot be stopped
    /// half-way. The lease TTL must exceed the longest call.
    async fn under_lease<T>(
        &self,
        f: &Fence,
        fut: impl std::future::Future<Output = T>,
    ) -> Performed<T> {
        let ttl = self.settings.lease_ttl_of(&f.semaphore);
        self.renew_within(f, ttl / 6).await?;
        let period = ttl / 3;
        let renewer = async {
            let mut wait = period;
            loop {
                self.clock.sleep(wait).await;
                match self.renew(f).await {
                    Ok(()) => wait = period,
                    Err(lost @ Stop::Fenced(_)) => return lost,
                    Err(_) => wait = Duration::from_secs(1),
                }
            }
        };
        tokio::pin!(fut);
        tokio::pin!(renewer);
        let mut lost: Option<Stop> = None;
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
}

/// A long distro call made under a lease.
enum DistroCall<'a> {
    Init(&'a InitSecrets),
    JoinControlPlane(&'a JoinMaterial),
    JoinWorker(&'a JoinMaterial),
}

impl DistroCall<'_> {
    fn name(&self) -> &'static str {
        match self {
            DistroCall::Init(_) => "init",
            DistroCall::JoinControlPlane(_) => "join control plane",
            DistroCall::JoinWorker(_) => "join worker",
        }
    }

    async fn run<D: Distro>(&self, distro: &D) -> DistroResult<()> {
        match self {
            DistroCall::Init(s) => distro.init(s).await.map(|_| ()),
            DistroCall::JoinControlPlane(m) => distro.join_control_plane(m).await,
            DistroCall::JoinWorker(m) => distro.join_worker(m).await,
        }
    }
}
