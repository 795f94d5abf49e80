//! Talking to the Kubernetes API about this node: what a drain evicts and how the API's
//! answers read ([`drain`]). Pure; the HTTP calls live in the upgrade driver.

pub mod drain;
