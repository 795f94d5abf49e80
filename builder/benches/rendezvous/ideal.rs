//! The fan-out's floor on this machine, measured in the same run: a minimal server process
//! (this bench binary again, `RDV_BENCH_IDEAL=server`) with the rendezvous's own TLS config holds
//! one TLS connection per watcher; each watcher parks by sending one byte, and on a trigger
//! the server writes the same pre-encoded answer (as long as the real watch answer) to every
//! parked connection, which the watcher reads in full. No HTTP, no request signature, no
//! JSON, no store: what is left is waking N tasks, N TLS record writes and reads and the
//! loopback TCP under them, on the same cores as the real run. Its rounds run between the
//! real run's ([`Floor`]): the real run's latency over this one is what the rendezvous
//! itself adds.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// Set in the environment of the re-executed bench binary that serves the ideal fan-out
/// ([`SERVER`]) or holds its watchers ([`WATCHERS`]).
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

/// The ideal fan-out, connected and warmed up, measured a round at a time between the
/// real run's rounds: the machine's moment (other work, frequency, the host's neighbours)
/// then weighs on both alike, and the ratio of the two is the rendezvous's own. Its
/// watchers run in a process of their own (this binary again, [`WATCHERS`]): beside the
/// real run's in this one they would need twice the file descriptors a hard limit of
/// 20,000 allows.
pub struct Floor {
    // Dropped first: the watchers' connections close before the server goes.
    watchers: super::Server,
    to_watchers: std::process::ChildStdin,
    from_watchers: BufReader<std::process::ChildStdout>,
    _server: super::Server,
}

/// [`ROLE_ENV`] of the process serving the ideal fan-out.
pub const SERVER: &str = "server";
/// [`ROLE_ENV`] of the process holding its watchers.
pub const WATCHERS: &str = "watchers";

impl Floor {
    /// Starts the ideal server and its watchers' process, connects `agents` watchers and
    /// runs one warm-up round of an `answer_len`-byte answer.
    pub async fn start(
        agents: usize,
        answer_len: usize,
        cert: &muster_build::bake::rendezvous_cert::GeneratedCert,
    ) -> anyhow::Result<Floor> {
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, SERVER)
            .env("RDV_IDEAL_CERT", &cert.cert_pem)
            .env("RDV_IDEAL_KEY", &cert.key_pem)
            .env("RDV_IDEAL_ANSWER_BYTES", answer_len.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the ideal fan-out server")?;
        let mut server = super::Server(child);
        let mut ports = String::new();
        BufReader::new(server.0.stdout.take().context("ideal server stdout")?)
            .read_line(&mut ports)?;
        println!("ideal fan-out: {agents} connecting, measured between the real rounds");
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, WATCHERS)
            .env("RDV_IDEAL_PORTS", ports.trim())
            .env("RDV_IDEAL_SERVER_PID", server.0.id().to_string())
            .env("RDV_IDEAL_AGENTS", agents.to_string())
            .env("RDV_IDEAL_ANSWER_BYTES", answer_len.to_string())
            .env("RDV_IDEAL_CERT_SHA256", &cert.cert_sha256)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the ideal fan-out's watchers")?;
        let mut watchers = super::Server(child);
        let mut floor = Floor {
            to_watchers: watchers.0.stdin.take().context("ideal watchers' stdin")?,
            from_watchers: BufReader::new(
                watchers.0.stdout.take().context("ideal watchers' stdout")?,
            ),
            watchers,
            _server: server,
        };
        let mut ready = String::new();
        floor.from_watchers.read_line(&mut ready)?;
        if ready.trim() != "ready" {
            bail!("the ideal fan-out's watchers said {ready:?}");
        }
        floor.round().await?;
        Ok(floor)
    }

    /// One fan-out, run by the watchers' process: its latencies and CPU.
    pub async fn round(&mut self) -> anyhow::Result<super::Round> {
        use std::io::Write;
        writeln!(self.to_watchers, "round")?;
        self.to_watchers.flush()?;
        let mut line = String::new();
        // The round takes seconds; the bench's runtime has nothing else to do meanwhile.
        tokio::task::block_in_place(|| self.from_watchers.read_line(&mut line))?;
        decode_round(&line).with_context(|| {
            format!(
                "the ideal fan-out's watchers (pid {}) said {:?}",
                self.watchers.0.id(),
                line.get(..80).unwrap_or(&line)
            )
        })
    }
}

/// The ideal fan-out's watchers (in the re-executed process): connects them, says
/// `ready`, then runs a round for each `round` line on stdin and answers it with one line
/// ([`encode_round`]).
pub fn watchers() -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let ports = env("RDV_IDEAL_PORTS")?;
    let server_pid: u32 = env("RDV_IDEAL_SERVER_PID")?.parse()?;
    let agents: usize = env("RDV_IDEAL_AGENTS")?.parse()?;
    let answer_len: usize = env("RDV_IDEAL_ANSWER_BYTES")?.parse()?;
    let cert_sha256 = env("RDV_IDEAL_CERT_SHA256")?;
    let ports: Vec<u16> = ports
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("ideal server said {ports:?}"))?;
    let [tls_port, trigger_port] = ports[..] else {
        bail!("ideal server said {ports:?}")
    };
    super::raise_nofile(agents)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(protocol::tls_client_config(
            Some(&cert_sha256),
        )?));
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
        println!("ready");
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin());
        let mut command = String::new();
        while {
            command.clear();
            tokio::io::AsyncBufReadExt::read_line(&mut commands, &mut command).await? > 0
        } {
            let round = round(&mut streams, &mut trigger, answer_len, server_pid).await?;
            println!("{}", encode_round(&round));
        }
        anyhow::Ok(())
    })
}

/// Every watcher parks, one trigger, each reads the answer in full.
async fn round(
    streams: &mut Vec<TlsStream<TcpStream>>,
    trigger: &mut TcpStream,
    answer_len: usize,
    server_pid: u32,
) -> anyhow::Result<super::Round> {
    let agents = streams.len();
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
    tokio::time::sleep(super::park_time(agents)).await;
    let mark = super::CpuMark::now(server_pid)?;
    let _ = sent_at.set(Instant::now());
    trigger.write_all(b"!").await?;
    let mut latencies = Vec::with_capacity(agents);
    for w in watches {
        let (s, lat) = w.await??;
        streams.push(s);
        latencies.push(lat);
    }
    let mut round = super::Round::new(latencies);
    mark.add_since(&mut round.cpu)?;
    Ok(round)
}

/// A round as one line: the server's and the watchers' user and kernel CPU (ms), then
/// each latency (ns).
fn encode_round(r: &super::Round) -> String {
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut fields = vec![
        ms(r.cpu.server.user),
        ms(r.cpu.server.kernel),
        ms(r.cpu.client.user),
        ms(r.cpu.client.kernel),
    ];
    fields.extend(r.latencies.iter().map(|l| l.as_nanos().to_string()));
    fields.join(" ")
}

fn decode_round(line: &str) -> anyhow::Result<super::Round> {
    use std::time::Duration;
    let mut numbers = line.split_whitespace().map(str::parse::<u64>);
    let mut next = |what: &str| -> anyhow::Result<u64> {
        Ok(numbers.next().with_context(|| format!("no {what}"))??)
    };
    let cpu = |user, kernel| super::Cpu {
        user: Duration::from_millis(user),
        kernel: Duration::from_millis(kernel),
    };
    let server = cpu(next("server user cpu")?, next("server kernel cpu")?);
    let client = cpu(next("watchers' user cpu")?, next("watchers' kernel cpu")?);
    let latencies = numbers
        .map(|n| n.map(Duration::from_nanos))
        .collect::<Result<Vec<_>, _>>()?;
    if latencies.is_empty() {
        bail!("no latencies");
    }
    let mut round = super::Round::new(latencies);
    round.cpu = super::CpuSpent { server, client };
    Ok(round)
}
