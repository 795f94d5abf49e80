use crate::support::{Captured, Server, contains, dump_dir, now_s, random_secret, raw};
use muster_rendezvous::Limits;
use protocol::http_client;
use protocol::seal::ClusterKeys;
use protocol::wire::{ErrorBody, ErrorKind};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The same signature in other letter cases (all upper; alternating), each different
/// from the original.
fn case_variants(sig: &str) -> Vec<String> {
    let upper = sig.to_ascii_uppercase();
    let mut flip = false;
    let alternating: String = sig
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                flip = !flip;
                if flip { c.to_ascii_uppercase() } else { c }
            } else {
                c
            }
        })
        .collect();
    for v in [&upper, &alternating] {
        assert_ne!(v, sig, "signature {sig} has no hex letters to change");
    }
    vec![upper, alternating]
}

/// Hex is case-insensitive, so a captured request replayed with its signature in another
/// letter case is the same request: refused, and it changes nothing.
#[tokio::test]
async fn a_replay_with_the_signature_in_another_letter_case_is_refused() {
    let server = Server::start(false, Limits::default()).await;
    let http = http_client(None, Duration::from_secs(10)).unwrap();
    let c = server.client("admin");
    let sealed = ClusterKeys::derive(&server.secret).seal("record:k", b"v", [5; 12]);
    let create = serde_json::to_vec(&json!({"key": "k", "value": sealed})).unwrap();

    // A create, captured; the record is then deleted by its owner.
    let captured = Captured::sign(&server, reqwest::Method::POST, "records", &create);
    let r = captured
        .send_with(&http, &captured.signature)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    c.delete("k", None).await.unwrap();
    let (before, _) = c.list("").await.unwrap();
    for sig in case_variants(&captured.signature) {
        let r = captured.send_with(&http, &sig).send().await.unwrap();
        expect(r, 401, ErrorKind::Unauthenticated).await;
    }
    assert!(
        c.get("k").await.unwrap().is_none(),
        "the deleted record came back"
    );
    assert_eq!(
        c.list("").await.unwrap().0,
        before,
        "a replay changed state"
    );

    // A read, captured: its replays are refused too.
    c.create("k2", b"v", None, None).await.unwrap();
    let read = Captured::sign(&server, reqwest::Method::GET, "records?key=k2", b"");
    let r = read.send_with(&http, &read.signature).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for sig in case_variants(&read.signature) {
        let r = read.send_with(&http, &sig).send().await.unwrap();
        expect(r, 401, ErrorKind::Unauthenticated).await;
    }
    server.stop().await;
}

/// A path that is not UTF-8 gets the documented JSON error: 401 without authentication
/// (before the path is judged), 400 `bad_request` with it. Queries and bodies likewise.
#[tokio::test]
async fn bad_paths_queries_and_bodies_get_json_errors_401_first() {
    let server = Server::start(false, Limits::default()).await;
    let http = http_client(None, Duration::from_secs(10)).unwrap();
    let cluster = server.secret.cluster_id();
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let bad_paths = [
        (put.clone(), "members/%FF"),
        (post.clone(), "semaphores/%FF/acquire"),
        (post.clone(), "semaphores/s/%C3%28"),
    ];
    for (method, path) in &bad_paths {
        let url = format!("{}v1/clusters/{cluster}/{path}", server.base);
        let r = http.request(method.clone(), &url).send().await.unwrap();
        expect(r, 401, ErrorKind::Unauthenticated).await;
        let r = raw(
            &server,
            &server.secret,
            method.clone(),
            path,
            b"{}",
            now_s(),
        );
        expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    }
    for query in [
        "records?key=%FF",
        "records?key=a&key=b",
        "watch?after=x",
        "audit?limit=-1",
    ] {
        let r = raw(&server, &server.secret, get.clone(), query, b"", now_s());
        expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    }
    let r = raw(
        &server,
        &server.secret,
        put.clone(),
        "members/m",
        b"\xff\xfe",
        now_s(),
    );
    expect(r.send().await.unwrap(), 400, ErrorKind::BadRequest).await;
    server.stop().await;
}

/// A TCP connection to `addr` from the loopback address `from` (another peer IP).
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Feeds `stream` one byte of `bytes` (then of filler) per step until the server answers
/// or closes; false if it still reads after `steps` steps.
async fn trickle_until_cut_off(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
    steps: usize,
) -> bool {
    let mut buf = [0u8; 256];
    for i in 0..steps {
        let byte = bytes.get(i).copied().unwrap_or(b'x');
        if stream.write_all(&[byte]).await.is_err() {
            return true;
        }
        // Any answer or EOF within the step means the server ended the request.
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(_) => return true,
            Err(_) => continue,
        }
    }
    false
}

/// Slowloris: a client that sends its headers, or its body, one byte at a time is cut
/// off once the read timeout passes, and the server keeps serving.
#[tokio::test]
async fn slow_requests_are_cut_off() {
    let limits = Limits {
        read_timeout_ms: 300,
        ..Limits::default()
    };
    let server = Server::start(false, limits).await;
    let addr = server.base.socket_addrs(|| None).unwrap()[0];
    let head = format!(
        "PUT /v1/clusters/{}/members/m HTTP/1.1\r\nhost: x\r\ncontent-length: 60000\r\n\r\n",
        server.secret.cluster_id()
    );
    // 200 steps of ≥100 ms: far past the 300 ms timeout, still ending by itself.
    let mut slow_body = connect_from("127.0.0.1", addr).await;
    slow_body.write_all(head.as_bytes()).await.unwrap();
    assert!(
        trickle_until_cut_off(&mut slow_body, b"", 200).await,
        "a body trickled one byte per 100 ms kept the connection open"
    );
    let mut slow_head = connect_from("127.0.0.1", addr).await;
    assert!(
        trickle_until_cut_off(&mut slow_head, head.as_bytes(), 200).await,
        "headers trickled one byte per 100 ms kept the connection open"
    );
    server.client("after").members().await.unwrap();
    server.stop().await;
}

/// One peer IP can hold only `max_unauthenticated_per_ip` connections that have not
/// authenticated; more are closed at once, other IPs are unaffected, and an
/// authenticated connection does not count.
#[tokio::test]
async fn unauthenticated_connections_are_capped_per_ip() {
    let limits = Limits {
        max_unauthenticated_per_ip: 3,
        ..Limits::default()
    };
    let server = Server::start(false, limits).await;
    let addr = server.base.socket_addrs(|| None).unwrap()[0];
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.2", addr).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // The fourth is closed without an answer; the bound is far below the header timeout.
    let mut fourth = connect_from("127.0.0.2", addr).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a fourth unauthenticated connection from one IP was kept: {read:?}"
    );
    // Another IP is served.
    server.client("other-ip").members().await.unwrap();
    // Once one idle connection goes, the IP may connect again and, authenticated, its
    // connection no longer counts.
    drop(idle.pop());
    // reqwest is built without a default crypto provider (plain HTTP needs none, but the
    // builder asks for one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let from2 = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let c = server.client_with("same-ip", from2);
    let mut served = false;
    // The server notices the close asynchronously; retry a bounded number of times.
    for _ in 0..100 {
        if c.members().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served,
        "the IP was not served again after a connection closed"
    );
    let mut another = connect_from("127.0.0.2", addr).await;
    another
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = another.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    server.stop().await;
}
