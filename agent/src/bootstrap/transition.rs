//! The transition table. `step` is pure (no I/O, no clock, no randomness): it takes the
//! state and the event its actions ended with, and returns the next state and its actions.
//!
//! One handler per phase decides every event explicitly: there is no catch-all arm, so a
//! new phase or a new event does not compile until each handler says what it does with
//! it. Events a phase's actions cannot produce are listed and `Hold` the phase.

use super::actions::{Action, actions, verifies_under_slot};
use super::state::{Config, Phase, READY_READS, State, addons_fence, init_fence, join_fence};
use crate::coord::Fence;
use model::Role;

/// How a phase's action list ended: `Done` after the last action, else the first answer
/// or failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Done,
    /// Transient or local: nothing held was lost.
    Failed(String),
    /// The lease (init or join slot) is lost: another node may act now.
    Fenced(String),
    Initialized(bool),
    AlreadyInitialized,
    Granted {
        token: u64,
    },
    Busy,
    Probe(bool),
    MaterialStale,
    /// The add-ons of this payload are recorded as applied in the current generation (or
    /// none are baked).
    AddonsApplied,
    /// The running control plane's versions as the API shows them (`None`: it cannot
    /// tell, e.g. no admin kubeconfig in the join material).
    ControlPlaneVersion(Option<crate::upgrade::order::ControlPlaneVersions>),
}

/// What a phase's handler decided; `apply` turns it into the next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A cycle succeeded: move on with a clean slate (attempts and error cleared).
    Succeed(Phase),
    /// Move on within the same cycle: attempts and the last error carry over.
    Advance(Phase),
    /// Not yet (no init, no free slot, no fresh material): wait until the rendezvous
    /// reports a change of what `Phase` waits for, or one jittered poll at the longest;
    /// then run `Phase`.
    Poll(Phase),
    /// A transient failure: count it, back off and run this phase again (its actions
    /// are idempotent).
    Again(String),
    /// A failure that sends this node back to `then` after a backoff, nothing to undo.
    Retry { error: String, then: Phase },
    /// A failure after a destructive step: undo it (own etcd member, reset, slot), then
    /// back off and resume `then`.
    Compensate {
        error: String,
        slot: Option<Fence>,
        remove_own_member: bool,
        then: Phase,
    },
    /// A failure retried too often: stop in `Phase` with the error (no backoff; the phase
    /// itself waits).
    GiveUp { error: String, then: Phase },
    /// The undo is complete: back off (by the attempts so far), then resume `then`.
    BackOff(Phase),
    /// Not a failure: wait in `then` (its own delay), `why` shown as the state's
    /// `last_error`; the attempts carry over.
    Wait { why: String, then: Phase },
    /// The phase's work went as expected and leaves it as it is (a `Done` node's duties).
    Stay,
    /// An event this phase's actions cannot produce: keep the phase as it is (the driver
    /// logs it) rather than crash a boot-critical daemon.
    Hold,
}

/// The transition function: `decide`, then `apply`, then the new phase's actions.
pub fn step(cfg: &Config, state: State, event: Event) -> (State, Vec<Action>) {
    let d = decide(cfg, &state, event);
    enter(cfg, state, d)
}

/// Applies a decision and returns the next state with the actions that carry it out.
pub fn enter(cfg: &Config, state: State, decision: Decision) -> (State, Vec<Action>) {
    let next = apply(cfg, state, decision);
    let acts = actions(cfg, &next.phase);
    (next, acts)
}

/// Which handler decides: one per phase, given only that phase's fields.
pub fn decide(cfg: &Config, s: &State, event: Event) -> Decision {
    match &s.phase {
        Phase::Preflight => preflight(event),
        Phase::Registering => registering(cfg, event),
        Phase::ConfiguringLb => configuring_lb(event),
        Phase::CheckingInit => checking_init(cfg, event),
        Phase::WaitingForInit => waiting_for_init(cfg, event),
        Phase::Electing => electing(event),
        Phase::Initializing { token } => initializing(*token, event),
        Phase::CheckingHealth {
            token,
            successes,
            failures,
        } => checking_health(cfg, *token, (*successes, *failures), event),
        Phase::Publishing { token } => publishing(*token, event),
        Phase::AwaitingRefresh => awaiting_refresh(event),
        Phase::CheckingControlPlaneVersion | Phase::WaitingForControlPlaneVersion { .. } => {
            control_plane_version(cfg, &s.phase, event)
        }
        Phase::AcquiringJoinSlot => acquiring_join_slot(cfg, event),
        Phase::CleaningStaleMember { token } => cleaning_stale_member(*token, event),
        Phase::Joining { token } => joining(cfg, *token, event),
        Phase::ReleasingJoinSlot { token } => releasing_join_slot(*token, event),
        Phase::Verifying {
            token,
            successes,
            failures,
        } => verifying(cfg, *token, (*successes, *failures), event),
        Phase::Releasing { fence } => releasing(cfg, fence, event),
        Phase::SettingUpAddons => setting_up_addons(event),
        Phase::ApplyingAddons { token } => applying_addons(cfg, s.attempt, *token, event),
        Phase::AddonsFailed { .. } => addons_failed(s, event),
        Phase::AwaitingReady {
            successes,
            failures,
        } => awaiting_ready(cfg, (*successes, *failures), event),
        Phase::Compensating { then, .. } => compensating(then, event),
        Phase::Backoff { then, .. } => backoff(then, event),
        Phase::Done => done(event),
        Phase::Removed => removed(event),
    }
}

/// The tombstone `removed.<this node>` was seen at the rendezvous: from any phase, the
/// node is removed (a lease it held expires with its TTL; nothing of a cluster it was
/// removed from is worth undoing). `None` when it already is.
pub fn on_tombstone(s: &State) -> Option<State> {
    (s.phase != Phase::Removed).then(|| State {
        phase: Phase::Removed,
        attempt: 0,
        last_error: Some("removed from the cluster (`muster remove`): not rejoining".into()),
    })
}

use Decision as D;
use Event as E;
use Phase as P;

fn preflight(e: Event) -> Decision {
    match e {
        E::Done => D::Succeed(P::Registering),
        E::Failed(e) => D::Again(e),
        E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn registering(cfg: &Config, e: Event) -> Decision {
    match e {
        E::Done if cfg.role == Role::LoadBalancer => D::Succeed(P::ConfiguringLb),
        E::Done => D::Succeed(P::CheckingInit),
        E::Failed(e) => D::Again(e),
        E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn configuring_lb(e: Event) -> Decision {
    match e {
        E::Done => D::Succeed(P::Done),
        E::Failed(e) => D::Again(e),
        E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// A node that finds the cluster initialized never inits: it joins.
fn checking_init(cfg: &Config, e: Event) -> Decision {
    match e {
        E::Initialized(true) => D::Advance(P::CheckingControlPlaneVersion),
        E::Initialized(false) if cfg.role == Role::ControlPlane => D::Advance(P::Electing),
        E::Initialized(false) => D::Advance(P::WaitingForInit),
        E::Failed(e) => D::Again(e),
        E::Done
        | E::Fenced(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Control planes that lost the election stand again while nothing is published (the
/// winner may have failed); workers only wait.
fn waiting_for_init(cfg: &Config, e: Event) -> Decision {
    match e {
        E::Initialized(true) => D::Advance(P::CheckingControlPlaneVersion),
        E::Initialized(false) if cfg.role == Role::ControlPlane => D::Advance(P::Electing),
        E::Initialized(false) => D::Poll(P::WaitingForInit),
        E::Failed(e) => D::Again(e),
        E::Done
        | E::Fenced(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn electing(e: Event) -> Decision {
    match e {
        E::Granted { token } => D::Advance(P::Initializing { token }),
        E::Busy => D::Poll(P::WaitingForInit),
        E::Failed(e) => D::Again(e),
        // Nothing held yet, nothing to lose.
        E::Fenced(_)
        | E::Done
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn initializing(token: u64, e: Event) -> Decision {
    match e {
        E::Done => D::Advance(P::CheckingHealth {
            token,
            successes: 0,
            failures: 0,
        }),
        // Someone else's init was published: never init; undo anything of ours and join.
        E::AlreadyInitialized => undo_init(
            "the cluster was initialized by another node".into(),
            Some(init_fence(token)),
        ),
        E::Failed(e) => undo_init(e, Some(init_fence(token))),
        E::Fenced(e) => undo_init(format!("lost the init lease: {e}"), None),
        E::Initialized(_)
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn checking_health(cfg: &Config, token: u64, probes: (u32, u32), e: Event) -> Decision {
    match e {
        E::Probe(healthy) => match probe(cfg, probes, healthy) {
            Probed::Healthy => D::Advance(P::Publishing { token }),
            Probed::Again(successes, failures) => D::Advance(P::CheckingHealth {
                token,
                successes,
                failures,
            }),
            Probed::GiveUp => undo_init(
                "the new control plane never became healthy".into(),
                Some(init_fence(token)),
            ),
        },
        E::Fenced(e) => undo_init(format!("lost the init lease: {e}"), None),
        // The renewal could not reach the rendezvous: the lease may still be ours.
        E::Failed(e) => D::Again(e),
        E::Done
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn publishing(token: u64, e: Event) -> Decision {
    match e {
        E::Done => D::Succeed(P::Releasing {
            fence: init_fence(token),
        }),
        E::Fenced(e) => undo_init(format!("lost the init lease: {e}"), None),
        E::Failed(e) => D::Again(e),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn awaiting_refresh(e: Event) -> Decision {
    match e {
        E::Done => D::Advance(P::AcquiringJoinSlot),
        E::MaterialStale => D::Poll(P::AwaitingRefresh),
        E::Failed(e) => D::Again(e),
        E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Whether a node of `role` whose payload runs `version` may join a control plane seen
/// at `seen` ([`crate::upgrade::order::join_allows`]: a worker waits for the whole control
/// plane, a control plane for the roll to have moved one control plane to its minor);
/// `None` on either side: not compared (the distribution's own preflight still guards).
pub fn may_join(
    role: model::Role,
    version: Option<model::KubeVersion>,
    seen: Option<crate::upgrade::order::ControlPlaneVersions>,
) -> Result<(), crate::upgrade::order::Wait> {
    match (version, seen) {
        (Some(v), Some(seen)) => crate::upgrade::order::join_allows(role, v, seen),
        _ => Ok(()),
    }
}

/// A joiner newer than the running control plane waits (outside any slot, nothing to
/// undo) and reads the versions again; once the control plane has reached it, it queues
/// for its join slot like any joiner.
fn control_plane_version(cfg: &Config, phase: &Phase, e: Event) -> Decision {
    let waiting = matches!(phase, P::WaitingForControlPlaneVersion { .. });
    match e {
        E::ControlPlaneVersion(seen) => match may_join(cfg.role, cfg.version, seen) {
            Ok(()) if waiting => D::Succeed(P::AcquiringJoinSlot),
            Ok(()) => D::Advance(P::AcquiringJoinSlot),
            Err(wait) => match wait.versions() {
                Some((kubelet, control_plane)) => D::Wait {
                    why: wait.to_string(),
                    then: P::WaitingForControlPlaneVersion {
                        kubelet,
                        control_plane,
                    },
                },
                // `join_allows` refuses only for versions.
                None => D::Advance(P::AcquiringJoinSlot),
            },
        },
        E::Failed(e) => D::Again(e),
        E::Done
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied => D::Hold,
    }
}

fn acquiring_join_slot(cfg: &Config, e: Event) -> Decision {
    match e {
        E::Granted { token } if cfg.cleans_members() => {
            D::Advance(P::CleaningStaleMember { token })
        }
        E::Granted { token } => D::Advance(P::Joining { token }),
        E::Busy => D::Poll(P::AcquiringJoinSlot),
        E::MaterialStale => D::Poll(P::AwaitingRefresh),
        E::Failed(e) => D::Again(e),
        // Nothing held yet, nothing to lose.
        E::Fenced(_)
        | E::Done
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Probe(_)
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn cleaning_stale_member(token: u64, e: Event) -> Decision {
    match e {
        E::Done => D::Advance(P::Joining { token }),
        // Only members and the local node were touched, never joined: wait for a slot.
        E::Fenced(e) => D::Retry {
            error: format!("lost the join slot: {e}"),
            then: P::AcquiringJoinSlot,
        },
        E::Failed(e) => D::Again(e),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn joining(cfg: &Config, token: u64, e: Event) -> Decision {
    match e {
        E::Done if verifies_under_slot(cfg) => D::Advance(P::Verifying {
            token,
            successes: 0,
            failures: 0,
        }),
        // A worker: its own phase, persisted, so a restart releases again rather than
        // joining again.
        E::Done => D::Advance(P::ReleasingJoinSlot { token }),
        // Refused before anything joined: reset and give the slot back while it refreshes.
        E::MaterialStale => D::Compensate {
            error: "the join material expired".into(),
            slot: Some(join_fence(cfg, token)),
            remove_own_member: false,
            then: P::AwaitingRefresh,
        },
        E::Failed(e) => undo_join(e, Some(join_fence(cfg, token))),
        E::Fenced(e) => undo_join(format!("lost the join slot: {e}"), None),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// A worker gives its slot back before verifying: released, or gone already (expired,
/// fenced). A release that could not reach the rendezvous is tried again after a backoff:
/// the worker never verifies while it may still hold the slot.
fn releasing_join_slot(token: u64, e: Event) -> Decision {
    match e {
        E::Done | E::Fenced(_) => D::Advance(P::Verifying {
            token,
            successes: 0,
            failures: 0,
        }),
        E::Failed(e) => D::Again(e),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn verifying(cfg: &Config, token: u64, probes: (u32, u32), e: Event) -> Decision {
    let under_slot = verifies_under_slot(cfg);
    let healthy = match e {
        E::Probe(healthy) => healthy,
        // A renewal that could not reach the rendezvous counts as a failed probe.
        E::Failed(_) if under_slot => false,
        E::Fenced(e) if under_slot => {
            return undo_join(format!("lost the join slot: {e}"), None);
        }
        // A worker verifies outside its slot: nothing renews, nothing can be lost.
        E::Failed(_) | E::Fenced(_) => return D::Hold,
        E::Done
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => return D::Hold,
    };
    match probe(cfg, probes, healthy) {
        // A worker gave its slot back before verifying: nothing left to release.
        Probed::Healthy if !under_slot => D::Succeed(P::Done),
        Probed::Healthy => D::Succeed(P::Releasing {
            fence: join_fence(cfg, token),
        }),
        Probed::Again(successes, failures) => D::Advance(P::Verifying {
            token,
            successes,
            failures,
        }),
        // A worker's slot was given back before it verified: it queues for one again.
        Probed::GiveUp => undo_join(
            "the joined node never became healthy".into(),
            under_slot.then(|| join_fence(cfg, token)),
        ),
    }
}

/// Where a node goes once `fence` is given back: a control plane's init or join slot →
/// the add-ons; the `addons` lease → its Node `Ready`; anything else is done.
pub fn after_release(cfg: &Config, fence: &Fence) -> Phase {
    if fence.semaphore == protocol::keys::ADDONS_SEMAPHORE {
        P::AwaitingReady {
            successes: 0,
            failures: 0,
        }
    } else if cfg.role == Role::ControlPlane {
        P::SettingUpAddons
    } else {
        P::Done
    }
}

fn releasing(cfg: &Config, fence: &Fence, e: Event) -> Decision {
    match e {
        E::Done => D::Succeed(after_release(cfg, fence)),
        // The slot expired already: nothing left to release.
        E::Fenced(_) => D::Succeed(after_release(cfg, fence)),
        E::Failed(e) => D::Again(e),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Applied already (by anyone, this payload, this generation): on to Ready. Else one
/// control plane at a time applies; the others wait for its record or its lease to end.
fn setting_up_addons(e: Event) -> Decision {
    match e {
        E::AddonsApplied => D::Succeed(P::AwaitingReady {
            successes: 0,
            failures: 0,
        }),
        E::Granted { token } => D::Advance(P::ApplyingAddons { token }),
        E::Busy => D::Poll(P::SettingUpAddons),
        E::Failed(e) => D::Again(e),
        // Nothing held yet, nothing to lose.
        E::Done
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Probe(_)
        | E::MaterialStale
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Applied and recorded (or found recorded by another): give the lease back. A lost
/// lease: someone else may be applying, look again. A failure is retried after a backoff
/// until `addon_attempts` failures; then the node passes through `AddonsFailed` (the lease
/// given back, the cause kept) and tries again, one attempt per backoff.
fn applying_addons(cfg: &Config, attempt: u32, token: u64, e: Event) -> Decision {
    match e {
        E::Done | E::AddonsApplied => D::Succeed(P::Releasing {
            fence: addons_fence(token),
        }),
        E::Fenced(e) => D::Retry {
            error: format!("lost the add-ons lease: {e}"),
            then: P::SettingUpAddons,
        },
        E::Failed(e) if attempt.saturating_add(1) >= cfg.addon_attempts.max(1) => D::GiveUp {
            error: format!(
                "{e} (failed {} attempts; trying again after a backoff)",
                attempt.saturating_add(1)
            ),
            then: P::AddonsFailed {
                fence: addons_fence(token),
            },
        },
        E::Failed(e) => D::Again(e),
        E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// The lease is given back (that and serving refreshes never fail the phase): try again
/// after a backoff, the cause kept. The attempts keep counting past `addon_attempts`, so
/// each later round is one apply after the longest backoff (`backoff_max_ms` plus jitter),
/// not a busy loop; a restart of the agent tries at once.
fn addons_failed(s: &State, e: Event) -> Decision {
    match e {
        E::Done => D::Retry {
            error: s
                .last_error
                .clone()
                .unwrap_or_else(|| "the add-ons could not be applied".into()),
            then: P::SettingUpAddons,
        },
        E::Failed(_)
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// A control plane is done once its Node is `Ready` (kubelet and pod network), probed
/// outside any slot. Patience exhausted: say so, back off and keep waiting (nothing to
/// undo: the node is a healthy member).
fn awaiting_ready(cfg: &Config, probes: (u32, u32), e: Event) -> Decision {
    match e {
        E::Probe(ready) => match probe_until(READY_READS, cfg, probes, ready) {
            Probed::Healthy => D::Succeed(P::Done),
            Probed::Again(successes, failures) => D::Advance(P::AwaitingReady {
                successes,
                failures,
            }),
            Probed::GiveUp => D::Retry {
                error: "this node's Node is not Ready (no pod network yet?)".into(),
                then: P::AwaitingReady {
                    successes: 0,
                    failures: 0,
                },
            },
        },
        // The probe answers false rather than fail; refreshes never fail the phase.
        E::Failed(_)
        | E::Done
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

fn compensating(then: &Phase, e: Event) -> Decision {
    match e {
        E::Done => D::BackOff(then.clone()),
        E::Failed(e) => D::Again(e),
        E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// A backoff runs no action, so its event is always `Done`: the wait is over and
/// whatever it resumes starts fresh. Any other event ends the wait the same way.
fn backoff(then: &Phase, e: Event) -> Decision {
    match e {
        E::Done
        | E::Failed(_)
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Advance(then.clone()),
    }
}

/// Terminal: a removed node has no actions; it stays removed.
fn removed(e: Event) -> Decision {
    match e {
        E::Done => D::Stay,
        E::Failed(_)
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Serving refresh requests never fails the phase (the driver logs its failures).
fn done(e: Event) -> Decision {
    match e {
        E::Done => D::Stay,
        E::Failed(_)
        | E::Fenced(_)
        | E::Initialized(_)
        | E::AlreadyInitialized
        | E::Granted { .. }
        | E::Busy
        | E::Probe(_)
        | E::MaterialStale
        | E::AddonsApplied
        | E::ControlPlaneVersion(_) => D::Hold,
    }
}

/// Undo this node's init (nothing of etcd to remove: it was the only member) and start
/// over from checking whether someone else's init landed.
fn undo_init(error: String, slot: Option<Fence>) -> Decision {
    D::Compensate {
        error,
        slot,
        remove_own_member: false,
        then: P::CheckingInit,
    }
}

/// Undo a join (its etcd member too, before the reset stops it) and queue again.
fn undo_join(error: String, slot: Option<Fence>) -> Decision {
    D::Compensate {
        error,
        slot,
        remove_own_member: true,
        then: P::AcquiringJoinSlot,
    }
}

/// Where a health confirmation stands after one more probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// `healthy_probes` consecutive healthy probes.
    Healthy,
    /// Probe again with these (successes, failures).
    Again(u32, u32),
    /// More than `max_failed_probes` failed probes: undo and retry.
    GiveUp,
}

/// Counts a probe: successes must be consecutive (a failure resets them); failures add
/// up across the whole confirmation.
pub fn probe(cfg: &Config, probes: (u32, u32), healthy: bool) -> Probed {
    probe_until(cfg.healthy_probes, cfg, probes, healthy)
}

/// [`probe`], confirmed after `needed` consecutive healthy probes.
fn probe_until(
    needed: u32,
    cfg: &Config,
    (successes, failures): (u32, u32),
    healthy: bool,
) -> Probed {
    if healthy {
        let successes = successes.saturating_add(1);
        if successes >= needed {
            Probed::Healthy
        } else {
            Probed::Again(successes, failures)
        }
    } else {
        let failures = failures.saturating_add(1);
        if failures > cfg.max_failed_probes {
            Probed::GiveUp
        } else {
            Probed::Again(0, failures)
        }
    }
}

/// Turns a decision into the next state.
pub fn apply(cfg: &Config, s: State, d: Decision) -> State {
    match d {
        D::Succeed(phase) => State {
            phase,
            attempt: 0,
            last_error: None,
        },
        D::Advance(phase) => State { phase, ..s },
        D::Poll(then) => State {
            phase: P::Backoff {
                delay_ms: poll_ms(cfg, s.attempt),
                then: Box::new(then),
                poll: true,
            },
            ..s
        },
        D::Again(error) => {
            let then = s.phase.clone();
            retry(cfg, s, error, then)
        }
        D::Retry { error, then } => retry(cfg, s, error, then),
        D::Compensate {
            error,
            slot,
            remove_own_member,
            then,
        } => State {
            phase: P::Compensating {
                slot,
                remove_own_member,
                then: Box::new(then),
            },
            attempt: s.attempt.saturating_add(1),
            last_error: Some(error),
        },
        D::GiveUp { error, then } => State {
            phase: then,
            attempt: s.attempt.saturating_add(1),
            last_error: Some(error),
        },
        D::BackOff(then) => State {
            phase: P::Backoff {
                delay_ms: backoff_ms(cfg, s.attempt),
                then: Box::new(then),
                poll: false,
            },
            ..s
        },
        D::Wait { why, then } => State {
            phase: then,
            attempt: s.attempt,
            last_error: Some(why),
        },
        D::Stay | D::Hold => s,
    }
}

/// A failure: count the attempt, remember the error, back off and run `then`.
fn retry(cfg: &Config, s: State, error: String, then: Phase) -> State {
    let attempt = s.attempt.saturating_add(1);
    State {
        phase: P::Backoff {
            delay_ms: backoff_ms(cfg, attempt),
            then: Box::new(then),
            poll: false,
        },
        attempt,
        last_error: Some(error),
    }
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

/// One poll (the fallback when no change wakes the node): the poll interval plus up to
/// half of it, so waiting nodes spread out.
fn poll_ms(cfg: &Config, attempt: u32) -> u64 {
    cfg.poll_ms + jitter(cfg.jitter_seed, attempt, cfg.poll_ms / 2 + 1)
}

#[cfg(test)]
mod tests;
