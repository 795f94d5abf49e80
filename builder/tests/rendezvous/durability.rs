use crate::support::random_secret;
use model::secret::ClusterSecret;
use muster_rendezvous::keys;
use protocol::{AcquireResponse, Client, RetryPolicy, http_client};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(120);

struct Proc {
    child: Child,
}

impl Proc {
    /// Starts the real `muster rendezvous` and waits until it answers.
    async fn start(dir: &Path, port: u16, client: &Client) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args([
                "rendezvous",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
            ])
            .arg(dir.join("data"))
            .arg("--cert")
            .arg(dir.join("tls.crt"))
            .arg("--key")
            .arg(dir.join("tls.key"))
            .args(["--rate", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc { child };
        // Waiting for a child process to bind its port; not waiting for state under test.
        for _ in 0..500 {
            if client.members().await.is_ok() {
                return proc;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proc.kill_9();
        panic!("muster rendezvous did not come up");
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(port: u16, pin: &str, secret: &ClusterSecret, name: &str) -> Client {
    let http = http_client(Some(pin), Duration::from_secs(5)).unwrap();
    Client::new(
        format!("https://127.0.0.1:{port}").parse().unwrap(),
        http,
        secret,
        name,
    )
    .unwrap()
    .with_retry(RetryPolicy::none())
}

fn granted(a: AcquireResponse) -> u64 {
    match a {
        AcquireResponse::Granted { token, .. } => token,
        AcquireResponse::Busy { holders, .. } => panic!("busy: {holders:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_leases_and_tokens_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let secret = random_secret();
    keys::install(&dir.path().join("data/keys"), &secret).unwrap();
    let cert = muster_build::bake::rendezvous_cert::generate_for(&["127.0.0.1"]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem).unwrap();
    let port = free_port();
    let c1 = client(port, &cert.cert_sha256, &secret, "cp-1");
    let c2 = client(port, &cert.cert_sha256, &secret, "cp-2");

    let proc = Proc::start(dir.path(), port, &c1).await;
    let t1 = granted(c1.acquire("cp-join", 1, "cp-1", TTL).await.unwrap());

    // Writers create records as fast as they can; each acknowledged key is noted.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let c = client(port, &cert.cert_sha256, &secret, &format!("writer-{w}"));
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let key = format!("w/{w}/{n}");
                if c.create(&key, key.as_bytes(), None, None).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push(key);
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proc.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let proc = Proc::start(dir.path(), port, &c1).await;
    let (_, records) = c1.list("w/").await.unwrap();
    let stored: std::collections::HashSet<_> = records.iter().map(|r| r.key.as_str()).collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| !stored.contains(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    for r in &records {
        assert_eq!(r.value, r.key.as_bytes());
    }

    // The lease survived: still held by cp-1 with the same token.
    match c2.acquire("cp-join", 1, "cp-2", TTL).await.unwrap() {
        AcquireResponse::Busy { holders, .. } => {
            assert_eq!((holders[0].holder.as_str(), holders[0].token), ("cp-1", t1))
        }
        other => panic!("lease lost across kill -9: {other:?}"),
    }
    assert_eq!(
        granted(c1.acquire("cp-join", 1, "cp-1", TTL).await.unwrap()),
        t1
    );
    assert!(c1.release("cp-join", "cp-1", t1).await.unwrap());
    let t2 = granted(c2.acquire("cp-join", 1, "cp-2", TTL).await.unwrap());
    assert!(t2 > t1);
    assert!(c2.release("cp-join", "cp-2", t2).await.unwrap());
    proc.kill_9();

    // Tokens keep growing across a second crash.
    let proc = Proc::start(dir.path(), port, &c1).await;
    let t3 = granted(c1.acquire("cp-join", 1, "cp-1", TTL).await.unwrap());
    assert!(t3 > t2, "token {t3} after {t2}");
    let audit = c1.audit(0).await.unwrap();
    let grants: Vec<u64> = audit
        .iter()
        .filter(|e| e.event == protocol::AuditEvent::Granted)
        .filter_map(|e| e.token)
        .collect();
    assert_eq!(grants, [t1, t2, t3]);
    proc.kill_9();
}

/// A store with a little in it, closed; returns its data dir, the file's bytes and the
/// cluster id.
fn filled_store() -> (tempfile::TempDir, Vec<u8>, String) {
    use muster_rendezvous::store::{Batch, Meta, Op, StoredRecord};
    use muster_rendezvous::{RedbStore, Store};
    use protocol::wire::Sealed;
    let data = tempfile::tempdir().unwrap();
    let cluster = random_secret().cluster_id();
    {
        let store = RedbStore::open(data.path()).unwrap();
        for i in 1..=20u64 {
            let record = StoredRecord {
                value: Sealed("c2VhbGVkIHZhbHVl".into()),
                revision: i,
                create_revision: i,
                expires_at_ms: None,
            };
            let ops = vec![
                Op::Meta(Meta {
                    revision: i,
                    audit_seq: 0,
                }),
                Op::PutRecord(format!("k{i}"), record),
            ];
            store
                .commit(&[Batch {
                    cluster: cluster.clone(),
                    ops,
                }])
                .unwrap();
        }
        assert_eq!(store.load(&cluster).unwrap().records.len(), 20);
    }
    let bytes = std::fs::read(data.path().join(muster_rendezvous::redb_store::DB_FILE)).unwrap();
    (data, bytes, cluster)
}

/// Opening the store and loading a cluster, as the service does on its first request;
/// never a panic.
fn open_and_load(dir: &Path, cluster: &str) -> Result<(), String> {
    use muster_rendezvous::{RedbStore, Store};
    let store = RedbStore::open(dir).map_err(|e| e.to_string())?;
    store.load(cluster).map_err(|e| e.to_string())?;
    store.audit(cluster, 0, 1000).map_err(|e| e.to_string())?;
    Ok(())
}

/// A truncated store is a clear error naming the file and what to do, never a panic;
/// the real binary exits with that message instead of a panic's exit code 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_is_a_clear_error_not_a_panic() {
    let (data, bytes, cluster) = filled_store();
    let file = data.path().join(muster_rendezvous::redb_store::DB_FILE);
    for len in [1, 9, 100, 511, 4096, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&file, &bytes[..len]).unwrap();
        let err = open_and_load(data.path(), &cluster)
            .expect_err(&format!("a store truncated to {len} bytes opened"));
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(
            err.contains("backup") && err.contains("move it aside"),
            "{err}"
        );
    }
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args([
            "rendezvous",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded wait for the process to give up; one that serves instead is killed.
    let mut status = None;
    for _ in 0..1500 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if status.is_none() {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("muster rendezvous served a truncated store");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap();
    assert_ne!(status.code(), Some(101), "panicked: {stderr}");
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

/// Bit flips anywhere in the store never panic the opener: the store either opens (redb
/// checksums caught the damage and it repaired, or the flip hit unused space) or
/// answers a clear error naming the file.
#[test]
fn a_bit_flipped_store_never_panics() {
    let (data, bytes, cluster) = filled_store();
    let file = data.path().join(muster_rendezvous::redb_store::DB_FILE);
    let step = (bytes.len() / 97).max(1);
    let mut errors = 0;
    for offset in (0..bytes.len()).step_by(step).chain(0..64) {
        let mut damaged = bytes.clone();
        damaged[offset] ^= 1 << (offset % 8);
        std::fs::write(&file, &damaged).unwrap();
        if let Err(e) = open_and_load(data.path(), &cluster) {
            assert!(e.contains(&file.display().to_string()), "{e}");
            errors += 1;
        }
    }
    // The magic number is in the first bytes, so some flips must be refused.
    assert!(errors > 0, "no bit flip was noticed");
}
