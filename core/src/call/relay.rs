//! A request crossing from one leg to the other (a re-INVITE or UPDATE with a new
//! SDP, INFO, MESSAGE, NOTIFY, OPTIONS) and its answer coming back: the copy is
//! a new request in the other leg's dialog; its final answer answers the
//! original, and a 2xx to a re-INVITE or UPDATE proves both peers alive.

use std::time::Instant;

use super::build::{relay_request_payload, relay_response};
use super::{Call, Env, Leg, Purpose};
use crate::session_timer::negotiate::uac_offer_headers;
use crate::session_timer::{Refresher, UasOutcome};
use crate::sip::local_response;
use crate::sip::{HeaderName, Method, Reply, Request, Response};
use crate::transaction::ServerTxId;

/// A request relayed from one leg to the other, waiting for its answer.
pub struct Relay {
    id: u32,
    /// The leg the request came from (where the answer goes).
    pub(super) from: Leg,
    server_tx: ServerTxId,
    pub(super) request: Request,
    /// CSeq of the copy sent on the other leg.
    sent_seq: u32,
    /// For a re-INVITE or UPDATE: the session timer negotiated with its sender.
    negotiated: Option<UasOutcome>,
}

/// The call's relayed requests still waiting for their answers.
#[derive(Default)]
pub(super) struct Relays {
    waiting: Vec<Relay>,
    next_id: u32,
}

impl Relays {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The leg an offer (re-INVITE or UPDATE) waiting for its answer came from.
    pub fn offer_from(&self) -> Option<Leg> {
        self.waiting
            .iter()
            .find(|r| matches!(r.request.method, Method::Invite | Method::Update))
            .map(|r| r.from)
    }

    /// The copy of relay `id` was sent again as CSeq `seq` (with
    /// credentials): a 2xx to it is ACKed with that CSeq.
    pub fn resent(&mut self, id: u32, seq: u32) {
        if let Some(r) = self.waiting.iter_mut().find(|r| r.id == id) {
            r.sent_seq = seq;
        }
    }

    /// A fresh id for the next relayed request.
    fn allocate(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The copy of `request` (from `from`, on server transaction `tx`) went
    /// out on the other leg as CSeq `sent_seq`: its answer is awaited.
    fn wait(
        &mut self,
        id: u32,
        (from, server_tx): (Leg, ServerTxId),
        request: Request,
        sent_seq: u32,
        negotiated: Option<UasOutcome>,
    ) {
        self.waiting.push(Relay {
            id,
            from,
            server_tx,
            request,
            sent_seq,
            negotiated,
        });
    }

    fn take(&mut self, id: u32) -> Option<Relay> {
        let pos = self.waiting.iter().position(|r| r.id == id)?;
        Some(self.waiting.remove(pos))
    }
}

impl Call {
    /// Sends a copy of `request` on the other leg. A re-INVITE or UPDATE copy
    /// carries the other leg's own session-timer headers: it refreshes that leg
    /// too. A relayed call's new offer goes through rtpengine first.
    pub(super) fn relay(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        negotiated: Option<UasOutcome>,
        env: &mut Env<'_>,
    ) {
        let Some(negotiated_offer) = negotiated else {
            return self.relay_now(now, from, tx, request, None, env);
        };
        if let Some((tx, request)) =
            self.reoffer(now, from, tx, request, Some(negotiated_offer), env)
        {
            self.relay_now(now, from, tx, request, negotiated, env);
        }
    }

    /// Relays `request` as it is (its SDP already rtpengine's, if relayed).
    pub(super) fn relay_now(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        negotiated: Option<UasOutcome>,
        env: &mut Env<'_>,
    ) {
        let id = self.relays.allocate();
        if negotiated.is_some() {
            self.note_body(from, &request.headers, &request.body);
        }
        let sent = self.leg_mut(from.other()).send_relayed(
            now,
            request.method.clone(),
            id,
            env,
            |copy, session, timer| {
                relay_request_payload(&request, copy);
                if negotiated.is_some()
                    && let Some(agreed) = session.map(|s| s.agreed())
                {
                    uac_offer_headers(
                        agreed.interval,
                        timer,
                        agreed.refresher == Refresher::Vigil,
                        &mut copy.headers,
                    );
                }
            },
        );
        if let Some(sent_seq) = sent {
            self.relays
                .wait(id, (from, tx), request, sent_seq, negotiated);
        }
    }

    /// An UPDATE in an early dialog (RFC 3311 §5.1: codecs may change before
    /// the answer): its CSeq is checked in the sender's early dialog and a
    /// copy goes in the other leg's (the callee's latest); its answer comes
    /// back as any relayed request's. No session-timer headers travel: no
    /// session is refreshed before the answer. 481 when the sender's early
    /// dialog is unknown, 500 with Retry-After when the other side has none
    /// yet, 491 while another offer is in flight (§5.2).
    pub(super) fn relay_early_update(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        env: &mut Env<'_>,
    ) {
        let ua = env.settings.user_agent.clone();
        let reply = |env: &mut Env<'_>, answer: Reply| {
            env.tx.respond(now, tx, answer.to(&request, None, &ua));
        };
        let accepted = match from {
            _ if self.ending.is_some() => None,
            Leg::A => self.a.early_dialog_mut(),
            Leg::B => self.b.early_dialog_mut(&request),
        }
        .map(|d| d.accept_remote_cseq(&request));
        match accepted {
            None => return reply(env, Reply::new(481)),
            Some(false) => return reply(env, Reply::new(500).reason("CSeq Out Of Order")),
            Some(true) => {}
        }
        match self.relays.offer_from().or_else(|| self.media_offer_from()) {
            Some(busy) if busy == from => {
                return reply(
                    env,
                    Reply::new(500)
                        .reason("Previous Request Pending")
                        .retry_after(1),
                );
            }
            Some(_) => return reply(env, Reply::new(491)),
            None => {}
        }
        // A relayed call's new offer is anchored like one after the answer.
        if let Some((tx, request)) = self.reoffer(now, from, tx, request, None, env) {
            self.send_early_update(now, from, tx, request, env);
        }
    }

    /// Sends the copy of an early UPDATE (its SDP already rtpengine's, if
    /// relayed) in the other leg's early dialog.
    pub(super) fn send_early_update(
        &mut self,
        now: Instant,
        from: Leg,
        tx: ServerTxId,
        request: Request,
        env: &mut Env<'_>,
    ) {
        let copy = match from.other() {
            Leg::A => self.a.early_request(Method::Update, env),
            Leg::B => self.b.early_request(Method::Update, env),
        };
        let Some((mut copy, path)) = copy else {
            let refusal = Reply::new(500)
                .reason("Other Leg Not Connected")
                .retry_after(1)
                .to(&request, None, &env.settings.user_agent);
            return env.tx.respond(now, tx, refusal);
        };
        relay_request_payload(&request, &mut copy);
        if !request.body.is_empty() {
            self.note_body(from, &request.headers, &request.body);
        }
        let id = self.relays.allocate();
        let sent_seq = copy.cseq.seq;
        env.tx
            .send_request(now, copy, path, self.owner(Purpose::Relay(id)));
        self.relays.wait(id, (from, tx), request, sent_seq, None);
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
        let Some(relay) = self.relays.take(id) else {
            // Late: the relay was abandoned. A 2xx to a re-INVITE still needs its ACK.
            if response.is_success() && response.cseq.method == Method::Invite {
                let leg = if response.call_id == self.b.call_id() {
                    Leg::B
                } else {
                    Leg::A
                };
                self.leg_mut(leg)
                    .send_ack(now, response.cseq.seq, None, env);
            }
            return;
        };
        let offer = matches!(relay.request.method, Method::Invite | Method::Update);
        if response.is_success() && offer {
            if let Some((relay, response)) = self.reanswer(now, relay, response, env) {
                self.answer_relay(now, relay, response, env);
            }
            return;
        }
        self.answer_relay(now, relay, response, env);
    }

    /// Sends the answer to a relayed request back to where it came from (its
    /// SDP already rtpengine's, if relayed).
    pub(super) fn answer_relay(
        &mut self,
        now: Instant,
        relay: Relay,
        response: Response,
        env: &mut Env<'_>,
    ) {
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
            self.leg_mut(to).prove_alive_as_uac(now, &response);
            self.note_body(to, &response.headers, &response.body);
            if let Some(negotiated) = relay.negotiated {
                r.headers.push(HeaderName::Supported, "timer");
                self.leg_mut(relay.from)
                    .prove_alive_as_uas(now, negotiated, &mut r);
            }
        }
        if response.is_success() && relay.request.method == Method::Invite {
            self.leg_mut(relay.from)
                .send_2xx(now, relay.server_tx, r, Some(relay.sent_seq), env);
        } else {
            env.tx.respond(now, relay.server_tx, r);
        }
    }

    /// A relayed request got no answer on the other leg: its sender gets 408.
    pub(super) fn on_relay_timeout(&mut self, now: Instant, id: u32, env: &mut Env<'_>) {
        if let Some(relay) = self.relays.take(id) {
            let r = local_response(&relay.request, 408, None, None, &env.settings.user_agent);
            env.tx.respond(now, relay.server_tx, r);
        }
    }

    /// Answers every relayed request still waiting: the call is going away.
    pub(super) fn abandon_relays(&mut self, now: Instant, env: &mut Env<'_>) {
        for relay in self.relays.waiting.drain(..) {
            let tag = (relay.from == Leg::A).then_some(self.a.local_tag());
            let r = local_response(&relay.request, 487, None, tag, &env.settings.user_agent);
            env.tx.respond(now, relay.server_tx, r);
        }
    }
}
