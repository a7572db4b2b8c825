//! Counters and histograms the workers update on the hot path without locks
//! (relaxed atomics), and the daemon reads to log and to export ([`export`]:
//! Prometheus' text format, served on `metrics.listen`).
//!
//! Labelled families are arrays indexed by a small fixed enum (end reason, hook,
//! status code), never a map behind a lock: an increment is one atomic add.
//! The one family labelled by a configured value, the rtpengines' (by
//! address), is a list behind a lock that only a client's start and a scrape
//! take: each client counts through the `Arc` it was handed.

pub mod export;
mod labels;
mod rtpengine;

pub use labels::{
    CallShed, DatagramDrop, HookCounts, PolicyBackend, PolicyHook, RefreshFailureCause, RequestShed,
};
pub use rtpengine::{NgFailure, RtpEngineCounters};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cdr::{CdrRecord, EndReason};

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

    /// Each bucket's own count with its upper bound in seconds (the last one
    /// is `+Inf`), and the sum of all samples in seconds. The count is the
    /// buckets' total, so a scrape racing a `record` stays self-consistent.
    pub fn buckets(&self) -> (Vec<(f64, u64)>, f64) {
        let bounds = LATENESS_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets = bounds
            .zip(&self.buckets)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum)
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

/// Every end reason, in the order of [`end_reason_index`].
pub const END_REASONS: [EndReason; 12] = [
    EndReason::CallerBye,
    EndReason::CalleeBye,
    EndReason::Cancelled,
    EndReason::Rejected,
    EndReason::NoRoute,
    EndReason::Shutdown,
    EndReason::AckTimeout,
    EndReason::SessionTimeout,
    EndReason::MaxDuration,
    EndReason::PolicyRejected,
    EndReason::Admin,
    EndReason::MediaTimeout,
];

/// A reason's slot in [`END_REASONS`]; exhaustive, so a new reason cannot be
/// forgotten here.
fn end_reason_index(reason: EndReason) -> usize {
    match reason {
        EndReason::CallerBye => 0,
        EndReason::CalleeBye => 1,
        EndReason::Cancelled => 2,
        EndReason::Rejected => 3,
        EndReason::NoRoute => 4,
        EndReason::Shutdown => 5,
        EndReason::AckTimeout => 6,
        EndReason::SessionTimeout => 7,
        EndReason::MaxDuration => 8,
        EndReason::PolicyRejected => 9,
        EndReason::Admin => 10,
        EndReason::MediaTimeout => 11,
    }
}

/// A counter per SIP status code, 100..=699.
#[derive(Debug)]
pub struct StatusCounts([AtomicU64; 600]);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl StatusCounts {
    /// Counts `code`; one outside 100..=699 is not a SIP status and is ignored.
    pub fn count(&self, code: u16) {
        if let Some(c) = code
            .checked_sub(100)
            .and_then(|i| self.0.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The codes counted at least once, with their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (100u16..)
            .zip(&self.0)
            .map(|(code, n)| (code, n.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Why a session timer ended a call, from the CDR's `refresh_failure`: the
/// `cause` label of `vigil_session_timeouts_total`.
pub const SESSION_TIMEOUT_CAUSES: [&str; 4] = ["timeout", "status", "expired", "policy"];

/// The switch's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// How late Vigil's session refreshes left, behind the moment they were due.
    pub refresh_lateness: Histogram,
    /// How long received datagrams waited in the kernel's socket buffer
    /// before a receive loop read them (what overload shedding watches).
    pub receive_wait: Histogram,
    pub refreshes_sent: AtomicU64,
    pub refreshes_answered: AtomicU64,
    /// Refreshes that got no final answer or an error status, by
    /// [`RefreshFailureCause`] (a 491 or 422 that is retried is no failure).
    refreshes_failed: [AtomicU64; RefreshFailureCause::ALL.len()],
    /// Calls that ended on their session timer, by [`SESSION_TIMEOUT_CAUSES`].
    session_timeouts: [AtomicU64; 4],
    /// Call attempts: INVITEs admitted and routed (or refused for want of a
    /// route or by a policy), each of which ends in exactly one CDR.
    pub calls_started: AtomicU64,
    /// Calls the callee answered (2xx), counted at the answer.
    pub calls_answered: AtomicU64,
    /// Calls ended, by end reason ([`END_REASONS`]), counted at their CDR.
    calls_ended: [AtomicU64; END_REASONS.len()],
    /// Calls that ended unanswered, by the final status the caller got.
    pub calls_failed: StatusCounts,
    /// Legs of the calls the workers hold (two per call, until both are torn
    /// down): opened minus closed is the gauge.
    legs_opened: AtomicU64,
    legs_closed: AtomicU64,
    /// Hook calls into operators' code, by hook and backend.
    hooks: [[HookCounts; PolicyBackend::ALL.len()]; PolicyHook::ALL.len()],
    /// Datagrams handed to no worker, by [`DatagramDrop`].
    datagrams_dropped: [AtomicU64; DatagramDrop::ALL.len()],
    /// New calls refused with 503, by [`CallShed`].
    calls_shed: [AtomicU64; CallShed::ALL.len()],
    /// Other new requests refused with 503, by [`RequestShed`].
    requests_shed: [AtomicU64; RequestShed::ALL.len()],
    /// NAT keep-alive datagrams sent to registered contacts.
    pub keepalives_sent: AtomicU64,
    /// Vigil's own registrations with trunks' registrars that failed (a
    /// refusal or no answer; each retry that fails counts again).
    pub trunk_registration_failures: AtomicU64,
    /// How far each contact's actual keep-alive interval was from its period.
    pub keepalive_deviation: Histogram,
    /// Hook calls into scripts or plugins that failed (error, budget, memory,
    /// panic, invalid answer): the default decision applied instead.
    pub policy_errors: AtomicU64,
    /// Config reloads applied, and refused (the running config stayed).
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
    /// Failed attempts to write CDRs (to the file or the spill, or to
    /// reopen or replay them); each is retried, no record is dropped.
    pub cdr_write_errors: AtomicU64,
    /// A gauge the CDR writer sets: records not yet in the CDR file (held in
    /// memory or in the spill file).
    pub cdrs_pending: AtomicU64,
    /// CDR rows committed to the database (`cdr.postgres`), those sent again
    /// after a restart included.
    pub cdr_db_written: AtomicU64,
    /// How long each batch insert took, connecting included.
    pub cdr_db_batch: Histogram,
    /// Failed batch inserts (each is retried: no CDR is dropped).
    pub cdr_db_errors: AtomicU64,
    /// CDRs the database refused for their content, set aside.
    pub cdr_db_rejected: AtomicU64,
    /// Failed appends to, reads from or trims of the database's spool.
    pub cdr_spool_errors: AtomicU64,
    /// A gauge: CDRs in the database's spool, not yet committed.
    pub cdr_spool_depth: AtomicU64,
    /// Rows the state store took (call saves, ends and deletes), and failed
    /// batches (retried: calls go on, the store catches up).
    pub state_writes: AtomicU64,
    pub state_write_failures: AtomicU64,
    /// A gauge the state task sets: how long the oldest change not yet in
    /// the store has waited, in milliseconds.
    pub state_lag_ms: AtomicU64,
    /// Every rtpengine's counters, in the order first registered.
    rtpengines: Mutex<Vec<Arc<RtpEngineCounters>>>,
    /// Calls whose media began to be relayed through rtpengine, and those
    /// that stopped being relayed: started minus stopped is the gauge.
    pub relays_started: AtomicU64,
    pub relays_stopped: AtomicU64,
    /// Relayed calls ended because their media was dead.
    pub media_timeouts: AtomicU64,
    /// ng requests refused at once because no rtpengine was up.
    pub ng_no_engine: AtomicU64,
    /// ng replies that matched no request: an unknown cookie, a source other
    /// than the engine the request went to, or no cookie at all.
    pub ng_stray_replies: AtomicU64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A call was placed: it starts, with its two legs.
    pub fn call_placed(&self) {
        Metrics::count(&self.calls_started);
        self.legs_opened.fetch_add(2, Ordering::Relaxed);
    }

    /// A placed call let go of its two legs (its worker forgot it).
    pub fn call_released(&self) {
        self.legs_closed.fetch_add(2, Ordering::Relaxed);
    }

    /// Counts a finished call from its CDR: a CDR is written exactly once per
    /// call, so this is where calls end (and fail, and time out).
    pub fn call_ended(&self, record: &CdrRecord) {
        Metrics::count(&self.calls_ended[end_reason_index(record.end_reason)]);
        if record.answer.is_none()
            && let Some(code) = record.sip_code
        {
            self.calls_failed.count(code);
        }
        if record.end_reason == EndReason::SessionTimeout {
            let cause = match record.refresh_failure.as_deref() {
                Some("timeout") => 0,
                Some("expired") => 2,
                Some("policy") => 3,
                _ => 1,
            };
            Metrics::count(&self.session_timeouts[cause]);
        }
    }

    /// Calls ended with `reason` so far.
    pub fn calls_ended(&self, reason: EndReason) -> u64 {
        self.calls_ended[end_reason_index(reason)].load(Ordering::Relaxed)
    }

    /// Calls started and not yet ended (a call that ended may still be tearing
    /// its legs down: see [`Metrics::active_legs`]).
    pub fn active_calls(&self) -> u64 {
        // Ended first: a call counted as ended was counted as started before.
        let ended: u64 = self
            .calls_ended
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        self.calls_started
            .load(Ordering::Relaxed)
            .saturating_sub(ended)
    }

    /// Calls whose media is relayed through rtpengine now.
    pub fn relayed_calls(&self) -> u64 {
        let stopped = self.relays_stopped.load(Ordering::Relaxed);
        self.relays_started
            .load(Ordering::Relaxed)
            .saturating_sub(stopped)
    }

    /// Call legs the workers hold.
    pub fn active_legs(&self) -> u64 {
        let closed = self.legs_closed.load(Ordering::Relaxed);
        self.legs_opened
            .load(Ordering::Relaxed)
            .saturating_sub(closed)
    }

    pub fn refresh_failed(&self, cause: RefreshFailureCause) {
        Metrics::count(&self.refreshes_failed[cause as usize]);
    }

    pub fn refreshes_failed(&self, cause: RefreshFailureCause) -> u64 {
        self.refreshes_failed[cause as usize].load(Ordering::Relaxed)
    }

    /// Calls ended by their session timer with `cause` (one of
    /// [`SESSION_TIMEOUT_CAUSES`]).
    pub fn session_timeouts(&self, cause: usize) -> u64 {
        self.session_timeouts
            .get(cause)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One call of `hook` into a `backend` source that took `took`.
    pub fn hook_called(
        &self,
        hook: PolicyHook,
        backend: PolicyBackend,
        took: Duration,
        failed: bool,
    ) {
        let counts = self.hook(hook, backend);
        Metrics::count(&counts.calls);
        if failed {
            Metrics::count(&counts.errors);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        counts.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn hook(&self, hook: PolicyHook, backend: PolicyBackend) -> &HookCounts {
        &self.hooks[hook as usize][backend as usize]
    }

    pub fn datagram_dropped(&self, reason: DatagramDrop) {
        Metrics::count(&self.datagrams_dropped[reason as usize]);
    }

    pub fn datagrams_dropped(&self, reason: DatagramDrop) -> u64 {
        self.datagrams_dropped[reason as usize].load(Ordering::Relaxed)
    }

    pub fn call_shed(&self, reason: CallShed) {
        Metrics::count(&self.calls_shed[reason as usize]);
    }

    pub fn calls_shed(&self, reason: CallShed) -> u64 {
        self.calls_shed[reason as usize].load(Ordering::Relaxed)
    }

    pub fn request_shed(&self, reason: RequestShed) {
        Metrics::count(&self.requests_shed[reason as usize]);
    }

    pub fn requests_shed(&self, reason: RequestShed) -> u64 {
        self.requests_shed[reason as usize].load(Ordering::Relaxed)
    }

    /// The counters of the rtpengine at `addr`, registered on first use (a
    /// client's start, never the hot path).
    pub fn rtpengine(&self, addr: SocketAddr) -> Arc<RtpEngineCounters> {
        // A panic elsewhere while holding the lock leaves the list intact.
        let mut list = self.rtpengines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = list.iter().find(|c| c.addr == addr) {
            return c.clone();
        }
        let counters = Arc::new(RtpEngineCounters::new(addr));
        list.push(counters.clone());
        counters
    }

    /// Every rtpengine registered so far.
    pub fn rtpengines(&self) -> Vec<Arc<RtpEngineCounters>> {
        self.rtpengines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let failed = RefreshFailureCause::ALL.map(|c| self.refreshes_failed(c));
        let causes = RefreshFailureCause::ALL
            .iter()
            .zip(failed)
            .map(|(c, n)| format!("{}={n}", c.as_str()))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "refreshes_sent={} answered={} failed={} [{causes}] lateness_p50_ms<={} p99_ms<={} max_ms={}",
            self.refreshes_sent.load(Ordering::Relaxed),
            self.refreshes_answered.load(Ordering::Relaxed),
            failed.iter().sum::<u64>(),
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
        let (buckets, sum) = h.buckets();
        assert_eq!(buckets.len(), LATENESS_BOUNDS_US.len() + 1);
        assert_eq!(buckets[0], (0.0001, 98));
        assert_eq!(buckets[8], (0.05, 1));
        assert_eq!(buckets[LATENESS_BOUNDS_US.len()], (f64::INFINITY, 1));
        assert!((sum - 20.03784).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn every_end_reason_has_its_own_slot() {
        for (i, &reason) in END_REASONS.iter().enumerate() {
            assert_eq!(end_reason_index(reason), i, "{reason}");
        }
    }

    /// The CDR (serde) and the metrics' label (`as_str`) name a reason
    /// separately; they must say the same (`media-timeout`, …).
    #[test]
    fn every_end_reason_is_written_in_the_cdr_as_its_label() {
        for reason in END_REASONS {
            let json = serde_json::to_value(reason).ok();
            assert_eq!(json, Some(reason.as_str().into()), "{reason}");
        }
    }

    #[test]
    fn status_counts_keep_sip_codes_only() {
        let s = StatusCounts::default();
        for code in [486, 486, 100, 699, 99, 700, 0] {
            s.count(code);
        }
        let counted: Vec<(u16, u64)> = s.nonzero().collect();
        assert_eq!(counted, vec![(100, 1), (486, 2), (699, 1)]);
    }
}
