//! The rendezvous protocol, shared by `nodeagent` (the agent) and `muster` (the operator
//! commands and the lab): the wire types the server speaks ([`wire`]), the record keys and
//! the records stored under them ([`keys`], [`records`]), the member report every agent
//! heartbeats ([`report`]) with its etcd view ([`etcd_view`]), the signing and sealing client
//! ([`client`]), and the one cluster status view built from all of them ([`status`]).
//! The server itself (`muster-rendezvous`) stores only ciphertext and depends on [`wire`].

pub mod client;
pub mod clock;
pub mod drain;
pub mod etcd_gateway;
pub mod etcd_view;
pub mod fleetlock;
pub mod generation;
pub mod holders;
pub mod key_file;
pub mod keys;
pub mod pem_client;
pub mod pin;
pub mod readiness;
pub mod records;
pub mod release;
pub mod release_transfer;
pub mod removal;
pub mod report;
pub mod retry;
pub mod roll;
pub mod seal;
pub mod status;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod watch_stream;
pub mod wire;

pub use client::{Client, ClientError, MemberRead, PlainMember, PlainRecord};
pub use holders::{Resize, SlotHolder, holders_from_audit, resizes_from_audit};
pub use pin::{TlsError, http_client, http_client_from, tls_client_config};
pub use retry::RetryPolicy;
pub use wire::{
    AcquireResponse, AuditEntry, AuditEvent, Change, ChangeKind, ErrorKind, Fence, Holder,
    WatchResponse,
};
