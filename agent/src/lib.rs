//! `nodeagent`: the first-boot agent. It meets its peers at the rendezvous and assembles
//! this node into the cluster with kubeadm or k3s, through an explicit state machine
//! (`bootstrap`) whose every effect goes through a trait, so the same logic runs on a real
//! node, in a lab namespace and in the deterministic simulation.

pub mod addons;
pub mod app;
pub mod bootstrap;
pub mod coord;
pub mod distro;
pub mod etcd_query;
pub mod exec;
pub mod host;
pub mod kube;
pub mod kube_vip;
pub mod lab_systemd;
pub mod lb_follow;
pub mod preflight;
pub mod reach;
pub mod rendezvous;
pub mod report;
pub mod status;
pub mod systemd;
pub mod upgrade;

/// Captured real command output in `agent/tests/fixtures` (parsers are tested on it).
#[cfg(test)]
pub(crate) fn test_fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
