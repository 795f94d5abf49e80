//! The server's own figures of the watch fan-out (issue 17): for each change, how long
//! after it became durable each parked watcher's answer was handed to its connection
//! (the wake-up, the queue of other watchers ahead of it on the two workers and their
//! TLS writes; not this watcher's own write nor anything on the client's side).
//!
//! Collected only while `muster_rendezvous::fanout=debug` is enabled (`MUSTER_LOG`); one
//! `watch fan-out` line per change, written when the next change becomes durable, so the
//! figures are complete for every watcher that was waiting. `builder/benches/rendezvous.rs`
//! reads these lines.

use std::sync::Mutex;
use std::time::Instant;

/// The tracing target of the figures.
pub const TARGET: &str = "muster_rendezvous::fanout";

/// The figures of the change being fanned out now.
#[derive(Debug)]
pub struct Fanout {
    /// Whether figures are collected (decided once: [`Fanout::enabled`] when the cluster
    /// was loaded).
    on: bool,
    round: Mutex<Option<Round>>,
}

#[derive(Debug)]
struct Round {
    revision: u64,
    durable_at: Instant,
    waits_us: Vec<u32>,
}

/// One change's fan-out: how many watchers it answered and how long after it became
/// durable (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub revision: u64,
    pub watchers: usize,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

impl Fanout {
    /// Whether the figures are wanted (cheap: tracing caches the answer per call site).
    pub fn enabled() -> bool {
        tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
    }

    /// Figures collected when `on`.
    pub fn new(on: bool) -> Fanout {
        Fanout {
            on,
            round: Mutex::new(None),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// `revision` became durable at `at`: the previous change's figures, if it answered
    /// anyone, and counting starts for this one. Called before the change's watchers are
    /// woken, so the first of them counts too.
    pub fn durable(&self, revision: u64, at: Instant) -> Option<Summary> {
        if !self.on {
            return None;
        }
        let next = Round {
            revision,
            durable_at: at,
            waits_us: Vec::new(),
        };
        let previous = lock(&self.round).replace(next)?;
        summarize(previous)
    }

    /// A watcher's answer, with the changes up to `revision`, was made at `at`.
    pub fn answered(&self, revision: u64, at: Instant) {
        if !self.on {
            return;
        }
        if let Some(r) = lock(&self.round).as_mut()
            && r.revision == revision
        {
            let waited = at.saturating_duration_since(r.durable_at).as_micros();
            r.waits_us.push(u32::try_from(waited).unwrap_or(u32::MAX));
        }
    }
}

/// Logs `s` as the `watch fan-out` line the bench reads.
pub fn log(s: &Summary) {
    tracing::debug!(
        target: TARGET,
        revision = s.revision,
        watchers = s.watchers,
        p50_us = s.p50_us,
        p99_us = s.p99_us,
        max_us = s.max_us,
        "watch fan-out"
    );
}

fn summarize(mut r: Round) -> Option<Summary> {
    if r.waits_us.is_empty() {
        return None;
    }
    r.waits_us.sort_unstable();
    let n = r.waits_us.len();
    // Nearest rank on 0..n-1, as the bench computes its client-side figures.
    let at = |p: f64| r.waits_us[((n - 1) as f64 * p).round() as usize];
    Some(Summary {
        revision: r.revision,
        watchers: n,
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: r.waits_us[n - 1],
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_change_is_summarized_when_the_next_one_is_durable() {
        let f = Fanout::new(true);
        let t0 = Instant::now();
        assert_eq!(f.durable(7, t0), None);
        for ms in 1..=100 {
            f.answered(7, t0 + Duration::from_millis(ms));
        }
        // An answer for another revision (a late watcher of an older change) is not
        // this change's.
        f.answered(6, t0 + Duration::from_secs(9));
        let s = f.durable(8, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(
            s,
            Summary {
                revision: 7,
                watchers: 100,
                p50_us: 51_000,
                p99_us: 99_000,
                max_us: 100_000,
            }
        );
        // Nobody waited for 8.
        assert_eq!(f.durable(9, t0 + Duration::from_secs(2)), None);
        // Off, nothing is kept.
        let off = Fanout::new(false);
        off.durable(7, t0);
        off.answered(7, t0);
        assert_eq!(off.durable(8, t0), None);
    }
}
