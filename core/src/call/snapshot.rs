//! What an operator sees of a call (`vigil ctl calls`): who, how long, each
//! leg's session timer and each leg's media addresses.

use std::time::Instant;

use super::Call;
use super::build::Body;
use super::leg::CallLeg;
use crate::sdp::{Stream, streams};
use crate::session_timer::Refresher;

/// A call as an operator sees it: who, how long, each leg's session timer and
/// media.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallSnapshot {
    pub call_id: String,
    pub b_call_id: String,
    pub caller: String,
    pub callee: String,
    pub trunk_in: String,
    pub trunk_out: String,
    /// Seconds since the INVITE arrived.
    pub age: f64,
    /// Seconds since the answer; `None` while ringing.
    pub answered_for: Option<f64>,
    /// The A leg's (towards the caller) session timer; `None` without one.
    pub a_leg: Option<LegTimerSnapshot>,
    pub b_leg: Option<LegTimerSnapshot>,
    /// The call's media goes through rtpengine (`media: relay`).
    pub relayed: bool,
    /// The A leg's media: what the caller's SDP names, and what Vigil gave
    /// the caller (rtpengine's address for a relayed call, the callee's
    /// otherwise).
    pub a_media: LegMedia,
    pub b_media: LegMedia,
}

/// One leg's media streams, from the SDPs of the latest offer/answer on it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LegMedia {
    /// The streams the peer's SDP names (where the peer wants media).
    pub peer: Vec<Stream>,
    /// The streams of the SDP Vigil sent the peer (where the peer sends).
    pub local: Vec<Stream>,
}

impl LegMedia {
    fn of(leg: &CallLeg) -> LegMedia {
        let of = |body: Option<&Body>| body.map_or(Vec::new(), |b| streams(b.bytes()));
        LegMedia {
            peer: of(leg.remote_body()),
            local: of(leg.local_body()),
        }
    }
}

/// One leg's session timer, for an operator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LegTimerSnapshot {
    pub session_expires: u32,
    /// `vigil` or `peer`.
    pub refresher: &'static str,
    /// Refreshes Vigil completed on this leg.
    pub refreshes: u32,
    /// Seconds until Vigil refreshes; `None` where the peer refreshes.
    pub next_refresh_in: Option<f64>,
    /// Seconds until the session ends without a refresh.
    pub expires_in: Option<f64>,
}

impl LegTimerSnapshot {
    fn of(leg: &CallLeg, now: Instant) -> Option<LegTimerSnapshot> {
        let s = leg.session()?;
        let agreed = s.agreed();
        let secs_until = |at: Instant| at.saturating_duration_since(now).as_secs_f64();
        Some(LegTimerSnapshot {
            session_expires: agreed.interval,
            refresher: match agreed.refresher {
                Refresher::Vigil => "vigil",
                Refresher::Peer => "peer",
            },
            refreshes: s.refreshes(),
            next_refresh_in: s.refresh_due_at().map(secs_until),
            expires_in: s.expires_at().map(secs_until),
        })
    }
}

impl Call {
    /// What an operator sees of the call (`vigil ctl calls`).
    pub fn snapshot(&self, now: Instant) -> CallSnapshot {
        CallSnapshot {
            call_id: self.a.call_id().to_string(),
            b_call_id: self.b.call_id().to_string(),
            caller: self.parties.caller.clone(),
            callee: self.parties.callee.clone(),
            trunk_in: self.parties.trunk_in.to_string(),
            trunk_out: self.parties.trunk_out.to_string(),
            age: now.saturating_duration_since(self.start).as_secs_f64(),
            answered_for: self
                .answer
                .map(|a| now.saturating_duration_since(a).as_secs_f64()),
            a_leg: LegTimerSnapshot::of(&self.a.leg, now),
            b_leg: LegTimerSnapshot::of(&self.b.leg, now),
            relayed: self.media.is_some(),
            a_media: LegMedia::of(&self.a.leg),
            b_media: LegMedia::of(&self.b.leg),
        }
    }
}
