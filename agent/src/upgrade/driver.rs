//! The thin loop around [`super::transition::step`]: it carries out each action through
//! [`Effects`] (the rendezvous, kubeadm/k3s, the API server, the disk), feeds the answer
//! back as an event, and persists every new phase before acting on it, so a reboot
//! resumes through [`super::transition::restart`]. It decides nothing itself.
//!
//! The real `Effects` are [`super::live::Live`]'s, with the daemon's live look at etcd (the rendezvous through
//! [`super::rendezvous_side`], kubeadm/k3s, cordon, Eviction and the kubelet through
//! [`super::node_side`]); the unit tests (`driver/tests.rs`) drive whole rolls through an
//! in-memory cluster, and `tests/tests/lab_upgrade.rs` runs the real ones in the lab.

use super::order::Wait;
use super::state::Phase;
use super::steps::Step;
use super::transition::{Action, Event, Me, step};

/// How a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// The lock's lease was lost: stop acting.
    LeaseLost,
    Failed {
        cause: String,
        can_serve: bool,
    },
}

/// Every side effect of the upgrade, one method per action.
#[allow(
    async_fn_in_trait,
    reason = "the agent drives it on one task; no Send bound needed"
)]
pub trait Effects {
    async fn save(&mut self, phase: &Phase);
    /// Publishes the phase as this node's progress record; `false` when it was not
    /// written (the driver asks again next round: the others' turns read it).
    async fn report(&mut self, phase: &Phase) -> bool;
    /// Whether this node may download now ([`super::order::may_fetch`] on the roll view).
    async fn check_fetch_turn(&mut self) -> Result<(), Wait>;
    async fn fetch(&mut self, sequence: u64) -> Result<(), String>;
    async fn check_turn(&mut self) -> Result<(), Wait>;
    /// A fresh look at etcd (not the round's view) judged by
    /// [`super::quorum_guard::control_plane_may_go`], right before a step that takes this
    /// control plane's member down.
    async fn check_quorum(&mut self) -> Result<(), Wait>;
    /// `Some(token)` when granted (again, if already held), `None` when busy.
    async fn acquire(&mut self) -> Option<u64>;
    async fn run(&mut self, step: Step) -> Result<(), StepError>;
    async fn uncordon(&mut self);
    async fn release(&mut self, token: u64);
    /// The newest resume request `(sequence, count)`, if any.
    async fn resume_request(&mut self) -> Option<(u64, u64)>;
}

/// Whether a round ended with more to do after a pause (waiting for a turn, a lock, a
/// resume or a retried download), or with nothing left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Call again (after waiting for a change at the rendezvous) with these actions.
    Pause(Vec<Action>),
    Quiet,
}

/// Runs actions until the machine pauses or has nothing left; returns the phase reached.
pub async fn round(
    me: &Me,
    mut phase: Phase,
    mut actions: Vec<Action>,
    fx: &mut impl Effects,
) -> (Phase, Round) {
    if actions.is_empty()
        && let Phase::Stopped { .. } = phase
    {
        // A stopped node only ever moves on a resume request.
        match fx.resume_request().await {
            Some((sequence, count)) => {
                return apply(me, phase, Event::Resume { sequence, count }, fx).await;
            }
            None => return (phase, Round::Pause(vec![])),
        }
    }
    // A progress record not written stays owed: other nodes judge their turn by it (a
    // worker that never published `done` would count as upgrading forever).
    let mut unreported = false;
    while !actions.is_empty() {
        let action = actions.remove(0);
        let event = match action {
            Action::Report => {
                unreported = !fx.report(&phase).await;
                continue;
            }
            Action::Uncordon => {
                fx.uncordon().await;
                continue;
            }
            Action::Release { token } => {
                fx.release(token).await;
                continue;
            }
            Action::CheckFetchTurn => Event::FetchTurn(fx.check_fetch_turn().await),
            Action::Fetch { sequence } => Event::Fetched(fx.fetch(sequence).await),
            Action::CheckTurn => Event::Turn(fx.check_turn().await),
            Action::CheckQuorum => Event::Quorum(fx.check_quorum().await),
            Action::Acquire => match fx.acquire().await {
                Some(token) => Event::Granted { token },
                None => Event::Busy,
            },
            Action::Run(s) => match fx.run(s).await {
                Ok(()) => Event::StepDone,
                Err(StepError::LeaseLost) => Event::LeaseLost,
                Err(StepError::Failed { cause, can_serve }) => {
                    Event::StepFailed { cause, can_serve }
                }
            },
        };
        let pause = matches!(
            event,
            Event::Turn(Err(_))
                | Event::Quorum(Err(_))
                | Event::Busy
                | Event::Fetched(Err(_))
                | Event::FetchTurn(Err(_))
        );
        let (next, acts) = step(me, phase, event);
        fx.save(&next).await;
        phase = next;
        if pause {
            // Report now; the retried action waits for the caller's pause.
            let (report, mut rest): (Vec<Action>, Vec<Action>) =
                acts.into_iter().partition(|a| *a == Action::Report);
            if (unreported || !report.is_empty()) && !fx.report(&phase).await {
                rest.insert(0, Action::Report);
            }
            return (phase, Round::Pause(rest));
        }
        actions = acts;
    }
    match phase {
        _ if unreported => (phase, Round::Pause(vec![Action::Report])),
        Phase::Stopped { .. } => (phase, Round::Pause(vec![])),
        _ => (phase, Round::Quiet),
    }
}

async fn apply(me: &Me, phase: Phase, event: Event, fx: &mut impl Effects) -> (Phase, Round) {
    let (next, acts) = step(me, phase.clone(), event);
    if next == phase {
        return (next, Round::Pause(vec![]));
    }
    fx.save(&next).await;
    Box::pin(round(me, next, acts, fx)).await
}

#[cfg(test)]
mod tests;
