//! Rendezvous service tests: the protocol over real HTTP(S) on 127.0.0.1:0 with the
//! `nodeagent` client, security and limits, durability across `kill -9` of the real
//! binary, and TTL expiry under tokio's paused clock.

mod durability;
mod protocol;
mod security;
mod support;
mod ttl;
