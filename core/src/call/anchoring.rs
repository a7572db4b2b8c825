//! The call's rules for a relayed call's media (see [`super::media`]): which
//! SDP goes to rtpengine as an offer or an answer, what waits for its reply,
//! and what a failure means (`media.on_failure`). When dead media ends the
//! call is [`super::liveness`]'s.

use std::time::{Instant, SystemTime};

use super::build::Body;
use super::media::{LateAnswer, MediaOp, MediaSession, Reoffer, totals, with_sdp};
use super::relay::Relay;
use super::{AState, BState, Call, Env, Leg};
use crate::cdr::{EndReason, EndedBy};
use crate::config::OnFailure;
use crate::media::{Answer, Command, Delete, NgError, Offer, Reply, SdpOptions};
use crate::metrics::Metrics;
use crate::session_timer::UasOutcome;
use crate::sip::{Request, Response};
use crate::transaction::ServerTxId;

/// The `Reason` of a BYE for dead media (RFC 3326; Q.850 cause 102,
/// "recovery on timer expiry", as media gateways send it).
pub(super) const MEDIA_TIMEOUT: &str = "Q.850;cause=102;text=\"Media timeout\"";

impl Call {
    /// Relays the call's media through rtpengine: the caller's offer goes
    /// there first, and the B-leg INVITE waits for its reply. Without an
    /// offer (a late-offer call) the INVITE goes at once.
    pub(super) fn begin_media(&mut self, now: Instant, callee_tag: &str, env: &mut Env<'_>) {
        let offer = self
            .a
            .invite()
            .filter(|invite| !invite.body.is_empty())
            .map(|invite| invite.body.clone());
        self.media = Some(Box::new(MediaSession::new(callee_tag, offer.is_some())));
        Metrics::count(&env.metrics.relays_started);
        let Some(sdp) = offer else {
            return self.b.send_invite(now, None, env);
        };
        let command = Command::Offer(Offer {
            call_id: self.a.call_id().to_string(),
            from_tag: self.a.caller_tag().to_string(),
            sdp,
            options: self.sdp_options(Leg::A),
        });
        self.media_request(now, command, MediaOp::CallerOffer, env);
    }

    /// What rtpengine is asked to do with an SDP from `leg`'s peer: Vigil's
    /// defaults, with a label naming the side in `query` and `delete`.
    fn sdp_options(&self, leg: Leg) -> SdpOptions {
        SdpOptions {
            label: Some(
                match leg {
                    Leg::A => "caller",
                    Leg::B => "callee",
                }
                .to_string(),
            ),
            ..SdpOptions::default()
        }
    }

    /// The tag rtpengine knows `leg`'s side by.
    pub(super) fn media_tag(&self, leg: Leg) -> &str {
        match (leg, &self.media) {
            (Leg::A, _) => self.a.caller_tag(),
            (Leg::B, Some(m)) => &m.callee_tag,
            (Leg::B, None) => "",
        }
    }

    /// Sends a request about this call to its rtpengine; with none to send
    /// to, what waits on it is handled as a failure at once.
    pub(super) fn media_request(
        &mut self,
        now: Instant,
        command: Command,
        op: MediaOp,
        env: &mut Env<'_>,
    ) {
        let engine = self.media.as_ref().and_then(|m| m.engine);
        let Some(relay) = env.media.as_deref_mut() else {
            return self.on_media_reply(
                now,
                SystemTime::UNIX_EPOCH,
                op,
                Err(NgError::NoEngineUp),
                env,
            );
        };
        match relay.request(now, self.key, engine, &command, op) {
            Ok(engine) => {
                if let Some(m) = self.media.as_mut() {
                    m.engine = Some(engine);
                }
            }
            Err((_, op)) => {
                self.on_media_reply(
                    now,
                    SystemTime::UNIX_EPOCH,
                    op,
                    Err(NgError::NoEngineUp),
                    env,
                );
            }
        }
    }

    /// A warning about this call's media, at the worker's bounded rate.
    pub(super) fn warn_media(
        &self,
        now: Instant,
        env: &mut Env<'_>,
        what: &str,
        error: Option<&NgError>,
    ) {
        let Some(suppressed) = env.media.as_deref_mut().and_then(|m| m.log_failure(now)) else {
            return;
        };
        match error {
            Some(error) => {
                tracing::warn!(call_id = %self.a.call_id(), request = what, %error, suppressed, "rtpengine request failed")
            }
            None => tracing::warn!(call_id = %self.a.call_id(), suppressed, "{what}"),
        }
    }

    /// rtpengine answered (or failed to) a request of this call's. `wall` is
    /// the wall-clock time now (rtpengine's statistics are in its terms).
    pub fn on_media_reply(
        &mut self,
        now: Instant,
        wall: SystemTime,
        op: MediaOp,
        result: Result<Reply, NgError>,
        env: &mut Env<'_>,
    ) {
        if let Err(e) = &result {
            self.warn_media(now, env, op.name(), Some(e));
        }
        let sdp = result.as_ref().ok().and_then(|r| r.sdp.clone());
        match op {
            MediaOp::CallerOffer => match sdp {
                Some(sdp) => {
                    let original = self.a.invite().and_then(|i| Body::of(&i.headers, &i.body));
                    let body = with_sdp(original.as_ref(), sdp);
                    self.note_hold(now, body.as_ref(), env);
                    self.b.send_invite(now, body.as_ref(), env);
                }
                None => self.media_unavailable(now, env),
            },
            MediaOp::CalleeAnswer(response) | MediaOp::CalleeOffer(response) => {
                if let Some(m) = self.media.as_mut() {
                    m.b_busy = false;
                }
                match sdp {
                    Some(sdp) => self.take_callee_sdp(now, *response, sdp, env),
                    None => {
                        self.media_unavailable(now, env);
                        if self.media.is_none() && self.ending.is_none() {
                            // Passthrough: the callee's SDP goes as it is.
                            self.take_b_invite_response(now, *response, env);
                        }
                    }
                }
                self.next_held_response(now, env);
            }
            MediaOp::CallerAnswer(late) => {
                let LateAnswer {
                    mut ack,
                    ack_other_seq,
                    owed_bye,
                } = *late;
                if let Some(sdp) = sdp {
                    let original = Body::of(&ack.headers, &ack.body);
                    self.note_hold(now, original.as_ref(), env);
                    if let Some(body) = with_sdp(original.as_ref(), sdp) {
                        replace_body(&mut ack.headers, &mut ack.body, &body);
                    }
                    self.cross_ack(now, Leg::A, ack, Some(ack_other_seq), owed_bye, env);
                    if let Some(original) = original {
                        self.a.leg.set_remote_body(original);
                    }
                } else {
                    self.cross_ack(now, Leg::A, ack, Some(ack_other_seq), owed_bye, env);
                }
            }
            MediaOp::CallerPrackAnswer(original) => {
                // Without rtpengine's SDP (it failed) the caller's goes as it is.
                let body = sdp.and_then(|sdp| with_sdp(Some(&original), sdp));
                self.b
                    .send_deferred_prack(now, Some(body.as_ref().unwrap_or(&original)), env);
                self.a.leg.set_remote_body(*original);
            }
            MediaOp::Reoffer(offer) => {
                let Reoffer {
                    from,
                    tx,
                    mut request,
                    negotiated,
                } = *offer;
                match sdp {
                    Some(sdp) if self.ending.is_none() => {
                        let original = Body::of(&request.headers, &request.body);
                        self.note_hold(now, original.as_ref(), env);
                        if let Some(body) = with_sdp(original.as_ref(), sdp) {
                            replace_body(&mut request.headers, &mut request.body, &body);
                        }
                        match negotiated {
                            Some(_) => self.relay_now(now, from, tx, request, negotiated, env),
                            None => self.send_early_update(now, from, tx, request, env),
                        }
                        if let Some(original) = original {
                            self.leg_mut(from).set_remote_body(original);
                        }
                    }
                    _ => {
                        if let Some(m) = self.media.as_mut() {
                            m.offer_from = None;
                        }
                        // The offer cannot be anchored: refused, and the
                        // media stays as it was (RFC 3261 §14.2).
                        let r = crate::sip::Reply::new(488).to(
                            &request,
                            None,
                            &env.settings.user_agent,
                        );
                        env.tx.respond(now, tx, r);
                    }
                }
            }
            MediaOp::Reanswer(answer) => {
                if let Some(m) = self.media.as_mut() {
                    m.offer_from = None;
                }
                let (relay, mut response) = *answer;
                let to = relay.from.other();
                let original = Body::of(&response.headers, &response.body);
                if let Some(sdp) = sdp {
                    self.note_hold_answer(now, original.as_ref(), env);
                    if let Some(body) = with_sdp(original.as_ref(), sdp) {
                        replace_body(&mut response.headers, &mut response.body, &body);
                    }
                }
                self.answer_relay(now, relay, response, env);
                if let Some(original) = original {
                    self.leg_mut(to).set_remote_body(original);
                }
            }
            MediaOp::Check => self.on_media_check(now, wall, result, env),
            MediaOp::Delete => {
                // Unanswered (rtpengine unreachable, or down): it may still
                // hold the call; told again when it is back. A refusal means
                // it does not know the call (it restarted).
                if let (Err(NgError::Timeout | NgError::NoEngineUp), Some(engine), Some(relay)) = (
                    &result,
                    self.media.as_ref().and_then(|m| m.engine),
                    env.media.as_deref_mut(),
                ) {
                    relay.retry_delete(engine, self.delete_command());
                }
                let stats = result.ok().and_then(|r| r.stats);
                let record = self.media.as_mut().and_then(|m| m.pending_cdr.take());
                if let Some(mut record) = record {
                    record.media =
                        stats.map(|s| totals(&s, self.media_tag(Leg::A), self.media_tag(Leg::B)));
                    env.cdrs.push_back(*record);
                }
            }
        }
    }

    /// A response to the B-leg INVITE with the callee's SDP: rtpengine's
    /// answer (or, for a late offer, its offer) to the caller's side first.
    /// `None` when it went to rtpengine or waits behind one that did.
    pub(super) fn callee_sdp_through_media(
        &mut self,
        now: Instant,
        response: Response,
        env: &mut Env<'_>,
    ) -> Option<Response> {
        let Some(m) = self.media.as_mut() else {
            return Some(response);
        };
        let relevant =
            matches!(self.b.state(), BState::Calling | BState::Proceeding) && self.ending.is_none();
        if !relevant || response.status < 101 {
            return Some(response);
        }
        if m.b_busy || !m.held.is_empty() {
            m.held.push_back(response);
            return None;
        }
        if response.body.is_empty() || response.status >= 300 {
            return Some(response);
        }
        // The same SDP as the callee's last (a 2xx repeating its 183): the
        // caller already has rtpengine's for it.
        let body = Body::of(&response.headers, &response.body);
        if body.is_some() && self.b.leg.remote_body() == body.as_ref() {
            let mut response = response;
            if let Some(local) = self.a.leg.local_body() {
                replace_body(&mut response.headers, &mut response.body, local);
            }
            return Some(response);
        }
        m.b_busy = true;
        let (command, op) = if m.caller_offered {
            (
                Command::Answer(Answer {
                    call_id: self.a.call_id().to_string(),
                    from_tag: self.a.caller_tag().to_string(),
                    to_tag: m.callee_tag.to_string(),
                    sdp: response.body.clone(),
                    options: self.sdp_options(Leg::B),
                }),
                MediaOp::CalleeAnswer(Box::new(response)),
            )
        } else {
            (
                Command::Offer(Offer {
                    call_id: self.a.call_id().to_string(),
                    from_tag: m.callee_tag.to_string(),
                    sdp: response.body.clone(),
                    options: self.sdp_options(Leg::B),
                }),
                MediaOp::CalleeOffer(Box::new(response)),
            )
        };
        self.media_request(now, command, op, env);
        None
    }

    /// The callee's response with rtpengine's SDP in place of the callee's:
    /// on to the caller; the callee's own SDP is what the B leg keeps.
    fn take_callee_sdp(
        &mut self,
        now: Instant,
        mut response: Response,
        sdp: Vec<u8>,
        env: &mut Env<'_>,
    ) {
        let original = Body::of(&response.headers, &response.body);
        self.note_hold_answer(now, original.as_ref(), env);
        if let Some(body) = with_sdp(original.as_ref(), sdp) {
            replace_body(&mut response.headers, &mut response.body, &body);
        }
        self.take_b_invite_response(now, response, env);
        if let Some(original) = original {
            self.b.leg.set_remote_body(original);
        }
    }

    /// The next response held behind one that went to rtpengine.
    fn next_held_response(&mut self, now: Instant, env: &mut Env<'_>) {
        while let Some(m) = self.media.as_mut() {
            if m.b_busy {
                return;
            }
            let Some(next) = m.held.pop_front() else {
                return;
            };
            if let Some(response) = self.callee_sdp_through_media(now, next, env) {
                self.take_b_invite_response(now, response, env);
            }
        }
    }

    /// The caller's ACK answering a late offer: its SDP goes to rtpengine
    /// before the ACK crosses. `None` when it went.
    pub(super) fn late_answer_through_media(
        &mut self,
        now: Instant,
        leg: Leg,
        ack: Request,
        ack_other: Option<u32>,
        owed_bye: bool,
        env: &mut Env<'_>,
    ) -> Option<Request> {
        let (Leg::A, true, Some(ack_other_seq), false) = (
            leg,
            self.late_offer_relayed(),
            ack_other,
            ack.body.is_empty(),
        ) else {
            return Some(ack);
        };
        let command = self.caller_answer(ack.body.clone());
        let op = MediaOp::CallerAnswer(Box::new(LateAnswer {
            ack,
            ack_other_seq,
            owed_bye,
        }));
        self.media_request(now, command, op, env);
        None
    }

    /// A relayed call whose offer came from the callee (a late offer): the
    /// caller's answer goes to rtpengine.
    fn late_offer_relayed(&self) -> bool {
        self.media
            .as_ref()
            .is_some_and(|m| !m.caller_offered && m.engine.is_some())
    }

    /// rtpengine's `answer` for the caller's SDP to the callee's offer.
    fn caller_answer(&self, sdp: Vec<u8>) -> Command {
        Command::Answer(Answer {
            call_id: self.a.call_id().to_string(),
            from_tag: self.media_tag(Leg::B).to_string(),
            to_tag: self.a.caller_tag().to_string(),
            sdp,
            options: self.sdp_options(Leg::A),
        })
    }

    /// The caller's answer in its PRACK to the callee's offer in a reliable
    /// 18x (a late offer): through rtpengine before the B leg's PRACK
    /// carries it. Hands the body back when it may go as it is.
    pub(super) fn prack_answer_through_media(
        &mut self,
        now: Instant,
        body: Body,
        env: &mut Env<'_>,
    ) -> Option<Body> {
        if !self.late_offer_relayed() {
            return Some(body);
        }
        let command = self.caller_answer(body.bytes().to_vec());
        self.media_request(
            now,
            command,
            MediaOp::CallerPrackAnswer(Box::new(body)),
            env,
        );
        None
    }

    /// A re-INVITE's or UPDATE's new offer from `from` (`negotiated`:
    /// `None` for an UPDATE in the early dialog): through rtpengine before
    /// it is relayed. Hands the request back when it may go as it is.
    pub(super) fn reoffer(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        negotiated: Option<UasOutcome>,
        env: &mut Env<'_>,
    ) -> Option<(ServerTxId, Request)> {
        let relayed = self.media.as_ref().is_some_and(|m| m.engine.is_some());
        if !relayed || request.body.is_empty() {
            return Some((tx, request));
        }
        if let Some(m) = self.media.as_mut() {
            m.offer_from = Some(from);
        }
        let command = Command::Offer(Offer {
            call_id: self.a.call_id().to_string(),
            from_tag: self.media_tag(from).to_string(),
            sdp: request.body.clone(),
            options: self.sdp_options(from),
        });
        let op = MediaOp::Reoffer(Box::new(Reoffer {
            from,
            tx,
            request,
            negotiated,
        }));
        self.media_request(now, command, op, env);
        None
    }

    /// The 2xx answering a relayed offer: its SDP through rtpengine before
    /// it goes back. Hands it back when it may go as it is.
    pub(super) fn reanswer(
        &mut self,
        now: Instant,
        relay: Relay,
        response: Response,
        env: &mut Env<'_>,
    ) -> Option<(Relay, Response)> {
        let relayed = self.media.as_ref().is_some_and(|m| m.engine.is_some());
        if !relayed || response.body.is_empty() {
            if let Some(m) = self.media.as_mut() {
                m.offer_from = None;
            }
            return Some((relay, response));
        }
        let offerer = relay.from;
        let command = Command::Answer(Answer {
            call_id: self.a.call_id().to_string(),
            from_tag: self.media_tag(offerer).to_string(),
            to_tag: self.media_tag(offerer.other()).to_string(),
            sdp: response.body.clone(),
            options: self.sdp_options(offerer.other()),
        });
        self.media_request(
            now,
            command,
            MediaOp::Reanswer(Box::new((relay, response))),
            env,
        );
        None
    }

    /// The leg whose offer is with rtpengine, if one is (glare for another).
    pub(super) fn media_offer_from(&self) -> Option<Leg> {
        self.media.as_ref().and_then(|m| m.offer_from)
    }

    /// rtpengine could not anchor the call's media while it was set up:
    /// `media.on_failure` says whether the call is refused (503) or goes on
    /// without relay. A call that ended meanwhile (the caller cancelled
    /// while rtpengine was slow) is left as it is: its CDR waits for its
    /// `delete`, in the media session that going on without relay would drop.
    fn media_unavailable(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        let on_failure = env
            .media
            .as_ref()
            .map_or(OnFailure::Reject, |m| m.config.on_failure);
        match on_failure {
            OnFailure::Passthrough => {
                self.warn_media(
                    now,
                    env,
                    "media relay unavailable: the call goes on without it",
                    None,
                );
                self.drop_media(now, env);
                if self.b.state() == BState::Waiting {
                    self.b.send_invite(now, None, env);
                }
            }
            OnFailure::Reject => {
                self.warn_media(now, env, "media relay unavailable: call refused", None);
                if self.a.state() == AState::Proceeding {
                    self.a.fail(now, 503, Some("Media Relay Unavailable"), env);
                    self.end(now, EndReason::Rejected, EndedBy::Switch, Some(503), env);
                } else {
                    self.end(now, EndReason::Rejected, EndedBy::Switch, None, env);
                }
                self.hang_up_both(now, env);
            }
        }
    }

    /// The call goes on without relay; rtpengine forgets what it started.
    fn drop_media(&mut self, now: Instant, env: &mut Env<'_>) {
        let Some(m) = self.media.take() else {
            return;
        };
        Metrics::count(&env.metrics.relays_stopped);
        if let (Some(engine), Some(relay)) = (m.engine, env.media.as_deref_mut()) {
            let delete = Command::Delete(self.delete_command());
            // Fire and forget: no call waits on it any more.
            let _ = relay.client.request(now, Some(engine), &delete);
        }
    }

    /// The `delete` of the whole call: every branch, forgotten at once.
    fn delete_command(&self) -> Delete {
        Delete {
            call_id: self.a.call_id().to_string(),
            from_tag: self.a.caller_tag().to_string(),
            to_tag: None,
            delay: Some(0),
        }
    }

    /// The call ends: a relayed call's CDR waits for rtpengine's totals (or
    /// its failure); any other is handed back to be written now.
    pub(super) fn delete_media(
        &mut self,
        now: Instant,
        record: Box<crate::cdr::CdrRecord>,
        env: &mut Env<'_>,
    ) -> Option<Box<crate::cdr::CdrRecord>> {
        let Some(m) = self.media.as_mut() else {
            return Some(record);
        };
        if m.pending_cdr.is_some() {
            return Some(record);
        }
        Metrics::count(&env.metrics.relays_stopped);
        if m.engine.is_none() {
            self.media = None;
            return Some(record);
        }
        m.check_at = None;
        m.pending_cdr = Some(record);
        let command = Command::Delete(self.delete_command());
        self.media_request(now, command, MediaOp::Delete, env);
        None
    }
}

/// Puts `body` (and its headers) on a message in place of what it had.
fn replace_body(headers: &mut crate::sip::Headers, bytes: &mut Vec<u8>, body: &Body) {
    for name in super::build::BODY_HEADERS {
        headers.remove(&name);
    }
    body.apply(headers, bytes);
}
