//! Counters and histograms the workers update on the hot path without locks
//! (relaxed atomics), and the daemon reads to log and, later, to export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the refresh-lateness buckets, in microseconds: fine below
/// 1 ms, where a healthy switch lives, coarse above 50 ms, where it is in trouble.
const LATENESS_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One count per bound, plus one for "above the last bound".
    buckets: [AtomicU64; LATENESS_BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENESS_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENESS_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): an upper
    /// estimate, never an underestimate. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(match LATENESS_BOUNDS_US.get(i) {
                    Some(&us) => Duration::from_micros(us),
                    None => self.max(),
                });
            }
        }
        Some(self.max())
    }
}

/// The switch's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// How late Vigil's session refreshes left, behind the moment they were due.
    pub refresh_lateness: Histogram,
    pub refreshes_sent: AtomicU64,
    pub refreshes_answered: AtomicU64,
    pub refreshes_failed: AtomicU64,
    /// NAT keep-alive datagrams sent to registered contacts.
    pub keepalives_sent: AtomicU64,
    /// How far each contact's actual keep-alive interval was from its period.
    pub keepalive_deviation: Histogram,
    /// Hook calls into scripts or plugins that failed (error, budget, memory,
    /// panic, invalid answer): the default decision applied instead.
    pub policy_errors: AtomicU64,
    /// Config reloads applied, and refused (the running config stayed).
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One log-friendly line about NAT keep-alives.
    pub fn keepalive_summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.3}", d.as_secs_f64() * 1000.0)
            })
        };
        format!(
            "keepalives_sent={} interval_deviation_p50_ms<={} p99_ms<={} max_ms={}",
            self.keepalives_sent.load(Ordering::Relaxed),
            ms(self.keepalive_deviation.quantile(0.5)),
            ms(self.keepalive_deviation.quantile(0.99)),
            ms(Some(self.keepalive_deviation.max())),
        )
    }

    /// One log-friendly line about session refreshes.
    pub fn refresh_summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.3}", d.as_secs_f64() * 1000.0)
            })
        };
        format!(
            "refreshes_sent={} answered={} failed={} lateness_p50_ms<={} p99_ms<={} max_ms={}",
            self.refreshes_sent.load(Ordering::Relaxed),
            self.refreshes_answered.load(Ordering::Relaxed),
            self.refreshes_failed.load(Ordering::Relaxed),
            ms(self.refresh_lateness.quantile(0.5)),
            ms(self.refresh_lateness.quantile(0.99)),
            ms(Some(self.refresh_lateness.max())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(80));
        }
        h.record(Duration::from_millis(30));
        h.record(Duration::from_secs(20));
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(100)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_millis(50)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(20)));
        assert_eq!(h.max(), Duration::from_secs(20));
    }
}
