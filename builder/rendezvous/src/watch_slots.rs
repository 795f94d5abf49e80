//! Open watches per client and per peer IP, long-polls and streams alike. A watch holds
//! its place while it is open (a long-poll up to a minute, a stream up to ten), so the
//! request rate alone would let one client hold tens of thousands of them: each a
//! connection, its buffers and a place in every change's fan-out.

use crate::error::ApiError;
use crate::limits::Limits;
use protocol::wire::ErrorKind;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The open watches' count per holder.
#[derive(Debug, Default)]
pub struct WatchSlots {
    open: Mutex<HashMap<Holder, usize>>,
}

/// Who holds open watches: a client name in a cluster, or a peer IP across both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    Client { cluster: String, client: String },
    Peer(IpAddr),
}

/// One open watch's place, given back when dropped (its answer made, its stream ended or
/// its connection closed).
#[derive(Debug)]
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    held: Vec<Holder>,
}

impl WatchSlots {
    /// A place for one more watch of `client` in `cluster` from `peer` (when served over
    /// a socket), or 429 `rate_limited` when the client holds `max_watches_per_client`
    /// already or its IP that many times `peer_rate_factor` (as the request rate: a client
    /// does not escape the limit by changing its name).
    pub fn take(
        self: &Arc<Self>,
        cluster: &str,
        client: &str,
        peer: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<WatchSlot, ApiError> {
        let per_client = limits.max_watches_per_client;
        let per_peer = (per_client as f64 * limits.peer_rate_factor) as usize;
        let mut held = vec![Holder::Client {
            cluster: cluster.to_string(),
            client: client.to_string(),
        }];
        held.extend(peer.map(Holder::Peer));
        let mut open = lock(&self.open);
        for h in &held {
            // No entry: none open.
            let n = open.get(h).copied().unwrap_or(0);
            let (max, who) = match h {
                Holder::Client { client, .. } => (per_client, format!("client {client}")),
                Holder::Peer(ip) => (per_peer, ip.to_string()),
            };
            if n >= max {
                return Err(ApiError::new(
                    ErrorKind::RateLimited,
                    format!("{who} holds {n} open watches, the most allowed"),
                ));
            }
        }
        for h in &held {
            *open.entry(h.clone()).or_insert(0) += 1;
        }
        Ok(WatchSlot {
            slots: self.clone(),
            held,
        })
    }

    /// Watches open now (counted once each, by client).
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.open)
            .iter()
            .filter(|(h, _)| matches!(h, Holder::Client { .. }))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.slots.open);
        for h in &self.held {
            if let Some(n) = open.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    open.remove(h);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_client: usize, factor: f64) -> Limits {
        Limits {
            max_watches_per_client: per_client,
            peer_rate_factor: factor,
            ..Limits::default()
        }
    }

    #[test]
    fn a_client_holds_at_most_its_watches_and_gets_them_back_when_they_end() {
        let slots = Arc::new(WatchSlots::default());
        let l = limits(2, 16.0);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        let a = slots.take("c1", "node-a", ip, &l).unwrap();
        let _b = slots.take("c1", "node-a", ip, &l).unwrap();
        let over = slots.take("c1", "node-a", ip, &l).unwrap_err();
        assert_eq!(over.kind, ErrorKind::RateLimited);
        assert!(
            over.value.contains("client node-a holds 2"),
            "{}",
            over.value
        );
        // Another name, or the same name in another cluster, has places of its own.
        let _c = slots.take("c1", "node-b", ip, &l).unwrap();
        let _d = slots.take("c2", "node-a", ip, &l).unwrap();
        assert_eq!(slots.open(), 4);
        // One ends: its place is free again.
        drop(a);
        let _e = slots.take("c1", "node-a", ip, &l).unwrap();
        assert_eq!(slots.open(), 4);
    }

    #[test]
    fn an_ip_holds_at_most_the_factor_times_as_many_across_names() {
        let slots = Arc::new(WatchSlots::default());
        let l = limits(1, 3.0);
        let ip = Some(IpAddr::from([10, 0, 0, 2]));
        let held: Vec<_> = (0..3)
            .map(|i| slots.take("c1", &format!("n{i}"), ip, &l).unwrap())
            .collect();
        let over = slots.take("c1", "n9", ip, &l).unwrap_err();
        assert!(over.value.contains("10.0.0.2 holds 3"), "{}", over.value);
        // A refused watch takes no place: the client's own count is untouched.
        let other_ip = Some(IpAddr::from([10, 0, 0, 3]));
        let _ok = slots.take("c1", "n9", other_ip, &l).unwrap();
        // Without a socket (in-process service), only the client's count applies.
        let _inproc = slots.take("c1", "n8", None, &l).unwrap();
        drop(held);
        assert_eq!(slots.open(), 2);
        // Ended holders are forgotten: n9, n8 and the other IP are left.
        assert_eq!(lock(&slots.open).len(), 3);
    }
}
