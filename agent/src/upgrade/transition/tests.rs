use super::*;
use crate::upgrade::order::Wait;

fn v(s: &str) -> KubeVersion {
    s.parse().unwrap()
}

fn cp1() -> Me {
    Me {
        distribution: DistroKind::Kubeadm,
        role: Role::ControlPlane,
        first_control_plane: true,
    }
}

fn upgrade(sequence: u64) -> Event {
    Event::Release {
        sequence,
        verdict: Ok(Verdict::Upgrade {
            from: v("v1.30.5"),
            to: v("v1.31.2"),
        }),
    }
}

/// The events from a new release to holding the lock with `token`, then `done` steps.
fn to_the_lock(token: u64, done: usize) -> Vec<Event> {
    let mut events = vec![
        upgrade(1),
        Event::FetchTurn(Ok(())),
        Event::Fetched(Ok(())),
        Event::Turn(Ok(())),
        Event::Granted { token },
    ];
    events.extend(std::iter::repeat_n(Event::StepDone, done));
    events
}

/// Drives `events` from `phase`, returning the last phase and every action in order. A
/// fresh quorum check ([`Action::CheckQuorum`]) is answered "quorum to spare" at once.
fn drive(me: &Me, mut phase: Phase, events: Vec<Event>) -> (Phase, Vec<Action>) {
    let mut all = Vec::new();
    for e in events {
        let (mut p, mut acts) = step(me, phase, e);
        while acts.last() == Some(&Action::CheckQuorum) {
            all.extend(acts);
            (p, acts) = step(me, p, Event::Quorum(Ok(())));
        }
        phase = p;
        all.extend(acts);
    }
    (phase, all)
}

fn running_at(me: &Me, target: Step) -> Phase {
    let (mut p, _) = drive(me, Phase::Idle, to_the_lock(9, 0));
    while !matches!(&p, Phase::Running { step, .. } if *step == target) {
        p = step(me, p, Event::StepDone).0;
    }
    p
}

#[test]
fn the_first_control_plane_walks_the_upstream_steps_and_releases_the_lock() {
    let me = cp1();
    let (p, acts) = drive(&me, Phase::Idle, to_the_lock(9, 9));
    assert_eq!(
        p,
        Phase::Done {
            sequence: 1,
            to: v("v1.31.2")
        }
    );
    let runs: Vec<Step> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Run(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(
        runs,
        steps::steps(DistroKind::Kubeadm, Role::ControlPlane, true)
    );
    assert_eq!(acts.first(), Some(&Action::Report));
    assert!(acts.contains(&Action::Fetch { sequence: 1 }));
    assert_eq!(acts.last(), Some(&Action::Release { token: 9 }));
    // Fetch before turn, turn before lock, lock before the first step.
    let at = |a: &Action| acts.iter().position(|x| x == a).unwrap();
    assert!(at(&Action::Fetch { sequence: 1 }) < at(&Action::CheckTurn));
    assert!(at(&Action::CheckTurn) < at(&Action::Acquire));
    assert!(at(&Action::Acquire) < at(&Action::Run(Step::InstallKubeadm)));
}

#[test]
fn refused_and_current_releases_change_nothing() {
    let me = cp1();
    let (p, acts) = step(
        &me,
        Phase::Idle,
        Event::Release {
            sequence: 2,
            verdict: Err(Refusal::MinorSkip {
                sequence: 2,
                from: v("v1.30.5"),
                to: v("v1.32.0"),
            }),
        },
    );
    assert!(matches!(&p, Phase::Refused { reason, .. } if reason.contains("skipping a minor")));
    assert_eq!(acts, vec![Action::Report], "nothing but a report");
    let (p, _) = step(
        &me,
        Phase::Idle,
        Event::Release {
            sequence: 2,
            verdict: Ok(Verdict::AlreadyAt(v("v1.31.2"))),
        },
    );
    assert!(matches!(p, Phase::Done { .. }));
}

#[test]
fn a_new_release_does_not_interrupt_a_node_mid_upgrade() {
    let me = cp1();
    let p = running_at(&me, Step::Drain);
    let (q, acts) = step(&me, p.clone(), upgrade(2));
    assert_eq!((q, acts), (p, vec![]));
    // The same release seen again while waiting does not restart the download.
    let w = Phase::Waiting {
        sequence: 1,
        to: v("v1.31.2"),
        why: "x".into(),
    };
    assert_eq!(step(&me, w.clone(), upgrade(1)), (w, vec![]));
}

/// A new release queues the node for its download; not its place yet, it says why and
/// asks again; its place come, it downloads. A restart while queued asks again.
#[test]
fn a_release_is_downloaded_in_the_rolls_order() {
    let me = cp1();
    let (p, acts) = step(&me, Phase::Idle, upgrade(1));
    assert!(matches!(p, Phase::Queued { sequence: 1, .. }), "{p:?}");
    assert_eq!(acts, vec![Action::Report, Action::CheckFetchTurn]);
    assert_eq!(p.label(), "queued");
    let ahead = Wait::DownloadQueue {
        ahead: 3,
        first: "cp-1, cp-2".into(),
    };
    let (p, acts) = step(&me, p, Event::FetchTurn(Err(ahead)));
    assert_eq!(acts, vec![Action::Report, Action::CheckFetchTurn]);
    let line = p.describe().unwrap();
    assert!(
        line.starts_with("queued to download release 1 (v1.31.2)") && line.contains("cp-1, cp-2"),
        "{line}"
    );
    // The same release seen again while queued changes nothing; a restart asks again.
    assert_eq!(step(&me, p.clone(), upgrade(1)), (p.clone(), vec![]));
    assert_eq!(
        restart(p.clone()),
        (p.clone(), vec![Action::CheckFetchTurn])
    );
    assert!(!p.in_flight(), "a newer release may replace a queued one");
    assert_eq!(target(&p), Some(v("v1.31.2")));
    let (p, acts) = step(&me, p, Event::FetchTurn(Ok(())));
    assert!(matches!(p, Phase::Fetching { sequence: 1, .. }), "{p:?}");
    assert_eq!(acts, vec![Action::Report, Action::Fetch { sequence: 1 }]);
}

#[test]
fn a_failed_download_is_retried_and_nothing_else_happens() {
    let me = cp1();
    let (p, acts) = drive(
        &me,
        Phase::Idle,
        vec![
            upgrade(1),
            Event::FetchTurn(Ok(())),
            Event::Fetched(Err("digest mismatch".into())),
        ],
    );
    assert!(matches!(p, Phase::Fetching { .. }));
    assert!(!acts.contains(&Action::Acquire));
}

#[test]
fn waiting_says_why_and_a_busy_lock_waits() {
    let me = cp1();
    let w = Phase::Waiting {
        sequence: 1,
        to: v("v1.31.2"),
        why: String::new(),
    };
    let (p, acts) = step(
        &me,
        w.clone(),
        Event::Turn(Err(Wait::NoQuorumToSpare {
            members: 2,
            quorum: 2,
        })),
    );
    assert!(matches!(&p, Phase::Waiting { why, .. } if why.contains("lose quorum")));
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn]);
    let (p, _) = drive(&me, w, vec![Event::Turn(Ok(())), Event::Busy]);
    assert!(matches!(&p, Phase::Waiting { why, .. } if why.contains("holds the upgrade lock")));
}

#[test]
fn a_failed_drain_stops_the_roll_uncordons_and_keeps_the_lock() {
    let me = cp1();
    let p = running_at(&me, Step::Drain);
    let (p, acts) = step(
        &me,
        p,
        Event::StepFailed {
            cause: "PodDisruptionBudget default/web allows no disruption".into(),
            can_serve: true,
        },
    );
    assert_eq!(acts, vec![Action::Uncordon, Action::Report]);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Release { .. })),
        "lock kept"
    );
    let Phase::Stopped {
        step: failed,
        uncordoned,
        token,
        ..
    } = &p
    else {
        panic!("{p:?}")
    };
    assert_eq!((*failed, *uncordoned, *token), (Step::Drain, true, 9));

    // Nothing moves it but a resume for its release.
    for e in [
        Event::Turn(Ok(())),
        upgrade(2),
        Event::StepDone,
        Event::Resume {
            sequence: 7,
            count: 1,
        },
    ] {
        assert_eq!(step(&me, p.clone(), e), (p.clone(), vec![]));
    }
    // Resumed: cordoned again before the drain is retried, under the same lock.
    let (q, acts) = step(
        &me,
        p,
        Event::Resume {
            sequence: 1,
            count: 1,
        },
    );
    assert!(matches!(
        q,
        Phase::Locking {
            resume: Some(Step::Cordon),
            resumes_seen: 1,
            ..
        }
    ));
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn]);
    let (q, acts) = step(&me, q, Event::Turn(Ok(())));
    assert_eq!(acts, vec![Action::Acquire]);
    let (q, acts) = step(&me, q, Event::Granted { token: 9 });
    assert!(acts.contains(&Action::Run(Step::Cordon)));
    // Failing again waits for the next resume: the same request does not loop.
    let (q, _) = drive(
        &me,
        q,
        vec![
            Event::StepDone,
            Event::StepFailed {
                cause: "again".into(),
                can_serve: true,
            },
        ],
    );
    assert!(matches!(q, Phase::Stopped { .. }));
    let again = Event::Resume {
        sequence: 1,
        count: 1,
    };
    assert_eq!(step(&me, q.clone(), again).1, vec![]);
    assert!(matches!(
        step(
            &me,
            q,
            Event::Resume {
                sequence: 1,
                count: 2
            }
        )
        .0,
        Phase::Locking { .. }
    ));
}

#[test]
fn a_failure_before_cordon_or_on_a_broken_node_does_not_uncordon() {
    let me = cp1();
    let fail = |can_serve| Event::StepFailed {
        cause: "kubeadm upgrade apply: version skew".into(),
        can_serve,
    };
    let (p, acts) = step(&me, running_at(&me, Step::UpgradeApply), fail(true));
    assert_eq!(acts, vec![Action::Report]);
    assert!(matches!(
        p,
        Phase::Stopped {
            uncordoned: false,
            step: Step::UpgradeApply,
            ..
        }
    ));
    let (_, acts) = step(&me, running_at(&me, Step::WaitReady), fail(false));
    assert_eq!(
        acts,
        vec![Action::Report],
        "a node that cannot serve stays cordoned"
    );
    // Resuming a failure before cordon re-runs that very step.
    let (p, _) = step(&me, running_at(&me, Step::UpgradeApply), fail(true));
    assert!(matches!(
        step(
            &me,
            p,
            Event::Resume {
                sequence: 1,
                count: 1
            }
        )
        .0,
        Phase::Locking {
            resume: Some(Step::UpgradeApply),
            ..
        }
    ));
}

#[test]
fn a_lost_lease_or_a_reboot_resumes_at_the_same_step() {
    let me = cp1();
    let p = running_at(&me, Step::InstallKubelet);
    let (l, acts) = step(&me, p.clone(), Event::LeaseLost);
    assert!(matches!(
        l,
        Phase::Locking {
            resume: Some(Step::InstallKubelet),
            ..
        }
    ));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Run(_))),
        "no step without the lock"
    );
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn]);
    // Busy mid-upgrade keeps asking rather than going back to waiting, the turn (etcd's
    // quorum) checked again before every try; a turn refused keeps it locking.
    // Status says why it waits: the lock held by another, then etcd's refusal.
    assert!(matches!(l, Phase::Locking { .. }), "{l:?}");
    let with_why = |why: &str| l.clone().with_why(why);
    assert!(
        matches!(&l, Phase::Locking { why, .. } if why.contains("lease was lost during install-kubelet")),
        "{l:?}"
    );
    let (l2, acts) = step(&me, l.clone(), Event::Busy);
    assert_eq!(
        (l2, acts),
        (
            with_why("another node holds the upgrade lock"),
            vec![Action::Report, Action::CheckTurn]
        )
    );
    let sick = Wait::EtcdUnhealthy {
        member: "cp-2".into(),
    };
    let (l2, acts) = step(&me, l.clone(), Event::Turn(Err(sick.clone())));
    assert_eq!(
        (l2.clone(), acts),
        (
            with_why(&sick.to_string()),
            vec![Action::Report, Action::CheckTurn]
        )
    );
    let shown = crate::upgrade::rendezvous_side::progress_of("cp-1", &l2, 0).unwrap();
    assert_eq!(shown.detail.as_deref(), Some(sick.to_string().as_str()));
    let (l2, acts) = step(&me, l.clone(), Event::Turn(Ok(())));
    assert_eq!((l2, acts), (l.clone(), vec![Action::Acquire]));
    let (r, acts) = step(&me, l, Event::Granted { token: 12 });
    assert!(matches!(
        r,
        Phase::Running {
            step: Step::InstallKubelet,
            token: 12,
            ..
        }
    ));
    assert_eq!(
        acts,
        vec![Action::Report, Action::Run(Step::InstallKubelet)]
    );

    // Persisted mid-step, then rebooted: the turn (etcd may have changed while it was
    // down), the lock, then the same step.
    let saved = serde_json::to_vec(&p).unwrap();
    let back: Phase = serde_json::from_slice(&saved).unwrap();
    let (r, acts) = restart(back);
    assert!(matches!(
        r,
        Phase::Locking {
            resume: Some(Step::InstallKubelet),
            ..
        }
    ));
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn]);
    assert_eq!(restart(r.clone()).1, vec![Action::CheckTurn]);
    let stopped = step(
        &me,
        p,
        Event::StepFailed {
            cause: "x".into(),
            can_serve: false,
        },
    )
    .0;
    assert_eq!(
        restart(stopped.clone()),
        (stopped, vec![Action::Report]),
        "a stopped roll stays stopped"
    );
}

#[test]
fn workers_and_other_control_planes_run_upgrade_node() {
    for role in [Role::ControlPlane, Role::Worker] {
        let me = Me {
            distribution: DistroKind::Kubeadm,
            role,
            first_control_plane: false,
        };
        let (p, acts) = drive(&me, Phase::Idle, to_the_lock(3, 20));
        assert!(matches!(p, Phase::Done { .. }));
        assert!(acts.contains(&Action::Run(Step::UpgradeNode)));
        assert!(!acts.contains(&Action::Run(Step::UpgradeApply)));
        assert!(!acts.contains(&Action::Run(Step::UpgradePlan)));
    }
    let k3s = Me {
        distribution: DistroKind::K3s,
        role: Role::Worker,
        first_control_plane: false,
    };
    let p = running_at(&k3s, Step::SwapK3s);
    assert_eq!(target(&p), Some(v("v1.31.2")));
}

#[test]
fn a_control_plane_checks_quorum_afresh_right_before_each_step_taking_its_member_down() {
    for (me, down) in [
        (cp1(), Step::UpgradeApply),
        (
            Me {
                first_control_plane: false,
                ..cp1()
            },
            Step::UpgradeNode,
        ),
        (
            Me {
                distribution: DistroKind::K3s,
                first_control_plane: false,
                ..cp1()
            },
            Step::RestartK3s,
        ),
    ] {
        let (_, acts) = drive(&me, Phase::Idle, to_the_lock(9, 20));
        let at = acts.iter().position(|a| *a == Action::Run(down)).unwrap();
        assert_eq!(acts[at - 1], Action::CheckQuorum, "{down}: {acts:?}");
        assert_eq!(
            acts.iter().filter(|a| **a == Action::CheckQuorum).count(),
            1,
            "{acts:?}"
        );
    }
    // Workers never look at etcd.
    let w = Me {
        role: Role::Worker,
        first_control_plane: false,
        ..cp1()
    };
    let (_, acts) = drive(&w, Phase::Idle, to_the_lock(9, 20));
    assert!(!acts.contains(&Action::CheckQuorum), "{acts:?}");
}

#[test]
fn no_quorum_to_spare_right_before_the_step_keeps_the_lock_and_checks_the_turn_again() {
    let me = cp1();
    let p = running_at(&me, Step::UpgradeApply);
    let sick = Wait::EtcdUnhealthy {
        member: "cp-3".into(),
    };
    let (q, acts) = step(&me, p, Event::Quorum(Err(sick)));
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn], "lock kept");
    let Phase::Locking {
        resume: Some(Step::UpgradeApply),
        why,
        ..
    } = &q
    else {
        panic!("{q:?}")
    };
    assert!(
        why.contains("cp-3") && why.contains("upgrade-apply"),
        "{why}"
    );
    // Its turn again, the lock again (the same token while held), then etcd afresh again.
    let (q, acts) = step(&me, q, Event::Turn(Ok(())));
    assert_eq!(acts, vec![Action::Acquire]);
    let (q, acts) = step(&me, q, Event::Granted { token: 9 });
    assert_eq!(acts, vec![Action::Report, Action::CheckQuorum]);
    let (_, acts) = step(&me, q, Event::Quorum(Ok(())));
    assert_eq!(acts, vec![Action::Run(Step::UpgradeApply)]);
}

#[test]
fn a_restart_while_taking_the_lock_checks_the_turn_again_before_it() {
    // Seed 609 of the simulation (`SIM_SEED=609`): cp-2 decided its turn, crashed while
    // taking the lock, came back 58 s later with cp-1's etcd member down, and took the
    // lock and ran `kubeadm upgrade node` on the turn decided before the crash.
    let me = cp1();
    let (locking, acts) = drive(
        &me,
        Phase::Idle,
        vec![
            upgrade(1),
            Event::FetchTurn(Ok(())),
            Event::Fetched(Ok(())),
            Event::Turn(Ok(())),
        ],
    );
    assert_eq!(acts.last(), Some(&Action::Acquire));
    let (p, acts) = restart(locking);
    assert_eq!(acts, vec![Action::CheckTurn]);
    let sick = Wait::EtcdUnhealthy {
        member: "cp-1".into(),
    };
    let (p, acts) = step(&me, p, Event::Turn(Err(sick)));
    assert!(matches!(p, Phase::Waiting { .. }), "{p:?}");
    assert_eq!(acts, vec![Action::Report, Action::CheckTurn]);
}
