//! What the bootstrap needs from the rendezvous: membership, records with one cluster-wide
//! revision, fenced semaphores and a watch. The real HTTP client implements this through an
//! adapter; the simulation implements it in memory.
//!
//! Semantics every implementation keeps:
//! - one revision for the whole cluster, growing with every write;
//! - a semaphore's fencing tokens only grow; re-acquiring while holding returns the same
//!   token (idempotent); a holder that stops renewing loses its slot at its TTL;
//! - a write carrying a fence is rejected with [`ErrorKind::Fenced`] unless that token
//!   currently holds a slot of that semaphore;
//! - values are opaque bytes (the real client seals them with the cluster secret).

use model::Role;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A semaphore slot held with a fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub semaphore: String,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created { revision: u64 },
    Exists { value: Vec<u8>, revision: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Granted { token: u64, ttl: Duration },
    Busy { holders: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub report: serde_json::Value,
}

/// What changed, as far as a waiting node cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A record put, deleted or expired.
    Record,
    /// A member registered, changed its report or expired.
    Member,
    /// A semaphore slot granted.
    SlotTaken,
    /// A semaphore slot released or expired.
    SlotFreed,
}

/// One change: `name` is the record key, member name or semaphore name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// Changes were lost (the rendezvous restarted, or `after_revision` is too old or
    /// ahead of it): whatever the caller waits for may have happened; re-read.
    pub compacted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The fencing token does not hold a slot (any more): this node lost the lease.
    Fenced,
    /// Compare-and-swap saw another revision.
    Conflict,
    /// The rendezvous could not be reached or answered with a server error; retry.
    Unavailable,
    /// The answer made no sense (bad JSON, a value that does not open).
    Protocol,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("rendezvous {op} `{key}`: {kind:?}: {detail}")]
pub struct CoordError {
    pub op: &'static str,
    pub key: String,
    pub kind: ErrorKind,
    pub detail: String,
}

impl CoordError {
    pub fn new(op: &'static str, key: &str, kind: ErrorKind, detail: impl Into<String>) -> Self {
        CoordError {
            op,
            key: key.to_string(),
            kind,
            detail: detail.into(),
        }
    }
}

pub type CoordResult<T> = Result<T, CoordError>;

/// The rendezvous operations the bootstrap uses. `async fn` in a trait: the agent drives it
/// from one task, so no `Send` bound is asked of implementations. `Clone` (a handle to a
/// shared client): a report travels beside the driver's own actions.
#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait Coordinator: Clone {
    /// Registers or refreshes this member with its report; it disappears after `ttl`.
    /// Returns the cluster revision after the call.
    async fn heartbeat(
        &self,
        member: &str,
        role: Role,
        report: &serde_json::Value,
        ttl: Duration,
    ) -> CoordResult<u64>;
    async fn members(&self) -> CoordResult<Vec<Member>>;
    async fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        fence: Option<&Fence>,
    ) -> CoordResult<Created>;
    /// Replaces `key` if its revision is still `expected_revision`; the new revision.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected_revision: u64,
        value: &[u8],
        fence: Option<&Fence>,
    ) -> CoordResult<u64>;
    async fn get(&self, key: &str) -> CoordResult<Option<Record>>;
    async fn list(&self, prefix: &str) -> CoordResult<Vec<Record>>;
    async fn delete(&self, key: &str, fence: Option<&Fence>) -> CoordResult<()>;
    async fn acquire(
        &self,
        semaphore: &str,
        slots: u32,
        holder: &str,
        ttl: Duration,
    ) -> CoordResult<Acquired>;
    /// Fails with `Fenced` when `token` no longer holds a slot.
    async fn renew(
        &self,
        semaphore: &str,
        holder: &str,
        token: u64,
        ttl: Duration,
    ) -> CoordResult<()>;
    /// Releasing a slot not held (expired, already released) succeeds.
    async fn release(&self, semaphore: &str, holder: &str, token: u64) -> CoordResult<()>;
    /// Waits until the revision passes `after_revision` or `timeout` passes; the changes
    /// after `after_revision`, oldest first.
    async fn watch(&self, after_revision: u64, timeout: Duration) -> CoordResult<Changes>;
}
