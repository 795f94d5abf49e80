//! Builders of protocol values for tests in this and other crates (feature `testkit`):
//! never compiled into a product binary.

use crate::etcd_view::EtcdMember;
use crate::wire::{AuditEntry, AuditEvent};

/// An etcd member at `ip` (unstarted when `name` is empty, as etcd lists it).
pub fn member(id: u64, name: &str, ip: &str, learner: bool) -> EtcdMember {
    EtcdMember {
        id,
        name: name.into(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: if name.is_empty() {
            Vec::new()
        } else {
            vec![format!("https://{ip}:2379")]
        },
        is_learner: learner,
    }
}

/// An audit entry of semaphore `sem`.
pub fn e(seq: u64, event: AuditEvent, sem: &str, holder: &str, token: u64) -> AuditEntry {
    AuditEntry {
        seq,
        time_ms: seq * 10,
        revision: seq,
        event,
        subject: sem.into(),
        holder: Some(holder.into()),
        token: Some(token),
        slots: Some(2),
        previous_slots: None,
    }
}
