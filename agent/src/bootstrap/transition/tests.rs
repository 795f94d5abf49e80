use super::*;
use model::spec::DistroKind;
use protocol::keys;

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

/// Feeds `events` one by one from `from` and returns the phases passed through, with
/// the final state.
fn walk(cfg: &Config, from: Phase, events: Vec<Event>) -> (Vec<&'static str>, State) {
    let mut s = at(from);
    let mut path = Vec::new();
    for e in events {
        s = step(cfg, s, e).0;
        path.push(s.phase.name());
    }
    (path, s)
}

fn healthy(n: u32) -> Vec<Event> {
    (0..n).map(|_| E::Probe(true)).collect()
}

fn ver(s: &str) -> model::KubeVersion {
    s.parse().unwrap()
}

/// The control plane's version as a joiner reads it: the same as the payload's.
fn same_version() -> Event {
    E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.31.4")))
}

fn events(parts: &[Vec<Event>]) -> Vec<Event> {
    parts.concat()
}

// ---- happy paths, one per role and datastore ----

#[test]
fn control_plane_initializes_the_cluster() {
    let c = cp();
    let (path, s) = walk(
        &c,
        P::Preflight,
        events(&[
            vec![
                E::Done,
                E::Done,
                E::Initialized(false),
                E::Granted { token: 7 },
                E::Done,
            ],
            healthy(c.healthy_probes),
            vec![E::Done, E::Done, E::Granted { token: 3 }, E::Done, E::Done],
            healthy(READY_READS),
        ]),
    );
    assert_eq!(
        path,
        [
            "registering",
            "checking-init",
            "electing",
            "initializing",
            "checking-health",
            "checking-health",
            "checking-health",
            "checking-health",
            "publishing",
            "releasing",
            "setting-up-addons",
            "applying-addons",
            "releasing",
            "awaiting-ready",
            "done"
        ]
    );
    assert_eq!(s, at(P::Done));
}

#[test]
fn control_plane_joins_an_initialized_cluster() {
    let c = cp();
    let (path, s) = walk(
        &c,
        P::CheckingInit,
        events(&[
            vec![
                E::Initialized(true),
                same_version(),
                E::Granted { token: 2 },
                E::Done,
                E::Done,
            ],
            healthy(c.healthy_probes),
            vec![E::Done, E::AddonsApplied],
            healthy(READY_READS),
        ]),
    );
    assert_eq!(
        path,
        [
            "checking-control-plane-version",
            "acquiring-join-slot",
            "cleaning-stale-member",
            "joining",
            "verifying",
            "verifying",
            "verifying",
            "verifying",
            "releasing",
            "setting-up-addons",
            "awaiting-ready",
            "done"
        ]
    );
    assert_eq!(s, at(P::Done));
}

#[test]
fn the_election_loser_waits_then_joins() {
    let c = cp();
    let (path, _) = walk(
        &c,
        P::Electing,
        vec![
            E::Busy,
            E::Done,
            E::Initialized(false),
            E::Busy,
            E::Done,
            E::Initialized(true),
        ],
    );
    assert_eq!(
        path,
        [
            "backoff",
            "waiting-for-init",
            "electing",
            "backoff",
            "waiting-for-init",
            "checking-control-plane-version"
        ],
        "while nothing is published, a loser stands again (the winner may have failed)"
    );
}

#[test]
fn worker_waits_for_init_then_joins_without_cleaning() {
    let w = worker();
    let (path, s) = walk(
        &w,
        P::Registering,
        events(&[
            vec![
                E::Done,
                E::Initialized(false),
                E::Initialized(false),
                E::Done,
                E::Initialized(true),
                E::ControlPlaneVersion(None),
                E::Granted { token: 1 },
                E::Done,
                E::Done,
            ],
            healthy(w.healthy_probes),
        ]),
    );
    assert_eq!(
        path,
        [
            "checking-init",
            "waiting-for-init",
            "backoff",
            "waiting-for-init",
            "checking-control-plane-version",
            "acquiring-join-slot",
            "joining",
            "releasing-join-slot",
            "verifying",
            "verifying",
            "verifying",
            "verifying",
            "done"
        ],
        "a worker never stands for init; it verifies outside its slot"
    );
    assert_eq!(s, at(P::Done));
}

#[test]
fn load_balancer_configures_and_finishes() {
    let lb = Config::new(Role::LoadBalancer, DistroKind::Kubeadm, true, 1);
    let (path, _) = walk(
        &lb,
        P::Preflight,
        vec![
            E::Done,
            E::Done,
            E::Failed("haproxy".into()),
            E::Done,
            E::Done,
        ],
    );
    assert_eq!(
        path,
        [
            "registering",
            "configuring-lb",
            "backoff",
            "configuring-lb",
            "done"
        ]
    );
}

#[test]
fn k3s_server_on_sql_joins_without_cleaning() {
    let mut c = Config::new(Role::ControlPlane, DistroKind::K3s, false, 1);
    c.cp_join_slots = 3;
    let (path, _) = walk(
        &c,
        P::AcquiringJoinSlot,
        events(&[
            vec![E::Granted { token: 1 }, E::Done],
            healthy(c.healthy_probes),
            vec![E::Done, E::AddonsApplied],
            healthy(READY_READS),
        ]),
    );
    assert_eq!(
        path,
        [
            "joining",
            "verifying",
            "verifying",
            "verifying",
            "verifying",
            "releasing",
            "setting-up-addons",
            "awaiting-ready",
            "done"
        ]
    );
}

/// kubeadm on an external etcd: a control plane is no etcd member, so its join skips the
/// cleaning (its actions are checked in `actions`); the join still holds the one slot.
#[test]
fn control_plane_on_external_etcd_joins_without_cleaning() {
    let c = Config::new(Role::ControlPlane, DistroKind::Kubeadm, false, 1);
    let (path, s) = walk(
        &c,
        P::CheckingInit,
        events(&[
            vec![
                E::Initialized(true),
                same_version(),
                E::Granted { token: 4 },
                E::Done,
            ],
            healthy(c.healthy_probes),
        ]),
    );
    assert_eq!(
        path,
        [
            "checking-control-plane-version",
            "acquiring-join-slot",
            "joining",
            "verifying",
            "verifying",
            "verifying",
            "verifying",
            "releasing"
        ]
    );
    assert_eq!(
        s.phase,
        P::Releasing {
            fence: Fence {
                semaphore: keys::CP_JOIN_SEMAPHORE.into(),
                token: 4
            }
        }
    );
}

#[test]
fn a_worker_that_never_registers_is_undone_after_giving_its_slot_back() {
    let mut w = worker();
    w.max_failed_probes = 0;
    let s = go(
        &w,
        P::Verifying {
            token: 2,
            successes: 0,
            failures: 0,
        },
        E::Probe(false),
    );
    assert_eq!(
        s.phase,
        P::Compensating {
            slot: None,
            remove_own_member: true,
            then: Box::new(P::AcquiringJoinSlot)
        },
        "its slot was given back before it verified: it queues for one again"
    );
    let held = go(
        &w,
        P::Verifying {
            token: 2,
            successes: 0,
            failures: 0,
        },
        E::Fenced("x".into()),
    );
    assert_eq!(
        held.phase,
        P::Verifying {
            token: 2,
            successes: 0,
            failures: 0
        },
        "a worker renews nothing while verifying"
    );
}

// ---- give-up paths ----

#[test]
fn a_failed_init_is_undone_then_backs_off_to_check_again() {
    let c = cp();
    for (e, slot) in [
        (E::Failed("kubeadm init: boom".into()), Some(init_fence(4))),
        (E::AlreadyInitialized, Some(init_fence(4))),
        (E::Fenced("lost".into()), None),
    ] {
        let (path, s) = walk(
            &c,
            P::Initializing { token: 4 },
            vec![e.clone(), E::Done, E::Done],
        );
        assert_eq!(path, ["compensating", "backoff", "checking-init"], "{e:?}");
        assert_eq!(s.attempt, 1);
        assert!(s.last_error.is_some());
        let undo = go(&c, P::Initializing { token: 4 }, e.clone());
        assert_eq!(
            undo.phase,
            P::Compensating {
                slot,
                remove_own_member: false,
                then: Box::new(P::CheckingInit)
            },
            "{e:?}: the slot is released only while held"
        );
    }
}

#[test]
fn a_lost_init_lease_after_init_is_undone_without_releasing() {
    let c = cp();
    for p in [
        P::CheckingHealth {
            token: 4,
            successes: 1,
            failures: 0,
        },
        P::Publishing { token: 4 },
    ] {
        let s = go(&c, p.clone(), E::Fenced("lost".into()));
        assert!(
            matches!(&s.phase, P::Compensating { slot: None, then, .. } if **then == P::CheckingInit),
            "{p:?}: {s:?}"
        );
    }
}

#[test]
fn an_unhealthy_init_gives_up_after_max_failed_probes() {
    let mut c = cp();
    c.max_failed_probes = 2;
    let (path, s) = walk(
        &c,
        P::CheckingHealth {
            token: 1,
            successes: 0,
            failures: 0,
        },
        vec![
            E::Probe(true),
            E::Probe(true),
            E::Probe(false),
            E::Probe(false),
            E::Probe(false),
        ],
    );
    assert_eq!(
        path,
        [
            "checking-health",
            "checking-health",
            "checking-health",
            "checking-health",
            "compensating"
        ],
        "two healthy probes are not four consecutive ones"
    );
    assert_eq!(
        s.phase,
        P::Compensating {
            slot: Some(init_fence(1)),
            remove_own_member: false,
            then: Box::new(P::CheckingInit)
        }
    );
    assert_eq!(
        s.last_error.as_deref(),
        Some("the new control plane never became healthy")
    );
}

#[test]
fn a_fenced_join_is_undone_with_its_member_and_queues_again() {
    let c = cp();
    for p in [
        P::Joining { token: 2 },
        P::Verifying {
            token: 2,
            successes: 2,
            failures: 0,
        },
    ] {
        let (path, s) = walk(&c, p.clone(), vec![E::Fenced("x".into()), E::Done, E::Done]);
        assert_eq!(
            path,
            ["compensating", "backoff", "acquiring-join-slot"],
            "{p:?}"
        );
        assert_eq!(s.attempt, 1);
        let undo = go(&c, p, E::Fenced("x".into()));
        assert_eq!(
            undo.phase,
            P::Compensating {
                slot: None,
                remove_own_member: true,
                then: Box::new(P::AcquiringJoinSlot)
            }
        );
    }
    let s = go(
        &c,
        P::CleaningStaleMember { token: 2 },
        E::Fenced("x".into()),
    );
    assert_eq!(
        unwrap_backoff(&s),
        P::AcquiringJoinSlot,
        "nothing joined yet: queue again without undoing"
    );
}

#[test]
fn a_failed_join_is_undone_and_releases_its_slot() {
    let c = cp();
    let s = go(&c, P::Joining { token: 2 }, E::Failed("join: boom".into()));
    assert_eq!(
        s.phase,
        P::Compensating {
            slot: Some(join_fence(&c, 2)),
            remove_own_member: true,
            then: Box::new(P::AcquiringJoinSlot)
        }
    );
    let mut never = c.clone();
    never.max_failed_probes = 0;
    let s = go(
        &never,
        P::Verifying {
            token: 2,
            successes: 0,
            failures: 0,
        },
        E::Probe(false),
    );
    assert!(
        matches!(
            &s.phase,
            P::Compensating {
                slot: Some(_),
                remove_own_member: true,
                ..
            }
        ),
        "{s:?}"
    );
    assert_eq!(
        s.last_error.as_deref(),
        Some("the joined node never became healthy")
    );
}

#[test]
fn stale_material_waits_for_a_refresh_without_holding_a_slot() {
    let c = cp();
    let (path, _) = walk(
        &c,
        P::AcquiringJoinSlot,
        vec![
            E::MaterialStale,
            E::Done,
            E::MaterialStale,
            E::Done,
            E::Done,
            E::Granted { token: 3 },
        ],
    );
    assert_eq!(
        path,
        [
            "backoff",
            "awaiting-refresh",
            "backoff",
            "awaiting-refresh",
            "acquiring-join-slot",
            "cleaning-stale-member"
        ]
    );
    // Refused during the join: the slot goes back while the material is refreshed.
    let (path, _) = walk(
        &c,
        P::Joining { token: 3 },
        vec![E::MaterialStale, E::Done, E::Done],
    );
    assert_eq!(path, ["compensating", "backoff", "awaiting-refresh"]);
    let s = go(&c, P::Joining { token: 3 }, E::MaterialStale);
    assert_eq!(
        s.phase,
        P::Compensating {
            slot: Some(join_fence(&c, 3)),
            remove_own_member: false,
            then: Box::new(P::AwaitingRefresh)
        }
    );
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
        panic!("{s2:?}")
    };
    assert!((8_000..=12_000).contains(&delay_ms), "{delay_ms}");
    assert_eq!(
        s2.last_error.as_deref(),
        Some("x"),
        "the error stays visible"
    );
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
fn transient_failures_retry_the_same_phase_and_success_resets_attempts() {
    let c = cp();
    for p in [
        P::Preflight,
        P::Registering,
        P::CheckingInit,
        P::Electing,
        P::AwaitingRefresh,
        P::AcquiringJoinSlot,
        P::CleaningStaleMember { token: 1 },
        P::Publishing { token: 1 },
        P::Releasing {
            fence: init_fence(1),
        },
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
fn a_lost_slot_while_releasing_is_released_already() {
    let s = go(
        &cp(),
        P::Releasing {
            fence: init_fence(1),
        },
        E::Fenced("x".into()),
    );
    assert_eq!(
        s.phase,
        P::SettingUpAddons,
        "a control plane goes on to its add-ons"
    );
    let w = go(
        &worker(),
        P::Releasing {
            fence: join_fence(&worker(), 1),
        },
        E::Fenced("x".into()),
    );
    assert_eq!(w.phase, P::Done);
}

/// The init slot and a control plane's join slot are given back before the add-ons and
/// the Ready wait: neither holds up the next join.
#[test]
fn a_control_plane_waits_for_ready_outside_its_slot() {
    let c = cp();
    for fence in [init_fence(1), join_fence(&c, 2)] {
        let acts = actions(&c, &P::Releasing { fence });
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert!(matches!(acts[0], Action::Release(_)));
    }
    let ready = P::AwaitingReady {
        successes: 0,
        failures: 0,
    };
    assert_eq!(
        actions(&c, &ready),
        vec![Action::ServeRefresh, Action::VerifyReady],
        "no renewal: nothing is held"
    );
    assert_eq!(
        go(
            &c,
            P::Releasing {
                fence: addons_fence(4)
            },
            E::Done
        )
        .phase,
        ready
    );
    // Not Ready for longer than the patience: said, backed off, still waiting (a healthy
    // member is never undone for it).
    let mut s = at(ready.clone());
    for _ in 0..=c.max_failed_probes {
        s = step(&c, s, E::Probe(false)).0;
    }
    assert_eq!(unwrap_backoff(&s), ready);
    assert!(
        s.last_error.as_deref().unwrap().contains("not Ready"),
        "{s:?}"
    );
}

/// One `Ready` read finishes a control plane (the condition is the kubelet's sustained
/// judgement already), while an init or a join still needs `healthy_probes` in a row.
#[test]
fn one_ready_read_finishes_but_a_join_needs_sustained_health() {
    let c = cp();
    assert!(c.healthy_probes > READY_READS);
    let ready = P::AwaitingReady {
        successes: 0,
        failures: 0,
    };
    assert_eq!(go(&c, ready.clone(), E::Probe(true)).phase, P::Done);
    let after_miss = go(&c, ready, E::Probe(false)).phase;
    assert_eq!(
        after_miss,
        P::AwaitingReady {
            successes: 0,
            failures: 1
        }
    );
    assert_eq!(go(&c, after_miss, E::Probe(true)).phase, P::Done);
    let verifying = P::Verifying {
        token: 2,
        successes: 0,
        failures: 0,
    };
    assert!(matches!(
        go(&c, verifying, E::Probe(true)).phase,
        P::Verifying { successes: 1, .. }
    ));
}

/// Recorded already: straight on to Ready. Someone holds the lease: a poll woken by the
/// record or the lease's end. Granted: apply under the lease, then give it back.
#[test]
fn add_ons_are_applied_once_under_a_lease_and_taken_over() {
    let c = cp();
    assert_eq!(
        go(&c, P::SettingUpAddons, E::AddonsApplied).phase,
        P::AwaitingReady {
            successes: 0,
            failures: 0
        }
    );
    let busy = go(&c, P::SettingUpAddons, E::Busy);
    assert_eq!(unwrap_backoff(&busy), P::SettingUpAddons);
    assert_eq!(
        crate::bootstrap::actions::wakes_on(&c, &busy),
        vec![
            crate::bootstrap::actions::Wake::Record(keys::ADDONS_APPLIED),
            crate::bootstrap::actions::Wake::SlotFreed(keys::ADDONS_SEMAPHORE),
        ]
    );
    assert_eq!(
        go(&c, P::SettingUpAddons, E::Granted { token: 5 }).phase,
        P::ApplyingAddons { token: 5 }
    );
    // Under the lease: renewed, looked up again, applied, recorded.
    assert_eq!(
        actions(&c, &P::ApplyingAddons { token: 5 }),
        vec![
            Action::Renew(addons_fence(5)),
            Action::CheckAddonsApplied,
            Action::ApplyAddons(addons_fence(5)),
            Action::RecordAddons(addons_fence(5)),
        ]
    );
    for e in [E::Done, E::AddonsApplied] {
        assert_eq!(
            go(&c, P::ApplyingAddons { token: 5 }, e).phase,
            P::Releasing {
                fence: addons_fence(5)
            }
        );
    }
    // A lost lease (this node stalled, another took over): look again, never apply on.
    let lost = go(&c, P::ApplyingAddons { token: 5 }, E::Fenced("gone".into()));
    assert_eq!(unwrap_backoff(&lost), P::SettingUpAddons);
    // Publishing no longer applies anything: the init slot is not held for the add-ons.
    assert_eq!(
        actions(&c, &P::Publishing { token: 1 }),
        vec![Action::Publish(init_fence(1))]
    );
}

/// A persistent failure is retried with a growing backoff; after `addon_attempts` the lease
/// is given back and the running agent keeps trying, one apply per longest backoff, the
/// cause (add-on, object, error) kept in the state (issue 14: not only after a restart).
#[test]
fn a_persistent_apply_failure_is_retried_after_a_backoff_with_its_cause_kept() {
    let c = cp();
    let cause = "apply add-ons: add-on flannel: server-side apply: DaemonSet kube-flannel/kube-flannel-ds: status 422";
    let mut s = at(P::ApplyingAddons { token: 5 });
    let mut delays = Vec::new();
    for _ in 1..c.addon_attempts {
        s = step(&c, s, E::Failed(cause.into())).0;
        match &s.phase {
            P::Backoff { delay_ms, then, .. } => {
                assert_eq!(**then, P::ApplyingAddons { token: 5 });
                delays.push(*delay_ms);
            }
            p => panic!("expected a backoff, got {p:?}"),
        }
        s = step(&c, s, E::Done).0;
    }
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
    let (failed, acts) = step(&c, s, E::Failed(cause.into()));
    assert_eq!(
        failed.phase,
        P::AddonsFailed {
            fence: addons_fence(5)
        }
    );
    assert_eq!(failed.attempt, c.addon_attempts);
    let err = failed.last_error.clone().unwrap();
    assert!(
        err.contains(cause) && err.contains("trying again after a backoff"),
        "{err}"
    );
    assert_eq!(
        acts,
        vec![
            Action::ReleaseAfterJoin(addons_fence(5)),
            Action::ServeRefresh
        ]
    );
    // The lease goes back at once, then it tries again after a backoff, the cause kept.
    assert_eq!(crate::bootstrap::actions::delay_before(&c, &failed, 0), 0);
    let (again, acts) = step(&c, failed.clone(), E::Done);
    match &again.phase {
        P::Backoff { delay_ms, then, .. } => {
            assert_eq!(**then, P::SettingUpAddons);
            assert!(*delay_ms >= c.backoff_max_ms, "{delay_ms}");
        }
        p => panic!("expected a backoff, got {p:?}"),
    }
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(again.attempt, c.addon_attempts + 1);
    assert!(again.last_error.as_deref().unwrap().contains(cause));
    // The next round: one apply under a new lease, which failing passes through
    // `AddonsFailed` again (the attempts are past the bound), after the longest backoff.
    let s = step(&c, again, E::Done).0;
    assert_eq!(s.phase, P::SettingUpAddons);
    let s = step(&c, s, E::Granted { token: 6 }).0;
    assert_eq!(s.phase, P::ApplyingAddons { token: 6 });
    let (failed, _) = step(&c, s, E::Failed(cause.into()));
    assert_eq!(
        failed.phase,
        P::AddonsFailed {
            fence: addons_fence(6)
        }
    );
    match step(&c, failed.clone(), E::Done).0.phase {
        P::Backoff { delay_ms, .. } => assert!(delay_ms >= c.backoff_max_ms, "{delay_ms}"),
        p => panic!("expected a backoff, got {p:?}"),
    }
    // It succeeding then clears the failure.
    let s = step(&c, at(P::ApplyingAddons { token: 7 }), E::Done).0;
    assert_eq!(s.attempt, 0);
    assert!(s.last_error.is_none());
    assert_eq!(failed.resume().phase, P::SettingUpAddons);
}

#[test]
fn probes_count_consecutive_successes_and_all_failures() {
    let mut c = cp();
    c.healthy_probes = 3;
    c.max_failed_probes = 2;
    assert_eq!(probe(&c, (0, 0), true), Probed::Again(1, 0));
    assert_eq!(probe(&c, (2, 1), true), Probed::Healthy);
    assert_eq!(probe(&c, (2, 0), false), Probed::Again(0, 1), "consecutive");
    assert_eq!(probe(&c, (0, 2), false), Probed::GiveUp);
    assert_eq!(
        probe(&c, (1, 2), true),
        Probed::Again(2, 2),
        "failures add up"
    );
    c.healthy_probes = 1;
    assert_eq!(probe(&c, (0, 0), true), Probed::Healthy);
}

// ---- the table as a whole ----

/// One phase of each kind; `kind` fails to compile when a phase is added, so the list
/// cannot silently miss it.
fn every_phase() -> Vec<Phase> {
    let phases = vec![
        P::Preflight,
        P::Registering,
        P::CheckingInit,
        P::WaitingForInit,
        P::CheckingControlPlaneVersion,
        P::WaitingForControlPlaneVersion {
            kubelet: ver("v1.32.0"),
            control_plane: ver("v1.31.4"),
        },
        P::Electing,
        P::Initializing { token: 1 },
        P::CheckingHealth {
            token: 1,
            successes: 1,
            failures: 1,
        },
        P::Publishing { token: 1 },
        P::AwaitingRefresh,
        P::AcquiringJoinSlot,
        P::CleaningStaleMember { token: 1 },
        P::Joining { token: 1 },
        P::Verifying {
            token: 1,
            successes: 1,
            failures: 1,
        },
        P::Releasing {
            fence: init_fence(1),
        },
        P::ConfiguringLb,
        P::Compensating {
            slot: Some(init_fence(1)),
            remove_own_member: true,
            then: Box::new(P::CheckingInit),
        },
        P::Backoff {
            delay_ms: 1,
            then: Box::new(P::CheckingInit),
            poll: false,
        },
        P::Done,
        P::SettingUpAddons,
        P::ApplyingAddons { token: 1 },
        P::AddonsFailed {
            fence: addons_fence(1),
        },
        P::AwaitingReady {
            successes: 0,
            failures: 0,
        },
        P::Removed,
        P::ReleasingJoinSlot { token: 1 },
    ];
    let kinds: std::collections::BTreeSet<u8> = phases.iter().map(kind).collect();
    assert_eq!(kinds.len(), phases.len(), "one of each kind");
    phases
}

fn kind(p: &Phase) -> u8 {
    match p {
        P::Preflight => 0,
        P::Registering => 1,
        P::CheckingInit => 2,
        P::WaitingForInit => 3,
        P::Electing => 4,
        P::Initializing { .. } => 5,
        P::CheckingHealth { .. } => 6,
        P::Publishing { .. } => 7,
        P::AwaitingRefresh => 8,
        P::AcquiringJoinSlot => 9,
        P::CleaningStaleMember { .. } => 10,
        P::Joining { .. } => 11,
        P::Verifying { .. } => 12,
        P::Releasing { .. } => 13,
        P::ConfiguringLb => 14,
        P::Compensating { .. } => 15,
        P::Backoff { .. } => 16,
        P::Done => 17,
        P::SettingUpAddons => 18,
        P::ApplyingAddons { .. } => 19,
        P::AddonsFailed { .. } => 20,
        P::AwaitingReady { .. } => 21,
        P::Removed => 22,
        P::ReleasingJoinSlot { .. } => 23,
        P::CheckingControlPlaneVersion => 24,
        P::WaitingForControlPlaneVersion { .. } => 25,
    }
}

fn every_event() -> Vec<Event> {
    vec![
        E::Done,
        E::Failed("x".into()),
        E::Fenced("x".into()),
        E::Initialized(true),
        E::Initialized(false),
        E::AlreadyInitialized,
        E::Granted { token: 9 },
        E::Busy,
        E::Probe(true),
        E::Probe(false),
        E::MaterialStale,
        E::AddonsApplied,
        E::ControlPlaneVersion(None),
        E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.31.4"))),
    ]
}

/// The events the driver can end an action with besides finishing it (see `driver`).
fn answers(a: &Action) -> Vec<Event> {
    let failed = E::Failed("x".into());
    let fenced = E::Fenced("x".into());
    match a {
        Action::CheckInitialized => vec![failed, E::Initialized(true), E::Initialized(false)],
        Action::Acquire { .. } => vec![failed, E::Granted { token: 9 }, E::Busy],
        Action::Renew(_)
        | Action::Init(_)
        | Action::Publish(_)
        | Action::ApplyAddons(_)
        | Action::RecordAddons(_) => vec![failed, fenced],
        Action::CheckAddonsApplied => vec![failed, E::AddonsApplied],
        Action::EnsureNotInitialized => vec![failed, E::AlreadyInitialized],
        Action::ProbeInitHealth | Action::VerifyJoin { .. } | Action::VerifyReady => {
            vec![E::Probe(true), E::Probe(false)]
        }
        Action::FetchMaterial { .. } => vec![failed, E::MaterialStale],
        Action::ReadControlPlaneVersion => vec![
            failed,
            E::ControlPlaneVersion(None),
            E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.31.4"))),
        ],
        Action::Join { .. } => vec![failed, fenced, E::MaterialStale],
        Action::ServeRefresh | Action::FollowMembers | Action::ReleaseAfterJoin(_) => vec![],
        Action::InstallNodeTree
        | Action::Preflight
        | Action::StartVipServices
        | Action::Register
        | Action::Reset
        | Action::KubeVipSuperAdmin
        | Action::RestoreKubeVip
        | Action::RestoreExternalEtcd
        | Action::RemoveStaleMembers
        | Action::RemoveOwnMember
        | Action::Release(_)
        | Action::StartLb => vec![failed],
    }
}

/// Every event a phase's actions can produce is decided (not held), for every role; and
/// every event they cannot produce holds the phase, but for the listed exceptions.
#[test]
fn every_producible_event_is_decided_and_every_other_one_holds() {
    let external = Config::new(Role::ControlPlane, DistroKind::Kubeadm, false, 1);
    let lb = Config::new(Role::LoadBalancer, DistroKind::Kubeadm, true, 1);
    let mut following_lb = lb.clone();
    following_lb.follows_members = true;
    for cfg in [cp(), external, worker(), lb, following_lb] {
        for phase in every_phase() {
            let acts = actions(&cfg, &phase);
            let mut producible: Vec<Event> = acts.iter().flat_map(answers).collect();
            // `Done` after the last action of the list, when none answered.
            if acts.last().is_none_or(|a| {
                !matches!(
                    a,
                    Action::CheckInitialized
                        | Action::ReadControlPlaneVersion
                        | Action::Acquire { .. }
                        | Action::ProbeInitHealth
                        | Action::VerifyJoin { .. }
                        | Action::VerifyReady
                )
            }) {
                producible.push(E::Done);
            }
            for e in every_event() {
                let d = decide(&cfg, &at(phase.clone()), e.clone());
                let held = d == Decision::Hold;
                let can = producible.contains(&e);
                let exception = matches!(
                    (&phase, &e),
                    (P::Backoff { .. }, _)
                        | (
                            P::Releasing { .. } | P::ReleasingJoinSlot { .. },
                            E::Fenced(_)
                        )
                );
                assert!(
                    held != can || exception,
                    "{:?} in {}: {e:?} is {} but decided {d:?}",
                    cfg.role,
                    phase.name(),
                    if can { "producible" } else { "impossible" }
                );
                if held {
                    assert_eq!(
                        step(&cfg, at(phase.clone()), e).0,
                        at(phase.clone()),
                        "a hold changes nothing"
                    );
                }
            }
        }
    }
}

/// "Not yet" waits are polls (a rendezvous change ends them early, see
/// `actions::wakes_on`); a wait after a failure is a backoff that no change shortens.
#[test]
fn not_yet_is_a_poll_and_a_failure_is_a_backoff() {
    let is_poll = |s: &State| matches!(s.phase, P::Backoff { poll, .. } if poll);
    let w = worker();
    assert!(is_poll(&go(&w, P::WaitingForInit, E::Initialized(false))));
    assert!(is_poll(&go(&w, P::AcquiringJoinSlot, E::Busy)));
    assert!(is_poll(&go(&w, P::AcquiringJoinSlot, E::MaterialStale)));
    assert!(is_poll(&go(&cp(), P::Electing, E::Busy)));
    assert!(is_poll(&go(&w, P::AwaitingRefresh, E::MaterialStale)));
    let failed = go(&w, P::AcquiringJoinSlot, E::Failed("unreachable".into()));
    assert_eq!(unwrap_backoff(&failed), P::AcquiringJoinSlot);
    assert!(!is_poll(&failed));
}

#[test]
fn a_tombstone_removes_the_node_from_any_phase_for_good() {
    for phase in [
        P::WaitingForInit,
        P::Joining { token: 3 },
        P::Backoff {
            delay_ms: 5,
            then: Box::new(P::AcquiringJoinSlot),
            poll: true,
        },
        P::Done,
    ] {
        let s = on_tombstone(&at(phase.clone())).unwrap();
        assert_eq!(s.phase, P::Removed, "from {phase:?}");
        assert!(s.last_error.unwrap().contains("muster remove"));
    }
    let removed = at(P::Removed);
    assert_eq!(on_tombstone(&removed), None, "already removed");
    for e in [
        Event::Done,
        Event::Failed("x".into()),
        Event::AlreadyInitialized,
    ] {
        let (next, acts) = step(&cp(), removed.clone(), e);
        assert_eq!(next.phase, P::Removed);
        assert!(acts.is_empty(), "a removed node does nothing: {acts:?}");
    }
}

/// A worker gives its slot back as its own persisted phase once its join returned: a
/// restart there releases again and verifies, never joins again; a release that could not
/// reach the rendezvous is tried again before it verifies; a failed verification queues
/// for a slot again.
#[test]
fn a_worker_releases_its_slot_as_its_own_phase_then_verifies_outside_it() {
    let w = worker();
    let s = go(&w, P::Joining { token: 4 }, E::Done);
    assert_eq!(s.phase, P::ReleasingJoinSlot { token: 4 });
    let back = State {
        phase: P::ReleasingJoinSlot { token: 4 },
        attempt: 0,
        last_error: None,
    }
    .resume();
    assert_eq!(
        back.phase,
        P::ReleasingJoinSlot { token: 4 },
        "never joins again"
    );
    let verifying = P::Verifying {
        token: 4,
        successes: 0,
        failures: 0,
    };
    assert_eq!(go(&w, back.phase.clone(), E::Done).phase, verifying);
    assert_eq!(
        go(&w, back.phase.clone(), E::Fenced("gone".into())).phase,
        verifying,
        "a slot gone already is released"
    );
    let failed = go(&w, back.phase, E::Failed("unreachable".into()));
    assert_eq!(unwrap_backoff(&failed), P::ReleasingJoinSlot { token: 4 });
    // Control planes keep theirs until their member is a healthy voter.
    let s = go(&cp(), P::Joining { token: 4 }, E::Done);
    assert!(matches!(s.phase, P::Verifying { .. }), "{:?}", s.phase);
}

// ---- a joiner newer than the control plane (issue 15: replacement at a new version) ----

fn at_version(role: Role, version: &str) -> Config {
    let mut c = Config::new(role, DistroKind::Kubeadm, true, 1);
    c.version = Some(ver(version));
    c
}

/// The control plane's versions as a joiner reads them: the lowest and the newest.
fn cpv(lowest: &str, newest: &str) -> crate::upgrade::order::ControlPlaneVersions {
    crate::upgrade::order::ControlPlaneVersions {
        lowest: ver(lowest),
        newest: ver(newest),
    }
}

#[test]
fn may_join_follows_the_skew_policy_by_minor() {
    let (old, new) = (Some(ver("v1.31.4")), Some(ver("v1.32.0")));
    let (at_old, at_new) = (
        Some(cpv("v1.31.4", "v1.31.4")),
        Some(cpv("v1.32.0", "v1.32.0")),
    );
    for role in [Role::Worker, Role::ControlPlane] {
        assert!(
            may_join(role, new, at_old).is_err(),
            "a newer kubelet waits"
        );
        assert_eq!(may_join(role, old, at_new), Ok(()), "an older one may join");
        assert_eq!(may_join(role, new, at_new), Ok(()));
        assert_eq!(
            may_join(role, Some(ver("v1.32.3")), Some(cpv("v1.32.0", "v1.32.0"))),
            Ok(()),
            "a newer patch is no skew"
        );
        assert_eq!(
            may_join(role, new, None),
            Ok(()),
            "cannot tell: join as before"
        );
        assert_eq!(
            may_join(role, None, at_old),
            Ok(()),
            "no payload version: not compared"
        );
    }
    // Mid-roll (one control plane moved): a control plane may, a worker not yet.
    let mid = Some(cpv("v1.31.4", "v1.32.0"));
    assert_eq!(may_join(Role::ControlPlane, new, mid), Ok(()));
    assert!(may_join(Role::Worker, new, mid).is_err());
}

/// A worker re-created at the new version during the roll: it waits outside any slot,
/// saying both versions, reads again after its poll, and queues for the worker slot once
/// the control plane has reached it.
#[test]
fn a_newer_joiner_waits_for_the_control_plane_then_joins() {
    let w = at_version(Role::Worker, "v1.32.0");
    let s = step(&w, at(P::CheckingInit), E::Initialized(true)).0;
    assert_eq!(s.phase, P::CheckingControlPlaneVersion);
    let (s, acts) = step(
        &w,
        s,
        E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.31.4"))),
    );
    assert_eq!(
        s.phase,
        P::WaitingForControlPlaneVersion {
            kubelet: ver("v1.32.0"),
            control_plane: ver("v1.31.4"),
        }
    );
    assert_eq!(s.phase.name(), "waiting-for-control-plane-version");
    assert_eq!(acts, vec![Action::ReadControlPlaneVersion]);
    assert_eq!(s.attempt, 0, "waiting is no failure");
    let why = s.last_error.clone().unwrap();
    assert!(
        why.contains("v1.32.0") && why.contains("v1.31.4") && why.contains("newer"),
        "{why}"
    );
    assert_eq!(
        super::super::actions::delay_before(&w, &s, 0),
        w.version_poll_ms,
        "reads again after its poll"
    );
    // Still behind (the first control plane upgraded, the others not yet): keep waiting.
    let s = step(
        &w,
        s,
        E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.32.0"))),
    )
    .0;
    assert_eq!(s.phase.name(), "waiting-for-control-plane-version");
    // A failed read backs off and reads again; it never joins blind.
    let failed = step(&w, s.clone(), E::Failed("API down".into())).0;
    assert_eq!(
        unwrap_backoff(&failed).name(),
        "waiting-for-control-plane-version"
    );
    // Reached: a clean slate, then the worker slot as any joiner.
    let (s, acts) = step(
        &w,
        s,
        E::ControlPlaneVersion(Some(cpv("v1.32.0", "v1.32.0"))),
    );
    assert_eq!(s, at(P::AcquiringJoinSlot));
    assert!(
        acts.contains(&Action::Acquire {
            semaphore: keys::WORKER_JOIN_SEMAPHORE,
            slots: w.worker_join_slots
        }),
        "{acts:?}"
    );
}

/// A control plane re-created at the new version before the roll moved any control plane
/// waits, saying so; once one control plane runs its minor (the others still at the old
/// one: the roll is under way, maybe stopped) it takes the one `cp-join` slot and removes
/// its old incarnation's etcd member before joining. Waiting for every control plane
/// instead would deadlock the roll on this machine's absent etcd member.
#[test]
fn a_newer_control_plane_waits_for_the_roll_then_cleans_its_old_member_and_joins() {
    let c = at_version(Role::ControlPlane, "v1.32.0");
    let (path, s) = walk(
        &c,
        P::CheckingInit,
        vec![
            E::Initialized(true),
            E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.31.4"))),
        ],
    );
    assert_eq!(
        path,
        [
            "checking-control-plane-version",
            "waiting-for-control-plane-version"
        ]
    );
    let why = s.last_error.clone().unwrap();
    assert!(
        why.contains("newer than every running control plane"),
        "{why}"
    );
    let (path, _) = walk(
        &c,
        s.phase,
        vec![
            E::ControlPlaneVersion(Some(cpv("v1.31.4", "v1.32.0"))),
            E::Granted { token: 5 },
        ],
    );
    assert_eq!(path, ["acquiring-join-slot", "cleaning-stale-member"]);
}

/// A node at the control plane's version, or older (within the skew), or one that
/// cannot tell, joins without waiting; the attempts of the cycle carry over.
#[test]
fn a_joiner_not_newer_goes_straight_to_its_slot() {
    let w = at_version(Role::Worker, "v1.31.4");
    for seen in [
        Some(cpv("v1.31.4", "v1.31.4")),
        Some(cpv("v1.32.0", "v1.32.0")),
        None,
    ] {
        let mut s = at(P::CheckingControlPlaneVersion);
        s.attempt = 2;
        let s = step(&w, s, E::ControlPlaneVersion(seen)).0;
        assert_eq!(s.phase, P::AcquiringJoinSlot, "{seen:?}");
        assert_eq!(s.attempt, 2);
    }
}

/// The waiting phase's on-disk form (`AGENT_STATE`): tagged, versions as text.
#[test]
fn the_waiting_phase_persists_with_its_versions() {
    let s = State {
        phase: P::WaitingForControlPlaneVersion {
            kubelet: ver("v1.32.0"),
            control_plane: ver("v1.31.4"),
        },
        attempt: 0,
        last_error: Some("why".into()),
    };
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"phase": "waiting-for-control-plane-version",
            "kubelet": "v1.32.0", "control_plane": "v1.31.4", "attempt": 0, "lastError": "why"})
    );
    assert_eq!(serde_json::from_value::<State>(j).unwrap(), s);
}
