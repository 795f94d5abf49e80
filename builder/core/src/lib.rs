//! `muster-build`: what `muster` makes from a spec — the plan table, every rendered file
//! (pure, golden-tested renderers), the reproducible payload and the build dir ([`bake`]),
//! node images ([`image`]), and the operator commands that read a build dir ([`ops`]:
//! status, kubeconfig). The rendezvous server and the lab are crates of their own.

pub mod addons;
pub mod bake;
pub mod image;
pub mod ops;
pub mod plan_table;
pub mod render;
pub mod spec_source;
