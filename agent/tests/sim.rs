//! Deterministic simulation of the election and join logic: the real `Driver` and `step`
//! run in-process against a simulated rendezvous and a simulated kubeadm/etcd, on tokio's
//! paused (virtual) clock, with injected faults: agent crashes at any await point with a
//! restart from the persisted state, re-imaged nodes, lost and delayed responses, lease
//! expiry, failing joins that leave stale etcd members.
//!
//! Every schedule is reproducible from its seed. `SIM_SEED=<n>` replays one seed;
//! `SIM_SCHEDULES=<n>` changes how many run (default 1000); `SIM_DEBUG=1` prints every
//! simulated step with the etcd membership after it.
//!
//! etcd is modelled with quorum (membership changes and promotions need most voting
//! members running) and kubeadm >= 1.29's learner mode: a control-plane join adds a
//! learner, starts it, then promotes it; faults leave unstarted or started learners.
//! Checked besides the end state: one init, one control-plane join at a time, and no
//! worker verifying while it holds a `worker-join` slot (it gives the slot back when its
//! join returns).
//!
//! Every `UPGRADE_EVERY`th schedule (`SIM_UPGRADE_EVERY=<n>` changes it; a replayed
//! `SIM_SEED` always does) goes on after the assembly with an upgrade roll ([`upgrade`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness: a panic is a test failure"
)]

use model::Role;
use model::spec::DistroKind;
use nodeagent::bootstrap::driver::Settings;
use nodeagent::bootstrap::{Config, Driver, MemStore, Phase, Store};
use nodeagent::coord::{
    Acquired, Change, ChangeKind, Changes, CoordError, CoordResult, Coordinator, Created,
    ErrorKind, Fence, Member, Record,
};
use nodeagent::distro::{
    Credentials, Distro, DistroError, DistroResult, EtcdAccess, EtcdApi, EtcdMember, InitSecrets,
    Issued,
};
use nodeagent::host::NullHost;
use nodeagent::systemd::{FakeSystemd, RecordingNotifier};
use protocol::clock::TokioClock;
use protocol::keys;
use protocol::records::{EtcdCreds, JoinMaterial, Secret};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::time::{Instant, sleep};

#[path = "sim/upgrade.rs"]
mod upgrade;

const LEASE_TTL: Duration = Duration::from_secs(30);
/// Every how many schedules one also rolls an upgrade after its assembly.
const UPGRADE_EVERY: u64 = 8;

#[derive(Debug)]
struct Holder {
    name: String,
    token: u64,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Sem {
    last_token: u64,
    holders: Vec<Holder>,
}

#[derive(Debug, Clone)]
struct SimMember {
    id: u64,
    name: String,
    peer: String,
    /// Its etcd process runs.
    started: bool,
    /// A non-voting learner (kubeadm >= 1.29 adds members as learners, then promotes).
    learner: bool,
}

#[derive(Debug)]
struct SimCluster {
    etcd: Vec<SimMember>,
    cert_key: Option<(String, Instant)>,
    tokens: Vec<(String, Instant)>,
    nodes: BTreeSet<String>,
}

impl SimCluster {
    /// etcd commits (and changes membership) only while most voting members run.
    fn has_quorum(&self) -> bool {
        let voters = self.etcd.iter().filter(|m| !m.learner).count();
        let running = self.etcd.iter().filter(|m| !m.learner && m.started).count();
        voters > 0 && running > voters / 2
    }
}

#[derive(Debug)]
struct Params {
    p_lost: f64,
    p_delay: f64,
    p_long_delay: f64,
    p_join_fail: f64,
    cert_key_ttl: Duration,
    token_ttl: Duration,
    worker_cap: u32,
}

#[derive(Debug)]
struct World {
    rng: StdRng,
    faults: bool,
    params: Params,
    rev: u64,
    /// Every change, by revision (`changes[i]` is revision `i + 1`), for `watch`.
    changes: Vec<(ChangeKind, String)>,
    /// Wakes parked watches when the revision grows.
    changed: Rc<tokio::sync::Notify>,
    records: BTreeMap<String, (Vec<u8>, u64)>,
    sems: BTreeMap<String, Sem>,
    clusters: Vec<SimCluster>,
    /// Which cluster each node's disk belongs to (survives agent crashes).
    local: BTreeMap<String, Option<usize>>,
    ips: BTreeMap<String, String>,
    active_inits: BTreeSet<String>,
    active_cp_joins: BTreeSet<String>,
    active_worker_joins: BTreeSet<String>,
    next_member_id: u64,
    violations: Vec<String>,
    trace: u64,
    /// Stale learners removed: (never started, started but not promoted).
    learners_removed: (u64, u64),
    /// The upgrade roll's part of the world.
    roll: upgrade::Roll,
}

impl World {
    fn note(&mut self, what: &str) {
        if std::env::var("SIM_DEBUG").is_ok() {
            let t = tokio::time::Instant::now();
            eprintln!(
                "{t:?} {what} etcd={:?}",
                self.clusters
                    .iter()
                    .map(|c| c.etcd.clone())
                    .collect::<Vec<_>>()
            );
        }
        // A running digest of everything that happened, to check determinism.
        for b in what.bytes() {
            self.trace = (self.trace ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// One change: the revision grows and parked watches wake.
    fn bump(&mut self, kind: ChangeKind, name: &str) -> u64 {
        self.rev += 1;
        self.changes.push((kind, name.to_string()));
        self.changed.notify_waiters();
        self.rev
    }

    /// The semaphore, its expired holders gone (each a `SlotFreed` change, as the
    /// rendezvous's sweep makes them).
    fn sem(&mut self, name: &str) -> &mut Sem {
        let now = Instant::now();
        let s = self.sems.entry(name.to_string()).or_default();
        let before = s.holders.len();
        s.holders.retain(|h| h.expires > now);
        let expired = before - s.holders.len();
        for _ in 0..expired {
            self.bump(ChangeKind::SlotFreed, name);
        }
        self.sems.entry(name.to_string()).or_default()
    }

    fn holds(&mut self, sem: &str, node: &str) -> bool {
        self.sem(sem).holders.iter().any(|h| h.name == node)
    }

    fn fence_ok(&mut self, f: Option<&Fence>) -> bool {
        match f {
            None => true,
            Some(f) => {
                let token = f.token;
                self.sem(&f.semaphore)
                    .holders
                    .iter()
                    .any(|h| h.token == token)
            }
        }
    }
}

type W = Rc<RefCell<World>>;

#[derive(Debug, Clone)]
struct SimCoord {
    w: W,
}

impl SimCoord {
    async fn op<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&mut World) -> CoordResult<T>,
    ) -> CoordResult<T> {
        let (pre, lose_before, lose_after, post) = {
            let mut w = self.w.borrow_mut();
            let pre = Duration::from_millis(w.rng.random_range(1..40));
            if !w.faults {
                (pre, false, false, Duration::ZERO)
            } else {
                let p_lost = w.params.p_lost;
                let lose_before = w.rng.random_bool(p_lost);
                let lose_after = w.rng.random_bool(p_lost);
                let (pl, pd) = (w.params.p_long_delay, w.params.p_delay);
                let post = if w.rng.random_bool(pl) {
                    Duration::from_millis(w.rng.random_range(10_000..45_000))
                } else if w.rng.random_bool(pd) {
                    Duration::from_millis(w.rng.random_range(100..3_000))
                } else {
                    Duration::ZERO
                };
                (pre, lose_before, lose_after, post)
            }
        };
        sleep(pre).await;
        if lose_before {
            return Err(CoordError::new(
                op,
                key,
                ErrorKind::Unavailable,
                "request lost",
            ));
        }
        let r = {
            let mut w = self.w.borrow_mut();
            w.note(op);
            w.note(key);
            f(&mut w)
        };
        sleep(post).await;
        if lose_after {
            return Err(CoordError::new(
                op,
                key,
                ErrorKind::Unavailable,
                "answer lost",
            ));
        }
        r
    }
}

fn fenced(op: &'static str, key: &str) -> CoordError {
    CoordError::new(op, key, ErrorKind::Fenced, "token does not hold a slot")
}

impl Coordinator for SimCoord {
    async fn heartbeat(
        &self,
        member: &str,
        _role: Role,
        _report: &serde_json::Value,
        _ttl: Duration,
    ) -> CoordResult<u64> {
        self.op("heartbeat", member, |w| Ok(w.rev)).await
    }

    async fn members(&self) -> CoordResult<Vec<Member>> {
        Ok(Vec::new())
    }

    async fn create(
        &self,
        key: &str,
        value: &[u8],
        _ttl: Option<Duration>,
        fence: Option<&Fence>,
    ) -> CoordResult<Created> {
        self.op("create", key, |w| {
            if !w.fence_ok(fence) {
                return Err(fenced("create", key));
            }
            if let Some((v, rev)) = w.records.get(key) {
                return Ok(Created::Exists {
                    value: v.clone(),
                    revision: *rev,
                });
            }
            let rev = w.bump(ChangeKind::Record, key);
            w.records.insert(key.to_string(), (value.to_vec(), rev));
            Ok(Created::Created { revision: rev })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_revision: u64,
        value: &[u8],
        fence: Option<&Fence>,
    ) -> CoordResult<u64> {
        self.op("cas", key, |w| {
            if !w.fence_ok(fence) {
                return Err(fenced("cas", key));
            }
            match w.records.get(key) {
                Some((_, rev)) if *rev == expected_revision => {
                    let rev = w.bump(ChangeKind::Record, key);
                    w.records.insert(key.to_string(), (value.to_vec(), rev));
                    Ok(rev)
                }
                _ => Err(CoordError::new(
                    "cas",
                    key,
                    ErrorKind::Conflict,
                    "revision moved",
                )),
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> CoordResult<Option<Record>> {
        self.op("get", key, |w| {
            Ok(w.records.get(key).map(|(v, rev)| Record {
                key: key.to_string(),
                value: v.clone(),
                revision: *rev,
            }))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> CoordResult<Vec<Record>> {
        self.op("list", prefix, |w| {
            Ok(w.records
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, rev))| Record {
                    key: k.clone(),
                    value: v.clone(),
                    revision: *rev,
                })
                .collect())
        })
        .await
    }

    async fn delete(&self, key: &str, fence: Option<&Fence>) -> CoordResult<()> {
        self.op("delete", key, |w| {
            if !w.fence_ok(fence) {
                return Err(fenced("delete", key));
            }
            if w.records.remove(key).is_some() {
                w.bump(ChangeKind::Record, key);
            }
            Ok(())
        })
        .await
    }

    async fn acquire(
        &self,
        semaphore: &str,
        slots: u32,
        holder: &str,
        ttl: Duration,
    ) -> CoordResult<Acquired> {
        // As the rendezvous does for a live member (issue 16): the count of this acquire is
        // the one in force (a rebuilt spec may change it), and a slot is granted only while
        // fewer than it hold one.
        self.op("acquire", semaphore, |w| {
            let now = Instant::now();
            let s = w.sem(semaphore);
            if let Some(h) = s.holders.iter_mut().find(|h| h.name == holder) {
                h.expires = now + ttl;
                return Ok(Acquired::Granted {
                    token: h.token,
                    ttl,
                });
            }
            if s.holders.len() < slots as usize {
                s.last_token += 1;
                let token = s.last_token;
                s.holders.push(Holder {
                    name: holder.to_string(),
                    token,
                    expires: now + ttl,
                });
                w.bump(ChangeKind::SlotTaken, semaphore);
                return Ok(Acquired::Granted { token, ttl });
            }
            Ok(Acquired::Busy {
                holders: s.holders.iter().map(|h| h.name.clone()).collect(),
            })
        })
        .await
    }

    async fn renew(
        &self,
        semaphore: &str,
        holder: &str,
        token: u64,
        ttl: Duration,
    ) -> CoordResult<()> {
        self.op("renew", semaphore, |w| {
            let now = Instant::now();
            match w
                .sem(semaphore)
                .holders
                .iter_mut()
                .find(|h| h.name == holder && h.token == token)
            {
                Some(h) => {
                    h.expires = now + ttl;
                    Ok(())
                }
                None => Err(fenced("renew", semaphore)),
            }
        })
        .await
    }

    async fn release(&self, semaphore: &str, holder: &str, token: u64) -> CoordResult<()> {
        self.op("release", semaphore, |w| {
            let s = w.sem(semaphore);
            let before = s.holders.len();
            s.holders
                .retain(|h| !(h.name == holder && h.token == token));
            if s.holders.len() < before {
                w.bump(ChangeKind::SlotFreed, semaphore);
            }
            Ok(())
        })
        .await
    }

    /// Like the rendezvous: answers as soon as the revision passes `after_revision` (with
    /// the changes since), else at `timeout` with none; the request and its answer meet
    /// the same faults as every other.
    async fn watch(&self, after_revision: u64, timeout: Duration) -> CoordResult<Changes> {
        let deadline = Instant::now() + timeout;
        self.op("watch", "", |_| Ok(())).await?;
        loop {
            let changed = {
                let w = self.w.borrow();
                if w.rev > after_revision {
                    let from = usize::try_from(after_revision).unwrap();
                    return Ok(Changes {
                        revision: w.rev,
                        changes: w.changes[from..]
                            .iter()
                            .map(|(kind, name)| Change {
                                kind: *kind,
                                name: name.clone(),
                            })
                            .collect(),
                        compacted: false,
                    });
                }
                w.changed.clone()
            };
            let notified = changed.notified();
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(Changes {
                        revision: after_revision,
                        changes: Vec::new(),
                        compacted: false,
                    });
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct SimDistro {
    w: W,
    node: String,
}

fn derr(step: &'static str, detail: impl Into<String>) -> DistroError {
    DistroError::Other {
        step,
        detail: detail.into(),
    }
}

/// Removes `node` from an active-operation set when the operation ends or is aborted.
struct Active {
    w: W,
    node: String,
    which: u8,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut w = self.w.borrow_mut();
        let set = match self.which {
            0 => &mut w.active_inits,
            1 => &mut w.active_cp_joins,
            _ => &mut w.active_worker_joins,
        };
        set.remove(&self.node);
    }
}

impl SimDistro {
    fn cluster_of_hash(hash: &str) -> Option<usize> {
        hash.strip_prefix("sha256:cluster-")?.parse().ok()
    }

    fn my_cluster(&self) -> Option<usize> {
        self.w.borrow().local.get(&self.node).copied().flatten()
    }

    /// Like kubeadm: material the cluster holds expired is refused as such
    /// ([`DistroError::MaterialRejected`]), whatever expiry times the agent keeps.
    fn check_material(w: &World, m: &JoinMaterial, cp: bool) -> Result<usize, DistroError> {
        let now = Instant::now();
        let expired = |detail: &str| DistroError::MaterialRejected {
            step: "kubeadm join",
            detail: detail.into(),
        };
        let c =
            Self::cluster_of_hash(&m.ca_cert_hash).ok_or(derr("kubeadm join", "bad CA hash"))?;
        let cl = &w.clusters[c];
        if !cl
            .tokens
            .iter()
            .any(|(t, exp)| t == m.token.expose() && *exp > now)
        {
            return Err(expired("bootstrap token unknown or expired"));
        }
        if cp {
            match (&cl.cert_key, &m.certificate_key) {
                (Some((k, exp)), Some(mk)) if k == mk.expose() && *exp > now => {}
                _ => {
                    return Err(expired(
                        "error downloading certs: the certificate key is wrong or expired",
                    ));
                }
            }
        }
        Ok(c)
    }
}

impl Distro for SimDistro {
    async fn reset(&self) -> DistroResult<()> {
        sleep(Duration::from_millis(500)).await;
        let mut w = self.w.borrow_mut();
        w.note(&format!("reset {}", self.node));
        if let Some(Some(c)) = w.local.insert(self.node.clone(), None) {
            let node = self.node.clone();
            w.clusters[c].nodes.remove(&node);
            // Like a reset whose etcd member removal failed: the member stays (stale), stopped.
            for m in &mut w.clusters[c].etcd {
                if m.name == node {
                    m.started = false;
                }
            }
        }
        Ok(())
    }

    async fn init(&self, _s: &InitSecrets) -> DistroResult<Issued> {
        let guard = {
            let mut w = self.w.borrow_mut();
            w.note(&format!("init {}", self.node));
            if w.records.contains_key(keys::INITIALIZED) {
                w.violations.push(format!(
                    "{} ran init after the cluster was initialized",
                    self.node
                ));
            }
            if !w.holds(keys::INIT_SEMAPHORE, &self.node) {
                w.violations.push(format!(
                    "{} ran init without holding the init lease",
                    self.node
                ));
            }
            if !w.active_inits.is_empty() {
                let msg = format!(
                    "two inits at once: {} while {:?}",
                    self.node, w.active_inits
                );
                w.violations.push(msg);
            }
            w.active_inits.insert(self.node.clone());
            Active {
                w: self.w.clone(),
                node: self.node.clone(),
                which: 0,
            }
        };
        let d = Duration::from_millis(self.w.borrow_mut().rng.random_range(5_000..20_000));
        sleep(d).await;
        let mut w = self.w.borrow_mut();
        let pf = w.params.p_join_fail;
        let fail = w.faults && w.rng.random_bool(pf);
        if fail {
            drop(w);
            drop(guard);
            return Err(derr("kubeadm init", "wait-control-plane timed out"));
        }
        let id = w.next_member_id;
        w.next_member_id += 1;
        let peer = format!("https://{}:2380", w.ips[&self.node]);
        w.clusters.push(SimCluster {
            etcd: vec![SimMember {
                id,
                name: self.node.clone(),
                peer,
                started: true,
                learner: false,
            }],
            cert_key: None,
            tokens: Vec::new(),
            nodes: BTreeSet::from([self.node.clone()]),
        });
        let c = w.clusters.len() - 1;
        w.local.insert(self.node.clone(), Some(c));
        drop(w);
        drop(guard);
        Ok(Issued {
            token: Secret(String::new()),
            ca_cert_hash: format!("sha256:cluster-{c}"),
            certificate_key: None,
        })
    }

    async fn join_control_plane(&self, m: &JoinMaterial) -> DistroResult<()> {
        let (c, guard, id) = {
            let mut w = self.w.borrow_mut();
            w.note(&format!("join-cp {}", self.node));
            let c = Self::check_material(&w, m, true)?;
            if !w.active_cp_joins.is_empty() {
                let msg = format!(
                    "two control-plane joins at once: {} while {:?}",
                    self.node, w.active_cp_joins
                );
                w.violations.push(msg);
            }
            let peer = format!("https://{}:2380", w.ips[&self.node]);
            let cl = &w.clusters[c];
            // kubeadm >= 1.29 (EtcdLearnerMode): `member add --learner`, which etcd refuses
            // without quorum, for a peer URL that is a member already (kubeadm retries that
            // until it gives up), and while another learner exists (at most one).
            if !cl.has_quorum() {
                return Err(derr("kubeadm join", "etcdserver: request timed out"));
            }
            if cl.etcd.iter().any(|x| x.peer == peer) {
                return Err(derr("kubeadm join", "etcdserver: Peer URLs already exists"));
            }
            if cl.etcd.iter().any(|x| x.learner) {
                return Err(derr(
                    "kubeadm join",
                    "etcdserver: too many learner members in cluster",
                ));
            }
            w.active_cp_joins.insert(self.node.clone());
            let id = w.next_member_id;
            w.next_member_id += 1;
            w.clusters[c].etcd.push(SimMember {
                id,
                name: String::new(),
                peer,
                started: false,
                learner: true,
            });
            let guard = Active {
                w: self.w.clone(),
                node: self.node.clone(),
                which: 1,
            };
            (c, guard, id)
        };
        let d = Duration::from_millis(self.w.borrow_mut().rng.random_range(3_000..15_000));
        sleep(d).await;
        let mut w = self.w.borrow_mut();
        let pf = w.params.p_join_fail;
        if w.faults && w.rng.random_bool(pf) {
            drop(w);
            drop(guard);
            // The learner was added but never started: a stale learner stays behind.
            return Err(derr("kubeadm join", "etcd member did not become healthy"));
        }
        let node = self.node.clone();
        let Some(mem) = w.clusters[c].etcd.iter_mut().find(|x| x.id == id) else {
            drop(w);
            drop(guard);
            return Err(derr(
                "kubeadm join",
                "our etcd member was removed while joining",
            ));
        };
        // The member starts as a learner and catches up...
        mem.name = node.clone();
        mem.started = true;
        if w.faults && w.rng.random_bool(pf / 2.0) {
            drop(w);
            drop(guard);
            // ...and the join dies before the promotion: a started learner stays behind.
            return Err(derr(
                "kubeadm join",
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        // ...then kubeadm promotes it, which needs quorum.
        if !w.clusters[c].has_quorum() {
            drop(w);
            drop(guard);
            return Err(derr(
                "kubeadm join",
                "promote: etcdserver: request timed out",
            ));
        }
        if let Some(mem) = w.clusters[c].etcd.iter_mut().find(|x| x.id == id) {
            mem.learner = false;
        }
        w.clusters[c].nodes.insert(node.clone());
        w.local.insert(node, Some(c));
        drop(w);
        drop(guard);
        Ok(())
    }

    async fn join_worker(&self, m: &JoinMaterial) -> DistroResult<()> {
        let (c, guard) = {
            let mut w = self.w.borrow_mut();
            w.note("join-worker");
            let c = Self::check_material(&w, m, false)?;
            if w.active_worker_joins.len() >= w.params.worker_cap as usize {
                let msg = format!(
                    "more worker joins than the cap: {} while {:?}",
                    self.node, w.active_worker_joins
                );
                w.violations.push(msg);
            }
            w.active_worker_joins.insert(self.node.clone());
            (
                c,
                Active {
                    w: self.w.clone(),
                    node: self.node.clone(),
                    which: 2,
                },
            )
        };
        let d = Duration::from_millis(self.w.borrow_mut().rng.random_range(2_000..8_000));
        sleep(d).await;
        let mut w = self.w.borrow_mut();
        let pf = w.params.p_join_fail;
        if w.faults && w.rng.random_bool(pf) {
            drop(w);
            drop(guard);
            return Err(derr("kubeadm join", "kubelet TLS bootstrap timed out"));
        }
        w.clusters[c].nodes.insert(self.node.clone());
        w.local.insert(self.node.clone(), Some(c));
        drop(w);
        drop(guard);
        Ok(())
    }

    async fn refresh_join_material(&self, key: Option<&Secret>) -> DistroResult<Issued> {
        sleep(Duration::from_millis(300)).await;
        let c = self
            .my_cluster()
            .ok_or(derr("upload-certs", "not part of a cluster"))?;
        let mut w = self.w.borrow_mut();
        w.note("refresh");
        let now = Instant::now();
        let key = key.ok_or(derr("upload-certs", "no key"))?.clone();
        let r: u32 = w.rng.random();
        let token = format!("tok{}.{}", w.rev, r);
        let (kt, tt) = (w.params.cert_key_ttl, w.params.token_ttl);
        let cl = &mut w.clusters[c];
        cl.cert_key = Some((key.expose().to_string(), now + kt));
        cl.tokens.push((token.clone(), now + tt));
        Ok(Issued {
            token: Secret(token),
            ca_cert_hash: format!("sha256:cluster-{c}"),
            certificate_key: Some(key),
        })
    }

    /// The simulated cluster runs one version: nothing to compare (the skew decision is
    /// unit-tested in `bootstrap::transition`).
    async fn control_plane_version(
        &self,
        _m: &JoinMaterial,
    ) -> DistroResult<Option<nodeagent::upgrade::order::ControlPlaneVersions>> {
        Ok(None)
    }

    async fn credentials(&self) -> DistroResult<Credentials> {
        let c = self
            .my_cluster()
            .ok_or(derr("credentials", "not part of a cluster"))?;
        Ok(Credentials {
            admin_kubeconfig: Some(Secret(format!("admin-{c}"))),
            etcd: Some(EtcdCreds {
                ca_pem: c.to_string(),
                cert_pem: String::new(),
                key_pem: Secret(String::new()),
            }),
        })
    }

    async fn local_api_ready(&self) -> DistroResult<bool> {
        sleep(Duration::from_millis(20)).await;
        let w = self.w.borrow();
        Ok(match w.local.get(&self.node).copied().flatten() {
            Some(c) => w.clusters[c]
                .etcd
                .iter()
                .any(|m| m.name == self.node && m.started),
            None => false,
        })
    }

    async fn vip_api_ready(&self) -> DistroResult<bool> {
        self.local_api_ready().await
    }

    async fn node_ready(&self) -> DistroResult<bool> {
        self.kubelet_registered().await
    }

    async fn kubelet_registered(&self) -> DistroResult<bool> {
        {
            // A worker verifies (and a control plane awaits its Node) outside any
            // worker-join slot: it gave the slot back when its join returned.
            let mut w = self.w.borrow_mut();
            if w.holds(keys::WORKER_JOIN_SEMAPHORE, &self.node) {
                let msg = format!("{} verifies while holding a worker-join slot", self.node);
                w.violations.push(msg);
            }
        }
        sleep(Duration::from_millis(20)).await;
        let w = self.w.borrow();
        Ok(match w.local.get(&self.node).copied().flatten() {
            Some(c) => w.clusters[c].nodes.contains(&self.node),
            None => false,
        })
    }

    async fn reason(
        &self,
        _failed: Option<&nodeagent::distro::DistroError>,
    ) -> Option<protocol::report::DistroReason> {
        None
    }
}

impl EtcdApi for SimDistro {
    async fn etcd_members(&self, access: &EtcdAccess) -> DistroResult<Vec<EtcdMember>> {
        sleep(Duration::from_millis(50)).await;
        let c: usize = access
            .creds
            .ca_pem
            .parse()
            .map_err(|_| derr("etcd", "bad creds"))?;
        let w = self.w.borrow();
        Ok(w.clusters[c]
            .etcd
            .iter()
            .map(|m| EtcdMember {
                id: m.id,
                name: if m.started {
                    m.name.clone()
                } else {
                    String::new()
                },
                peer_urls: vec![m.peer.clone()],
                client_urls: if m.started {
                    vec![m.peer.replace("2380", "2379")]
                } else {
                    Vec::new()
                },
                is_learner: m.learner,
            })
            .collect())
    }

    async fn remove_etcd_member(&self, access: &EtcdAccess, id: u64) -> DistroResult<()> {
        sleep(Duration::from_millis(50)).await;
        let c: usize = access
            .creds
            .ca_pem
            .parse()
            .map_err(|_| derr("etcd", "bad creds"))?;
        let mut w = self.w.borrow_mut();
        w.note(&format!("remove-member {id}"));
        // A membership change needs quorum: without it etcd times out.
        if !w.clusters[c].has_quorum() {
            return Err(derr("remove etcd member", "etcdserver: request timed out"));
        }
        if let Some(m) = w.clusters[c].etcd.iter().find(|m| m.id == id && m.learner) {
            let started = m.started;
            let counts = &mut w.learners_removed;
            if started {
                counts.1 += 1
            } else {
                counts.0 += 1
            }
        }
        w.clusters[c].etcd.retain(|m| m.id != id);
        Ok(())
    }

    async fn etcd_member_healthy(&self, creds: &EtcdCreds, client_url: &str) -> bool {
        sleep(Duration::from_millis(20)).await;
        let Ok(c) = creds.ca_pem.parse::<usize>() else {
            return false;
        };
        let w = self.w.borrow();
        let cl = &w.clusters[c];
        cl.has_quorum()
            && cl
                .etcd
                .iter()
                .any(|m| m.started && m.peer.replace("2380", "2379") == client_url)
    }
}

struct NodeSpec {
    name: String,
    role: Role,
    store: MemStore,
}

type SimDriver =
    Driver<SimCoord, SimDistro, FakeSystemd, NullHost, TokioClock, MemStore, RecordingNotifier>;

fn driver(w: &W, n: &NodeSpec, settings: &Settings, clock: TokioClock, seed: u64) -> SimDriver {
    let mut cfg = Config::new(n.role, DistroKind::Kubeadm, true, seed);
    cfg.worker_join_slots = w.borrow().params.worker_cap;
    let mut s = settings.clone();
    s.node = n.name.clone();
    s.ip = w.borrow().ips[&n.name].parse().unwrap();
    Driver::new(
        cfg,
        s,
        SimCoord { w: w.clone() },
        SimDistro {
            w: w.clone(),
            node: n.name.clone(),
        },
        FakeSystemd::default(),
        NullHost,
        clock,
        n.store.clone(),
        RecordingNotifier::default(),
        seed,
    )
    .unwrap()
}

fn spawn_node(
    w: &W,
    n: &NodeSpec,
    settings: &Settings,
    clock: TokioClock,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    let mut d = driver(w, n, settings, clock, seed);
    tokio::task::spawn_local(async move {
        loop {
            let t = d.tick().await;
            sleep(t.wait).await;
        }
    })
}

#[derive(Debug)]
struct Outcome {
    violations: Vec<String>,
    trace: u64,
    virtual_secs: u64,
    learners_removed: (u64, u64),
    roll: Option<RollOutcome>,
}

#[derive(Debug)]
struct RollOutcome {
    virtual_secs: u64,
    raced: u64,
    lease_losses: u64,
    resumes: u64,
    lost_mid_renewal: u64,
}

/// One schedule: cluster shape, fault rates and fault times all come from `seed`.
fn run_schedule(seed: u64) -> Outcome {
    run_schedule_rolling(seed, upgrades(seed))
}

/// [`run_schedule`], with its upgrade roll or without, whatever `SIM_UPGRADE_EVERY` says.
fn run_schedule_rolling(seed: u64, roll: bool) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, simulate(seed, roll))
}

async fn simulate(seed: u64, roll: bool) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let cps = rng.random_range(3..=5u32);
    let workers = rng.random_range(1..=4u32);
    let params = Params {
        p_lost: rng.random_range(0.0..0.08),
        p_delay: rng.random_range(0.0..0.2),
        p_long_delay: rng.random_range(0.0..0.01),
        p_join_fail: rng.random_range(0.0..0.3),
        cert_key_ttl: Duration::from_secs(rng.random_range(120..7_200)),
        token_ttl: Duration::from_secs(rng.random_range(300..86_400)),
        worker_cap: rng.random_range(1..=2),
    };
    let w: W = Rc::new(RefCell::new(World {
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        faults: true,
        params,
        rev: 0,
        changes: Vec::new(),
        changed: Rc::new(tokio::sync::Notify::new()),
        records: BTreeMap::new(),
        sems: BTreeMap::new(),
        clusters: Vec::new(),
        local: BTreeMap::new(),
        ips: BTreeMap::new(),
        active_inits: BTreeSet::new(),
        active_cp_joins: BTreeSet::new(),
        active_worker_joins: BTreeSet::new(),
        next_member_id: 1,
        violations: Vec::new(),
        trace: 0,
        learners_removed: (0, 0),
        roll: upgrade::Roll::default(),
    }));
    let mut nodes = Vec::new();
    let mut control_planes = Vec::new();
    for i in 1..=cps {
        let name = format!("cp-{i}");
        let ip = format!("10.0.0.{}", 10 + i);
        control_planes.push((name.clone(), ip.parse().unwrap()));
        w.borrow_mut().ips.insert(name.clone(), ip);
        nodes.push(NodeSpec {
            name,
            role: Role::ControlPlane,
            store: MemStore::default(),
        });
    }
    for i in 1..=workers {
        let name = format!("w-{i}");
        w.borrow_mut()
            .ips
            .insert(name.clone(), format!("10.0.0.{}", 20 + i));
        nodes.push(NodeSpec {
            name,
            role: Role::Worker,
            store: MemStore::default(),
        });
    }
    let settings = Settings {
        node: String::new(),
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        control_planes,
        lease_ttl: LEASE_TTL,
        addons_lease_ttl: LEASE_TTL,
        step_timeout: LEASE_TTL * 4 / 5,
        heartbeat_ttl: Duration::from_secs(30),
        heartbeat_every_ms: 10_000,
        token_ttl_ms: w.borrow().params.token_ttl.as_millis() as u64,
        // On odd seeds the agents' clock runs 12 h behind the cluster's: they believe the
        // uploaded certificates live that much longer than they do, so a join with
        // material that looks fresh is refused and must get the material refreshed.
        cert_key_ttl_ms: Some(
            w.borrow().params.cert_key_ttl.as_millis() as u64
                + if seed % 2 == 1 { 12 * 3_600_000 } else { 0 },
        ),
        material_margin_ms: 60_000,
        lb_units: Vec::new(),
        vip_units: Vec::new(),
        kube_vip_super_admin: true,
        external_etcd: Vec::new(),
        depends_on: nodeagent::bootstrap::diagnosis::Dependencies::default(),
        lb_follow: None,
    };
    let clock = TokioClock::new(1_700_000_000_000);
    let start = Instant::now();
    let mut handles: Vec<Option<tokio::task::JoinHandle<()>>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Some(spawn_node(
                &w,
                n,
                &settings,
                clock,
                seed.wrapping_add(i as u64),
            ))
        })
        .collect();
    // Faults: crashes (with restart from the persisted state) and re-imaging, during the
    // first 15 virtual minutes; node start times are staggered by the first crash too.
    let fault_window = Duration::from_secs(15 * 60);
    let mut down: Vec<Option<Instant>> = vec![None; nodes.len()];
    let mut restarts = 0u64;
    loop {
        let step = Duration::from_millis(rng.random_range(200..20_000));
        sleep(step).await;
        let now = Instant::now();
        let in_window = now - start < fault_window;
        for (i, n) in nodes.iter().enumerate() {
            if let Some(at) = down[i]
                && (at <= now || !in_window)
            {
                restarts += 1;
                handles[i] = Some(spawn_node(
                    &w,
                    n,
                    &settings,
                    clock,
                    seed.wrapping_add(1000 * restarts + i as u64),
                ));
                down[i] = None;
            }
        }
        if in_window && rng.random_bool(0.35) {
            let i = rng.random_range(0..nodes.len());
            if let Some(h) = handles[i].take() {
                h.abort();
                let _ = h.await;
                let reimage = nodes[i].role == Role::Worker && rng.random_bool(0.2);
                if reimage {
                    nodes[i].store.wipe();
                    let mut wm = w.borrow_mut();
                    if let Some(Some(c)) = wm.local.insert(nodes[i].name.clone(), None) {
                        let name = nodes[i].name.clone();
                        wm.clusters[c].nodes.remove(&name);
                    }
                }
                // Sometimes longer than the lease TTL, so a held slot expires.
                let off = Duration::from_millis(rng.random_range(500..90_000));
                down[i] = Some(now + off);
            }
        }
        if !in_window {
            w.borrow_mut().faults = false;
        }
        let all_done = nodes.iter().all(|n| {
            n.store
                .load()
                .ok()
                .flatten()
                .is_some_and(|p| p.state.phase == Phase::Done)
        }) && down.iter().all(Option::is_none);
        let pending_refresh = w.borrow().records.contains_key(keys::REFRESH_REQUEST);
        if !in_window && all_done && !pending_refresh {
            break;
        }
        if now - start > Duration::from_secs(6 * 3600) {
            let states: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let p = n.store.load().ok().flatten();
                    format!(
                        "{}: {:?}",
                        n.name,
                        p.map(|p| (p.state.phase.name(), p.state.attempt, p.state.last_error))
                    )
                })
                .collect();
            w.borrow_mut()
                .violations
                .push(format!("not converged after 6 virtual hours: {states:?}"));
            break;
        }
    }
    for h in handles.into_iter().flatten() {
        h.abort();
        let _ = h.await;
    }
    check_final(&w, &nodes);
    let assembled = Instant::now();
    let cluster = w.borrow().local.get("cp-1").copied().flatten();
    let rolled = roll && w.borrow().violations.is_empty();
    if rolled && let Some(c) = cluster {
        upgrade::roll(&w, &nodes, c, &mut rng, clock).await;
    }
    let w = w.borrow();
    Outcome {
        violations: w.violations.clone(),
        trace: w.trace,
        virtual_secs: (assembled - start).as_secs(),
        learners_removed: w.learners_removed,
        roll: rolled.then(|| RollOutcome {
            virtual_secs: (Instant::now() - assembled).as_secs(),
            raced: w.roll.raced,
            lease_losses: w.roll.lease_losses,
            resumes: w.roll.resumes,
            lost_mid_renewal: w.roll.lost_mid_renewal,
        }),
    }
}

/// Whether schedule `seed` rolls an upgrade after its assembly.
fn upgrades(seed: u64) -> bool {
    if std::env::var("SIM_SEED").is_ok() {
        return true;
    }
    let every: u64 = std::env::var("SIM_UPGRADE_EVERY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(UPGRADE_EVERY);
    every > 0 && seed.is_multiple_of(every)
}

fn check_final(w: &W, nodes: &[NodeSpec]) {
    let mut wm = w.borrow_mut();
    let mut v = Vec::new();
    let init: Option<protocol::records::InitRecord> = wm
        .records
        .get(keys::INITIALIZED)
        .and_then(|(b, _)| serde_json::from_slice(b).ok());
    let Some(init) = init else {
        wm.violations.push("no `initialized` record".into());
        return;
    };
    let clusters: BTreeSet<Option<usize>> = nodes
        .iter()
        .map(|n| wm.local.get(&n.name).copied().flatten())
        .collect();
    if clusters.len() != 1 || clusters.contains(&None) {
        v.push(format!("nodes are not all in one cluster: {:?}", wm.local));
    } else if let Some(Some(c)) = clusters.into_iter().next() {
        let cl = &wm.clusters[c];
        let cps: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| n.name.as_str())
            .collect();
        let members: Vec<(&str, bool)> = cl
            .etcd
            .iter()
            .map(|m| (m.name.as_str(), m.started))
            .collect();
        let started: BTreeSet<&str> = cl
            .etcd
            .iter()
            .filter(|m| m.started)
            .map(|m| m.name.as_str())
            .collect();
        if cl.etcd.len() != cps.len() || started != cps {
            v.push(format!(
                "etcd members {members:?} are not exactly the control planes {cps:?} (stale member left)"
            ));
        }
        let learners: Vec<&str> = cl
            .etcd
            .iter()
            .filter(|m| m.learner)
            .map(|m| m.name.as_str())
            .collect();
        if !learners.is_empty() {
            v.push(format!("learners left unpromoted: {learners:?}"));
        }
        if !cl.has_quorum() {
            v.push(format!("etcd lost its quorum: {members:?}"));
        }
        let all: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let joined: BTreeSet<&str> = cl.nodes.iter().map(String::as_str).collect();
        if joined != all {
            v.push(format!("cluster nodes {joined:?} != all nodes {all:?}"));
        }
        if !cl.etcd.iter().any(|m| m.name == init.node) {
            v.push(format!(
                "the published initializer {} is not in the final cluster",
                init.node
            ));
        }
    }
    wm.violations.extend(v);
}

fn schedules() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a u64")];
    }
    let n: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    (0..n).collect()
}

#[test]
fn random_fault_schedules_keep_the_invariants() {
    let seeds = schedules();
    let mut failures = Vec::new();
    let mut max_secs = 0;
    let mut learners = (0, 0);
    let (mut rolls, mut roll_secs, mut raced, mut lease_losses, mut resumes, mut mid) =
        (0, 0, 0, 0, 0, 0);
    for &seed in &seeds {
        let out = run_schedule(seed);
        max_secs = max_secs.max(out.virtual_secs);
        if let Some(r) = &out.roll {
            rolls += 1;
            roll_secs = roll_secs.max(r.virtual_secs);
            raced += r.raced;
            lease_losses += r.lease_losses;
            resumes += r.resumes;
            mid += r.lost_mid_renewal;
        }
        learners.0 += out.learners_removed.0;
        learners.1 += out.learners_removed.1;
        if !out.violations.is_empty() {
            eprintln!("seed {seed} FAILED (replay: SIM_SEED={seed}):");
            for v in &out.violations {
                eprintln!("  {v}");
            }
            failures.push(seed);
        }
    }
    eprintln!(
        "{} schedules, longest {} virtual seconds",
        seeds.len(),
        max_secs
    );
    eprintln!(
        "stale learners removed: {} never started, {} started but not promoted",
        learners.0, learners.1
    );
    eprintln!(
        "{rolls} upgrade rolls, longest {roll_secs} virtual seconds; {lease_losses} upgrade leases lost, \
         {resumes} resumes after a failed step, {raced} etcd outages that began after the upgrading \
         control plane's last look, {mid} steps begun on a renewal whose lease was lost in flight"
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    if seeds.len() >= 100 {
        assert!(
            learners.0 > 0 && learners.1 > 0,
            "the schedules never left a stale learner: {learners:?}"
        );
        // Seed 0 rolls unless `SIM_UPGRADE_EVERY=0` switched the rolls off.
        assert!(
            !upgrades(0) || (rolls > 0 && lease_losses > 0 && resumes > 0),
            "the rolls never lost a lease or resumed: {rolls} rolls, {lease_losses} leases lost, {resumes} resumes"
        );
    }
}

/// Schedules whose roll once took a control plane's etcd member down with another member
/// down (found with `SIM_UPGRADE_EVERY=1 SIM_SCHEDULES=3000`; not multiples of
/// `UPGRADE_EVERY`, so the default run does not roll them). 609: cp-2 decided its turn,
/// crashed while taking the lock, and 58 s later, cp-1's member down meanwhile, took the
/// lock and ran `kubeadm upgrade node` without asking etcd again (fixed: the turn is
/// checked again after a restart, and etcd afresh right before every step that takes the
/// member down).
#[test]
fn rolls_that_once_took_a_member_down_without_quorum_to_spare() {
    const SEEDS: &[u64] = &[609];
    for &seed in SEEDS {
        let out = run_schedule_rolling(seed, true);
        assert!(out.roll.is_some(), "seed {seed} rolls");
        assert!(
            out.violations.is_empty(),
            "seed {seed}: {:?}",
            out.violations
        );
    }
}

#[test]
fn a_schedule_is_reproducible_from_its_seed() {
    // 4240 rolls an upgrade after its assembly (a multiple of `UPGRADE_EVERY`).
    let a = run_schedule(4240);
    let b = run_schedule(4240);
    assert!(a.roll.is_some(), "seed 4240 rolls an upgrade");
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.violations, b.violations);
}
