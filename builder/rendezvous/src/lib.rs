//! The rendezvous service (`muster rendezvous`): a passive meeting point where nodes
//! register, store sealed records, take leases on semaphores and watch for changes.
//! It never tells a node what to do; it stores, orders and expires what nodes write.
//! Protocol: `docs/rendezvous-protocol.md`; wire types: `protocol::wire`.

pub mod audit;
pub mod auth;
pub mod clock;
mod committer;
pub mod error;
pub mod fanout;
pub mod fleetlock;
pub mod http;
pub mod keys;
pub mod limits;
pub mod peers;
pub mod redb_store;
pub mod semaphore;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod watch_slots;
pub mod watch_stream;

pub use clock::{Clock, SystemClock, TokioClock};
pub use http::app;
pub use limits::Limits;
pub use redb_store::RedbStore;
pub use server::run;
pub use service::Service;
pub use store::Store;

use std::path::Path;
use std::sync::Arc;

/// The service over `data_dir` as `muster rendezvous` runs it: redb in
/// `data_dir/rendezvous.redb`, cluster keys from `keys_dir`, the system clock. Call from
/// within a tokio runtime.
pub fn open(
    data_dir: &Path,
    keys_dir: &Path,
    limits: Limits,
) -> Result<Service, store::StoreError> {
    let store = RedbStore::open(data_dir)?;
    Ok(Service::new(
        Arc::new(store),
        keys::KeyDir::new(keys_dir.to_path_buf()),
        Arc::new(SystemClock),
        limits,
    ))
}
