//! The A leg: towards the caller, where Vigil is the UAS of the INVITE
//! (RFC 3261 §13.3). It keeps the caller's INVITE until the call is set up
//! (every answer to the caller is built from it), Vigil's To tag, the caller's
//! session-timer offer as negotiated on arrival, and the INVITE's progress.

use std::time::Instant;

use super::CallLeg;
use super::prack::{HeldAnswer, Outgoing, PrackMatch, Released, Reliability, ReliableUas};
use crate::call::build::{Body, relay_response};
use crate::call::{CallKey, Env, Inbound, Purpose, TxOwner};
use crate::dialog::Dialog;
use crate::policy::Leg;
use crate::session_timer::UasOutcome;
use crate::session_timer::negotiate::uas_answer_headers;
use crate::sip::local_response;
use crate::sip::{HeaderName, Request, Response};
use crate::transaction::ServerTxId;

/// The A leg's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AState {
    /// INVITE received, no final response yet.
    Proceeding,
    /// 2xx sent, waiting for its ACK.
    Answered,
    Confirmed,
    /// Final failure sent, or BYE exchanged: nothing more to do.
    Done,
}

/// The caller's side of a call.
pub struct ALeg {
    pub leg: CallLeg,
    state: AState,
    /// The caller's INVITE, kept until both legs are confirmed.
    invite: Option<Box<Request>>,
    invite_tx: ServerTxId,
    /// The caller's Call-ID and From tag (with `local_tag`, the dialog's
    /// identifier) for the call's whole life.
    call_id: Box<str>,
    from_tag: Box<str>,
    /// The To tag Vigil uses on this leg (also for the 200 to a CANCEL, §9.2).
    local_tag: Box<str>,
    /// The session timer as negotiated on the INVITE.
    negotiated: UasOutcome,
    /// The callee hung up before the caller ACKed Vigil's 2xx: BYE the caller
    /// once it does (§15).
    bye_after_ack: bool,
    /// Reliable provisionals towards a caller that takes them (RFC 3262);
    /// `None`: provisionals go unreliably. Boxed: most callers take none.
    reliable: Option<Box<ReliableUas>>,
    /// Vigil's 2xx went to the caller (not merely held for a PRACK).
    answered: bool,
    /// The early dialog with the caller, once a request went in it before
    /// the answer (an UPDATE, RFC 3311); the confirmed dialog carries on
    /// its CSeq numbers.
    early: Option<Box<Dialog>>,
}

/// What a PRACK from the caller brought.
pub enum CallerPrack {
    /// It acknowledged the outstanding reliable provisional (answered 200);
    /// its body, if any (the answer to an offer in that provisional).
    Acknowledged(Option<Body>),
    /// It matched nothing (answered 481).
    Unknown,
}

impl ALeg {
    /// The caller's INVITE became a call: its server transaction now belongs
    /// to call `key`.
    pub fn new(key: CallKey, inbound: Inbound, local_tag: String, env: &mut Env<'_>) -> ALeg {
        env.tx.set_server_owner(
            inbound.tx,
            TxOwner {
                call: key,
                purpose: Purpose::Teardown,
            },
        );
        let invite = inbound.invite;
        let reliable = inbound
            .prack
            .enabled()
            .then(|| Reliability::of(&invite))
            .flatten()
            .map(|r| {
                // RFC 3262 §3: the first RSeq is random, below 2**31.
                let first = u32::try_from(env.ids.below(1 << 30)).unwrap_or(0) + 1;
                Box::new(ReliableUas::new(r, invite.cseq.seq, first))
            });
        let mut leg = CallLeg::new(key, Leg::A, inbound.path, inbound.advertised, inbound.timer);
        leg.learn_allow(&invite.headers);
        if let Some(body) = Body::of(&invite.headers, &invite.body) {
            leg.set_remote_body(body);
        }
        ALeg {
            leg,
            state: AState::Proceeding,
            invite_tx: inbound.tx,
            call_id: invite.call_id.as_str().into(),
            from_tag: invite.from.tag().unwrap_or_default().into(),
            local_tag: local_tag.into_boxed_str(),
            negotiated: inbound.negotiated,
            bye_after_ack: false,
            reliable,
            answered: false,
            early: None,
            invite: Some(Box::new(invite)),
        }
    }

    /// A confirmed A leg back from the state store.
    pub fn restore(leg: CallLeg) -> ALeg {
        let texts = leg.dialog().map(|d| {
            (
                Box::from(d.call_id()),
                Box::from(d.remote_tag()),
                Box::from(d.local_tag()),
            )
        });
        let (call_id, from_tag, local_tag) = texts.unwrap_or_default();
        let negotiated = leg
            .session()
            .map_or(UasOutcome::NoTimer, |s| UasOutcome::Timer(s.agreed()));
        ALeg {
            leg,
            state: AState::Confirmed,
            invite: None,
            invite_tx: ServerTxId::GONE,
            call_id,
            from_tag,
            local_tag,
            negotiated,
            bye_after_ack: false,
            // Confirmed: nothing provisional is left to acknowledge.
            reliable: None,
            answered: true,
            early: None,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn caller_tag(&self) -> &str {
        &self.from_tag
    }

    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    pub fn state(&self) -> AState {
        self.state
    }

    pub fn negotiated(&self) -> UasOutcome {
        self.negotiated
    }

    pub fn invite(&self) -> Option<&Request> {
        self.invite.as_deref()
    }

    /// Both legs are confirmed: the INVITE (most of a call's memory) goes.
    pub fn forget_invite(&mut self) {
        self.invite = None;
    }

    /// Whether `request` names this leg's dialog (RFC 3261 §12.2.2): To tag
    /// Vigil's, From tag the caller's.
    pub fn owns(&self, request: &Request) -> bool {
        request.to.tag() == Some(&*self.local_tag)
            && request.from.tag().unwrap_or_default() == &*self.from_tag
    }

    /// The callee's response to the B-leg INVITE as the caller gets it, while
    /// the caller's INVITE is still unanswered (so still held).
    pub fn relayed(&self, response: &Response, env: &Env<'_>) -> Option<Response> {
        Some(relay_response(
            self.invite.as_deref()?,
            response,
            Some(&self.local_tag),
            &self.leg.contact(),
            &env.settings.user_agent,
        ))
    }

    /// Sends the caller `response` (a provisional, or a final one the callee
    /// or Vigil chose) on its INVITE. A final response ends the leg. A
    /// provisional goes reliably to a caller that takes them (RFC 3262), or
    /// waits for the PRACK of the one before.
    pub fn respond(&mut self, now: Instant, response: Response, env: &mut Env<'_>) {
        if response.status >= 200 {
            self.state = AState::Done;
            if let Some(r) = self.reliable.as_mut() {
                r.clear();
            }
        } else if let Some(r) = self.reliable.as_mut() {
            let out = r.provisional(response);
            return self.send_provisional(now, out, env);
        }
        env.tx.respond(now, self.invite_tx, response);
    }

    fn send_provisional(&mut self, now: Instant, out: Outgoing, env: &mut Env<'_>) {
        match out {
            Outgoing::Reliable(r) => env.tx.respond_reliably(now, self.invite_tx, r),
            Outgoing::Plain(r) => env.tx.respond(now, self.invite_tx, r),
            Outgoing::Held => {}
        }
    }

    /// Whether the caller got Vigil's 2xx.
    pub fn was_answered(&self) -> bool {
        self.answered
    }

    /// The early dialog with the caller (RFC 3311: UPDATE before the
    /// answer), made on first use; `None` once answered or ended.
    pub fn early_dialog_mut(&mut self) -> Option<&mut Dialog> {
        if self.state != AState::Proceeding {
            return None;
        }
        if self.early.is_none() {
            let invite = self.invite.as_deref()?;
            self.early = Some(Box::new(Dialog::as_uas(
                invite,
                self.local_tag.to_string(),
                self.leg.contact(),
            )));
        }
        self.early.as_deref_mut()
    }

    /// A request in the early dialog with the caller (an UPDATE from the
    /// callee), and the path it takes.
    pub fn early_request(
        &mut self,
        method: crate::sip::Method,
        env: &mut Env<'_>,
    ) -> Option<(Request, crate::transaction::Path)> {
        let via = self.leg.via(env);
        let path = self.leg.path();
        let dialog = self.early_dialog_mut()?;
        let request = dialog.new_request(method, via)?;
        let path = if path.proto.is_reliable() {
            path
        } else {
            path.to(dialog.next_hop(path.remote))
        };
        Some((request, path))
    }

    /// Whether the caller gets provisionals with an SDP reliably, so that
    /// its PRACK can carry the answer to an offer in one (a late-offer call).
    pub fn takes_reliable_sdp(&self) -> bool {
        self.reliable.is_some()
    }

    /// A PRACK from the caller (RFC 3262 §3): answered 200 when it names the
    /// outstanding reliable provisional, which then stops being resent and
    /// lets what was held go (the next provisional, the 2xx); 481 otherwise.
    pub fn on_prack(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        prack: &Request,
        env: &mut Env<'_>,
    ) -> CallerPrack {
        let ua = &env.settings.user_agent;
        // After the 2xx too: §3 wants an unacknowledged one still PRACKable.
        let matched = match self.reliable.as_mut() {
            Some(r) => r.on_prack(prack),
            None => PrackMatch::Unknown,
        };
        if let PrackMatch::Unknown = matched {
            env.tx
                .respond(now, tx, local_response(prack, 481, None, None, ua));
            return CallerPrack::Unknown;
        }
        env.tx
            .respond(now, tx, local_response(prack, 200, None, None, ua));
        env.tx.provisional_acknowledged(self.invite_tx);
        while let Some(next) = self.reliable.as_mut().and_then(|r| r.next_released()) {
            match next {
                Released::Provisional(out) => self.send_provisional(now, out, env),
                Released::Answer(a) => self.send_answer(now, a, env),
            }
        }
        CallerPrack::Acknowledged(Body::of(&prack.headers, &prack.body))
    }

    /// Answers the caller with the callee's 2xx: Vigil's tag and Contact, its
    /// own session-timer answer (RFC 4028 §9), retransmitted until ACKed; the
    /// A dialog exists from now on. `b_invite_seq`: the B-leg INVITE to ACK
    /// when the caller ACKs.
    pub fn answer(
        &mut self,
        now: Instant,
        callee_ok: &Response,
        b_invite_seq: u32,
        env: &mut Env<'_>,
    ) {
        let Some(mut ok) = self.relayed(callee_ok, env) else {
            return;
        };
        ok.headers.push(HeaderName::Supported, "timer");
        if let UasOutcome::Timer(agreed) = self.negotiated {
            uas_answer_headers(&agreed, &mut ok.headers);
        }
        let answer = HeldAnswer { ok, b_invite_seq };
        let answer = match self.reliable.as_mut() {
            // RFC 3262 §3: not before the PRACK of a reliable provisional
            // with an SDP.
            Some(r) => r.answer(answer),
            None => Some(answer),
        };
        if let Some(answer) = answer {
            self.send_answer(now, answer, env);
        }
    }

    fn send_answer(&mut self, now: Instant, answer: HeldAnswer, env: &mut Env<'_>) {
        if self.state != AState::Proceeding {
            return;
        }
        if let Some(invite) = self.invite.as_deref() {
            let mut dialog = Dialog::as_uas(invite, self.local_tag.to_string(), self.leg.contact());
            if let Some(early) = self.early.take() {
                dialog.continue_from(&early);
            }
            self.leg.establish(dialog);
        }
        self.state = AState::Answered;
        self.answered = true;
        self.leg.send_2xx(
            now,
            self.invite_tx,
            answer.ok,
            Some(answer.b_invite_seq),
            env,
        );
    }

    /// Answers the caller's INVITE with a failure (before answer).
    pub fn fail(&mut self, now: Instant, status: u16, reason: Option<&str>, env: &mut Env<'_>) {
        if self.state != AState::Proceeding {
            return;
        }
        if let Some(invite) = self.invite.as_deref() {
            let r = local_response(
                invite,
                status,
                reason,
                Some(&self.local_tag),
                &env.settings.user_agent,
            );
            env.tx.respond(now, self.invite_tx, r);
        }
        if let Some(r) = self.reliable.as_mut() {
            r.clear();
        }
        self.state = AState::Done;
    }

    /// The caller's ACK for Vigil's 2xx to its INVITE arrived: the dialog is
    /// confirmed. True if Vigil owes the caller a BYE now (the callee hung up
    /// while the ACK was on its way).
    pub fn confirm(&mut self) -> bool {
        if self.state == AState::Answered {
            self.state = AState::Confirmed;
        }
        std::mem::take(&mut self.bye_after_ack)
    }

    /// Nothing more is sent on this leg: the caller hung up (its BYE is
    /// answered), or its INVITE got its final answer.
    pub fn close(&mut self) {
        self.state = AState::Done;
        self.leg.stop_2xx();
    }

    /// Ends the leg: BYE once confirmed. Before the caller's ACK, §15 says wait
    /// for it, unless `now_anyway` (shutdown, ACK timeout).
    pub fn hang_up(
        &mut self,
        now: Instant,
        now_anyway: bool,
        bye_reason: Option<&str>,
        env: &mut Env<'_>,
    ) {
        match self.state {
            // The callee's 2xx waits for the caller's PRACK (RFC 3262 §3):
            // the callee is gone, so the caller's INVITE fails instead.
            AState::Proceeding if self.reliable.as_ref().is_some_and(|r| r.holds_answer()) => {
                return self.fail(now, 480, Some("Callee Gone"), env);
            }
            AState::Proceeding => {}
            AState::Answered if !now_anyway => {
                self.bye_after_ack = true;
                return;
            }
            AState::Answered | AState::Confirmed => {
                self.leg.stop_2xx();
                self.leg.send_bye(now, bye_reason, env);
            }
            AState::Done => {}
        }
        self.state = AState::Done;
    }

    /// Sends the BYE a callee's early hang-up left owed, now that the caller
    /// has ACKed.
    pub fn send_owed_bye(&mut self, now: Instant, env: &mut Env<'_>) {
        self.leg.send_bye(now, None, env);
        self.state = AState::Done;
    }
}
