//! `nodeagent`: the first-boot agent that assembles a node into its cluster.

pub mod rendezvous;
