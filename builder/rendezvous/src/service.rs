//! The service state: every served cluster's records, members and semaphores in memory,
//! written through to the [`Store`] before any answer. One lock per cluster orders its
//! changes; the cluster revision grows with each change and wakes watchers once durable.

use crate::auth::ReplayCache;
use crate::clock::Clock;
use crate::committer::Committer;
use crate::error::ApiError;
use crate::fanout::{self, Fanout};
use crate::keys::{KeyDir, is_cluster_id};
use crate::limits::{Limits, RateLimiter};
use crate::semaphore::Acquired;
use crate::store::{
    Batch, ClusterData, Meta, Op, Store, StoredMember, StoredRecord, StoredSemaphore,
};
use crate::watch_slots::{WatchSlot, WatchSlots};
use axum::body::Bytes;
use protocol::seal::SigningKey;
use protocol::wire::{
    AcquireRequest, AcquireResponse, AuditEntry, AuditEvent, CasRequest, Change, ChangeKind,
    CreateRequest, DeleteRequest, ErrorKind, Fence, ForgetResponse, Member, MembersResponse,
    Record, RecordList, RegisterRequest, RegisterResponse, ReleaseRequest, ReleaseResponse,
    RenewRequest, RenewResponse, WatchResponse, WriteResponse, check_name,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Cheap to clone; the axum state.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    committer: Committer,
    clock: Arc<dyn Clock>,
    limits: Limits,
    keys: KeyDir,
    clusters: Mutex<HashMap<String, Arc<ClusterCell>>>,
    /// Request rate per peer IP, across clusters and client names.
    peer_rate: Mutex<RateLimiter>,
    /// Set when a commit failed: memory may now be ahead of disk, so the service answers
    /// 503 until restarted (and reloaded from disk).
    failed: AtomicBool,
    /// Set at shutdown, before every cell's watchers are woken to see it
    /// ([`Service::begin_shutdown`]).
    shutting_down: AtomicBool,
    /// Open watches per client and peer IP.
    watch_slots: Arc<WatchSlots>,
    /// The second this process started serving. The replay memory is in-process, so a
    /// request signed before it could be a replay of one the previous process accepted.
    started_s: u64,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("clock", &self.inner.clock)
            .field("limits", &self.inner.limits)
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

/// One served cluster.
#[derive(Debug)]
pub struct ClusterCell {
    id: String,
    state: Mutex<ClusterState>,
    /// The highest durable revision; watchers wait on it.
    committed: watch::Sender<u64>,
    /// The watch answers encoded last, shared by every watcher that asks for the same
    /// revisions: all parked watchers wake for the same change, so it is encoded once
    /// and each answer is a reference to the same bytes (issue 17: encoding it under the
    /// cluster lock once per watcher made the last of 10,000 wait for all the others).
    answers: Mutex<VecDeque<Answer>>,
    /// The server's own fan-out figures, when asked for (`fanout`).
    fanout: Fanout,
}

/// One encoded watch answer: the changes after `after` up to `upto`, as JSON.
#[derive(Debug, Clone)]
struct Answer {
    after: u64,
    upto: u64,
    json: Bytes,
}

/// Encoded answers kept per cluster: watchers a change or two behind find theirs too.
const ANSWERS_KEPT: usize = 4;

#[derive(Debug)]
pub struct ClusterState {
    meta: Meta,
    records: BTreeMap<String, StoredRecord>,
    members: BTreeMap<String, StoredMember>,
    semaphores: BTreeMap<String, StoredSemaphore>,
    /// Recent changes, oldest first; complete for every revision above `floor`.
    changes: VecDeque<Change>,
    floor: u64,
    /// Nothing expires before this time (a lower bound), so most requests skip the scan.
    next_expiry: u64,
    pub replay: ReplayCache,
    pub rate: RateLimiter,
}

/// What one audit entry says (`ClusterState::audit` adds its sequence number, time and
/// revision).
#[derive(Debug)]
struct Audit<'a> {
    event: AuditEvent,
    subject: &'a str,
    holder: Option<&'a str>,
    token: Option<u64>,
    slots: Option<u32>,
    previous_slots: Option<u32>,
}

impl<'a> Audit<'a> {
    fn of(event: AuditEvent, subject: &'a str) -> Self {
        Audit {
            event,
            subject,
            holder: None,
            token: None,
            slots: None,
            previous_slots: None,
        }
    }

    fn holder(self, holder: &'a str) -> Self {
        Audit {
            holder: Some(holder),
            ..self
        }
    }

    fn token(self, token: Option<u64>) -> Self {
        Audit { token, ..self }
    }

    fn slots(self, slots: u32) -> Self {
        Audit {
            slots: Some(slots),
            ..self
        }
    }

    fn previous_slots(self, before: u32) -> Self {
        Audit {
            previous_slots: Some(before),
            ..self
        }
    }
}

/// The writes and changes one request makes; committed as one batch.
#[derive(Debug)]
struct Txn {
    now: u64,
    ops: Vec<Op>,
    meta_dirty: bool,
    changes: Vec<Change>,
}

impl Service {
    /// Call from within a tokio runtime (it starts the commit task).
    pub fn new(
        store: Arc<dyn Store>,
        keys: KeyDir,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Service {
        let started_s = clock.now_ms() / 1000;
        Service {
            inner: Arc::new(Inner {
                started_s,
                committer: Committer::spawn(store.clone()),
                store,
                clock,
                limits,
                keys,
                clusters: Mutex::new(HashMap::new()),
                peer_rate: Mutex::new(RateLimiter::default()),
                failed: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                watch_slots: Arc::default(),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub fn started_s(&self) -> u64 {
        self.inner.started_s
    }

    /// Takes one request from peer `ip`'s budget; false if it is over its rate.
    pub fn allow_peer(&self, ip: std::net::IpAddr, now_ms: u64) -> bool {
        lock(&self.inner.peer_rate).allow_peer(ip, now_ms, &self.inner.limits)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Makes pending watches return now, so a graceful shutdown does not wait for them.
    /// Watchers wait on their cluster's durable revision only: the flag is set first, then
    /// each cell's watchers are woken without a change and find it (a shutdown
    /// subscription of their own would put every watcher of every change through one
    /// more waiter list, under one lock shared by all of them).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let cells: Vec<_> = lock(&self.inner.clusters).values().cloned().collect();
        for cell in cells {
            cell.committed.send_modify(|_| ());
        }
    }

    /// A place for one more open watch of `client` in `cluster` from `peer`, or 429 when
    /// it or its IP holds as many as allowed ([`WatchSlots::take`]).
    pub fn take_watch_slot(
        &self,
        cluster: &str,
        client: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<WatchSlot, ApiError> {
        self.inner
            .watch_slots
            .take(cluster, client, peer, &self.inner.limits)
    }

    /// Whether [`Service::begin_shutdown`] was called: a watcher woken without a change
    /// checks it.
    pub(crate) fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    pub fn check_available(&self) -> Result<(), ApiError> {
        if self.inner.failed.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "storage failed; the service must be restarted",
            ));
        }
        Ok(())
    }

    pub fn signing_key(&self, cluster_id: &str) -> Result<Option<SigningKey>, ApiError> {
        self.inner.keys.lookup(cluster_id).map_err(|e| {
            tracing::error!("{e}");
            ApiError::new(ErrorKind::Internal, "cannot read the cluster key")
        })
    }

    /// The cell of a served cluster, loading it from the store on first use.
    pub fn cluster(&self, cluster_id: &str) -> Result<Arc<ClusterCell>, ApiError> {
        if !is_cluster_id(cluster_id) {
            return Err(ApiError::bad_request(format!(
                "`{cluster_id}` is not a cluster id"
            )));
        }
        let mut clusters = lock(&self.inner.clusters);
        if let Some(c) = clusters.get(cluster_id) {
            return Ok(c.clone());
        }
        let data = self.inner.store.load(cluster_id).map_err(|e| {
            tracing::error!("loading cluster {cluster_id}: {e}");
            ApiError::new(ErrorKind::Unavailable, "storage read failed")
        })?;
        let cell = Arc::new(ClusterCell::new(cluster_id, data, Fanout::enabled()));
        clusters.insert(cluster_id.to_string(), cell.clone());
        Ok(cell)
    }

    /// Expires what is due in every loaded cluster (the background sweeper's job, so
    /// watchers learn of a dead holder without any other request arriving).
    pub async fn sweep_all(&self) {
        let cells: Vec<_> = lock(&self.inner.clusters).values().cloned().collect();
        for cell in cells {
            // The error was logged and the service marked failed; continue with others.
            let _ = cell.run(self, |_, _| Ok(())).await;
        }
    }

    fn fail(&self) {
        self.inner.failed.store(true, Ordering::Relaxed);
    }
}

impl ClusterCell {
    /// A cell of `data`; with `fanout_on`, collecting the fan-out figures.
    fn new(id: &str, data: ClusterData, fanout_on: bool) -> ClusterCell {
        let revision = data.meta.revision;
        let mut st = ClusterState {
            meta: data.meta,
            records: data.records,
            members: data.members,
            semaphores: data.semaphores,
            changes: VecDeque::new(),
            floor: revision,
            next_expiry: 0,
            replay: ReplayCache::default(),
            rate: RateLimiter::default(),
        };
        st.next_expiry = st.earliest_expiry();
        ClusterCell {
            id: id.to_string(),
            state: Mutex::new(st),
            committed: watch::Sender::new(revision),
            answers: Mutex::new(VecDeque::new()),
            fanout: Fanout::new(fanout_on),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        lock(&self.state)
    }

    /// Runs `f` under the cluster lock after expiring what is due, then waits until its
    /// writes are durable before returning its result. Expiries are committed even when
    /// `f` fails.
    async fn run<T>(
        &self,
        svc: &Service,
        f: impl FnOnce(&mut ClusterState, &mut Txn) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        svc.check_available()?;
        let (result, pending) = {
            let mut st = self.lock();
            let mut tx = Txn {
                now: svc.now_ms(),
                ops: Vec::new(),
                meta_dirty: false,
                changes: Vec::new(),
            };
            st.sweep(&mut tx);
            let result = f(&mut st, &mut tx);
            let pending = st
                .finish(tx, &self.id, svc.limits().change_log)
                .map(|(batch, rev)| (svc.inner.committer.enqueue(batch), rev));
            (result, pending)
        };
        if let Some((ack, revision)) = pending {
            match ack.await {
                Ok(Ok(())) => {
                    let mut previous = None;
                    self.committed.send_if_modified(|c| {
                        let newer = revision > *c;
                        *c = (*c).max(revision);
                        // Before the watchers are woken (on return), so that the fan-out
                        // figures count the first of them too.
                        if newer {
                            previous = self.fanout.durable(revision, Instant::now());
                        }
                        newer
                    });
                    if let Some(s) = previous {
                        fanout::log(&s);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!("cluster {}: {e}; refusing further requests", self.id);
                    svc.fail();
                    return Err(ApiError::new(
                        ErrorKind::Unavailable,
                        "storage write failed",
                    ));
                }
                Err(_) => {
                    svc.fail();
                    return Err(ApiError::new(ErrorKind::Unavailable, "commit thread gone"));
                }
            }
        }
        result
    }

    pub async fn register(
        &self,
        svc: &Service,
        name: &str,
        req: RegisterRequest,
    ) -> Result<RegisterResponse, ApiError> {
        check_name("member name", name).map_err(ApiError::bad_request)?;
        check_name("role", &req.role).map_err(ApiError::bad_request)?;
        let limits = svc.limits();
        let ttl = check_ttl(limits, req.ttl_ms)?;
        self.run(svc, |st, tx| {
            let expires_at_ms = tx.now.saturating_add(ttl);
            let revision = match st.members.get(name) {
                Some(m) if m.role == req.role && m.report == req.report => m.revision,
                existing => {
                    if existing.is_none() && st.members.len() >= limits.max_members {
                        return Err(quota("members", limits.max_members));
                    }
                    st.bump(tx, ChangeKind::MemberUp, name)
                }
            };
            let m = StoredMember {
                role: req.role,
                report: req.report,
                revision,
                expires_at_ms,
            };
            st.members.insert(name.to_string(), m.clone());
            st.note_expiry(expires_at_ms);
            tx.ops.push(Op::PutMember(name.to_string(), m));
            Ok(RegisterResponse {
                revision: st.meta.revision,
                expires_at_ms,
            })
        })
        .await
    }

    /// Drops `name` from the members now instead of at its TTL (`muster remove`): watchers
    /// see `member_forgotten`, the audit log records it. A member that heartbeats again
    /// afterwards is registered anew.
    pub async fn forget(&self, svc: &Service, name: &str) -> Result<ForgetResponse, ApiError> {
        check_name("member name", name).map_err(ApiError::bad_request)?;
        self.run(svc, |st, tx| {
            if st.members.remove(name).is_none() {
                return Err(ApiError::new(
                    ErrorKind::NotFound,
                    format!("`{name}` is not a member"),
                ));
            }
            let revision = st.bump(tx, ChangeKind::MemberForgotten, name);
            tx.ops.push(Op::DeleteMember(name.to_string()));
            st.audit(tx, Audit::of(AuditEvent::MemberForgotten, name));
            Ok(ForgetResponse { revision })
        })
        .await
    }

    pub async fn members(&self, svc: &Service) -> Result<MembersResponse, ApiError> {
        self.run(svc, |st, _| {
            Ok(MembersResponse {
                revision: st.meta.revision,
                members: st
                    .members
                    .iter()
                    .map(|(name, m)| Member {
                        name: name.clone(),
                        role: m.role.clone(),
                        report: m.report.clone(),
                        revision: m.revision,
                        expires_at_ms: m.expires_at_ms,
                    })
                    .collect(),
            })
        })
        .await
    }

    pub async fn create(
        &self,
        svc: &Service,
        req: CreateRequest,
    ) -> Result<WriteResponse, ApiError> {
        check_name("record key", &req.key).map_err(ApiError::bad_request)?;
        let limits = svc.limits();
        let ttl = req.ttl_ms.map(|t| check_ttl(limits, t)).transpose()?;
        self.run(svc, |st, tx| {
            st.check_fence(req.fence.as_ref())?;
            if st.records.contains_key(&req.key) {
                return Err(ApiError::new(
                    ErrorKind::Exists,
                    format!("record `{}` already exists", req.key),
                ));
            }
            if st.records.len() >= limits.max_records {
                return Err(quota("records", limits.max_records));
            }
            let revision = st.bump(tx, ChangeKind::RecordPut, &req.key);
            st.put_record(tx, &req.key, req.value, revision, revision, ttl);
            st.audit(
                tx,
                Audit::of(AuditEvent::RecordCreated, &req.key).token(req.fence.map(|f| f.token)),
            );
            Ok(WriteResponse { revision })
        })
        .await
    }

    pub async fn cas(&self, svc: &Service, req: CasRequest) -> Result<WriteResponse, ApiError> {
        check_name("record key", &req.key).map_err(ApiError::bad_request)?;
        let ttl = req.ttl_ms.map(|t| check_ttl(svc.limits(), t)).transpose()?;
        self.run(svc, |st, tx| {
            st.check_fence(req.fence.as_ref())?;
            let current = st
                .records
                .get(&req.key)
                .ok_or_else(|| not_found(&req.key))?;
            if current.revision != req.expected_revision {
                return Err(ApiError::new(
                    ErrorKind::RevisionMismatch,
                    format!(
                        "record `{}` is at revision {}, not {}",
                        req.key, current.revision, req.expected_revision
                    ),
                ));
            }
            let created = current.create_revision;
            let revision = st.bump(tx, ChangeKind::RecordPut, &req.key);
            st.put_record(tx, &req.key, req.value, revision, created, ttl);
            Ok(WriteResponse { revision })
        })
        .await
    }

    pub async fn delete(
        &self,
        svc: &Service,
        req: DeleteRequest,
    ) -> Result<WriteResponse, ApiError> {
        check_name("record key", &req.key).map_err(ApiError::bad_request)?;
        self.run(svc, |st, tx| {
            st.check_fence(req.fence.as_ref())?;
            if st.records.remove(&req.key).is_none() {
                return Err(not_found(&req.key));
            }
            let revision = st.bump(tx, ChangeKind::RecordDeleted, &req.key);
            tx.ops.push(Op::DeleteRecord(req.key.clone()));
            st.audit(
                tx,
                Audit::of(AuditEvent::RecordDeleted, &req.key).token(req.fence.map(|f| f.token)),
            );
            Ok(WriteResponse { revision })
        })
        .await
    }

    pub async fn get(&self, svc: &Service, key: &str) -> Result<Record, ApiError> {
        check_name("record key", key).map_err(ApiError::bad_request)?;
        self.run(svc, |st, _| {
            st.records
                .get(key)
                .map(|r| to_record(key, r))
                .ok_or_else(|| not_found(key))
        })
        .await
    }

    pub async fn list(&self, svc: &Service, prefix: &str) -> Result<RecordList, ApiError> {
        self.run(svc, |st, _| {
            Ok(RecordList {
                revision: st.meta.revision,
                records: st
                    .records
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, r)| to_record(k, r))
                    .collect(),
            })
        })
        .await
    }

    pub async fn acquire(
        &self,
        svc: &Service,
        name: &str,
        req: AcquireRequest,
    ) -> Result<AcquireResponse, ApiError> {
        check_name("semaphore name", name).map_err(ApiError::bad_request)?;
        check_name("holder", &req.holder).map_err(ApiError::bad_request)?;
        let limits = svc.limits();
        let ttl = check_ttl(limits, req.ttl_ms)?;
        if req.slots == 0 || req.slots > limits.max_slots {
            return Err(ApiError::bad_request(format!(
                "slots must be 1 to {}",
                limits.max_slots
            )));
        }
        self.run(svc, |st, tx| {
            if !st.semaphores.contains_key(name) && st.semaphores.len() >= limits.max_semaphores {
                return Err(quota("semaphores", limits.max_semaphores));
            }
            // Only a live member may change the count (a node whose rebuilt spec changed
            // it): expired members were swept before this runs.
            let member = st.members.contains_key(&req.holder);
            let sem = st
                .semaphores
                .entry(name.to_string())
                .or_insert_with(|| StoredSemaphore::new(req.slots));
            if sem.slots != req.slots && !member {
                return Err(ApiError::new(
                    ErrorKind::SlotsMismatch,
                    format!(
                        "semaphore `{name}` has {} slot(s), not {}; only a live member may \
                         change the count, and `{}` is not one",
                        sem.slots, req.slots, req.holder
                    ),
                ));
            }
            let resized = sem.resize(req.slots);
            let acquired = sem.acquire(&req.holder, ttl, tx.now);
            // One write of the semaphore for whatever changed it: the count, a lease.
            if resized.is_some() || matches!(acquired, Acquired::Granted { .. }) {
                tx.ops.push(Op::PutSemaphore(name.to_string(), sem.clone()));
            }
            if let Some(before) = resized {
                tracing::info!(
                    cluster = %self.id,
                    semaphore = name,
                    holder = %req.holder,
                    "semaphore resized from {before} to {} slot(s)",
                    req.slots
                );
                st.audit(
                    tx,
                    Audit::of(AuditEvent::Resized, name)
                        .holder(&req.holder)
                        .slots(req.slots)
                        .previous_slots(before),
                );
            }
            match acquired {
                Acquired::Busy(holders) => Ok(AcquireResponse::Busy {
                    holders,
                    revision: st.meta.revision,
                }),
                Acquired::Granted {
                    token,
                    expires_at_ms,
                    fresh,
                } => {
                    st.note_expiry(expires_at_ms);
                    if fresh {
                        st.bump(tx, ChangeKind::SemaphoreGranted, name);
                        st.audit(
                            tx,
                            Audit::of(AuditEvent::Granted, name)
                                .holder(&req.holder)
                                .token(Some(token))
                                .slots(req.slots),
                        );
                    }
                    Ok(AcquireResponse::Granted {
                        token,
                        expires_at_ms,
                    })
                }
            }
        })
        .await
    }

    pub async fn renew(
        &self,
        svc: &Service,
        name: &str,
        req: RenewRequest,
    ) -> Result<RenewResponse, ApiError> {
        check_name("semaphore name", name).map_err(ApiError::bad_request)?;
        let ttl = check_ttl(svc.limits(), req.ttl_ms)?;
        self.run(svc, |st, tx| {
            let sem = st.semaphores.get_mut(name);
            let expires_at_ms = sem
                .and_then(|s| {
                    let e = s.renew(&req.holder, req.token, ttl, tx.now)?;
                    tx.ops.push(Op::PutSemaphore(name.to_string(), s.clone()));
                    Some(e)
                })
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::NotHeld,
                        format!(
                            "`{}` does not hold semaphore `{name}` with token {}",
                            req.holder, req.token
                        ),
                    )
                })?;
            st.note_expiry(expires_at_ms);
            Ok(RenewResponse { expires_at_ms })
        })
        .await
    }

    pub async fn release(
        &self,
        svc: &Service,
        name: &str,
        req: ReleaseRequest,
    ) -> Result<ReleaseResponse, ApiError> {
        check_name("semaphore name", name).map_err(ApiError::bad_request)?;
        self.run(svc, |st, tx| {
            let released = st.release(tx, name, &req.holder, Some(req.token));
            Ok(ReleaseResponse { released })
        })
        .await
    }

    /// Frees whatever slot `holder` has in semaphore `name`, whatever its token (a
    /// FleetLock client's unlock names only itself); whether it had one.
    pub async fn release_holder(
        &self,
        svc: &Service,
        name: &str,
        holder: &str,
    ) -> Result<bool, ApiError> {
        check_name("semaphore name", name).map_err(ApiError::bad_request)?;
        self.run(svc, |st, tx| Ok(st.release(tx, name, holder, None)))
            .await
    }

    /// Long-poll: answers as soon as a change after `after` is durable, or after
    /// `timeout` (or at shutdown) with no changes.
    pub async fn watch(&self, svc: &Service, after: u64, timeout: Duration) -> WatchResponse {
        match self.wait_past(svc, after, timeout).await {
            Some(revision) => self.lock().changes_between(after, revision),
            None => WatchResponse {
                revision: after,
                changes: Vec::new(),
                compacted: false,
            },
        }
    }

    /// [`ClusterCell::watch`]'s answer as JSON, encoded once for every watcher waiting
    /// for the same revisions.
    pub async fn watch_json(&self, svc: &Service, after: u64, timeout: Duration) -> Bytes {
        let upto = self.wait_past(svc, after, timeout).await.unwrap_or(after);
        let json = self.answer(after, upto);
        if upto != after {
            self.answered(upto);
        }
        json
    }

    /// The durable revision, for a watcher that keeps its subscription
    /// (`watch_stream::LineWatch`).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Counts an answer with the changes up to `upto` in the fan-out figures, when asked
    /// for (`fanout`).
    pub(crate) fn answered(&self, upto: u64) {
        if self.fanout.is_on() {
            self.fanout.answered(upto, Instant::now());
        }
    }

    /// Waits until the durable revision differs from `after` (`Some` of it), or until
    /// `timeout` or shutdown (`None`).
    async fn wait_past(&self, svc: &Service, after: u64, timeout: Duration) -> Option<u64> {
        let mut committed = self.committed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let revision = *committed.borrow_and_update();
            if revision != after {
                return Some(revision);
            }
            // After the revision was read: a shutdown after this wakes `changed` below.
            if svc.shutting_down() {
                return None;
            }
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// The encoded answer for the changes after `after` up to `upto`: a shared copy when
    /// another watcher asked for it already, else encoded now (outside the cluster lock)
    /// and kept for the next.
    pub(crate) fn answer(&self, after: u64, upto: u64) -> Bytes {
        let found = lock(&self.answers)
            .iter()
            .find(|a| a.after == after && a.upto == upto)
            .map(|a| a.json.clone());
        if let Some(json) = found {
            return json;
        }
        let response = if upto == after {
            WatchResponse {
                revision: after,
                changes: Vec::new(),
                compacted: false,
            }
        } else {
            self.lock().changes_between(after, upto)
        };
        // A struct of numbers, strings and enums: encoding it cannot fail.
        #[allow(clippy::expect_used)]
        let mut json =
            serde_json::to_vec(&response).expect("a WatchResponse always encodes as JSON");
        // One line: a streaming watch sends these very bytes (JSON allows the newline
        // after a long-poll's body too).
        json.push(b'\n');
        let json = Bytes::from(json);
        let mut answers = lock(&self.answers);
        // Another watcher may have encoded the same answer meanwhile: hand out its bytes
        // so every watcher of one change shares one copy.
        if let Some(kept) = answers.iter().find(|a| a.after == after && a.upto == upto) {
            return kept.json.clone();
        }
        if answers.len() >= ANSWERS_KEPT {
            answers.pop_front();
        }
        answers.push_back(Answer {
            after,
            upto,
            json: json.clone(),
        });
        json
    }
}

impl ClusterState {
    /// Frees `holder`'s slot of semaphore `name` (with `token`, or whichever it holds),
    /// recording the release; whether there was one.
    fn release(&mut self, tx: &mut Txn, name: &str, holder: &str, token: Option<u64>) -> bool {
        let Some(sem) = self.semaphores.get_mut(name) else {
            return false;
        };
        let Some(token) = token.or_else(|| {
            sem.holders
                .iter()
                .find(|h| h.holder == holder)
                .map(|h| h.token)
        }) else {
            return false;
        };
        if !sem.release(holder, token) {
            return false;
        }
        let (snapshot, slots) = (sem.clone(), sem.slots);
        tx.ops.push(Op::PutSemaphore(name.to_string(), snapshot));
        self.bump(tx, ChangeKind::SemaphoreReleased, name);
        self.audit(
            tx,
            Audit::of(AuditEvent::Released, name)
                .holder(holder)
                .token(Some(token))
                .slots(slots),
        );
        true
    }

    fn bump(&mut self, tx: &mut Txn, kind: ChangeKind, name: &str) -> u64 {
        self.meta.revision += 1;
        tx.meta_dirty = true;
        tx.changes.push(Change {
            revision: self.meta.revision,
            kind,
            name: name.to_string(),
        });
        self.meta.revision
    }

    /// Appends `a` to the audit log with the cluster's next sequence number, the
    /// request's time and the revision now.
    fn audit(&mut self, tx: &mut Txn, a: Audit<'_>) {
        self.meta.audit_seq += 1;
        tx.meta_dirty = true;
        tx.ops.push(Op::Audit(AuditEntry {
            seq: self.meta.audit_seq,
            time_ms: tx.now,
            revision: self.meta.revision,
            event: a.event,
            subject: a.subject.to_string(),
            holder: a.holder.map(str::to_string),
            token: a.token,
            slots: a.slots,
            previous_slots: a.previous_slots,
        }));
    }

    fn put_record(
        &mut self,
        tx: &mut Txn,
        key: &str,
        value: protocol::wire::Sealed,
        revision: u64,
        create_revision: u64,
        ttl: Option<u64>,
    ) {
        let expires_at_ms = ttl.map(|t| tx.now.saturating_add(t));
        if let Some(e) = expires_at_ms {
            self.note_expiry(e);
        }
        let r = StoredRecord {
            value,
            revision,
            create_revision,
            expires_at_ms,
        };
        self.records.insert(key.to_string(), r.clone());
        tx.ops.push(Op::PutRecord(key.to_string(), r));
    }

    /// A fenced write is allowed only while its token holds a slot (expired leases are
    /// swept before this runs).
    fn check_fence(&self, fence: Option<&Fence>) -> Result<(), ApiError> {
        let Some(f) = fence else { return Ok(()) };
        let held = self
            .semaphores
            .get(&f.semaphore)
            .is_some_and(|s| s.is_held_by_token(f.token));
        if held {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::Fenced,
                format!(
                    "token {} no longer holds semaphore `{}`",
                    f.token, f.semaphore
                ),
            ))
        }
    }

    fn note_expiry(&mut self, at: u64) {
        self.next_expiry = self.next_expiry.min(at);
    }

    fn earliest_expiry(&self) -> u64 {
        let r = self.records.values().filter_map(|r| r.expires_at_ms);
        let m = self.members.values().map(|m| m.expires_at_ms);
        let s = self.semaphores.values().filter_map(|s| s.next_expiry());
        r.chain(m).chain(s).min().unwrap_or(u64::MAX)
    }

    /// Removes every record, member and slot whose time ran out.
    fn sweep(&mut self, tx: &mut Txn) {
        if tx.now < self.next_expiry {
            return;
        }
        let now = tx.now;
        let dead: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.expires_at_ms.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.records.remove(&key);
            self.bump(tx, ChangeKind::RecordExpired, &key);
            tx.ops.push(Op::DeleteRecord(key));
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.expires_at_ms <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for name in gone {
            self.members.remove(&name);
            self.bump(tx, ChangeKind::MemberExpired, &name);
            tx.ops.push(Op::DeleteMember(name));
        }
        let mut expired = Vec::new();
        for (name, sem) in self.semaphores.iter_mut() {
            let lost = sem.expire(now);
            if !lost.is_empty() {
                tx.ops.push(Op::PutSemaphore(name.clone(), sem.clone()));
                expired.push((name.clone(), sem.slots, lost));
            }
        }
        for (name, slots, lost) in expired {
            for h in lost {
                self.bump(tx, ChangeKind::SemaphoreExpired, &name);
                self.audit(
                    tx,
                    Audit::of(AuditEvent::Expired, &name)
                        .holder(&h.holder)
                        .token(Some(h.token))
                        .slots(slots),
                );
            }
        }
        self.next_expiry = self.earliest_expiry();
    }

    /// Turns `tx` into a batch (or nothing, for a pure read) and remembers its changes.
    fn finish(&mut self, mut tx: Txn, cluster: &str, keep: usize) -> Option<(Batch, u64)> {
        if tx.meta_dirty {
            tx.ops.push(Op::Meta(self.meta));
        }
        self.changes.extend(tx.changes);
        while self.changes.len() > keep {
            if let Some(c) = self.changes.pop_front() {
                self.floor = c.revision;
            }
        }
        if tx.ops.is_empty() {
            return None;
        }
        Some((
            Batch {
                cluster: cluster.to_string(),
                ops: tx.ops,
            },
            self.meta.revision,
        ))
    }

    fn changes_between(&self, after: u64, upto: u64) -> WatchResponse {
        if after < self.floor || after > upto {
            return WatchResponse {
                revision: upto,
                changes: Vec::new(),
                compacted: true,
            };
        }
        // Revisions are dense, so the change with revision `after + 1` sits at a known
        // offset from the front.
        let start = self
            .changes
            .front()
            .map(|c| (after + 1).saturating_sub(c.revision) as usize)
            .unwrap_or(0);
        WatchResponse {
            revision: upto,
            changes: self
                .changes
                .iter()
                .skip(start)
                .take_while(|c| c.revision <= upto)
                .cloned()
                .collect(),
            compacted: false,
        }
    }
}

fn to_record(key: &str, r: &StoredRecord) -> Record {
    Record {
        key: key.to_string(),
        value: r.value.clone(),
        revision: r.revision,
        create_revision: r.create_revision,
        expires_at_ms: r.expires_at_ms,
    }
}

fn check_ttl(limits: &Limits, ttl_ms: u64) -> Result<u64, ApiError> {
    if ttl_ms < limits.min_ttl_ms || ttl_ms > limits.max_ttl_ms {
        return Err(ApiError::bad_request(format!(
            "ttl_ms {ttl_ms} is outside {}..={}",
            limits.min_ttl_ms, limits.max_ttl_ms
        )));
    }
    Ok(ttl_ms)
}

fn quota(what: &str, max: usize) -> ApiError {
    ApiError::new(
        ErrorKind::Quota,
        format!("this cluster already has the maximum of {max} {what}"),
    )
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no record `{key}`"))
}

/// A poisoned lock means a request panicked while holding it; nothing under these locks
/// panics by design, and refusing every later request would be worse than going on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::redb_store::RedbStore;
    use protocol::wire::Sealed;

    pub(crate) const CLUSTER: &str = "0123456789abcdef01234567";

    /// A service over a fresh redb store in `dir` (also for `watch_stream`'s tests).
    pub(crate) fn service(dir: &std::path::Path, limits: Limits) -> Service {
        let store = RedbStore::open(dir).unwrap();
        Service::new(
            Arc::new(store),
            KeyDir::new(dir.join("keys")),
            Arc::new(SystemClock),
            limits,
        )
    }

    /// Creates record `key`: its revision.
    pub(crate) async fn put(cell: &ClusterCell, svc: &Service, key: &str) -> u64 {
        let req = CreateRequest {
            key: key.to_string(),
            value: Sealed("v".into()),
            ttl_ms: None,
            fence: None,
        };
        cell.create(svc, req).await.unwrap().revision
    }

    /// Parks `n` watchers after `after`; each answers its bytes.
    fn park(
        cell: &Arc<ClusterCell>,
        svc: &Service,
        after: u64,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Bytes>> {
        (0..n)
            .map(|_| {
                let (cell, svc) = (cell.clone(), svc.clone());
                tokio::spawn(
                    async move { cell.watch_json(&svc, after, Duration::from_secs(30)).await },
                )
            })
            .collect()
    }

    /// Polls until `n` watchers wait on the cluster's revision (no sleeps of fixed length
    /// stand in for "they are parked").
    async fn until_parked(cell: &ClusterCell, n: usize) {
        while cell.committed.receiver_count() < n {
            tokio::task::yield_now().await;
        }
    }

    fn decode(json: &Bytes) -> WatchResponse {
        serde_json::from_slice(json).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fan_out_figures_count_every_watcher_of_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let data = svc.store().load(CLUSTER).unwrap();
        let cell = Arc::new(ClusterCell::new(CLUSTER, data, true));
        for round in 0..5 {
            let before = put(&cell, &svc, &format!("a{round}")).await;
            let watchers = park(&cell, &svc, before, 256);
            until_parked(&cell, 256).await;
            let made = put(&cell, &svc, &format!("b{round}")).await;
            for w in watchers {
                w.await.unwrap();
            }
            // Closing the round by hand, as the next durable change would.
            let s = cell.fanout.durable(made + 1, Instant::now()).unwrap();
            assert_eq!((s.revision, s.watchers), (made, 256));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_answers_parked_long_polls_at_once_and_later_ones_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let cell = svc.cluster(CLUSTER).unwrap();
        let before = put(&cell, &svc, "a").await;
        let watchers = park(&cell, &svc, before, 16);
        until_parked(&cell, 16).await;
        svc.begin_shutdown();
        for w in watchers {
            // Parked for 30 s: only the shutdown answers them within 5.
            let answer = tokio::time::timeout(Duration::from_secs(5), w).await;
            let answer = decode(
                &answer
                    .expect("a parked watch outlived the shutdown")
                    .unwrap(),
            );
            assert_eq!((answer.revision, answer.changes.len()), (before, 0));
        }
        let late = tokio::time::timeout(
            Duration::from_secs(5),
            cell.watch_json(&svc, before, Duration::from_secs(30)),
        )
        .await;
        assert_eq!(
            decode(&late.expect("a watch after the shutdown waited")).revision,
            before
        );
        // One behind still gets its changes: the shutdown ends waits, not answers.
        let behind = cell.watch_json(&svc, 0, Duration::from_secs(30)).await;
        assert_eq!(decode(&behind).revision, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_watcher_gets_the_one_encoding_of_the_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let cell = svc.cluster(CLUSTER).unwrap();
        let before = put(&cell, &svc, "a").await;
        let watchers = park(&cell, &svc, before, 64);
        until_parked(&cell, 64).await;
        let made = put(&cell, &svc, "b").await;
        let mut answers = Vec::new();
        for w in watchers {
            answers.push(w.await.unwrap());
        }
        let first = &answers[0];
        let expected = WatchResponse {
            revision: made,
            changes: vec![Change {
                revision: made,
                kind: ChangeKind::RecordPut,
                name: "b".into(),
            }],
            compacted: false,
        };
        assert_eq!(decode(first), expected);
        for a in &answers {
            // The same bytes, not an equal copy: encoded once, shared by all.
            assert_eq!(a.as_ptr(), first.as_ptr());
            assert_eq!(a.len(), first.len());
        }
        // A watcher arriving later for the same revisions gets the same shared bytes.
        let late = cell.watch_json(&svc, before, Duration::from_secs(1)).await;
        assert_eq!(late.as_ptr(), first.as_ptr());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_that_is_never_polled_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Limits::default());
        let cell = svc.cluster(CLUSTER).unwrap();
        let before = put(&cell, &svc, "a").await;
        // One watcher is parked and then never polled again (a connection whose task
        // does not get to run), another holds its answer and never finishes.
        let mut stalled = Box::pin(cell.watch_json(&svc, before, Duration::from_secs(30)));
        assert!(futures_poll_once(stalled.as_mut()).await.is_none());
        let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = {
            let (cell, svc) = (cell.clone(), svc.clone());
            tokio::spawn(async move {
                let got = cell.watch_json(&svc, before, Duration::from_secs(30)).await;
                let _ = hold_rx.await;
                got
            })
        };
        let others = park(&cell, &svc, before, 16);
        until_parked(&cell, 18).await;
        let made = put(&cell, &svc, "b").await;
        for w in others {
            assert_eq!(decode(&w.await.unwrap()).revision, made);
        }
        let _ = hold_tx.send(());
        assert_eq!(decode(&holder.await.unwrap()).revision, made);
        // The stalled one, polled at last, has the change too.
        assert_eq!(decode(&stalled.await).revision, made);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_watcher_gets_every_change_since_it_looked_or_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            change_log: 3,
            ..Limits::default()
        };
        let svc = service(dir.path(), limits);
        let cell = svc.cluster(CLUSTER).unwrap();
        let start = put(&cell, &svc, "a").await;
        let parked = park(&cell, &svc, start, 4);
        until_parked(&cell, 4).await;
        let r1 = put(&cell, &svc, "b").await;
        let r2 = put(&cell, &svc, "c").await;
        // Parked watchers woke for the first change or both: never a revision they
        // were not told the changes of.
        for w in parked {
            let got = decode(&w.await.unwrap());
            assert!(got.revision == r1 || got.revision == r2);
            assert_eq!(got.changes.first().map(|c| c.revision), Some(r1));
            assert_eq!(got.changes.last().map(|c| c.revision), Some(got.revision));
        }
        // One that looked last at `start` and comes back now: both changes, the latest
        // revision.
        let lag = decode(&cell.watch_json(&svc, start, Duration::from_secs(1)).await);
        let names: Vec<_> = lag.changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            (lag.revision, names, lag.compacted),
            (r2, vec!["b", "c"], false)
        );
        // Further behind than the change log keeps: compacted, at the latest revision.
        let r5 = {
            put(&cell, &svc, "d").await;
            put(&cell, &svc, "e").await;
            put(&cell, &svc, "f").await
        };
        let far = decode(&cell.watch_json(&svc, start, Duration::from_secs(1)).await);
        assert_eq!(
            (far.revision, far.changes.len(), far.compacted),
            (r5, 0, true)
        );
    }

    /// Polls `f` once: its output if ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
