//! A sans-IO ng client for one worker, to every configured rtpengine.
//!
//! A request goes to an engine of the caller's choice (a call's requests
//! after its first `offer` must reach the engine that holds its state) or,
//! for a new call, to the next engine that is up, in turn. It is sent again
//! after `t1`, `2*t1`, `4*t1`, … until `tries` sends, and times out after as
//! long again as the last interval; rtpengine answers a retransmission from
//! its cache of replies by cookie, so a resend never runs a command twice.
//! Every engine is pinged every `ping_interval`: it is down after
//! `down_after` failures in a row (pings or requests that timed out) and up
//! again at its first answer. An engine counts as down until it first
//! answers.
//!
//! It logs nothing: failures are events, for its user to log at a bounded
//! rate (`crate::ratelimit`).
//!
//! Contract: after [`NgClient::new`], [`NgClient::request`] and every
//! `handle_*`, drain [`NgClient::poll_transmit`] and [`NgClient::poll_event`];
//! call [`NgClient::handle_timeout`] at [`NgClient::poll_timeout`]. `now`
//! never goes backwards.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::Command;
use super::reply::{NgError, Reply};
use super::{MAX_DATAGRAM, split_cookie};
use crate::ids::IdGen;
use crate::metrics::{Metrics, NgFailure, RtpEngineCounters};
use crate::shrink;

mod engines;
use crate::timer::{Scheduled, TimerQueue};
use crate::timer_table;

timer_table!(
    /// Retransmit while tries remain, expire when the last one went
    /// unanswered, then linger to recognise a late or duplicate reply.
    RequestTimers: RequestTimer { Retransmit, Expire, Linger }
);

timer_table!(
    /// The next health check.
    EngineTimers: EngineTimer { Ping }
);

/// How the client retransmits and checks health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgSettings {
    /// The first retransmission interval; each next one doubles.
    pub t1: Duration,
    /// Sends of a request, the first included. With `t1` = 500 ms and 3
    /// tries: sent at 0, 0.5 and 1.5 s, timed out at 3.5 s.
    pub tries: u32,
    /// How often each engine is pinged.
    pub ping_interval: Duration,
    /// Failures in a row (timed-out pings or requests) that make an engine down.
    pub down_after: u32,
    /// How long a timed-out request's cookie is remembered, so that its late
    /// reply is counted as late rather than as a stray.
    pub late_window: Duration,
}

impl Default for NgSettings {
    fn default() -> Self {
        NgSettings {
            t1: Duration::from_millis(500),
            tries: 3,
            ping_interval: Duration::from_secs(5),
            down_after: 2,
            late_window: Duration::from_secs(30),
        }
    }
}

impl NgSettings {
    /// From the first send until a request times out: every interval.
    pub fn request_timeout(&self) -> Duration {
        let (mut total, mut interval) = (Duration::ZERO, self.t1);
        for _ in 0..self.tries.max(1) {
            total = total.saturating_add(interval);
            interval = interval.saturating_mul(2);
            if total == Duration::MAX {
                break;
            }
        }
        total
    }
}

/// One of the client's engines, in the order given to [`NgClient::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineId(u32);

/// One request of this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// A request could not go out: no engine is up (or the engine asked for is
/// not one of the client's). A new call then gets `media.on_failure` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no rtpengine is up")]
pub struct NoEngineUp;

/// What the client tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NgEvent {
    /// The outcome of a request of the user's (never of the health pings).
    Reply {
        id: RequestId,
        result: Result<Reply, NgError>,
    },
    /// An engine answered after being down (or for the first time).
    EngineUp(EngineId),
    /// An engine failed `down_after` times in a row.
    EngineDown(EngineId),
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Answered,
    TimedOut,
}

/// One request on the wire.
#[derive(Debug)]
struct Pending {
    cookie: String,
    engine: EngineId,
    /// The datagram, for retransmission; dropped once answered or timed out.
    bytes: Vec<u8>,
    /// A health ping of the client's own: no event for its user.
    health: bool,
    state: State,
    first_sent: Instant,
    sends: u32,
    interval: Duration,
    timers: RequestTimers,
    scheduled: Scheduled,
}

/// One rtpengine as this client sees it.
#[derive(Debug)]
struct Engine {
    addr: SocketAddr,
    up: bool,
    /// No longer configured (a reload removed it): it takes no new call and
    /// is not pinged, but the calls it holds still reach it.
    retired: bool,
    /// Failures in a row since its last answer.
    failures: u32,
    /// The health ping awaiting its answer, if any.
    ping: Option<RequestId>,
    timers: EngineTimers,
    scheduled: Scheduled,
    counters: Arc<RtpEngineCounters>,
}

/// A timer-queue entry's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Request(RequestId),
    Engine(EngineId),
}

/// One worker's ng client (see the module's doc for its contract).
pub struct NgClient {
    settings: NgSettings,
    engines: Vec<Engine>,
    /// Where the next search for an engine that is up starts (round robin).
    next_engine: usize,
    requests: HashMap<RequestId, Pending>,
    /// Requests by cookie, to match replies.
    cookies: HashMap<String, RequestId>,
    next_id: u64,
    queue: TimerQueue<Target>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<NgEvent>,
    /// Cookies carry the worker's number, so a shared socket could route
    /// replies back to it.
    ids: IdGen,
    metrics: Arc<Metrics>,
}

impl NgClient {
    /// A client of `engines` that pings each of them at once (drain
    /// [`NgClient::poll_transmit`]); they count as down until they answer.
    pub fn new(
        now: Instant,
        engines: Vec<SocketAddr>,
        settings: NgSettings,
        ids: IdGen,
        metrics: Arc<Metrics>,
    ) -> NgClient {
        let engines = engines
            .into_iter()
            .map(|addr| {
                let counters = metrics.rtpengine(addr);
                counters.watch();
                let mut timers = EngineTimers::default();
                timers.set(EngineTimer::Ping, now);
                Engine {
                    addr,
                    up: false,
                    retired: false,
                    failures: 0,
                    ping: None,
                    timers,
                    scheduled: Scheduled::default(),
                    counters,
                }
            })
            .collect();
        let mut client = NgClient {
            settings,
            engines,
            next_engine: 0,
            requests: HashMap::new(),
            cookies: HashMap::new(),
            next_id: 0,
            queue: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ids,
            metrics,
        };
        for i in 0..client.engines.len() {
            if let Ok(i) = u32::try_from(i) {
                client.reschedule(Target::Engine(EngineId(i)));
            }
        }
        client.handle_timeout(now);
        client
    }

    // ----- requests -----------------------------------------------------------

    /// Sends `command` to `engine` (a call's engine: even when down, since
    /// the call's state lives there) or, with `None`, to the next engine that
    /// is up. Its outcome comes as an [`NgEvent::Reply`] with the returned id.
    pub fn request(
        &mut self,
        now: Instant,
        engine: Option<EngineId>,
        command: &Command,
    ) -> Result<(RequestId, EngineId), NoEngineUp> {
        let engine = match engine {
            Some(id) if self.engine(id).is_some() => id,
            Some(_) => return Err(NoEngineUp),
            None => self.pick().ok_or_else(|| {
                Metrics::count(&self.metrics.ng_no_engine);
                NoEngineUp
            })?,
        };
        Ok((self.send(now, engine, command, false), engine))
    }

    /// Requests waiting for their reply, and answered or timed-out ones
    /// still remembered (for leak checks).
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    fn send(
        &mut self,
        now: Instant,
        engine: EngineId,
        command: &Command,
        health: bool,
    ) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let cookie = self.ids.ng_cookie();
        let Some(e) = self.engines.get(engine.0 as usize) else {
            // Callers pass only ids of this client's.
            return id;
        };
        let addr = e.addr;
        let counters = e.counters.clone();
        Metrics::count(&counters.requests);
        let bytes = match command.encode(&cookie) {
            Ok(bytes) => bytes,
            Err(_) => {
                // Only if the bencode crate could not encode its own
                // dictionary type: nothing goes out, the user hears at once.
                counters.failed(NgFailure::Malformed);
                if !health {
                    self.events.push_back(NgEvent::Reply {
                        id,
                        result: Err(NgError::Malformed),
                    });
                }
                return id;
            }
        };
        self.transmits.push_back((addr, bytes.clone()));
        let mut timers = RequestTimers::default();
        let tries = self.settings.tries.max(1);
        if tries > 1 {
            timers.set(RequestTimer::Retransmit, now + self.settings.t1);
        }
        timers.set(RequestTimer::Expire, now + self.settings.request_timeout());
        self.cookies.insert(cookie.clone(), id);
        self.requests.insert(
            id,
            Pending {
                cookie,
                engine,
                bytes,
                health,
                state: State::Waiting,
                first_sent: now,
                sends: 1,
                interval: self.settings.t1,
                timers,
                scheduled: Scheduled::default(),
            },
        );
        self.reschedule(Target::Request(id));
        id
    }

    // ----- replies ------------------------------------------------------------

    /// A datagram that arrived on the ng socket from `from`. A reply matches
    /// its request by cookie and must come from the engine the request went
    /// to; anything else is counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some((cookie, body)) = split_cookie(datagram) else {
            Metrics::count(&self.metrics.ng_stray_replies);
            return;
        };
        let id = std::str::from_utf8(cookie)
            .ok()
            .and_then(|c| self.cookies.get(c))
            .copied();
        let Some(pending) = id.and_then(|id| self.requests.get(&id)) else {
            Metrics::count(&self.metrics.ng_stray_replies);
            return;
        };
        let engine = pending.engine;
        let Some(e) = self.engines.get(engine.0 as usize) else {
            return;
        };
        if !same_address(from, e.addr) {
            Metrics::count(&self.metrics.ng_stray_replies);
            return;
        }
        let Some(id) = id else { return };
        match pending.state {
            // A copy of the reply to a retransmission.
            State::Answered => {}
            State::TimedOut => Metrics::count(&e.counters.late_replies),
            State::Waiting => {
                let result = if datagram.len() > MAX_DATAGRAM {
                    Err(NgError::Malformed)
                } else {
                    Reply::decode(body)
                };
                self.answered(now, id, result);
            }
        }
    }

    /// A waiting request got its reply: the engine is alive.
    fn answered(&mut self, now: Instant, id: RequestId, result: Result<Reply, NgError>) {
        let Some(p) = self.requests.get_mut(&id) else {
            return;
        };
        p.state = State::Answered;
        p.bytes = Vec::new();
        p.timers.clear_all();
        // Copies of the reply may follow the retransmissions: absorb them
        // until the request would have timed out.
        if p.sends > 1 {
            p.timers.set(
                RequestTimer::Linger,
                p.first_sent + self.settings.request_timeout(),
            );
        }
        let (engine, health, rtt) = (
            p.engine,
            p.health,
            now.saturating_duration_since(p.first_sent),
        );
        if let Some(e) = self.engines.get(engine.0 as usize) {
            e.counters.round_trip.record(rtt);
            match &result {
                Err(NgError::Rejected(_)) => e.counters.failed(NgFailure::Rejected),
                Err(NgError::Malformed) => e.counters.failed(NgFailure::Malformed),
                Err(NgError::Timeout | NgError::NoEngineUp) | Ok(_) => {}
            }
        }
        self.alive(engine);
        if health {
            if let Some(e) = self.engines.get_mut(engine.0 as usize) {
                e.ping = None;
            }
        } else {
            self.events.push_back(NgEvent::Reply { id, result });
        }
        self.reschedule(Target::Request(id));
    }

    // ----- time and output ----------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.next_deadline()
    }

    /// Fires every timer due at `now`: retransmissions, timeouts, pings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.compact();
        while let Some((at, target)) = self.queue.pop_due(now) {
            match target {
                Target::Request(id) => {
                    let Some(p) = self.requests.get_mut(&id) else {
                        continue;
                    };
                    if !p.scheduled.take_if(at) {
                        continue;
                    }
                    while let Some(timer) = self
                        .requests
                        .get_mut(&id)
                        .and_then(|p| p.timers.pop_due(now))
                    {
                        self.fire_request(now, id, timer);
                    }
                }
                Target::Engine(engine) => {
                    let Some(e) = self.engines.get_mut(engine.0 as usize) else {
                        continue;
                    };
                    if !e.scheduled.take_if(at) {
                        continue;
                    }
                    if e.timers.pop_due(now) == Some(EngineTimer::Ping) {
                        self.ping(now, engine);
                    }
                }
            }
            self.reschedule(target);
        }
    }

    fn fire_request(&mut self, now: Instant, id: RequestId, timer: RequestTimer) {
        let Some(p) = self.requests.get_mut(&id) else {
            return;
        };
        match timer {
            RequestTimer::Retransmit => {
                // A late wake-up may find the request expired too: no resend.
                let expired = p
                    .timers
                    .get(RequestTimer::Expire)
                    .is_some_and(|at| at <= now);
                let Some(e) = self.engines.get(p.engine.0 as usize) else {
                    return;
                };
                if expired || p.state != State::Waiting {
                    return;
                }
                self.transmits.push_back((e.addr, p.bytes.clone()));
                Metrics::count(&e.counters.retransmissions);
                p.sends += 1;
                p.interval = p.interval.saturating_mul(2);
                if p.sends < self.settings.tries {
                    p.timers.set(RequestTimer::Retransmit, now + p.interval);
                }
            }
            RequestTimer::Expire => {
                p.state = State::TimedOut;
                p.bytes = Vec::new();
                p.timers.clear_all();
                p.timers
                    .set(RequestTimer::Linger, now + self.settings.late_window);
                let (engine, health) = (p.engine, p.health);
                if let Some(e) = self.engines.get_mut(engine.0 as usize) {
                    e.counters.failed(NgFailure::Timeout);
                    if health {
                        e.ping = None;
                    }
                }
                if !health {
                    self.events.push_back(NgEvent::Reply {
                        id,
                        result: Err(NgError::Timeout),
                    });
                }
                self.failed(engine);
            }
            RequestTimer::Linger => {}
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<NgEvent> {
        self.events.pop_front()
    }

    /// Queues a target's next deadline, or forgets a request with none left.
    fn reschedule(&mut self, target: Target) {
        match target {
            Target::Request(id) => {
                let Some(p) = self.requests.get_mut(&id) else {
                    return;
                };
                match p.timers.next() {
                    Some((at, _)) => {
                        if let Some(at) = p.scheduled.update(Some(at)) {
                            self.queue.schedule(at, target);
                        }
                    }
                    None => {
                        if let Some(p) = self.requests.remove(&id) {
                            self.cookies.remove(&p.cookie);
                        }
                    }
                }
            }
            Target::Engine(engine) => {
                let Some(e) = self.engines.get_mut(engine.0 as usize) else {
                    return;
                };
                let next = e.timers.next().map(|(at, _)| at);
                if let Some(at) = e.scheduled.update(next) {
                    self.queue.schedule(at, target);
                }
            }
        }
    }

    /// Gives memory back after a burst of requests.
    fn compact(&mut self) {
        shrink::after_burst(&mut self.requests);
        shrink::after_burst(&mut self.cookies);
        let (requests, engines) = (&self.requests, &self.engines);
        let live = requests.len() + engines.len();
        self.queue.purge_stale(live, |at, target| match target {
            Target::Request(id) => requests.get(&id).is_some_and(|p| p.scheduled.is(at)),
            Target::Engine(e) => engines
                .get(e.0 as usize)
                .is_some_and(|e| e.scheduled.is(at)),
        });
    }
}

impl Drop for NgClient {
    /// The shared up gauge stops counting this client's view.
    fn drop(&mut self) {
        for e in &self.engines {
            e.counters.unwatch(e.up);
        }
    }
}

/// Whether a datagram from `from` comes from `engine` (an IPv4 engine's
/// reply on a dual-stack socket shows as an IPv4-mapped IPv6 address).
fn same_address(from: SocketAddr, engine: SocketAddr) -> bool {
    from.port() == engine.port() && from.ip().to_canonical() == engine.ip().to_canonical()
}
