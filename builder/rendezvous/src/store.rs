//! Durable storage behind a trait, so a backend other than redb can be added. The server
//! keeps each cluster's state in memory and writes every change as a [`Batch`]; a batch
//! is acknowledged only once it is durable.

use protocol::wire::{AuditEntry, Holder, Sealed};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The cluster-wide revision: grows with every change.
    pub revision: u64,
    /// Sequence number of the last audit entry.
    pub audit_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub value: Sealed,
    pub revision: u64,
    pub create_revision: u64,
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub role: String,
    pub report: Sealed,
    pub revision: u64,
    pub expires_at_ms: u64,
}

/// A semaphore is never deleted: `last_token` must keep growing across releases,
/// expiries and restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSemaphore {
    pub slots: u32,
    pub last_token: u64,
    pub holders: Vec<Holder>,
}

/// Everything stored for one cluster except the audit log, which is read on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterData {
    pub meta: Meta,
    pub records: BTreeMap<String, StoredRecord>,
    pub members: BTreeMap<String, StoredMember>,
    pub semaphores: BTreeMap<String, StoredSemaphore>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Meta(Meta),
    PutRecord(String, StoredRecord),
    DeleteRecord(String),
    PutMember(String, StoredMember),
    DeleteMember(String),
    PutSemaphore(String, StoredSemaphore),
    Audit(AuditEntry),
}

/// The writes of one request to one cluster; applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub cluster: String,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendezvous storage ({backend}): {message}")]
pub struct StoreError {
    pub backend: String,
    pub message: String,
}

pub trait Store: Send + Sync + 'static {
    /// The stored state of `cluster` (empty if it has none yet).
    fn load(&self, cluster: &str) -> Result<ClusterData, StoreError>;

    /// Applies `batches` in order, atomically, and returns only once they are durable
    /// (an acknowledged write survives `kill -9`).
    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError>;

    /// Audit entries of `cluster` with `seq > after`, oldest first, at most `limit`.
    fn audit(&self, cluster: &str, after: u64, limit: usize)
    -> Result<Vec<AuditEntry>, StoreError>;
}
