//! The bootstrap as an explicit state machine. `step` is pure: it takes the state and the
//! outcome of the last actions and returns the next state and the actions to run for it.
//! The driver performs the actions (all idempotent) and feeds their outcome back; the state
//! is persisted before the actions run, so a restart resumes where it stopped.
//!
//! Control planes: `CheckingInit` → `Electing` (1-slot `init` semaphore, fencing token) →
//! `Initializing` → `CheckingHealth` → `Publishing` → `Releasing` → `Done`; the losers and
//! late comers: `WaitingForInit` → `AcquiringJoinSlot` (1-slot `cp-join`) →
//! `CleaningStaleMember` → `Joining` → `Verifying` → `Releasing` → `Done`. Workers take one
//! of N `worker-join` slots as soon as the cluster is initialized. Failures after a
//! destructive step go through `Compensating` (remove own etcd member, reset, restore the
//! kube-vip manifest, release the slot) and `Backoff`.

use crate::coord::Fence;
use model::Role;
use model::spec::DistroKind;
use protocol::keys;
use serde::{Deserialize, Serialize};

/// Everything `step` needs to know about this node and cluster; fixed for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub role: Role,
    pub distro: DistroKind,
    /// etcd runs on the control planes: stale members must be cleaned before a join.
    pub stacked_etcd: bool,
    /// Slots of the `cp-join` semaphore: 1, or all control planes for k3s on SQL.
    pub cp_join_slots: u32,
    pub worker_join_slots: u32,
    /// Per-node seed so backoff jitter differs between nodes but stays reproducible.
    pub jitter_seed: u64,
    /// Consecutive healthy probes required after init and after a join.
    pub healthy_probes: u32,
    /// Failed probes after which the init or join is undone and retried.
    pub max_failed_probes: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_ms: u64,
    pub probe_interval_ms: u64,
    pub idle_ms: u64,
}

impl Config {
    pub fn new(role: Role, distro: DistroKind, stacked_etcd: bool, seed: u64) -> Self {
        Config {
            role,
            distro,
            stacked_etcd,
            cp_join_slots: 1,
            worker_join_slots: 2,
            jitter_seed: seed,
            healthy_probes: 3,
            max_failed_probes: 90,
            backoff_base_ms: 2_000,
            backoff_max_ms: 60_000,
            poll_ms: 3_000,
            probe_interval_ms: 2_000,
            idle_ms: 15_000,
        }
    }

    fn join_semaphore(&self) -> (&'static str, u32) {
        match self.role {
            Role::ControlPlane => (keys::CP_JOIN_SEMAPHORE, self.cp_join_slots.max(1)),
            _ => (keys::WORKER_JOIN_SEMAPHORE, self.worker_join_slots.max(1)),
        }
    }

    fn cleans_members(&self) -> bool {
        self.role == Role::ControlPlane && self.stacked_etcd
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Registering,
    CheckingInit,
    WaitingForInit,
    Electing,
    Initializing {
        token: u64,
    },
    CheckingHealth {
        token: u64,
        successes: u32,
        failures: u32,
    },
    Publishing {
        token: u64,
    },
    AwaitingRefresh,
    AcquiringJoinSlot,
    CleaningStaleMember {
        token: u64,
    },
    Joining {
        token: u64,
    },
    Verifying {
        token: u64,
        successes: u32,
        failures: u32,
    },
    Releasing {
        fence: Fence,
    },
    ConfiguringLb,
    /// Undo a failed or lost init/join, then back off and resume `then`.
    Compensating {
        slot: Option<Fence>,
        remove_own_member: bool,
        then: Box<Phase>,
    },
    /// Wait `delay_ms`, then resume `then`.
    Backoff {
        delay_ms: u64,
        then: Box<Phase>,
    },
    Done,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Registering => "registering",
            Phase::CheckingInit => "checking-init",
            Phase::WaitingForInit => "waiting-for-init",
            Phase::Electing => "electing",
            Phase::Initializing { .. } => "initializing",
            Phase::CheckingHealth { .. } => "checking-health",
            Phase::Publishing { .. } => "publishing",
            Phase::AwaitingRefresh => "awaiting-refresh",
            Phase::AcquiringJoinSlot => "acquiring-join-slot",
            Phase::CleaningStaleMember { .. } => "cleaning-stale-member",
            Phase::Joining { .. } => "joining",
            Phase::Verifying { .. } => "verifying",
            Phase::Releasing { .. } => "releasing",
            Phase::ConfiguringLb => "configuring-lb",
            Phase::Compensating { .. } => "compensating",
            Phase::Backoff { .. } => "backoff",
            Phase::Done => "done",
        }
    }
}

/// The phase, how many attempts the current cycle has taken, and the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(flatten)]
    pub phase: Phase,
    pub attempt: u32,
    pub last_error: Option<String>,
}

impl State {
    pub fn initial() -> Self {
        State {
            phase: Phase::Preflight,
            attempt: 0,
            last_error: None,
        }
    }

    /// Where a state read back after a crash resumes. A join cut short leaves a half-joined
    /// node and maybe an etcd member: start again from cleaning, which resets first.
    pub fn resume(self) -> Self {
        let phase = match self.phase {
            Phase::Joining { token } => Phase::CleaningStaleMember { token },
            p => p,
        };
        State { phase, ..self }
    }
}

/// What the driver must do for a state, in order. The first non-`Done` outcome stops the
/// list and is the event fed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    InstallNodeTree,
    Preflight,
    StartVipServices,
    Register,
    /// → `Initialized(bool)`.
    CheckInitialized,
    /// → `Granted`/`Busy`.
    Acquire {
        semaphore: &'static str,
        slots: u32,
    },
    /// → `Done`/`Fenced`.
    Renew(Fence),
    /// → `Done`/`AlreadyInitialized`.
    EnsureNotInitialized,
    Reset,
    KubeVipSuperAdmin,
    RestoreKubeVip,
    /// Put the external etcd's CA and client pair back at kubeadm's paths from the copy the
    /// seed delivered (`kubeadm reset` empties `/etc/kubernetes/pki`); nothing without one.
    RestoreExternalEtcd,
    Init(Fence),
    /// Local `/readyz`, then through the VIP → `Probe(bool)`.
    ProbeInitHealth,
    /// `Done` at once if the `initialized` record is this node's with this token; else
    /// renew, then join material and the `initialized` record, both fenced →
    /// `Done`/`Fenced`.
    Publish(Fence),
    /// → `Done`/`MaterialStale` (after writing a refresh request).
    FetchMaterial {
        control_plane: bool,
    },
    /// Remove members with this node's name or peer URL, unstarted ones and learners (the
    /// caller holds the only join slot).
    RemoveStaleMembers,
    /// Remove this node's own member before the reset stops it: a started voter stopped
    /// while still a member costs the cluster a vote (with two voters, its quorum). Fails
    /// (and the compensation is retried) unless the member is gone, removed, or an
    /// unstarted voter that etcd cannot remove without quorum.
    RemoveOwnMember,
    Join {
        control_plane: bool,
        fence: Fence,
    },
    /// → `Probe(bool)`.
    VerifyJoin {
        control_plane: bool,
    },
    Release(Fence),
    StartLb,
    ServeRefresh,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Done,
    Failed(String),
    Fenced(String),
    Initialized(bool),
    AlreadyInitialized,
    Granted { token: u64 },
    Busy,
    Probe(bool),
    MaterialStale,
}

/// Deterministic jitter from the node seed and the attempt (splitmix64).
fn jitter(seed: u64, attempt: u32, span: u64) -> u64 {
    if span == 0 {
        return 0;
    }
    let mut z = seed ^ (u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % span
}

/// Exponential backoff with jitter: base·2^(attempt-1), capped, plus up to half of it.
pub fn backoff_ms(cfg: &Config, attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(16);
    let d = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.backoff_max_ms);
    d + jitter(cfg.jitter_seed, attempt, d / 2 + 1)
}

fn poll(cfg: &Config, attempt: u32, then: Phase) -> Phase {
    Phase::Backoff {
        delay_ms: cfg.poll_ms + jitter(cfg.jitter_seed, attempt, cfg.poll_ms / 2 + 1),
        then: Box::new(then),
    }
}

fn fence(semaphore: &str, token: u64) -> Fence {
    Fence {
        semaphore: semaphore.to_string(),
        token,
    }
}

fn init_fence(token: u64) -> Fence {
    fence(keys::INIT_SEMAPHORE, token)
}

fn join_fence(cfg: &Config, token: u64) -> Fence {
    fence(cfg.join_semaphore().0, token)
}

/// The actions that carry out `phase`. Pure.
pub fn actions(cfg: &Config, phase: &Phase) -> Vec<Action> {
    let cp = cfg.role == Role::ControlPlane;
    match phase {
        Phase::Preflight => {
            let mut a = vec![Action::InstallNodeTree, Action::Preflight];
            if cp {
                a.push(Action::StartVipServices);
            }
            a
        }
        Phase::Registering => vec![Action::Register],
        Phase::CheckingInit | Phase::WaitingForInit => vec![Action::CheckInitialized],
        Phase::Electing => vec![Action::Acquire {
            semaphore: keys::INIT_SEMAPHORE,
            slots: 1,
        }],
        Phase::Initializing { token } => vec![
            Action::Renew(init_fence(*token)),
            Action::EnsureNotInitialized,
            Action::Reset,
            Action::RestoreExternalEtcd,
            Action::KubeVipSuperAdmin,
            Action::Init(init_fence(*token)),
            Action::RestoreKubeVip,
        ],
        Phase::CheckingHealth { token, .. } => {
            vec![Action::Renew(init_fence(*token)), Action::ProbeInitHealth]
        }
        // `Publish` renews the lease itself, after checking whether its `initialized`
        // record already landed (an answer lost, then the lease ran out): then the init is
        // done and must not be undone.
        Phase::Publishing { token } => vec![Action::Publish(init_fence(*token))],
        Phase::AwaitingRefresh => vec![Action::FetchMaterial { control_plane: cp }],
        Phase::AcquiringJoinSlot => {
            let (semaphore, slots) = cfg.join_semaphore();
            vec![
                Action::FetchMaterial { control_plane: cp },
                Action::Acquire { semaphore, slots },
            ]
        }
        Phase::CleaningStaleMember { token } => {
            let mut a = vec![Action::Renew(join_fence(cfg, *token))];
            if cfg.cleans_members() {
                a.push(Action::RemoveStaleMembers);
            }
            a.extend([
                Action::Reset,
                Action::RestoreExternalEtcd,
                Action::RestoreKubeVip,
            ]);
            a
        }
        Phase::Joining { token } => {
            let mut a = vec![Action::Renew(join_fence(cfg, *token))];
            if cp {
                // The first join may come without a reset before it.
                a.push(Action::RestoreExternalEtcd);
            }
            a.push(Action::Join {
                control_plane: cp,
                fence: join_fence(cfg, *token),
            });
            a
        }
        Phase::Verifying { token, .. } => vec![
            Action::Renew(join_fence(cfg, *token)),
            Action::VerifyJoin { control_plane: cp },
        ],
        Phase::Releasing { fence } => vec![Action::Release(fence.clone())],
        Phase::ConfiguringLb => vec![Action::StartLb],
        Phase::Compensating {
            slot,
            remove_own_member,
            ..
        } => {
            let mut a = Vec::new();
            if *remove_own_member && cfg.cleans_members() {
                a.push(Action::RemoveOwnMember);
            }
            a.extend([
                Action::Reset,
                Action::RestoreExternalEtcd,
                Action::RestoreKubeVip,
            ]);
            if let Some(f) = slot {
                a.push(Action::Release(f.clone()));
            }
            a
        }
        Phase::Backoff { .. } => Vec::new(),
        Phase::Done => {
            if cp {
                vec![Action::ServeRefresh]
            } else {
                Vec::new()
            }
        }
    }
}

/// How long the driver waits before running the actions of `state`.
pub fn delay_before(cfg: &Config, state: &State) -> u64 {
    match &state.phase {
        Phase::Backoff { delay_ms, .. } => *delay_ms,
        Phase::CheckingHealth {
            successes,
            failures,
            ..
        }
        | Phase::Verifying {
            successes,
            failures,
            ..
        } if successes + failures > 0 => cfg.probe_interval_ms,
        _ => 0,
    }
}

/// How long a `Done` node idles between its periodic duties.
pub fn idle_ms(cfg: &Config) -> u64 {
    cfg.idle_ms
}

/// The transition function. Pure: no I/O, no clock, no randomness.
pub fn step(cfg: &Config, state: State, event: Event) -> (State, Vec<Action>) {
    let next = transition(cfg, state, event);
    let acts = actions(cfg, &next.phase);
    (next, acts)
}

fn ok(phase: Phase) -> State {
    State {
        phase,
        attempt: 0,
        last_error: None,
    }
}

fn keep(s: &State, phase: Phase) -> State {
    State {
        phase,
        attempt: s.attempt,
        last_error: s.last_error.clone(),
    }
}

/// A failure: count the attempt, remember the error, back off and retry `then`.
fn retry(cfg: &Config, s: &State, error: String, then: Phase) -> State {
    let attempt = s.attempt.saturating_add(1);
    State {
        phase: Phase::Backoff {
            delay_ms: backoff_ms(cfg, attempt),
            then: Box::new(then),
        },
        attempt,
        last_error: Some(error),
    }
}

fn compensate(
    s: &State,
    error: String,
    slot: Option<Fence>,
    remove_own_member: bool,
    then: Phase,
) -> State {
    State {
        phase: Phase::Compensating {
            slot,
            remove_own_member,
            then: Box::new(then),
        },
        attempt: s.attempt.saturating_add(1),
        last_error: Some(error),
    }
}

fn after_join_slot(cfg: &Config, token: u64) -> Phase {
    if cfg.cleans_members() {
        Phase::CleaningStaleMember { token }
    } else {
        Phase::Joining { token }
    }
}

fn transition(cfg: &Config, s: State, event: Event) -> State {
    use Event as E;
    use Phase as P;
    let cp = cfg.role == Role::ControlPlane;
    let phase = s.phase.clone();
    match (phase, event) {
        // A backoff ends with its wait; whatever it resumes starts fresh.
        (P::Backoff { then, .. }, _) => keep(&s, *then),

        (P::Preflight, E::Done) => ok(P::Registering),
        (P::Registering, E::Done) => match cfg.role {
            Role::LoadBalancer => ok(P::ConfiguringLb),
            _ => ok(P::CheckingInit),
        },
        (P::ConfiguringLb, E::Done) => ok(P::Done),

        (P::CheckingInit | P::WaitingForInit, E::Initialized(true)) => {
            keep(&s, P::AcquiringJoinSlot)
        }
        (P::CheckingInit | P::WaitingForInit, E::Initialized(false)) if cp => keep(&s, P::Electing),
        (P::CheckingInit, E::Initialized(false)) => keep(&s, P::WaitingForInit),
        (P::WaitingForInit, E::Initialized(false)) => {
            keep(&s, poll(cfg, s.attempt, P::WaitingForInit))
        }

        (P::Electing, E::Granted { token }) => keep(&s, P::Initializing { token }),
        (P::Electing, E::Busy) => keep(&s, poll(cfg, s.attempt, P::WaitingForInit)),

        (P::Initializing { token }, E::Done) => keep(
            &s,
            P::CheckingHealth {
                token,
                successes: 0,
                failures: 0,
            },
        ),
        // Someone else's init was published: never init; undo anything of ours and join.
        (P::Initializing { token }, E::AlreadyInitialized) => compensate(
            &s,
            "the cluster was initialized by another node".into(),
            Some(init_fence(token)),
            false,
            P::CheckingInit,
        ),
        (P::Initializing { token }, E::Failed(e)) => {
            compensate(&s, e, Some(init_fence(token)), false, P::CheckingInit)
        }
        (
            P::Initializing { .. } | P::CheckingHealth { .. } | P::Publishing { .. },
            E::Fenced(e),
        ) => compensate(
            &s,
            format!("lost the init lease: {e}"),
            None,
            false,
            P::CheckingInit,
        ),

        (
            P::CheckingHealth {
                token,
                successes,
                failures,
            },
            E::Probe(true),
        ) => {
            if successes + 1 >= cfg.healthy_probes {
                keep(&s, P::Publishing { token })
            } else {
                keep(
                    &s,
                    P::CheckingHealth {
                        token,
                        successes: successes + 1,
                        failures,
                    },
                )
            }
        }
        (
            P::CheckingHealth {
                token, failures, ..
            },
            E::Probe(false),
        ) => {
            if failures + 1 > cfg.max_failed_probes {
                compensate(
                    &s,
                    "the new control plane never became healthy".into(),
                    Some(init_fence(token)),
                    false,
                    P::CheckingInit,
                )
            } else {
                keep(
                    &s,
                    P::CheckingHealth {
                        token,
                        successes: 0,
                        failures: failures + 1,
                    },
                )
            }
        }

        (P::Publishing { token }, E::Done) => ok(P::Releasing {
            fence: init_fence(token),
        }),

        (P::AwaitingRefresh, E::Done) => keep(&s, P::AcquiringJoinSlot),
        (P::AwaitingRefresh | P::AcquiringJoinSlot, E::MaterialStale) => {
            keep(&s, poll(cfg, s.attempt, P::AwaitingRefresh))
        }
        (P::AcquiringJoinSlot, E::Granted { token }) => keep(&s, after_join_slot(cfg, token)),
        (P::AcquiringJoinSlot, E::Busy) => keep(&s, poll(cfg, s.attempt, P::AcquiringJoinSlot)),

        (P::CleaningStaleMember { token }, E::Done) => keep(&s, P::Joining { token }),
        (P::CleaningStaleMember { .. }, E::Fenced(e)) => retry(
            cfg,
            &s,
            format!("lost the join slot: {e}"),
            P::AcquiringJoinSlot,
        ),

        (P::Joining { token }, E::Done) => keep(
            &s,
            P::Verifying {
                token,
                successes: 0,
                failures: 0,
            },
        ),
        (P::Joining { token }, E::MaterialStale) => compensate(
            &s,
            "the join material expired".into(),
            Some(join_fence(cfg, token)),
            false,
            P::AwaitingRefresh,
        ),
        (P::Joining { token }, E::Failed(e)) => compensate(
            &s,
            e,
            Some(join_fence(cfg, token)),
            true,
            P::AcquiringJoinSlot,
        ),
        (P::Joining { .. } | P::Verifying { .. }, E::Fenced(e)) => compensate(
            &s,
            format!("lost the join slot: {e}"),
            None,
            true,
            P::AcquiringJoinSlot,
        ),

        (
            P::Verifying {
                token,
                successes,
                failures,
            },
            E::Probe(true),
        ) => {
            if successes + 1 >= cfg.healthy_probes {
                ok(P::Releasing {
                    fence: join_fence(cfg, token),
                })
            } else {
                keep(
                    &s,
                    P::Verifying {
                        token,
                        successes: successes + 1,
                        failures,
                    },
                )
            }
        }
        (
            P::Verifying {
                token, failures, ..
            },
            E::Probe(false) | E::Failed(_),
        ) => {
            if failures + 1 > cfg.max_failed_probes {
                compensate(
                    &s,
                    "the joined node never became healthy".into(),
                    Some(join_fence(cfg, token)),
                    true,
                    P::AcquiringJoinSlot,
                )
            } else {
                keep(
                    &s,
                    P::Verifying {
                        token,
                        successes: 0,
                        failures: failures + 1,
                    },
                )
            }
        }

        (P::Releasing { .. }, E::Done) => ok(P::Done),

        (P::Compensating { then, .. }, E::Done) => State {
            phase: Phase::Backoff {
                delay_ms: backoff_ms(cfg, s.attempt),
                then,
            },
            attempt: s.attempt,
            last_error: s.last_error.clone(),
        },

        (P::Done, _) => keep(&s, P::Done),

        // Transient failures (rendezvous unreachable, a command that failed before doing
        // anything): back off and run the same phase again; its actions are idempotent.
        (p, E::Failed(e)) => retry(cfg, &s, e, p),
        // A lost lease where nothing destructive happened yet.
        (P::Releasing { .. }, E::Fenced(_)) => ok(P::Done),
        (P::Electing | P::AcquiringJoinSlot, E::Fenced(_)) => keep(&s, s.phase.clone()),
        // Anything else is an outcome this phase cannot produce: hold the phase (logged by
        // the driver) rather than crash a boot-critical daemon.
        (p, _) => keep(&s, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use Phase as P;

    fn cp() -> Config {
        Config::new(Role::ControlPlane, DistroKind::Kubeadm, true, 1)
    }
    fn worker() -> Config {
        Config::new(Role::Worker, DistroKind::Kubeadm, true, 1)
    }
    fn at(phase: Phase) -> State {
        State {
            phase,
            attempt: 0,
            last_error: None,
        }
    }
    fn go(cfg: &Config, phase: Phase, e: Event) -> State {
        step(cfg, at(phase), e).0
    }
    fn unwrap_backoff(s: &State) -> Phase {
        match &s.phase {
            P::Backoff { then, .. } => (**then).clone(),
            p => panic!("expected backoff, got {p:?}"),
        }
    }

    #[test]
    fn control_plane_happy_path_to_init() {
        let c = cp();
        assert_eq!(go(&c, P::Preflight, E::Done).phase, P::Registering);
        assert_eq!(go(&c, P::Registering, E::Done).phase, P::CheckingInit);
        assert_eq!(
            go(&c, P::CheckingInit, E::Initialized(false)).phase,
            P::Electing
        );
        assert_eq!(
            go(&c, P::Electing, E::Granted { token: 7 }).phase,
            P::Initializing { token: 7 }
        );
        let s = go(&c, P::Initializing { token: 7 }, E::Done);
        assert!(matches!(s.phase, P::CheckingHealth { token: 7, .. }));
        let mut s = s;
        for _ in 0..c.healthy_probes {
            s = step(&c, s, E::Probe(true)).0;
        }
        assert_eq!(s.phase, P::Publishing { token: 7 });
        let (s, acts) = step(&c, s, E::Done);
        assert_eq!(
            s.phase,
            P::Releasing {
                fence: init_fence(7)
            }
        );
        assert_eq!(acts, vec![Action::Release(init_fence(7))]);
        assert_eq!(step(&c, s, E::Done).0.phase, P::Done);
    }

    #[test]
    fn init_actions_switch_kube_vip_around_init_under_the_lease() {
        let a = actions(&cp(), &P::Initializing { token: 3 });
        assert_eq!(a[0], Action::Renew(init_fence(3)));
        assert_eq!(a[1], Action::EnsureNotInitialized);
        let sa = a
            .iter()
            .position(|x| *x == Action::KubeVipSuperAdmin)
            .unwrap();
        let init = a
            .iter()
            .position(|x| *x == Action::Init(init_fence(3)))
            .unwrap();
        let back = a
            .iter()
            .rposition(|x| *x == Action::RestoreKubeVip)
            .unwrap();
        assert!(sa < init && init < back);
    }

    #[test]
    fn losing_the_election_waits_then_joins() {
        let c = cp();
        let s = go(&c, P::Electing, E::Busy);
        assert_eq!(unwrap_backoff(&s), P::WaitingForInit);
        assert_eq!(
            go(&c, P::WaitingForInit, E::Initialized(false)).phase,
            P::Electing
        );
        assert_eq!(
            go(&c, P::WaitingForInit, E::Initialized(true)).phase,
            P::AcquiringJoinSlot
        );
        assert_eq!(
            go(&c, P::CheckingInit, E::Initialized(true)).phase,
            P::AcquiringJoinSlot,
            "a node that finds `initialized` never inits"
        );
    }

    #[test]
    fn init_failure_paths_compensate() {
        let c = cp();
        for (e, slot) in [
            (E::Failed("kubeadm init: boom".into()), Some(init_fence(4))),
            (E::AlreadyInitialized, Some(init_fence(4))),
            (E::Fenced("lost".into()), None),
        ] {
            let s = go(&c, P::Initializing { token: 4 }, e);
            assert_eq!(s.attempt, 1);
            assert!(s.last_error.is_some());
            match &s.phase {
                P::Compensating {
                    slot: got,
                    remove_own_member,
                    then,
                } => {
                    assert_eq!(got, &slot);
                    assert!(!remove_own_member);
                    assert_eq!(**then, P::CheckingInit);
                }
                p => panic!("{p:?}"),
            }
        }
        for p in [
            P::CheckingHealth {
                token: 4,
                successes: 1,
                failures: 0,
            },
            P::Publishing { token: 4 },
        ] {
            let s = go(&c, p, E::Fenced("lost".into()));
            assert!(matches!(s.phase, P::Compensating { slot: None, .. }));
        }
    }

    #[test]
    fn unhealthy_init_gives_up_after_max_probes() {
        let c = cp();
        let s = go(
            &c,
            P::CheckingHealth {
                token: 1,
                successes: 2,
                failures: 0,
            },
            E::Probe(false),
        );
        assert_eq!(
            s.phase,
            P::CheckingHealth {
                token: 1,
                successes: 0,
                failures: 1
            },
            "successes must be consecutive"
        );
        let s = go(
            &c,
            P::CheckingHealth {
                token: 1,
                successes: 0,
                failures: c.max_failed_probes,
            },
            E::Probe(false),
        );
        assert!(matches!(s.phase, P::Compensating { .. }));
    }

    #[test]
    fn control_plane_join_path_and_failures() {
        let c = cp();
        assert_eq!(
            go(&c, P::AcquiringJoinSlot, E::Granted { token: 2 }).phase,
            P::CleaningStaleMember { token: 2 }
        );
        assert_eq!(
            unwrap_backoff(&go(&c, P::AcquiringJoinSlot, E::Busy)),
            P::AcquiringJoinSlot
        );
        assert_eq!(
            unwrap_backoff(&go(&c, P::AcquiringJoinSlot, E::MaterialStale)),
            P::AwaitingRefresh
        );
        assert_eq!(
            go(&c, P::AwaitingRefresh, E::Done).phase,
            P::AcquiringJoinSlot
        );
        let a = actions(&c, &P::CleaningStaleMember { token: 2 });
        assert!(a.contains(&Action::RemoveStaleMembers));
        assert_eq!(
            go(&c, P::CleaningStaleMember { token: 2 }, E::Done).phase,
            P::Joining { token: 2 }
        );
        assert_eq!(
            unwrap_backoff(&go(
                &c,
                P::CleaningStaleMember { token: 2 },
                E::Fenced("x".into())
            )),
            P::AcquiringJoinSlot
        );
        let s = go(&c, P::Joining { token: 2 }, E::Failed("join: boom".into()));
        let fence = join_fence(&c, 2);
        assert!(matches!(
            &s.phase,
            P::Compensating { slot: Some(f), remove_own_member: true, then }
                if *f == fence && **then == P::AcquiringJoinSlot
        ));
        let acts = actions(&c, &s.phase);
        assert_eq!(
            acts,
            vec![
                Action::RemoveOwnMember,
                Action::Reset,
                Action::RestoreExternalEtcd,
                Action::RestoreKubeVip,
                Action::Release(fence.clone())
            ]
        );
        let s = go(&c, P::Joining { token: 2 }, E::MaterialStale);
        assert!(matches!(&s.phase, P::Compensating { then, .. } if **then == P::AwaitingRefresh));
        let s = go(&c, P::Joining { token: 2 }, E::Done);
        assert!(matches!(s.phase, P::Verifying { .. }));
        let mut s = s;
        for _ in 0..c.healthy_probes {
            s = step(&c, s, E::Probe(true)).0;
        }
        assert_eq!(s.phase, P::Releasing { fence });
    }

    #[test]
    fn compensation_backs_off_with_growing_jittered_delay() {
        let c = cp();
        let s = State {
            phase: P::Compensating {
                slot: None,
                remove_own_member: false,
                then: Box::new(P::CheckingInit),
            },
            attempt: 3,
            last_error: Some("x".into()),
        };
        let (s2, acts) = step(&c, s.clone(), E::Done);
        assert!(acts.is_empty());
        let P::Backoff { delay_ms, .. } = s2.phase else {
            panic!()
        };
        assert!((8_000..=12_000).contains(&delay_ms), "{delay_ms}");
        assert!(backoff_ms(&c, 20) <= c.backoff_max_ms * 3 / 2 + 1);
        let s3 = step(&c, s, E::Failed("reset: boom".into())).0;
        assert!(matches!(unwrap_backoff(&s3), P::Compensating { .. }));
        assert_eq!(s3.attempt, 4);
        let other = Config::new(Role::ControlPlane, DistroKind::Kubeadm, true, 99);
        assert_ne!(
            backoff_ms(&c, 2),
            backoff_ms(&other, 2),
            "jitter differs per node"
        );
    }

    #[test]
    fn workers_wait_for_init_and_never_clean_etcd() {
        let w = worker();
        assert_eq!(
            go(&w, P::CheckingInit, E::Initialized(false)).phase,
            P::WaitingForInit
        );
        assert_eq!(
            unwrap_backoff(&go(&w, P::WaitingForInit, E::Initialized(false))),
            P::WaitingForInit
        );
        assert_eq!(
            actions(&w, &P::AcquiringJoinSlot)[1],
            Action::Acquire {
                semaphore: keys::WORKER_JOIN_SEMAPHORE,
                slots: 2
            }
        );
        assert_eq!(
            go(&w, P::AcquiringJoinSlot, E::Granted { token: 1 }).phase,
            P::Joining { token: 1 }
        );
        let s = go(&w, P::Joining { token: 1 }, E::Failed("x".into()));
        assert!(!actions(&w, &s.phase).contains(&Action::RemoveOwnMember));
    }

    #[test]
    fn load_balancers_configure_and_finish() {
        let lb = Config::new(Role::LoadBalancer, DistroKind::Kubeadm, true, 1);
        assert_eq!(go(&lb, P::Registering, E::Done).phase, P::ConfiguringLb);
        assert_eq!(actions(&lb, &P::ConfiguringLb), vec![Action::StartLb]);
        assert_eq!(go(&lb, P::ConfiguringLb, E::Done).phase, P::Done);
        assert!(
            unwrap_backoff(&go(&lb, P::ConfiguringLb, E::Failed("haproxy".into())))
                == P::ConfiguringLb
        );
    }

    /// kubeadm on an external etcd: a control plane is no etcd member, so neither the
    /// join nor its compensation touches etcd membership (kubeadm reset only); joins still
    /// go one at a time.
    #[test]
    fn kubeadm_on_external_etcd_never_touches_members() {
        let c = Config::new(Role::ControlPlane, DistroKind::Kubeadm, false, 1);
        assert_eq!(
            actions(&c, &P::AcquiringJoinSlot)[1],
            Action::Acquire {
                semaphore: keys::CP_JOIN_SEMAPHORE,
                slots: 1
            }
        );
        let granted = go(&c, P::AcquiringJoinSlot, E::Granted { token: 1 });
        for s in [
            granted.clone(),
            go(&c, P::Joining { token: 1 }, E::Failed("x".into())),
            State {
                phase: P::Joining { token: 1 },
                attempt: 1,
                last_error: None,
            }
            .resume(),
        ] {
            let a = actions(&c, &s.phase);
            assert!(
                !a.contains(&Action::RemoveOwnMember) && !a.contains(&Action::RemoveStaleMembers),
                "{:?}: {a:?}",
                s.phase
            );
        }
        let failed = go(&c, P::Joining { token: 1 }, E::Failed("x".into()));
        assert!(matches!(failed.phase, P::Compensating { .. }), "{failed:?}");
        assert!(
            actions(&c, &failed.phase).contains(&Action::Reset),
            "{failed:?}"
        );
    }

    #[test]
    fn k3s_on_sql_uses_many_join_slots_and_no_cleaning() {
        let mut c = Config::new(Role::ControlPlane, DistroKind::K3s, false, 1);
        c.cp_join_slots = 3;
        assert_eq!(
            actions(&c, &P::AcquiringJoinSlot)[1],
            Action::Acquire {
                semaphore: keys::CP_JOIN_SEMAPHORE,
                slots: 3
            }
        );
        assert_eq!(
            go(&c, P::AcquiringJoinSlot, E::Granted { token: 1 }).phase,
            P::Joining { token: 1 }
        );
    }

    #[test]
    fn transient_failures_retry_the_same_phase_and_done_resets_attempts() {
        let c = cp();
        for p in [
            P::Preflight,
            P::Registering,
            P::CheckingInit,
            P::Electing,
            P::Publishing { token: 1 },
        ] {
            let s = go(&c, p.clone(), E::Failed("rendezvous unreachable".into()));
            assert_eq!(unwrap_backoff(&s), p);
            assert_eq!(s.attempt, 1);
        }
        let s = State {
            phase: P::Releasing {
                fence: init_fence(1),
            },
            attempt: 5,
            last_error: Some("x".into()),
        };
        let done = step(&c, s, E::Done).0;
        assert_eq!((done.attempt, done.last_error), (0, None));
    }

    #[test]
    fn resume_restarts_a_cut_short_join_from_cleaning() {
        let s = at(P::Joining { token: 9 }).resume();
        assert_eq!(s.phase, P::CleaningStaleMember { token: 9 });
        assert_eq!(at(P::Done).resume().phase, P::Done);
    }

    #[test]
    fn unexpected_events_hold_the_phase() {
        let c = cp();
        assert_eq!(go(&c, P::Registering, E::Busy).phase, P::Registering);
        assert_eq!(go(&c, P::Done, E::Failed("x".into())).phase, P::Done);
    }

    #[test]
    fn state_serializes_with_its_phase_tag() {
        let s = State {
            phase: P::Joining { token: 4 },
            attempt: 1,
            last_error: None,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["phase"], "joining");
        assert_eq!(serde_json::from_value::<State>(j).unwrap(), s);
    }
}
