//! Per-cluster limits and the per-client request rate limiter. Going over a limit is a
//! clear 4xx, never a crash or an unbounded allocation.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body accepted (413 `too_large`).
    pub max_body_bytes: usize,
    /// Records per cluster (403 `quota`).
    pub max_records: usize,
    /// Live members per cluster (403 `quota`).
    pub max_members: usize,
    /// Semaphores per cluster (403 `quota`).
    pub max_semaphores: usize,
    /// Largest slot count of a semaphore.
    pub max_slots: u32,
    /// TTLs (members, records, leases) must lie in `min_ttl_ms..=max_ttl_ms`.
    pub min_ttl_ms: u64,
    pub max_ttl_ms: u64,
    /// Longest watch long-poll.
    pub max_watch_ms: u64,
    /// Sustained requests per second per client (by signed client name), and burst.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// A request's timestamp must be within this many seconds of the server's clock.
    pub replay_window_s: u64,
    /// Changes kept in memory per cluster for watchers that are behind.
    pub change_log: usize,
    /// Most audit entries returned by one call.
    pub audit_page: usize,
    /// A request's headers must arrive within this long, and then its body within this
    /// long again, or the connection is closed (slow clients cannot hold it open).
    pub read_timeout_ms: u64,
    /// Connections per peer IP that have not yet made an authenticated request (still in
    /// the TLS handshake or sending their first request); more are closed at once.
    pub max_unauthenticated_per_ip: usize,
    /// Per peer IP, across client names and clusters, this many times the per-client
    /// rate and burst (and open watches), so a client cannot escape its limit by changing
    /// its name.
    pub peer_rate_factor: f64,
    /// Watches (long-polls and streams) one client name holds open at once in a cluster
    /// (429 `rate_limited`); an agent holds one stream, and a long-poll beside it at times.
    pub max_watches_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_records: 10_000,
            max_members: 10_000,
            max_semaphores: 1_000,
            max_slots: 10_000,
            min_ttl_ms: 100,
            max_ttl_ms: 24 * 3600 * 1000,
            max_watch_ms: 60_000,
            rate_per_second: 50.0,
            rate_burst: 200.0,
            replay_window_s: 60,
            change_log: 20_000,
            audit_page: 1_000,
            read_timeout_ms: 30_000,
            max_unauthenticated_per_ip: 32,
            peer_rate_factor: 16.0,
            max_watches_per_client: 8,
        }
    }
}

/// Token buckets per key: a client name, or a peer IP.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

/// How fast a bucket refills and how full it gets.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// Past this many buckets, full (idle) ones are dropped.
const PRUNE_AT: usize = 65_536;

impl RateLimiter {
    /// Takes one token from `client`'s bucket; false if it is empty.
    pub fn allow(&mut self, client: &str, now_ms: u64, limits: &Limits) -> bool {
        let rate = Rate {
            per_second: limits.rate_per_second,
            burst: limits.rate_burst,
        };
        self.take(client, now_ms, rate)
    }

    /// Takes one token from the bucket of peer `ip`, which is `peer_rate_factor` times
    /// the per-client rate and burst; false if it is empty.
    pub fn allow_peer(&mut self, ip: std::net::IpAddr, now_ms: u64, limits: &Limits) -> bool {
        let rate = Rate {
            per_second: limits.rate_per_second * limits.peer_rate_factor,
            burst: limits.rate_burst * limits.peer_rate_factor,
        };
        self.take(&ip.to_string(), now_ms, rate)
    }

    fn take(&mut self, key: &str, now_ms: u64, rate: Rate) -> bool {
        if self.buckets.len() >= PRUNE_AT && !self.buckets.contains_key(key) {
            self.buckets
                .retain(|_, b| refill(*b, now_ms, rate).tokens < rate.burst);
        }
        let b = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: rate.burst,
            last_ms: now_ms,
        });
        *b = refill(*b, now_ms, rate);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(b: Bucket, now_ms: u64, rate: Rate) -> Bucket {
    let elapsed_s = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
    Bucket {
        tokens: (b.tokens + elapsed_s * rate.per_second).min(rate.burst),
        last_ms: now_ms.max(b.last_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let limits = Limits {
            rate_per_second: 10.0,
            rate_burst: 3.0,
            ..Limits::default()
        };
        let mut r = RateLimiter::default();
        assert!((0..3).all(|_| r.allow("a", 0, &limits)));
        assert!(!r.allow("a", 0, &limits));
        // Another client has its own bucket.
        assert!(r.allow("b", 0, &limits));
        // 100 ms at 10/s is one token.
        assert!(r.allow("a", 100, &limits));
        assert!(!r.allow("a", 100, &limits));
    }

    #[test]
    fn peer_bucket_is_the_factor_times_the_client_bucket_whatever_the_names() {
        let limits = Limits {
            rate_per_second: 10.0,
            rate_burst: 3.0,
            peer_rate_factor: 2.0,
            ..Limits::default()
        };
        let mut r = RateLimiter::default();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        // Burst 6 for the IP, however many names it uses.
        assert!((0..6).all(|_| r.allow_peer(ip, 0, &limits)));
        assert!(!r.allow_peer(ip, 0, &limits));
        assert!(r.allow_peer("192.0.2.8".parse().unwrap(), 0, &limits));
        // 50 ms at 20/s is one token.
        assert!(r.allow_peer(ip, 50, &limits));
        assert!(!r.allow_peer(ip, 50, &limits));
    }
}
