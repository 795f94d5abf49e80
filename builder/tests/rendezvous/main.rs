//! Rendezvous service tests: the protocol over real HTTP(S) on 127.0.0.1:0 with the
//! `nodeagent` client, security and limits, durability across `kill -9` of the real
//! binary, and TTL expiry under tokio's paused clock.
// Helpers outside `#[test]` fns panic on setup failure, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod durability;
mod props;
mod protocol;
mod release;
mod security;
mod support;
mod ttl;
mod watch_stream;
