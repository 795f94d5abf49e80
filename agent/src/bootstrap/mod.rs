//! The bootstrap: its state (`state`), the pure decisions — the transition table
//! (`transition`), each phase's actions (`actions`), the join-material exchange
//! (`material_policy`) and the stale-etcd-member rules (`member_policy`) —, the driver
//! that performs the actions (`driver`) and the persisted state with phase history
//! (`store`).

pub mod actions;
pub mod diagnosis;
pub mod driver;
pub mod material_policy;
pub mod member_policy;
pub mod state;
pub mod store;
pub mod stranded;
pub mod transition;

pub use actions::Action;
pub use driver::{Driver, Tick};
pub use state::{Config, Phase, State};
#[cfg(any(test, feature = "testkit"))]
pub use store::MemStore;
pub use store::{FileStore, Persisted, Store};
pub use transition::{Event, step};
