//! The gateways calls are sent to, and what every worker knows of their
//! health: whether probes find them up, whether one asked (503 with
//! `Retry-After`) to be left alone for a while, how many calls each has in
//! flight. One [`Gateways`] table is shared by every worker and rebuilt on
//! reload, keeping the health of the gateways that remain; its state is
//! atomics, so a worker reading it on every new call never waits.
//!
//! What a call does with it is [`plan`](Gateways::plan): the order in which
//! it tries the gateways of its route's trunks (priority, then a weighted
//! draw, RFC 2782's way), skipping those that are down or resting unless
//! that leaves nothing (trying a gateway believed down beats refusing the
//! call). Probing lives in [`probe`].

pub mod probe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, GatewayConfig, ProbeConfig, SessionTimerConfig, TrunkAuth};
use crate::dns::{Gateway as DnsGateway, GatewayName, Target};
use crate::ids::IdGen;

/// What DNS last gave each gateway name (the daemon's resolver keeps it).
pub type Resolved = std::collections::HashMap<GatewayName, Vec<Target>>;

/// Every trunk's gateways, by trunk index of the config they were built from.
#[derive(Debug)]
pub struct Gateways {
    trunks: Vec<Vec<Arc<Gateway>>>,
    /// One more than the table it was rebuilt from: a worker never swaps a
    /// newer table for an older one that reached it late.
    pub generation: u64,
    /// The instant health times count from (shared by rebuilt tables).
    epoch: Instant,
}

/// One gateway of one trunk.
#[derive(Debug)]
pub struct Gateway {
    pub trunk: Arc<str>,
    /// As the config writes it.
    pub to: String,
    pub addr: SocketAddr,
    pub priority: u16,
    /// Its SRV record's priority (0 for an address the config gives):
    /// orders gateways of the same configured priority.
    pub srv_priority: u16,
    pub weight: u16,
    /// The trunk's final statuses that send a call on to the next gateway.
    pub failover_codes: Vec<u16>,
    pub invite_timeout: Duration,
    pub probe: Option<ProbeConfig>,
    /// The session-timer settings of its trunk's legs.
    pub session_timer: SessionTimerConfig,
    /// Its trunk's credentials for the carrier's challenges.
    pub auth: Option<Arc<TrunkAuth>>,
    /// Its trunk's `transport`.
    pub proto: crate::sip::Protocol,
    /// Its trunk's `prack`: what B-leg INVITEs to it say of `100rel`.
    pub prack: crate::config::PrackMode,
    /// Over TLS: the name its certificate must carry (the host the config
    /// names it by, else its IP), and whether it is checked at all.
    pub tls_name: String,
    pub tls_verify: bool,
    /// The instant its health times count from.
    epoch: Instant,
    health: Health,
}

/// A gateway's health, written by probes and calls on any worker.
#[derive(Debug, Default)]
struct Health {
    /// Probes took it down.
    down: AtomicBool,
    /// Milliseconds after the epoch until which it rests (503 Retry-After).
    resting_until: AtomicU64,
    failures_in_row: AtomicU32,
    successes_in_row: AtomicU32,
    /// Milliseconds after the epoch of the last probe's outcome (0: none).
    last_probe: AtomicU64,
    /// The last probe's status; 0 for no answer.
    last_probe_status: AtomicU32,
    in_flight: AtomicU32,
    attempts: AtomicU64,
    failures: AtomicU64,
}

/// A probe's outcome changed a gateway's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    WentDown,
    CameUp,
}

/// A gateway as `vigil ctl gateways` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewaySnapshot {
    pub trunk: String,
    pub gateway: String,
    pub address: String,
    pub priority: u16,
    pub weight: u16,
    /// `up`, `down` (probes) or `resting` (a 503 with Retry-After).
    pub state: &'static str,
    /// Seconds it still rests.
    pub resting_for: Option<u64>,
    pub probed: bool,
    /// Seconds since the last probe's outcome.
    pub last_probe_ago: Option<u64>,
    /// The last probe's status; `None` when it went unanswered.
    pub last_probe_status: Option<u16>,
    pub probe_failures_in_row: u32,
    pub calls_in_flight: u32,
    pub attempts: u64,
    pub failures: u64,
}

impl Gateways {
    /// The table for `config`, keeping the health of every gateway that
    /// `previous` had under the same trunk name and address. A gateway the
    /// config names by host becomes one entry per address `resolved` gives
    /// it (none until DNS has answered), ordered by the config's priority,
    /// then the SRV record's, and weighted by the SRV weight when it has one.
    pub fn build(
        config: &Config,
        previous: Option<&Gateways>,
        now: Instant,
        resolved: &Resolved,
    ) -> Gateways {
        let epoch = previous.map_or(now, |p| p.epoch);
        let trunks = config
            .trunks
            .iter()
            .map(|trunk| {
                let Some(outbound) = &trunk.outbound else {
                    return Vec::new();
                };
                let entry = |g: &GatewayConfig, target: Target| {
                    let kept = previous.and_then(|p| p.find(&trunk.name, target.addr));
                    let health = kept.map(|k| k.health.carried()).unwrap_or_default();
                    Arc::new(Gateway {
                        trunk: trunk.name.clone(),
                        to: g.to.clone(),
                        addr: target.addr,
                        priority: g.priority,
                        srv_priority: target.priority,
                        weight: if target.weight > 0 {
                            target.weight
                        } else {
                            g.weight
                        },
                        failover_codes: outbound.failover_codes.clone(),
                        invite_timeout: outbound.invite_timeout,
                        probe: outbound.probe.clone(),
                        session_timer: trunk.session_timer,
                        auth: trunk.auth.clone(),
                        proto: g.transport,
                        tls_name: match &g.target {
                            DnsGateway::Name(name) => name.host().to_string(),
                            DnsGateway::Addr(_) => target.addr.ip().to_string(),
                        },
                        tls_verify: trunk.tls_verify,
                        prack: trunk.prack,
                        epoch,
                        health,
                    })
                };
                outbound
                    .gateways
                    .iter()
                    .flat_map(|g| {
                        let targets: Vec<Target> = match &g.target {
                            DnsGateway::Addr(addr) => vec![Target {
                                addr: *addr,
                                priority: 0,
                                weight: 0,
                            }],
                            DnsGateway::Name(name) => {
                                resolved.get(name).cloned().unwrap_or_default()
                            }
                        };
                        targets.into_iter().map(move |t| entry(g, t))
                    })
                    .collect()
            })
            .collect();
        Gateways {
            trunks,
            generation: previous.map_or(0, |p| p.generation + 1),
            epoch,
        }
    }

    /// A table without gateways (a daemon part that needs one to start).
    pub fn empty(now: Instant) -> Gateways {
        Gateways {
            trunks: Vec::new(),
            generation: 0,
            epoch: now,
        }
    }

    fn find(&self, trunk: &str, addr: SocketAddr) -> Option<&Arc<Gateway>> {
        self.all().find(|g| &*g.trunk == trunk && g.addr == addr)
    }

    /// Every gateway of every trunk.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Gateway>> {
        self.trunks.iter().flatten()
    }

    /// The gateways of trunk `index`.
    pub fn of_trunk(&self, index: usize) -> &[Arc<Gateway>] {
        self.trunks.get(index).map_or(&[], Vec::as_slice)
    }

    /// The order a call tries gateways in: each trunk of `trunks` in turn,
    /// its gateways by priority and, among equal priorities, by a weighted
    /// draw. The call skips those down or resting when their turn comes
    /// (see [`Gateway::is_available`]) — unless none was available when the
    /// call started, in which case it tries them all (better than refusing
    /// the call). `skip` leaves out gateways a call must never be sent to
    /// (Vigil's own addresses).
    pub fn plan(
        &self,
        trunks: &[usize],
        ids: &mut IdGen,
        skip: impl Fn(SocketAddr) -> bool,
    ) -> Vec<Arc<Gateway>> {
        let mut order: Vec<Arc<Gateway>> = Vec::new();
        for &t in trunks {
            let mut gateways: Vec<&Arc<Gateway>> =
                self.of_trunk(t).iter().filter(|g| !skip(g.addr)).collect();
            gateways.sort_by_key(|g| (g.priority, g.srv_priority));
            for same in gateways
                .chunk_by(|a, b| (a.priority, a.srv_priority) == (b.priority, b.srv_priority))
            {
                order.extend(weighted_order(same, ids).into_iter().cloned());
            }
        }
        order
    }

    /// A probe's outcome: answered with an acceptable status, or not (no
    /// answer, or a status outside `probe.ok_codes`; `status` 0: none).
    pub fn probed(
        &self,
        gateway: &Gateway,
        now: Instant,
        ok: bool,
        status: u16,
    ) -> Option<HealthChange> {
        let h = &gateway.health;
        let probe = gateway.probe.as_ref()?;
        // 0 means never: a probe at the epoch counts as a millisecond later.
        h.last_probe
            .store(gateway.millis(now).max(1), Ordering::Relaxed);
        h.last_probe_status
            .store(u32::from(status), Ordering::Relaxed);
        if ok {
            h.failures_in_row.store(0, Ordering::Relaxed);
            let successes = h.successes_in_row.fetch_add(1, Ordering::Relaxed) + 1;
            if successes >= probe.successes && h.down.swap(false, Ordering::Relaxed) {
                return Some(HealthChange::CameUp);
            }
        } else {
            h.successes_in_row.store(0, Ordering::Relaxed);
            let failures = h.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= probe.failures && !h.down.swap(true, Ordering::Relaxed) {
                return Some(HealthChange::WentDown);
            }
        }
        None
    }

    /// What `vigil ctl gateways` shows.
    pub fn snapshot(&self, now: Instant) -> Vec<GatewaySnapshot> {
        self.all()
            .map(|g| {
                let at = g.millis(now);
                let h = &g.health;
                let resting = h.resting_until.load(Ordering::Relaxed);
                let last = h.last_probe.load(Ordering::Relaxed);
                let state = if h.down.load(Ordering::Relaxed) {
                    "down"
                } else if resting > at {
                    "resting"
                } else {
                    "up"
                };
                GatewaySnapshot {
                    trunk: g.trunk.to_string(),
                    gateway: g.to.clone(),
                    address: g.addr.to_string(),
                    priority: g.priority,
                    weight: g.weight,
                    state,
                    resting_for: (resting > at).then(|| (resting - at).div_ceil(1000)),
                    probed: g.probe.is_some(),
                    last_probe_ago: (last > 0).then(|| at.saturating_sub(last) / 1000),
                    last_probe_status: match h.last_probe_status.load(Ordering::Relaxed) {
                        0 => None,
                        s => u16::try_from(s).ok(),
                    },
                    probe_failures_in_row: h.failures_in_row.load(Ordering::Relaxed),
                    calls_in_flight: h.in_flight.load(Ordering::Relaxed),
                    attempts: h.attempts.load(Ordering::Relaxed),
                    failures: h.failures.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// A call's way through its plan: which gateway is next, skipping those
/// down or resting at the moment it moves on (unless none was available
/// when the call started), and no more than `max_attempts` in all.
#[derive(Debug, Default)]
pub struct Attempts {
    /// The gateways not tried yet, in order.
    rest: std::collections::VecDeque<Arc<Gateway>>,
    /// Some gateway was available at the start: skip those that are not.
    strict: bool,
    /// Attempts left after the current one.
    left: u32,
}

impl Attempts {
    /// The first gateway of `plan` to try now, and the way on from it.
    pub fn start(
        plan: Vec<Arc<Gateway>>,
        now: Instant,
        max_attempts: u32,
    ) -> Option<(Arc<Gateway>, Attempts)> {
        let mut attempts = Attempts {
            strict: plan.iter().any(|g| g.is_available(now)),
            rest: plan.into(),
            left: max_attempts,
        };
        let first = attempts.next(now)?;
        Some((first, attempts))
    }

    /// The next gateway to try at `now`, if any and if attempts remain.
    pub fn next(&mut self, now: Instant) -> Option<Arc<Gateway>> {
        if self.left == 0 {
            return None;
        }
        while let Some(g) = self.rest.pop_front() {
            if !self.strict || g.is_available(now) {
                self.left -= 1;
                return Some(g);
            }
        }
        None
    }

    /// Nothing is left to try (the plan's rest can go).
    pub fn is_exhausted(&self) -> bool {
        self.left == 0 || self.rest.is_empty()
    }
}

impl Gateway {
    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether it takes calls now (not down, not resting).
    pub fn is_available(&self, now: Instant) -> bool {
        !self.health.down.load(Ordering::Relaxed)
            && self.health.resting_until.load(Ordering::Relaxed) <= self.millis(now)
    }

    /// It answered `503` with `Retry-After: seconds` (RFC 3261 §21.5.4): no
    /// call is sent to it until then.
    pub fn rest(&self, now: Instant, seconds: u32) {
        let until = self.millis(now) + u64::from(seconds) * 1000;
        self.health
            .resting_until
            .fetch_max(until, Ordering::Relaxed);
    }

    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Relaxed)
    }

    pub fn fails_over_on(&self, status: u16) -> bool {
        self.failover_codes.contains(&status)
    }

    /// A call sent its INVITE here.
    pub fn attempt_started(&self) {
        self.health.attempts.fetch_add(1, Ordering::Relaxed);
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// That INVITE failed here (a failover status or no answer in time).
    pub fn attempt_failed(&self) {
        self.health.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A call that was sent here is over (answered and hung up, or failed).
    pub fn call_left(&self) {
        let _ = self
            .health
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl Health {
    /// What a rebuilt table keeps: everything but the calls in flight, which
    /// the calls themselves give back to the gateway object they hold.
    fn carried(&self) -> Health {
        let copy32 = |a: &AtomicU32| AtomicU32::new(a.load(Ordering::Relaxed));
        let copy64 = |a: &AtomicU64| AtomicU64::new(a.load(Ordering::Relaxed));
        Health {
            down: AtomicBool::new(self.down.load(Ordering::Relaxed)),
            resting_until: copy64(&self.resting_until),
            failures_in_row: copy32(&self.failures_in_row),
            successes_in_row: copy32(&self.successes_in_row),
            last_probe: copy64(&self.last_probe),
            last_probe_status: copy32(&self.last_probe_status),
            in_flight: AtomicU32::new(0),
            attempts: copy64(&self.attempts),
            failures: copy64(&self.failures),
        }
    }
}

/// RFC 2782's selection among records of one priority: draw each next one
/// with a probability proportional to its weight (a weight of 0 only gets
/// picked when nothing else is left).
fn weighted_order<'a>(gateways: &[&'a Arc<Gateway>], ids: &mut IdGen) -> Vec<&'a Arc<Gateway>> {
    let mut left: Vec<&Arc<Gateway>> = gateways.to_vec();
    let mut order = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|g| u64::from(g.weight)).sum();
        let draw = ids.below(total);
        let mut running = 0;
        let pick = left
            .iter()
            .position(|g| {
                running += u64::from(g.weight);
                running > draw
            })
            .unwrap_or(0);
        order.push(left.remove(pick));
    }
    order
}

#[cfg(test)]
mod tests;
