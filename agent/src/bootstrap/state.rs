//! The bootstrap's state: the phases, the persisted `State` and the fixed `Config` that
//! every decision reads. The decisions live next door: `transition` (which event moves
//! which phase where), `actions` (what the driver does in a phase), `material_policy` and
//! `member_policy` (the join-material exchange and the stale-etcd-member rules). The state
//! is persisted before its actions run, so a restart resumes where it stopped.
//!
//! Control planes: `CheckingInit` → `Electing` (1-slot `init` semaphore, fencing token) →
//! `Initializing` → `CheckingHealth` → `Publishing` → `Releasing` → `Done`; the losers and
//! late comers: `WaitingForInit` → `AcquiringJoinSlot` (1-slot `cp-join`) →
//! `CleaningStaleMember` → `Joining` → `Verifying` → `Releasing` → `Done`. Workers take one
//! of N `worker-join` slots as soon as the cluster is initialized and give it back as soon
//! as their join returned: `Joining` → `ReleasingJoinSlot` → `Verifying` → `Done`. Failures after a
//! destructive step go through `Compensating` (remove own etcd member, reset, restore the
//! kube-vip manifest, release the slot) and `Backoff`.
//!
//! The serde form of `State` is the on-disk format of `AGENT_STATE`: a phase's tag and
//! field names must not change (a state written by an older agent must still load).

use crate::coord::Fence;
use model::Role;
use model::spec::DistroKind;
use protocol::keys;
use serde::{Deserialize, Serialize};

/// Health confirmation probes start at least this far apart (start to start: a probe's own
/// time counts against it; `actions::delay_before`): a healthy node is confirmed by
/// [`HEALTHY_PROBES`] consecutive healthy probes spanning at least `(HEALTHY_PROBES - 1) ×`
/// this (600 ms), sustained health rather than one lucky probe (issue 17: probes were 2 s,
/// then 500 ms apart, three of them; the wait ran from one's end to the next's start).
pub const PROBE_INTERVAL_MS: u64 = 200;
/// Consecutive healthy probes that confirm an init or a join.
pub const HEALTHY_PROBES: u32 = 4;
/// `Ready` reads of its Node that confirm a control plane done. One: the condition is
/// already the kubelet's sustained judgement, posted every `nodeStatusUpdateFrequency`
/// (10 s by default) and only turned `Unknown` after the controller manager's grace period
/// (40 s), so reading the stored Node again within a second reads the same answer and
/// proves nothing more (issue 17: four reads 200 ms apart held every control plane 0.6 s).
pub const READY_READS: u32 = 1;
/// How long probes may keep failing before the init or join is undone (90 probes 2 s
/// apart before the interval was shortened).
pub const PROBE_PATIENCE_MS: u64 = 180_000;

/// Failed probes `interval_ms` apart that take at least `patience_ms`.
pub fn failed_probes_within(patience_ms: u64, interval_ms: u64) -> u32 {
    u32::try_from(patience_ms.div_ceil(interval_ms.max(1))).unwrap_or(u32::MAX)
}

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
    /// Failed add-on applies (each after a backoff) before `AddonsFailed`.
    pub addon_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_ms: u64,
    pub probe_interval_ms: u64,
    pub idle_ms: u64,
    /// This node runs a config that follows the membership (a load balancer's backends,
    /// keepalived's peers; `lb_follow`): once done, it re-renders them as members join.
    pub follows_members: bool,
    /// The Kubernetes version this node's payload runs (`spec.distribution.version`): a
    /// joiner newer than the running control plane waits for it (the version-skew policy).
    /// `None`: not compared.
    pub version: Option<model::KubeVersion>,
    /// How often a joiner newer than the control plane reads the control plane's version
    /// again.
    pub version_poll_ms: u64,
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
            healthy_probes: HEALTHY_PROBES,
            max_failed_probes: failed_probes_within(PROBE_PATIENCE_MS, PROBE_INTERVAL_MS),
            addon_attempts: 5,
            backoff_base_ms: 2_000,
            backoff_max_ms: 60_000,
            // Only the fallback: a waiting node wakes on the rendezvous change it waits for
            // (`actions::wakes_on`); polls were 3 s apart before (issue 17).
            poll_ms: 15_000,
            probe_interval_ms: PROBE_INTERVAL_MS,
            idle_ms: 15_000,
            follows_members: false,
            version: None,
            version_poll_ms: 5_000,
        }
    }

    /// The semaphore this node joins under, and its slot count.
    pub(crate) fn join_semaphore(&self) -> (&'static str, u32) {
        match self.role {
            Role::ControlPlane => (keys::CP_JOIN_SEMAPHORE, self.cp_join_slots.max(1)),
            _ => (keys::WORKER_JOIN_SEMAPHORE, self.worker_join_slots.max(1)),
        }
    }

    /// Control planes of a stacked etcd clean stale members before joining and remove
    /// their own when undoing a join.
    pub(crate) fn cleans_members(&self) -> bool {
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
    /// The cluster is initialized: read the running control plane's version (through the
    /// API endpoint) before joining.
    CheckingControlPlaneVersion,
    /// This node's payload is newer (by minor) than the running control plane allows (a
    /// node re-created from a rebuilt image during or before an upgrade): a worker waits
    /// until every control plane runs its version, a control plane until one does
    /// (`upgrade::order::join_allows`); it reads them again every
    /// `Config::version_poll_ms`. `control_plane`: the version it was held against.
    WaitingForControlPlaneVersion {
        kubelet: model::KubeVersion,
        control_plane: model::KubeVersion,
    },
    AcquiringJoinSlot,
    CleaningStaleMember {
        token: u64,
    },
    Joining {
        token: u64,
    },
    /// A worker whose `kubeadm join` (or k3s agent registration) returned: it gives its
    /// `worker-join` slot back before verifying (the slot protects the API server during
    /// the TLS bootstrap, not the wait for the Node). A restart here releases again and
    /// goes on verifying; it never joins again.
    ReleasingJoinSlot {
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
    /// A control plane, its slot released: the add-ons applied already (their record)? Else
    /// take the `addons` lease.
    SettingUpAddons,
    /// Apply the baked add-ons and record them, under the `addons` lease.
    ApplyingAddons {
        token: u64,
    },
    /// The apply failed `Config::addon_attempts` times: the lease is given back, the cause
    /// stays in `last_error`, and the node tries again after a backoff (a restarted agent
    /// at once).
    AddonsFailed {
        fence: Fence,
    },
    /// A control plane waits (outside any slot) until its Node is `Ready`.
    AwaitingReady {
        successes: u32,
        failures: u32,
    },
    /// Undo a failed or lost init/join, then back off and resume `then`.
    Compensating {
        slot: Option<Fence>,
        remove_own_member: bool,
        then: Box<Phase>,
    },
    /// Wait `delay_ms`, then resume `then`. A `poll` (not yet: no init, no free slot, no
    /// fresh material; not a failure) ends early when the rendezvous reports a change of
    /// what `then` waits for (`actions::wakes_on`); its delay is only the fallback.
    Backoff {
        delay_ms: u64,
        then: Box<Phase>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        poll: bool,
    },
    Done,
    /// `muster remove` tombstoned this node (`removed.<node>` at the rendezvous): it does
    /// nothing more, heartbeats no more and never joins again, even after a reboot.
    Removed,
}

impl Phase {
    /// In a health confirmation: its consecutive healthy probes so far.
    pub fn healthy_probes(&self) -> Option<u32> {
        match self {
            Phase::CheckingHealth { successes, .. } | Phase::Verifying { successes, .. } => {
                Some(*successes)
            }
            _ => None,
        }
    }

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
            Phase::CheckingControlPlaneVersion => "checking-control-plane-version",
            Phase::WaitingForControlPlaneVersion { .. } => "waiting-for-control-plane-version",
            Phase::AcquiringJoinSlot => "acquiring-join-slot",
            Phase::CleaningStaleMember { .. } => "cleaning-stale-member",
            Phase::Joining { .. } => "joining",
            Phase::ReleasingJoinSlot { .. } => "releasing-join-slot",
            Phase::Verifying { .. } => "verifying",
            Phase::Releasing { .. } => "releasing",
            Phase::ConfiguringLb => "configuring-lb",
            Phase::SettingUpAddons => "setting-up-addons",
            Phase::ApplyingAddons { .. } => "applying-addons",
            Phase::AddonsFailed { .. } => "addons-failed",
            Phase::AwaitingReady { .. } => "awaiting-ready",
            Phase::Compensating { .. } => "compensating",
            Phase::Backoff { .. } => "backoff",
            Phase::Done => "done",
            Phase::Removed => "removed",
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
    /// node and maybe an etcd member: start again from cleaning, which resets first. Add-ons
    /// that kept failing are tried again (the restart is how an operator says "fixed").
    pub fn resume(self) -> Self {
        let phase = match self.phase {
            Phase::Joining { token } => Phase::CleaningStaleMember { token },
            Phase::AddonsFailed { .. } => Phase::SettingUpAddons,
            p => p,
        };
        State { phase, ..self }
    }
}

pub(crate) fn init_fence(token: u64) -> Fence {
    Fence {
        semaphore: keys::INIT_SEMAPHORE.to_string(),
        token,
    }
}

pub(crate) fn addons_fence(token: u64) -> Fence {
    Fence {
        semaphore: keys::ADDONS_SEMAPHORE.to_string(),
        token,
    }
}

pub(crate) fn join_fence(cfg: &Config, token: u64) -> Fence {
    Fence {
        semaphore: cfg.join_semaphore().0.to_string(),
        token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase as P;

    fn at(phase: Phase) -> State {
        State {
            phase,
            attempt: 0,
            last_error: None,
        }
    }

    /// A shorter probe interval confirms sooner, without giving up sooner and without
    /// weakening the confirmation to fewer consecutive healthy probes.
    #[test]
    fn probes_are_frequent_but_patience_and_confirmation_are_kept() {
        let c = Config::new(
            Role::ControlPlane,
            model::spec::DistroKind::Kubeadm,
            true,
            1,
        );
        assert!(c.probe_interval_ms >= 200, "{}", c.probe_interval_ms);
        assert!(c.healthy_probes >= 4, "{}", c.healthy_probes);
        let window = u64::from(c.healthy_probes - 1) * c.probe_interval_ms;
        assert!(window >= 600, "sustained health spans {window} ms");
        let patience = u64::from(c.max_failed_probes) * c.probe_interval_ms;
        assert!(patience >= PROBE_PATIENCE_MS, "{patience}");
        assert_eq!(failed_probes_within(180_000, 2_000), 90, "as before");
        assert_eq!(failed_probes_within(1_000, 300), 4, "rounded up");
        assert_eq!(failed_probes_within(1_000, 0), 1_000, "no division by zero");
    }

    #[test]
    fn resume_restarts_a_cut_short_join_from_cleaning() {
        let s = at(P::Joining { token: 9 }).resume();
        assert_eq!(s.phase, P::CleaningStaleMember { token: 9 });
        for p in [
            P::Done,
            P::Verifying {
                token: 9,
                successes: 1,
                failures: 2,
            },
            P::Initializing { token: 9 },
        ] {
            assert_eq!(at(p.clone()).resume().phase, p, "only a join is redone");
        }
        let failed = at(P::AddonsFailed {
            fence: addons_fence(3),
        });
        assert_eq!(failed.resume().phase, P::SettingUpAddons, "tried again");
        let applying = at(P::ApplyingAddons { token: 3 });
        assert_eq!(
            applying.clone().resume(),
            applying,
            "resumes under its lease (renewed first)"
        );
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

    /// States exactly as the agent before the transition table was split wrote them into
    /// `AGENT_STATE` (one per phase shape): they must keep loading, and write back the same.
    #[test]
    fn states_written_by_the_old_agent_still_load() {
        let cases = [
            (
                r#"{"phase":"preflight","attempt":0,"lastError":null}"#,
                P::Preflight,
            ),
            (
                r#"{"phase":"waiting-for-init","attempt":2,"lastError":"x"}"#,
                P::WaitingForInit,
            ),
            (
                r#"{"phase":"checking-health","token":3,"successes":1,"failures":4,"attempt":0,"lastError":null}"#,
                P::CheckingHealth {
                    token: 3,
                    successes: 1,
                    failures: 4,
                },
            ),
            (
                r#"{"phase":"cleaning-stale-member","token":5,"attempt":1,"lastError":"boom"}"#,
                P::CleaningStaleMember { token: 5 },
            ),
            (
                r#"{"phase":"releasing","fence":{"semaphore":"cp-join","token":6},"attempt":0,"lastError":null}"#,
                P::Releasing {
                    fence: Fence {
                        semaphore: "cp-join".into(),
                        token: 6,
                    },
                },
            ),
            (
                r#"{"phase":"compensating","slot":{"semaphore":"init","token":2},"remove_own_member":true,"then":{"phase":"acquiring-join-slot"},"attempt":3,"lastError":"join: boom"}"#,
                P::Compensating {
                    slot: Some(init_fence(2)),
                    remove_own_member: true,
                    then: Box::new(P::AcquiringJoinSlot),
                },
            ),
            (
                r#"{"phase":"backoff","delay_ms":4100,"then":{"phase":"compensating","slot":null,"remove_own_member":false,"then":{"phase":"checking-init"}},"attempt":1,"lastError":"lost"}"#,
                P::Backoff {
                    delay_ms: 4_100,
                    then: Box::new(P::Compensating {
                        slot: None,
                        remove_own_member: false,
                        then: Box::new(P::CheckingInit),
                    }),
                    poll: false,
                },
            ),
            (
                r#"{"phase":"backoff","delay_ms":15000,"then":{"phase":"waiting-for-init"},"poll":true,"attempt":0,"lastError":null}"#,
                P::Backoff {
                    delay_ms: 15_000,
                    then: Box::new(P::WaitingForInit),
                    poll: true,
                },
            ),
            (r#"{"phase":"done","attempt":0,"lastError":null}"#, P::Done),
        ];
        for (text, phase) in cases {
            let s: State = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.phase, phase, "{text}");
            let back: serde_json::Value = serde_json::to_value(&s).unwrap();
            let want: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(back, want, "written back differently");
        }
    }

    #[test]
    fn a_whole_state_file_written_by_the_old_agent_still_loads() {
        let text = r#"{
  "format": 1,
  "node": "cp-2",
  "state": {"phase":"verifying","token":7,"successes":2,"failures":0,"attempt":1,"lastError":"join: boom"},
  "history": [
    {"phase":"preflight","startedMs":1000,"endedMs":2000,"attempt":0},
    {"phase":"verifying","startedMs":2000,"endedMs":null,"attempt":1}
  ]
}"#;
        let p: crate::bootstrap::Persisted = serde_json::from_str(text).unwrap();
        assert_eq!(
            p.state.phase,
            P::Verifying {
                token: 7,
                successes: 2,
                failures: 0
            }
        );
        assert_eq!(
            (p.failures, p.last_failure),
            (0, None),
            "fields added later default"
        );
    }
}
