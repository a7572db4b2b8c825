//! Requests inside a call's dialogs: BYE ends the call; re-INVITE and UPDATE are
//! session refreshes (answered locally when the SDP did not change) or offers
//! (relayed); INFO, MESSAGE, NOTIFY and OPTIONS are relayed.

use std::time::Instant;

use super::{AState, BState, Call, Env, Leg, Purpose};
use crate::session_timer::{UasOutcome, negotiate};
use crate::sip::local_response;
use crate::sip::{ALLOWED_METHODS, HeaderName, Method, Reply, Request, Response};
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
        let reply = |env: &mut Env<'_>, answer: Reply| {
            env.tx.respond(now, tx, answer.to(&request, None, &ua));
        };
        if leg == Leg::A && self.a.state() == AState::Proceeding && request.method == Method::Bye {
            // §15: a caller may BYE an early dialog; it means what CANCEL means.
            reply(env, Reply::new(200));
            self.on_cancel(now, env);
            return;
        }
        if leg == Leg::A && request.method == Method::Prack {
            // RFC 3262 §3: for a reliable provisional of the caller's INVITE,
            // early dialog or not.
            return self.on_caller_prack(now, tx, request, env);
        }
        if self.leg_closed(leg) && request.method != Method::Bye {
            // This dialog is over (Vigil's BYE is out, or the peer's came): only
            // a crossing BYE is still answered on it (§15.1.2).
            reply(env, Reply::new(481));
            return;
        }
        if request.method == Method::Update && !self.leg(leg).is_established() {
            // RFC 3311 §5.1: an UPDATE in the early dialog, before the answer.
            return self.relay_early_update(now, leg, tx, request, env);
        }
        let Some(dialog) = self.leg_mut(leg).dialog_mut() else {
            reply(env, Reply::new(481));
            return;
        };
        if !dialog.accept_remote_cseq(&request) {
            reply(env, Reply::new(500).reason("CSeq Out Of Order"));
            return;
        }
        if let Some(from) = env.tx.reply_path(tx) {
            self.leg_mut(leg).follow_flow(from);
        }
        match request.method {
            Method::Bye => {
                reply(env, Reply::new(200));
                self.on_bye(now, leg, env);
            }
            Method::Invite | Method::Update => {
                let busy_from = self
                    .relays
                    .offer_from()
                    .or_else(|| self.media_offer_from())
                    .or_else(|| {
                        [Leg::A, Leg::B]
                            .into_iter()
                            .find(|&l| self.leg(l).awaits_ack())
                    });
                // Vigil's own refresh on this dialog crosses the request; one on
                // the other leg only matters if the request must go there.
                let changed = self.leg(leg).sdp_changed(&request);
                let glare =
                    self.leg(leg).refreshing() || (changed && self.leg(leg.other()).refreshing());
                match busy_from {
                    // §14.2: a second INVITE from the same side before the first's
                    // final response gets 500 with Retry-After.
                    Some(from) if from == leg => reply(
                        env,
                        Reply::new(500)
                            .reason("Previous Request Pending")
                            .retry_after(1),
                    ),
                    // Glare with the other side's offer or Vigil's own refresh: 491
                    // (§14.2, RFC 3311 §5.2).
                    Some(_) => reply(env, Reply::new(491)),
                    None if glare => reply(env, Reply::new(491)),
                    None if !self.leg(leg.other()).is_established() || self.ending.is_some() => {
                        reply(env, Reply::new(491).retry_after(1))
                    }
                    None => {
                        let negotiated = negotiate::as_uas(&request, self.leg(leg).timer_config());
                        if let UasOutcome::TooSmall { min_se } = negotiated {
                            let too_small =
                                Reply::new(422).with_header(HeaderName::MinSe, min_se.to_string());
                            return reply(env, too_small);
                        }
                        self.leg_mut(leg).refresh_target(request.contact());
                        if changed {
                            self.relay(now, leg, tx, request, Some(negotiated), env);
                        } else {
                            self.answer_refresh(now, leg, tx, request, negotiated, env);
                        }
                    }
                }
            }
            Method::Info | Method::Message | Method::Notify | Method::Options => {
                if !self.leg(leg.other()).is_established() || self.ending.is_some() {
                    reply(
                        env,
                        Reply::new(500)
                            .reason("Other Leg Not Connected")
                            .retry_after(1),
                    );
                } else {
                    self.relay(now, leg, tx, request, None, env);
                }
            }
            // Vigil sends the callee no reliable provisional to PRACK.
            Method::Prack => reply(env, Reply::new(481)),
            Method::Extension(_) => reply(env, Reply::new(501)),
            _ => reply(
                env,
                Reply::new(405).with_header(HeaderName::Allow, ALLOWED_METHODS),
            ),
        }
    }

    /// Whether `leg`'s dialog has ended: Vigil sent BYE on it or got one.
    fn leg_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::A => self.a.state() == AState::Done,
            Leg::B => self.b.state() == BState::Done,
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
        let side = self.leg_mut(leg);
        let mut ok: Response = local_response(&request, 200, None, None, &env.settings.user_agent);
        ok.headers
            .push(HeaderName::Contact, format!("<{}>", side.contact()));
        ok.headers.push(HeaderName::Allow, ALLOWED_METHODS);
        ok.headers.push(HeaderName::Supported, "timer");
        if request.method == Method::Invite
            && let Some(body) = side.local_body()
        {
            body.apply(&mut ok.headers, &mut ok.body);
        }
        side.prove_alive_as_uas(now, negotiated, &mut ok);
        tracing::debug!(call_id = %self.a.call_id(), ?leg, method = %request.method, "session refreshed by the peer");
        let side = self.leg_mut(leg);
        if request.method == Method::Invite {
            side.send_2xx(now, tx, ok, None, env);
        } else {
            env.tx.respond(now, tx, ok);
        }
    }
}
