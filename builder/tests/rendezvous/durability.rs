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
