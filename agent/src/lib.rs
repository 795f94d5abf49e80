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
