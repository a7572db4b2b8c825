//! Requests inside a call's dialogs: BYE ends the call; re-INVITE and UPDATE are
//! session refreshes (answered locally when the SDP did not change) or offers
//! (relayed); INFO, MESSAGE, NOTIFY and OPTIONS are relayed.

use std::time::Instant;

use super::Call;
use super::build::{Body, local_response, our_via, relay_request_payload, relay_response};
use super::{AState, CallTimer, Env, Leg, Pending2xx, Purpose, Relay, TxOwner};
use crate::cdr::{EndReason, EndedBy};
use crate::session_timer::negotiate::{self, uac_offer_headers, uas_answer_headers};
use crate::session_timer::{SessionLeg, UasOutcome, Who};
use crate::sip::{ALLOWED_METHODS, HeaderName, Method, Request, Response};
use crate::transaction::ServerTxId;

impl Call {
    /// A request inside one of the call's dialogs (BYE, re-INVITE, UPDATE, INFO, …),
    /// already a server transaction that this call must answer.
    pub fn on_request(
        &mut self,
        now: Instant,
        leg: Leg,
        tx: ServerTxId,
        request: Request,
        env: &mut Env<'_>,
    ) {
        env.tx.set_server_owner(tx, self.owner(Purpose::Teardown));
        let ua = env.settings.user_agent.clone();
        let reply = |env: &mut Env<'_>,
                     status: u16,
                     reason: Option<&str>,
                     extra: Option<(HeaderName, &str)>| {
            let mut r = local_response(&request, status, reason, None, &ua);
            if let Some((name, value)) = extra {
                r.headers.push(name, value);
            }
            env.tx.respond(now, tx, r);
        };
        if leg == Leg::A && self.a_state == AState::Proceeding && request.method == Method::Bye {
            // §15: a caller may BYE an early dialog; it means what CANCEL means.
            reply(env, 200, None, None);
            self.on_cancel(now, env);
            return;
        }
        if self.leg_closed(leg) && request.method != Method::Bye {
            // This dialog is over (Vigil's BYE is out, or the peer's came): only
            // a crossing BYE is still answered on it (§15.1.2).
            reply(env, 481, None, None);
            return;
        }
        let Some(dialog) = self.leg_mut(leg).dialog.as_mut() else {
            reply(env, 481, None, None);
            return;
        };
        if !dialog.accept_remote_cseq(&request) {
            reply(env, 500, Some("CSeq Out Of Order"), None);
            return;
        }
        match request.method {
            Method::Bye => {
                reply(env, 200, None, None);
                self.on_bye(now, leg, env);
            }
            Method::Invite | Method::Update => {
                let busy_from = self
                    .relays
                    .iter()
                    .find(|r| matches!(r.request.method, Method::Invite | Method::Update))
                    .map(|r| r.from)
                    .or(self.pending_2xx.as_ref().map(|p| p.leg));
                let refreshing = |l: Leg| {
                    self.leg(l)
                        .session
                        .as_ref()
                        .is_some_and(|s| s.in_flight().is_some())
                };
                // Vigil's own refresh on this dialog crosses the request; one on
                // the other leg only matters if the request must go there.
                let glare =
                    refreshing(leg) || (self.sdp_changed(leg, &request) && refreshing(leg.other()));
                match busy_from {
                    // §14.2: a second INVITE from the same side before the first's
                    // final response gets 500 with Retry-After.
                    Some(from) if from == leg => reply(
                        env,
                        500,
                        Some("Previous Request Pending"),
                        Some((HeaderName::RetryAfter, "1")),
                    ),
                    // Glare with the other side's offer or Vigil's own refresh: 491
                    // (§14.2, RFC 3311 §5.2).
                    Some(_) => reply(env, 491, None, None),
                    None if glare => reply(env, 491, None, None),
                    None if self.leg(leg.other()).dialog.is_none() || self.ending.is_some() => {
                        reply(env, 491, None, Some((HeaderName::RetryAfter, "1")))
                    }
                    None => {
                        let negotiated = negotiate::as_uas(&request, &self.leg(leg).timer);
                        if let UasOutcome::TooSmall { min_se } = negotiated {
                            let min_se = min_se.to_string();
                            return reply(env, 422, None, Some((HeaderName::MinSe, &min_se)));
                        }
                        if let Some(d) = self.leg_mut(leg).dialog.as_mut() {
                            d.refresh_target(request.contact());
                        }
                        if self.sdp_changed(leg, &request) {
                            self.relay(now, leg, tx, request, Some(negotiated), env);
                        } else {
                            self.answer_refresh(now, leg, tx, request, negotiated, env);
                        }
                    }
                }
            }
            Method::Info | Method::Message | Method::Notify | Method::Options => {
                if self.leg(leg.other()).dialog.is_none() || self.ending.is_some() {
                    reply(
                        env,
                        500,
                        Some("Other Leg Not Connected"),
                        Some((HeaderName::RetryAfter, "1")),
                    );
                } else {
                    self.relay(now, leg, tx, request, None, env);
                }
            }
            // No reliable provisional is ever pending: Vigil does not offer 100rel.
            Method::Prack => reply(env, 481, None, None),
            Method::Extension(_) => reply(env, 501, None, None),
            _ => reply(env, 405, None, Some((HeaderName::Allow, ALLOWED_METHODS))),
        }
    }

    /// Whether `leg`'s dialog has ended: Vigil sent BYE on it or got one.
    fn leg_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::A => self.a_state == AState::Done,
            Leg::B => self.b_state == super::BState::Done,
        }
    }

    /// True if a re-INVITE or UPDATE carries an SDP this leg's peer did not send
    /// before: a real offer for the other side, not a session refresh.
    fn sdp_changed(&self, leg: Leg, request: &Request) -> bool {
        match Body::of(&request.headers, &request.body) {
            None => false,
            Some(body) => self.leg(leg).remote_body.as_ref() != Some(&body),
        }
    }

    /// A session refresh from the peer (RFC 4028 §8–9): answered here, with the
    /// session interval and, for a re-INVITE, the SDP this leg already has. It is
    /// proof of life and may renegotiate the leg's timer.
    fn answer_refresh(
        &mut self,
        now: Instant,
        leg: Leg,
        tx: ServerTxId,
        request: Request,
        negotiated: UasOutcome,
        env: &mut Env<'_>,
    ) {
        let info = self.leg(leg);
        let mut ok = local_response(&request, 200, None, None, &env.settings.user_agent);
        ok.headers
            .push(HeaderName::Contact, format!("<{}>", info.contact()));
        ok.headers.push(HeaderName::Allow, ALLOWED_METHODS);
        ok.headers.push(HeaderName::Supported, "timer");
        if request.method == Method::Invite
            && let Some(body) = &info.local_body
        {
            body.apply(&mut ok.headers, &mut ok.body);
        }
        self.prove_alive_as_uas(now, leg, negotiated, &mut ok);
        tracing::debug!(call_id = %self.a_call_id, ?leg, method = %request.method, "session refreshed by the peer");
        if request.method == Method::Invite {
            let bytes = ok.encode();
            env.tx.respond(now, tx, ok);
            self.arm_2xx(
                now,
                Pending2xx {
                    leg,
                    bytes,
                    interval: env.settings.timers.t1,
                    invite_seq: request.cseq.seq,
                    ack_other_seq: None,
                },
                env,
            );
        } else {
            env.tx.respond(now, tx, ok);
        }
    }

    /// A re-INVITE or UPDATE from `leg`'s peer is being answered 2xx: the leg's
    /// timer restarts with what was negotiated (a new Session-Expires replaces the
    /// old timer), and the answer says so.
    fn prove_alive_as_uas(
        &mut self,
        now: Instant,
        leg: Leg,
        negotiated: UasOutcome,
        answer: &mut Response,
    ) {
        let info = self.leg_mut(leg);
        match negotiated {
            UasOutcome::Timer(agreed) => {
                uas_answer_headers(&agreed, &mut answer.headers);
                match info.session.as_mut() {
                    Some(s) => s.proof_of_life(now, Some(agreed)),
                    None => info.session = Some(SessionLeg::start(now, agreed, info.timer)),
                }
            }
            UasOutcome::NoTimer | UasOutcome::TooSmall { .. } => {
                if let Some(s) = info.session.as_mut() {
                    s.proof_of_life(now, None);
                }
            }
        }
    }

    pub(super) fn on_bye(&mut self, now: Instant, leg: Leg, env: &mut Env<'_>) {
        let (reason, by) = match leg {
            Leg::A => (EndReason::CallerBye, EndedBy::Caller),
            Leg::B => (EndReason::CalleeBye, EndedBy::Callee),
        };
        self.end(now, reason, by, None, env);
        self.abandon_relays(now, env);
        match leg {
            Leg::A => {
                self.a_state = AState::Done;
                self.clear_pending_2xx_on(Leg::A);
                self.hang_up_b(now, env);
            }
            Leg::B => {
                self.b_state = super::BState::Done;
                self.hang_up_a(now, false, env);
            }
        }
    }

    pub(super) fn clear_pending_2xx_on(&mut self, leg: Leg) {
        if self.pending_2xx.as_ref().is_some_and(|p| p.leg == leg) {
            self.pending_2xx = None;
            self.timers.clear(CallTimer::Retransmit2xx);
            self.timers.clear(CallTimer::AckWait);
        }
    }

    /// Answers every relayed request still waiting: the call is going away.
    pub(super) fn abandon_relays(&mut self, now: Instant, env: &mut Env<'_>) {
        for relay in self.relays.drain(..) {
            let tag = (relay.from == Leg::A).then_some(self.a_local_tag.as_str());
            let r = local_response(&relay.request, 487, None, tag, &env.settings.user_agent);
            env.tx.respond(now, relay.server_tx, r);
        }
    }

    /// Sends a copy of `request` on the other leg. A re-INVITE or UPDATE copy
    /// carries the other leg's own session-timer headers: it refreshes that leg
    /// too.
    fn relay(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        negotiated: Option<UasOutcome>,
        env: &mut Env<'_>,
    ) {
        let to = from.other();
        let id = self.next_relay;
        self.next_relay += 1;
        if negotiated.is_some() {
            self.note_body(from, &request.headers, &request.body);
        }
        let info = self.leg_mut(to);
        let advertised = info.advertised;
        let session = info.session.as_ref().map(|s| s.agreed());
        let timer = info.timer;
        let Some(dialog) = info.dialog.as_mut() else {
            return;
        };
        let mut copy = dialog.new_request(
            request.method.clone(),
            our_via(advertised, env.ids.branch()),
        );
        relay_request_payload(&request, &mut copy);
        if negotiated.is_some()
            && let Some(agreed) = session
        {
            uac_offer_headers(
                agreed.interval,
                &timer,
                agreed.refresher == Who::Vigil,
                &mut copy.headers,
            );
        }
        let sent_seq = copy.cseq.seq;
        let path = info.next_hop();
        env.tx.send_request(
            now,
            copy,
            path,
            TxOwner {
                call: self.key,
                purpose: Purpose::Relay(id),
            },
        );
        self.relays.push(Relay {
            id,
            from,
            server_tx: tx,
            request,
            sent_seq,
            negotiated,
        });
    }

    pub(super) fn on_relay_response(
        &mut self,
        now: Instant,
        id: u32,
        response: Response,
        env: &mut Env<'_>,
    ) {
        if response.status < 200 {
            return; // the transaction layer already sent 100 on the other side
        }
        let Some(pos) = self.relays.iter().position(|r| r.id == id) else {
            // Late: the relay was abandoned. A 2xx to a re-INVITE still needs its ACK.
            if response.is_success() && response.cseq.method == Method::Invite {
                let leg = if response.call_id == self.b_call_id {
                    Leg::B
                } else {
                    Leg::A
                };
                self.send_ack(now, leg, response.cseq.seq, None, env);
            }
            return;
        };
        let relay = self.relays.remove(pos);
        let to = relay.from.other();
        let offer = matches!(relay.request.method, Method::Invite | Method::Update);
        let contact = self.leg(relay.from).contact();
        let mut r = relay_response(
            &relay.request,
            &response,
            None,
            &contact,
            &env.settings.user_agent,
        );
        if response.is_success() && offer {
            // Any 2xx to a re-INVITE or UPDATE proves the answering peer alive.
            let info = self.leg_mut(to);
            if let Some(d) = info.dialog.as_mut() {
                d.refresh_target(response.contact());
            }
            if let Some(s) = info.session.as_mut() {
                let renegotiated = negotiate::as_uac(&response, s.agreed().interval, &info.timer);
                s.proof_of_life(now, renegotiated);
            }
            self.note_body(to, &response.headers, &response.body);
            if let Some(negotiated) = relay.negotiated {
                r.headers.push(HeaderName::Supported, "timer");
                self.prove_alive_as_uas(now, relay.from, negotiated, &mut r);
            }
        }
        if response.is_success() && relay.request.method == Method::Invite {
            let bytes = r.encode();
            env.tx.respond(now, relay.server_tx, r);
            self.arm_2xx(
                now,
                Pending2xx {
                    leg: relay.from,
                    bytes,
                    interval: env.settings.timers.t1,
                    invite_seq: relay.request.cseq.seq,
                    ack_other_seq: Some(relay.sent_seq),
                },
                env,
            );
        } else {
            env.tx.respond(now, relay.server_tx, r);
        }
    }
}
