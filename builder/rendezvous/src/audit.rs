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
/// operator (or a test) proves that holders never overlapped beyond the slot count. A
/// semaphore that was resized (audit `resized`: a rebuilt spec changed its count) may
/// rightly have held more than its count now: prove it with [`grants_within_slots`].
pub fn max_concurrent_holders(
    entries: &[AuditEntry],
    semaphore: &str,
) -> Result<usize, AuditEntry> {
    replay(entries, semaphore).map(|r| r.max)
}

/// What a replay of one semaphore's audit entries found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The most slots held at once.
    pub max: usize,
    /// The slot counts the semaphore had, in order (more than one after a resize).
    pub counts: Vec<u32>,
    /// Grants made while the slots held (this one included) exceeded the count in force.
    pub overfull: Vec<AuditEntry>,
}

/// Replays `semaphore`'s grants, releases, expiries and resizes: the most slots held at
/// once, the counts it had, and every grant made beyond the count in force at that moment
/// (the count the grant was made under, or a later resize's). Holders kept past a
/// shrink are not overfull; a grant while they still hold slots above the new count is.
/// `Err`: the first entry that released or expired a token not held.
pub fn replay(entries: &[AuditEntry], semaphore: &str) -> Result<Replay, AuditEntry> {
    let mut held = std::collections::BTreeSet::new();
    let mut out = Replay::default();
    let mut count: Option<u32> = None;
    let note = |out: &mut Replay, c: Option<u32>| {
        if let Some(c) = c
            && out.counts.last() != Some(&c)
        {
            out.counts.push(c);
        }
    };
    for e in entries.iter().filter(|e| e.subject == semaphore) {
        match e.event {
            AuditEvent::Granted => {
                count = e.slots.or(count);
                note(&mut out, count);
                held.insert(e.token);
                out.max = out.max.max(held.len());
                if count.is_some_and(|c| held.len() > c as usize) {
                    out.overfull.push(e.clone());
                }
            }
            AuditEvent::Released | AuditEvent::Expired => {
                if !held.remove(&e.token) {
                    return Err(e.clone());
                }
            }
            AuditEvent::Resized => {
                count = e.slots.or(count);
                note(&mut out, count);
            }
            AuditEvent::RecordCreated
            | AuditEvent::RecordDeleted
            | AuditEvent::MemberForgotten
            | AuditEvent::Other => {}
        }
    }
    Ok(out)
}

/// The proof for a semaphore that may have been resized: no grant was ever made beyond
/// the slot count in force at that moment. `Ok` with the replay, `Err` with the first
/// overfull grant (or the first release of a token not held).
pub fn grants_within_slots(entries: &[AuditEntry], semaphore: &str) -> Result<Replay, AuditEntry> {
    let r = replay(entries, semaphore)?;
    match r.overfull.first() {
        Some(e) => Err(e.clone()),
        None => Ok(r),
    }
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
            previous_slots: None,
        }
    }

    fn with_slots(mut e: AuditEntry, slots: u32) -> AuditEntry {
        e.slots = Some(slots);
        e
    }

    fn resized(seq: u64, from: u32, to: u32) -> AuditEntry {
        AuditEntry {
            token: None,
            slots: Some(to),
            previous_slots: Some(from),
            ..e(seq, AuditEvent::Resized, 0)
        }
    }

    #[test]
    fn a_grown_semaphore_admits_more_holders_within_its_new_count() {
        use AuditEvent::*;
        let log = [
            with_slots(e(1, Granted, 1), 2),
            with_slots(e(2, Granted, 2), 2),
            resized(3, 2, 3),
            with_slots(e(4, Granted, 3), 3),
            e(5, Released, 1),
        ];
        let r = grants_within_slots(&log, "s").unwrap();
        assert_eq!((r.max, r.counts), (3, vec![2, 3]));
        assert_eq!(max_concurrent_holders(&log, "s"), Ok(3));
        // The same third grant without the resize is overfull.
        let unresized = [
            log[0].clone(),
            log[1].clone(),
            with_slots(e(4, Granted, 3), 2),
        ];
        assert_eq!(grants_within_slots(&unresized, "s").unwrap_err().seq, 4);
    }

    #[test]
    fn after_a_shrink_holders_finish_and_a_grant_above_the_new_count_is_caught() {
        use AuditEvent::*;
        let ok = [
            with_slots(e(1, Granted, 1), 3),
            with_slots(e(2, Granted, 2), 3),
            resized(3, 3, 1),
            e(4, Released, 1),
            e(5, Expired, 2),
            with_slots(e(6, Granted, 3), 1),
        ];
        let r = grants_within_slots(&ok, "s").unwrap();
        assert_eq!((r.max, r.counts), (2, vec![3, 1]));
        // Granted while one old holder still held a slot above the new count of 1.
        let bad = [
            ok[0].clone(),
            ok[1].clone(),
            ok[2].clone(),
            ok[3].clone(),
            with_slots(e(6, Granted, 3), 1),
        ];
        let r = replay(&bad, "s").unwrap();
        assert_eq!(r.overfull.len(), 1);
        assert!(grants_within_slots(&bad, "s").is_err());
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
