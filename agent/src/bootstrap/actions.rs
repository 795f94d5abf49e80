//! What the driver does in each phase, in order, and how long it waits before doing it.
//! Pure: the driver performs the list and feeds back one event (see `transition`).

use super::state::{Config, Phase, State, addons_fence, init_fence, join_fence};
use crate::coord::{ChangeKind, Changes, Fence};
use model::Role;
use protocol::keys;

/// One effect the driver performs. Actions are idempotent (a restart may repeat them). The
/// list of a phase stops at the first action that does not simply finish: its answer (or
/// its failure) is the event fed back; after the last one it is `Event::Done`.
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
    /// → `AddonsApplied` when the `addons-applied` record covers this payload's add-ons in
    /// the current generation, or none are baked; else finishes.
    CheckAddonsApplied,
    /// Server-side apply the baked add-ons through the local API, the `addons` lease
    /// renewed meanwhile (idempotent: a takeover applies the same objects again, changing
    /// nothing) → `Done`/`Failed` naming the add-on, object and cause/`Fenced`.
    ApplyAddons(Fence),
    /// Write the `addons-applied` record, fenced by the lease → `Done`/`Fenced`.
    RecordAddons(Fence),
    /// This node's Node is `Ready` → `Probe(bool)`.
    VerifyReady,
    /// `Done` at once if the `initialized` record is this node's with this token; else
    /// renew, then join material and the `initialized` record, both fenced →
    /// `Done`/`Fenced`.
    Publish(Fence),
    /// The running control plane's version through the API endpoint, with the admin
    /// kubeconfig of the join material (the material need not be fresh for it) →
    /// `ControlPlaneVersion`.
    ReadControlPlaneVersion,
    /// → `Done`/`MaterialStale` (after writing a refresh request).
    FetchMaterial {
        control_plane: bool,
    },
    /// Remove members with this node's name or peer URL, unstarted ones and learners (the
    /// caller holds the only join slot); see `member_policy`.
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
    /// The `addons` lease of an apply that gave up. Never fails the phase (the lease
    /// expires anyway).
    ReleaseAfterJoin(Fence),
    StartLb,
    /// Re-render this node's membership-following configs (`lb_follow`), install the
    /// changed ones its daemon's checker accepts, reload those daemons; never fails the
    /// phase (a rejected config or failed reload is reported in status).
    FollowMembers,
    /// Answer a joiner's request for fresh join material; never fails the phase.
    ServeRefresh,
}

/// Joined control planes answer refresh requests: they can issue join material. Workers
/// and load balancers cannot; the initializer publishes its first material itself.
pub fn serves_refresh(cfg: &Config) -> bool {
    cfg.role == Role::ControlPlane
}

/// Control planes keep their join slot until their etcd member is a healthy voter, so
/// their joins never overlap (etcd takes one learner at a time, and a second member
/// joining before the first started costs quorum). A worker's registration depends on no
/// other join: it gives the slot back when `kubeadm join`/the k3s agent returns.
pub fn verifies_under_slot(cfg: &Config) -> bool {
    cfg.role == Role::ControlPlane
}

/// The actions that carry out `phase`.
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
        Phase::SettingUpAddons => vec![
            Action::CheckAddonsApplied,
            Action::Acquire {
                semaphore: keys::ADDONS_SEMAPHORE,
                slots: 1,
            },
        ],
        // Looked up again under the lease: a holder whose record landed just before its
        // lease ran out has applied them.
        Phase::ApplyingAddons { token } => vec![
            Action::Renew(addons_fence(*token)),
            Action::CheckAddonsApplied,
            Action::ApplyAddons(addons_fence(*token)),
            Action::RecordAddons(addons_fence(*token)),
        ],
        Phase::AddonsFailed { fence } => {
            vec![
                Action::ReleaseAfterJoin(fence.clone()),
                Action::ServeRefresh,
            ]
        }
        Phase::AwaitingReady { .. } => vec![Action::ServeRefresh, Action::VerifyReady],
        Phase::AwaitingRefresh => vec![Action::FetchMaterial { control_plane: cp }],
        Phase::CheckingControlPlaneVersion | Phase::WaitingForControlPlaneVersion { .. } => {
            vec![Action::ReadControlPlaneVersion]
        }
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
            a.extend(undo_local());
            a
        }
        Phase::Joining { token } => joining(cfg, *token),
        // Released for sure (or gone already) before the worker verifies.
        Phase::ReleasingJoinSlot { token } => vec![Action::Release(join_fence(cfg, *token))],
        Phase::Verifying { token, .. } if verifies_under_slot(cfg) => vec![
            Action::Renew(join_fence(cfg, *token)),
            Action::VerifyJoin { control_plane: cp },
        ],
        Phase::Verifying { .. } => vec![Action::VerifyJoin { control_plane: cp }],
        Phase::Releasing { fence } => vec![Action::Release(fence.clone())],
        Phase::ConfiguringLb => vec![Action::StartLb],
        Phase::Compensating {
            slot,
            remove_own_member,
            ..
        } => compensating(cfg, slot.as_ref(), *remove_own_member),
        Phase::Backoff { .. } | Phase::Removed => Vec::new(),
        Phase::Done => {
            let mut a = Vec::new();
            if cfg.follows_members {
                a.push(Action::FollowMembers);
            }
            if serves_refresh(cfg) {
                a.push(Action::ServeRefresh);
            }
            a
        }
    }
}

/// No renewal of its own: `Join` renews the lease right before the distro's call, with a
/// tighter budget (`Driver::under_lease`); one before that would be a round trip on the
/// critical path that proves nothing more.
fn joining(cfg: &Config, token: u64) -> Vec<Action> {
    let cp = cfg.role == Role::ControlPlane;
    let mut a = Vec::new();
    if cp {
        // The first join may come without a reset before it.
        a.push(Action::RestoreExternalEtcd);
    }
    a.push(Action::Join {
        control_plane: cp,
        fence: join_fence(cfg, token),
    });
    a
}

/// The own etcd member goes before the reset stops it; the slot is released last.
fn compensating(cfg: &Config, slot: Option<&Fence>, remove_own_member: bool) -> Vec<Action> {
    let mut a = Vec::new();
    if remove_own_member && cfg.cleans_members() {
        a.push(Action::RemoveOwnMember);
    }
    a.extend(undo_local());
    if let Some(f) = slot {
        a.push(Action::Release(f.clone()));
    }
    a
}

/// Undo a local init or join: reset, then put back what the reset removed.
fn undo_local() -> [Action; 3] {
    [
        Action::Reset,
        Action::RestoreExternalEtcd,
        Action::RestoreKubeVip,
    ]
}

/// How long the driver waits before running the actions of `state`, `spent_ms` after the
/// tick that entered it began: a backoff's delay (from that tick's end); between health
/// probes, what is left of the probe interval (probes `probe_interval_ms` apart start to
/// start: the confirmation's window is the same, a probe's own time and the tick's
/// bookkeeping no longer stretch it; issue 17); else nothing.
pub fn delay_before(cfg: &Config, state: &State, spent_ms: u64) -> u64 {
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
        }
        | Phase::AwaitingReady {
            successes,
            failures,
        } if successes + failures > 0 => cfg.probe_interval_ms.saturating_sub(spent_ms),
        Phase::WaitingForControlPlaneVersion { .. } => cfg.version_poll_ms,
        _ => 0,
    }
}

/// A rendezvous change that ends a wait early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// This record was put, deleted or expired.
    Record(&'static str),
    /// A slot of this semaphore was released or expired.
    SlotFreed(&'static str),
    /// Any member registered, changed its report or expired (a control plane that has
    /// just joined, for a node whose configs follow the membership).
    AnyMember,
}

impl Wake {
    fn matches(self, kind: ChangeKind, name: &str) -> bool {
        match self {
            Wake::Record(key) => kind == ChangeKind::Record && name == key,
            Wake::SlotFreed(sem) => kind == ChangeKind::SlotFreed && name == sem,
            Wake::AnyMember => kind == ChangeKind::Member,
        }
    }
}

/// The changes that end the wait before the current phase's next tick: a poll's (what
/// the phase it resumes waits for) and a `Done` control plane's (a refresh request to
/// answer). Empty: the wait is a plain delay (a backoff after a failure, a probe
/// interval). A wake only runs the phase's actions sooner, so a spurious one costs a
/// request and decides nothing; a missed one costs the fallback delay.
pub fn wakes_on(cfg: &Config, state: &State) -> Vec<Wake> {
    match &state.phase {
        Phase::Backoff {
            then, poll: true, ..
        } => match then.as_ref() {
            Phase::WaitingForInit if cfg.role == Role::ControlPlane => vec![
                Wake::Record(keys::INITIALIZED),
                // The init holder gave up (or died): stand again.
                Wake::SlotFreed(keys::INIT_SEMAPHORE),
            ],
            Phase::WaitingForInit => vec![Wake::Record(keys::INITIALIZED)],
            Phase::AcquiringJoinSlot => vec![Wake::SlotFreed(cfg.join_semaphore().0)],
            Phase::AwaitingRefresh => vec![Wake::Record(keys::JOIN_MATERIAL)],
            // The applier recorded them, or its lease ended (given back or expired).
            Phase::SettingUpAddons => vec![
                Wake::Record(keys::ADDONS_APPLIED),
                Wake::SlotFreed(keys::ADDONS_SEMAPHORE),
            ],
            _ => Vec::new(),
        },
        Phase::Done => {
            let mut w = Vec::new();
            if serves_refresh(cfg) {
                w.push(Wake::Record(keys::REFRESH_REQUEST));
            }
            if cfg.follows_members {
                w.push(Wake::AnyMember);
            }
            if takes_part_in_rolls(cfg) {
                w.extend(ROLL_WAKES);
            }
            w
        }
        _ => Vec::new(),
    }
}

/// What a done node's upgrade roll (`upgrade::live`, run in the same loop) acts on: a
/// published release, an operator's resume request, the upgrade lock given back. Woken
/// by them, a node starts fetching, takes its turn or resumes within a watch's latency
/// instead of at its next heartbeat (20 s) or pause (1 s): the roll benchmark measured
/// 36 s from `muster upgrade` to the first lock grant on 3+3 before.
const ROLL_WAKES: [Wake; 3] = [
    Wake::Record(protocol::release::RELEASE),
    Wake::Record(protocol::release::RESUME),
    Wake::SlotFreed(protocol::release::UPGRADE_SEMAPHORE),
];

/// Control planes and workers are upgraded by the roll; load balancers are not.
fn takes_part_in_rolls(cfg: &Config) -> bool {
    cfg.role != Role::LoadBalancer
}

/// Whether `changes` end a wait for `wakes`: one of them happened, or changes were lost.
pub fn woken(wakes: &[Wake], changes: &Changes) -> bool {
    changes.compacted
        || changes
            .changes
            .iter()
            .any(|c| wakes.iter().any(|w| w.matches(c.kind, &c.name)))
}

/// How long a `Done` node idles between its periodic duties.
pub fn idle_ms(cfg: &Config) -> u64 {
    cfg.idle_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase as P;
    use model::spec::DistroKind;

    fn cp() -> Config {
        Config::new(Role::ControlPlane, DistroKind::Kubeadm, true, 1)
    }

    #[test]
    fn init_actions_switch_kube_vip_around_init_under_the_lease() {
        let a = actions(&cp(), &P::Initializing { token: 3 });
        assert_eq!(a[0], Action::Renew(init_fence(3)));
        assert_eq!(a[1], Action::EnsureNotInitialized);
        let at = |x: &Action| a.iter().position(|y| y == x).unwrap();
        let back = a
            .iter()
            .rposition(|x| *x == Action::RestoreKubeVip)
            .unwrap();
        assert!(at(&Action::KubeVipSuperAdmin) < at(&Action::Init(init_fence(3))));
        assert!(at(&Action::Init(init_fence(3))) < back);
    }

    #[test]
    fn a_done_node_that_follows_the_membership_re_renders_and_wakes_on_member_changes() {
        let mut lb = Config::new(Role::LoadBalancer, DistroKind::Kubeadm, true, 1);
        let done = State {
            phase: P::Done,
            ..State::initial()
        };
        assert_eq!(actions(&lb, &P::Done), vec![]);
        assert_eq!(wakes_on(&lb, &done), vec![]);
        lb.follows_members = true;
        assert_eq!(actions(&lb, &P::Done), vec![Action::FollowMembers]);
        assert_eq!(wakes_on(&lb, &done), vec![Wake::AnyMember]);
        let member = Changes {
            revision: 2,
            changes: vec![crate::coord::Change {
                kind: ChangeKind::Member,
                name: "cp4".into(),
            }],
            compacted: false,
        };
        assert!(woken(&wakes_on(&lb, &done), &member));
        // A keepalived control plane does both.
        let mut c = cp();
        c.follows_members = true;
        assert_eq!(
            actions(&c, &P::Done),
            vec![Action::FollowMembers, Action::ServeRefresh]
        );
        assert!(woken(&wakes_on(&c, &done), &member));
        assert!(!woken(&wakes_on(&cp(), &done), &member));
    }

    /// Issue 15: a done control plane or worker wakes on what its upgrade roll acts on (a
    /// release, a resume, the lock given back); a load balancer, which no roll upgrades,
    /// does not; neither wakes on another node's progress record.
    #[test]
    fn a_done_node_wakes_on_a_release_a_resume_and_the_upgrade_lock_freed() {
        let done = State {
            phase: P::Done,
            ..State::initial()
        };
        let change = |kind, name: &str| Changes {
            revision: 9,
            changes: vec![crate::coord::Change {
                kind,
                name: name.into(),
            }],
            compacted: false,
        };
        let release = change(ChangeKind::Record, protocol::release::RELEASE);
        let resume = change(ChangeKind::Record, protocol::release::RESUME);
        let freed = change(ChangeKind::SlotFreed, protocol::release::UPGRADE_SEMAPHORE);
        let progress = change(ChangeKind::Record, "upgrade/progress/cp-1");
        let worker = Config::new(Role::Worker, DistroKind::Kubeadm, true, 1);
        let lb = Config::new(Role::LoadBalancer, DistroKind::Kubeadm, true, 1);
        for c in [&cp(), &worker] {
            let w = wakes_on(c, &done);
            assert!(woken(&w, &release) && woken(&w, &resume) && woken(&w, &freed));
            assert!(!woken(&w, &progress), "{w:?}");
        }
        assert!(!woken(&wakes_on(&lb, &done), &release));
    }

    #[test]
    fn a_stacked_control_plane_cleans_members_then_resets_under_its_slot() {
        let c = cp();
        assert_eq!(
            actions(&c, &P::CleaningStaleMember { token: 2 }),
            vec![
                Action::Renew(join_fence(&c, 2)),
                Action::RemoveStaleMembers,
                Action::Reset,
                Action::RestoreExternalEtcd,
                Action::RestoreKubeVip,
            ]
        );
        let compensate = P::Compensating {
            slot: Some(join_fence(&c, 2)),
            remove_own_member: true,
            then: Box::new(P::AcquiringJoinSlot),
        };
        assert_eq!(
            actions(&c, &compensate),
            vec![
                Action::RemoveOwnMember,
                Action::Reset,
                Action::RestoreExternalEtcd,
                Action::RestoreKubeVip,
                Action::Release(join_fence(&c, 2)),
            ],
            "the own member goes before the reset stops it; the slot is released last"
        );
    }

    #[test]
    fn nodes_outside_a_stacked_etcd_never_touch_members() {
        let external = Config::new(Role::ControlPlane, DistroKind::Kubeadm, false, 1);
        let worker = Config::new(Role::Worker, DistroKind::Kubeadm, true, 1);
        for c in [external, worker] {
            let compensate = P::Compensating {
                slot: None,
                remove_own_member: true,
                then: Box::new(P::AcquiringJoinSlot),
            };
            for p in [P::CleaningStaleMember { token: 1 }, compensate] {
                let a = actions(&c, &p);
                assert!(
                    !a.contains(&Action::RemoveOwnMember)
                        && !a.contains(&Action::RemoveStaleMembers),
                    "{:?} {p:?}: {a:?}",
                    c.role
                );
                assert!(a.contains(&Action::Reset), "{p:?}: {a:?}");
            }
        }
    }

    #[test]
    fn join_slots_by_role() {
        let mut k3s_sql = Config::new(Role::ControlPlane, DistroKind::K3s, false, 1);
        k3s_sql.cp_join_slots = 3;
        let worker = Config::new(Role::Worker, DistroKind::Kubeadm, true, 1);
        for (c, semaphore, slots) in [
            (cp(), keys::CP_JOIN_SEMAPHORE, 1),
            (k3s_sql, keys::CP_JOIN_SEMAPHORE, 3),
            (worker, keys::WORKER_JOIN_SEMAPHORE, 2),
        ] {
            assert_eq!(
                actions(&c, &P::AcquiringJoinSlot),
                vec![
                    Action::FetchMaterial {
                        control_plane: c.role == Role::ControlPlane
                    },
                    Action::Acquire { semaphore, slots }
                ],
                "material first: a slot is never held for a join that cannot run"
            );
        }
    }

    #[test]
    fn a_worker_gives_its_slot_back_when_its_join_returns_and_verifies_outside_it() {
        let w = Config::new(Role::Worker, DistroKind::Kubeadm, true, 1);
        let f = join_fence(&w, 5);
        assert_eq!(
            actions(&w, &P::Joining { token: 5 }),
            vec![Action::Join {
                control_plane: false,
                fence: f.clone()
            },]
        );
        assert_eq!(
            actions(&w, &P::ReleasingJoinSlot { token: 5 }),
            vec![Action::Release(f.clone())],
            "its own phase: a restart releases again, never joins again"
        );
        let verifying = P::Verifying {
            token: 5,
            successes: 0,
            failures: 0,
        };
        assert_eq!(
            actions(&w, &verifying),
            vec![Action::VerifyJoin {
                control_plane: false
            }],
            "no renewal of a slot given back"
        );
    }

    #[test]
    fn a_control_plane_keeps_its_slot_until_verified() {
        for c in [
            cp(),
            Config::new(Role::ControlPlane, DistroKind::Kubeadm, false, 1),
            Config::new(Role::ControlPlane, DistroKind::K3s, false, 1),
        ] {
            assert!(verifies_under_slot(&c));
            let joining = actions(&c, &P::Joining { token: 5 });
            assert!(
                !joining.iter().any(|a| matches!(a, Action::Release(_))),
                "{joining:?}"
            );
            let verifying = P::Verifying {
                token: 5,
                successes: 1,
                failures: 0,
            };
            assert_eq!(actions(&c, &verifying)[0], Action::Renew(join_fence(&c, 5)));
        }
    }

    #[test]
    fn only_control_planes_serve_refresh_requests_once_done() {
        assert_eq!(actions(&cp(), &P::Done), vec![Action::ServeRefresh]);
        for role in [Role::Worker, Role::LoadBalancer] {
            let c = Config::new(role, DistroKind::Kubeadm, true, 1);
            assert!(actions(&c, &P::Done).is_empty(), "{role:?}");
        }
    }

    #[test]
    fn only_control_planes_start_vip_services() {
        assert!(actions(&cp(), &P::Preflight).contains(&Action::StartVipServices));
        let w = Config::new(Role::Worker, DistroKind::Kubeadm, true, 1);
        assert!(!actions(&w, &P::Preflight).contains(&Action::StartVipServices));
    }

    #[test]
    fn probes_after_the_first_wait_the_probe_interval() {
        let c = cp();
        let probing = |successes, failures| State {
            phase: P::Verifying {
                token: 1,
                successes,
                failures,
            },
            attempt: 0,
            last_error: None,
        };
        assert_eq!(
            delay_before(&c, &probing(0, 0), 0),
            0,
            "the first probe at once"
        );
        assert_eq!(delay_before(&c, &probing(1, 0), 0), c.probe_interval_ms);
        assert_eq!(delay_before(&c, &probing(0, 1), 0), c.probe_interval_ms);
        // Probes are paced start to start: the probe's own time counts against the interval.
        assert_eq!(
            delay_before(&c, &probing(1, 0), 70),
            c.probe_interval_ms - 70
        );
        assert_eq!(delay_before(&c, &probing(1, 0), c.probe_interval_ms + 5), 0);
        let backoff = State {
            phase: P::Backoff {
                delay_ms: 1_234,
                then: Box::new(P::Done),
                poll: false,
            },
            attempt: 1,
            last_error: None,
        };
        assert_eq!(
            delay_before(&c, &backoff, 500),
            1_234,
            "a backoff counts from the tick's end"
        );
    }

    fn at(phase: Phase) -> State {
        State {
            phase,
            attempt: 0,
            last_error: None,
        }
    }

    fn waiting(then: Phase, poll: bool) -> State {
        at(P::Backoff {
            delay_ms: 15_000,
            then: Box::new(then),
            poll,
        })
    }

    fn changed(kind: ChangeKind, name: &str) -> Changes {
        Changes {
            revision: 7,
            changes: vec![crate::coord::Change {
                kind,
                name: name.into(),
            }],
            compacted: false,
        }
    }

    #[test]
    fn a_poll_wakes_on_what_the_phase_it_resumes_waits_for() {
        let (c, w) = (
            cp(),
            Config::new(Role::Worker, DistroKind::Kubeadm, true, 1),
        );
        assert_eq!(
            wakes_on(&c, &waiting(P::WaitingForInit, true)),
            [
                Wake::Record(keys::INITIALIZED),
                Wake::SlotFreed(keys::INIT_SEMAPHORE)
            ]
        );
        assert_eq!(
            wakes_on(&w, &waiting(P::WaitingForInit, true)),
            [Wake::Record(keys::INITIALIZED)]
        );
        assert_eq!(
            wakes_on(&c, &waiting(P::AcquiringJoinSlot, true)),
            [Wake::SlotFreed(keys::CP_JOIN_SEMAPHORE)]
        );
        assert_eq!(
            wakes_on(&w, &waiting(P::AcquiringJoinSlot, true)),
            [Wake::SlotFreed(keys::WORKER_JOIN_SEMAPHORE)]
        );
        assert_eq!(
            wakes_on(&w, &waiting(P::AwaitingRefresh, true)),
            [Wake::Record(keys::JOIN_MATERIAL)]
        );
        assert_eq!(
            wakes_on(&c, &at(P::Done)),
            [
                Wake::Record(keys::REFRESH_REQUEST),
                ROLL_WAKES[0],
                ROLL_WAKES[1],
                ROLL_WAKES[2]
            ]
        );
    }

    #[test]
    fn a_backoff_after_a_failure_and_other_phases_wait_out_their_delay() {
        let (c, w) = (
            cp(),
            Config::new(Role::Worker, DistroKind::Kubeadm, true, 1),
        );
        assert!(wakes_on(&c, &waiting(P::AcquiringJoinSlot, false)).is_empty());
        assert!(wakes_on(&c, &waiting(P::WaitingForInit, false)).is_empty());
        // A done worker waits only for what its upgrade roll acts on.
        assert_eq!(wakes_on(&w, &at(P::Done)), ROLL_WAKES);
        let probing = at(P::Verifying {
            token: 1,
            successes: 1,
            failures: 0,
        });
        assert!(wakes_on(&c, &probing).is_empty());
    }

    #[test]
    fn only_the_change_waited_for_or_lost_changes_wake() {
        let slot = [Wake::SlotFreed(keys::WORKER_JOIN_SEMAPHORE)];
        let name = keys::WORKER_JOIN_SEMAPHORE;
        assert!(woken(&slot, &changed(ChangeKind::SlotFreed, name)));
        assert!(!woken(&slot, &changed(ChangeKind::SlotTaken, name)));
        assert!(!woken(&slot, &changed(ChangeKind::Record, name)));
        assert!(!woken(
            &slot,
            &changed(ChangeKind::SlotFreed, keys::CP_JOIN_SEMAPHORE)
        ));
        let init = [Wake::Record(keys::INITIALIZED)];
        assert!(woken(
            &init,
            &changed(ChangeKind::Record, keys::INITIALIZED)
        ));
        assert!(!woken(
            &init,
            &changed(ChangeKind::Member, keys::INITIALIZED)
        ));
        let lost = Changes {
            revision: 9,
            changes: Vec::new(),
            compacted: true,
        };
        assert!(woken(&init, &lost));
        assert!(!woken(
            &init,
            &Changes {
                compacted: false,
                ..lost
            }
        ));
    }
}
