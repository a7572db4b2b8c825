//! Rate-limited logging: a flood of junk or forbidden packets must not become a
//! flood of log lines (which would be a denial of service of its own).

use std::time::{Duration, Instant};

/// Lets at most `burst` events through per `window`; counts the rest so the next
/// line that gets through can say how many were suppressed.
#[derive(Debug, Clone)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(burst: u32, window: Duration) -> RateLimit {
        RateLimit {
            window,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` if this event may be logged, with `n` events suppressed since the
    /// last one that was; `None` if it must be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_suppresses_then_reports() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}
