//! Rendezvous load benchmark: N simulated agents (default 10,000; `RDV_BENCH_AGENTS=500`
//! for a quick run) against one real `muster rendezvous` process over TLS on 127.0.0.1.
//! Prints measured figures only: registration and heartbeat throughput, change-to-notify
//! latency (time from a write being sent to each agent's watch returning it) and the
//! server's RSS from /proc. The server's own figures for the same rounds (from each
//! change becoming durable to each watcher's answer being handed to its connection, so
//! without the client's share of the two cores) come from its `watch fan-out` log lines
//! (`muster_rendezvous::fanout`); a server that does not write them prints none.
//!
//! The agents watch as agents do, through `protocol::Client::watch` (a streaming watch
//! kept open across rounds). After their rounds the same server answers the same rounds
//! to lean watchers (`lean`: the protocol spoken by hand over one TLS connection each, no
//! reqwest), first by long-poll, then streaming. The ideal fan-out (`ideal`: one TLS write
//! and read per watcher of an answer as long as the agents' on the wire, nothing else)
//! stays connected beside them and one of its rounds follows each measured one, so each
//! phase is compared with the floor of the same minutes: the agents' client's, and the
//! lean watchers' (the server's own share, the bench's clients sharing the server's cores
//! as real agents on their own nodes do not). Each phase prints its CPU per answer (user
//! and kernel) and a round's CPU spread over the cores beside its p99: when the two are
//! close the latency is work done, not waiting.
//!
//! Run: `cargo bench -p muster --bench rendezvous`. `RDV_BENCH_SERVER=PATH` runs another
//! `muster` binary as the server (e.g. one built from an earlier commit, for a before/after
//! on the same machine and client); `RDV_BENCH_LONG_POLL=1` has the agents watch by
//! long-poll, as they did before the streaming watch.

use anyhow::{Context, bail};
use model::secret::ClusterSecret;
use muster_rendezvous::keys;
use protocol::{Client, RetryPolicy, http_client, http_client_from};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "rendezvous/ideal.rs"]
mod ideal;
#[path = "rendezvous/lean.rs"]
mod lean;

/// Agents that share one `reqwest::Client` (and so one connection pool) and one source
/// address (127.0.0.0/8 is all loopback): real agents each come from their own node, and
/// the server caps unauthenticated connections per IP (32). Sharing one address, pools
/// that opened a connection they then did not use (hyper races a new connection against
/// an idle one) held it unauthenticated until the cap closed every new one (the earlier
/// `connection reset` at registration).
const AGENTS_PER_HTTP_CLIENT: usize = 100;
/// Registrations and heartbeats in flight at once.
const IN_FLIGHT: usize = 24;
/// Watch rounds measured (one change each), after one warm-up round.
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    match std::env::var(ideal::ROLE_ENV).as_deref() {
        Ok(ideal::SERVER) => return ideal::serve(),
        Ok(ideal::WATCHERS) => return ideal::watchers(),
        _ => {}
    }
    let agents: usize = std::env::var("RDV_BENCH_AGENTS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("RDV_BENCH_AGENTS must be a number")?
        .unwrap_or(10_000);
    let nofile = raise_nofile(agents)?;
    println!("rendezvous bench: {agents} agents, RLIMIT_NOFILE {nofile}");
    println!("load average at start: {}", loadavg());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(agents))
}

/// Each agent holds a connection for its watch, on both sides of loopback (the ideal
/// fan-out's are in processes of their own: `ideal::Floor`).
fn raise_nofile(agents: usize) -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = agents as u64 + 1024;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    if hard < want {
        bail!(
            "{agents} agents need {want} file descriptors; the hard limit is {hard} (raise it: ulimit -Hn)"
        );
    }
    Ok(hard)
}

/// A child process killed (and reaped) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

async fn bench(agents: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = ClusterSecret::from_bytes(rand::random());
    keys::install(&dir.path().join("data/keys"), &secret)?;
    // As a real install keeps it: the server warns about a store others can reach.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("data"),
            std::fs::Permissions::from_mode(0o700),
        )?;
    }
    let cert = muster_build::bake::rendezvous_cert::generate_for(&["127.0.0.1"])?;
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server_bin = std::env::var_os("RDV_BENCH_SERVER").map_or_else(
        || env!("CARGO_BIN_EXE_muster").into(),
        std::path::PathBuf::from,
    );
    println!("server: {}", server_bin.display());
    let child = Command::new(&server_bin)
        .args([
            "rendezvous",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(dir.path().join("data"))
        .arg("--cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--key")
        .arg(dir.path().join("tls.key"))
        .args(["--max-members", &(agents + 10).to_string()])
        .args(["--max-records", "1000", "--rate", "1000000"])
        .env("MUSTER_LOG", "warn,muster_rendezvous::fanout=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting muster rendezvous")?;
    let mut server = Server(child);
    let fanouts = server_figures(server.0.stderr.take().context("server stderr")?);
    let pid = server.0.id();

    // `RDV_BENCH_LONG_POLL=1`: the agents watch by long-poll, as before the streaming
    // watch (a before/after in one build).
    let long_poll = std::env::var_os("RDV_BENCH_LONG_POLL").is_some();
    let base: reqwest::Url = format!("https://127.0.0.1:{port}").parse()?;
    let mut clients = Vec::with_capacity(agents);
    let mut http = None;
    for i in 0..agents {
        if i % AGENTS_PER_HTTP_CLIENT == 0 {
            http = Some(http_client_from(
                Some(&cert.cert_sha256),
                Duration::from_secs(60),
                Some(source_address(i / AGENTS_PER_HTTP_CLIENT)),
            )?);
        }
        let Some(h) = http.clone() else {
            bail!("no HTTP client")
        };
        let client = Client::new(base.clone(), h, &secret, &format!("agent-{i}"))?;
        clients.push(if long_poll {
            client.long_poll_watches()
        } else {
            client
        });
    }
    let clients = Arc::new(clients);
    let writer = Client::new(
        base.clone(),
        http_client(Some(&cert.cert_sha256), Duration::from_secs(60))?,
        &secret,
        "writer",
    )?
    .with_retry(RetryPolicy::none());
    wait_ready(&writer).await?;
    let rss_start = rss(pid)?;
    println!("server rss at start: {rss_start}");

    let ttl = Duration::from_secs(600);
    let report = serde_json::json!({"phase": "joining", "kubelet": "v1.31.4"});
    let took = for_all(&clients, |c, i| {
        let report = report.clone();
        async move {
            c.register(&format!("agent-{i}"), "worker", &report, ttl)
                .await
                .map(drop)
        }
    })
    .await?;
    println!(
        "register:  {agents} requests in {:.2?} = {:.0} req/s ({IN_FLIGHT} in flight)",
        took,
        agents as f64 / took.as_secs_f64()
    );
    let took = for_all(&clients, |c, i| {
        let report = report.clone();
        async move {
            c.heartbeat(&format!("agent-{i}"), "worker", &report, ttl)
                .await
                .map(drop)
        }
    })
    .await?;
    println!(
        "heartbeat: {agents} requests in {:.2?} = {:.0} req/s ({IN_FLIGHT} in flight)",
        took,
        agents as f64 / took.as_secs_f64()
    );
    let (revision, members) = writer.members().await?;
    if members.len() != agents {
        bail!("{} members listed, expected {agents}", members.len());
    }

    // Watch rounds: every agent watches (its client's streaming watch, opened in the
    // warm-up round and read on in the next); one write; each agent notes when it heard.
    // After the warm-up the ideal fan-out (`ideal::Floor`) connects, and one of its rounds
    // follows each measured one.
    let mut after = revision;
    let mut real = Figures::default();
    let mut real_floor = Figures::default();
    let mut floor = None;
    let mut parked_rss = Vec::with_capacity(ROUNDS);
    let mut measured = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let write_at = Arc::new(std::sync::OnceLock::<Instant>::new());
        let mut watches = Vec::with_capacity(agents);
        for c in clients.iter() {
            let (c, write_at) = (c.clone(), write_at.clone());
            watches.push(tokio::spawn(async move {
                // A first watch opens a connection; one closed at once for being over the
                // per-IP count of unauthenticated connections tries again (the warm-up
                // round opens them; later rounds reuse them).
                let mut w = c.watch(after, Duration::from_secs(50)).await;
                for _ in 0..600 {
                    if w.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    w = c.watch(after, Duration::from_secs(50)).await;
                }
                let heard = Instant::now();
                w.map(|w| {
                    (
                        w,
                        heard.saturating_duration_since(*write_at.get().unwrap_or(&heard)),
                    )
                })
            }));
        }
        // Let the watches reach the server before the write; a watcher that arrives
        // later still gets the change at once, and its latency counts in full.
        tokio::time::sleep(park_time(agents)).await;
        let rss_parked = rss(pid)?;
        let mark = CpuMark::now(pid)?;
        let _ = write_at.set(Instant::now());
        let made = writer
            .create(&format!("round/{round}"), b"x", None, None)
            .await?;
        let mut round_lat = Vec::with_capacity(agents);
        let mut last_answer = None;
        for w in watches {
            let (resp, lat) = w.await??;
            if resp.revision < made {
                bail!(
                    "watch returned revision {} before the write {made}",
                    resp.revision
                );
            }
            round_lat.push(lat);
            last_answer = Some(resp);
        }
        after = made;
        let mut this = Round::new(round_lat);
        mark.add_since(&mut this.cpu)?;
        match floor.as_mut() {
            None => {
                println!(
                    "watch warm-up round done; server rss with {agents} parked watches: {rss_parked}"
                );
                // The ideal writes an answer as long as the agents' is on the wire: its
                // line (encoded once, here, outside the measured rounds) in one HTTP chunk.
                let last_answer = last_answer.context("no watch answered")?;
                let answer_len = chunk_len(serde_json::to_vec(&last_answer)?.len() + 1);
                floor = Some(ideal::Floor::start(agents, answer_len, &cert).await?);
            }
            Some(floor) => {
                real.add(this);
                parked_rss.push(rss_parked);
                measured.push(made);
                real_floor.add(floor.round().await?);
            }
        }
    }
    let mut floor = floor.context("the ideal fan-out did not start")?;
    // The server reports a change's fan-out when the next one is durable.
    let end = writer.create("round/end", b"x", None, None).await?;
    // After the warm-up every watch waits on a connection that has served requests (its
    // buffers grown): the steady state a real cluster's rendezvous lives in.
    println!(
        "server rss with {agents} parked watches, rounds 1-{ROUNDS}: {}",
        parked_rss.join(" / ")
    );
    let per_watch = |r: &str| (kb(r) - kb(&rss_start)) as f64 / agents as f64;
    if let Some(last) = parked_rss.last() {
        println!(
            "per parked watch (round {ROUNDS}, above the start): {:.1} KiB = {:.1} MiB per 1,000",
            per_watch(last),
            per_watch(last) * 1000.0 / 1024.0
        );
    }
    println!("load average after the rounds: {}", loadavg());
    print_server_figures(&fanouts, &measured);
    // The same rounds with watchers as lean as the ideal's (`lean`): the agents' reqwest
    // client closes its connections first, so the server holds one per watcher again.
    drop(clients);
    let keys = Arc::new(protocol::seal::ClusterKeys::derive(&secret));
    let target = lean::Target {
        port,
        pid,
        keys,
        cert_sha256: &cert.cert_sha256,
    };
    let lean_polls = lean::run(
        &target,
        &writer,
        agents,
        ROUNDS,
        end,
        lean::Mode::LongPoll,
        &mut floor,
    )
    .await;
    let lean_streams = match writer.list("round/").await {
        Ok((now, _)) => {
            lean::run(
                &target,
                &writer,
                agents,
                ROUNDS,
                now,
                lean::Mode::Stream,
                &mut floor,
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    println!("server rss at end: {}  (peak {})", rss(pid)?, hwm(pid)?);
    drop(writer);
    drop(server);
    drop(floor);
    let ((lean_polls, polls_floor), (lean_streams, streams_floor)) = (lean_polls?, lean_streams?);

    let phases = [
        (
            if long_poll {
                "the agents' client, long-poll"
            } else {
                "the agents' client, streaming watch"
            },
            &real,
            &real_floor,
        ),
        (
            "lean watchers, long-poll (hand-written signed HTTP/1.1, no reqwest)",
            &lean_polls,
            &polls_floor,
        ),
        (
            "lean watchers, streaming (one signed request, a chunk per change)",
            &lean_streams,
            &streams_floor,
        ),
    ];
    let ideal = "the ideal fan-out between its rounds (one TLS write and read per watcher, no HTTP, signature, JSON or store)";
    for (what, figures, floor) in phases {
        print_rounds(&format!("change-to-notify, {what}"), figures, agents);
        print_rounds(ideal, floor, agents);
    }
    println!("against the ideal of the same minutes (the lean watchers': the server's own share):");
    for (what, figures, floor) in phases {
        print_ratios(what, figures, floor);
    }
    Ok(())
}

/// How long a round waits after its watches were sent before making the change: time for
/// every watch to reach the server and park.
fn park_time(agents: usize) -> Duration {
    Duration::from_millis(500 + agents as u64 / 10)
}

/// The `p` quantile (0..=1) of `sorted`, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One watch round: each watcher's latency from the change to its answer read, and the
/// CPU from the change to the last answer.
struct Round {
    latencies: Vec<Duration>,
    cpu: CpuSpent,
}

impl Round {
    fn new(latencies: Vec<Duration>) -> Round {
        Round {
            latencies,
            cpu: CpuSpent::default(),
        }
    }
}

/// What a run of watch rounds measured (the agents' client's, the lean watchers' or the
/// ideal fan-out's).
#[derive(Debug, Default)]
struct Figures {
    /// Change sent to each watcher's answer read, every measured round, sorted.
    latencies: Vec<Duration>,
    cpu: CpuSpent,
    rounds: usize,
}

impl Figures {
    fn add(&mut self, round: Round) {
        self.latencies.extend(round.latencies);
        self.latencies.sort_unstable();
        self.cpu.add(&round.cpu);
        self.rounds += 1;
    }
}

/// `latency`'s p50/p99/max and the CPU per answer of `f`, and that CPU spread over the
/// machine's cores per round: next to the p99 it says whether a round's latency is work
/// done (the two close) or time spent waiting.
fn print_rounds(latency: &str, f: &Figures, agents: usize) {
    let pct = |p: f64| percentile(&f.latencies, p);
    let rounds = f.rounds.max(1);
    println!(
        "{latency} over {rounds} rounds x {agents}: p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    let answers = f.latencies.len().max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / answers;
    let (server, client) = (&f.cpu.server, &f.cpu.client);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_round = (server.total() + client.total()) / (rounds * cores) as u32;
    println!(
        "  cpu from each change to its last answer: server {:.1} us per answer (user {:.1}, kernel {:.1}), bench client {:.1} (user {:.1}, kernel {:.1}); a round's over {cores} cores {per_round:.2?}",
        us(server.total()),
        us(server.user),
        us(server.kernel),
        us(client.total()),
        us(client.user),
        us(client.kernel),
    );
}

/// p50/p99/max of `real`'s latencies over `ideal`'s.
fn print_ratios(what: &str, real: &Figures, ideal: &Figures) {
    let ratio = |p: f64| {
        percentile(&real.latencies, p).as_secs_f64() / percentile(&ideal.latencies, p).as_secs_f64()
    };
    println!(
        "  {what}: p50 {:.2}x  p99 {:.2}x  max {:.2}x",
        ratio(0.50),
        ratio(0.99),
        ratio(1.0)
    );
}

/// The length on the wire of a streaming watch's `line`-byte line: one HTTP/1.1 chunk
/// (its size in hex, CRLF, the line, CRLF).
fn chunk_len(line: usize) -> usize {
    format!("{line:x}\r\n").len() + line + 2
}

/// One `watch fan-out` line of the server: revision and figures in microseconds.
#[derive(Debug, Clone, Copy)]
struct Fanout {
    revision: u64,
    watchers: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

type Fanouts = Arc<std::sync::Mutex<Vec<Fanout>>>;

/// Reads the server's stderr: `watch fan-out` lines are kept, the rest passed on.
fn server_figures(stderr: std::process::ChildStderr) -> Fanouts {
    use std::io::BufRead;
    let seen: Fanouts = Arc::default();
    let kept = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            match parse_fanout(&line) {
                Some(f) => kept.lock().unwrap_or_else(|p| p.into_inner()).push(f),
                None => eprintln!("server: {line}"),
            }
        }
    });
    seen
}

fn parse_fanout(line: &str) -> Option<Fanout> {
    let line = &strip_ansi(line);
    if !line.contains("watch fan-out") {
        return None;
    }
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    Some(Fanout {
        revision: field("revision")?,
        watchers: field("watchers")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        max_us: field("max_us")?,
    })
}

/// `line` without terminal colour sequences (`ESC [ … m`), which the server's log may carry.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The server's figures for the measured rounds' changes (polled for: the last one is
/// written when the end marker is durable).
fn print_server_figures(fanouts: &Fanouts, measured: &[u64]) {
    let ms = Duration::from_micros;
    let mut rows = Vec::new();
    for _ in 0..100 {
        let seen = fanouts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        rows = measured
            .iter()
            .filter_map(|r| seen.iter().find(|f| f.revision == *r).copied())
            .collect();
        if rows.len() == measured.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if rows.is_empty() {
        println!("server's own fan-out figures: none (this server does not report them)");
        return;
    }
    for (i, f) in rows.iter().enumerate() {
        println!(
            "server fan-out, round {}: {} watchers answered, durable-to-answer p50 {:.2?}  p99 {:.2?}  max {:.2?}",
            i + 1,
            f.watchers,
            ms(f.p50_us),
            ms(f.p99_us),
            ms(f.max_us)
        );
    }
    let worst = rows.iter().map(|f| f.p99_us).max().unwrap_or(0);
    println!(
        "server fan-out over {} rounds: worst round's p99 {:.2?}",
        rows.len(),
        ms(worst)
    );
}

/// The loopback address the `group`-th pool of agents connects from: 127.1.x.y, never
/// the server's 127.0.0.1.
fn source_address(group: usize) -> std::net::IpAddr {
    let [_, _, hi, lo] = u32::try_from(group).unwrap_or(u32::MAX).to_be_bytes();
    std::net::Ipv4Addr::new(127, 1, hi, lo).into()
}

async fn wait_ready(c: &Client) -> anyhow::Result<()> {
    for _ in 0..500 {
        if c.members().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("muster rendezvous did not come up")
}

/// Runs `f` for every client with at most `IN_FLIGHT` at once; returns the wall time.
async fn for_all<F, Fut>(clients: &Arc<Vec<Client>>, f: F) -> anyhow::Result<Duration>
where
    F: Fn(Client, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), protocol::ClientError>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().cloned().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let fut = f(c, i);
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn rss(pid: u32) -> anyhow::Result<String> {
    status_field(pid, "VmRSS:")
}

/// User and kernel CPU time of a process so far (/proc/PID/stat, in clock ticks of 10 ms:
/// `CLK_TCK` is 100 on Linux). The kernel's share of a fan-out is its TCP sends (on
/// loopback with the receiving end's processing in the sender's context).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: Duration,
    kernel: Duration,
}

impl Cpu {
    fn of(pid: u32) -> anyhow::Result<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks = |i: usize| -> anyhow::Result<Duration> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .map(|t: u64| Duration::from_millis(t * 10))
                .with_context(|| format!("/proc/{pid}/stat field {i}"))
        };
        Ok(Cpu {
            user: ticks(11)?,
            kernel: ticks(12)?,
        })
    }

    fn total(&self) -> Duration {
        self.user + self.kernel
    }

    fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            kernel: self.kernel.saturating_sub(earlier.kernel),
        }
    }

    fn add(&mut self, more: &Cpu) {
        self.user += more.user;
        self.kernel += more.kernel;
    }
}

/// The server's and this process's CPU, read at a round's change.
struct CpuMark {
    server_pid: u32,
    server: Cpu,
    client: Cpu,
}

impl CpuMark {
    fn now(server_pid: u32) -> anyhow::Result<CpuMark> {
        Ok(CpuMark {
            server_pid,
            server: Cpu::of(server_pid)?,
            client: Cpu::of(std::process::id())?,
        })
    }

    /// Adds what both spent since this mark to `spent`.
    fn add_since(&self, spent: &mut CpuSpent) -> anyhow::Result<()> {
        spent.add(&CpuSpent {
            server: Cpu::of(self.server_pid)?.since(&self.server),
            client: Cpu::of(std::process::id())?.since(&self.client),
        });
        Ok(())
    }
}

/// CPU from each measured round's change to its last answer: the server's and the
/// bench client's.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSpent {
    server: Cpu,
    client: Cpu,
}

impl CpuSpent {
    fn add(&mut self, more: &CpuSpent) {
        self.server.add(&more.server);
        self.client.add(&more.client);
    }
}

/// "12604 kB" → 12604.
fn kb(v: &str) -> i64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages (other work on the same cores).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn hwm(pid: u32) -> anyhow::Result<String> {
    status_field(pid, "VmHWM:")
}
