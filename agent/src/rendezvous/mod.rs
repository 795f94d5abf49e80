//! The agent's side of the rendezvous: the adapter that implements the bootstrap's
//! [`crate::coord::Coordinator`] on the protocol's signing client (`protocol::client`).
//! Protocol: `docs/rendezvous-protocol.md`.

mod coordinator;

pub use protocol::{
    AcquireResponse, AuditEntry, AuditEvent, Change, ChangeKind, Client, ClientError, ErrorKind,
    Fence, Holder, PlainMember, PlainRecord, RetryPolicy, SlotHolder, TlsError, WatchResponse,
    holders_from_audit, http_client,
};
