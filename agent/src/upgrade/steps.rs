//! The steps one node runs to upgrade, in order, as the upstream guides do them.
//!
//! kubeadm (kubernetes.io "Upgrading kubeadm clusters"): install the new kubeadm; on the
//! first control plane `kubeadm upgrade plan` then `kubeadm upgrade apply vX.Y.Z --yes`, on
//! every other node `kubeadm upgrade node`; drain (cordon first); install the new kubelet
//! and kubectl; restart the kubelet; uncordon. muster adds: wait until the Node is Ready at
//! the new version before uncordoning. k3s: cordon, drain, swap the binary and airgap
//! images, restart the unit, wait Ready at the new version, uncordon.

use model::Role;
use model::spec::DistroKind;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    InstallKubeadm,
    UpgradePlan,
    UpgradeApply,
    UpgradeNode,
    Cordon,
    Drain,
    InstallKubelet,
    RestartKubelet,
    SwapK3s,
    RestartK3s,
    WaitReady,
    Uncordon,
}

impl Step {
    /// The name status shows (`drain`, `upgrade-apply`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Step::InstallKubeadm => "install-kubeadm",
            Step::UpgradePlan => "upgrade-plan",
            Step::UpgradeApply => "upgrade-apply",
            Step::UpgradeNode => "upgrade-node",
            Step::Cordon => "cordon",
            Step::Drain => "drain",
            Step::InstallKubelet => "install-kubelet",
            Step::RestartKubelet => "restart-kubelet",
            Step::SwapK3s => "swap-k3s",
            Step::RestartK3s => "restart-k3s",
            Step::WaitReady => "wait-ready",
            Step::Uncordon => "uncordon",
        }
    }

    /// Whether the node is cordoned once this step has started (a failure from here on
    /// uncordons it if it can serve).
    pub fn after_cordon(self) -> bool {
        !matches!(
            self,
            Step::InstallKubeadm | Step::UpgradePlan | Step::UpgradeApply | Step::UpgradeNode
        )
    }
}

impl Step {
    /// Whether this step takes a control plane's etcd member down (its static pod
    /// replaced by `kubeadm upgrade apply|node`, the k3s server restarted with its embedded
    /// member): right before it, the quorum guard looks at etcd again
    /// ([`super::quorum_guard::control_plane_may_go`] on a fresh view).
    pub fn takes_etcd_member_down(self, role: Role) -> bool {
        role == Role::ControlPlane
            && matches!(
                self,
                Step::UpgradeApply | Step::UpgradeNode | Step::RestartK3s
            )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The steps of one node. `first_control_plane`: the first in the roll's order, which runs
/// `kubeadm upgrade apply` (the others `kubeadm upgrade node`).
pub fn steps(distribution: DistroKind, role: Role, first_control_plane: bool) -> Vec<Step> {
    match distribution {
        DistroKind::Kubeadm => {
            let mut s = vec![Step::InstallKubeadm];
            if role == Role::ControlPlane && first_control_plane {
                s.extend([Step::UpgradePlan, Step::UpgradeApply]);
            } else {
                s.push(Step::UpgradeNode);
            }
            s.extend([
                Step::Cordon,
                Step::Drain,
                Step::InstallKubelet,
                Step::RestartKubelet,
                Step::WaitReady,
                Step::Uncordon,
            ]);
            s
        }
        DistroKind::K3s => vec![
            Step::Cordon,
            Step::Drain,
            Step::SwapK3s,
            Step::RestartK3s,
            Step::WaitReady,
            Step::Uncordon,
        ],
    }
}

/// The step after `step` in `list`, `None` after the last.
pub fn next(list: &[Step], step: Step) -> Option<Step> {
    let i = list.iter().position(|s| *s == step)?;
    list.get(i + 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_control_plane_applies_the_others_upgrade_node() {
        let first = steps(DistroKind::Kubeadm, Role::ControlPlane, true);
        assert_eq!(
            &first[..3],
            &[Step::InstallKubeadm, Step::UpgradePlan, Step::UpgradeApply]
        );
        let other = steps(DistroKind::Kubeadm, Role::ControlPlane, false);
        assert_eq!(&other[..2], &[Step::InstallKubeadm, Step::UpgradeNode]);
        assert!(!other.contains(&Step::UpgradeApply));
        let worker = steps(DistroKind::Kubeadm, Role::Worker, true);
        assert_eq!(worker, other, "a worker never runs `kubeadm upgrade apply`");
        for list in [&first, &other] {
            // Drain before the kubelet changes, Ready before uncordon.
            let at = |s| list.iter().position(|x| *x == s).unwrap();
            assert!(at(Step::Cordon) < at(Step::Drain));
            assert!(at(Step::Drain) < at(Step::InstallKubelet));
            assert!(at(Step::RestartKubelet) < at(Step::WaitReady));
            assert_eq!(list.last(), Some(&Step::Uncordon));
        }
    }

    #[test]
    fn k3s_swaps_the_binary_between_drain_and_ready() {
        let s = steps(DistroKind::K3s, Role::ControlPlane, true);
        assert_eq!(
            s,
            vec![
                Step::Cordon,
                Step::Drain,
                Step::SwapK3s,
                Step::RestartK3s,
                Step::WaitReady,
                Step::Uncordon
            ]
        );
        assert_eq!(next(&s, Step::Drain), Some(Step::SwapK3s));
        assert_eq!(next(&s, Step::Uncordon), None);
    }
}
