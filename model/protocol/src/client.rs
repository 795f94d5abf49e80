//! `Client`: one cluster's view of the rendezvous. Holds no agent state; safe to share
//! (`Clone` is cheap) across tasks.

use crate::pin::TlsError;
use crate::retry::RetryPolicy;
use crate::seal::{ClusterKeys, RequestToSign, member_context, record_context};
use crate::watch_stream::{self, Mirror, OpenStream};
use crate::wire::{
    AcquireRequest, AcquireResponse, AuditEntry, AuditResponse, CasRequest, CreateRequest,
    DeleteRequest, ErrorBody, ErrorKind, Fence, ForgetResponse, HEADER_CLIENT, HEADER_NONCE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP, MembersResponse, Record, RecordList, RegisterRequest,
    RegisterResponse, ReleaseRequest, ReleaseResponse, RenewRequest, RenewResponse, Sealed,
    WATCH_STREAM_CONTENT_TYPE, WATCH_STREAM_LIFETIME_MS, WatchResponse, WriteResponse, check_name,
};
use model::baked::BakedRendezvous;
use model::secret::ClusterSecret;
use rand::Rng as _;
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Requests other than watches time out after this long (see [`crate::http_client`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// A watch request may take its long-poll timeout plus this much.
const WATCH_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a documented error; match on `kind`.
    #[error("rendezvous {method} {path}: {status} {kind}: {value}")]
    Api {
        method: String,
        path: String,
        status: u16,
        kind: ErrorKind,
        value: String,
    },
    #[error("rendezvous {method} {path}: {source}")]
    Transport {
        method: String,
        path: String,
        source: reqwest::Error,
    },
    #[error("rendezvous {method} {path}: unexpected answer {status}: {body}")]
    Protocol {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error(transparent)]
    Open(#[from] crate::seal::OpenError),
    #[error("member `{member}`: report is not JSON: {source}")]
    Report {
        member: String,
        source: serde_json::Error,
    },
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
    #[error("rendezvous base URL `{0}` cannot take a path")]
    BaseUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ClientError {
    /// The protocol error kind, if the service answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// A member with its report opened.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainMember {
    pub name: String,
    pub role: String,
    pub report: serde_json::Value,
    pub revision: u64,
    pub expires_at_ms: u64,
}

/// A member as listed, with its report opened or why it could not be.
#[derive(Debug)]
pub struct MemberRead {
    pub name: String,
    pub role: String,
    pub report: Result<serde_json::Value, ClientError>,
    pub revision: u64,
    pub expires_at_ms: u64,
}

impl MemberRead {
    pub fn into_result(self) -> Result<PlainMember, ClientError> {
        Ok(PlainMember {
            report: self.report?,
            name: self.name,
            role: self.role,
            revision: self.revision,
            expires_at_ms: self.expires_at_ms,
        })
    }
}

/// A record with its value opened.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainRecord {
    pub key: String,
    pub value: Vec<u8>,
    /// The CAS precondition for the next write.
    pub revision: u64,
    pub create_revision: u64,
    pub expires_at_ms: Option<u64>,
}

impl std::fmt::Debug for PlainRecord {
    // Values are secrets (join tokens, keys): never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainRecord")
            .field("key", &self.key)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("revision", &self.revision)
            .field("create_revision", &self.create_revision)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

#[derive(Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    keys: Arc<ClusterKeys>,
    name: String,
    retry: RetryPolicy,
    /// Last sealed report per member: an unchanged report is re-sent with the same
    /// ciphertext, so a heartbeat does not count as a change.
    reports: Arc<Mutex<HashMap<String, SealedReport>>>,
    /// The streaming watch kept open between [`Client::watch`] calls and what it
    /// delivered, shared by clones; its reader stops when the last clone is dropped.
    mirror: Arc<Mutex<Option<Arc<Mirror>>>>,
    /// Whether watches stream: off for a server that refused `stream=true` (one older
    /// than the streaming watch), or when asked for ([`Client::long_poll_watches`]).
    streams: Arc<AtomicBool>,
}

/// Role, plain report and its sealed form, as last sent for one member.
type SealedReport = (String, Vec<u8>, Sealed);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("cluster", &self.keys.cluster_id())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base` is the service origin (`https://10.0.0.2:7443`); `http` comes from
    /// [`crate::http_client`] (or any client, in tests); `name` identifies this client
    /// (usually the node name) for rate limiting and logs.
    pub fn new(
        base: Url,
        http: reqwest::Client,
        secret: &ClusterSecret,
        name: &str,
    ) -> Result<Client, ClientError> {
        check_name("client name", name).map_err(|problem| ClientError::Invalid {
            what: "client name",
            problem,
        })?;
        if base.cannot_be_a_base() {
            return Err(ClientError::BaseUrl(base.to_string()));
        }
        Ok(Client {
            base,
            http,
            keys: Arc::new(ClusterKeys::derive(secret)),
            name: name.to_string(),
            retry: RetryPolicy::default(),
            reports: Arc::default(),
            mirror: Arc::default(),
            streams: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The client a node builds from its baked config: pinned TLS, default timeouts.
    pub fn from_baked(
        baked: &BakedRendezvous,
        secret: &ClusterSecret,
        name: &str,
    ) -> Result<Client, ClientError> {
        let base = Url::parse(baked.url.as_str()).map_err(|e| ClientError::Invalid {
            what: "rendezvous url",
            problem: e.to_string(),
        })?;
        let pin = baked.cert_sha256.as_ref().map(|p| p.as_str());
        let http = crate::http_client(pin, DEFAULT_TIMEOUT)?;
        Client::new(base, http, secret, name)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    /// Watches by one long-poll request per answer instead of a stream (what a server
    /// older than the streaming watch gets anyway; the benchmark compares the two).
    pub fn long_poll_watches(mut self) -> Client {
        self.streams = Arc::new(AtomicBool::new(false));
        self.mirror = Arc::default();
        self
    }

    pub fn cluster_id(&self) -> &str {
        self.keys.cluster_id()
    }

    /// Registers `member` or heartbeats it; the report is sealed. The member is dropped
    /// from [`Self::members`] if it does not call again within `ttl`. Only a new member
    /// or a changed role or report counts as a change for watchers.
    pub async fn register(
        &self,
        member: &str,
        role: &str,
        report: &serde_json::Value,
        ttl: Duration,
    ) -> Result<RegisterResponse, ClientError> {
        let plain = serde_json::to_vec(report).map_err(|source| ClientError::Report {
            member: member.to_string(),
            source,
        })?;
        let sealed = {
            let mut cache = lock(&self.reports);
            match cache.get(member) {
                Some((r, p, s)) if r == role && *p == plain => s.clone(),
                _ => {
                    let s = self.seal(&member_context(member), &plain);
                    cache.insert(member.to_string(), (role.to_string(), plain, s.clone()));
                    s
                }
            }
        };
        let body = RegisterRequest {
            role: role.to_string(),
            report: sealed,
            ttl_ms: millis(ttl),
        };
        self.call(Method::PUT, &["members", member], &[], Some(&body), None)
            .await
    }

    /// Same as [`Self::register`]; named for the periodic call.
    pub async fn heartbeat(
        &self,
        member: &str,
        role: &str,
        report: &serde_json::Value,
        ttl: Duration,
    ) -> Result<RegisterResponse, ClientError> {
        self.register(member, role, report, ttl).await
    }

    /// Drops `member` from the live members now, not at its TTL (kind `not_found` if it is
    /// not a member). Returns the revision of the removal.
    pub async fn forget_member(&self, member: &str) -> Result<u64, ClientError> {
        let r: ForgetResponse = self
            .call::<(), _>(Method::DELETE, &["members", member], &[], None, None)
            .await?;
        Ok(r.revision)
    }

    /// Live members, by name, with their reports opened; and the cluster revision.
    pub async fn members(&self) -> Result<(u64, Vec<PlainMember>), ClientError> {
        let (revision, each) = self.members_each().await?;
        let members = each
            .into_iter()
            .map(|m| m.into_result())
            .collect::<Result<_, _>>()?;
        Ok((revision, members))
    }

    /// Every live member, each with its report opened or why it could not be: one member
    /// whose report does not open or parse does not hide the others (status views).
    pub async fn members_each(&self) -> Result<(u64, Vec<MemberRead>), ClientError> {
        let r: MembersResponse = self
            .call::<(), _>(Method::GET, &["members"], &[], None, None)
            .await?;
        let out = r
            .members
            .into_iter()
            .map(|m| {
                let report = self
                    .keys
                    .open(&member_context(&m.name), &m.report)
                    .map_err(ClientError::from)
                    .and_then(|plain| {
                        serde_json::from_slice(&plain).map_err(|source| ClientError::Report {
                            member: m.name.clone(),
                            source,
                        })
                    });
                MemberRead {
                    name: m.name,
                    role: m.role,
                    report,
                    revision: m.revision,
                    expires_at_ms: m.expires_at_ms,
                }
            })
            .collect();
        Ok((r.revision, out))
    }

    /// `key`'s record; a value that does not open is `Ok(Some(Err(..)))`, so a caller that
    /// shows many records can mark the one and go on.
    pub async fn get_each(
        &self,
        key: &str,
    ) -> Result<Option<Result<PlainRecord, ClientError>>, ClientError> {
        let query = [("key", key.to_string())];
        match self
            .call::<(), Record>(Method::GET, &["records"], &query, None, None)
            .await
        {
            Ok(r) => Ok(Some(self.open_record(r))),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `key` if absent (else error kind `exists`). No `ttl`: never expires. With
    /// a `fence`, only while its token holds a slot (else kind `fenced`). After a retried
    /// transport error, `exists` may mean our own first try succeeded: read it back.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        fence: Option<Fence>,
    ) -> Result<u64, ClientError> {
        let body = CreateRequest {
            key: key.to_string(),
            value: self.seal(&record_context(key), value),
            ttl_ms: ttl.map(millis),
            fence,
        };
        let r: WriteResponse = self
            .call(Method::POST, &["records"], &[], Some(&body), None)
            .await?;
        Ok(r.revision)
    }

    /// Replaces `key` if its revision is still `expected_revision` (else kind
    /// `revision_mismatch`; kind `not_found` if absent). Returns the new revision.
    pub async fn cas(
        &self,
        key: &str,
        expected_revision: u64,
        value: &[u8],
        ttl: Option<Duration>,
        fence: Option<Fence>,
    ) -> Result<u64, ClientError> {
        let body = CasRequest {
            key: key.to_string(),
            expected_revision,
            value: self.seal(&record_context(key), value),
            ttl_ms: ttl.map(millis),
            fence,
        };
        let r: WriteResponse = self
            .call(Method::PUT, &["records"], &[], Some(&body), None)
            .await?;
        Ok(r.revision)
    }

    /// The record, or `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<PlainRecord>, ClientError> {
        let query = [("key", key.to_string())];
        match self
            .call::<(), Record>(Method::GET, &["records"], &query, None, None)
            .await
        {
            Ok(r) => Ok(Some(self.open_record(r)?)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records whose key starts with `prefix`, by key; and the cluster revision.
    pub async fn list(&self, prefix: &str) -> Result<(u64, Vec<PlainRecord>), ClientError> {
        let query = [("prefix", prefix.to_string())];
        let r: RecordList = self
            .call::<(), _>(Method::GET, &["records"], &query, None, None)
            .await?;
        let records = r
            .records
            .into_iter()
            .map(|rec| self.open_record(rec))
            .collect::<Result<_, _>>()?;
        Ok((r.revision, records))
    }

    /// Deletes `key` (kind `not_found` if absent). Returns the revision of the delete.
    pub async fn delete(&self, key: &str, fence: Option<Fence>) -> Result<u64, ClientError> {
        let body = DeleteRequest {
            key: key.to_string(),
            fence,
        };
        let r: WriteResponse = self
            .call(Method::DELETE, &["records"], &[], Some(&body), None)
            .await?;
        Ok(r.revision)
    }

    /// Takes a slot of `semaphore` (created with `slots` on first use) for `holder`.
    /// `Busy` is not an error: watch and try again. Acquiring again while holding
    /// returns the same token and extends the lease.
    pub async fn acquire(
        &self,
        semaphore: &str,
        slots: u32,
        holder: &str,
        ttl: Duration,
    ) -> Result<AcquireResponse, ClientError> {
        let body = AcquireRequest {
            slots,
            holder: holder.to_string(),
            ttl_ms: millis(ttl),
        };
        self.call(
            Method::POST,
            &["semaphores", semaphore, "acquire"],
            &[],
            Some(&body),
            None,
        )
        .await
    }

    /// Extends a held lease (kind `not_held` if it was lost). Returns the new expiry.
    pub async fn renew(
        &self,
        semaphore: &str,
        holder: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<u64, ClientError> {
        let body = RenewRequest {
            holder: holder.to_string(),
            token,
            ttl_ms: millis(ttl),
        };
        let r: RenewResponse = self
            .call(
                Method::POST,
                &["semaphores", semaphore, "renew"],
                &[],
                Some(&body),
                None,
            )
            .await?;
        Ok(r.expires_at_ms)
    }

    /// Frees a slot; false if it was not held (already expired or released).
    pub async fn release(
        &self,
        semaphore: &str,
        holder: &str,
        token: u64,
    ) -> Result<bool, ClientError> {
        let body = ReleaseRequest {
            holder: holder.to_string(),
            token,
        };
        let r: ReleaseResponse = self
            .call(
                Method::POST,
                &["semaphores", semaphore, "release"],
                &[],
                Some(&body),
                None,
            )
            .await?;
        Ok(r.released)
    }

    /// Waits until the cluster revision exceeds `after_revision` (or `timeout` passes) and
    /// returns the changes since. Pass the returned `revision` to the next call. If
    /// `compacted`, changes were lost (restart, or too far behind): re-read state.
    ///
    /// Answered from a streaming watch kept open between calls: its reader task takes in
    /// every line as it comes, and a call returns every change after `after_revision`
    /// received so far (at once if there are any), as a long-poll would. A call the
    /// stream cannot answer (a revision before what it kept, a stream that ended or could
    /// not be opened) is a long-poll.
    pub async fn watch(
        &self,
        after_revision: u64,
        timeout: Duration,
    ) -> Result<WatchResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.streams.load(Ordering::Relaxed)
            && let Some(mirror) = self.mirror(after_revision).await
            && let Some(answer) = mirror.watch(after_revision, deadline).await
        {
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.long_poll(after_revision, left).await
    }

    /// The open stream's mirror, or one opened from `after` in place of an ended one;
    /// `None` when the server would not stream (after a 400 it is not asked again).
    async fn mirror(&self, after: u64) -> Option<Arc<Mirror>> {
        if let Some(m) = lock(&self.mirror).as_ref().filter(|m| !m.ended()) {
            return Some(m.clone());
        }
        match self.open_stream(after).await {
            Ok(stream) => {
                let mirror = Arc::new(Mirror::start(stream, after));
                *lock(&self.mirror) = Some(mirror.clone());
                Some(mirror)
            }
            Err(e) => {
                if matches!(e, ClientError::Api { status: 400, .. }) {
                    tracing::debug!("{e}; watching by long-poll from now on");
                    self.streams.store(false, Ordering::Relaxed);
                } else {
                    tracing::debug!("{e}; long-polling this once");
                }
                None
            }
        }
    }

    /// One long-poll request (`watch?after=R&timeout_ms=T`).
    async fn long_poll(
        &self,
        after_revision: u64,
        timeout: Duration,
    ) -> Result<WatchResponse, ClientError> {
        let query = [
            ("after", after_revision.to_string()),
            ("timeout_ms", millis(timeout).to_string()),
        ];
        self.call::<(), _>(
            Method::GET,
            &["watch"],
            &query,
            None,
            Some(timeout + WATCH_GRACE),
        )
        .await
    }

    /// Opens a streaming watch from `after`: the response head has arrived and says 200
    /// with a stream of lines; anything else is the server's error.
    async fn open_stream(&self, after: u64) -> Result<OpenStream, ClientError> {
        let query = [
            ("after", after.to_string()),
            ("timeout_ms", millis(watch_stream::IDLE).to_string()),
            ("stream", "true".to_string()),
        ];
        let url = self.url(&["watch"], &query);
        let path = path_and_query(&url);
        let method = Method::GET;
        let transport = transport_error(&method, &path);
        let resp = self
            .signed(&method, &url, &path, b"")
            .timeout(Duration::from_millis(WATCH_STREAM_LIFETIME_MS) + WATCH_GRACE)
            .send()
            .await
            .map_err(&transport)?;
        let streaming = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes() == WATCH_STREAM_CONTENT_TYPE.as_bytes());
        if resp.status().is_success() && streaming {
            return Ok(OpenStream::new(resp));
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(&transport)?;
        Err(error_answer(&method, &path, status, &bytes))
    }

    /// Audit entries after sequence number `after`, oldest first (one page; call again
    /// with the last `seq` for more).
    pub async fn audit(&self, after: u64) -> Result<Vec<AuditEntry>, ClientError> {
        let query = [("after", after.to_string())];
        let r: AuditResponse = self
            .call::<(), _>(Method::GET, &["audit"], &query, None, None)
            .await?;
        Ok(r.entries)
    }

    fn seal(&self, context: &str, plain: &[u8]) -> Sealed {
        self.keys.seal(context, plain, rand::rng().random())
    }

    fn open_record(&self, r: Record) -> Result<PlainRecord, ClientError> {
        Ok(PlainRecord {
            value: self.keys.open(&record_context(&r.key), &r.value)?,
            key: r.key,
            revision: r.revision,
            create_revision: r.create_revision,
            expires_at_ms: r.expires_at_ms,
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["v1", "clusters", self.keys.cluster_id()])
                .extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a signed request, retrying transport errors, 5xx and 429 with backoff.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query);
        let path = path_and_query(&url);
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Invalid {
                what: "request body",
                problem: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let mut retry = 0;
        loop {
            let last = retry + 1 >= self.retry.attempts;
            let outcome = self.send_once(&method, &url, &path, &body, timeout).await;
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if last || !retryable(&e) => return Err(e),
                Err(e) => {
                    let pause = self.retry.delay(retry, rand::rng().random());
                    tracing::debug!("{e}; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    retry += 1;
                }
            }
        }
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        method: &Method,
        url: &Url,
        path: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let mut req = self.signed(method, url, path, body);
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let transport = transport_error(method, path);
        let resp = req.send().await.map_err(&transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(&transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        Err(error_answer(method, path, status, &bytes))
    }

    /// A request to `url` carrying this client's signature of it (`path` is its path and
    /// query, as signed).
    fn signed(
        &self,
        method: &Method,
        url: &Url,
        path: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let nonce = hex::encode(rand::rng().random::<[u8; 16]>());
        let signature = self.keys.signing_key().sign(&RequestToSign {
            method: method.as_str(),
            path_and_query: path,
            body,
            timestamp,
            nonce: &nonce,
            client: &self.name,
        });
        self.http
            .request(method.clone(), url.clone())
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, nonce)
            .header(HEADER_CLIENT, &self.name)
            .header(HEADER_SIGNATURE, signature)
    }
}

/// A request's path and query, as signed.
fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// A transport failure of `method path`, as the error that names them.
fn transport_error<'a>(
    method: &'a Method,
    path: &'a str,
) -> impl Fn(reqwest::Error) -> ClientError + 'a {
    move |source| ClientError::Transport {
        method: method.to_string(),
        path: path.to_string(),
        source,
    }
}

/// The error a non-2xx answer stands for: the documented JSON error, or its raw start.
fn error_answer(
    method: &Method,
    path: &str,
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(e) => ClientError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            kind: e.kind,
            value: e.value,
        },
        Err(_) => ClientError::Protocol {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, kind, .. } => *status >= 500 || *kind == ErrorKind::RateLimited,
        ClientError::Protocol { status, .. } => *status >= 500,
        _ => false,
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// The cache holds plain values; a panic elsewhere cannot leave it half-written.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
