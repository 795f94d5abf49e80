//! Who holds a semaphore's slots, replayed from the audit log: a grant counts until its
//! token is released or expired. One copy, used by `nodeagent status` and `muster status`.

use crate::wire::{AuditEntry, AuditEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotHolder {
    pub holder: String,
    pub token: u64,
    /// When the slot was granted (ms since the Unix epoch, the service's clock).
    pub since_ms: u64,
}

/// Slots of `semaphore` granted and not released or expired, in token order.
pub fn holders_from_audit(entries: &[AuditEntry], semaphore: &str) -> Vec<SlotHolder> {
    let mut held: BTreeMap<u64, SlotHolder> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.subject == semaphore) {
        let Some(token) = e.token else { continue };
        match e.event {
            AuditEvent::Granted => {
                held.insert(
                    token,
                    SlotHolder {
                        holder: e.holder.clone().unwrap_or_default(),
                        token,
                        since_ms: e.time_ms,
                    },
                );
            }
            AuditEvent::Released | AuditEvent::Expired => {
                held.remove(&token);
            }
            AuditEvent::RecordCreated
            | AuditEvent::RecordDeleted
            | AuditEvent::MemberForgotten
            | AuditEvent::Resized
            | AuditEvent::Other => {}
        }
    }
    held.into_values().collect()
}

/// A change of a semaphore's slot count: a live member acquired with another count
/// (a rebuilt spec grew or shrank the cluster; audit `resized`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resize {
    pub semaphore: String,
    pub from: u32,
    pub to: u32,
    /// The member whose acquire carried the new count.
    pub by: String,
    /// When (ms since the Unix epoch, the service's clock).
    pub at_ms: u64,
}

/// Every resize of `semaphore`, oldest first. An entry without both counts (written
/// by a service that did not record them) is skipped: there is nothing true to show.
pub fn resizes_from_audit(entries: &[AuditEntry], semaphore: &str) -> Vec<Resize> {
    entries
        .iter()
        .filter(|e| e.subject == semaphore && e.event == AuditEvent::Resized)
        .filter_map(|e| {
            Some(Resize {
                semaphore: semaphore.to_string(),
                from: e.previous_slots?,
                to: e.slots?,
                by: e.holder.clone().unwrap_or_default(),
                at_ms: e.time_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::e;

    #[test]
    fn holders_are_grants_not_released_or_expired() {
        let log = [
            e(1, AuditEvent::Granted, "worker-join", "w-1", 1),
            e(2, AuditEvent::Granted, "worker-join", "w-2", 2),
            e(3, AuditEvent::Granted, "cp-join", "cp-2", 1),
            e(4, AuditEvent::Released, "worker-join", "w-1", 1),
            e(5, AuditEvent::Granted, "worker-join", "w-3", 3),
            e(6, AuditEvent::Expired, "cp-join", "cp-2", 1),
            e(7, AuditEvent::RecordCreated, "cp-join", "x", 9),
        ];
        let w: Vec<_> = holders_from_audit(&log, "worker-join")
            .into_iter()
            .map(|h| h.holder)
            .collect();
        assert_eq!(w, ["w-2", "w-3"]);
        assert_eq!(holders_from_audit(&log, "worker-join")[0].since_ms, 20);
        assert!(holders_from_audit(&log, "cp-join").is_empty());
        assert!(holders_from_audit(&[], "cp-join").is_empty());
    }

    #[test]
    fn a_regrant_of_the_same_semaphore_is_held_again() {
        let log = [
            e(1, AuditEvent::Granted, "cp-join", "cp-2", 1),
            e(2, AuditEvent::Released, "cp-join", "cp-2", 1),
            e(3, AuditEvent::Granted, "cp-join", "cp-3", 2),
        ];
        let h = holders_from_audit(&log, "cp-join");
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].holder.as_str(), h[0].token), ("cp-3", 2));
    }

    #[test]
    fn resizes_are_the_resized_entries_of_that_semaphore_in_order() {
        let resized = |seq, sem: &str, by: &str, from, to| AuditEntry {
            slots: Some(to),
            previous_slots: from,
            token: None,
            ..e(seq, AuditEvent::Resized, sem, by, 0)
        };
        let log = [
            e(1, AuditEvent::Granted, "cp-join", "cp-2", 1),
            resized(2, "cp-join", "cp-4", Some(1), 2),
            resized(3, "worker-join", "w-9", Some(2), 5),
            resized(4, "cp-join", "cp-1", Some(2), 1),
            // No previous count recorded: nothing true to show.
            resized(5, "cp-join", "cp-5", None, 3),
        ];
        let r = resizes_from_audit(&log, "cp-join");
        let seen: Vec<_> = r.iter().map(|r| (r.by.as_str(), r.from, r.to)).collect();
        assert_eq!(seen, [("cp-4", 1, 2), ("cp-1", 2, 1)]);
        assert_eq!(r[0].at_ms, 20);
        assert_eq!(r[0].semaphore, "cp-join");
        assert!(resizes_from_audit(&log, "init").is_empty());
    }
}
