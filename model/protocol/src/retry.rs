//! Retry with exponential backoff and full jitter, so many agents that failed together
//! do not retry together.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, including the first; 1 means no retry.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries (tests that want to see the first failure).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The pause before retry number `retry` (0-based): uniform in
    /// `0..=min(max, base * 2^retry)`; `unit` is a random number in `0.0..1.0`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }
}
