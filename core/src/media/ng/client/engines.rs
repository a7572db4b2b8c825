//! The client's rtpengines: which is up, which takes the next new call (in
//! turn), the health pings that tell, and a reload's new list.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Engine, EngineId, EngineTimer, EngineTimers, NgClient, NgEvent, Target};
use crate::media::ng::command::Command;
use crate::timer::Scheduled;

impl NgClient {
    // ----- engines ------------------------------------------------------------

    /// The engines, in the order given, with whether each is up.
    pub fn engines(&self) -> impl Iterator<Item = (EngineId, SocketAddr, bool)> + '_ {
        (0u32..)
            .zip(&self.engines)
            .map(|(i, e)| (EngineId(i), e.addr, e.up))
    }

    pub fn engine_addr(&self, engine: EngineId) -> Option<SocketAddr> {
        self.engine(engine).map(|e| e.addr)
    }

    /// The engine at `addr` (say, one a call recorded before a reload).
    pub fn engine_id(&self, addr: SocketAddr) -> Option<EngineId> {
        self.engines()
            .find(|&(_, a, _)| a == addr)
            .map(|(id, ..)| id)
    }

    pub fn is_up(&self, engine: EngineId) -> bool {
        self.engine(engine).is_some_and(|e| e.up)
    }

    pub(super) fn engine(&self, engine: EngineId) -> Option<&Engine> {
        self.engines.get(engine.0 as usize)
    }

    /// A reload's list of engines: new ones are added (and pinged at once),
    /// ones no longer listed retire (no new calls, no pings; their calls
    /// still reach them), and a listed one that had retired comes back. An
    /// engine keeps its [`EngineId`] for the client's life.
    pub fn set_engines(&mut self, now: Instant, engines: &[SocketAddr]) {
        for e in &mut self.engines {
            e.retired = !engines.contains(&e.addr);
            if e.retired {
                e.timers.clear(EngineTimer::Ping);
            } else if e.timers.get(EngineTimer::Ping).is_none() {
                e.timers.set(EngineTimer::Ping, now);
            }
        }
        for &addr in engines {
            if self.engine_id(addr).is_none() {
                let counters = self.metrics.rtpengine(addr);
                counters.watch();
                let mut timers = EngineTimers::default();
                timers.set(EngineTimer::Ping, now);
                self.engines.push(Engine {
                    addr,
                    up: false,
                    retired: false,
                    failures: 0,
                    ping: None,
                    timers,
                    scheduled: Scheduled::default(),
                    counters,
                });
            }
        }
        for i in 0..self.engines.len() {
            if let Ok(i) = u32::try_from(i) {
                self.reschedule(Target::Engine(EngineId(i)));
            }
        }
        self.handle_timeout(now);
    }

    /// The next engine that is up (and configured), in turn.
    pub(super) fn pick(&mut self) -> Option<EngineId> {
        let n = self.engines.len();
        let found = (0..n)
            .map(|k| (self.next_engine + k) % n)
            .find(|&i| self.engines[i].up && !self.engines[i].retired)?;
        self.next_engine = (found + 1) % n;
        u32::try_from(found).ok().map(EngineId)
    }

    /// An engine answered: its failures are forgiven, and it is up.
    pub(super) fn alive(&mut self, engine: EngineId) {
        let Some(e) = self.engines.get_mut(engine.0 as usize) else {
            return;
        };
        e.failures = 0;
        if !e.up {
            e.up = true;
            e.counters.went_up();
            self.events.push_back(NgEvent::EngineUp(engine));
        }
    }

    /// An engine left a request unanswered.
    pub(super) fn failed(&mut self, engine: EngineId) {
        let down_after = self.settings.down_after.max(1);
        let Some(e) = self.engines.get_mut(engine.0 as usize) else {
            return;
        };
        e.failures = e.failures.saturating_add(1);
        if e.up && e.failures >= down_after {
            e.up = false;
            e.counters.went_down();
            self.events.push_back(NgEvent::EngineDown(engine));
        }
    }

    /// Sends a health ping unless the last one still waits; re-arms.
    pub(super) fn ping(&mut self, now: Instant, engine: EngineId) {
        let interval = self.settings.ping_interval;
        let Some(e) = self.engines.get_mut(engine.0 as usize) else {
            return;
        };
        e.timers.set(EngineTimer::Ping, now + interval);
        if e.ping.is_none() {
            let id = self.send(now, engine, &Command::Ping, true);
            if let Some(e) = self.engines.get_mut(engine.0 as usize) {
                e.ping = Some(id);
            }
        }
    }
}
