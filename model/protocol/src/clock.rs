//! Time as the agent sees it: wall-clock milliseconds for the persisted state and sleeps
//! for waiting. Injected so the simulation runs on virtual time.

use std::time::Duration;

/// Milliseconds since the Unix epoch (virtual in the simulation).
pub type Millis = u64;

pub trait Clock {
    fn now_ms(&self) -> Millis;
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()>;
}

/// The real clock: `SystemTime` for timestamps, tokio for sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Wall-clock milliseconds since the Unix epoch (0 before it, which no real clock is).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        now_ms()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A clock on tokio's (possibly paused) timer, starting at a fixed epoch: under
/// `tokio::time::pause()` it is fully virtual and deterministic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
    epoch_ms: Millis,
}

impl TokioClock {
    pub fn new(epoch_ms: Millis) -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            epoch_ms,
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> Millis {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}
