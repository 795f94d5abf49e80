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

#[tokio::test]
async fn a_published_release_downloads_resumably_and_is_verified() {
    let server = Server::start(true, Limits::default()).await;
    let op = server.client("muster-operator");
    let p = payload();
    let mut steps = Vec::new();
    let r = release_transfer::publish(
        &op,
        Publication {
            distribution: model::spec::DistroKind::Kubeadm,
            version: "v1.31.2".parse().unwrap(),
            payload: &p,
            url: None,
            now_ms: 5,
        },
        |done, total| steps.push((done, total)),
    )
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
