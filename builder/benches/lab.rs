//! Assembly benchmark (issue #6, "Figures"): whole clusters assembled by `muster::lab` in
//! network namespaces on this machine (real rendezvous, agents, etcd, keepalived; kubeadm and
//! the API server are the STAND-INS of package `muster-tests`). Prints measured figures only:
//!
//! 1. assembly wall time against the ideal critical path measured in the same run: the
//!    `kubeadm init` of the initializing node + every control-plane `kubeadm join` one after
//!    the other + the worker joins packed into `workerJoinCap` parallel slots (longest first),
//!    each step as long as the stand-in's successful run took (its `commands.log`);
//! 2. VIP failover: the VIP holder halted (`Lab::stop`) until a TCP connect to VIP:6443 from
//!    a worker's namespace succeeds again, three times;
//! 3. the agents' VmRSS/VmHWM.
//!
//! Needs root and the binaries next to `muster` (`cargo build --workspace --bins`, or
//! `--release` for `cargo bench`); `MUSTER_BENCH_BINS=DIR` takes them from elsewhere.
//! Sizes: `CP+W[/CAP]` as arguments or `MUSTER_BENCH_SIZES=3+3,5+20` (default
//! `3+3,5+20/5,3+100/10`). Run: `cargo bench -p muster --bench lab -- 3+3`.
//! `MUSTER_BENCH_PATH=1` also prints the critical path segment by segment.
#![allow(clippy::expect_used, reason = "a benchmark, not shipped code")]

mod common;

use anyhow::{Context, bail};
use common::{Guard, bin_dir, sizes_arg};
use muster_lab::{Lab, UpOptions, netns};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The stand-in's command log under a node's root (`muster_standins::STATE_DIR` and
/// `kubeadm::COMMAND_LOG`): `<unix ms> <subcommand words> started|ok|failed` per line.
const COMMAND_LOG: &str = "var/lib/muster-standin/commands.log";
/// The agent's persisted state under a node's root (`model::node_files::AGENT_STATE`):
/// its phase history with start and end times (unix ms).
const AGENT_STATE: &str = "var/lib/nodeagent/state.json";
const STATE_DIR: &str = "/run/muster/bench-lab";
const FAILOVERS: usize = 3;
/// The least a health confirmation can take however fast its probes answer: the agent's
/// `HEALTHY_PROBES` consecutive healthy probes, `PROBE_INTERVAL_MS` apart at least.
const HEALTH_HOLD_MS: u64 = (nodeagent::bootstrap::state::HEALTHY_PROBES as u64 - 1)
    * nodeagent::bootstrap::state::PROBE_INTERVAL_MS;
const API_PORT: u16 = 6443;

#[derive(Debug, Clone, Copy)]
struct Size {
    control_planes: u32,
    workers: u32,
    cap: u32,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.control_planes, self.workers)
    }
}

fn parse_size(s: &str, default_cap: u32) -> anyhow::Result<Size> {
    let (counts, cap) = match s.split_once('/') {
        Some((c, k)) => (c, Some(k.parse().context("CAP")?)),
        None => (s, None),
    };
    let (cp, w) = counts
        .split_once('+')
        .with_context(|| format!("size {s}: expected CP+W[/CAP], e.g. 5+20/5"))?;
    let (control_planes, workers): (u32, u32) = (cp.parse()?, w.parse()?);
    let cap = cap.unwrap_or(match (control_planes, workers) {
        (5, 20) => 5,
        (3, 100) => 10,
        _ => default_cap,
    });
    Ok(Size {
        control_planes,
        workers,
        cap,
    })
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab benchmark needs root (network namespaces)");
    }
    let default: serde_yaml::Value = serde_yaml::from_str(muster_build::spec_source::DEFAULT_SPEC)?;
    let default_cap = default["spec"]["rendezvous"]["workerJoinCap"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .context("examples/default.yaml: spec.rendezvous.workerJoinCap")?;
    let list = sizes_arg("3+3,5+20/5,3+100/10");
    let sizes = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_size(s.trim(), default_cap))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bins = bin_dir()?;
    println!(
        "lab bench: sizes {list}; binaries from {}; {} cores; load {}",
        bins.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut results = Vec::new();
    // Measured per node in the previous size: (RSS KiB, state dir KiB).
    let mut per_node: Option<(u64, u64)> = None;
    for size in sizes {
        let nodes = u64::from(size.control_planes + size.workers);
        if let Some((rss, disk)) = per_node {
            let memory = fits(size, "memory", nodes, rss, mem_available_kib());
            let disk = fits(size, "disk", nodes, disk, disk_available_kib());
            if !(memory && disk) {
                continue;
            }
        }
        match run_size(size, &default, &bins) {
            Ok(r) => {
                per_node = Some((r.lab_rss_kib / nodes.max(1), r.disk_kib / nodes.max(1)));
                results.push(r);
            }
            Err(e) => println!("{size}: could not run: {e:#}"),
        }
    }
    print_table(&results);
    Ok(())
}

/// examples/default.yaml with the size's counts and worker join cap.
fn spec_for(size: Size, default: &serde_yaml::Value) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut v = default.clone();
    let first_worker = v["spec"]["network"]["addressPlan"]["workers"]
        .as_u64()
        .context("spec.network.addressPlan.workers")?;
    if first_worker + u64::from(size.workers) > 254 {
        bail!(
            "{size}: the default /24 address plan has no room for {} workers",
            size.workers
        );
    }
    v["metadata"]["name"] = "bench".into();
    v["spec"]["topology"]["controlPlanes"] = size.control_planes.into();
    v["spec"]["topology"]["workers"] = size.workers.into();
    v["spec"]["rendezvous"]["workerJoinCap"] = size.cap.into();
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::io::Write::write_all(&mut f, serde_yaml::to_string(&v)?.as_bytes())?;
    Ok(f)
}

struct SizeResult {
    size: Size,
    boot: Duration,
    wall: Duration,
    ideal: Ideal,
    path: CriticalPath,
    max_worker_joins: usize,
    retries: usize,
    failovers: Vec<Duration>,
    agent_rss_kib: Vec<u64>,
    agent_hwm_kib: Vec<u64>,
    /// Every process in every node namespace, summed (for the next size's memory check).
    lab_rss_kib: u64,
    /// The state dir after the failovers (for the next size's disk check).
    disk_kib: u64,
}

fn run_size(size: Size, default: &serde_yaml::Value, bins: &Path) -> anyhow::Result<SizeResult> {
    let spec_file = spec_for(size, default)?;
    let spec = muster_build::spec_source::load(Some(spec_file.path()))?;
    println!("{size}: creating the lab (worker join cap {})...", size.cap);
    let lab = Lab::create(&spec, &UpOptions::new(STATE_DIR, bins))?;
    let mut guard = Guard(Some(lab));
    let lab = guard.0.as_mut().context("lab")?;
    let started = Instant::now();
    let started_ms = protocol::clock::now_ms();
    lab.boot_all()?;
    let boot = started.elapsed();
    let names: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let patience = Duration::from_secs(120 + 10 * names.len() as u64);
    let mut done = 0;
    let wall = lab.wait_assembled(&names, started, patience, |c| {
        if c.to == "done" {
            done += 1;
            if done % 10 == 0 || done == names.len() {
                eprintln!(
                    "  {:>6.1}s {done}/{} done",
                    c.elapsed.as_secs_f64(),
                    names.len()
                );
            }
        }
    })?;
    println!(
        "{size}: assembled in {:.1} s (booting the {} nodes took {:.1} s of it)",
        wall.as_secs_f64(),
        names.len(),
        boot.as_secs_f64()
    );

    let logs = command_logs(lab)?;
    let ideal = ideal(&logs, size.cap)?;
    let spans = phase_spans(lab)?;
    let path = critical_path(&spans, &logs, started_ms).context("the agents' phase histories")?;
    if std::env::var_os("MUSTER_BENCH_PATH").is_some() {
        println!("{size}: the critical path (since first boot, length, node, phase):");
        for line in &path.trace {
            println!("  {line}");
        }
    }
    let max_worker_joins = max_concurrent(
        logs.iter()
            .filter(|l| l.role == "worker")
            .flat_map(|l| l.runs.iter().filter(|r| r.words == "join")),
    );
    let retries = logs
        .iter()
        .map(|l| {
            l.runs
                .iter()
                .filter(|r| r.words == "init" || r.words == "join")
                .count()
                .saturating_sub(1)
        })
        .sum();

    let (agent_rss_kib, agent_hwm_kib, lab_rss_kib) = rss(lab);
    let failovers = failover(lab, size)?;
    let disk_kib = disk_kib().unwrap_or(0);
    Ok(SizeResult {
        size,
        boot,
        wall,
        ideal,
        path,
        max_worker_joins,
        retries,
        failovers,
        agent_rss_kib,
        agent_hwm_kib,
        lab_rss_kib,
        disk_kib,
    })
}

/// One stand-in command from `started` to its outcome.
#[derive(Debug, Clone)]
struct Run {
    words: String,
    start_ms: u64,
    end_ms: u64,
    ok: bool,
}

struct NodeLog {
    role: String,
    runs: Vec<Run>,
}

fn command_logs(lab: &Lab) -> anyhow::Result<Vec<NodeLog>> {
    let mut out = Vec::new();
    for n in &lab.record().nodes {
        let path = n.root.join(COMMAND_LOG);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        out.push(NodeLog {
            role: n.role.clone(),
            runs: parse_runs(&text).with_context(|| path.display().to_string())?,
        });
    }
    Ok(out)
}

fn parse_runs(text: &str) -> anyhow::Result<Vec<Run>> {
    let mut open: Vec<(String, u64)> = Vec::new();
    let mut runs = Vec::new();
    for line in text.lines() {
        let mut parts: Vec<&str> = line.split_whitespace().collect();
        let (Some(outcome), true) = (parts.pop(), !parts.is_empty()) else {
            bail!("line {line:?}: expected `<ms> <words> <outcome>`");
        };
        let ms: u64 = parts[0].parse().with_context(|| format!("line {line:?}"))?;
        let words = parts[1..].join(" ");
        if outcome == "started" {
            open.push((words, ms));
        } else if let Some(i) = open.iter().rposition(|(w, _)| *w == words) {
            let (words, start_ms) = open.remove(i);
            runs.push(Run {
                words,
                start_ms,
                end_ms: ms,
                ok: outcome == "ok",
            });
        }
    }
    runs.sort_by_key(|r| r.start_ms);
    Ok(runs)
}

struct Ideal {
    init: Duration,
    cp_joins: Duration,
    worker_makespan: Duration,
}

impl Ideal {
    fn total(&self) -> Duration {
        self.init + self.cp_joins + self.worker_makespan
    }

    /// Workers may join as soon as the cluster is initialized, beside the control-plane
    /// joins (agent/src/bootstrap/state.rs): the shorter path that protocol allows.
    fn overlapped(&self) -> Duration {
        self.init + self.cp_joins.max(self.worker_makespan)
    }
}

fn took(r: &Run) -> Duration {
    Duration::from_millis(r.end_ms.saturating_sub(r.start_ms))
}

/// The critical path if nothing but the stand-in's own work took time: the successful init,
/// the successful control-plane joins one after the other, the successful worker joins in
/// `cap` slots (longest first; a schedule at most 4/3 of the optimal one and here, with
/// joins of near-equal length, the optimum).
fn ideal(logs: &[NodeLog], cap: u32) -> anyhow::Result<Ideal> {
    let ok = |role: &str, words: &str| -> Vec<Duration> {
        logs.iter()
            .filter(|l| l.role == role)
            .flat_map(|l| l.runs.iter().filter(|r| r.ok && r.words == words).map(took))
            .collect()
    };
    let inits = ok("control-plane", "init");
    let [init] = inits[..] else {
        bail!(
            "expected one successful `kubeadm init`, found {}",
            inits.len()
        );
    };
    let cp_joins = ok("control-plane", "join").into_iter().sum();
    let mut workers = ok("worker", "join");
    workers.sort_unstable_by(|a, b| b.cmp(a));
    let mut slots = vec![Duration::ZERO; cap.max(1) as usize];
    for d in workers {
        if let Some(s) = slots.iter_mut().min() {
            *s += d;
        }
    }
    Ok(Ideal {
        init,
        cp_joins,
        worker_makespan: slots.into_iter().max().unwrap_or_default(),
    })
}

/// One phase of an agent, from its `AGENT_STATE` history (unix ms; the open last phase
/// ends where it starts).
#[derive(Debug, Clone)]
struct Span {
    phase: String,
    start_ms: u64,
    end_ms: u64,
    /// A health confirmation's `healthyFromMs`: when its last run of healthy probes began.
    healthy_from_ms: Option<u64>,
}

struct NodeSpans {
    name: String,
    role: String,
    spans: Vec<Span>,
}

/// Every node's phase history, read right after assembly (before any failover).
fn phase_spans(lab: &Lab) -> anyhow::Result<Vec<NodeSpans>> {
    let mut out = Vec::new();
    for n in &lab.record().nodes {
        let path = n.root.join(AGENT_STATE);
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let spans = v["history"]
            .as_array()
            .with_context(|| format!("{}: no history", path.display()))?
            .iter()
            .filter_map(|h| {
                let start_ms = h["startedMs"].as_u64()?;
                Some(Span {
                    phase: h["phase"].as_str()?.to_string(),
                    start_ms,
                    end_ms: h["endedMs"].as_u64().unwrap_or(start_ms),
                    healthy_from_ms: h["healthyFromMs"].as_u64(),
                })
            })
            .collect();
        out.push(NodeSpans {
            name: n.name.clone(),
            role: n.role.clone(),
            spans,
        });
    }
    Ok(out)
}

/// Where a second of the critical path went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Namespace and daemon start until the agent's first phase.
    Boot,
    /// preflight, registering, configuring-lb.
    Startup,
    /// A wait with nobody to wait for: checking-init, electing (the first node).
    Rendezvous,
    /// From the event a waiting node waited for (the init published, a slot released) until
    /// it acted on it: its watch or poll wake-up and its acquire.
    Wake,
    /// initializing, cleaning-stale-member, joining, while the node's stand-in command
    /// (`kubeadm init`/`join`/`reset`, the k3s stand-in) ran: the distro's own work.
    Steps,
    /// initializing, cleaning-stale-member, joining, outside the node's stand-in commands:
    /// what the agent does around them (fetching and decrypting join material, lease
    /// renewals, writing files, starting units).
    AroundSteps,
    /// checking-health, verifying, until the last run of healthy probes began: what is
    /// probed (the API, through the VIP too after an init; the etcd member a voter) was not
    /// healthy yet. The component's own convergence, not the agent's.
    Converge,
    /// checking-health, verifying, from the last run of healthy probes on, beyond the
    /// guarantee's minimum hold: the probes' own time and the waits between them beyond
    /// that minimum.
    Health,
    /// The part of each health confirmation the guarantee itself demands: its healthy
    /// probes [`HEALTH_HOLD_MS`] apart at least, whatever the probes cost.
    HealthHold,
    /// releasing, releasing-join-slot: handing a slot over.
    Handoff,
    /// setting-up-addons, applying-addons, addons-failed: a control plane's add-ons (the
    /// apply, or waiting for another's record or lease).
    Addons,
    /// awaiting-ready: a control plane waiting for its Node `Ready`.
    NodeReady,
    /// compensating after a failure.
    Retry,
}

/// Phases that wait for another node (or, for the first node, for nobody).
fn is_wait(phase: &str) -> bool {
    matches!(
        phase,
        "checking-init"
            | "waiting-for-init"
            | "electing"
            | "acquiring-join-slot"
            | "awaiting-refresh"
            | "backoff"
    )
}

fn cause_of(phase: &str) -> Cause {
    match phase {
        "initializing" | "cleaning-stale-member" | "joining" => Cause::Steps,
        "checking-health" | "verifying" => Cause::Health,
        "releasing" | "releasing-join-slot" => Cause::Handoff,
        "setting-up-addons" | "applying-addons" | "addons-failed" => Cause::Addons,
        "awaiting-ready" => Cause::NodeReady,
        "compensating" => Cause::Retry,
        "publishing" => Cause::Rendezvous,
        p if is_wait(p) => Cause::Rendezvous,
        _ => Cause::Startup,
    }
}

/// The events a node of `role` waits for: the init published (`publishing` ends), a
/// control-plane slot released (a control plane's `releasing` ends), a worker slot released
/// (a worker's `releasing-join-slot` ends; an agent before that phase gave it back at the
/// end of `joining`).
fn unblocks(waiter_role: &str, role: &str, phase: &str) -> bool {
    phase == "publishing"
        || (waiter_role == "control-plane" && role == "control-plane" && phase == "releasing")
        || (waiter_role == "worker"
            && role == "worker"
            && matches!(phase, "joining" | "releasing-join-slot"))
}

/// The critical path walked back from the last node to become `done`: each second goes to
/// the cause of the phase the node on the path was in; a waiting node hands the path to
/// the node whose event (see `unblocks`) last came before it stopped waiting, and the time
/// in between is `Wake`. The causes sum to the path's length (first boot → last `done`).
struct CriticalPath {
    ms: Vec<(Cause, u64)>,
    end_ms: u64,
    start_ms: u64,
    hops: usize,
    /// The path's segments in time order, printed with `MUSTER_BENCH_PATH=1`.
    trace: Vec<String>,
}

impl CriticalPath {
    fn get(&self, c: Cause) -> Duration {
        Duration::from_millis(
            self.ms
                .iter()
                .filter(|(k, _)| *k == c)
                .map(|(_, v)| v)
                .sum(),
        )
    }

    fn length(&self) -> Duration {
        Duration::from_millis(self.end_ms.saturating_sub(self.start_ms))
    }
}

/// How much of `[from, to)` the node's stand-in commands ran in (their union).
fn covered(runs: &[Run], from: u64, to: u64) -> u64 {
    let mut clipped: Vec<(u64, u64)> = runs
        .iter()
        .map(|r| (r.start_ms.max(from), r.end_ms.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    clipped.sort_unstable();
    let (mut sum, mut reach) = (0, from);
    for (a, b) in clipped {
        let a = a.max(reach);
        if b > a {
            sum += b - a;
            reach = b;
        }
    }
    sum
}

/// `nodes` and `logs` hold the lab's nodes in the same order.
fn critical_path(
    nodes: &[NodeSpans],
    logs: &[NodeLog],
    start_ms: u64,
) -> anyhow::Result<CriticalPath> {
    let done_at = |n: &NodeSpans| {
        n.spans
            .iter()
            .find(|s| s.phase == "done")
            .map(|s| s.start_ms)
    };
    let (mut n, mut t) = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, done_at(n)?)))
        .max_by_key(|(_, t)| *t)
        .context("no node reached done")?;
    let end_ms = t;
    let mut ms = Vec::new();
    let mut trace = Vec::new();
    let mut hops = 0;
    // Each round moves `t` strictly back or hands over to an event strictly earlier than
    // the waiter's phase; bounded anyway.
    for _ in 0..1_000_000 {
        let spans = &nodes[n].spans;
        let Some(i) = spans.iter().rposition(|s| s.start_ms < t) else {
            ms.push((Cause::Boot, t.saturating_sub(start_ms)));
            trace.reverse();
            return Ok(CriticalPath {
                ms,
                end_ms,
                start_ms,
                hops,
                trace,
            });
        };
        let s = &spans[i];
        if !is_wait(&s.phase) {
            let len = t - s.start_ms;
            trace.push(format!(
                "{:>8} ms  {:>6} ms  {} {}",
                s.start_ms.saturating_sub(start_ms),
                len,
                nodes[n].name,
                s.phase
            ));
            match cause_of(&s.phase) {
                Cause::Health => {
                    // The path may enter the span before its end (`t`): only what lies
                    // before `t` counts.
                    let healthy_from = s.healthy_from_ms.unwrap_or(s.start_ms).clamp(s.start_ms, t);
                    let converging = healthy_from - s.start_ms;
                    let confirming = t - healthy_from;
                    let hold = confirming.min(HEALTH_HOLD_MS);
                    ms.push((Cause::Converge, converging));
                    ms.push((Cause::HealthHold, hold));
                    ms.push((Cause::Health, confirming - hold));
                }
                Cause::Steps => {
                    let ran = covered(&logs[n].runs, s.start_ms, t);
                    ms.push((Cause::Steps, ran));
                    ms.push((Cause::AroundSteps, len - ran));
                }
                cause => ms.push((cause, len)),
            }
            t = s.start_ms;
            continue;
        }
        let mut j = i;
        while j > 0 && is_wait(&spans[j - 1].phase) {
            j -= 1;
        }
        let block_start = spans[j].start_ms;
        let role = nodes[n].role.as_str();
        let event = nodes
            .iter()
            .enumerate()
            .filter(|(m, _)| *m != n)
            .flat_map(|(m, other)| {
                other
                    .spans
                    .iter()
                    .filter(|s| unblocks(role, &other.role, &s.phase))
                    .map(move |s| (m, s.end_ms))
            })
            .filter(|(_, u)| *u >= block_start && *u < t)
            .max_by_key(|(_, u)| *u);
        match event {
            Some((m, u)) => {
                ms.push((Cause::Wake, t - u));
                trace.push(format!(
                    "{:>8} ms  {:>6} ms  {} woke ({}), after {}",
                    u.saturating_sub(start_ms),
                    t - u,
                    nodes[n].name,
                    spans[i].phase,
                    nodes[m].name
                ));
                n = m;
                t = u;
                hops += 1;
            }
            None => {
                ms.push((Cause::Rendezvous, t - block_start));
                t = block_start;
            }
        }
    }
    bail!("the critical path did not end (node {})", nodes[n].name)
}

/// The most runs overlapping at one instant.
fn max_concurrent<'a>(runs: impl Iterator<Item = &'a Run>) -> usize {
    let mut edges: Vec<(u64, i32)> = runs
        .flat_map(|r| [(r.start_ms, 1), (r.end_ms, -1)])
        .collect();
    // An end sorts before a start at the same millisecond.
    edges.sort_unstable();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

/// `Field:   123 kB` of a /proc file, in KiB.
fn kib_field(path: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), field)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The agents' VmRSS and VmHWM (KiB), and the RSS of everything in the node namespaces.
fn rss(lab: &Lab) -> (Vec<u64>, Vec<u64>, u64) {
    let (mut rss, mut hwm, mut all) = (Vec::new(), Vec::new(), 0);
    for n in &lab.record().nodes {
        for pid in netns::pids(&n.ns) {
            let r = status_kib(pid, "VmRSS:").unwrap_or(0);
            all += r;
            if comm(pid) == "nodeagent" {
                rss.push(r);
                hwm.push(status_kib(pid, "VmHWM:").unwrap_or(0));
            }
        }
    }
    (rss, hwm, all)
}

fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// From inside `ns`: the time from `since` until `addr` accepts a TCP connection.
fn until_connect(
    ns: &str,
    addr: SocketAddr,
    since: Instant,
    patience: Duration,
) -> anyhow::Result<Duration> {
    let polled = netns::in_netns(ns, move || {
        while since.elapsed() < patience {
            if connects(addr) {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })?;
    polled.with_context(|| format!("{addr} did not accept within {patience:?}"))
}

/// Halts the VIP holder FAILOVERS times, each time until VIP:6443 answers again from a
/// worker's namespace, then boots it again and waits until it is done and the VIP is settled.
fn failover(lab: &mut Lab, size: Size) -> anyhow::Result<Vec<Duration>> {
    let vip: Ipv4Addr = lab.record().vip.context("the spec has no VIP")?;
    let vip_addr = SocketAddr::from((vip, API_PORT));
    let observer = lab
        .record()
        .nodes
        .iter()
        .find(|n| n.role == "worker")
        .context("no worker to observe from")?
        .ns
        .clone();
    let patience = Duration::from_secs(60);
    let mut out = Vec::new();
    for i in 1..=FAILOVERS {
        until_connect(&observer, vip_addr, Instant::now(), patience)?;
        let holders = lab.vip_holders();
        let [holder] = &holders[..] else {
            bail!("expected one VIP holder, found {holders:?}");
        };
        let holder = holder.clone();
        let t0 = Instant::now();
        lab.stop(&holder)?;
        let stopped = t0.elapsed();
        let back = until_connect(&observer, vip_addr, t0, patience)?;
        println!(
            "{size}: failover {i}: halted {holder} (stop took {:.2} s), VIP:{API_PORT} answered after {:.2} s, now held by {:?}",
            stopped.as_secs_f64(),
            back.as_secs_f64(),
            lab.vip_holders()
        );
        out.push(back);
        lab.start(&holder)?;
        let own = SocketAddr::from((lab.node(&holder)?.ip, API_PORT));
        until_connect(&observer, own, Instant::now(), patience)?;
        lab.wait_assembled(
            std::slice::from_ref(&holder),
            Instant::now(),
            patience,
            |_| {},
        )?;
        settle(lab, patience)?;
    }
    Ok(out)
}

/// Waits until one node has held the VIP for `SETTLED` (VRRP done with the restarted node).
fn settle(lab: &Lab, patience: Duration) -> anyhow::Result<()> {
    const SETTLED: Duration = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut since = (Vec::new(), Instant::now());
    while t0.elapsed() < patience {
        let now = lab.vip_holders();
        if now != since.0 {
            since = (now, Instant::now());
        } else if since.0.len() == 1 && since.1.elapsed() >= SETTLED {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "the VIP did not settle on one holder within {patience:?}: {:?}",
        since.0
    )
}

/// Prints the check of `nodes` x the measured `per` node (KiB) against what is available.
fn fits(size: Size, what: &str, nodes: u64, per: u64, avail: Option<u64>) -> bool {
    let Some(avail) = avail else {
        println!("{size}: {what} check: cannot tell what is available");
        return true;
    };
    let need = nodes * per;
    println!(
        "{size}: {what} check: {nodes} nodes x {} MiB measured per node in the previous size = {} MiB, {} MiB available",
        per / 1024,
        need / 1024,
        avail / 1024
    );
    if need > avail {
        println!("{size}: SKIPPED: it would not fit in the {what} available");
    }
    need <= avail
}

/// KiB free on the file system of the state dir.
fn disk_available_kib() -> Option<u64> {
    let dir = Path::new(STATE_DIR).parent()?;
    std::fs::create_dir_all(dir).ok()?;
    let out = std::process::Command::new("df")
        .args(["-k", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// KiB the lab's state dir takes (node roots: the payload unpacked, etcd data, logs).
fn disk_kib() -> Option<u64> {
    let out = std::process::Command::new("du")
        .args(["-sk", STATE_DIR])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mem_available_kib() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

fn median<T: Copy + Ord>(v: &[T]) -> Option<T> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn print_table(results: &[SizeResult]) {
    println!();
    println!(
        "assembly (wall: first boot to every node done; ideal: init + control-plane joins + worker joins packed into CAP slots, as long as the stand-ins took in this run; ideal||: the worker joins beside the control-plane joins, as the protocol allows; +hold: the ideal plus the health guarantee's minimum hold on the critical path ({HEALTH_HOLD_MS} ms per confirmation), the least the protocol allows)"
    );
    println!(
        "{:<7} {:>5} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>7} {:>8} {:>7} {:>8} {:>7}",
        "size",
        "nodes",
        "cap",
        "boot s",
        "wall s",
        "ideal s",
        "init s",
        "cpj s",
        "wrk s",
        "ratio",
        "ideal|| s",
        "ratio||",
        "max wj",
        "retries",
        "+hold s",
        "ratio+h"
    );
    for r in results {
        let ratio = |ideal: Duration| r.wall.as_secs_f64() / ideal.as_secs_f64().max(f64::EPSILON);
        println!(
            "{:<7} {:>5} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6.2} {:>9} {:>7.2} {:>8} {:>7} {:>8} {:>7.2}",
            r.size.to_string(),
            r.size.control_planes + r.size.workers,
            r.size.cap,
            secs(r.boot),
            secs(r.wall),
            secs(r.ideal.total()),
            secs(r.ideal.init),
            secs(r.ideal.cp_joins),
            secs(r.ideal.worker_makespan),
            ratio(r.ideal.total()),
            secs(r.ideal.overlapped()),
            ratio(r.ideal.overlapped()),
            r.max_worker_joins,
            r.retries,
            secs(r.ideal.total() + r.path.get(Cause::HealthHold)),
            ratio(r.ideal.total() + r.path.get(Cause::HealthHold))
        );
    }
    println!();
    println!(
        "overhead, s: the critical path (first boot to the last node done) walked back through the agents' phase histories; \
         a waiting node hands it to the node whose event it waited for (init published, slot released). \
         wall - ideal = boot + startup + rendezvous + wake + converge + hold + health + handoff + addons + ready + retry + around + (steps - ideal) + lag. \
         wake: waiting on a watch or poll after the awaited event; converge: a health confirmation until its last run of healthy probes began (what it probes not healthy yet); \
         hold: the health guarantee's minimum ({HEALTH_HOLD_MS} ms per confirmation); \
         health: confirming beyond that (the probes' own time); handoff: giving a slot back; \
         addons: a control plane's add-ons; ready: a control plane awaiting its Node Ready; \
         steps: the stand-ins' init/join commands running on the path; around: the agent's own work in those phases outside the commands"
    );
    println!(
        "{:<7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>10} {:>7} {:>8} {:>5} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>5} {:>5}",
        "size",
        "wall",
        "ideal",
        "ratio",
        "over",
        "path",
        "boot",
        "startup",
        "rendezvous",
        "wake",
        "converge",
        "hold",
        "health",
        "handoff",
        "addons",
        "ready",
        "retry",
        "around",
        "steps",
        "st-ideal",
        "lag",
        "hops"
    );
    for r in results {
        let p = &r.path;
        let s = |c: Cause| secs(p.get(c));
        let signed = |a: Duration, b: Duration| format!("{:.1}", a.as_secs_f64() - b.as_secs_f64());
        println!(
            "{:<7} {:>6} {:>6} {:>6.2} {:>6} {:>6} {:>6} {:>7} {:>10} {:>7} {:>8} {:>5} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>5} {:>5}",
            r.size.to_string(),
            secs(r.wall),
            secs(r.ideal.total()),
            r.wall.as_secs_f64() / r.ideal.total().as_secs_f64().max(f64::EPSILON),
            signed(r.wall, r.ideal.total()),
            secs(p.length()),
            s(Cause::Boot),
            s(Cause::Startup),
            s(Cause::Rendezvous),
            s(Cause::Wake),
            s(Cause::Converge),
            s(Cause::HealthHold),
            s(Cause::Health),
            s(Cause::Handoff),
            s(Cause::Addons),
            s(Cause::NodeReady),
            s(Cause::Retry),
            s(Cause::AroundSteps),
            s(Cause::Steps),
            signed(p.get(Cause::Steps), r.ideal.total()),
            signed(r.wall, p.length()),
            p.hops
        );
    }
    println!();
    println!(
        "VIP failover (holder halted until VIP:{API_PORT} accepts a TCP connect from a worker)"
    );
    for r in results {
        let each: Vec<String> = r
            .failovers
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        println!(
            "{:<7} each {} s, median {} s",
            r.size.to_string(),
            each.join(" / "),
            median(&r.failovers).map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
        );
    }
    println!();
    println!("agent memory (nodeagent per node after assembly, MiB: min / median / max)");
    for r in results {
        let mib = |v: &[u64]| {
            let (lo, mid, hi) = (v.iter().min(), median(v), v.iter().max());
            match (lo, mid, hi) {
                (Some(lo), Some(mid), Some(hi)) => format!(
                    "{:.1} / {:.1} / {:.1}",
                    *lo as f64 / 1024.0,
                    mid as f64 / 1024.0,
                    *hi as f64 / 1024.0
                ),
                _ => "-".into(),
            }
        };
        println!(
            "{:<7} {} agents: VmRSS {}, VmHWM {}; every process of the lab's nodes: {:.0} MiB; state dir {:.0} MiB",
            r.size.to_string(),
            r.agent_rss_kib.len(),
            mib(&r.agent_rss_kib),
            mib(&r.agent_hwm_kib),
            r.lab_rss_kib as f64 / 1024.0,
            r.disk_kib as f64 / 1024.0
        );
    }
}
