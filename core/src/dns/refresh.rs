//! Keeping a set of gateway names resolved: when each is looked up again
//! (its TTL, clamped), what a failure does (keep the last good targets, say
//! so at a bounded rate, retry with back-off), and which results are worth
//! publishing. Sans-IO like the rest below the daemon: it takes `now` and
//! lookup results, and hands out the names to look up and the next deadline;
//! the daemon's DNS task does the lookups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::answer::{Answer, LookupError, Target};
use super::name::GatewayName;
use super::settings::TtlBounds;
use crate::ratelimit::RateLimit;

/// The longest wait between two lookups of a name that keeps failing: a
/// carrier's DNS that comes back is noticed within five minutes.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Warnings about one name that keeps failing: one per this window (the
/// rest go to debug, counted in the next warning).
const WARN_WINDOW: Duration = Duration::from_secs(60);

/// The targets a name resolved to, and how long until it is looked up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// In the order to try them: by SRV priority; weights kept for the
    /// caller's weighted choice among equal priorities (RFC 2782).
    pub targets: Vec<Target>,
    /// The records' TTL, clamped to [`TtlBounds`].
    pub ttl: Duration,
}

/// What the resolver publishes to whoever routes calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsEvent {
    /// The name's targets: its first, changed, or first after failures.
    /// A lookup that finds what was already published says nothing.
    Resolved {
        name: GatewayName,
        resolution: Resolution,
    },
    /// A lookup failed. The name keeps its last good targets (`kept`;
    /// `None` if it never resolved) and is looked up again in `retry_in`.
    Failed {
        name: GatewayName,
        error: LookupError,
        kept: Option<Resolution>,
        retry_in: Duration,
    },
}

/// One name's state.
#[derive(Debug)]
struct Entry {
    /// When the next lookup is due; `None` while one is in flight.
    due: Option<Instant>,
    /// What was last published as resolved.
    last_good: Option<Resolution>,
    /// Lookups failed in a row: the back-off's exponent.
    failures: u32,
    /// Bounds the warnings for this name.
    warnings: RateLimit,
}

/// The schedule of lookups for a set of gateway names.
///
/// Contract: after each input (`set_names`, `handle_answer`), take every
/// name `poll_lookup` hands out and look it up, then sleep until
/// `poll_timeout`; each lookup's result goes back through `handle_answer`.
/// Time never goes back.
#[derive(Debug)]
pub struct Refresher {
    bounds: TtlBounds,
    names: BTreeMap<GatewayName, Entry>,
}

impl Refresher {
    pub fn new(bounds: TtlBounds) -> Refresher {
        Refresher {
            bounds,
            names: BTreeMap::new(),
        }
    }

    /// The names to keep resolved (at start, and on every reload): new ones
    /// are due now, ones that remain keep their targets and schedule, gone
    /// ones are forgotten (an answer still in flight for one is ignored).
    pub fn set_names(&mut self, now: Instant, names: impl IntoIterator<Item = GatewayName>) {
        let mut old = std::mem::take(&mut self.names);
        for name in names {
            let entry = old.remove(&name).unwrap_or_else(|| Entry {
                due: Some(now),
                last_good: None,
                failures: 0,
                warnings: RateLimit::new(1, WARN_WINDOW),
            });
            self.names.insert(name, entry);
        }
    }

    /// A name whose lookup is due at `now`; it counts as in flight (and is
    /// not handed out again) until its answer comes back.
    pub fn poll_lookup(&mut self, now: Instant) -> Option<GatewayName> {
        let (name, entry) = self
            .names
            .iter_mut()
            .find(|(_, e)| e.due.is_some_and(|due| due <= now))?;
        entry.due = None;
        Some(name.clone())
    }

    /// When the next lookup falls due, if any is not already in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.names.values().filter_map(|e| e.due).min()
    }

    /// The targets last published for `name`.
    pub fn resolution(&self, name: &GatewayName) -> Option<&Resolution> {
        self.names.get(name)?.last_good.as_ref()
    }

    /// A lookup's result: schedules the next one and says what to publish.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        name: &GatewayName,
        result: Result<Answer, LookupError>,
    ) -> Option<DnsEvent> {
        let bounds = self.bounds;
        let entry = self.names.get_mut(name).filter(|e| e.due.is_none())?;
        match result {
            Ok(answer) => {
                let resolution = Resolution {
                    targets: answer.targets,
                    ttl: bounds.clamp(answer.ttl),
                };
                entry.due = Some(now + resolution.ttl);
                let recovered = std::mem::take(&mut entry.failures) > 0;
                if recovered {
                    tracing::info!(name = %name, targets = resolution.targets.len(), "gateway name resolves again");
                }
                let changed = entry
                    .last_good
                    .as_ref()
                    .is_none_or(|last| last.targets != resolution.targets);
                entry.last_good = Some(resolution.clone());
                (changed || recovered).then(|| DnsEvent::Resolved {
                    name: name.clone(),
                    resolution,
                })
            }
            Err(error) => {
                entry.failures = entry.failures.saturating_add(1);
                let retry_in = backoff(bounds, entry.failures);
                entry.due = Some(now + retry_in);
                let kept = entry.last_good.as_ref().map_or(0, |r| r.targets.len());
                match entry.warnings.allow(now) {
                    Some(suppressed) => tracing::warn!(
                        name = %name, %error, kept, retry_in = ?retry_in, suppressed,
                        "gateway name does not resolve; keeping its last good targets"
                    ),
                    None => {
                        tracing::debug!(name = %name, %error, kept, "gateway name still does not resolve")
                    }
                }
                Some(DnsEvent::Failed {
                    name: name.clone(),
                    error,
                    kept: entry.last_good.clone(),
                    retry_in,
                })
            }
        }
    }
}

/// The wait after the `failures`-th failure in a row: the TTL floor,
/// doubled each time, up to [`MAX_BACKOFF`] (or the TTL ceiling if lower).
fn backoff(bounds: TtlBounds, failures: u32) -> Duration {
    let cap = MAX_BACKOFF.min(bounds.max).max(bounds.min);
    let doublings = failures.saturating_sub(1).min(16);
    bounds.min.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn bounds() -> TtlBounds {
        TtlBounds {
            min: 30 * S,
            max: 3600 * S,
        }
    }

    fn carrier() -> GatewayName {
        GatewayName::Host {
            host: "carrier.test".into(),
            transport: crate::sip::Protocol::Udp,
        }
    }

    fn answer(addr: &str, ttl: u64) -> Result<Answer, LookupError> {
        Ok(Answer {
            targets: vec![Target {
                addr: addr.parse().unwrap(),
                priority: 10,
                weight: 60,
            }],
            ttl: Duration::from_secs(ttl),
        })
    }

    fn timeout() -> Result<Answer, LookupError> {
        Err(LookupError::Timeout)
    }

    /// Looks `name` up at `now` (it must be due) and hands back `result`.
    fn lookup(
        r: &mut Refresher,
        now: Instant,
        result: Result<Answer, LookupError>,
    ) -> Option<DnsEvent> {
        assert_eq!(r.poll_lookup(now), Some(carrier()), "due at {now:?}");
        assert_eq!(r.poll_lookup(now), None, "in flight once");
        r.handle_answer(now, &carrier(), result)
    }

    #[test]
    fn a_name_is_looked_up_again_when_its_clamped_ttl_runs_out() {
        let t0 = Instant::now();
        let mut r = Refresher::new(bounds());
        r.set_names(t0, [carrier()]);
        assert_eq!(r.poll_timeout(), Some(t0));
        let first = lookup(&mut r, t0, answer("127.0.0.1:5060", 1));
        let Some(DnsEvent::Resolved { resolution, .. }) = first else {
            panic!("{first:?}")
        };
        assert_eq!(resolution.ttl, 30 * S, "a 1 s TTL waits for the floor");
        assert_eq!(r.poll_timeout(), Some(t0 + 30 * S));
        assert_eq!(r.poll_lookup(t0 + 29 * S), None);

        let t1 = t0 + 30 * S;
        assert_eq!(
            lookup(&mut r, t1, answer("127.0.0.1:5060", 7200)),
            None,
            "unchanged"
        );
        assert_eq!(
            r.poll_timeout(),
            Some(t1 + 3600 * S),
            "a day's TTL waits an hour"
        );

        let t2 = t1 + 3600 * S;
        let moved = lookup(&mut r, t2, answer("127.0.0.2:5060", 60));
        assert!(
            matches!(moved, Some(DnsEvent::Resolved { .. })),
            "{moved:?}"
        );
        let now_at = r.resolution(&carrier()).map(|r| r.targets[0].addr);
        assert_eq!(now_at, Some("127.0.0.2:5060".parse().unwrap()));
    }

    #[test]
    fn a_failure_keeps_the_last_good_targets_and_backs_off() {
        let t0 = Instant::now();
        let mut r = Refresher::new(bounds());
        r.set_names(t0, [carrier()]);
        lookup(&mut r, t0, answer("127.0.0.1:5060", 60));
        let good = r.resolution(&carrier()).cloned();

        let mut now = t0 + 60 * S;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Some(DnsEvent::Failed { kept, retry_in, .. }) = lookup(&mut r, now, timeout())
            else {
                panic!("a failure is reported")
            };
            assert_eq!(kept, good);
            waits.push(retry_in.as_secs());
            now += retry_in;
        }
        assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
        assert_eq!(r.resolution(&carrier()).cloned(), good);

        let back = lookup(&mut r, now, answer("127.0.0.1:5060", 60));
        assert!(
            matches!(back, Some(DnsEvent::Resolved { .. })),
            "recovery is published even when nothing changed: {back:?}"
        );
        assert_eq!(r.poll_timeout(), Some(now + 60 * S), "back-off reset");
    }

    #[test]
    fn a_name_that_never_resolved_keeps_nothing() {
        let t0 = Instant::now();
        let mut r = Refresher::new(bounds());
        r.set_names(t0, [carrier()]);
        let event = lookup(&mut r, t0, timeout());
        assert_eq!(
            event,
            Some(DnsEvent::Failed {
                name: carrier(),
                error: LookupError::Timeout,
                kept: None,
                retry_in: 30 * S
            })
        );
    }

    #[test]
    fn a_reload_keeps_remaining_names_and_forgets_gone_ones() {
        let t0 = Instant::now();
        let mut r = Refresher::new(bounds());
        r.set_names(t0, [carrier()]);
        lookup(&mut r, t0, answer("127.0.0.1:5060", 60));
        let other = GatewayName::Host {
            host: "other.test".into(),
            transport: crate::sip::Protocol::Udp,
        };
        r.set_names(t0 + S, [carrier(), other.clone()]);
        assert_eq!(
            r.poll_lookup(t0 + S),
            Some(other.clone()),
            "only the new name"
        );
        assert_eq!(r.poll_lookup(t0 + S), None);
        r.set_names(t0 + 2 * S, [carrier()]);
        assert_eq!(
            r.handle_answer(t0 + 2 * S, &other, answer("127.0.0.9:5060", 60)),
            None,
            "an answer for a gone name is dropped"
        );
        assert!(r.resolution(&carrier()).is_some());
    }
}
