//! The rendezvous client: what the agent (and `muster status`) use to talk to
//! `muster rendezvous`. It signs every request, seals and opens values so callers see
//! plaintext, pins the server certificate, and retries transport errors and 5xx.
//! Protocol: `docs/rendezvous-protocol.md`.

mod client;
mod coordinator;
pub(crate) mod holders;
mod pin;
mod retry;

pub use client::{Client, ClientError, PlainMember, PlainRecord};
pub use holders::{SlotHolder, holders_from_audit};
pub use model::rendezvous::{
    AcquireResponse, AuditEntry, AuditEvent, Change, ChangeKind, ErrorKind, Fence, Holder,
    WatchResponse,
};
pub use pin::{TlsError, http_client};
pub use retry::RetryPolicy;
