//! Talking to the Kubernetes API about this node: what a drain evicts and how the API's
//! answers read ([`drain`], shared with `muster remove` in the protocol crate). Pure; the
//! HTTP calls live in the drivers.

pub use protocol::drain;
