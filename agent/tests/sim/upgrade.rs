//! The upgrade roll (issue 15) in the simulation: after the assembly converged, the
//! operator publishes a release and every node runs the real upgrade machine
//! (`transition::step` through `driver::round`, the turn decided by
//! `quorum_guard::may_start` on the real `roll_view` of the progress records and on an
//! etcd view taken by the real `etcd_query::observe` of the simulated etcd). The lock is
//! the simulated rendezvous's one-slot semaphore (with its lost and delayed answers);
//! faults: agent crashes at any await point (restart from the persisted phase through
//! `transition::restart`), lost leases (the holder dropped by the rendezvous), etcd
//! members down for a while (a rebooting control plane), failed steps (the operator
//! resumes). A control plane's own etcd member is down while `kubeadm upgrade
//! apply|node` replaces its static pod.
//!
//! Checked at every step start and end: one node upgrading at a time (from its first
//! step to `done`), a step only by the lock's holder, a control plane's etcd taken down
//! only with every other member up (unless a member went down after that node's last
//! look at etcd: a race no check can close, counted apart), every control plane at the
//! new version before any worker starts; at the end every node `done` at the new
//! version, the lock free, every etcd member up.

use super::{NodeSpec, SimCoord, SimDistro, W};
use model::spec::DistroKind;
use model::{KubeVersion, Role};
use nodeagent::coord::{Acquired, Coordinator};
use nodeagent::distro::EtcdAccess;
use nodeagent::upgrade::driver::{self, Effects, Round, StepError};
use nodeagent::upgrade::live::sequence_of;
use nodeagent::upgrade::order::{self, Wait};
use nodeagent::upgrade::rendezvous_side::progress_of;
use nodeagent::upgrade::state::Phase;
use nodeagent::upgrade::steps::Step;
use nodeagent::upgrade::transition::{self, Action, Event, Me};
use nodeagent::upgrade::{quorum_guard, view};
use protocol::clock::{Clock, TokioClock};
use protocol::etcd_view::EtcdView;
use protocol::records::{EtcdCreds, Secret};
use protocol::release::{
    self, PayloadRef, PayloadSource, Progress, Release, UPGRADE_SEMAPHORE, UPGRADE_SLOTS,
};
use rand::Rng;
use rand::rngs::StdRng;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::time::{Instant, sleep};

const CLUSTER_ID: &str = "sim";
/// The upgrade lock's lease in the simulation: shorter than the agent's, so a crash of a
/// holder outlives it now and then.
const UPGRADE_LEASE: Duration = Duration::from_secs(60);
/// The daemon loop's pause between rounds of a roll that waits (as the agent's).
const PAUSE: Duration = Duration::from_secs(1);

fn v(s: &str) -> KubeVersion {
    s.parse().unwrap()
}

/// What the roll's world holds besides the rendezvous and etcd of the assembly.
#[derive(Debug, Default)]
pub struct Roll {
    release: Option<Release>,
    from: Option<KubeVersion>,
    /// The kubelet version each node runs.
    kubelet: BTreeMap<String, KubeVersion>,
    api: Option<KubeVersion>,
    progress: BTreeMap<String, Progress>,
    /// Nodes between their first step and `done`.
    started: BTreeSet<String>,
    /// When each control plane last looked at etcd: each round, and afresh right before
    /// a step that takes its member down.
    looked: BTreeMap<String, Instant>,
    /// When the last injected etcd outage began.
    outage_at: Option<Instant>,
    resume: Option<(u64, u64)>,
    /// When each node last sent a renewal of the upgrade lock.
    renew_sent: BTreeMap<String, Instant>,
    /// When the rendezvous last lost the lock's holder (an injected fault).
    lease_lost_at: Option<Instant>,
    p_step_fail: f64,
    /// Steps started on a renewal answered "held" whose lease was lost while the answer
    /// was on its way.
    pub lost_mid_renewal: u64,
    /// Control planes taken down while another member was down that went down after
    /// their last look at etcd (no check can see those).
    pub raced: u64,
    pub lease_losses: u64,
    pub resumes: u64,
}

/// One node's upgrade effects in the simulated world.
struct SimNode {
    w: W,
    name: String,
    role: Role,
    cluster: usize,
    endpoints: Vec<String>,
    clock: TokioClock,
    /// The persisted phase (survives a crash of the task).
    store: Rc<RefCell<Option<Phase>>>,
    etcd: Option<EtcdView>,
    token: Option<u64>,
    planned: Vec<(String, Role)>,
}

impl SimNode {
    fn coord(&self) -> SimCoord {
        SimCoord { w: self.w.clone() }
    }

    /// Whether an injected fault hits this request (a lost request or answer).
    fn lost(&self) -> bool {
        let mut w = self.w.borrow_mut();
        let p = w.params.p_lost;
        w.faults && w.rng.random_bool(p)
    }

    fn millis(&self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.w.borrow_mut().rng.random_range(lo..hi))
    }

    async fn observe_etcd(&mut self) {
        if self.role != Role::ControlPlane {
            return;
        }
        self.w
            .borrow_mut()
            .roll
            .looked
            .insert(self.name.clone(), Instant::now());
        let access = EtcdAccess {
            endpoints: self.endpoints.clone(),
            creds: EtcdCreds {
                ca_pem: self.cluster.to_string(),
                cert_pem: String::new(),
                key_pem: Secret(String::new()),
            },
        };
        let distro = SimDistro {
            w: self.w.clone(),
            node: self.name.clone(),
        };
        self.etcd = nodeagent::etcd_query::observe(
            &distro,
            &access,
            &self.name,
            self.clock.now_ms(),
            nodeagent::etcd_query::MEMBER_DEADLINE,
        )
        .await
        .ok();
    }

    /// The checks when `step` starts, then the step's effect on the world.
    async fn perform(&self, step: Step) -> Result<(), String> {
        {
            let mut w = self.w.borrow_mut();
            let me = self.name.clone();
            let holders: Vec<String> = w
                .sem(UPGRADE_SEMAPHORE)
                .holders
                .iter()
                .map(|h| h.name.clone())
                .collect();
            let mut v = Vec::new();
            if !holders.contains(&me) {
                let sent = w.roll.renew_sent.get(&me).copied();
                match (sent, w.roll.lease_lost_at) {
                    // Lost after the renewal was sent: its answer said held (fencing
                    // stops the node at its next step).
                    (Some(s), Some(l)) if l >= s => w.roll.lost_mid_renewal += 1,
                    _ => v.push(format!(
                        "{me} ran {step} without the upgrade lock ({holders:?})"
                    )),
                }
            }
            let others: Vec<&String> = w.roll.started.iter().filter(|n| **n != me).collect();
            if !others.is_empty() {
                v.push(format!(
                    "two nodes upgrading at once: {me} ({step}) while {others:?}"
                ));
            }
            let target = w.roll.release.as_ref().map(|r| r.version);
            if self.role == Role::Worker {
                let behind: Vec<String> = w
                    .roll
                    .kubelet
                    .iter()
                    .filter(|(n, ver)| {
                        self.planned
                            .iter()
                            .any(|(p, r)| p == *n && *r == Role::ControlPlane)
                            && Some(**ver) != target
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                if !behind.is_empty() {
                    v.push(format!(
                        "worker {me} started ({step}) before control planes {behind:?}"
                    ));
                }
            }
            w.roll.started.insert(me);
            w.violations.extend(v);
        }
        let d = match step {
            Step::UpgradeApply | Step::UpgradeNode if self.role == Role::ControlPlane => {
                return self.replace_static_pods(step).await;
            }
            Step::InstallKubeadm | Step::InstallKubelet => self.millis(200, 2_000),
            Step::Drain => self.millis(100, 8_000),
            Step::WaitReady => self.millis(1_000, 10_000),
            _ => self.millis(50, 1_500),
        };
        sleep(d).await;
        self.fail_maybe(step)?;
        let mut w = self.w.borrow_mut();
        let target = w.roll.release.as_ref().map(|r| r.version).unwrap();
        match step {
            Step::RestartKubelet => {
                // The kubelet refuses to run newer than the API server (version skew).
                if w.roll.api != Some(target) {
                    return Err(format!(
                        "kubelet {target} is newer than the API server {:?}",
                        w.roll.api
                    ));
                }
                w.roll.kubelet.insert(self.name.clone(), target);
            }
            Step::WaitReady if w.roll.kubelet.get(&self.name) != Some(&target) => {
                return Err("the Node is not Ready at the new version".into());
            }
            _ => {}
        }
        Ok(())
    }

    fn fail_maybe(&self, step: Step) -> Result<(), String> {
        let mut w = self.w.borrow_mut();
        let p = w.roll.p_step_fail;
        if w.faults && w.rng.random_bool(p) {
            Err(format!("injected failure of {step}"))
        } else {
            Ok(())
        }
    }

    /// `kubeadm upgrade apply|node` on a control plane: its etcd member (a static pod)
    /// is down while it is replaced. The member must be the only one down then.
    async fn replace_static_pods(&self, step: Step) -> Result<(), String> {
        {
            let mut w = self.w.borrow_mut();
            let down: Vec<String> = w.clusters[self.cluster]
                .etcd
                .iter()
                .filter(|m| !m.started && m.name != self.name)
                .map(|m| m.name.clone())
                .collect();
            if !down.is_empty() {
                let looked = w.roll.looked.get(&self.name).copied();
                let raced = matches!((looked, w.roll.outage_at), (Some(l), Some(o)) if o >= l);
                if raced {
                    w.roll.raced += 1;
                } else {
                    w.violations.push(format!(
                        "{} took its etcd member down ({step}) while {down:?} were down: no quorum to spare",
                        self.name
                    ));
                }
            }
            set_member(&mut w, self.cluster, &self.name, false);
            if step == Step::UpgradeApply {
                w.roll.api = w.roll.release.as_ref().map(|r| r.version);
            }
        }
        // Back up when the step ends, or when it is cut short (the kubelet restarts the
        // static pod either way).
        let _up = MemberBack {
            w: self.w.clone(),
            cluster: self.cluster,
            name: self.name.clone(),
        };
        sleep(self.millis(2_000, 15_000)).await;
        self.fail_maybe(step)
    }
}

fn set_member(w: &mut super::World, cluster: usize, name: &str, started: bool) {
    for m in &mut w.clusters[cluster].etcd {
        if m.name == name {
            m.started = started;
        }
    }
}

struct MemberBack {
    w: W,
    cluster: usize,
    name: String,
}

impl Drop for MemberBack {
    fn drop(&mut self) {
        set_member(&mut self.w.borrow_mut(), self.cluster, &self.name, true);
    }
}

impl SimNode {
    /// The roll as the progress records show it, after a round trip that may be lost.
    async fn roll_view(&self) -> Result<order::RollView, Wait> {
        sleep(self.millis(1, 40)).await;
        if self.lost() {
            return Err(Wait::Blind {
                what: "the progress records: request lost".into(),
            });
        }
        let w = self.w.borrow();
        let progress: Vec<Progress> = w.roll.progress.values().cloned().collect();
        Ok(view::roll_view(
            &self.planned,
            &progress,
            w.roll.release.as_ref().unwrap(),
            w.roll.from.unwrap(),
            1,
        ))
    }
}

impl Effects for SimNode {
    async fn save(&mut self, phase: &Phase) {
        *self.store.borrow_mut() = Some(phase.clone());
        if let Phase::Done { .. } = phase {
            self.w.borrow_mut().roll.started.remove(&self.name);
        }
    }

    async fn report(&mut self, phase: &Phase) -> bool {
        sleep(self.millis(1, 40)).await;
        if self.lost() {
            self.w
                .borrow_mut()
                .note(&format!("progress {} {} lost", self.name, phase.label()));
            return false;
        }
        if let Some(p) = progress_of(&self.name, phase, self.clock.now_ms()) {
            let mut w = self.w.borrow_mut();
            w.note(&format!("progress {} {}", self.name, p.phase));
            w.roll.progress.insert(self.name.clone(), p);
        }
        true
    }

    async fn fetch(&mut self, _sequence: u64) -> Result<(), String> {
        // A download of up to 20 s: the etcd view of the round may be stale after it.
        sleep(self.millis(100, 20_000)).await;
        if self.lost() {
            return Err("payload download interrupted".into());
        }
        Ok(())
    }

    async fn check_fetch_turn(&mut self) -> Result<(), Wait> {
        // As the live agent: a node that cannot see the roll downloads anyway.
        match self.roll_view().await {
            Ok(roll) => order::may_fetch(&roll, &self.name),
            Err(_) => Ok(()),
        }
    }

    async fn check_turn(&mut self) -> Result<(), Wait> {
        let roll = self.roll_view().await?;
        quorum_guard::may_start(
            &roll,
            &self.name,
            self.role,
            self.etcd.as_ref(),
            self.clock.now_ms(),
        )
    }

    async fn check_quorum(&mut self) -> Result<(), Wait> {
        // As the agent: a fresh look at etcd (recorded in `looked`), not the round's.
        self.observe_etcd().await;
        quorum_guard::control_plane_may_go(self.etcd.as_ref(), &self.name, self.clock.now_ms())
    }

    async fn acquire(&mut self) -> Option<u64> {
        let r = self
            .coord()
            .acquire(UPGRADE_SEMAPHORE, UPGRADE_SLOTS, &self.name, UPGRADE_LEASE)
            .await;
        self.token = match r {
            Ok(Acquired::Granted { token, .. }) => Some(token),
            Ok(Acquired::Busy { .. }) | Err(_) => None,
        };
        self.token
    }

    async fn run(&mut self, step: Step) -> Result<(), StepError> {
        // As the agent: renew before every step; a renewal not confirmed is a lost lease.
        if let Some(token) = self.token {
            let now = Instant::now();
            self.w
                .borrow_mut()
                .roll
                .renew_sent
                .insert(self.name.clone(), now);
            match self
                .coord()
                .renew(UPGRADE_SEMAPHORE, &self.name, token, UPGRADE_LEASE)
                .await
            {
                Ok(()) => {}
                Err(_) => return Err(StepError::LeaseLost),
            }
        }
        self.w
            .borrow_mut()
            .note(&format!("step {} {step}", self.name));
        self.perform(step).await.map_err(|cause| StepError::Failed {
            cause,
            can_serve: !matches!(step, Step::RestartKubelet | Step::WaitReady),
        })
    }

    async fn uncordon(&mut self) {}

    async fn release(&mut self, token: u64) {
        let _ = self
            .coord()
            .release(UPGRADE_SEMAPHORE, &self.name, token)
            .await;
        self.token = None;
    }

    async fn resume_request(&mut self) -> Option<(u64, u64)> {
        sleep(self.millis(1, 40)).await;
        self.w.borrow().roll.resume
    }
}

/// The agent's upgrade loop for one node (as `Live::round` in the daemon loop): judge
/// the release, run the machine until it pauses, wait, again.
async fn agent(mut fx: SimNode, me: Me, from: KubeVersion) {
    let stored = fx.store.borrow().clone();
    let (mut phase, mut pending) = match stored {
        Some(p) => transition::restart(p),
        None => (Phase::Idle, Vec::<Action>::new()),
    };
    loop {
        fx.observe_etcd().await;
        let rel = fx.w.borrow().roll.release.clone();
        if let Some(r) = rel {
            let verdict = release::judge(
                CLUSTER_ID,
                DistroKind::Kubeadm,
                from,
                sequence_of(&phase),
                &r,
            );
            let event = Event::Release {
                sequence: r.sequence,
                verdict,
            };
            let (next, acts) = transition::step(&me, phase.clone(), event);
            if next != phase {
                fx.save(&next).await;
                phase = next;
                pending = acts;
            }
        }
        let acts = std::mem::take(&mut pending);
        let (next, round) = driver::round(&me, phase, acts, &mut fx).await;
        phase = next;
        match round {
            Round::Pause(acts) => {
                pending = acts;
                sleep(PAUSE).await;
            }
            Round::Quiet => sleep(Duration::from_secs(5)).await,
        }
    }
}

struct Upgrader {
    spec_name: String,
    role: Role,
    store: Rc<RefCell<Option<Phase>>>,
}

#[allow(clippy::too_many_arguments, reason = "the harness's wiring, once")]
fn spawn(
    w: &W,
    u: &Upgrader,
    cluster: usize,
    endpoints: &[String],
    planned: &[(String, Role)],
    clock: TokioClock,
    from: KubeVersion,
) -> tokio::task::JoinHandle<()> {
    let first = planned
        .iter()
        .filter(|(_, r)| *r == Role::ControlPlane)
        .map(|(n, _)| n.as_str())
        .min()
        == Some(u.spec_name.as_str());
    let me = Me {
        distribution: DistroKind::Kubeadm,
        role: u.role,
        first_control_plane: first,
    };
    let fx = SimNode {
        w: w.clone(),
        name: u.spec_name.clone(),
        role: u.role,
        cluster,
        endpoints: endpoints.to_vec(),
        clock,
        store: u.store.clone(),
        etcd: None,
        token: None,
        planned: planned.to_vec(),
    };
    tokio::task::spawn_local(agent(fx, me, from))
}

/// Rolls the assembled cluster `cluster` of `nodes` to a new minor version under faults
/// from `rng`; violations go to the world's.
pub async fn roll(w: &W, nodes: &[NodeSpec], cluster: usize, rng: &mut StdRng, clock: TokioClock) {
    let from = v("v1.31.4");
    let to = v("v1.32.0");
    {
        let mut wm = w.borrow_mut();
        wm.faults = true;
        wm.roll.p_step_fail = rng.random_range(0.0..0.03);
        wm.roll.from = Some(from);
        wm.roll.api = Some(from);
        for n in nodes {
            wm.roll.kubelet.insert(n.name.clone(), from);
        }
        wm.roll.release = Some(Release {
            cluster_id: CLUSTER_ID.into(),
            sequence: 1,
            distribution: DistroKind::Kubeadm,
            version: to,
            payload: PayloadRef {
                sha256: String::new(),
                size: 0,
                source: PayloadSource::Url {
                    url: "http://sim/payload".into(),
                },
            },
            published_at_ms: clock.now_ms(),
        });
        wm.note("release published");
    }
    let planned: Vec<(String, Role)> = nodes.iter().map(|n| (n.name.clone(), n.role)).collect();
    let endpoints: Vec<String> = {
        let wm = w.borrow();
        nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| format!("https://{}:2379", wm.ips[&n.name]))
            .collect()
    };
    let ups: Vec<Upgrader> = nodes
        .iter()
        .map(|n| Upgrader {
            spec_name: n.name.clone(),
            role: n.role,
            store: Rc::new(RefCell::new(None)),
        })
        .collect();
    let go = |u: &Upgrader| spawn(w, u, cluster, &endpoints, &planned, clock, from);
    let mut handles: Vec<Option<tokio::task::JoinHandle<()>>> =
        ups.iter().map(|u| Some(go(u))).collect();
    let start = Instant::now();
    let fault_window = Duration::from_secs(20 * 60);
    let mut down: Vec<Option<Instant>> = vec![None; ups.len()];
    let mut etcd_down: Option<(String, Instant)> = None;
    loop {
        sleep(Duration::from_millis(rng.random_range(200..10_000))).await;
        let now = Instant::now();
        let in_window = now - start < fault_window;
        for (i, u) in ups.iter().enumerate() {
            if let Some(at) = down[i]
                && (at <= now || !in_window)
            {
                handles[i] = Some(go(u));
                down[i] = None;
            }
        }
        if let Some((name, until)) = etcd_down.clone()
            && (until <= now || !in_window)
        {
            set_member(&mut w.borrow_mut(), cluster, &name, true);
            etcd_down = None;
        }
        if in_window {
            // A crash at whatever await point the agent is at (mid-step too).
            if rng.random_bool(0.3) {
                let i = rng.random_range(0..ups.len());
                if let Some(h) = handles[i].take() {
                    h.abort();
                    let _ = h.await;
                    down[i] = Some(now + Duration::from_millis(rng.random_range(500..90_000)));
                }
            }
            // The rendezvous loses the lock's holder (its lease swept early).
            if rng.random_bool(0.05) {
                let mut wm = w.borrow_mut();
                let s = wm.sem(UPGRADE_SEMAPHORE);
                if !s.holders.is_empty() {
                    s.holders.clear();
                    wm.bump(nodeagent::coord::ChangeKind::SlotFreed, UPGRADE_SEMAPHORE);
                    wm.roll.lease_losses += 1;
                    wm.roll.lease_lost_at = Some(now);
                    wm.note("upgrade lease lost");
                }
            }
            // A control plane's etcd member down for a while (its machine reboots).
            if etcd_down.is_none() && rng.random_bool(0.05) {
                let cps: Vec<&Upgrader> = ups
                    .iter()
                    .filter(|u| u.role == Role::ControlPlane)
                    .collect();
                let u = cps[rng.random_range(0..cps.len())];
                let mut wm = w.borrow_mut();
                set_member(&mut wm, cluster, &u.spec_name, false);
                wm.roll.outage_at = Some(now);
                wm.note(&format!("etcd down {}", u.spec_name));
                etcd_down = Some((
                    u.spec_name.clone(),
                    now + Duration::from_millis(rng.random_range(1_000..60_000)),
                ));
            }
        } else {
            w.borrow_mut().faults = false;
        }
        // The operator: `muster upgrade --resume` some time after a stop.
        {
            let mut wm = w.borrow_mut();
            let stopped = wm.roll.progress.values().any(|p| p.phase == "stopped");
            if stopped && rng.random_bool(0.3) {
                let count = wm.roll.resume.map_or(1, |(_, c)| c + 1);
                wm.roll.resume = Some((1, count));
                wm.roll.resumes += 1;
                wm.note("resume");
            }
        }
        let all_done = ups
            .iter()
            .all(|u| matches!(*u.store.borrow(), Some(Phase::Done { .. })))
            && down.iter().all(Option::is_none);
        if !in_window && all_done {
            break;
        }
        if now - start > Duration::from_secs(4 * 3600) {
            let states: Vec<String> = ups
                .iter()
                .map(|u| format!("{}: {:?}", u.spec_name, u.store.borrow()))
                .collect();
            w.borrow_mut().violations.push(format!(
                "the roll did not finish in 4 virtual hours: {states:?}"
            ));
            break;
        }
    }
    // Let a node that just reached `done` give the lock back (or a lost release's lease
    // run out).
    sleep(UPGRADE_LEASE + Duration::from_secs(5)).await;
    for h in handles.into_iter().flatten() {
        h.abort();
        let _ = h.await;
    }
    let mut wm = w.borrow_mut();
    let mut v = Vec::new();
    for n in nodes {
        if wm.roll.kubelet.get(&n.name) != Some(&to) {
            v.push(format!(
                "{} ends at {:?}, not {to}",
                n.name,
                wm.roll.kubelet.get(&n.name)
            ));
        }
    }
    if wm.roll.api != Some(to) {
        v.push(format!("the API server ends at {:?}", wm.roll.api));
    }
    let down: Vec<String> = wm.clusters[cluster]
        .etcd
        .iter()
        .filter(|m| !m.started)
        .map(|m| m.name.clone())
        .collect();
    if !down.is_empty() {
        v.push(format!("etcd members down after the roll: {down:?}"));
    }
    let holders: Vec<String> = wm
        .sem(UPGRADE_SEMAPHORE)
        .holders
        .iter()
        .map(|h| h.name.clone())
        .collect();
    if !holders.is_empty() {
        v.push(format!("the upgrade lock is still held by {holders:?}"));
    }
    wm.violations.extend(v);
}
