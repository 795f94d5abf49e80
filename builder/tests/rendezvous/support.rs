use model::secret::ClusterSecret;
use muster_rendezvous::{self, Limits, keys, tls};
use protocol::seal::{ClusterKeys, RequestToSign};
use protocol::wire::{HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use protocol::{Client, RetryPolicy, http_client};
use reqwest::Url;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn random_secret() -> ClusterSecret {
    ClusterSecret::from_bytes(rand::random())
}

/// A rendezvous service on 127.0.0.1:0 over a fresh data dir, serving one cluster.
pub struct Server {
    pub base: Url,
    pub pin: Option<String>,
    pub secret: ClusterSecret,
    pub data: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(use_tls: bool, limits: Limits) -> Server {
        let tls = use_tls.then(|| {
            let g = muster_build::bake::rendezvous_cert::generate_for(&["127.0.0.1"]).unwrap();
            (g.cert_pem, g.key_pem, g.cert_sha256)
        });
        Server::start_with(random_secret(), tls, limits).await
    }

    /// Serves `secret`'s cluster on 127.0.0.1:0 with `tls` = (cert PEM, key PEM, pin), e.g.
    /// the certificate `muster build` wrote; plain HTTP without.
    pub async fn start_with(
        secret: ClusterSecret,
        tls: Option<(String, String, String)>,
        limits: Limits,
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let keys_dir = data.path().join("keys");
        keys::install(&keys_dir, &secret).unwrap();
        let svc = muster_rendezvous::open(data.path(), &keys_dir, limits).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (config, pin, scheme) = match tls {
            Some((cert_pem, key_pem, pin)) => {
                let config =
                    tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes(), "test").unwrap();
                (Some(config), Some(pin), "https")
            }
            None => (None, None, "http"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(muster_rendezvous::run(listener, config, svc, async {
            let _ = stopped.await;
        }));
        Server {
            base: format!("{scheme}://{addr}").parse().unwrap(),
            pin,
            secret,
            data,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn client(&self, name: &str) -> Client {
        let http = http_client(self.pin.as_deref(), Duration::from_secs(20)).unwrap();
        self.client_with(name, http)
    }

    pub fn client_with(&self, name: &str, http: reqwest::Client) -> Client {
        Client::new(self.base.clone(), http, &self.secret, name)
            .unwrap()
            .with_retry(RetryPolicy::none())
    }

    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.data
    }
}

/// Every file under `dir`, concatenated.
pub fn dump_dir(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(dump_dir(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The clock as requests carry it (seconds).
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A raw request to `path` (relative to the cluster), signed with `secret`'s key.
pub fn raw(
    server: &Server,
    secret: &ClusterSecret,
    method: reqwest::Method,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> reqwest::RequestBuilder {
    let c = Captured::sign_with(server, secret, method, path, body, timestamp);
    let http = http_client(server.pin.as_deref(), Duration::from_secs(10)).unwrap();
    c.send_with(&http, &c.signature)
}

/// The parts of one signed request, so it can be sent again byte for byte (a capture).
pub struct Captured {
    pub method: reqwest::Method,
    pub url: String,
    pub timestamp: u64,
    pub nonce: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Captured {
    /// `path` (relative to the cluster) signed now with the server's own key.
    pub fn sign(server: &Server, method: reqwest::Method, path: &str, body: &[u8]) -> Captured {
        Captured::sign_with(server, &server.secret, method, path, body, now_s())
    }

    /// `path` signed at `timestamp` with `secret`'s key.
    pub fn sign_with(
        server: &Server,
        secret: &ClusterSecret,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
        timestamp: u64,
    ) -> Captured {
        let keys = ClusterKeys::derive(secret);
        let full = format!("/v1/clusters/{}/{path}", server.secret.cluster_id());
        let nonce = hex::encode(rand::random::<[u8; 8]>());
        let signature = keys.signing_key().sign(&RequestToSign {
            method: method.as_str(),
            path_and_query: &full,
            body,
            timestamp,
            nonce: &nonce,
            client: "raw",
        });
        Captured {
            method,
            url: format!("{}{}", server.base.as_str().trim_end_matches('/'), full),
            timestamp,
            nonce,
            signature,
            body: body.to_vec(),
        }
    }

    /// The captured request with `signature` in place of its own.
    pub fn send_with(&self, http: &reqwest::Client, signature: &str) -> reqwest::RequestBuilder {
        http.request(self.method.clone(), &self.url)
            .header(HEADER_TIMESTAMP, self.timestamp.to_string())
            .header(HEADER_NONCE, &self.nonce)
            .header(HEADER_CLIENT, "raw")
            .header(HEADER_SIGNATURE, signature)
            .body(self.body.clone())
    }
}
