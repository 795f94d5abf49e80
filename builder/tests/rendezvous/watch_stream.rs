//! The streaming watch (`watch?stream=true`, issue 17): one request answered by a line
//! per change, a keep-alive line when the cluster is quiet, the end at shutdown; and the
//! client's `watch` reading it across calls without losing or repeating a change, and
//! falling back to long-polls where a server refuses the stream.

use crate::support::{Server, now_s, raw};
use muster_rendezvous::Limits;
use protocol::wire::WATCH_STREAM_CONTENT_TYPE;
use protocol::{Client, WatchResponse, http_client};
use std::time::Duration;

/// The next line of a stream being read, as a watch answer (`None`: it ended).
async fn next_line(resp: &mut reqwest::Response, buf: &mut Vec<u8>) -> Option<WatchResponse> {
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            return Some(serde_json::from_slice(&line).unwrap());
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("a line or the end within 10 s")
            .unwrap()?;
        buf.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn one_request_answers_change_after_change_keeps_alive_and_ends_at_shutdown() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("writer");
    let first = c.create("a", b"1", None, None).await.unwrap();
    // From before the first change: answered at once with it. `timeout_ms` under the
    // minimum keep-alive interval is raised to it (a stream is not a busy loop).
    let mut resp = raw(
        &server,
        &server.secret,
        reqwest::Method::GET,
        "watch?after=0&timeout_ms=1&stream=true",
        b"",
        now_s(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        WATCH_STREAM_CONTENT_TYPE
    );
    let mut buf = Vec::new();
    let line = next_line(&mut resp, &mut buf).await.unwrap();
    assert_eq!((line.revision, line.changes.len()), (first, 1));
    assert_eq!(line.changes[0].name, "a");

    // Each later change on the same response, only the changes after the line before.
    let second = c.create("b", b"2", None, None).await.unwrap();
    let line = next_line(&mut resp, &mut buf).await.unwrap();
    assert_eq!(line.revision, second);
    assert_eq!(
        line.changes
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );

    // Quiet: a keep-alive line (no changes, the same revision) within the keep-alive
    // interval (1 s) and not before half of it.
    let quiet = std::time::Instant::now();
    let line = next_line(&mut resp, &mut buf).await.unwrap();
    assert_eq!((line.revision, line.changes.len()), (second, 0));
    assert!(!line.compacted);
    let silent = quiet.elapsed();
    assert!(silent >= Duration::from_millis(400), "{silent:?}");
    assert!(silent <= Duration::from_millis(2500), "{silent:?}");

    // The service stopping ends the stream instead of leaving it hanging.
    let stopping = tokio::spawn(server.stop());
    assert!(next_line(&mut resp, &mut buf).await.is_none());
    stopping.await.unwrap();
}

/// Watches following each other from the revision the last returned read one stream;
/// changes made between calls wait on it and are all returned, in order, once each.
#[tokio::test]
async fn the_client_reads_every_change_once_across_calls_and_long_polls_alike() {
    let server = Server::start(true, Limits::default()).await;
    let writer = server.client("writer");
    for (name, client) in [
        ("streams", server.client("streams")),
        ("polls", server.client("polls").long_poll_watches()),
    ] {
        let (start, _) = writer.list("").await.unwrap();
        let mut after = start;
        let mut seen = Vec::new();
        for round in 0..4 {
            // Several changes per round, some made while no call is waiting.
            for i in 0..3 {
                writer
                    .create(&format!("{name}/{round}-{i}"), b"x", None, None)
                    .await
                    .unwrap();
            }
            let (now, _) = writer.list("").await.unwrap();
            while after < now {
                let w = client.watch(after, Duration::from_secs(5)).await.unwrap();
                assert!(!w.compacted);
                assert!(
                    w.revision > after,
                    "{} did not move past {after}",
                    w.revision
                );
                seen.extend(w.changes.iter().map(|c| c.revision));
                after = w.revision;
            }
        }
        assert_eq!(seen, ((start + 1)..=after).collect::<Vec<_>>(), "{name}");
        // Quiet: a call returns its own timeout's empty answer (the stream's keep-alive
        // interval is longer), from the same revision.
        let idle = client
            .watch(after, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!((idle.revision, idle.changes.len()), (after, 0));
    }
    server.stop().await;
}

/// Calls that go on from the revision the last returned cost no request: a client
/// allowed 3 requests (its name's burst, no refill to speak of) watches 8 changes.
#[tokio::test]
async fn following_calls_read_the_open_stream_without_a_request_each() {
    let limits = Limits {
        rate_per_second: 0.001,
        rate_burst: 3.0,
        peer_rate_factor: 1000.0,
        ..Limits::default()
    };
    let server = Server::start(true, limits).await;
    let watcher = server.client("watcher");
    let mut after = server.client("reader").list("").await.unwrap().0;
    for round in 0..8 {
        // A writer of its own each round, within the burst.
        let made = server
            .client(&format!("writer-{round}"))
            .create(&format!("r/{round}"), b"x", None, None)
            .await
            .unwrap();
        let w = watcher.watch(after, Duration::from_secs(5)).await.unwrap();
        assert_eq!(w.revision, made);
        after = w.revision;
    }
    server.stop().await;
}

/// A client whose revision is ahead of the service (a new or restored rendezvous) is told
/// at once that it must re-read, as a long-poll tells it, not left waiting on its stream.
#[tokio::test]
async fn a_revision_ahead_of_the_service_is_answered_compacted_at_once() {
    let server = Server::start(true, Limits::default()).await;
    let c = server.client("ahead");
    let now = c.create("a", b"1", None, None).await.unwrap();
    let started = std::time::Instant::now();
    let w = c.watch(now + 1000, Duration::from_secs(20)).await.unwrap();
    assert!(w.compacted, "{w:?}");
    assert!(w.changes.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // From the revision it was given, the client watches on (a new stream).
    let next = c.create("b", b"2", None, None).await.unwrap();
    let w = c.watch(w.revision, Duration::from_secs(5)).await.unwrap();
    assert_eq!((w.revision, w.compacted), (next, false));
    server.stop().await;
}

/// A server older than the streaming watch answers `stream=true` with 400 (an unknown
/// query field): the client long-polls from then on, and the caller sees only answers.
#[tokio::test]
async fn a_server_without_streams_is_long_polled() {
    use axum::extract::RawQuery;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (streams, polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = {
        let (streams, polls) = (streams.clone(), polls.clone());
        axum::Router::new().route(
            "/v1/clusters/{id}/watch",
            axum::routing::get(move |RawQuery(q): RawQuery| async move {
                let q = q.unwrap_or_default();
                if q.contains("stream=") {
                    streams.fetch_add(1, Ordering::SeqCst);
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        r#"{"kind":"bad_request","value":"query: unknown field `stream`"}"#,
                    );
                }
                polls.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::OK,
                    r#"{"revision":8,"changes":[],"compacted":true}"#,
                )
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: reqwest::Url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Client::new(
        base,
        http_client(None, Duration::from_secs(5)).unwrap(),
        &crate::support::random_secret(),
        "old-server",
    )
    .unwrap();
    for _ in 0..3 {
        let w = c.watch(7, Duration::from_secs(1)).await.unwrap();
        assert_eq!((w.revision, w.compacted), (8, true));
    }
    assert_eq!(streams.load(Ordering::SeqCst), 1, "asked for a stream once");
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    served.abort();
}

/// A client name holds at most `max_watches_per_client` open watches, streams and
/// long-polls alike: the next is refused 429 (`rate_limited`, which clients retry) until
/// one of them ends, and other names are not held back by it.
#[tokio::test]
async fn a_client_holds_a_bounded_number_of_open_watches() {
    let limits = Limits {
        max_watches_per_client: 2,
        ..Limits::default()
    };
    let server = Server::start(true, limits).await;
    let watch = |query: &str| {
        raw(
            &server,
            &server.secret,
            reqwest::Method::GET,
            &format!("watch?after=0&{query}"),
            b"",
            now_s(),
        )
        .send()
    };
    let stream = "timeout_ms=30000&stream=true";
    let first = watch(stream).await.unwrap();
    let second = watch(stream).await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    let third = watch(stream).await.unwrap();
    assert_eq!(third.status(), 429);
    let refused: serde_json::Value = third.json().await.unwrap();
    assert_eq!(refused["kind"], "rate_limited", "{refused}");
    assert!(
        refused["value"]
            .as_str()
            .unwrap()
            .contains("client raw holds 2 open watches"),
        "{refused}"
    );
    // A long-poll takes a place too.
    assert_eq!(watch("timeout_ms=1000").await.unwrap().status(), 429);
    // Another name has places of its own.
    let other = server.client("other").long_poll_watches();
    let quiet = other.watch(0, Duration::from_millis(200)).await.unwrap();
    assert_eq!(quiet.changes.len(), 0);
    // One stream's connection closes: its place is given back once the server sees it.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let r = watch(stream).await.unwrap();
        if r.status() == 200 {
            break r;
        }
        assert_eq!(r.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop((second, again));
    server.stop().await;
}
