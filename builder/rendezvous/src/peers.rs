//! Per peer IP accounting of connections that have not authenticated yet (in the TLS
//! handshake or sending their first request). Capping them per IP keeps one host from
//! holding every file descriptor with slow or idle connections; a connection stops
//! counting once one of its requests authenticates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Unauthenticated connections per peer IP.
#[derive(Debug)]
pub struct PeerTable {
    max_per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in the [`PeerTable`]; put into each of its requests'
/// extensions. Dropping the last clone (the connection ended) frees the place.
#[derive(Debug)]
pub struct Ticket {
    ip: IpAddr,
    table: Arc<PeerTable>,
    counted: AtomicBool,
}

impl PeerTable {
    pub fn new(max_per_ip: usize) -> Arc<PeerTable> {
        Arc::new(PeerTable {
            max_per_ip,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A ticket for a new connection from `ip`, or `None` if that IP already holds the
    /// maximum of unauthenticated connections.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Ticket>> {
        let mut counts = lock(&self.counts);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Arc::new(Ticket {
            ip,
            table: self.clone(),
            counted: AtomicBool::new(true),
        }))
    }

    /// Unauthenticated connections from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        lock(&self.counts).get(&ip).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl Ticket {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The connection made an authenticated request: it no longer counts.
    pub fn authenticated(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.table.release(self.ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// A poisoned lock only means a thread panicked between two plain integer updates; the
/// map is still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_frees_on_auth_or_drop() {
        let table = PeerTable::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = table.admit(a).unwrap();
        let t2 = table.admit(a).unwrap();
        assert!(table.admit(a).is_none());
        assert!(table.admit(b).is_some());
        t1.authenticated();
        t1.authenticated();
        assert_eq!(table.count(a), 1);
        let t3 = table.admit(a).unwrap();
        assert!(table.admit(a).is_none());
        drop(t2);
        drop(t1);
        assert_eq!(table.count(a), 1);
        drop(t3);
        assert_eq!(table.count(a), 0);
    }
}
