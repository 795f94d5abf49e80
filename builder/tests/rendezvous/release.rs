//! Issue 15: a release published through a real rendezvous (HTTPS), its payload in sealed
//! chunks the server cannot read, downloaded resumably by another client with the digest
//! checked, a corrupt one refused and deleted.

use crate::support::{Server, contains, dump_dir};
use muster_rendezvous::Limits;
use protocol::release::{self, PayloadSource};
use protocol::release_transfer::{self, Publication, TransferError};

fn payload() -> Vec<u8> {
    // Three and a bit chunks, with a recognisable marker the server must never see.
    let mut p = Vec::new();
    while p.len() < 3 * release::CHUNK_BYTES as usize + 100 {
        p.extend_from_slice(b"PAYLOAD-MARKER-v1.31.2 ");
    }
    p
}

/// What the operator publishes: kubeadm v1.31.2 with `payload`, from `url` if given.
fn publication(payload: &[u8], url: Option<String>) -> Publication<'_> {
    Publication {
        distribution: model::spec::DistroKind::Kubeadm,
        version: "v1.31.2".parse().unwrap(),
        payload,
        url,
        now_ms: 5,
    }
}

#[tokio::test]
async fn a_published_release_downloads_resumably_and_is_verified() {
    let server = Server::start(true, Limits::default()).await;
    let op = server.client("muster-operator");
    let p = payload();
    let mut steps = Vec::new();
    let r = release_transfer::publish(&op, publication(&p, None), |done, total| {
        steps.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(r.sequence, 1);
    assert_eq!(steps.last(), Some(&(4, 4)), "progress per chunk: {steps:?}");
    assert!(matches!(
        r.payload.source,
        PayloadSource::Rendezvous { chunks: 4, .. }
    ));

    let node = server.client("cp-1");
    let (seen, _) = release_transfer::current_release(&node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, r);

    // A download interrupted after a chunk and a half resumes from the whole chunk.
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("payload.partial");
    let half = release::CHUNK_BYTES as usize * 3 / 2;
    std::fs::write(&partial, &p[..half]).unwrap();
    let mut first = None;
    let http = protocol::http_client(None, std::time::Duration::from_secs(10)).unwrap();
    let got = release_transfer::download(&node, &http, &seen, &partial, |done, _| {
        first.get_or_insert(done);
    })
    .await
    .unwrap();
    assert_eq!(got, p);
    assert_eq!(
        first,
        Some(2 * u64::from(release::CHUNK_BYTES)),
        "resumed after chunk 0"
    );

    // A corrupted partial file fails the digest and is deleted.
    let mut bad = p.clone();
    bad[10] ^= 1;
    std::fs::write(&partial, &bad[..release::CHUNK_BYTES as usize]).unwrap();
    let err = release_transfer::download(&node, &http, &seen, &partial, |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Payload(release::PayloadError::Digest { .. })
        ),
        "{err}"
    );
    assert!(!partial.exists());

    // The next publication takes the next sequence.
    let r2 = release_transfer::publish(
        &op,
        Publication {
            distribution: model::spec::DistroKind::Kubeadm,
            version: "v1.31.3".parse().unwrap(),
            payload: b"small",
            url: Some("https://mirror.example/p.tgz".into()),
            now_ms: 6,
        },
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(r2.sequence, 2);

    let store = server.stop().await;
    let dump = dump_dir(store.path());
    assert!(
        !contains(&dump, b"PAYLOAD-MARKER"),
        "the rendezvous saw the payload"
    );
    assert!(
        !contains(&dump, b"v1.31.2"),
        "the rendezvous saw the version"
    );
}

/// A minimal HTTP/1.1 server for one payload that honours `Range: bytes=N-` (206) and
/// records the ranges asked for; `cut_after` closes the first response early, as a broken
/// connection does.
async fn serve_payload(
    payload: Vec<u8>,
    cut_after: Option<usize>,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ranges.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let range = req
                .lines()
                .find_map(|l| {
                    l.strip_prefix("range: ")
                        .or_else(|| l.strip_prefix("Range: "))
                })
                .map(|r| r.trim().to_string());
            seen.lock().unwrap().push(range.clone());
            let start: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            let body = &payload[start..];
            let (status, extra) = if start > 0 {
                (
                    "206 Partial Content",
                    format!(
                        "Content-Range: bytes {start}-{}/{}\r\n",
                        payload.len() - 1,
                        payload.len()
                    ),
                )
            } else {
                ("200 OK", String::new())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            let send = match (first, cut_after) {
                (true, Some(cut)) => &body[..cut],
                _ => body,
            };
            first = false;
            let _ = sock.write_all(send).await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}/payload.tar.gz"), ranges)
}

#[tokio::test]
async fn a_url_payload_resumes_with_an_http_range_after_a_broken_download() {
    let server = Server::start(false, Limits::default()).await;
    let op = server.client("muster-operator");
    let p = payload();
    let (url, ranges) = serve_payload(p.clone(), Some(1000)).await;
    let r = release_transfer::publish(&op, publication(&p, Some(url)), |_, _| {})
        .await
        .unwrap();
    let node = server.client("cp-1");
    let http = protocol::http_client(None, std::time::Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("payload.partial");
    // The first response is cut after 1000 bytes: the download fails (short body) and
    // keeps what it got.
    let first = release_transfer::download(&node, &http, &r, &partial, |_, _| {}).await;
    assert!(first.is_err(), "a cut download must not pass");
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < p.len() as u64, "kept {kept} bytes");
    let got = release_transfer::download(&node, &http, &r, &partial, |_, _| {})
        .await
        .unwrap();
    assert_eq!(got, p);
    let asked = ranges.lock().unwrap().clone();
    assert_eq!(asked, vec![None, Some(format!("bytes={kept}-"))]);
}

/// The agent's rendezvous side of an upgrade against the real server: release, payload,
/// the one-slot lock (one holder, renewed, lost after release), progress, resume.
#[tokio::test]
async fn the_agents_rendezvous_side_fetches_locks_reports_and_reads_resumes() {
    use nodeagent::upgrade::rendezvous_side::RendezvousSide;
    use nodeagent::upgrade::state::Phase;
    use nodeagent::upgrade::steps::Step;
    let server = Server::start(true, Limits::default()).await;
    let op = server.client("muster-operator");
    let p = payload();
    release_transfer::publish(&op, publication(&p, None), |_, _| {})
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = protocol::http_client(None, std::time::Duration::from_secs(10)).unwrap();
    let lease = std::time::Duration::from_secs(30);
    let side = |name: &str| {
        RendezvousSide::new(server.client(name), http.clone(), name, dir.path(), lease)
    };
    let (cp1, cp2) = (side("cp-1"), side("cp-2"));

    let r = cp1.newest_release().await.unwrap().unwrap();
    let path = cp1.fetch(&r).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), p);

    let token = cp1
        .acquire()
        .await
        .unwrap()
        .expect("a free lock is granted");
    assert_eq!(
        cp1.acquire().await.unwrap(),
        Some(token),
        "held: same token"
    );
    assert_eq!(cp2.acquire().await.unwrap(), None, "one slot");
    assert!(cp1.renew(token).await.unwrap());

    let running = Phase::Running {
        sequence: r.sequence,
        to: r.version,
        token,
        steps: vec![Step::Drain],
        step: Step::Drain,
        resumes_seen: 0,
    };
    cp1.report(&running, 7).await.unwrap();
    cp1.report(&running, 8).await.unwrap();
    let all = cp2.progress().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].node.as_str(), all[0].step.as_deref(), all[0].at_ms),
        ("cp-1", Some("drain"), 8)
    );

    assert!(cp1.release(token).await.unwrap());
    assert!(!cp1.renew(token).await.unwrap(), "a released lease is lost");
    assert!(
        cp2.acquire().await.unwrap().is_some_and(|t| t > token),
        "fenced: a newer token"
    );

    assert_eq!(cp1.resume_request().await.unwrap(), None);
    let req = protocol::release::ResumeRequest {
        sequence: r.sequence,
        count: 1,
        at_ms: 1,
    };
    op.create(
        protocol::release::RESUME,
        &serde_json::to_vec(&req).unwrap(),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(cp1.resume_request().await.unwrap(), Some((r.sequence, 1)));
}
