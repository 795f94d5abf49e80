//! Types shared by `muster` (the builder) and `nodeagent` (the agent): the cluster spec and
//! its validation, the resolved plan, and the etcd quorum arithmetic. Serde only, no I/O.

pub mod addons;
pub mod address_range;
pub mod baked;
pub mod dsn;
pub mod fsutil;
pub mod kube_vip;
pub mod lb_config;
pub mod names;
pub mod node_files;
pub mod plan;
pub mod plan_diff;
pub mod problem;
pub mod quorum;
pub mod secret;
pub mod spec;
pub mod templates;
pub mod version;
mod yaml;

pub use names::{HttpUrl, InterfaceName, Mac, NodeName, Sha256Hex};
pub use plan::{Plan, PlannedNode};
pub use problem::{Location, Problem, Problems, Severity, SpecError};
pub use spec::{Cluster, Role};
pub use version::KubeVersion;
