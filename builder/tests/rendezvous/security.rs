use crate::support::{Server, contains, dump_dir, random_secret};
use model::secret::ClusterSecret;
use muster_rendezvous::Limits;
use protocol::http_client;
use protocol::seal::{ClusterKeys, RequestToSign};
use protocol::wire::{
    ErrorBody, ErrorKind, HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw request to `path` (relative to the cluster), signed with `secret`'s key.
fn raw(
    server: &Server,
    secret: &ClusterSecret,
    method: reqwest::Method,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> reqwest::RequestBuilder {
    let keys = ClusterKeys::derive(secret);
    let full = format!("/v1/clusters/{}/{path}", server.secret.cluster_id());
    let nonce = hex::encode(rand::random::<[u8; 8]>());
    let sig = keys.signing_key().sign(&RequestToSign {
        method: method.as_str(),
        path_and_query: &full,
        body,
        timestamp,
        nonce: &nonce,
        client: "raw",
    });
    let http = http_client(server.pin.as_deref(), Duration::from_secs(10)).unwrap();
    http.request(
        method,
        format!("{}{}", server.base.as_str().trim_end_matches('/'), full),
    )
    .header(HEADER_TIMESTAMP, timestamp.to_string())
    .header(HEADER_NONCE, nonce)
    .header(HEADER_CLIENT, "raw")
    .header(HEADER_SIGNATURE, sig)
    .body(body.to_vec())
}

async fn expect(resp: reqwest::Response, status: u16, kind: ErrorKind) {
    assert_eq!(resp.status().as_u16(), status);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.kind, kind, "{}", body.value);
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_change_nothing() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("admin");
    c.create("k", b"v", None, None).await.unwrap();
    let (before, _) = c.list("").await.unwrap();
    let sealed = ClusterKeys::derive(&server.secret).seal("record:evil", b"evil", [3; 12]);
    let create = serde_json::to_vec(&json!({"key": "evil", "value": sealed})).unwrap();
    let post = reqwest::Method::POST;

    // Wrong cluster secret.
    let wrong = random_secret();
    let r = raw(&server, &wrong, post.clone(), "records", &create, now_s());
    expect(r.send().await.unwrap(), 401, ErrorKind::Unauthenticated).await;
    // Missing signature headers.
    let http = http_client(server.pin.as_deref(), Duration::from_secs(10)).unwrap();
    let url = format!(
        "{}v1/clusters/{}/records",
        server.base,
        server.secret.cluster_id()
    );
    let r = http.post(&url).body(create.clone()).send().await.unwrap();
    expect(r, 401, ErrorKind::Unauthenticated).await;
    // Stale timestamp.
    let r = raw(
        &server,
        &server.secret,
        post.clone(),
        "records",
        &create,
        now_s() - 3600,
    );
    expect(r.send().await.unwrap(), 401, ErrorKind::Unauthenticated).await;
    // Body altered after signing.
    let r = raw(
        &server,
        &server.secret,
        post.clone(),
        "records",
        b"{}",
        now_s(),
    )
    .body(create.clone());
    expect(r.send().await.unwrap(), 401, ErrorKind::Unauthenticated).await;
    // A good request works once; its replay is refused.
    let good = raw(
        &server,
        &server.secret,
        post.clone(),
        "records",
        &create,
        now_s(),
    );
    let replay = good.try_clone().unwrap();
    assert_eq!(good.send().await.unwrap().status().as_u16(), 201);
    expect(
        replay.send().await.unwrap(),
        401,
        ErrorKind::Unauthenticated,
    )
    .await;
    // Unknown cluster: nobody has its key.
    let other = format!(
        "{}v1/clusters/{}/records?prefix=",
        server.base,
        "0".repeat(24)
    );
    let r = http.get(&other).send().await.unwrap();
    expect(r, 401, ErrorKind::Unauthenticated).await;

    let (after, list) = c.list("").await.unwrap();
    assert_eq!(
        after,
        before + 1,
        "only the one good request changed anything"
    );
    assert_eq!(list.len(), 2);
    server.stop().await;
}

/// The replay memory is in-process: a request signed before this process started may have
/// been accepted by the previous one, so it gets a retryable 503 and changes nothing, while
/// the same request signed afresh goes through.
#[tokio::test]
async fn a_request_signed_before_the_service_started_is_refused() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("admin");
    let (before, _) = c.list("").await.unwrap();
    let sealed = ClusterKeys::derive(&server.secret).seal("record:old", b"old", [4; 12]);
    let create = serde_json::to_vec(&json!({"key": "old", "value": sealed})).unwrap();
    // Signed 2 s ago (well inside the replay window), i.e. before this process started.
    let signed_before = now_s() - 2;
    let r = raw(
        &server,
        &server.secret,
        reqwest::Method::POST,
        "records",
        &create,
        signed_before,
    );
    expect(r.send().await.unwrap(), 503, ErrorKind::Unavailable).await;
    assert_eq!(
        c.list("").await.unwrap().0,
        before,
        "a refused request changed state"
    );
    let r = raw(
        &server,
        &server.secret,
        reqwest::Method::POST,
        "records",
        &create,
        now_s(),
    );
    assert_eq!(r.send().await.unwrap().status().as_u16(), 201);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_and_limits_get_clear_4xx() {
    let limits = Limits {
        max_body_bytes: 1024,
        max_records: 3,
        max_members: 2,
        rate_per_second: 1.0,
        rate_burst: 40.0,
        ..Limits::default()
    };
    let server = Server::start(true, limits).await;
    let s = &server.secret;
    let post = reqwest::Method::POST;
    let r = raw(&server, s, post.clone(), "records", b"{not json", now_s());
    expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    let r = raw(
        &server,
        s,
        post.clone(),
        "records",
        br#"{"key":"a b","value":"AA"}"#,
        now_s(),
    );
    expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    let r = raw(&server, s, post.clone(), "nowhere", b"", now_s());
    expect(r.send().await.unwrap(), 404, ErrorKind::NotFound).await;
    let r = raw(&server, s, reqwest::Method::GET, "records", b"", now_s());
    expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    let big = vec![b'x'; 4096];
    let r = raw(&server, s, post.clone(), "records", &big, now_s());
    expect(r.send().await.unwrap(), 413, ErrorKind::TooLarge).await;

    let c = server.client("n");
    for i in 0..3 {
        c.create(&format!("r{i}"), b"v", None, None).await.unwrap();
    }
    let err = c.create("r3", b"v", None, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Quota));
    let ttl = Duration::from_secs(30);
    c.register("m1", "worker", &json!({}), ttl).await.unwrap();
    c.register("m2", "worker", &json!({}), ttl).await.unwrap();
    let err = c
        .register("m3", "worker", &json!({}), ttl)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Quota));
    let err = c
        .register("m1", "worker", &json!({}), Duration::from_secs(999_999))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));
    let err = c.acquire("s", 0, "m1", ttl).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest));

    // One client over its rate is told so; another client is unaffected.
    let mut limited = None;
    for _ in 0..60 {
        if let Err(e) = c.get("r0").await {
            limited = Some(e);
            break;
        }
    }
    assert_eq!(limited.and_then(|e| e.kind()), Some(ErrorKind::RateLimited));
    assert!(server.client("other").get("r0").await.unwrap().is_some());
    server.stop().await;
}

type Capture = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Relays TCP connections to `target`, recording every byte in both directions.
async fn recording_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Capture) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Capture::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, log2.clone()));
            tokio::spawn(pump(ro, wi, log2.clone()));
        }
    });
    (addr, log)
}

async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    log: Capture,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Over plain HTTP (so the capture is readable), neither the bytes on the wire nor the
/// data dir contain a stored secret; only ciphertext.
#[tokio::test]
async fn no_plaintext_on_the_wire_or_on_disk() {
    let server = Server::start(false, Limits::default()).await;
    let target = server.base.socket_addrs(|| None).unwrap()[0];
    let (proxy, capture) = recording_proxy(target).await;
    let http = http_client(None, Duration::from_secs(10)).unwrap();
    let c = protocol::Client::new(
        format!("http://{proxy}").parse().unwrap(),
        http,
        &server.secret,
        "cp-1",
    )
    .unwrap();
    let token = b"abcdef.0123456789abcdef-join-token-PLAINTEXT";
    let report_secret = "report-secret-PLAINTEXT-42";
    c.create("join/token", token, None, None).await.unwrap();
    let rev = c.get("join/token").await.unwrap().unwrap().revision;
    c.cas("join/token", rev, token, None, None).await.unwrap();
    c.register(
        "cp-1",
        "control-plane",
        &json!({"cert": report_secret}),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let (_, members) = c.members().await.unwrap();
    assert_eq!(members[0].report["cert"], report_secret);
    assert_eq!(c.get("join/token").await.unwrap().unwrap().value, token);

    let wire = capture.lock().unwrap().clone();
    // The capture works: it holds the (public) record key and member name.
    assert!(contains(&wire, b"join/token") || contains(&wire, b"join%2Ftoken"));
    assert!(contains(&wire, b"cp-1"));
    assert!(!contains(&wire, token), "token on the wire");
    assert!(
        !contains(&wire, report_secret.as_bytes()),
        "report on the wire"
    );
    let data = server.stop().await;
    let disk = dump_dir(data.path());
    assert!(contains(&disk, b"join/token"), "the dump holds the store");
    assert!(!contains(&disk, token), "token on disk");
    assert!(!contains(&disk, report_secret.as_bytes()), "report on disk");
    assert!(!contains(&disk, &hex::encode(token).into_bytes()));
}
