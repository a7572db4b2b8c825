//! Ending a call: a BYE from either side, a caller that never ACKs Vigil's 2xx,
//! a shutdown or an operator's hang-up — each recorded once as the call's
//! ending, then both legs closed in whatever state they are.

use std::time::Instant;

use super::{AState, Call, Env, Leg};
use crate::cdr::{EndReason, EndedBy};

/// The `Reason` of a BYE for an expired session (RFC 3326, RFC 4028 §10).
const SESSION_EXPIRED: &str = "SIP;cause=408;text=\"Session expired\"";

impl Call {
    /// The `Reason` header Vigil's BYEs carry, given how the call ended.
    pub(super) fn bye_reason(&self) -> Option<&'static str> {
        match self.ending.map(|e| e.reason) {
            Some(EndReason::SessionTimeout) => Some(SESSION_EXPIRED),
            Some(EndReason::MediaTimeout) => Some(super::anchoring::MEDIA_TIMEOUT),
            _ => None,
        }
    }

    /// A peer hung up with BYE (already answered 200): the other leg follows.
    pub(super) fn on_bye(&mut self, now: Instant, leg: Leg, env: &mut Env<'_>) {
        let (reason, by) = match leg {
            Leg::A => (EndReason::CallerBye, EndedBy::Caller),
            Leg::B => (EndReason::CalleeBye, EndedBy::Callee),
        };
        self.end(now, reason, by, None, env);
        self.abandon_relays(now, env);
        let bye_reason = self.bye_reason();
        match leg {
            Leg::A => {
                self.a.close();
                self.b.hang_up(now, bye_reason, env);
            }
            Leg::B => {
                self.b.close();
                self.a.hang_up(now, false, bye_reason, env);
            }
        }
    }

    /// The peer on `leg` never ACKed Vigil's 2xx (§13.3.1.4): the other side's
    /// INVITE is completed so it stops retransmitting, then both legs get BYE.
    pub(super) fn on_ack_timeout(
        &mut self,
        now: Instant,
        leg: Leg,
        ack_other_seq: Option<u32>,
        env: &mut Env<'_>,
    ) {
        tracing::warn!(call_id = %self.a.call_id(), ?leg, "no ACK for 2xx; ending the call");
        if let Some(seq) = ack_other_seq {
            let other = leg.other();
            if self.leg(other).last_ack_seq() != Some(seq) {
                self.leg_mut(other).send_ack(now, seq, None, env);
            }
            if other == Leg::B {
                self.b.confirm();
            }
        }
        if leg == Leg::A && self.a.state() == AState::Answered {
            // §13.3.1.4: confirm the dialog, then end it with BYE.
            self.a.confirm();
        }
        self.end(now, EndReason::AckTimeout, EndedBy::Switch, None, env);
        self.hang_up_both(now, env);
    }

    /// BYE on both legs (the call's ending is already recorded).
    pub(super) fn hang_up_both(&mut self, now: Instant, env: &mut Env<'_>) {
        self.abandon_relays(now, env);
        let reason = self.bye_reason();
        self.a.hang_up(now, true, reason, env);
        self.b.hang_up(now, reason, env);
    }

    /// Graceful shutdown, first step: the call ends now (its CDR is written
    /// at once, whenever its BYEs get out), unless it had already ended.
    pub fn record_shutdown(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        let unanswered = (self.a.state() == AState::Proceeding).then_some(503);
        self.end(now, EndReason::Shutdown, EndedBy::Switch, unanswered, env);
    }

    /// Graceful shutdown, second step (paced): fail an unanswered call, BYE
    /// an answered one, whatever state its ending left it in.
    pub fn shutdown(&mut self, now: Instant, env: &mut Env<'_>) {
        self.record_shutdown(now, env);
        self.a.fail(now, 503, Some("Shutting Down"), env);
        self.hang_up_both(now, env);
    }

    /// An operator's hang-up: as a shutdown, with its own end reason.
    pub fn hang_up_by_operator(&mut self, now: Instant, env: &mut Env<'_>) {
        self.end_by_switch(now, EndReason::Admin, (480, "Ended By Operator"), env);
    }

    /// Ends the call from the switch's side: an unanswered call's caller gets
    /// `unanswered` (status, reason), an answered call BYE on both legs.
    fn end_by_switch(
        &mut self,
        now: Instant,
        reason: EndReason,
        unanswered: (u16, &'static str),
        env: &mut Env<'_>,
    ) {
        if self.ending.is_some() {
            return;
        }
        if self.a.state() == AState::Proceeding {
            let (status, phrase) = unanswered;
            self.a.fail(now, status, Some(phrase), env);
            self.end(now, reason, EndedBy::Switch, Some(status), env);
        } else {
            self.end(now, reason, EndedBy::Switch, None, env);
        }
        self.hang_up_both(now, env);
    }
}
