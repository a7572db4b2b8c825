//! The engine's side of rtpengine (issue 17): the ng datagrams it takes in
//! and sends out, and each reply handed to the call that waits for it. The
//! client itself (`crate::media::NgClient`) and what a call does with a
//! reply (`crate::call::media`) live below.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::Engine;
use crate::media::NgEvent;

impl Engine {
    /// Whether this engine has an ng client (a reload that adds `media:`
    /// brings one).
    pub fn has_media(&self) -> bool {
        self.media.is_some()
    }

    /// A datagram from rtpengine (an ng reply), with the wall-clock time now.
    pub fn handle_ng_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.wall_at = Some((now, wall));
        if let Some(media) = self.media.as_mut() {
            media.client.handle_datagram(now, from, bytes);
        }
        self.drain_ng_events(now);
    }

    /// What goes to rtpengine next.
    pub fn poll_ng_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.media.as_mut()?.client.poll_transmit()
    }

    /// The wall-clock time at `now`, from the latest reading.
    fn wall(&self, now: Instant) -> SystemTime {
        match self.wall_at {
            Some((at, wall)) => wall + now.saturating_duration_since(at),
            None => SystemTime::UNIX_EPOCH,
        }
    }

    /// Hands rtpengine's replies to the calls that wait for them.
    pub(super) fn drain_ng_events(&mut self, now: Instant) {
        let wall = self.wall(now);
        while let Some(event) = self.media.as_mut().and_then(|m| m.client.poll_event()) {
            match event {
                NgEvent::Reply { id, result } => {
                    let Some((key, op)) = self.media.as_mut().and_then(|m| m.take(id)) else {
                        continue;
                    };
                    self.with_call(key, |call, env| {
                        call.on_media_reply(now, wall, op, result, env)
                    });
                }
                NgEvent::EngineUp(engine) => {
                    let addr = self.engine_name(engine);
                    let deletes = self.media.as_mut().map_or(0, |m| m.engine_up(now, engine));
                    tracing::info!(rtpengine = %addr, deletes_retried = deletes, "rtpengine up");
                }
                NgEvent::EngineDown(engine) => {
                    let addr = self.engine_name(engine);
                    tracing::warn!(rtpengine = %addr, "rtpengine down");
                }
            }
        }
    }

    /// An rtpengine's address, for logs.
    fn engine_name(&self, engine: crate::media::EngineId) -> String {
        self.media
            .as_ref()
            .and_then(|m| m.client.engine_addr(engine))
            .map_or_else(|| "?".to_string(), |a| a.to_string())
    }
}
