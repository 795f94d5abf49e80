use crate::support::Server;
use muster_rendezvous::Limits;
use muster_rendezvous::audit::max_concurrent_holders;
use protocol::{AcquireResponse, AuditEvent, ChangeKind, ErrorKind, RetryPolicy, http_client};
use serde_json::json;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn members_records_and_watch_over_https() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("cp-1");

    let r = c
        .register("cp-1", "control-plane", &json!({"phase": "booting"}), TTL)
        .await
        .unwrap();
    assert_eq!(r.revision, 1);
    // An unchanged report is a heartbeat, not a change.
    let r2 = c
        .heartbeat("cp-1", "control-plane", &json!({"phase": "booting"}), TTL)
        .await
        .unwrap();
    assert_eq!(r2.revision, 1);
    assert!(r2.expires_at_ms >= r.expires_at_ms);
    let (_, members) = c.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].report, json!({"phase": "booting"}));

    // Records: create-if-absent, CAS, get, list, delete.
    let rev = c.create("init/done", b"cp-1", None, None).await.unwrap();
    let err = c
        .create("init/done", b"cp-2", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Exists));
    let rec = c.get("init/done").await.unwrap().unwrap();
    assert_eq!((rec.value.as_slice(), rec.revision), (&b"cp-1"[..], rev));
    let err = c
        .cas("init/done", rev + 7, b"x", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::RevisionMismatch));
    let rev2 = c.cas("init/done", rev, b"cp-1!", None, None).await.unwrap();
    assert!(rev2 > rev);
    c.create("join/cp-2", b"a", None, None).await.unwrap();
    c.create("join/cp-3", b"b", None, None).await.unwrap();
    let (_, list) = c.list("join/").await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["join/cp-2", "join/cp-3"]
    );
    c.delete("join/cp-2", None).await.unwrap();
    assert!(c.get("join/cp-2").await.unwrap().is_none());
    let err = c.delete("join/cp-2", None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));

    // A watch wakes on the next change, and only then.
    let (now, _) = c.list("").await.unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.watch(now, Duration::from_secs(20)).await })
    };
    let idle = c.watch(now, Duration::from_millis(200)).await.unwrap();
    assert!(idle.changes.is_empty() && idle.revision == now);
    let made = c.create("late", b"z", None, None).await.unwrap();
    let woke = waiter.await.unwrap().unwrap();
    assert_eq!(woke.revision, made);
    assert_eq!(woke.changes.len(), 1);
    assert_eq!(woke.changes[0].kind, ChangeKind::RecordPut);
    assert_eq!(woke.changes[0].name, "late");
    // Behind: all changes since revision 1, in order.
    let all = c.watch(1, Duration::from_secs(1)).await.unwrap();
    assert!(!all.compacted);
    let revs: Vec<u64> = all.changes.iter().map(|c| c.revision).collect();
    assert_eq!(revs, (2..=made).collect::<Vec<_>>());

    let audit = c.audit(0).await.unwrap();
    let created: Vec<_> = audit
        .iter()
        .filter(|e| e.event == AuditEvent::RecordCreated)
        .map(|e| e.subject.as_str())
        .collect();
    assert_eq!(created, ["init/done", "join/cp-2", "join/cp-3", "late"]);
    server.stop().await;
}

/// Issue 16: `DELETE /members/{name}` (what `muster remove` calls) drops a member at once
/// instead of at its TTL: watchers see `member_forgotten`, the audit log records it, a
/// second forget is `not_found`, and a member that heartbeats again is registered anew.
#[tokio::test]
async fn a_member_is_forgotten_at_once_not_at_its_ttl() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("muster");
    let long = Duration::from_secs(3600);
    for (n, role) in [("cp-1", "control-plane"), ("wk-1", "worker")] {
        c.register(n, role, &json!({"phase": "done"}), long)
            .await
            .unwrap();
    }
    let (before, _) = c.members().await.unwrap();
    let rev = c.forget_member("wk-1").await.unwrap();
    assert_eq!(rev, before + 1);
    let (_, members) = c.members().await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["cp-1"], "forgotten long before its hour ran out");
    let w = c.watch(before, Duration::from_secs(1)).await.unwrap();
    assert_eq!(w.changes.len(), 1);
    assert_eq!(w.changes[0].kind, ChangeKind::MemberForgotten);
    assert_eq!(w.changes[0].name, "wk-1");
    let audit = c.audit(0).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.event == AuditEvent::MemberForgotten && e.subject == "wk-1"),
        "{audit:?}"
    );
    let err = c.forget_member("wk-1").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
    let err = c.forget_member("no such/name").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    c.register("wk-1", "worker", &json!({"phase": "booting"}), long)
        .await
        .unwrap();
    assert_eq!(c.members().await.unwrap().1.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_pin_or_no_pin_is_refused() {
    let server = Server::start(true, Limits::default()).await;
    let wrong = http_client(Some(&"ab".repeat(32)), Duration::from_secs(5)).unwrap();
    let err = server.client_with("x", wrong).members().await.unwrap_err();
    assert!(err.kind().is_none(), "{err}");
    let unpinned = http_client(None, Duration::from_secs(5)).unwrap();
    assert!(server.client_with("x", unpinned).members().await.is_err());
    assert!(server.client("x").members().await.is_ok());
    server.stop().await;
}

/// 100 clients race for a 1-slot semaphore until each has held it once; the audit log
/// shows no two holders at once and one grant per client with growing tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_never_share_a_one_slot_semaphore() {
    // All hundred come from 127.0.0.1, which real nodes never share: the per-IP bucket
    // (16x one client's rate) would throttle them as one. This test is about the
    // semaphore, so the per-IP limit gets out of the way; `security.rs` tests the limits.
    let limits = Limits {
        peer_rate_factor: 1000.0,
        ..Limits::default()
    };
    let server = Server::start(true, limits).await;
    let http = http_client(server.pin.as_deref(), Duration::from_secs(30)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        // Real agents retry a 429 with jittered backoff; 99 watchers woken by every
        // grant can go over the per-client rate, so these clients do too.
        let c = server
            .client_with(&format!("node-{i}"), http.clone())
            .with_retry(RetryPolicy::default());
        tasks.push(tokio::spawn(async move {
            let me = format!("node-{i}");
            loop {
                match c.acquire("cp-join", 1, &me, TTL).await.unwrap() {
                    AcquireResponse::Granted { token, .. } => {
                        // Do "work" that others could observe if they overlapped.
                        c.create(&format!("joined/{me}"), b"1", None, None)
                            .await
                            .unwrap();
                        assert!(c.release("cp-join", &me, token).await.unwrap());
                        return token;
                    }
                    AcquireResponse::Busy { revision, .. } => {
                        c.watch(revision, Duration::from_secs(5)).await.unwrap();
                    }
                }
            }
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    tokens.sort_unstable();
    assert_eq!(tokens, (1..=100).collect::<Vec<u64>>());

    let c = server.client("auditor");
    let mut entries = Vec::new();
    loop {
        let page = c
            .audit(entries.last().map_or(0, |e: &protocol::AuditEntry| e.seq))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let grants = entries
        .iter()
        .filter(|e| e.event == AuditEvent::Granted)
        .count();
    assert_eq!(grants, 100);
    assert_eq!(max_concurrent_holders(&entries, "cp-join"), Ok(1));
    server.stop().await;
}

/// A write fenced by a token that no longer holds the semaphore is refused.
#[tokio::test]
async fn fenced_write_from_a_stale_holder_is_rejected() {
    let server = Server::start(true, Limits::default()).await;
    let old = server.client("cp-1");
    let new = server.client("cp-2");
    let AcquireResponse::Granted { token: t1, .. } =
        old.acquire("init", 1, "cp-1", TTL).await.unwrap()
    else {
        panic!("first acquire must be granted")
    };
    let fence = |token| {
        Some(protocol::Fence {
            semaphore: "init".into(),
            token,
        })
    };
    old.create("init/leader", b"cp-1", None, fence(t1))
        .await
        .unwrap();
    // Re-acquiring while holding is idempotent.
    assert!(matches!(
        old.acquire("init", 1, "cp-1", TTL).await.unwrap(),
        AcquireResponse::Granted { token, .. } if token == t1
    ));
    assert!(old.release("init", "cp-1", t1).await.unwrap());
    let AcquireResponse::Granted { token: t2, .. } =
        new.acquire("init", 1, "cp-2", TTL).await.unwrap()
    else {
        panic!("acquire after release must be granted")
    };
    assert!(t2 > t1);
    let leader = old.get("init/leader").await.unwrap().unwrap();
    for err in [
        old.cas(
            "init/leader",
            leader.revision,
            b"cp-1 again",
            None,
            fence(t1),
        )
        .await
        .unwrap_err(),
        old.create("init/other", b"x", None, fence(t1))
            .await
            .unwrap_err(),
        old.delete("init/leader", fence(t1)).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), Some(ErrorKind::Fenced), "{err}");
    }
    assert_eq!(old.get("init/leader").await.unwrap().unwrap(), leader);
    assert!(old.get("init/other").await.unwrap().is_none());
    new.cas("init/leader", leader.revision, b"cp-2", None, fence(t2))
        .await
        .unwrap();
    // Renewing a lost lease says so.
    let err = old.renew("init", "cp-1", t1, TTL).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotHeld));
    // A semaphore's slot count is set by its first use; only a live member may change it.
    let err = new.acquire("init", 2, "cp-3", TTL).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::SlotsMismatch));
    server.stop().await;
}

/// Issue 16: a rebuilt spec changes a join semaphore's slot count (k3s on SQL grown by a
/// server, `workerJoinCap` raised or lowered). A live member's acquire with the new count
/// resizes it (audited); growing admits more holders at once, shrinking lets holders
/// finish and grants only below the new count; a non-member still gets `slots_mismatch`.
#[tokio::test]
async fn a_member_resizes_a_semaphore_a_stranger_cannot() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("cp-1");
    for n in ["cp-1", "cp-2", "cp-3", "cp-4"] {
        c.register(n, "control-plane", &json!({"phase": "joining"}), TTL)
            .await
            .unwrap();
    }
    let granted = |r: AcquireResponse| match r {
        AcquireResponse::Granted { token, .. } => token,
        AcquireResponse::Busy { holders, .. } => panic!("busy: {holders:?}"),
    };
    let t1 = granted(c.acquire("cp-join", 2, "cp-1", TTL).await.unwrap());
    let t2 = granted(c.acquire("cp-join", 2, "cp-2", TTL).await.unwrap());
    // Not a member: refused, nothing changes.
    let err = c.acquire("cp-join", 3, "stranger", TTL).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::SlotsMismatch), "{err}");
    // Grown by a rebuild: the third is admitted at once.
    let t3 = granted(c.acquire("cp-join", 3, "cp-3", TTL).await.unwrap());
    // Shrunk to 1: nobody loses a slot, but a newcomer waits until none is held.
    let busy = c.acquire("cp-join", 1, "cp-4", TTL).await.unwrap();
    assert!(
        matches!(&busy, AcquireResponse::Busy { holders, .. } if holders.len() == 3),
        "{busy:?}"
    );
    c.renew("cp-join", "cp-1", t1, TTL).await.unwrap();
    for (h, t) in [("cp-1", t1), ("cp-2", t2)] {
        c.release("cp-join", h, t).await.unwrap();
        let r = c.acquire("cp-join", 1, "cp-4", TTL).await.unwrap();
        assert!(matches!(r, AcquireResponse::Busy { .. }), "{r:?}");
    }
    c.release("cp-join", "cp-3", t3).await.unwrap();
    let t4 = granted(c.acquire("cp-join", 1, "cp-4", TTL).await.unwrap());
    assert!(t4 > t3);

    let audit = c.audit(0).await.unwrap();
    let resizes: Vec<_> = audit
        .iter()
        .filter(|e| e.event == AuditEvent::Resized)
        .map(|e| (e.holder.as_deref(), e.previous_slots, e.slots))
        .collect();
    assert_eq!(
        resizes,
        [
            (Some("cp-3"), Some(2), Some(3)),
            (Some("cp-4"), Some(3), Some(1))
        ]
    );
    let proof = muster_rendezvous::audit::grants_within_slots(&audit, "cp-join").unwrap();
    assert_eq!((proof.max, proof.counts), (3, vec![2, 3, 1]));
    server.stop().await;
}
