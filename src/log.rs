//! Rate limiting for log lines, so that a flood of bad input cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Lets a log line through at most once per interval, so a flood of bad input cannot flood the
/// log; the metrics still count every occurrence.
pub struct LogLimiter {
    start: Instant,
    next_ms: AtomicU64,
    interval: Duration,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            interval,
        }
    }

    pub fn allow(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.interval.as_millis() as u64,
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_allows_one_per_interval() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert!(l.allow());
        assert!(!l.allow());
    }
}
