//! Overload and flood control at the front door, before any state exists:
//! `limits.per_source_rps` cuts off a source that sends too many requests (like
//! Kamailio's pike) for a cool-down, silently; `limits.max_calls` and
//! `limits.max_cps` answer new INVITEs `503` with `Retry-After` when the switch
//! is full or calls arrive too fast. Calls already up — their refreshes, BYEs
//! and every other in-dialog request — are never shed by the call limits.
//!
//! The rate limits are governor's (GCRA, lock-free for the global bucket,
//! a sharded map for the per-source one), shared by every receive loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::metrics::{CallShed, Metrics};
use crate::ratelimit::RateLimit;
use crate::sip::Reply;

/// Sources cut off at once, at most: a spoofed flood from many addresses must
/// not grow the table without bound (past it, the oldest block is forgotten).
const MAX_BLOCKED: usize = 65_536;
/// Per-source rate state is pruned of idle sources this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The limits in force, shared by the receive loops.
pub struct Overload {
    max_calls: Option<u64>,
    cps: Option<DefaultDirectRateLimiter>,
    per_source: Option<DefaultKeyedRateLimiter<IpAddr>>,
    cooldown: Duration,
    state: Mutex<SourceState>,
    metrics: Arc<Metrics>,
}

/// Sources cut off until a time, and when the rate table was last pruned.
struct SourceState {
    blocked: HashMap<IpAddr, Instant>,
    pruned: Instant,
    block_log: RateLimit,
}

/// A new call shed: why (the metrics' label) and when its caller may try
/// again. It is answered with [`Shed::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub reason: CallShed,
    pub retry_after: u32,
}

impl Shed {
    /// `503 Service Unavailable` with `Retry-After` (RFC 3261 §21.5.4).
    pub fn reply(&self) -> Reply {
        Reply::new(503).retry_after(self.retry_after)
    }
}

impl Overload {
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Overload {
        let quota = |n: u32| NonZeroU32::new(n).map(Quota::per_second);
        Overload {
            max_calls: limits.max_calls.map(u64::from),
            cps: limits.max_cps.and_then(quota).map(RateLimiter::direct),
            per_source: limits
                .per_source_rps
                .and_then(quota)
                .map(RateLimiter::dashmap),
            cooldown: Duration::from_secs(u64::from(limits.per_source_cooldown)),
            state: Mutex::new(SourceState {
                blocked: HashMap::new(),
                pruned: Instant::now(),
                block_log: RateLimit::new(10, Duration::from_secs(60)),
            }),
            metrics,
        }
    }

    /// No limits: what runs without a `limits:` section.
    pub fn unlimited() -> Overload {
        Overload::new(&LimitsConfig::default(), Arc::new(Metrics::default()))
    }

    /// Whether a request from `source` may pass; `false` means drop it without
    /// an answer (the source is over `per_source_rps`, or cooling down).
    pub fn source_allowed(&self, now: Instant, source: IpAddr) -> bool {
        let Some(limiter) = &self.per_source else {
            return true;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&until) = state.blocked.get(&source) {
            if now < until {
                return false;
            }
            state.blocked.remove(&source);
        }
        if now.duration_since(state.pruned) >= PRUNE_EVERY {
            limiter.retain_recent();
            state.pruned = now;
        }
        if limiter.check_key(&source).is_ok() {
            return true;
        }
        if state.blocked.len() >= MAX_BLOCKED
            && let Some(oldest) = state
                .blocked
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(ip, _)| *ip)
        {
            state.blocked.remove(&oldest);
        }
        state.blocked.insert(source, now + self.cooldown);
        if let Some(suppressed) = state.block_log.allow(now) {
            tracing::warn!(%source, cooldown_s = self.cooldown.as_secs(), suppressed, "source over limits.per_source_rps: dropped for the cool-down");
        }
        false
    }

    /// Whether a new call may start now.
    pub fn admit_call(&self) -> Result<(), Shed> {
        if let Some(max) = self.max_calls
            && self.metrics.active_calls() >= max
        {
            return Err(Shed {
                reason: CallShed::MaxCalls,
                retry_after: 5,
            });
        }
        if let Some(cps) = &self.cps
            && cps.check().is_err()
        {
            return Err(Shed {
                reason: CallShed::MaxCps,
                retry_after: 1,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_calls: Option<u32>, max_cps: Option<u32>, rps: Option<u32>) -> LimitsConfig {
        LimitsConfig {
            max_calls,
            max_cps,
            per_source_rps: rps,
            per_source_cooldown: 10,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn without_limits_everything_passes() {
        let o = Overload::unlimited();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(o.source_allowed(now, "192.0.2.1".parse().expect("ip")));
            assert_eq!(o.admit_call(), Ok(()));
        }
    }

    #[test]
    fn a_source_over_its_rate_is_cut_off_for_the_cooldown_and_others_are_not() {
        let o = Overload::new(&limits(None, None, Some(100)), Arc::default());
        let now = Instant::now();
        let flood: IpAddr = "198.51.100.66".parse().expect("ip");
        let carrier: IpAddr = "203.0.113.5".parse().expect("ip");
        let passed = (0..1_000).filter(|_| o.source_allowed(now, flood)).count();
        assert!(
            (100..=110).contains(&passed),
            "a burst of the rate passes: {passed}"
        );
        assert!(
            o.source_allowed(now, carrier),
            "another source is not affected"
        );
        // Still cut off within the cool-down, whatever the rate would allow;
        // after it, back (the rate's own clock is real time: let a token in).
        std::thread::sleep(Duration::from_millis(30));
        assert!(!o.source_allowed(now + Duration::from_secs(9), flood));
        assert!(o.source_allowed(now + Duration::from_secs(11), flood));
    }

    #[test]
    fn max_calls_counts_the_calls_in_progress() {
        let metrics = Arc::new(Metrics::default());
        let o = Overload::new(&limits(Some(2), None, None), metrics.clone());
        assert_eq!(o.admit_call(), Ok(()));
        metrics.call_placed();
        metrics.call_placed();
        assert_eq!(
            o.admit_call(),
            Err(Shed {
                reason: CallShed::MaxCalls,
                retry_after: 5
            })
        );
    }

    #[test]
    fn max_cps_lets_a_second_of_calls_through_then_refuses() {
        let o = Overload::new(&limits(None, Some(50), None), Arc::default());
        let admitted = (0..500).filter(|_| o.admit_call().is_ok()).count();
        assert!((50..=55).contains(&admitted), "{admitted}");
        assert_eq!(o.admit_call().map_err(|r| r.reason), Err(CallShed::MaxCps));
    }
}
