//! `muster`: plans, builds and rehearses highly available Kubernetes clusters.

pub mod build;
pub mod image;
pub mod lab;
pub mod ops;
pub mod plan_table;
pub mod render;
pub mod rendezvous;
pub mod spec_source;
pub mod vm;
