//! The audit log: every grant, release and expiry of a semaphore slot and every record
//! creation and deletion, with time, revision and fencing token. Written by the service
//! in the same batch as the change it describes; read here.

use crate::error::ApiError;
use crate::service::Service;
use protocol::wire::{AuditEntry, AuditEvent, ErrorKind};

/// Entries of `cluster` after `after`, oldest first, at most one page.
pub async fn read(
    svc: &Service,
    cluster: &str,
    after: u64,
    limit: Option<usize>,
) -> Result<Vec<AuditEntry>, ApiError> {
    let limit = limit
        .unwrap_or(svc.limits().audit_page)
        .min(svc.limits().audit_page);
    let store = svc.store().clone();
    let cluster = cluster.to_string();
    tokio::task::spawn_blocking(move || store.audit(&cluster, after, limit))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("audit reader: {e}")))?
        .map_err(|e| {
            tracing::error!("{e}");
            ApiError::new(ErrorKind::Unavailable, "storage read failed")
        })
}

/// Replays the grants, releases and expiries of `semaphore` and returns the most slots
/// ever held at once, or the first entry that released a token not held. This is how an
/// operator (or a test) proves that holders never overlapped beyond the slot count.
pub fn max_concurrent_holders(
    entries: &[AuditEntry],
    semaphore: &str,
) -> Result<usize, AuditEntry> {
    let mut held = std::collections::BTreeSet::new();
    let mut max = 0;
    for e in entries.iter().filter(|e| e.subject == semaphore) {
        match e.event {
            AuditEvent::Granted => {
                held.insert(e.token);
                max = max.max(held.len());
            }
            AuditEvent::Released | AuditEvent::Expired => {
                if !held.remove(&e.token) {
                    return Err(e.clone());
                }
            }
            AuditEvent::RecordCreated | AuditEvent::RecordDeleted | AuditEvent::MemberForgotten => {
            }
        }
    }
    Ok(max)
}

/// The holder whose fenced write created `record` (e.g. `initialized`): the grant of
/// `semaphore` carrying the token the creation was fenced with. A late node may still be
/// granted the init slot after the cluster was initialized (it then finds the record and
/// releases), so "the last grant" does not name the initializer; the fence token does.
pub fn creator_of(entries: &[AuditEntry], semaphore: &str, record: &str) -> Option<String> {
    let token = entries
        .iter()
        .find(|e| e.event == AuditEvent::RecordCreated && e.subject == record)?
        .token?;
    entries
        .iter()
        .find(|e| {
            e.event == AuditEvent::Granted && e.subject == semaphore && e.token == Some(token)
        })
        .and_then(|e| e.holder.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, event: AuditEvent, token: u64) -> AuditEntry {
        AuditEntry {
            seq,
            time_ms: seq,
            revision: seq,
            event,
            subject: "s".into(),
            holder: Some(format!("h{token}")),
            token: Some(token),
            slots: Some(1),
        }
    }

    #[test]
    fn counts_overlap_and_catches_unknown_release() {
        use AuditEvent::*;
        let serial = [
            e(1, Granted, 1),
            e(2, Released, 1),
            e(3, Granted, 2),
            e(4, Expired, 2),
        ];
        assert_eq!(max_concurrent_holders(&serial, "s"), Ok(1));
        let overlap = [e(1, Granted, 1), e(2, Granted, 2), e(3, Released, 1)];
        assert_eq!(max_concurrent_holders(&overlap, "s"), Ok(2));
        assert_eq!(max_concurrent_holders(&overlap, "other"), Ok(0));
        let bad = [e(1, Released, 7)];
        assert!(max_concurrent_holders(&bad, "s").is_err());
    }

    #[test]
    fn creator_is_the_grant_whose_token_fenced_the_record() {
        use AuditEvent::*;
        let mut created = e(3, RecordCreated, 1);
        created.subject = "initialized".into();
        created.holder = None;
        let mut log = vec![e(1, Granted, 1), e(2, Released, 1), created];
        // A late node granted the slot afterwards is not the creator.
        log.push(e(4, Granted, 2));
        log.push(e(5, Released, 2));
        assert_eq!(creator_of(&log, "s", "initialized").as_deref(), Some("h1"));
        assert_eq!(creator_of(&log, "s", "other"), None);
        assert_eq!(creator_of(&log, "t", "initialized"), None);
    }
}
