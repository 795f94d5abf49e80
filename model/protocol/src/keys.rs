//! Keys and semaphores the bootstrap uses at the rendezvous; their values are the records
//! in [`crate::records`] and [`crate::report`], sealed with the cluster secret.

pub const INIT_SEMAPHORE: &str = "init";
pub const CP_JOIN_SEMAPHORE: &str = "cp-join";
pub const WORKER_JOIN_SEMAPHORE: &str = "worker-join";
/// Durable: who initialized the cluster, with the fencing token of that init.
pub const INITIALIZED: &str = "initialized";
/// Sealed join material (token, CA hash, certificate key, admin kubeconfig, etcd access).
pub const JOIN_MATERIAL: &str = "join-material";
/// A joiner found the material expired; any joined control plane refreshes it.
pub const REFRESH_REQUEST: &str = "refresh-request";
/// Durable: the cluster's assembly generation, raised by `muster reset` (absent: 0). An
/// `initialized` record of an older generation belongs to a retired assembly.
pub const GENERATION: &str = "generation";
/// Prefix of the durable tombstones `muster remove` leaves: `removed.<node>`.
pub const REMOVED_PREFIX: &str = "removed.";
/// Durable: the add-ons the cluster applied (`crate::records::AddonsRecord`), written once
/// per assembly generation and payload add-on digest by the control plane that applied them.
pub const ADDONS_APPLIED: &str = "addons-applied";
/// 1-slot lease under which one control plane applies the add-ons; another takes over an
/// unfinished apply once the holder's lease expires.
pub const ADDONS_SEMAPHORE: &str = "addons";
