//! The server's notion of "now", injected so TTL tests run under tokio's paused time
//! instead of sleeping.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds. Expiry times are absolute so they survive a restart.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_ms(&self) -> u64;
}

/// Wall-clock time: what `muster rendezvous` uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms(SystemTime::now())
    }
}

/// Wall-clock time at creation plus tokio's elapsed time: under `tokio::time::pause()`
/// it moves only when the test advances it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            base_ms: unix_ms(SystemTime::now()),
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
