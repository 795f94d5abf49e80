//! The bootstrap: a pure state machine (`state`), the driver that performs its actions
//! (`driver`) and the persisted state with phase history (`store`).

pub mod driver;
pub mod state;
pub mod store;

pub use driver::{Driver, Tick};
pub use state::{Action, Config, Event, Phase, State, step};
#[cfg(any(test, feature = "testkit"))]
pub use store::MemStore;
pub use store::{FileStore, Persisted, Store};
