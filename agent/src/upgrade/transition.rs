//! The upgrade transitions: a pure function of the phase and the event its actions ended
//! with, returning the next phase and the actions the driver carries out.

use super::order::Wait;
use super::state::Phase;
use super::steps::{self, Step};
use model::spec::DistroKind;
use model::{KubeVersion, Role};
use protocol::release::{Refusal, Verdict};

/// What the driver observed or what an action ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The newest release at the rendezvous, as [`protocol::release::judge`] judged it.
    Release {
        sequence: u64,
        verdict: Result<Verdict, Refusal>,
    },
    /// Whether this node may download the release now ([`super::order::may_fetch`]).
    FetchTurn(Result<(), Wait>),
    /// The payload download and digest check ended.
    Fetched(Result<(), String>),
    /// Whether it is this node's turn ([`super::order`]: order, quorum, skew).
    Turn(Result<(), Wait>),
    /// Right before a step that takes this control plane's etcd member down: whether a
    /// fresh look at etcd still finds every other member healthy with quorum to spare.
    Quorum(Result<(), Wait>),
    Granted {
        token: u64,
    },
    Busy,
    StepDone,
    /// A step failed; `can_serve`: the node still runs a working kubelet (so it is
    /// uncordoned rather than left out of scheduling).
    StepFailed {
        cause: String,
        can_serve: bool,
    },
    /// The lock's lease was lost mid-step (fenced): stop acting, take it again.
    LeaseLost,
    /// `muster upgrade --resume` wrote resume request number `count` for `sequence`.
    Resume {
        sequence: u64,
        count: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish this node's progress record (phase, step, detail).
    Report,
    /// Gather the roll view and answer with [`Event::FetchTurn`].
    CheckFetchTurn,
    Fetch {
        sequence: u64,
    },
    /// Gather the roll view, etcd members and versions and answer with [`Event::Turn`].
    CheckTurn,
    Acquire,
    /// Look at etcd afresh and answer with [`Event::Quorum`]
    /// ([`super::quorum_guard::control_plane_may_go`]).
    CheckQuorum,
    Run(Step),
    Uncordon,
    Release {
        token: u64,
    },
}

/// Why a node in [`Phase::Locking`] or [`Phase::Waiting`] waits: another node has the lock.
const BUSY: &str = "another node holds the upgrade lock";
/// Why a node is in [`Phase::Locking`] after its turn came.
const TAKING: &str = "its turn: taking the upgrade lock";

/// Who this node is in the roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub distribution: DistroKind,
    pub role: Role,
    /// First control plane of the roll's order (runs `kubeadm upgrade apply`).
    pub first_control_plane: bool,
}

/// Runs `step` of `list` under the lock `token`, or, with no step left, ends the node's
/// upgrade and gives the lock back. A step that takes this control plane's etcd member
/// down is preceded by a fresh quorum check ([`Action::CheckQuorum`]): the turn was
/// decided before the lock, on a view up to [`super::quorum_guard::MAX_VIEW_AGE_MS`] old,
/// and steps ran since.
fn run_or_finish(
    me: &Me,
    sequence: u64,
    to: KubeVersion,
    token: u64,
    list: Vec<Step>,
    step: Option<Step>,
    resumes_seen: u64,
) -> (Phase, Vec<Action>) {
    match step {
        Some(step) => (
            Phase::Running {
                sequence,
                to,
                token,
                steps: list,
                step,
                resumes_seen,
            },
            if step.takes_etcd_member_down(me.role) {
                vec![Action::Report, Action::CheckQuorum]
            } else {
                vec![Action::Report, Action::Run(step)]
            },
        ),
        None => (
            Phase::Done { sequence, to },
            vec![Action::Report, Action::Release { token }],
        ),
    }
}

/// Back to taking the lock mid-upgrade, to run `step` again once the turn and the lock
/// are had; `why` is what status shows meanwhile.
fn relocking(sequence: u64, to: KubeVersion, step: Step, resumes_seen: u64, why: String) -> Phase {
    Phase::Locking {
        sequence,
        to,
        resume: Some(step),
        resumes_seen,
        why,
    }
}

/// The transition function. Guards first; the last arm keeps the phase for events it
/// cannot act on (a stale turn answer after the lock was taken, a resume for another
/// release, a step answer while waiting).
pub fn step(me: &Me, phase: Phase, event: Event) -> (Phase, Vec<Action>) {
    use Action as A;
    use Event as E;
    match (phase, event) {
        // A new release is judged only when this node is not in the middle of one.
        (p, E::Release { .. }) if p.in_flight() => (p, vec![]),
        (p, E::Release { sequence, verdict }) => on_release(p, sequence, verdict),
        (Phase::Queued { sequence, to, .. }, E::FetchTurn(Ok(()))) => (
            Phase::Fetching { sequence, to },
            vec![A::Report, A::Fetch { sequence }],
        ),
        (p @ Phase::Queued { .. }, E::FetchTurn(Err(wait))) => (
            p.with_why(wait.to_string()),
            vec![A::Report, A::CheckFetchTurn],
        ),
        (Phase::Fetching { sequence, to }, E::Fetched(Ok(()))) => (
            Phase::Waiting {
                sequence,
                to,
                why: "checking whose turn it is".into(),
            },
            vec![A::CheckTurn],
        ),
        // A failed or corrupt download is retried (the driver backs off); nothing changed.
        (p @ Phase::Fetching { sequence, .. }, E::Fetched(Err(_))) => {
            (p, vec![A::Report, A::Fetch { sequence }])
        }
        (Phase::Waiting { sequence, to, .. }, E::Turn(Ok(()))) => (
            Phase::Locking {
                sequence,
                to,
                resume: None,
                resumes_seen: 0,
                why: TAKING.into(),
            },
            vec![A::Acquire],
        ),
        (p @ Phase::Waiting { .. }, E::Turn(Err(wait))) => {
            (p.with_why(wait.to_string()), vec![A::Report, A::CheckTurn])
        }
        (
            Phase::Locking {
                sequence,
                to,
                resume,
                resumes_seen,
                ..
            },
            E::Granted { token },
        ) => {
            let list = steps::steps(me.distribution, me.role, me.first_control_plane);
            let first = resume.or_else(|| list.first().copied());
            run_or_finish(me, sequence, to, token, list, first, resumes_seen)
        }
        (
            Phase::Locking {
                sequence,
                to,
                resume: None,
                ..
            },
            E::Busy,
        ) => (
            Phase::Waiting {
                sequence,
                to,
                why: BUSY.into(),
            },
            vec![A::Report, A::CheckTurn],
        ),
        // Mid-upgrade (lease lost, reboot or resume): keep asking, never start over; the
        // turn (etcd's quorum for a control plane) is checked again before every try.
        // Status says what it waits for.
        (
            p @ Phase::Locking {
                resume: Some(_), ..
            },
            E::Busy,
        ) => (p.with_why(BUSY), vec![A::Report, A::CheckTurn]),
        // After a restart in `Locking` (its turn was decided before the crash, maybe long
        // ago): the turn is checked again before the lock.
        (p @ Phase::Locking { .. }, E::Turn(Ok(()))) => (p, vec![A::Acquire]),
        (
            Phase::Locking {
                sequence,
                to,
                resume: None,
                ..
            },
            E::Turn(Err(wait)),
        ) => (
            Phase::Waiting {
                sequence,
                to,
                why: wait.to_string(),
            },
            vec![A::Report, A::CheckTurn],
        ),
        (
            p @ Phase::Locking {
                resume: Some(_), ..
            },
            E::Turn(Err(wait)),
        ) => (p.with_why(wait.to_string()), vec![A::Report, A::CheckTurn]),
        (
            Phase::Running {
                sequence,
                to,
                token,
                steps: list,
                step,
                resumes_seen,
            },
            E::StepDone,
        ) => {
            let next = steps::next(&list, step);
            run_or_finish(me, sequence, to, token, list, next, resumes_seen)
        }
        // Quorum still to spare: take the member down now.
        (p @ Phase::Running { step, .. }, E::Quorum(Ok(()))) => (p, vec![A::Run(step)]),
        // Not any more (a member went down since the turn was decided): the step does not
        // run. The lock stays held; like a node resuming after a lost lease, it checks its
        // turn (etcd again) and takes the lock again (the same token while held) before
        // the step, which is checked once more right before it runs.
        (
            Phase::Running {
                sequence,
                to,
                step,
                resumes_seen,
                ..
            },
            E::Quorum(Err(wait)),
        ) => (
            relocking(
                sequence,
                to,
                step,
                resumes_seen,
                format!("before {step}: {wait}"),
            ),
            vec![A::Report, A::CheckTurn],
        ),
        (
            Phase::Running {
                sequence,
                to,
                token,
                steps: list,
                step,
                resumes_seen,
            },
            E::StepFailed { cause, can_serve },
        ) => {
            // Uncordon a node that can still serve; the lock stays held with the error.
            let uncordon = can_serve && step.after_cordon() && step != Step::Uncordon;
            let mut acts = Vec::new();
            if uncordon {
                acts.push(A::Uncordon);
            }
            acts.push(A::Report);
            (
                Phase::Stopped {
                    sequence,
                    to,
                    token,
                    steps: list,
                    step,
                    cause,
                    uncordoned: uncordon,
                    resumes_seen,
                },
                acts,
            )
        }
        (
            Phase::Running {
                sequence,
                to,
                step,
                resumes_seen,
                ..
            },
            E::LeaseLost,
        ) => (
            relocking(
                sequence,
                to,
                step,
                resumes_seen,
                format!("the upgrade lock's lease was lost during {step}: taking it again"),
            ),
            vec![A::Report, A::CheckTurn],
        ),
        (
            Phase::Stopped {
                sequence,
                to,
                step,
                uncordoned,
                resumes_seen,
                ..
            },
            E::Resume { sequence: s, count },
        ) if s == sequence && count > resumes_seen => {
            // An uncordoned node is cordoned again before the failed step is retried.
            let resume = if uncordoned && step.after_cordon() {
                Step::Cordon
            } else {
                step
            };
            (
                Phase::Locking {
                    sequence,
                    to,
                    resume: Some(resume),
                    resumes_seen: count,
                    why: format!(
                        "resumed by the operator: taking the upgrade lock to run {resume} again"
                    ),
                },
                vec![A::Report, A::CheckTurn],
            )
        }
        (p, _) => (p, vec![]),
    }
}

fn on_release(p: Phase, sequence: u64, verdict: Result<Verdict, Refusal>) -> (Phase, Vec<Action>) {
    let already = matches!(
        &p,
        Phase::Queued { sequence: s, .. } | Phase::Fetching { sequence: s, .. } | Phase::Waiting { sequence: s, .. } | Phase::Done { sequence: s, .. }
            if *s == sequence
    );
    match verdict {
        Err(refusal) => (
            Phase::Refused {
                sequence,
                reason: refusal.to_string(),
            },
            vec![Action::Report],
        ),
        Ok(Verdict::AlreadyAt(to)) => (Phase::Done { sequence, to }, vec![Action::Report]),
        Ok(Verdict::Upgrade { .. }) if already => (p, vec![]),
        Ok(Verdict::Upgrade { to, .. }) => (
            Phase::Queued {
                sequence,
                to,
                why: "checking its place in the download order".into(),
            },
            vec![Action::Report, Action::CheckFetchTurn],
        ),
    }
}

/// Where a persisted phase starts after a (re)start, and the actions it starts with.
/// A node that was taking the lock checks its turn again first. A node that was running a step checks its turn (for a control plane: etcd healthy
/// with quorum to spare, which may have changed while it was down) and takes the lock
/// again (holding it still returns the same token and extends the lease; losing it
/// across the reboot answers `Busy` and the node waits), then re-runs that step: every
/// step is idempotent. A resume after `--resume` or a lost lease goes the same way.
pub fn restart(phase: Phase) -> (Phase, Vec<Action>) {
    match phase {
        Phase::Running {
            sequence,
            to,
            step,
            resumes_seen,
            ..
        } => (
            Phase::Locking {
                sequence,
                to,
                resume: Some(step),
                resumes_seen,
                why: format!("restarted during {step}: taking the upgrade lock again"),
            },
            vec![Action::Report, Action::CheckTurn],
        ),
        p @ (Phase::Idle | Phase::Refused { .. } | Phase::Done { .. } | Phase::Stopped { .. }) => {
            (p, vec![Action::Report])
        }
        p @ Phase::Queued { .. } => (p, vec![Action::CheckFetchTurn]),
        p @ Phase::Fetching { sequence, .. } => (p, vec![Action::Fetch { sequence }]),
        p @ Phase::Waiting { .. } => (p, vec![Action::CheckTurn]),
        // Its turn was decided before the restart: decided again (etcd may have changed).
        p @ Phase::Locking { .. } => (p, vec![Action::CheckTurn]),
    }
}

/// The version a phase is heading to, if any.
pub fn target(phase: &Phase) -> Option<KubeVersion> {
    match phase {
        Phase::Idle | Phase::Refused { .. } => None,
        Phase::Queued { to, .. }
        | Phase::Fetching { to, .. }
        | Phase::Waiting { to, .. }
        | Phase::Locking { to, .. }
        | Phase::Running { to, .. }
        | Phase::Stopped { to, .. }
        | Phase::Done { to, .. } => Some(*to),
    }
}

#[cfg(test)]
mod tests;
