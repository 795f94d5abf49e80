//! The upgrade as the running agent carries it out: the real [`Effects`] (the rendezvous
//! through [`RendezvousSide`], the node through [`NodeSide`], the phase on disk through
//! [`super::store`]) and [`Live::round`], which the daemon loop calls after its node is
//! done, in the loop that heartbeats. It judges the newest release, then lets
//! [`super::driver::round`] run the machine until it pauses. Decides nothing itself.

use super::driver::{self, Effects, Round, StepError};
use super::node_side::NodeSide;
use super::order::{self, Wait};
use super::rendezvous_side::RendezvousSide;
use super::state::Phase;
use super::steps::Step;
use super::transition::{self, Action, Event, Me};
use super::{quorum_guard, store, view};
use crate::bootstrap::driver::EtcdSource;
use crate::exec::CommandRunner;
use crate::systemd::Systemd;
use model::node_files::NodeRoot;
use model::spec::DistroKind;
use model::{KubeVersion, Role};
use protocol::etcd_view::EtcdView;
use protocol::release::{self, Release};
use std::path::PathBuf;
use std::time::Duration;

/// How soon a paused roll asks again (a turn, the lock, a resume, a retried download).
const PAUSE: Duration = Duration::from_secs(1);

/// Who this node is and what the cluster ran before the release.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node: String,
    pub cluster_id: String,
    pub distribution: DistroKind,
    pub role: Role,
    /// The version this node's image (its baked config) runs.
    pub running: KubeVersion,
    /// The planned nodes that take part in an upgrade roll (load balancers do not).
    pub planned: Vec<(String, Role)>,
    pub max_unavailable: u32,
}

#[derive(Debug)]
pub struct Live<R, S> {
    me: Me,
    id: Identity,
    root: NodeRoot,
    rdv: RendezvousSide,
    node: NodeSide<R, S>,
    phase: Phase,
    pending: Vec<Action>,
    release: Option<Release>,
    /// The etcd view the daemon loop took live this round (control planes).
    etcd: Option<EtcdView>,
    token: Option<u64>,
    /// The agent binary the payload installs, against the running one.
    binary: super::self_update::BinaryWatch,
    /// This node runs the release and its agent binary is another: exec it.
    restart: bool,
}

/// The release a phase is about, if any.
pub fn sequence_of(p: &Phase) -> Option<u64> {
    match p {
        Phase::Idle => None,
        Phase::Refused { sequence, .. }
        | Phase::Queued { sequence, .. }
        | Phase::Fetching { sequence, .. }
        | Phase::Waiting { sequence, .. }
        | Phase::Locking { sequence, .. }
        | Phase::Running { sequence, .. }
        | Phase::Stopped { sequence, .. }
        | Phase::Done { sequence, .. } => Some(*sequence),
    }
}

/// The payloads the node tree is installed from at `install-kubeadm`; the kubelet and
/// kubectl binaries (when the payload carries them) only at `install-kubelet`.
fn kubelet_binary(rel: &str) -> bool {
    matches!(rel, "usr/bin/kubelet" | "usr/bin/kubectl")
}

impl<R: CommandRunner, S: Systemd> Live<R, S> {
    /// Resumes the persisted phase (a reboot mid-step takes the lock again and re-runs
    /// the step), or starts idle.
    pub fn new(
        id: Identity,
        root: NodeRoot,
        rdv: RendezvousSide,
        node: NodeSide<R, S>,
    ) -> Result<Self, crate::bootstrap::store::StoreError> {
        let (phase, pending) = match store::load(root.path("").as_path())? {
            Some(p) => transition::restart(p),
            None => (Phase::Idle, Vec::new()),
        };
        let first = id
            .planned
            .iter()
            .filter(|(_, r)| *r == Role::ControlPlane)
            .map(|(n, _)| n.as_str())
            .min()
            .is_some_and(|n| n == id.node);
        Ok(Live {
            me: Me {
                distribution: id.distribution,
                role: id.role,
                first_control_plane: first,
            },
            id,
            rdv,
            node,
            phase,
            pending,
            release: None,
            etcd: None,
            token: None,
            binary: super::self_update::BinaryWatch::new(
                root.path(model::node_files::AGENT_BINARY),
            ),
            restart: false,
            root,
        })
    }

    /// The release's agent binary, once this node runs the release and it differs from
    /// the running one: the daemon loop stops and `main` execs it.
    pub fn restart_into(&self) -> Option<&std::path::Path> {
        self.restart.then(|| self.binary.path())
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// One round: judge the newest release, run the machine until it pauses. How soon
    /// it wants the next round (`None`: nothing to do until a release changes).
    pub async fn round(
        &mut self,
        etcd: Option<&EtcdView>,
        fresh: &impl EtcdSource,
    ) -> Option<Duration> {
        self.etcd = etcd.cloned();
        match self.rdv.newest_release().await {
            Ok(Some(r)) => {
                let verdict = release::judge(
                    &self.id.cluster_id,
                    self.id.distribution,
                    self.id.running,
                    sequence_of(&self.phase),
                    &r,
                );
                let sequence = r.sequence;
                self.release = Some(r);
                let (next, acts) = transition::step(
                    &self.me,
                    self.phase.clone(),
                    Event::Release { sequence, verdict },
                );
                if next != self.phase {
                    tracing::info!(node = %self.id.node, from = self.phase.label(), to = next.label(), "upgrade");
                    self.save(&next).await;
                    self.phase = next;
                    self.pending = acts;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the upgrade release"),
        }
        if self.release.is_none() && self.phase.in_flight() {
            // After a restart: the release is needed before any step runs.
            return Some(PAUSE);
        }
        let acts = std::mem::take(&mut self.pending);
        let me = self.me.clone();
        let phase = self.phase.clone();
        let (phase, round) = driver::round(&me, phase, acts, &mut Fx { live: self, fresh }).await;
        self.phase = phase;
        if super::self_update::may_restart(&self.phase) && self.binary.changed() {
            tracing::info!(node = %self.id.node, binary = %self.binary.path().display(),
                "this node runs the release; moving to the release's agent binary");
            self.restart = true;
            return None;
        }
        match round {
            Round::Pause(acts) => {
                self.pending = acts;
                Some(PAUSE)
            }
            Round::Quiet => None,
        }
    }

    /// kube-vip's static pod from the installed release, where this node runs it.
    fn refresh_kube_vip(&self) -> Result<(), String> {
        for rel in super::node_side::refresh_kube_vip(&self.root, &self.id.node)? {
            tracing::info!(
                manifest = rel,
                "kube-vip's static pod replaced by the release's"
            );
        }
        Ok(())
    }

    fn target(&self) -> Result<KubeVersion, String> {
        transition::target(&self.phase).ok_or_else(|| "no target version in this phase".into())
    }

    fn payload(&self) -> Result<PathBuf, String> {
        let seq = sequence_of(&self.phase).ok_or("no release in this phase")?;
        Ok(self
            .root
            .path(&format!("var/lib/nodeagent/payload-{seq}.tar.gz")))
    }

    async fn step(&self, step: Step) -> Result<(), String> {
        let n = &self.node;
        match step {
            Step::InstallKubeadm => {
                let count = n.install_payload(&self.payload()?, |rel| !kubelet_binary(rel))?;
                tracing::info!(files = count, "installed the release's node tree");
                self.refresh_kube_vip()?;
                n.install_packages(&["kubeadm"]).await.map(|_| ())
            }
            Step::UpgradePlan => n.upgrade_plan().await,
            Step::UpgradeApply => n.upgrade_apply(self.target()?).await,
            Step::UpgradeNode => n.upgrade_node().await,
            Step::Cordon => n.cordon(true).await,
            Step::Drain => n.drain().await,
            Step::InstallKubelet => {
                let count = n.install_payload(&self.payload()?, kubelet_binary)?;
                tracing::info!(files = count, "installed kubelet/kubectl binaries");
                n.install_packages(&["kubelet", "kubectl"])
                    .await
                    .map(|_| ())
            }
            Step::RestartKubelet => n.restart_kubelet().await,
            Step::WaitReady => n.wait_ready(self.target()?).await,
            Step::Uncordon => n.cordon(false).await,
            // The whole node tree: cluster config, agent, add-ons, and the release's k3s
            // binary and airgap images where the payload carries them; then the binary
            // must be the release's.
            Step::SwapK3s => {
                let count = n.install_payload(&self.payload()?, |_| true)?;
                tracing::info!(files = count, "installed the release's node tree and k3s");
                self.refresh_kube_vip()?;
                n.check_k3s(self.target()?).await
            }
            Step::RestartK3s => n.restart_k3s(self.id.role).await,
        }
    }
}

/// [`Live`] with the daemon's live look at etcd, for one round's effects.
struct Fx<'a, R, S, E> {
    live: &'a mut Live<R, S>,
    fresh: &'a E,
}

impl<R: CommandRunner, S: Systemd, E: EtcdSource> Effects for Fx<'_, R, S, E> {
    async fn save(&mut self, phase: &Phase) {
        self.live.save(phase).await;
    }
    async fn report(&mut self, phase: &Phase) -> bool {
        self.live.report(phase).await
    }
    async fn check_fetch_turn(&mut self) -> Result<(), Wait> {
        self.live.check_fetch_turn().await
    }
    async fn fetch(&mut self, sequence: u64) -> Result<(), String> {
        self.live.fetch(sequence).await
    }
    async fn check_turn(&mut self) -> Result<(), Wait> {
        self.live.check_turn().await
    }
    async fn check_quorum(&mut self) -> Result<(), Wait> {
        let view = self.fresh.etcd_view().await;
        let r = quorum_guard::control_plane_may_go(
            view.as_ref(),
            &self.live.id.node,
            protocol::clock::now_ms(),
        );
        if let Err(w) = &r {
            tracing::warn!(node = %self.live.id.node, wait = %w,
                "not taking the etcd member down: waiting");
        }
        r
    }
    async fn acquire(&mut self) -> Option<u64> {
        self.live.acquire().await
    }
    async fn run(&mut self, step: Step) -> Result<(), StepError> {
        self.live.run(step).await
    }
    async fn uncordon(&mut self) {
        self.live.uncordon().await;
    }
    async fn release(&mut self, token: u64) {
        self.live.release(token).await;
    }
    async fn resume_request(&mut self) -> Option<(u64, u64)> {
        self.live.resume_request().await
    }
}

/// The effects that need nothing but the node and the rendezvous.
impl<R: CommandRunner, S: Systemd> Live<R, S> {
    async fn save(&mut self, phase: &Phase) {
        if let Err(e) = store::save(self.root.path("").as_path(), phase) {
            tracing::error!(error = %e, "cannot persist the upgrade phase");
        }
        self.phase = phase.clone();
    }

    async fn report(&mut self, phase: &Phase) -> bool {
        match self.rdv.report(phase, protocol::clock::now_ms()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, phase = phase.label(), "cannot publish the upgrade progress; asking again next round");
                false
            }
        }
    }

    async fn fetch(&mut self, sequence: u64) -> Result<(), String> {
        let r = self
            .release
            .clone()
            .filter(|r| r.sequence == sequence)
            .ok_or_else(|| format!("release {sequence} is no longer the newest"))?;
        let path = self.rdv.fetch(&r).await.map_err(|e| e.to_string())?;
        tracing::info!(payload = %path.display(), "release payload verified");
        Ok(())
    }

    /// The roll as the progress records and the release show it.
    async fn roll_view(&self) -> Result<order::RollView, Wait> {
        let blind = |what: String| Wait::Blind { what };
        let r = self
            .release
            .clone()
            .ok_or_else(|| blind("no release read yet".into()))?;
        let progress = self
            .rdv
            .progress()
            .await
            .map_err(|e| blind(format!("the progress records: {e}")))?;
        Ok(view::roll_view(
            &self.id.planned,
            &progress,
            &r,
            self.id.running,
            self.id.max_unavailable,
        ))
    }

    /// A node that cannot see the roll downloads anyway: the order only saves time.
    async fn check_fetch_turn(&mut self) -> Result<(), Wait> {
        match self.roll_view().await {
            Ok(roll) => order::may_fetch(&roll, &self.id.node),
            Err(e) => {
                tracing::warn!(wait = %e, "downloading the release without the roll's order");
                Ok(())
            }
        }
    }

    async fn check_turn(&mut self) -> Result<(), Wait> {
        let roll = self.roll_view().await?;
        quorum_guard::may_start(
            &roll,
            &self.id.node,
            self.id.role,
            self.etcd.as_ref(),
            protocol::clock::now_ms(),
        )
    }

    async fn acquire(&mut self) -> Option<u64> {
        match self.rdv.acquire().await {
            Ok(t) => {
                self.token = t;
                t
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask for the upgrade lock");
                None
            }
        }
    }

    async fn run(&mut self, step: Step) -> Result<(), StepError> {
        if let Some(token) = self.token {
            match self.rdv.renew(token).await {
                Ok(true) => {}
                Ok(false) => return Err(StepError::LeaseLost),
                Err(e) => {
                    // Unconfirmed is not held: take it again (the same token while held).
                    tracing::warn!(error = %e, "cannot renew the upgrade lock; taking it again before the step");
                    return Err(StepError::LeaseLost);
                }
            }
        }
        tracing::info!(node = %self.id.node, step = step.name(), "upgrade step");
        self.step(step).await.map_err(|cause| {
            tracing::error!(node = %self.id.node, step = step.name(), %cause, "upgrade step failed");
            StepError::Failed {
                cause,
                can_serve: !matches!(
                    step,
                    Step::RestartKubelet | Step::RestartK3s | Step::WaitReady
                ),
            }
        })
    }

    async fn uncordon(&mut self) {
        if let Err(e) = self.node.cordon(false).await {
            tracing::warn!(error = %e, "cannot uncordon after the failed step");
        }
    }

    async fn release(&mut self, token: u64) {
        if let Err(e) = self.rdv.release(token).await {
            tracing::warn!(error = %e, "cannot give the upgrade lock back (its lease expires)");
        }
        self.token = None;
    }

    async fn resume_request(&mut self) -> Option<(u64, u64)> {
        match self.rdv.resume_request().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the resume request");
                None
            }
        }
    }
}
