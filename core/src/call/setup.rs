//! Setting the call up: the callee's responses to the B-leg INVITE crossing to
//! the caller (provisionals with early media, the answer, failures with their
//! code and reason), a 422 retried once, the caller's CANCEL, the ACKs that
//! confirm both legs, and the ring timer.

use std::time::Instant;

use super::leg::{CallerPrack, ReliableIncoming};
use super::{AState, AttemptEnd, BState, Call, CallTimer, Env, Leg};
use crate::cdr::{EndReason, EndedBy};
use crate::metrics::Metrics;
use crate::sip::local_response;
use crate::sip::{Request, Response};
use crate::transaction::ServerTxId;
use crate::uplink::auth::is_challenge;

impl Call {
    /// A response to the B-leg INVITE. A relayed call's SDP in it goes
    /// through rtpengine first; responses keep their order.
    pub(super) fn on_b_invite_response(
        &mut self,
        now: Instant,
        response: Response,
        env: &mut Env<'_>,
    ) {
        if response.status < 200 && !self.take_reliable(now, &response, env) {
            return;
        }
        if let Some(response) = self.callee_sdp_through_media(now, response, env) {
            self.take_b_invite_response(now, response, env);
        }
    }

    /// A response to the B-leg INVITE, its SDP already rtpengine's if the
    /// call is relayed.
    pub(super) fn take_b_invite_response(
        &mut self,
        now: Instant,
        response: Response,
        env: &mut Env<'_>,
    ) {
        let status = response.status;
        match self.b.state() {
            BState::Calling | BState::Proceeding => {
                if status < 200 {
                    self.note_provisional_media(status > 100 && !response.body.is_empty());
                    let relay = self.b.on_provisional(now, env);
                    if relay && status > 100 && self.a.state() == AState::Proceeding {
                        self.note_early_media(&response);
                        if let Some(r) = self.a.relayed(&response, env) {
                            self.a.respond(now, r, env);
                        }
                    }
                } else if status < 300 {
                    self.on_b_answered(now, response, env);
                } else if status == 422
                    && self.ending.is_none()
                    && self.b.retry_after_422(now, &response, env)
                {
                    // RFC 4028 §7.4: the callee wants a longer interval; asked again.
                    tracing::info!(call_id = %self.a.call_id(), "callee wants a longer session interval (422): retried");
                } else if is_challenge(status)
                    && self.ending.is_none()
                    && self.b.answer_challenge(now, &response, env)
                {
                    // RFC 3261 §22.2: the carrier wanted the trunk's credentials.
                    tracing::debug!(call_id = %self.a.call_id(), status, "INVITE challenged: sent again with credentials");
                } else {
                    self.b.on_final();
                    if status != 422
                        && self.fail_over(now, AttemptEnd::Status(status), Some(&response), env)
                    {
                        return;
                    }
                    self.b.close();
                    if self.ending.is_none() {
                        let r = if is_challenge(status) {
                            // The caller never sees the carrier's challenge:
                            // its credentials are the trunk's business.
                            self.a.invite().map(|invite| {
                                local_response(
                                    invite,
                                    403,
                                    Some("Trunk Authentication Failed"),
                                    Some(self.a.local_tag()),
                                    &env.settings.user_agent,
                                )
                            })
                        } else if status == 422 {
                            // The caller's interval was fine; the callee refused ours.
                            self.a.invite().map(|invite| {
                                local_response(
                                    invite,
                                    500,
                                    Some("Session Interval Refused By Callee"),
                                    Some(self.a.local_tag()),
                                    &env.settings.user_agent,
                                )
                            })
                        } else {
                            self.a.relayed(&response, env)
                        };
                        match r {
                            Some(r) => self.a.respond(now, r, env),
                            None => self.a.close(),
                        }
                        self.end(now, EndReason::Rejected, EndedBy::Callee, Some(status), env);
                    }
                }
            }
            BState::Cancelling => {
                if (200..300).contains(&status) {
                    // The callee answered as the CANCEL crossed: ACK and BYE it.
                    self.b.hang_up_fork(now, &response, env);
                }
                if status >= 200 {
                    self.b.close();
                }
            }
            BState::Answered | BState::Confirmed => {
                if (200..300).contains(&status) {
                    self.b.on_2xx_again(now, &response, env);
                }
            }
            BState::Done => {
                if (200..300).contains(&status) {
                    self.b.hang_up_fork(now, &response, env);
                }
            }
            // Nothing was sent: no response can be for it.
            BState::Waiting => {}
        }
    }

    /// A provisional from the callee, as RFC 3262 §4 says: a reliable one
    /// in order is PRACKed — at once, or, when it carries the callee's offer
    /// (a late-offer call) and the caller takes reliable provisionals, with
    /// the caller's answer from its own PRACK. False: it is a retransmission
    /// or past a gap, and goes no further.
    fn take_reliable(&mut self, now: Instant, response: &Response, env: &mut Env<'_>) -> bool {
        if !matches!(
            self.b.state(),
            BState::Calling | BState::Proceeding | BState::Cancelling
        ) {
            return true;
        }
        match self.b.classify_provisional(response) {
            ReliableIncoming::Unreliable => true,
            ReliableIncoming::Dropped => false,
            ReliableIncoming::Fresh { dialog, rack } => {
                let offer = !response.body.is_empty() && self.b.late_offer();
                if offer && self.a.takes_reliable_sdp() && self.a.state() == AState::Proceeding {
                    self.b.defer_prack(now, dialog, rack, env);
                } else {
                    // A caller without 100rel cannot answer before the 2xx:
                    // the PRACK goes without an answer (README: limits).
                    self.b.send_prack(now, dialog, &rack, None, env);
                }
                true
            }
        }
    }

    /// A PRACK from the caller: answered on the A leg; its answer to the
    /// callee's offer (a late-offer call) goes in the B leg's held PRACK.
    pub(super) fn on_caller_prack(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        prack: Request,
        env: &mut Env<'_>,
    ) {
        let CallerPrack::Acknowledged(body) = self.a.on_prack(now, tx, &prack, env) else {
            return;
        };
        let Some(body) = body else {
            return self.b.send_deferred_prack(now, None, env);
        };
        if !self.b.has_deferred_prack() {
            return;
        }
        self.note_body(Leg::A, &prack.headers, &prack.body);
        // A relayed call's answer goes through rtpengine first.
        if let Some(body) = self.prack_answer_through_media(now, body, env) {
            self.b.send_deferred_prack(now, Some(&body), env);
        }
    }

    /// No PRACK for a reliable provisional in 64*T1 (RFC 3262 §3): the
    /// caller's INVITE is rejected with 5xx and the callee's given up.
    pub fn on_prack_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.a.state() != AState::Proceeding || self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.a.call_id(), "no PRACK for a reliable provisional within 64*T1");
        self.a
            .fail(now, 504, Some("Provisional Response Not Acknowledged"), env);
        self.end(now, EndReason::Rejected, EndedBy::Switch, Some(504), env);
        let reason = self.bye_reason();
        self.b.hang_up(now, reason, env);
    }

    fn on_b_answered(&mut self, now: Instant, response: Response, env: &mut Env<'_>) {
        if !self.b.has_invite() || self.a.invite().is_none() {
            return;
        }
        let b_agreed = self.b.on_answered(&response);
        if self.ending.is_some() {
            // Answered after the call was already given up (CANCEL race, shutdown).
            let reason = self.bye_reason();
            self.b.hang_up(now, reason, env);
            return;
        }
        self.answer = Some(now);
        if let Some(f) = self.failover.as_mut() {
            f.answered();
        }
        Metrics::count(&env.metrics.calls_answered);
        self.timers.clear(CallTimer::Ring);
        self.note_body(Leg::B, &response.headers, &response.body);
        self.a.answer(now, &response, self.b.invite_seq(), env);
        self.start_sessions(now, b_agreed);
        self.start_media_checks(now, env);
        tracing::debug!(call_id = %self.a.call_id(), "answered");
    }

    /// Both legs are confirmed: the INVITEs (most of a call's memory) go; the
    /// dialogs and the legs' SDPs hold all that is still needed.
    fn forget_invites(&mut self) {
        self.a.forget_invite();
        self.b.forget_invite();
    }

    /// Early media: the callee's SDP in a provisional travels to the caller.
    fn note_early_media(&mut self, response: &Response) {
        if !response.body.is_empty() {
            self.note_body(Leg::B, &response.headers, &response.body);
        }
    }

    /// The caller cancelled (its CANCEL is already answered 200).
    pub fn on_cancel(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.a.state() != AState::Proceeding {
            return; // §9.2: a final response was sent already; CANCEL changes nothing.
        }
        self.a.fail(now, 487, None, env);
        self.end(now, EndReason::Cancelled, EndedBy::Caller, Some(487), env);
        let reason = self.bye_reason();
        self.b.cancel(now, reason, env);
    }

    /// An ACK from a leg (for a 2xx Vigil sent on it).
    pub fn on_ack(&mut self, now: Instant, leg: Leg, ack: Request, env: &mut Env<'_>) {
        let Some(ack_other) = self.leg_mut(leg).take_ack(ack.cseq.seq) else {
            return; // a retransmitted ACK, or one for nothing Vigil sent
        };
        let owed_bye = match leg {
            Leg::A => self.a.confirm(),
            Leg::B => false,
        };
        if let Some(ack) = self.late_answer_through_media(now, leg, ack, ack_other, owed_bye, env) {
            self.cross_ack(now, leg, ack, ack_other, owed_bye, env);
        }
    }

    /// The ACK crosses to the other leg (its SDP already rtpengine's, if the
    /// call is relayed), confirming both.
    pub(super) fn cross_ack(
        &mut self,
        now: Instant,
        leg: Leg,
        ack: Request,
        ack_other: Option<u32>,
        owed_bye: bool,
        env: &mut Env<'_>,
    ) {
        self.note_body(leg, &ack.headers, &ack.body);
        if let Some(seq) = ack_other {
            let other = leg.other();
            self.leg_mut(other).send_ack(now, seq, Some(&ack), env);
            if other == Leg::B {
                self.b.confirm();
            }
        }
        if self.a.state() == AState::Confirmed && self.b.state() == BState::Confirmed {
            self.forget_invites();
        }
        if owed_bye {
            self.a.send_owed_bye(now, env);
        }
    }

    /// No answer within `max_ring_time`: the caller gets 408, the callee a CANCEL.
    pub(super) fn on_ring_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.a.state() == AState::Proceeding && self.ending.is_none() {
            tracing::info!(call_id = %self.a.call_id(), "no answer within max_ring_time");
            self.a.fail(now, 408, Some("No Answer"), env);
            self.end(now, EndReason::Rejected, EndedBy::Switch, Some(408), env);
            let reason = self.bye_reason();
            self.b.cancel(now, reason, env);
        }
    }
}
