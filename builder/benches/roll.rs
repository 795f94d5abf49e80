//! Upgrade-roll benchmark (issue 15): a cluster assembled in network namespaces by
//! `muster::lab` at v1.31.4 (the built-in default's version) is rebuilt at v1.32.0,
//! `muster upgrade` publishes it, and the agents roll it themselves. Real: the build, the
//! rendezvous (lock, audit log), the agents, etcd, keepalived; STAND-INS (package
//! `muster-tests`): kubeadm, the kubelet, the API server. Prints measured figures only:
//!
//! - the roll's wall time, from `muster upgrade` to every node's persisted upgrade phase
//!   `done`, against its ideal measured in the same run: each node's `kubeadm upgrade`
//!   commands as long as the kubeadm stand-in's runs took (its `commands.log`), control
//!   planes one after the other, workers packed into `maxUnavailable` parallel lanes;
//! - where the rest went, from the rendezvous audit log's upgrade-lock grants and releases:
//!   before the first grant (fetching and verifying the release, the first turn), while a
//!   node held the lock beyond its kubeadm commands (cordon, drain, kubelet restart, waiting
//!   for the Node Ready at the new version, uncordon, report), between one release and the
//!   next grant (hand-off), and after the last release.
//!
//! Needs root and the binaries next to `muster` (`cargo build --workspace --bins`);
//! `MUSTER_BENCH_BINS=DIR` takes them from elsewhere. Sizes `CP+W` as arguments or
//! `MUSTER_BENCH_SIZES` (default `3+3,5+20`). Run it in the dev profile, where the
//! binaries already are: `cargo test --workspace --bench roll -- 3+3` (or `cargo bench`
//! after a `--release` build of the binaries).
#![allow(clippy::expect_used, reason = "a benchmark, not shipped code")]

mod common;

use anyhow::{Context, bail};
use common::{Guard, bin_dir, sizes_arg};
use muster_lab::{Lab, UpOptions, netns};
use protocol::wire::{AuditEntry, AuditEvent};
use std::path::Path;
use std::time::{Duration, Instant};

const FROM: &str = "v1.31.4";
const TO: &str = "v1.32.0";
/// The kubeadm stand-in's command log under a node's root (`muster_standins::STATE_DIR`
/// and `kubeadm::COMMAND_LOG`): `<unix ms> <subcommand words> started|ok|failed` per line.
const COMMAND_LOG: &str = "var/lib/muster-standin/commands.log";
/// The agent's persisted upgrade phase (`nodeagent::upgrade::store::UPGRADE_STATE`).
const UPGRADE_STATE: &str = "var/lib/nodeagent/upgrade.json";
const STATE_DIR: &str = "/run/muster/bench-roll";

fn main() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the roll benchmark needs root (network namespaces)");
    }
    self_check()?;
    let list = sizes_arg("3+3,5+20");
    let bins = bin_dir()?;
    println!(
        "roll bench: {FROM} -> {TO}, sizes {list}; binaries from {}; {} cores; load {}",
        bins.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut rows = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (cp, w) = s
            .split_once('+')
            .with_context(|| format!("size {s}: expected CP+W, e.g. 5+20"))?;
        let (cp, w): (u32, u32) = (cp.parse()?, w.parse()?);
        match run(cp, w, &bins) {
            Ok(r) => rows.push(r),
            Err(e) => println!("{s}: could not run: {e:#}"),
        }
    }
    print_table(&rows);
    Ok(())
}

/// The built-in default with `cp` control planes and `w` workers at `version`, written
/// under `dir` and loaded.
fn spec_at(
    dir: &Path,
    cp: u32,
    w: u32,
    version: &str,
) -> anyhow::Result<muster_build::spec_source::LoadedSpec> {
    let mut v: serde_yaml::Value = serde_yaml::from_str(muster_build::spec_source::DEFAULT_SPEC)?;
    v["metadata"]["name"] = "roll".into();
    v["spec"]["topology"]["controlPlanes"] = cp.into();
    v["spec"]["topology"]["workers"] = w.into();
    v["spec"]["distribution"]["version"] = version.into();
    let path = dir.join(format!("spec-{cp}+{w}-{version}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&v)?)?;
    Ok(muster_build::spec_source::load(Some(&path))?)
}

struct Row {
    size: String,
    max_unavailable: u32,
    wall: Duration,
    ideal: Duration,
    kubeadm: Duration,
    lead_in: Duration,
    held_beyond_kubeadm: Duration,
    handoff: Duration,
    tail: Duration,
    grants: usize,
}

fn run(cp: u32, w: u32, bins: &Path) -> anyhow::Result<Row> {
    let size = format!("{cp}+{w}");
    let scratch = tempfile::tempdir()?;
    let spec = spec_at(scratch.path(), cp, w, FROM)?;
    let max_unavailable = spec.cluster.distribution.max_unavailable;
    println!("{size}: assembling at {FROM}...");
    let opts = UpOptions::new(STATE_DIR, bins);
    let mut guard = Guard(Some(Lab::create(&spec, &opts)?));
    let lab = guard.0.as_mut().context("lab")?;
    let names: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let began = Instant::now();
    lab.boot_all()?;
    let patience = Duration::from_secs(120 + 10 * names.len() as u64);
    let assembled = lab.wait_assembled(&names, began, patience, |_| {})?;
    println!("{size}: assembled in {:.1} s", assembled.as_secs_f64());

    let build_dir = lab.record().build_dir.clone();
    let bopts = muster_build::bake::BuildOptions {
        agent_bin: opts.agent_bin.clone(),
        mtime: 0,
        helm: opts.helm.clone(),
        addons: muster_build::addons::source::Source::from_options(opts.artifacts.clone()),
    };
    muster_build::bake::build(&spec_at(scratch.path(), cp, w, TO)?, &build_dir, &bopts)?;
    let roll_ms = protocol::clock::now_ms();
    let started = Instant::now();
    let mut cmd = netns::command(&lab.record().bridge_ns, &[], bins.join("muster"));
    cmd.arg("upgrade").arg("--out").arg(&build_dir);
    let out = netns::run(cmd, "muster upgrade", Duration::from_secs(60))?;
    if !out.ok() {
        bail!("muster upgrade: {}", out.all());
    }
    let deadline = Instant::now() + Duration::from_secs(120 + 20 * names.len() as u64);
    let mut last = 0;
    let wall = loop {
        let phases: Vec<String> = names.iter().map(|n| phase(lab, n)).collect();
        if let Some((n, _)) = names.iter().zip(&phases).find(|(_, p)| *p == "stopped") {
            bail!("the roll stopped at {n} (see its upgrade.json)");
        }
        let done = phases.iter().filter(|p| *p == "done").count();
        if done == names.len() {
            break started.elapsed();
        }
        if done / 5 != last / 5 {
            eprintln!(
                "  {:>6.1}s {done}/{} done",
                started.elapsed().as_secs_f64(),
                names.len()
            );
        }
        last = done;
        if Instant::now() > deadline {
            bail!("the roll did not finish: {phases:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let end_ms = roll_ms + u64::try_from(wall.as_millis())?;
    println!("{size}: rolled to {TO} in {:.1} s", wall.as_secs_f64());

    // The stand-in's kubeadm upgrade commands of the roll, per node.
    let mut cps_ms = Vec::new();
    let mut workers_ms = Vec::new();
    let mut kubeadm_of = std::collections::BTreeMap::new();
    for n in &lab.record().nodes {
        let path = n.root.join(COMMAND_LOG);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let ms: u64 = upgrade_runs(&text, roll_ms)
            .with_context(|| path.display().to_string())?
            .iter()
            .map(|(s, e)| e - s)
            .sum();
        kubeadm_of.insert(n.name.clone(), ms);
        if n.role == "control-plane" {
            cps_ms.push(ms);
        } else {
            workers_ms.push(ms);
        }
    }
    let ideal_ms = cps_ms.iter().sum::<u64>() + lanes(&mut workers_ms, max_unavailable);
    let held = lock_holds(&lab.audit()?)?;
    let a = attribute(&held, &kubeadm_of, roll_ms, end_ms);
    Ok(Row {
        size,
        max_unavailable,
        wall,
        ideal: Duration::from_millis(ideal_ms),
        kubeadm: Duration::from_millis(kubeadm_of.values().sum()),
        lead_in: Duration::from_millis(a.lead_in),
        held_beyond_kubeadm: Duration::from_millis(a.held_beyond_kubeadm),
        handoff: Duration::from_millis(a.handoff),
        tail: Duration::from_millis(a.tail),
        grants: held.len(),
    })
}

/// The label of a node's persisted upgrade phase (`""` before it wrote one).
fn phase(lab: &Lab, node: &str) -> String {
    let Ok(n) = lab.node(node) else {
        return String::new();
    };
    std::fs::read(n.root.join(UPGRADE_STATE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `(start, end)` in unix ms of every successful `upgrade …` command started at or after
/// `since_ms`, from the kubeadm stand-in's command log.
fn upgrade_runs(text: &str, since_ms: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut open: Vec<(String, u64)> = Vec::new();
    let mut runs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (ms, rest) = line
            .split_once(' ')
            .with_context(|| format!("line {line:?}: no time"))?;
        let ms: u64 = ms.parse().with_context(|| format!("line {line:?}: time"))?;
        let (words, outcome) = rest
            .rsplit_once(' ')
            .with_context(|| format!("line {line:?}: no outcome"))?;
        match outcome {
            "started" => open.push((words.to_string(), ms)),
            "ok" | "failed" => {
                let i = open
                    .iter()
                    .rposition(|(w, _)| w == words)
                    .with_context(|| format!("line {line:?}: ends a command never started"))?;
                let (_, start) = open.remove(i);
                if outcome == "ok" && words.starts_with("upgrade") && start >= since_ms {
                    runs.push((start, ms));
                }
            }
            other => bail!("line {line:?}: outcome {other:?}"),
        }
    }
    Ok(runs)
}

/// The length of `jobs` packed into `lanes` parallel lanes, longest first (each to the
/// lane that frees first).
fn lanes(jobs: &mut [u64], lanes: u32) -> u64 {
    jobs.sort_unstable_by(|a, b| b.cmp(a));
    let mut ends = vec![0u64; usize::try_from(lanes.max(1)).unwrap_or(1)];
    for j in jobs.iter() {
        if let Some(e) = ends.iter_mut().min() {
            *e += j;
        }
    }
    ends.into_iter().max().unwrap_or(0)
}

/// One upgrade-lock hold from the audit log: holder, granted and released (or expired) at.
#[derive(Debug, Clone, PartialEq)]
struct Hold {
    holder: String,
    from_ms: u64,
    to_ms: u64,
}

/// The upgrade lock's holds, in grant order; a grant never released is an error (the
/// roll is over when this is read).
fn lock_holds(audit: &[AuditEntry]) -> anyhow::Result<Vec<Hold>> {
    let mut open: Vec<(u64, String, u64)> = Vec::new();
    let mut holds = Vec::new();
    for e in audit
        .iter()
        .filter(|e| e.subject == protocol::release::UPGRADE_SEMAPHORE)
    {
        let Some(token) = e.token else { continue };
        match e.event {
            AuditEvent::Granted => {
                open.push((token, e.holder.clone().unwrap_or_default(), e.time_ms))
            }
            AuditEvent::Released | AuditEvent::Expired => {
                if let Some(i) = open.iter().position(|(t, _, _)| *t == token) {
                    let (_, holder, from_ms) = open.remove(i);
                    holds.push(Hold {
                        holder,
                        from_ms,
                        to_ms: e.time_ms,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some((t, h, _)) = open.first() {
        bail!("upgrade lock token {t} of {h} still held after the roll");
    }
    holds.sort_by_key(|h| h.from_ms);
    Ok(holds)
}

#[derive(Debug, PartialEq)]
struct Attribution {
    lead_in: u64,
    held_beyond_kubeadm: u64,
    handoff: u64,
    tail: u64,
}

/// Splits the roll `[start_ms, end_ms]` by the lock's holds: before the first grant,
/// each hold beyond its holder's kubeadm time, the gaps between holds (time nobody held
/// the lock; overlapping holds of `maxUnavailable` > 1 add no gap), after the last.
fn attribute(
    holds: &[Hold],
    kubeadm_ms: &std::collections::BTreeMap<String, u64>,
    start_ms: u64,
    end_ms: u64,
) -> Attribution {
    let (Some(first), Some(last_end)) = (holds.first(), holds.iter().map(|h| h.to_ms).max()) else {
        return Attribution {
            lead_in: end_ms.saturating_sub(start_ms),
            held_beyond_kubeadm: 0,
            handoff: 0,
            tail: 0,
        };
    };
    let mut handoff = 0;
    let mut covered_to = first.to_ms;
    for h in &holds[1..] {
        handoff += h.from_ms.saturating_sub(covered_to);
        covered_to = covered_to.max(h.to_ms);
    }
    // A node's kubeadm time counts once, against its last hold (a resumed node holds twice).
    let mut seen = std::collections::BTreeSet::new();
    let held_beyond_kubeadm = holds
        .iter()
        .rev()
        .map(|h| {
            let k = if seen.insert(h.holder.clone()) {
                kubeadm_ms.get(&h.holder).copied().unwrap_or(0)
            } else {
                0
            };
            (h.to_ms - h.from_ms).saturating_sub(k)
        })
        .sum();
    Attribution {
        lead_in: first.from_ms.saturating_sub(start_ms),
        held_beyond_kubeadm,
        handoff,
        tail: end_ms.saturating_sub(last_end),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<6} {:>4} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>10} {:>8} {:>6} {:>6}",
        "size",
        "maxU",
        "wall s",
        "ideal s",
        "ratio",
        "kubeadm",
        "lead-in",
        "held-rest",
        "handoff",
        "tail",
        "grants"
    );
    for r in rows {
        let ratio = r.wall.as_secs_f64() / r.ideal.as_secs_f64().max(0.001);
        println!(
            "{:<6} {:>4} {:>8} {:>8} {:>5.2}x | {:>8} {:>8} {:>10} {:>8} {:>6} {:>6}",
            r.size,
            r.max_unavailable,
            secs(r.wall),
            secs(r.ideal),
            ratio,
            secs(r.kubeadm),
            secs(r.lead_in),
            secs(r.held_beyond_kubeadm),
            secs(r.handoff),
            secs(r.tail),
            r.grants
        );
    }
    println!(
        "ideal: every node's kubeadm upgrade commands as the stand-in ran them, control planes in turn, workers in maxUnavailable lanes; \
         kubeadm: their sum; lead-in: publish to the first lock grant (fetch, verify, first turn); \
         held-rest: lock held beyond kubeadm (cordon, drain, kubelet restart, Ready at the new version, uncordon, report); \
         handoff: nobody held the lock; tail: last release to every node done"
    );
}

/// Checks of the pure parts on fixed inputs, run before every benchmark (`harness =
/// false` runs no `#[test]`): a wrong parse or attribution would print wrong figures.
fn self_check() -> anyhow::Result<()> {
    let log = "100 init started\n900 init ok\n1000 upgrade plan started\n1200 upgrade plan ok\n\
               1300 upgrade apply started\n2300 upgrade apply failed\n\
               2400 upgrade apply started\n3400 upgrade apply ok\n";
    let runs = upgrade_runs(log, 1000)?;
    if runs != [(1000, 1200), (2400, 3400)] {
        bail!("self-check: upgrade runs {runs:?}");
    }
    if upgrade_runs(log, 1001)? != [(2400, 3400)] || upgrade_runs("5 join ok\n", 0).is_ok() {
        bail!("self-check: upgrade runs since / unstarted end");
    }
    if lanes(&mut [3, 1, 2, 2], 2) != 4 || lanes(&mut [3, 1, 2], 1) != 6 {
        bail!("self-check: lanes");
    }
    let hold = |h: &str, from_ms, to_ms| Hold {
        holder: h.into(),
        from_ms,
        to_ms,
    };
    let kubeadm = [("a".to_string(), 300), ("b".to_string(), 100)].into();
    // a holds twice (a resume), b once; 50 ms lead-in, gaps 100 + 50, tail 40.
    let holds = [
        hold("a", 1050, 1500),
        hold("a", 1600, 1900),
        hold("b", 1950, 2160),
    ];
    let got = attribute(&holds, &kubeadm, 1000, 2200);
    let want = Attribution {
        lead_in: 50,
        // 450 (a resumed hold: its kubeadm counted on the later one) + 0 + (210 - 100)
        held_beyond_kubeadm: 560,
        handoff: 150,
        tail: 40,
    };
    if got != want {
        bail!("self-check: attribution {got:?}, want {want:?}");
    }
    Ok(())
}
