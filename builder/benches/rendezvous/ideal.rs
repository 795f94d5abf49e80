//! The fan-out's floor on this machine, measured in the same run: a minimal server process
//! (this bench binary again, `RDV_BENCH_IDEAL=1`) with the rendezvous's own TLS config holds
//! one TLS connection per watcher; each watcher parks by sending one byte, and on a trigger
//! the server writes the same pre-encoded answer (as long as the real watch answer) to every
//! parked connection, which the watcher reads in full. No HTTP, no request signature, no
//! JSON, no store: what is left is waking N tasks, N TLS record writes and reads and the
//! loopback TCP under them, on the same cores as the real run. The real run's latency over
//! this one is what the rendezvous itself adds.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Set in the environment of the re-executed bench binary that serves the ideal fan-out.
pub const ROLE_ENV: &str = "RDV_BENCH_IDEAL";

/// The ideal server (in the re-executed process): prints its TLS and trigger ports, then
/// serves until killed. Certificate and key come as PEM in the environment.
pub fn serve() -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let cert = env("RDV_IDEAL_CERT")?;
    let key = env("RDV_IDEAL_KEY")?;
    let answer_len: usize = env("RDV_IDEAL_ANSWER_BYTES")?.parse()?;
    let config = muster_rendezvous::tls::server_config(cert.as_bytes(), key.as_bytes(), "bench")?;
    // The real server's runtime: tokio's multi-thread default (one worker per core).
    tokio::runtime::Runtime::new()?.block_on(async move {
        let tls = TcpListener::bind("127.0.0.1:0").await?;
        let trigger = TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "{} {}",
            tls.local_addr()?.port(),
            trigger.local_addr()?.port()
        );
        let (changed, change) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            // Every byte on the trigger connection is one change.
            if let Ok((mut s, _)) = trigger.accept().await {
                let mut buf = [0u8; 16];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    changed.send_modify(|v| *v += n as u64);
                }
            }
        });
        let answer: Arc<[u8]> = vec![b'x'; answer_len].into();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (sock, _) = tls.accept().await?;
            let (acceptor, mut change, answer) = (acceptor.clone(), change.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(sock).await else {
                    return;
                };
                let mut seen = *change.borrow_and_update();
                let mut park = [0u8; 1];
                // Park (one byte), wait for a change past the last one answered, answer.
                while s.read_exact(&mut park).await.is_ok() {
                    let Ok(now) = change.wait_for(|v| *v > seen).await.map(|v| *v) else {
                        return;
                    };
                    seen = now;
                    if s.write_all(&answer).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// Starts the ideal server, connects `agents` watchers and measures `rounds` fan-outs of
/// an `answer_len`-byte answer after one warm-up round.
pub async fn run(
    agents: usize,
    rounds: usize,
    answer_len: usize,
    cert: &muster_build::bake::rendezvous_cert::GeneratedCert,
) -> anyhow::Result<super::Figures> {
    let child = Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, "1")
        .env("RDV_IDEAL_CERT", &cert.cert_pem)
        .env("RDV_IDEAL_KEY", &cert.key_pem)
        .env("RDV_IDEAL_ANSWER_BYTES", answer_len.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the ideal fan-out server")?;
    let mut server = super::Server(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().context("ideal server stdout")?).read_line(&mut line)?;
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("ideal server said {line:?}"))?;
    let [tls_port, trigger_port] = ports[..] else {
        bail!("ideal server said {line:?}")
    };
    let pid = server.0.id();

    let connector = tokio_rustls::TlsConnector::from(Arc::new(protocol::tls_client_config(Some(
        &cert.cert_sha256,
    ))?));
    let name = rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let mut streams = Vec::with_capacity(agents);
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..agents {
        let (connector, name) = (connector.clone(), name.clone());
        connecting.spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", tls_port)).await?;
            anyhow::Ok(connector.connect(name, tcp).await?)
        });
        // As many handshakes in flight as the real run's registrations.
        if i >= super::IN_FLIGHT
            && let Some(done) = connecting.join_next().await
        {
            streams.push(done??);
        }
    }
    while let Some(done) = connecting.join_next().await {
        streams.push(done??);
    }
    let mut trigger = TcpStream::connect(("127.0.0.1", trigger_port)).await?;

    let mut latencies = Vec::with_capacity(rounds * agents);
    let (mut cpu_server, mut cpu_client) = (Duration::ZERO, Duration::ZERO);
    for round in 0..=rounds {
        let sent_at = Arc::new(std::sync::OnceLock::<Instant>::new());
        let mut watches = Vec::with_capacity(agents);
        for mut s in streams.drain(..) {
            let sent_at = sent_at.clone();
            watches.push(tokio::spawn(async move {
                s.write_all(b"w").await?;
                s.flush().await?;
                let mut answer = vec![0u8; answer_len];
                s.read_exact(&mut answer).await?;
                let heard = Instant::now();
                let lat = heard.saturating_duration_since(*sent_at.get().unwrap_or(&heard));
                anyhow::Ok((s, lat))
            }));
        }
        // As the real run: let the parks reach the server before the change.
        tokio::time::sleep(Duration::from_millis(500 + agents as u64 / 10)).await;
        let before = (super::cpu(pid)?, super::cpu(std::process::id())?);
        let _ = sent_at.set(Instant::now());
        trigger.write_all(b"!").await?;
        for w in watches {
            let (s, lat) = w.await??;
            streams.push(s);
            if round > 0 {
                latencies.push(lat);
            }
        }
        if round > 0 {
            cpu_server += super::cpu(pid)?.saturating_sub(before.0);
            cpu_client += super::cpu(std::process::id())?.saturating_sub(before.1);
        }
    }
    drop(streams);
    drop(server);
    latencies.sort_unstable();
    Ok(super::Figures {
        latencies,
        cpu_server,
        cpu_client,
    })
}
