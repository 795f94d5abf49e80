//! Expiry under tokio's paused clock: the service runs on a `TokioClock`, requests go
//! through `app(...).oneshot` (no sockets, so the clock moves only when told).

use crate::support::random_secret;
use axum::body::Body;
use axum::http::Request;
use muster_rendezvous::{self, Clock, Limits, RedbStore, Service, TokioClock, keys};
use protocol::seal::{ClusterKeys, RequestToSign};
use protocol::wire::{
    AcquireResponse, AuditResponse, ChangeKind, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, MembersResponse, WatchResponse,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

struct Rig {
    svc: Service,
    keys: ClusterKeys,
    clock: TokioClock,
    _dir: tempfile::TempDir,
    n: u64,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let secret = random_secret();
        keys::install(&dir.path().join("keys"), &secret).unwrap();
        let clock = TokioClock::new();
        let svc = Service::new(
            Arc::new(RedbStore::open(dir.path()).unwrap()),
            keys::KeyDir::new(dir.path().join("keys")),
            Arc::new(clock),
            Limits::default(),
        );
        Rig {
            svc,
            keys: ClusterKeys::derive(&secret),
            clock,
            _dir: dir,
            n: 0,
        }
    }

    async fn call<T: DeserializeOwned>(&mut self, method: &str, path: &str, body: Value) -> T {
        self.n += 1;
        let full = format!("/v1/clusters/{}/{path}", self.keys.cluster_id());
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        let nonce = format!("n{}", self.n);
        let timestamp = self.clock.now_ms() / 1000;
        let sig = self.keys.signing_key().sign(&RequestToSign {
            method,
            path_and_query: &full,
            body: &body,
            timestamp,
            nonce: &nonce,
            client: "test",
        });
        let req = Request::builder()
            .method(method)
            .uri(&full)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, nonce)
            .header(HEADER_CLIENT, "test")
            .header(HEADER_SIGNATURE, sig)
            .body(Body::from(body))
            .unwrap();
        let resp = muster_rendezvous::app(self.svc.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn acquire(&mut self, holder: &str, ttl_ms: u64) -> AcquireResponse {
        let body = json!({"slots": 1, "holder": holder, "ttl_ms": ttl_ms});
        self.call("POST", "semaphores/init/acquire", body).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_stops_renewing_loses_its_slot_at_the_ttl() {
    let mut rig = Rig::new();
    let AcquireResponse::Granted { token: t1, .. } = rig.acquire("cp-1", 10_000).await else {
        panic!("first acquire is granted")
    };
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(matches!(
        rig.acquire("cp-2", 10_000).await,
        AcquireResponse::Busy { .. }
    ));
    tokio::time::advance(Duration::from_millis(1)).await;
    let AcquireResponse::Granted { token: t2, .. } = rig.acquire("cp-2", 10_000).await else {
        panic!("the slot is free once the TTL ran out")
    };
    assert!(t2 > t1);
    // Renewing keeps a slot past its first TTL.
    tokio::time::advance(Duration::from_secs(8)).await;
    let body = json!({"holder": "cp-2", "token": t2, "ttl_ms": 10_000});
    let _: Value = rig.call("POST", "semaphores/init/renew", body).await;
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(matches!(
        rig.acquire("cp-3", 10_000).await,
        AcquireResponse::Busy { .. }
    ));

    let audit: AuditResponse = rig.call("GET", "audit", Value::Null).await;
    let events: Vec<_> = audit.entries.iter().map(|e| (e.event, e.token)).collect();
    use protocol::wire::AuditEvent::*;
    assert_eq!(
        events,
        [
            (Granted, Some(t1)),
            (Expired, Some(t1)),
            (Granted, Some(t2))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn members_and_records_expire_and_watchers_hear_of_it() {
    let mut rig = Rig::new();
    let report = rig.keys.seal("member:w1", b"{}", [1; 12]);
    let body = json!({"role": "worker", "report": report, "ttl_ms": 5_000});
    let _: Value = rig.call("PUT", "members/w1", body).await;
    let value = rig.keys.seal("record:lease", b"x", [2; 12]);
    let body = json!({"key": "lease", "value": value, "ttl_ms": 3_000});
    let created: Value = rig.call("POST", "records", body).await;
    let rev = created["revision"].as_u64().unwrap();

    // A watcher is woken by the background sweep when the record's TTL runs out.
    let watcher = {
        let svc = rig.svc.clone();
        let cell = svc.cluster(rig.keys.cluster_id()).unwrap();
        tokio::spawn(async move { cell.watch(&svc, rev, Duration::from_secs(60)).await })
    };
    tokio::time::advance(Duration::from_millis(3_000)).await;
    rig.svc.sweep_all().await;
    let woke: WatchResponse = watcher.await.unwrap();
    assert_eq!(woke.changes.len(), 1);
    assert_eq!(woke.changes[0].kind, ChangeKind::RecordExpired);
    assert_eq!(woke.changes[0].name, "lease");

    let members: MembersResponse = rig.call("GET", "members", Value::Null).await;
    assert_eq!(members.members.len(), 1);
    tokio::time::advance(Duration::from_millis(2_000)).await;
    let members: MembersResponse = rig.call("GET", "members", Value::Null).await;
    assert!(members.members.is_empty());
    let w: WatchResponse = rig
        .call(
            "GET",
            &format!("watch?after={rev}&timeout_ms=0"),
            Value::Null,
        )
        .await;
    let kinds: Vec<_> = w.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::RecordExpired, ChangeKind::MemberExpired]
    );
}
