//! The same watch rounds against the same server, with watchers as cheap as the ideal's:
//! each holds its own TLS connection and speaks the protocol by hand (a signed HTTP/1.1
//! `GET .../watch`, the answer's head and body read, the body parsed as a
//! `WatchResponse`), without reqwest's pool, timers and per-request allocations. Either
//! one long-poll per change ([`Mode::LongPoll`]) or one streaming watch whose chunked
//! lines are read round after round ([`Mode::Stream`]). Real
//! agents each run on their own node; here the bench's clients share the server's two
//! cores, so their cost shows in the server's latency. With clients as lean as the ideal
//! run's, the real run's latency over the ideal's is the server's own.

use anyhow::{Context, bail};
use protocol::WatchResponse;
use protocol::seal::{ClusterKeys, RequestToSign};
use protocol::wire::{HEADER_CLIENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// How the lean watchers watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A signed request per change, answered once.
    LongPoll,
    /// One signed `stream=true` request, a chunked line per change.
    Stream,
}

/// One watcher: its connection, its name and a buffer kept across rounds.
struct Watcher {
    stream: Option<TlsStream<TcpStream>>,
    name: String,
    source: std::net::IpAddr,
    buf: Vec<u8>,
    /// Whether the connection carries an open streaming watch (its head read).
    streaming: bool,
}

/// Where the server is and how to reach it.
pub struct Target<'a> {
    pub port: u16,
    pub pid: u32,
    pub keys: Arc<ClusterKeys>,
    pub cert_sha256: &'a str,
}

/// `rounds` measured watch rounds (after a warm-up one that opens the connections) of
/// `agents` lean watchers, each round's change made by `writer`; watching from `after`.
/// Each measured round is followed by one of `floor`'s: the lean watchers' figures and
/// the ideal's of the same minutes.
pub async fn run(
    target: &Target<'_>,
    writer: &protocol::Client,
    agents: usize,
    rounds: usize,
    mut after: u64,
    mode: Mode,
    floor: &mut super::ideal::Floor,
) -> anyhow::Result<(super::Figures, super::Figures)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(protocol::tls_client_config(Some(
        target.cert_sha256,
    ))?));
    let mut watchers: Vec<Watcher> = (0..agents)
        .map(|i| Watcher {
            stream: None,
            name: format!("agent-{i}"),
            source: super::source_address(i / super::AGENTS_PER_HTTP_CLIENT),
            buf: Vec::with_capacity(1024),
            streaming: false,
        })
        .collect();
    let (mut lean, mut ideal) = (super::Figures::default(), super::Figures::default());
    // Connections are opened in the warm-up round, this many at once (as the real run's
    // registrations), so the server's per-IP count of unauthenticated ones is not hit.
    let opening = Arc::new(tokio::sync::Semaphore::new(super::IN_FLIGHT));
    println!("lean watchers ({mode:?}): {agents} connecting, then {rounds} rounds");
    for round in 0..=rounds {
        let write_at = Arc::new(std::sync::OnceLock::<Instant>::new());
        let mut watches = Vec::with_capacity(agents);
        for mut w in watchers.drain(..) {
            let (write_at, connector, keys, opening) = (
                write_at.clone(),
                connector.clone(),
                target.keys.clone(),
                opening.clone(),
            );
            let port = target.port;
            watches.push(tokio::spawn(async move {
                let mut answer = None;
                for _ in 0..600 {
                    if w.stream.is_none() {
                        let _permit = opening.acquire().await?;
                        w.stream = connect(&connector, w.source, port).await.ok();
                        w.streaming = false;
                    }
                    let watched = match mode {
                        Mode::LongPoll => w.watch(&keys, port, after).await,
                        Mode::Stream => w.stream_line(&keys, port, after).await,
                    };
                    match watched {
                        Ok(a) => {
                            answer = Some(a);
                            break;
                        }
                        Err(_) => {
                            // Closed for the per-IP cap, or not ready: a new connection.
                            w.stream = None;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                let heard = Instant::now();
                let answer = answer.with_context(|| format!("{} never got an answer", w.name))?;
                let lat = heard.saturating_duration_since(*write_at.get().unwrap_or(&heard));
                anyhow::Ok((w, answer, lat))
            }));
        }
        tokio::time::sleep(super::park_time(agents)).await;
        let mark = super::CpuMark::now(target.pid)?;
        let _ = write_at.set(Instant::now());
        let made = writer
            .create(&format!("lean-{mode:?}/{round}"), b"x", None, None)
            .await?;
        let mut latencies = Vec::with_capacity(agents);
        for w in watches {
            let (w, answer, lat) = w.await??;
            if answer.revision < made {
                bail!(
                    "{}: watch returned revision {} before the write {made}",
                    w.name,
                    answer.revision
                );
            }
            watchers.push(w);
            latencies.push(lat);
        }
        let mut measured = super::Round::new(latencies);
        mark.add_since(&mut measured.cpu)?;
        after = made;
        if round > 0 {
            lean.add(measured);
            ideal.add(floor.round().await?);
        }
    }
    Ok((lean, ideal))
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    source: std::net::IpAddr,
    port: u16,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok(connector.connect(name, tcp).await?)
}

impl Watcher {
    /// One signed long-poll on this watcher's connection, its answer parsed.
    async fn watch(
        &mut self,
        keys: &ClusterKeys,
        port: u16,
        after: u64,
    ) -> anyhow::Result<WatchResponse> {
        let head_end = self.request(keys, port, after, false).await?;
        let length: usize = header(&self.buf[..head_end], "content-length")?
            .parse()
            .context("content-length")?;
        let stream = self.stream.as_mut().context("not connected")?;
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        Ok(serde_json::from_slice(
            &self.buf[head_end..head_end + length],
        )?)
    }

    /// The next line past `after` of this watcher's streaming watch, opened first if it
    /// is not (keep-alive lines are skipped). Each line comes in one HTTP chunk
    /// (`<size hex>\r\n<line>\r\n`: hyper writes each of the body's lines as one).
    async fn stream_line(
        &mut self,
        keys: &ClusterKeys,
        port: u16,
        after: u64,
    ) -> anyhow::Result<WatchResponse> {
        if !self.streaming {
            let head_end = self.request(keys, port, after, true).await?;
            if !header(&self.buf[..head_end], "transfer-encoding")?.eq_ignore_ascii_case("chunked")
            {
                bail!("the streaming watch is not chunked");
            }
            self.buf.drain(..head_end);
            self.streaming = true;
        }
        let stream = self.stream.as_mut().context("not connected")?;
        loop {
            let Some(size_end) = find(&self.buf, b"\r\n") else {
                read_more(stream, &mut self.buf).await?;
                continue;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.buf[..size_end]).context("chunk size")?,
                16,
            )
            .context("chunk size")?;
            if size == 0 {
                bail!("the streaming watch ended");
            }
            let data = size_end + 2;
            while self.buf.len() < data + size + 2 {
                read_more(stream, &mut self.buf).await?;
            }
            let answer: WatchResponse = serde_json::from_slice(&self.buf[data..data + size])?;
            self.buf.drain(..data + size + 2);
            if answer.revision != after || answer.compacted {
                return Ok(answer);
            }
        }
    }

    /// Sends a signed `GET .../watch` from `after` (a stream when `stream`) and reads the
    /// answer's head into `buf`: where the head ends. Anything but a 200 is an error.
    async fn request(
        &mut self,
        keys: &ClusterKeys,
        port: u16,
        after: u64,
        stream: bool,
    ) -> anyhow::Result<usize> {
        let conn = self.stream.as_mut().context("not connected")?;
        let path = format!(
            "/v1/clusters/{}/watch?after={after}&timeout_ms=50000{}",
            keys.cluster_id(),
            if stream { "&stream=true" } else { "" }
        );
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let signature = keys.signing_key().sign(&RequestToSign {
            method: "GET",
            path_and_query: &path,
            body: b"",
            timestamp,
            nonce: &nonce,
            client: &self.name,
        });
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{HEADER_TIMESTAMP}: {timestamp}\r\n\
             {HEADER_NONCE}: {nonce}\r\n{HEADER_CLIENT}: {}\r\n{HEADER_SIGNATURE}: {signature}\r\n\r\n",
            self.name
        );
        conn.write_all(request.as_bytes()).await?;
        conn.flush().await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(conn, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("answer head")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("answer: {}", head.lines().next().unwrap_or(""));
        }
        Ok(head_end)
    }
}

/// The value of header `name` in an answer's `head`.
fn header<'h>(head: &'h [u8], name: &str) -> anyhow::Result<&'h str> {
    std::str::from_utf8(head)
        .context("answer head")?
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .with_context(|| format!("the watch answer has no {name}"))
}

async fn read_more(stream: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("connection closed");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
