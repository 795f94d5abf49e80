//! Property tests of every route through the router without a socket (`oneshot`):
//! arbitrary methods, paths, queries, headers, bodies and signatures. Whatever arrives,
//! the service does not panic, every error is the documented JSON `{kind, value}` with
//! the kind's status, and a request without valid authentication changes nothing in the
//! store. Cases default to a few dozen (seconds in CI); `PROPTEST_CASES=N` raises them.

use crate::support::random_secret;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use muster_rendezvous::store::ClusterData;
use muster_rendezvous::{Limits, RedbStore, Service, Store, SystemClock, app, keys};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use protocol::seal::{ClusterKeys, RequestToSign};
use protocol::wire::{
    AuditEntry, ErrorBody, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tower::ServiceExt as _;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A service over a fresh store with one served cluster holding a record, a member and a
/// held semaphore, so deletes, CAS and releases have something to hit.
struct Rig {
    rt: tokio::runtime::Runtime,
    app: Router,
    store: Arc<RedbStore>,
    keys: ClusterKeys,
    n: u64,
    _dir: tempfile::TempDir,
}

type Snapshot = (ClusterData, Vec<AuditEntry>);

impl Rig {
    fn new() -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = random_secret();
        keys::install(&dir.path().join("keys"), &secret).unwrap();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        let limits = Limits {
            rate_per_second: 1e9,
            rate_burst: 1e9,
            // A watch that waits would only slow the cases down.
            max_watch_ms: 10,
            ..Limits::default()
        };
        let svc = rt.block_on(async {
            Service::new(
                store.clone(),
                keys::KeyDir::new(dir.path().join("keys")),
                Arc::new(SystemClock),
                limits,
            )
        });
        let mut rig = Rig {
            rt,
            app: app(svc),
            store,
            keys: ClusterKeys::derive(&secret),
            n: 0,
            _dir: dir,
        };
        let sealed = rig.keys.seal("record:r", b"v", [1; 12]);
        let day = 24 * 3600 * 1000;
        for (method, path, body) in [
            (
                "POST",
                "records",
                serde_json::json!({"key": "r", "value": sealed}),
            ),
            (
                "PUT",
                "members/m",
                serde_json::json!({"role": "w", "report": sealed, "ttl_ms": day}),
            ),
            (
                "POST",
                "semaphores/s/acquire",
                serde_json::json!({"slots": 1, "holder": "h", "ttl_ms": day}),
            ),
        ] {
            let path = format!("/v1/clusters/{}/{path}", rig.keys.cluster_id());
            let body = serde_json::to_vec(&body).unwrap();
            let req = rig.signed(method, &path, &body, now_s(), "seed", None);
            let (status, _) = rig.send(req);
            assert!(status.is_success(), "seeding {path}: {status}");
        }
        rig
    }

    /// A request signed with this cluster's key (or the signature given).
    fn signed(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp: u64,
        client: &str,
        signature: Option<String>,
    ) -> Request<Body> {
        self.n += 1;
        let nonce = format!("n{}", self.n);
        let sig = signature.unwrap_or_else(|| {
            self.keys.signing_key().sign(&RequestToSign {
                method,
                path_and_query: path,
                body,
                timestamp,
                nonce: &nonce,
                client,
            })
        });
        Request::builder()
            .method(method)
            .uri(path)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, nonce)
            .header(HEADER_CLIENT, client)
            .header(HEADER_SIGNATURE, sig)
            .body(Body::from(body.to_vec()))
            .unwrap()
    }

    fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, body.to_vec())
        })
    }

    fn snapshot(&self) -> Snapshot {
        let id = self.keys.cluster_id();
        (
            self.store.load(id).unwrap(),
            self.store.audit(id, 0, usize::MAX).unwrap(),
        )
    }
}

/// An error answer must be the documented JSON with the kind's own status.
fn check_error_shape(status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    let parsed: Result<ErrorBody, _> = serde_json::from_slice(body);
    let Ok(e) = parsed else {
        return Err(TestCaseError::fail(format!(
            "{status} with a body that is not {{kind, value}}: {:?}",
            String::from_utf8_lossy(body)
        )));
    };
    prop_assert_eq!(e.kind.status(), status.as_u16(), "{}", e.value);
    Ok(())
}

/// A path segment: unreserved characters and percent escapes (also of bytes that are not
/// UTF-8 on their own).
fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9._~-]",
            1 => "%[0-9A-Fa-f]{2}",
            1 => Just("%FF".to_string()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("key".to_string()),
                Just("prefix".to_string()),
                Just("after".to_string()),
                Just("timeout_ms".to_string()),
                Just("limit".to_string()),
                segment(),
            ],
            prop_oneof![segment(), any::<u64>().prop_map(|n| n.to_string())],
        ),
        0..3,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// A route of protocol v1 (or a near miss) under `cluster`.
fn path(cluster: String) -> impl Strategy<Value = String> {
    let cluster = prop_oneof![
        3 => Just(cluster),
        1 => "[0-9a-f]{24}",
        1 => segment(),
    ];
    let tail = prop_oneof![
        Just("members".to_string()),
        segment().prop_map(|s| format!("members/{s}")),
        Just("records".to_string()),
        query().prop_map(|q| format!("records?{q}")),
        (
            segment(),
            prop_oneof![
                Just("acquire".to_string()),
                Just("renew".to_string()),
                Just("release".to_string()),
                segment(),
            ]
        )
            .prop_map(|(s, a)| format!("semaphores/{s}/{a}")),
        query().prop_map(|q| format!("watch?{q}")),
        query().prop_map(|q| format!("audit?{q}")),
        segment(),
    ];
    (cluster, tail).prop_map(|(c, t)| format!("/v1/clusters/{c}/{t}"))
}

fn method() -> impl Strategy<Value = &'static str> {
    // Not HEAD: its answers have no body by definition.
    prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
}

/// Bodies the routes accept (so a replay or a forgery would change something) and
/// arbitrary bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let sealed = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let day = 24 * 3600 * 1000u64;
    prop_oneof![
        Just(br#"{"key":"r"}"#.to_vec()),
        Just(format!(r#"{{"key":"new","value":"{sealed}"}}"#).into_bytes()),
        Just(format!(r#"{{"key":"r","expected_revision":1,"value":"{sealed}"}}"#).into_bytes()),
        Just(format!(r#"{{"role":"x","report":"{sealed}","ttl_ms":{day}}}"#).into_bytes()),
        Just(format!(r#"{{"slots":1,"holder":"h","ttl_ms":{day}}}"#).into_bytes()),
        Just(r#"{"holder":"h","token":1}"#.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// How a request fails to authenticate.
#[derive(Debug, Clone)]
enum Bad {
    /// 64 random hex digits.
    Forged(String),
    /// Signed with another cluster's key.
    OtherKey,
    /// Signed correctly but an hour old.
    Stale,
    /// The signature of another body.
    Tampered,
    /// Accepted once, then replayed with the signature's letters in the given cases.
    Replayed(Vec<bool>),
    /// An arbitrary (printable) signature header.
    Garbage(String),
    /// The headers missing, or arbitrary printable values in them.
    Headers(Option<String>, Option<String>, Option<String>),
}

fn bad() -> impl Strategy<Value = Bad> {
    let printable = "[!-~]{0,80}";
    prop_oneof![
        "[0-9a-fA-F]{64}".prop_map(Bad::Forged),
        Just(Bad::OtherKey),
        Just(Bad::Stale),
        Just(Bad::Tampered),
        prop::collection::vec(any::<bool>(), 64).prop_map(Bad::Replayed),
        printable.prop_map(Bad::Garbage),
        (
            prop::option::of(printable),
            prop::option::of(printable),
            prop::option::of(printable)
        )
            .prop_map(|(t, n, c)| Bad::Headers(t, n, c)),
    ]
}

#[test]
fn requests_without_valid_authentication_change_nothing_and_get_json_errors() {
    let mut rig = Rig::new();
    let cluster = rig.keys.cluster_id().to_string();
    let strategy = (method(), path(cluster), body(), bad(), "[a-z0-9-]{1,12}");
    let rig = std::cell::RefCell::new(&mut rig);
    let result = TestRunner::new(config()).run(&strategy, |(method, path, body, bad, client)| {
        let mut rig = rig.borrow_mut();
        let now = now_s();
        let req = match bad {
            Bad::Forged(sig) | Bad::Garbage(sig) => {
                rig.signed(method, &path, &body, now, &client, Some(sig))
            }
            Bad::OtherKey => {
                let other = ClusterKeys::derive(&random_secret());
                let sig = other.signing_key().sign(&RequestToSign {
                    method,
                    path_and_query: &path,
                    body: &body,
                    timestamp: now,
                    nonce: "other",
                    client: &client,
                });
                let mut req = rig.signed(method, &path, &body, now, &client, Some(sig));
                req.headers_mut()
                    .insert(HEADER_NONCE, "other".parse().unwrap());
                req
            }
            Bad::Stale => rig.signed(method, &path, &body, now - 3600, &client, None),
            Bad::Tampered => {
                let mut req = rig.signed(method, &path, b"{}", now, &client, None);
                *req.body_mut() = Body::from(body.clone());
                if body == b"{}" {
                    return Ok(());
                }
                req
            }
            Bad::Replayed(cases) => {
                let first = rig.signed(method, &path, &body, now, &client, None);
                let headers = first.headers().clone();
                let (status, answer) = rig.send(first);
                if !status.is_success() {
                    check_error_shape(status, &answer)?;
                }
                let sig = headers[HEADER_SIGNATURE].to_str().unwrap();
                let respelled: String = sig
                    .chars()
                    .zip(cases)
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                    .collect();
                let mut req = Request::builder()
                    .method(method)
                    .uri(&path)
                    .body(Body::from(body.clone()))
                    .unwrap();
                *req.headers_mut() = headers;
                req.headers_mut()
                    .insert(HEADER_SIGNATURE, respelled.parse().unwrap());
                req
            }
            Bad::Headers(t, n, c) => {
                let mut req = rig.signed(method, &path, &body, now, &client, None);
                let h = req.headers_mut();
                for (name, value) in [(HEADER_TIMESTAMP, t), (HEADER_NONCE, n), (HEADER_CLIENT, c)]
                {
                    match value {
                        None => {
                            h.remove(name);
                        }
                        Some(v) => {
                            h.insert(name, v.parse().unwrap());
                        }
                    }
                }
                // The values may, rarely, be the signed ones: then it is a valid request.
                h.remove(HEADER_SIGNATURE);
                req
            }
        };
        let before = rig.snapshot();
        let (status, answer) = rig.send(req);
        prop_assert!(
            !status.is_success(),
            "{method} {path}: {status} without valid auth"
        );
        check_error_shape(status, &answer)?;
        prop_assert!(
            rig.snapshot() == before,
            "{method} {path} changed the store"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn signed_requests_of_any_shape_get_json_answers() {
    let mut rig = Rig::new();
    let cluster = rig.keys.cluster_id().to_string();
    let strategy = (method(), path(cluster), body(), "[!-~]{1,20}");
    let rig = std::cell::RefCell::new(&mut rig);
    let result = TestRunner::new(config()).run(&strategy, |(method, path, body, client)| {
        let mut rig = rig.borrow_mut();
        let req = rig.signed(method, &path, &body, now_s(), &client, None);
        let (status, answer) = rig.send(req);
        if status.is_success() {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&answer);
            prop_assert!(
                parsed.is_ok(),
                "{method} {path}: {status} with a non-JSON body"
            );
        } else {
            check_error_shape(status, &answer)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
