//! Rendezvous protocol v1: the wire types shared by the server (`muster rendezvous`) and
//! the client (`nodeagent::rendezvous::Client`). Serde only; the prose specification is
//! `docs/rendezvous-protocol.md` and the two must agree.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every route lives under this prefix, followed by `/clusters/{cluster_id}/…`.
pub const API_PREFIX: &str = "/v1";

/// Request headers of the signature scheme (see `crate::seal::RequestToSign`).
pub const HEADER_TIMESTAMP: &str = "x-muster-timestamp";
pub const HEADER_NONCE: &str = "x-muster-nonce";
pub const HEADER_CLIENT: &str = "x-muster-client";
pub const HEADER_SIGNATURE: &str = "x-muster-signature";

/// Longest record key, semaphore name, member name or client name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A value sealed client-side (ChaCha20-Poly1305): base64 of `nonce || ciphertext+tag`.
/// The server stores and returns it verbatim and cannot read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} chars)", self.0.len())
    }
}

/// A record write may carry a fence: it is applied only while `token` holds a slot of
/// `semaphore`; otherwise the server answers 409 `fenced` and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub semaphore: String,
    pub token: u64,
}

// ---- members ----

/// `PUT /v1/clusters/{id}/members/{name}`: register, or heartbeat an existing member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub role: String,
    pub report: Sealed,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The cluster revision after this call.
    pub revision: u64,
    /// Unix milliseconds when the member expires unless it heartbeats again.
    pub expires_at_ms: u64,
}

/// Answer to `DELETE /v1/clusters/{id}/members/{name}` (404 `not_found` if not a member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetResponse {
    /// The cluster revision of the removal.
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub report: Sealed,
    /// Revision at which the member joined or last changed its role or report.
    pub revision: u64,
    pub expires_at_ms: u64,
}

/// `GET /v1/clusters/{id}/members`: live members, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersResponse {
    pub revision: u64,
    pub members: Vec<Member>,
}

// ---- records ----

/// `POST /v1/clusters/{id}/records`: create if absent (409 `exists` otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub key: String,
    pub value: Sealed,
    /// Absent: the record never expires.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub fence: Option<Fence>,
}

/// `PUT /v1/clusters/{id}/records`: compare-and-swap (409 `revision_mismatch` if the
/// record's revision is not `expected_revision`, 404 `not_found` if it is absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasRequest {
    pub key: String,
    pub expected_revision: u64,
    pub value: Sealed,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub fence: Option<Fence>,
}

/// `DELETE /v1/clusters/{id}/records`: delete (404 `not_found` if absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub key: String,
    #[serde(default)]
    pub fence: Option<Fence>,
}

/// Answer to a create, CAS or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The record's revision after the write (for a delete: the revision of the delete).
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub value: Sealed,
    /// Revision of the last write to this record; the CAS precondition.
    pub revision: u64,
    pub create_revision: u64,
    pub expires_at_ms: Option<u64>,
}

/// `GET /v1/clusters/{id}/records?prefix=P`: records whose key starts with `P`, by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordList {
    pub revision: u64,
    pub records: Vec<Record>,
}

// ---- semaphores ----

/// `POST /v1/clusters/{id}/semaphores/{name}/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Slot count. The first acquire sets it; a later acquire with another count from a
    /// live member resizes the semaphore (a rebuilt spec changed it; audit `resized`),
    /// from anyone else it is 409 `slots_mismatch`.
    pub slots: u32,
    pub holder: String,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub holder: String,
    pub token: u64,
    pub expires_at_ms: u64,
}

/// Not an error when busy: a caller waits (watch) and tries again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AcquireResponse {
    Granted {
        token: u64,
        expires_at_ms: u64,
    },
    /// `revision` is the cluster revision when the answer was made: watch after it to
    /// be woken when a slot is released or expires.
    Busy {
        holders: Vec<Holder>,
        revision: u64,
    },
}

/// `POST /v1/clusters/{id}/semaphores/{name}/renew` (409 `not_held` if the slot is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub holder: String,
    pub token: u64,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    pub expires_at_ms: u64,
}

/// `POST /v1/clusters/{id}/semaphores/{name}/release`; releasing a slot not held is not an
/// error (`released: false`), so a retry after a lost answer is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub holder: String,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: bool,
}

// ---- watch ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    RecordPut,
    RecordDeleted,
    RecordExpired,
    MemberUp,
    MemberExpired,
    /// Dropped on request (`DELETE /members/{name}`, `muster remove`) before its TTL ran out.
    MemberForgotten,
    SemaphoreGranted,
    SemaphoreReleased,
    SemaphoreExpired,
}

/// One change; `name` is the record key, member name or semaphore name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub name: String,
}

/// A streaming watch (`watch?stream=true`) ends after this long; the client opens the
/// next from the revision it has seen (a bound on how long one request lives, so a
/// client's request timeout can be finite).
pub const WATCH_STREAM_LIFETIME_MS: u64 = 600_000;
/// A streaming watch's keep-alive interval (`timeout_ms`) is at least this long.
pub const WATCH_STREAM_MIN_IDLE_MS: u64 = 1_000;
/// The content type of a streaming watch: one [`WatchResponse`] per line.
pub const WATCH_STREAM_CONTENT_TYPE: &str = "application/x-ndjson";

/// `GET /v1/clusters/{id}/watch?after=R&timeout_ms=T`: returns as soon as the cluster
/// revision exceeds `R` (or after `T` with no changes). With `stream=true` the answer is
/// a stream of these, one JSON object per line: each with the changes after the line
/// before (the first: after `R`), and one without changes after `T` of silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// True when changes after `R` are no longer retained (server restart, or too far
    /// behind): `changes` is then empty and the caller must re-read what it needs.
    pub compacted: bool,
}

// ---- audit ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Granted,
    Released,
    Expired,
    RecordCreated,
    RecordDeleted,
    /// A member dropped on request (`DELETE /members/{name}`); `subject` is its name.
    MemberForgotten,
    /// A semaphore's slot count changed: a live member (`holder`) acquired with another
    /// count (a rebuilt spec). `slots` is the new count, `previous_slots` the old one.
    /// Holders beyond a smaller count keep their slots until they release or expire; new
    /// grants are made only below it.
    Resized,
    /// An event this build does not know (written by a newer service): readers skip it
    /// instead of failing to decode the whole log. Never written.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in this cluster's audit log, from 1, gap-free.
    pub seq: u64,
    pub time_ms: u64,
    pub revision: u64,
    pub event: AuditEvent,
    /// Semaphore name or record key.
    pub subject: String,
    /// The slot holder (semaphore events).
    pub holder: Option<String>,
    /// The fencing token granted, released or expired; for a record event, the token of
    /// the fence the write carried.
    pub token: Option<u64>,
    /// Slot count of the semaphore (semaphore events): the count in force when the event
    /// happened (for `resized`, the new one).
    pub slots: Option<u32>,
    /// For `resized`: the slot count before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_slots: Option<u32>,
}

/// `GET /v1/clusters/{id}/audit?after=SEQ&limit=N`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntry>,
}

// ---- errors ----

/// The documented error kinds; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Unauthenticated,
    NotFound,
    Exists,
    RevisionMismatch,
    Fenced,
    NotHeld,
    SlotsMismatch,
    /// FleetLock: every slot of the lock is held by someone else.
    SemaphoreFull,
    TooLarge,
    Quota,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Quota => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Exists
            | ErrorKind::RevisionMismatch
            | ErrorKind::Fenced
            | ErrorKind::NotHeld
            | ErrorKind::SlotsMismatch
            | ErrorKind::SemaphoreFull => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name, so logs and the wire say the same thing.
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// Every error response body: `{"kind": "...", "value": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub value: String,
}

/// Checks a record key, member, semaphore or client name: 1 to [`MAX_NAME_LEN`] bytes of
/// printable ASCII without spaces, so it is safe in paths, logs and storage keys.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("{what} must be 1 to {MAX_NAME_LEN} bytes long"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} `{}` may only contain printable ASCII without spaces",
            name.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a resize names the count before; entries written before the field
    /// existed still decode, and an event a later service adds decodes as `other`.
    #[test]
    fn audit_entries_old_and_new_decode() {
        let old = r#"{"seq":1,"time_ms":2,"revision":3,"event":"granted","subject":"cp-join","holder":"cp-2","token":4,"slots":2}"#;
        let e: AuditEntry = serde_json::from_str(old).unwrap();
        assert_eq!((e.event, e.previous_slots), (AuditEvent::Granted, None));
        assert!(
            !serde_json::to_string(&e)
                .unwrap()
                .contains("previous_slots")
        );
        let resized = r#"{"seq":2,"time_ms":2,"revision":3,"event":"resized","subject":"cp-join","holder":"cp-3","token":null,"slots":3,"previous_slots":2}"#;
        let e: AuditEntry = serde_json::from_str(resized).unwrap();
        assert_eq!(
            (e.event, e.slots, e.previous_slots),
            (AuditEvent::Resized, Some(3), Some(2))
        );
        let future = old.replace("granted", "something_new");
        let e: AuditEntry = serde_json::from_str(&future).unwrap();
        assert_eq!(e.event, AuditEvent::Other);
    }

    #[test]
    fn acquire_response_is_tagged() {
        let g = AcquireResponse::Granted {
            token: 3,
            expires_at_ms: 9,
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"result":"granted","token":3,"expires_at_ms":9}"#
        );
        let b: AcquireResponse =
            serde_json::from_str(r#"{"result":"busy","holders":[],"revision":4}"#).unwrap();
        assert_eq!(
            b,
            AcquireResponse::Busy {
                holders: vec![],
                revision: 4
            }
        );
    }

    #[test]
    fn error_kinds_have_snake_names_and_statuses() {
        assert_eq!(ErrorKind::RevisionMismatch.to_string(), "revision_mismatch");
        assert_eq!(ErrorKind::Fenced.status(), 409);
        let e: ErrorBody = serde_json::from_str(r#"{"kind":"fenced","value":"x"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Fenced);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("key", "init/done").is_ok());
        assert!(check_name("key", "").is_err());
        assert!(check_name("key", "a b").is_err());
        assert!(check_name("key", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
