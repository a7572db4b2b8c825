//! One leg of a call: the dialog with one peer and what Vigil keeps of it —
//! where the peer is, its session timer (RFC 4028), the last SDP each way, the
//! last ACK Vigil sent (resent if the peer's 2xx is), and the 2xx Vigil
//! retransmits until the peer ACKs it (RFC 3261 §13.3.1.4).
//!
//! [`ALeg`] (towards the caller, Vigil is the INVITE's UAS) and [`BLeg`]
//! (towards the callee, Vigil is its UAC) add what their role needs. A leg
//! sends through the call's [`Env`], keeps its own timers, and reports what
//! happened; the call decides what crosses to the other leg.

mod a;
mod auth;
mod b;
mod prack;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use a::{ALeg, AState, CallerPrack};
pub use b::{BIdentity, BLeg, BState, BTimeout, ReliableIncoming};

use super::build::Body;
use super::persist::{SavedBody, SavedLeg};
use super::{CallKey, Env, Purpose, TxOwner};
use crate::config::SessionTimerConfig;
use crate::config::TrunkAuth;
use crate::dialog::Dialog;
use crate::metrics::Metrics;
use crate::policy::Leg;
use crate::session_timer::negotiate::{
    self, retry_after_422, uac_offer_headers, uas_answer_headers,
};
use crate::session_timer::{LegEvent, RefreshKind, SessionLeg, UasOutcome};
use crate::sip::{ALLOWED_METHODS, HeaderName, Headers, Method, Request, Response, SipUri, Via};
use crate::timer::Timeline;
use crate::timer_table;
use crate::transaction::{Path, ServerTxId};
use crate::uplink::auth::{authorize, is_challenge};
use auth::LegAuth;

timer_table!(
    /// Retransmit2xx/AckWait: Vigil's 2xx to an INVITE on this leg, until the
    /// peer's ACK (RFC 3261 §13.3.1.4). ForgetAck: the ACK Vigil keeps for the
    /// peer's 2xx retransmissions is no longer needed.
    AnswerTimers: AnswerTimer { Retransmit2xx, AckWait, ForgetAck }
);

/// A 2xx to an INVITE that Vigil retransmits until the ACK (§13.3.1.4).
struct Pending2xx {
    bytes: Vec<u8>,
    interval: Duration,
    invite_seq: u32,
    /// When the ACK arrives, the other leg's INVITE with this CSeq is ACKed
    /// (the 2xx came from there).
    ack_other_seq: Option<u32>,
}

/// What a leg's own timers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegTimeout {
    /// The peer never ACKed Vigil's 2xx: the call must end (§13.3.1.4).
    /// `ack_other_seq` is what the ACK would have confirmed on the other leg.
    AckTimeout { ack_other_seq: Option<u32> },
}

/// How the peer answered Vigil's session refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshAnswer {
    /// A provisional, or no session to refresh any more: nothing to do.
    Ignored,
    /// 2xx: the session is renewed.
    Refreshed,
    /// 491, or a 422 within limits: the leg tries again by itself.
    Retrying,
    /// 405 or 501 to UPDATE: the leg refreshes with re-INVITE from now on,
    /// and did so at once.
    SwitchedToReinvite,
    /// The dialog is gone (481, RFC 3261 §12.2.1.2): the session is over.
    DialogGone,
    /// Any other failure: the call's policy decides.
    Failed(u16),
}

/// The state Vigil keeps of one dialog with one peer.
pub struct CallLeg {
    /// The call this leg belongs to (the owner of its transactions).
    call: CallKey,
    side: Leg,
    /// Our socket and the peer's address as seen on the wire.
    path: Path,
    /// The address Vigil writes into Via and Contact on this leg.
    advertised: SocketAddr,
    dialog: Option<Dialog>,
    /// The last ACK sent for a 2xx on this leg, resent if the 2xx is.
    last_ack: Option<(u32, Vec<u8>)>,
    /// The session-timer settings of this leg's trunk.
    timer: SessionTimerConfig,
    /// The leg's session timer, once the call is answered (None: no timer).
    session: Option<SessionLeg>,
    /// The peer's `Allow` lists UPDATE (for `refresh_method: auto`).
    allows_update: bool,
    /// The last body Vigil sent this peer (re-sent by a re-INVITE refresh).
    local_body: Option<Body>,
    /// The last body this peer sent (an unchanged one is not relayed).
    remote_body: Option<Body>,
    /// Boxed: rarely set, and only for a moment.
    pending_2xx: Option<Box<Pending2xx>>,
    timers: AnswerTimers,
    /// The trunk's credentials and the requests a challenge may come back
    /// for; `None` (no cost) towards a peer that asks for none.
    auth: Option<Box<LegAuth>>,
}

impl CallLeg {
    /// What the state store keeps of this leg (an established one).
    pub fn save(&self, timeline: &Timeline) -> SavedLeg {
        SavedLeg {
            local: self.path.local,
            remote: self.path.remote,
            proto: self.path.proto,
            advertised: self.advertised,
            dialog: self.dialog.as_ref().map(Dialog::save).unwrap_or_default(),
            timer: self.timer,
            session: self.session.as_ref().map(|s| s.save(timeline)),
            allows_update: self.allows_update,
            local_body: self.local_body.as_ref().map(SavedBody::of),
            remote_body: self.remote_body.as_ref().map(SavedBody::of),
        }
    }

    /// The leg back from the store, at `now`.
    pub fn restore(
        call: CallKey,
        side: Leg,
        saved: &SavedLeg,
        now: Instant,
        timeline: &Timeline,
        auth: Option<Arc<TrunkAuth>>,
    ) -> CallLeg {
        let path = Path {
            local: saved.local,
            remote: saved.remote,
            proto: saved.proto,
        };
        let mut leg = CallLeg::new(call, side, path, saved.advertised, saved.timer);
        leg.dialog = Some(Dialog::restore(saved.dialog.clone()));
        leg.session = saved
            .session
            .as_ref()
            .map(|s| SessionLeg::restore(now, s, timeline));
        leg.allows_update = saved.allows_update;
        leg.local_body = saved.local_body.as_ref().map(SavedBody::body);
        leg.remote_body = saved.remote_body.as_ref().map(SavedBody::body);
        leg.set_auth(auth);
        leg
    }

    pub fn new(
        call: CallKey,
        side: Leg,
        path: Path,
        advertised: SocketAddr,
        timer: SessionTimerConfig,
    ) -> CallLeg {
        CallLeg {
            call,
            side,
            path,
            advertised,
            dialog: None,
            last_ack: None,
            timer,
            session: None,
            allows_update: false,
            local_body: None,
            remote_body: None,
            pending_2xx: None,
            timers: AnswerTimers::default(),
            auth: None,
        }
    }

    /// The trunk's `auth`: from now on the carrier's challenges to requests
    /// in this leg's dialog are answered.
    pub fn set_auth(&mut self, credentials: Option<Arc<TrunkAuth>>) {
        self.auth = credentials.map(|c| Box::new(LegAuth::new(c)));
    }

    /// A request of this leg may still be challenged: the call must wait
    /// for its answer before it is forgotten.
    pub fn awaits_challenge(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// Sends a request of this leg's dialog as `purpose`, kept for a
    /// challenge if the leg has credentials.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        request: Request,
        purpose: Purpose,
        env: &mut Env<'_>,
    ) {
        if let Some(auth) = self.auth.as_mut() {
            auth.remember(purpose, &request);
        }
        let path = self.next_hop();
        env.tx.send_request(now, request, path, self.owner(purpose));
    }

    /// A final response to this leg's request sent as `purpose`. A 401 or
    /// 407 that the trunk's credentials answer makes Vigil send the request
    /// again (next CSeq of the dialog, new branch) and returns its CSeq: the
    /// response is then no answer at all. `None`: the response stands (a
    /// second challenge fails the request with its status).
    pub fn answer_challenge(
        &mut self,
        now: Instant,
        purpose: Purpose,
        response: &Response,
        env: &mut Env<'_>,
    ) -> Option<u32> {
        let auth = self.auth.as_mut()?;
        let sent = auth.take(purpose, response)?;
        if !is_challenge(response.status) {
            return None;
        }
        let cnonce = env.ids.tag();
        let mut retry = match authorize(
            &sent,
            response,
            &auth.credentials,
            env.ids.branch(),
            &cnonce,
        ) {
            Ok(retry) => retry,
            Err(e) => {
                tracing::warn!(call_id = %response.call_id, method = %sent.method.as_str(), status = response.status, error = %e, "challenge not answered");
                return None;
            }
        };
        retry.cseq.seq = self.dialog.as_mut()?.take_seq();
        let seq = retry.cseq.seq;
        self.send_in_dialog(now, retry, purpose, env);
        Some(seq)
    }

    /// The request sent as `purpose` got no answer: nothing to authorize.
    pub fn forget_sent(&mut self, purpose: Purpose) {
        if let Some(auth) = self.auth.as_mut() {
            auth.forget(purpose);
        }
    }

    fn owner(&self, purpose: Purpose) -> TxOwner {
        TxOwner {
            call: self.call,
            purpose,
        }
    }

    /// Vigil's Contact on this leg (with its transport, when not UDP).
    pub fn contact(&self) -> SipUri {
        SipUri::for_socket_over(None, self.advertised, self.path.proto)
    }

    /// The Via of a request Vigil sends on this leg: its transport, its
    /// advertised address, a new branch.
    pub fn via(&self, env: &mut Env<'_>) -> Via {
        Via::ours_over(self.path.proto, self.advertised, env.ids.branch())
    }

    pub fn path(&self) -> Path {
        self.path
    }

    /// The leg now starts towards another peer (a B-leg INVITE failing over
    /// to the next gateway, before any dialog exists), with its trunk's
    /// session-timer settings.
    pub fn retarget(&mut self, path: Path, advertised: SocketAddr, timer: SessionTimerConfig) {
        self.path = path;
        self.advertised = advertised;
        self.timer = timer;
    }

    /// A request inside the dialog came over `from`. Over TCP or TLS, the
    /// caller's newest connection is where Vigil reaches it from then on
    /// (RFC 5626 §4.2's flow, RFC 5923's reuse): the one the leg had may be
    /// gone — always, after a restart — and a caller behind NAT can only be
    /// reached on a connection it opened. The B leg keeps the address Vigil
    /// dialled: a gateway's listening port can always be connected to
    /// again, an ephemeral port it sent from cannot.
    pub fn follow_flow(&mut self, from: Path) {
        if self.side == Leg::A && self.path.proto.is_reliable() && from.proto == self.path.proto {
            self.path = from;
        }
    }

    /// Where in-dialog requests go: the remote target (through the route set)
    /// once there is a dialog, else the address the leg started with. Over
    /// TCP or TLS they go on the leg's connection (its flow, RFC 5626): a
    /// peer behind NAT can only be reached on the connection it opened.
    pub fn next_hop(&self) -> Path {
        if self.path.proto.is_reliable() {
            return self.path;
        }
        let remote = self
            .dialog
            .as_ref()
            .map_or(self.path.remote, |d| d.next_hop(self.path.remote));
        self.path.to(remote)
    }

    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    pub fn dialog_mut(&mut self) -> Option<&mut Dialog> {
        self.dialog.as_mut()
    }

    pub fn is_established(&self) -> bool {
        self.dialog.is_some()
    }

    pub fn establish(&mut self, dialog: Dialog) {
        self.dialog = Some(dialog);
    }

    /// A target refresh (re-INVITE, UPDATE or their 2xx): the Contact becomes
    /// the remote target (§12.2).
    pub fn refresh_target(&mut self, message_contact: Option<crate::sip::NameAddr>) {
        if let Some(d) = self.dialog.as_mut() {
            d.refresh_target(message_contact);
        }
    }

    pub fn timer_config(&self) -> &SessionTimerConfig {
        &self.timer
    }

    pub fn allows_update(&self) -> bool {
        self.allows_update
    }

    /// Notes whether the peer's `Allow` (in `headers`) lists UPDATE.
    pub fn learn_allow(&mut self, headers: &Headers) {
        self.allows_update = headers.has_tag(&HeaderName::Allow, "UPDATE");
    }

    // ----- SDP -------------------------------------------------------------

    pub fn local_body(&self) -> Option<&Body> {
        self.local_body.as_ref()
    }

    pub fn set_local_body(&mut self, body: Body) {
        self.local_body = Some(body);
    }

    /// The last body this leg's peer sent.
    pub fn remote_body(&self) -> Option<&Body> {
        self.remote_body.as_ref()
    }

    pub fn set_remote_body(&mut self, body: Body) {
        self.remote_body = Some(body);
    }

    /// True if a re-INVITE or UPDATE carries an SDP this leg's peer did not send
    /// before: a real offer for the other side, not a session refresh.
    pub fn sdp_changed(&self, request: &Request) -> bool {
        match Body::of(&request.headers, &request.body) {
            None => false,
            Some(body) => self.remote_body.as_ref() != Some(&body),
        }
    }

    // ----- the session timer -------------------------------------------------

    pub fn session(&self) -> Option<&SessionLeg> {
        self.session.as_ref()
    }

    pub fn session_mut(&mut self) -> Option<&mut SessionLeg> {
        self.session.as_mut()
    }

    pub fn start_session(&mut self, now: Instant, agreed: negotiate::Agreed) {
        self.session = Some(SessionLeg::start(now, agreed, self.timer));
    }

    /// The call ended: no more refreshes or expiry on this leg.
    pub fn end_session(&mut self) {
        self.session = None;
    }

    /// Vigil's own refresh is waiting for its answer on this leg.
    pub fn refreshing(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.in_flight().is_some())
    }

    /// What the session timer says is due now.
    pub fn poll_session(&mut self, now: Instant) -> Option<LegEvent> {
        self.session.as_mut()?.poll(now)
    }

    /// A re-INVITE or UPDATE from this leg's peer is being answered 2xx: the
    /// timer restarts with what was negotiated (a new Session-Expires replaces
    /// the old timer), and the answer says so (RFC 4028 §9).
    pub fn prove_alive_as_uas(
        &mut self,
        now: Instant,
        negotiated: UasOutcome,
        answer: &mut Response,
    ) {
        match negotiated {
            UasOutcome::Timer(agreed) => {
                uas_answer_headers(&agreed, &mut answer.headers);
                match self.session.as_mut() {
                    Some(s) => s.proof_of_life(now, Some(agreed)),
                    None => self.start_session(now, agreed),
                }
            }
            UasOutcome::NoTimer | UasOutcome::TooSmall { .. } => {
                if let Some(s) = self.session.as_mut() {
                    s.proof_of_life(now, None);
                }
            }
        }
    }

    /// The peer answered 2xx to a re-INVITE or UPDATE Vigil relayed to it: it is
    /// alive, its Contact and session interval may have changed.
    pub fn prove_alive_as_uac(&mut self, now: Instant, response: &Response) {
        self.refresh_target(response.contact());
        if let Some(s) = self.session.as_mut() {
            let renegotiated = negotiate::as_uac(response, s.agreed().interval, &self.timer);
            s.proof_of_life(now, renegotiated);
        }
    }

    /// Sends Vigil's refresh (RFC 4028 §7.4): UPDATE, or re-INVITE with the SDP
    /// the leg already has; `refresher=uac` says Vigil keeps refreshing.
    pub fn send_refresh(&mut self, now: Instant, kind: RefreshKind, env: &mut Env<'_>) {
        let owner = self.owner(Purpose::Refresh(self.side));
        let (Some(session), Some(dialog)) = (self.session.as_mut(), self.dialog.as_mut()) else {
            return;
        };
        let method = match kind {
            RefreshKind::Update => Method::Update,
            RefreshKind::Reinvite => Method::Invite,
        };
        let Some(mut request) = dialog.new_request(
            method,
            Via::ours_over(self.path.proto, self.advertised, env.ids.branch()),
        ) else {
            return;
        };
        uac_offer_headers(
            session.agreed().interval,
            session.config(),
            true,
            &mut request.headers,
        );
        request.headers.push(HeaderName::Allow, ALLOWED_METHODS);
        if kind == RefreshKind::Reinvite
            && let Some(body) = &self.local_body
        {
            body.apply(&mut request.headers, &mut request.body);
        }
        session.sent(kind);
        Metrics::count(&env.metrics.refreshes_sent);
        self.send_in_dialog(now, request, owner.purpose, env);
    }

    /// The answer to Vigil's refresh: a 2xx renews the session (and a 2xx to a
    /// re-INVITE is ACKed); 491 is retried after RFC 3261 §14.1's back-off; a
    /// 405/501 to UPDATE switches the dialog to re-INVITE; a 422 is retried
    /// once with the peer's Min-SE.
    pub fn on_refresh_answer(
        &mut self,
        now: Instant,
        response: &Response,
        env: &mut Env<'_>,
    ) -> RefreshAnswer {
        if response.status < 200 {
            return RefreshAnswer::Ignored;
        }
        if response.is_success() && response.cseq.method == Method::Invite {
            self.send_ack(now, response.cseq.seq, None, env);
        }
        let Some(session) = self.session.as_mut() else {
            return RefreshAnswer::Ignored;
        };
        let kind = session.in_flight();
        let status = response.status;
        if response.is_success() {
            Metrics::count(&env.metrics.refreshes_answered);
            let renegotiated = negotiate::as_uac(response, session.agreed().interval, &self.timer);
            session.refreshed(now, renegotiated);
            self.refresh_target(response.contact());
            return RefreshAnswer::Refreshed;
        }
        match status {
            491 => {
                // §14.1: 2.1-4 s if Vigil owns the Call-ID (B leg), else 0-2 s.
                let delay = match self.side {
                    Leg::B => env.ids.jitter(2100, 4000),
                    Leg::A => env.ids.jitter(0, 2000),
                };
                session.retry_in(now, delay);
                RefreshAnswer::Retrying
            }
            405 | 501 if kind == Some(RefreshKind::Update) => {
                session.refuse_update();
                self.send_refresh(now, RefreshKind::Reinvite, env);
                RefreshAnswer::SwitchedToReinvite
            }
            422 => {
                let retried = retry_after_422(response, &self.timer)
                    .is_some_and(|interval| session.retry_with_interval(interval));
                if retried {
                    self.send_refresh(now, kind.unwrap_or(RefreshKind::Update), env);
                    RefreshAnswer::Retrying
                } else {
                    RefreshAnswer::Failed(status)
                }
            }
            481 => RefreshAnswer::DialogGone,
            _ => RefreshAnswer::Failed(status),
        }
    }

    // ----- requests Vigil sends in the dialog --------------------------------

    /// ACKs the 2xx to this leg's INVITE with CSeq `seq`, carrying the body of
    /// `body_from` (the other leg's ACK: the SDP answer of a late-offer call).
    pub fn send_ack(
        &mut self,
        now: Instant,
        seq: u32,
        body_from: Option<&Request>,
        env: &mut Env<'_>,
    ) {
        let Some(dialog) = self.dialog.as_ref() else {
            return;
        };
        let Some(mut ack) = dialog.ack(
            seq,
            Via::ours_over(self.path.proto, self.advertised, env.ids.branch()),
        ) else {
            return;
        };
        if let Some(from) = body_from {
            super::build::copy_body(&from.headers, &from.body, &mut ack.headers, &mut ack.body);
        }
        if let Some(auth) = self.auth.as_ref() {
            for (name, value) in auth.ack_credentials(seq) {
                ack.headers.push(name.clone(), value.clone());
            }
        }
        let bytes = ack.encode();
        env.tx.send_stateless(bytes.clone(), self.next_hop());
        self.last_ack = Some((seq, bytes));
        // The peer retransmits its 2xx for at most 64*T1 if this ACK is lost.
        self.timers.set(
            AnswerTimer::ForgetAck,
            now + env.settings.timers.transaction_timeout(),
        );
    }

    /// The CSeq of the last ACK Vigil sent on this leg.
    pub fn last_ack_seq(&self) -> Option<u32> {
        self.last_ack.as_ref().map(|(seq, _)| *seq)
    }

    /// The peer retransmitted its 2xx to the INVITE with CSeq `seq`: the ACK
    /// sent for it is lost; send it again.
    pub fn resend_ack(&self, seq: u32, env: &mut Env<'_>) {
        if let Some((ack_seq, bytes)) = &self.last_ack
            && *ack_seq == seq
        {
            env.tx.send_stateless(bytes.clone(), self.next_hop());
        }
    }

    /// Sends BYE in this leg's dialog, with a `Reason` header if given
    /// (RFC 3326). Nothing without a dialog.
    pub fn send_bye(&mut self, now: Instant, reason: Option<&str>, env: &mut Env<'_>) {
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let Some(mut bye) = dialog.new_request(
            Method::Bye,
            Via::ours_over(self.path.proto, self.advertised, env.ids.branch()),
        ) else {
            return;
        };
        if let Some(reason) = reason {
            bye.headers.push(HeaderName::Reason, reason);
        }
        self.send_in_dialog(now, bye, Purpose::Teardown, env);
    }

    /// Sends a copy of a request from the other leg into this leg's dialog
    /// (its own Via, CSeq and tags); `prepare` adds what crosses. Returns the
    /// copy's CSeq, or `None` without a dialog.
    pub fn send_relayed(
        &mut self,
        now: Instant,
        method: Method,
        relay_id: u32,
        env: &mut Env<'_>,
        prepare: impl FnOnce(&mut Request, Option<&SessionLeg>, &SessionTimerConfig),
    ) -> Option<u32> {
        let dialog = self.dialog.as_mut()?;
        let mut copy = dialog.new_request(
            method,
            Via::ours_over(self.path.proto, self.advertised, env.ids.branch()),
        )?;
        prepare(&mut copy, self.session.as_ref(), &self.timer);
        let sent_seq = copy.cseq.seq;
        self.send_in_dialog(now, copy, Purpose::Relay(relay_id), env);
        Some(sent_seq)
    }

    // ----- Vigil's 2xx to an INVITE on this leg ------------------------------

    /// Answers an INVITE on this leg with `ok` and retransmits it until the
    /// peer's ACK (§13.3.1.4). `ack_other_seq`: the other leg's INVITE this
    /// answer came from, ACKed when this one is.
    pub fn send_2xx(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        ok: Response,
        ack_other_seq: Option<u32>,
        env: &mut Env<'_>,
    ) {
        let pending = Box::new(Pending2xx {
            bytes: ok.encode(),
            interval: env.settings.timers.t1,
            invite_seq: ok.cseq.seq,
            ack_other_seq,
        });
        env.tx.respond(now, tx, ok);
        self.timers
            .set(AnswerTimer::Retransmit2xx, now + pending.interval);
        self.timers.set(
            AnswerTimer::AckWait,
            now + env.settings.timers.transaction_timeout(),
        );
        self.pending_2xx = Some(pending);
    }

    /// A 2xx of Vigil's on this leg still waits for its ACK.
    pub fn awaits_ack(&self) -> bool {
        self.pending_2xx.is_some()
    }

    /// The peer's ACK with CSeq `seq`: if it is the one Vigil's 2xx waits for,
    /// the retransmissions stop and the answer is `Some(ack_other_seq)`; a
    /// retransmitted or unrelated ACK is `None`.
    pub fn take_ack(&mut self, seq: u32) -> Option<Option<u32>> {
        let pending = self.pending_2xx.as_ref()?;
        if pending.invite_seq != seq {
            return None;
        }
        let other = pending.ack_other_seq;
        self.stop_2xx();
        Some(other)
    }

    /// Stops retransmitting a 2xx (the dialog is being ended anyway).
    pub fn stop_2xx(&mut self) {
        self.pending_2xx = None;
        self.timers.clear(AnswerTimer::Retransmit2xx);
        self.timers.clear(AnswerTimer::AckWait);
    }

    // ----- timers ------------------------------------------------------------

    pub fn next_deadline(&self) -> Option<Instant> {
        let own = self.timers.next().map(|(at, _)| at);
        let session = self.session.as_ref().and_then(SessionLeg::next_deadline);
        own.into_iter().chain(session).min()
    }

    /// Fires this leg's own timers due at `now`: retransmits the 2xx, forgets
    /// an old ACK, or reports that the peer never ACKed. The session timer is
    /// polled separately ([`CallLeg::poll_session`]).
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) -> Option<LegTimeout> {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                AnswerTimer::Retransmit2xx => {
                    if let Some(p) = self.pending_2xx.as_mut() {
                        p.interval = (p.interval * 2).min(env.settings.timers.t2);
                        env.tx.send_stateless(p.bytes.clone(), self.path);
                        self.timers
                            .set(AnswerTimer::Retransmit2xx, now + p.interval);
                    }
                }
                AnswerTimer::AckWait => {
                    if let Some(pending) = self.pending_2xx.take() {
                        self.timers.clear(AnswerTimer::Retransmit2xx);
                        return Some(LegTimeout::AckTimeout {
                            ack_other_seq: pending.ack_other_seq,
                        });
                    }
                }
                AnswerTimer::ForgetAck => self.last_ack = None,
            }
        }
        None
    }
}
