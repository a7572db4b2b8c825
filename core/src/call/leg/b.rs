//! The B leg: towards the callee, where Vigil is the UAC of the INVITE
//! (RFC 3261 §13.2). It sends the INVITE offering session timers, retries it
//! once after a 422 (RFC 4028 §7.4), CANCELs it — waiting for a provisional
//! first (§9.1) — and ACKs and BYEs the callee's answers, including those of
//! forks that answered too (§13.2.2.4).

use std::time::Instant;

use super::CallLeg;
use super::prack::{Incoming, ReliableUac};
use crate::call::build::{Body, OutboundInvite, b_leg_invite};
use crate::call::{CallKey, Env, Outbound, Purpose, TxOwner};
use crate::config::{PrackMode, PreferRefresher};
use crate::dialog::Dialog;
use crate::policy::Leg;
use crate::session_timer::negotiate::{self, Agreed, retry_after_422, uac_offer_headers};
use crate::sip::{HeaderName, Method, RAck, Request, Response, TAG_100REL};
use crate::timer_table;
use crate::transaction::{ClientState, ClientTxId};
use crate::uplink::auth::authorize;

timer_table!(
    /// CancelWait: a CANCELled INVITE that never got its final answer (§9.1).
    /// NoResponse: a gateway left the INVITE without any response for its
    /// trunk's `invite_timeout` (the call may move to the next gateway).
    BTimers: BTimer { CancelWait, NoResponse }
);

/// What the B leg's own timers report to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BTimeout {
    /// No response at all within `invite_timeout`; the INVITE's transaction
    /// was given up.
    NoResponse,
}

/// The B leg's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BState {
    /// The INVITE is built but not sent: it waits for the SDP rtpengine gives
    /// it (a relayed call).
    Waiting,
    /// INVITE sent, nothing back yet (a CANCEL must wait, §9.1).
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// 2xx received; Vigil sends its ACK once the caller ACKs ours.
    Answered,
    Confirmed,
    /// CANCEL sent: waiting for the INVITE's final answer.
    Cancelling,
    Done,
}

/// The callee's side of a call.
pub struct BLeg {
    pub leg: CallLeg,
    state: BState,
    /// The INVITE Vigil sent, kept until both legs are confirmed (it builds
    /// the dialog, a 422 retry and the ACK/BYE of a late fork).
    invite: Option<Box<Request>>,
    /// Vigil's Call-ID on this leg, for the call's whole life.
    call_id: Box<str>,
    /// The INVITE's transaction, once sent.
    invite_tx: Option<ClientTxId>,
    /// CSeq of the INVITE (1, or 2 after a 422 retry).
    invite_seq: u32,
    /// The Session-Expires offered (changes after a 422).
    offered: u32,
    /// The INVITE was retried after a 422 (RFC 4028 §7.4: only once).
    retried_422: bool,
    /// CANCEL wanted before the callee sent any provisional (§9.1 says wait).
    cancel_pending: bool,
    /// Seconds the callee may leave the INVITE without a response before
    /// the call gives it up (a gateway's; `None`: Timer B decides). Two
    /// bytes, not a `Duration`'s sixteen: every call carries it.
    invite_timeout: Option<std::num::NonZeroU16>,
    /// The trunk's `prack`: offered, demanded or not used on this leg.
    prack: PrackMode,
    /// The callee's reliable provisionals (RFC 3262), once one came.
    /// Boxed: most calls see none.
    reliable: Option<Box<ReliableUac>>,
    timers: BTimers,
}

/// A provisional from the callee, as RFC 3262 §4 counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReliableIncoming {
    /// Not reliable (or this leg does no PRACK): it goes on as before.
    Unreliable,
    /// The next reliable one: its PRACK is due, now or with the caller's
    /// answer to its offer ([`BLeg::send_prack`], [`BLeg::defer_prack`]).
    Fresh { dialog: usize, rack: RAck },
    /// A retransmission, or one past a gap: dropped, not relayed.
    Dropped,
}

/// What the identifiers of a new B leg are (Vigil's own, from its id generator).
pub struct BIdentity {
    pub call_id: String,
    pub from_tag: String,
    pub branch: String,
}

impl BLeg {
    /// Builds the INVITE towards the callee from the caller's `a_invite`,
    /// offering session timers; [`BLeg::send_invite`] sends it.
    pub fn new(
        key: CallKey,
        a_invite: &Request,
        outbound: Outbound,
        ids: BIdentity,
        env: &Env<'_>,
    ) -> BLeg {
        let mut invite = b_leg_invite(OutboundInvite {
            a_invite,
            target: outbound.path.remote,
            proto: outbound.path.proto,
            request_uri: outbound.request_uri,
            to: outbound.to,
            advertised: outbound.advertised,
            callee: outbound.callee,
            caller: outbound.caller,
            call_id: ids.call_id,
            from_tag: ids.from_tag,
            branch: ids.branch,
            user_agent: &env.settings.user_agent,
        });
        let offered = outbound.timer.ttl;
        let invite_timeout = compact(outbound.invite_timeout);
        uac_offer_headers(
            offered,
            &outbound.timer,
            outbound.timer.prefer_refresher == PreferRefresher::Local,
            &mut invite.headers,
        );
        offer_100rel(outbound.prack, &mut invite.headers);
        let leg = CallLeg::new(
            key,
            Leg::B,
            outbound.path,
            outbound.advertised,
            outbound.timer,
        );
        BLeg {
            leg,
            state: BState::Waiting,
            call_id: invite.call_id.as_str().into(),
            invite_seq: invite.cseq.seq,
            invite: Some(Box::new(invite)),
            invite_tx: None,
            offered,
            retried_422: false,
            cancel_pending: false,
            invite_timeout,
            prack: outbound.prack,
            reliable: None,
            timers: BTimers::default(),
        }
    }

    /// Sends the INVITE, with `sdp` instead of the caller's if given (the
    /// offer rtpengine rewrote for this leg).
    pub fn send_invite(&mut self, now: Instant, sdp: Option<&Body>, env: &mut Env<'_>) {
        let Some(invite) = self.invite.as_deref_mut() else {
            return;
        };
        if self.state != BState::Waiting {
            return;
        }
        if let Some(sdp) = sdp {
            for name in crate::call::build::BODY_HEADERS {
                invite.headers.remove(&name);
            }
            sdp.apply(&mut invite.headers, &mut invite.body);
        }
        if let Some(body) = Body::of(&invite.headers, &invite.body) {
            self.leg.set_local_body(body);
        }
        self.invite_tx = Some(env.tx.send_request(
            now,
            invite.clone(),
            self.leg.path(),
            TxOwner {
                call: self.leg.call,
                purpose: Purpose::BInvite,
            },
        ));
        self.state = BState::Calling;
        self.arm_no_response(now);
    }

    fn arm_no_response(&mut self, now: Instant) {
        if let Some(seconds) = self.invite_timeout {
            let timeout = std::time::Duration::from_secs(u64::from(seconds.get()));
            self.timers.set(BTimer::NoResponse, now + timeout);
        }
    }

    /// Failover: the INVITE goes to the gateway `outbound` names, as a new
    /// transaction of the same dialog-to-be (same Call-ID and From tag, next
    /// CSeq), offering session timers as that gateway's trunk wants. False
    /// if there is no INVITE to send any more.
    pub fn retarget(&mut self, now: Instant, outbound: Outbound, env: &mut Env<'_>) -> bool {
        if let Some(tx) = self.invite_tx.take() {
            env.tx.abandon_client(tx);
        }
        let Some(invite) = self.invite.as_deref_mut() else {
            return false;
        };
        crate::call::build::retarget_invite(
            invite,
            outbound.path,
            outbound.advertised,
            env.ids.branch(),
        );
        self.leg
            .retarget(outbound.path, outbound.advertised, outbound.timer);
        self.leg.set_auth(outbound.auth);
        // The last gateway's credentials are not the next one's.
        for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
            invite.headers.remove(&name);
        }
        self.offered = outbound.timer.ttl;
        reoffer_timer(invite, self.offered, &outbound.timer, true);
        invite.headers.remove(&HeaderName::Require);
        offer_100rel(outbound.prack, &mut invite.headers);
        self.prack = outbound.prack;
        // The last gateway's early dialogs are not the next one's.
        self.reliable = None;
        self.invite_timeout = compact(outbound.invite_timeout);
        self.invite_seq = invite.cseq.seq;
        self.retried_422 = false;
        self.cancel_pending = false;
        self.timers.clear_all();
        self.invite_tx = Some(env.tx.send_request(
            now,
            invite.clone(),
            self.leg.path(),
            self.leg.owner(Purpose::BInvite),
        ));
        self.state = BState::Calling;
        self.arm_no_response(now);
        true
    }

    /// A confirmed B leg back from the state store.
    pub fn restore(leg: CallLeg) -> BLeg {
        let call_id = leg
            .dialog()
            .map_or_else(Box::default, |d| d.call_id().into());
        let offered = leg
            .session()
            .map_or(leg.timer_config().ttl, |s| s.agreed().interval);
        BLeg {
            leg,
            state: BState::Confirmed,
            invite: None,
            call_id,
            invite_tx: None,
            invite_seq: 1,
            offered,
            retried_422: false,
            cancel_pending: false,
            invite_timeout: None,
            timers: BTimers::default(),
            // Confirmed: its provisionals are long acknowledged.
            prack: PrackMode::default(),
            reliable: None,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn state(&self) -> BState {
        self.state
    }

    pub fn invite_seq(&self) -> u32 {
        self.invite_seq
    }

    pub fn has_invite(&self) -> bool {
        self.invite.is_some()
    }

    /// Both legs are confirmed: the INVITE goes.
    pub fn forget_invite(&mut self) {
        self.invite = None;
    }

    /// Whether `request` names this leg's dialog (RFC 3261 §12.2.2): To tag
    /// Vigil's, From tag the callee's. Nothing matches before the answer.
    /// Before the answer, an early dialog (a callee's provisional with its
    /// tag) matches too: its UPDATE (RFC 3311).
    pub fn owns(&self, request: &Request) -> bool {
        let names = |d: &Dialog| {
            request.to.tag() == Some(d.local_tag())
                && request.from.tag().unwrap_or_default() == d.remote_tag()
        };
        match self.leg.dialog() {
            Some(d) => names(d),
            None => {
                self.state == BState::Proceeding
                    && self.reliable.as_ref().is_some_and(|r| {
                        r.early_dialog(request.from.tag().unwrap_or_default())
                            .is_some_and(names)
                    })
            }
        }
    }

    /// The callee's early dialog `request` (an UPDATE) came in.
    pub fn early_dialog_mut(&mut self, request: &Request) -> Option<&mut Dialog> {
        if self.state != BState::Proceeding {
            return None;
        }
        self.reliable
            .as_mut()?
            .dialog_mut(request.from.tag().unwrap_or_default())
    }

    /// A request in the callee's latest early dialog (an UPDATE from the
    /// caller, RFC 3311), and the path it takes.
    pub fn early_request(
        &mut self,
        method: Method,
        env: &mut Env<'_>,
    ) -> Option<(Request, crate::transaction::Path)> {
        if self.state != BState::Proceeding {
            return None;
        }
        let via = self.leg.via(env);
        let path = self.leg.path();
        let (request, hop) = self
            .reliable
            .as_mut()?
            .new_request(method, via, path.remote)?;
        let path = if path.proto.is_reliable() {
            path
        } else {
            path.to(hop)
        };
        Some((request, path))
    }

    /// How a provisional from the callee counts (RFC 3262 §4); none is
    /// reliable on a leg with `prack: disabled`.
    pub fn classify_provisional(&mut self, response: &Response) -> ReliableIncoming {
        let Some(invite) = self.invite.as_deref() else {
            return ReliableIncoming::Unreliable;
        };
        if response.cseq.seq != self.invite_seq || response.to.tag().is_none() {
            return ReliableIncoming::Unreliable;
        }
        let contact = self.leg.contact();
        let reliable = self.reliable.get_or_insert_with(Box::default);
        match reliable.on_provisional(invite, response, contact) {
            // A `disabled` leg does no PRACK: a reliable 18x is taken as it is.
            _ if !self.prack.enabled() => ReliableIncoming::Unreliable,
            Incoming::Unreliable => ReliableIncoming::Unreliable,
            Incoming::Fresh { dialog, rack } => ReliableIncoming::Fresh { dialog, rack },
            Incoming::Dropped => ReliableIncoming::Dropped,
        }
    }

    /// Whether the INVITE went without an SDP (a late offer): an SDP in a
    /// reliable provisional is then the callee's offer.
    pub fn late_offer(&self) -> bool {
        self.leg.local_body().is_none()
    }

    /// PRACKs a reliable provisional in its early dialog (hop by hop: RAck
    /// names its RSeq, CSeq and method), with `body` (the caller's answer to
    /// its offer) if given.
    pub fn send_prack(
        &mut self,
        now: Instant,
        dialog: usize,
        rack: &RAck,
        body: Option<&Body>,
        env: &mut Env<'_>,
    ) {
        let via = self.leg.via(env);
        let path = self.leg.path();
        let Some(reliable) = self.reliable.as_mut() else {
            return;
        };
        let Some(mut prack) = reliable.prack(dialog, rack, via) else {
            return;
        };
        if let Some(body) = body {
            body.apply(&mut prack.headers, &mut prack.body);
            self.leg.set_local_body(body.clone());
        }
        let hop = if path.proto.is_reliable() {
            path
        } else {
            path.to(reliable.next_hop(dialog, path.remote))
        };
        env.tx
            .send_request(now, prack, hop, self.leg.owner(Purpose::Prack));
    }

    /// Holds a PRACK until the caller's answer comes (its own PRACK); one
    /// held before goes now without it.
    pub fn defer_prack(&mut self, now: Instant, dialog: usize, rack: RAck, env: &mut Env<'_>) {
        let earlier = self.reliable.as_mut().and_then(|r| r.defer(dialog, rack));
        if let Some((dialog, rack)) = earlier {
            self.send_prack(now, dialog, &rack, None, env);
        }
    }

    /// A PRACK waits for the caller's answer.
    pub fn has_deferred_prack(&self) -> bool {
        self.reliable.as_ref().is_some_and(|r| r.has_deferred())
    }

    /// Sends the held PRACK, if any, with the caller's answer.
    pub fn send_deferred_prack(&mut self, now: Instant, body: Option<&Body>, env: &mut Env<'_>) {
        if let Some((dialog, rack)) = self.reliable.as_mut().and_then(|r| r.take_deferred()) {
            self.send_prack(now, dialog, &rack, body, env);
        }
    }

    /// A provisional response arrived: a CANCEL that waited for it goes now.
    /// True if the provisional is for the caller to see.
    pub fn on_provisional(&mut self, now: Instant, env: &mut Env<'_>) -> bool {
        self.state = BState::Proceeding;
        self.timers.clear(BTimer::NoResponse);
        if self.cancel_pending {
            self.send_cancel(now, env);
            return false;
        }
        true
    }

    /// The callee answered 2xx: the B dialog exists. Returns the session timer
    /// agreed with the callee (RFC 4028 §7.2).
    pub fn on_answered(&mut self, response: &Response) -> Option<Agreed> {
        if let Some(invite) = self.invite.as_deref() {
            let mut dialog = Dialog::as_uac(invite, response, self.leg.contact());
            // RFC 3262: PRACKs went in the early dialog this 2xx confirms.
            if let Some(early) = self
                .reliable
                .as_ref()
                .and_then(|r| r.early_dialog(response.to.tag().unwrap_or_default()))
            {
                dialog.continue_from(early);
            }
            self.leg.establish(dialog);
            if let Some(auth) = self.leg.auth.as_mut() {
                auth.invite_answered(invite);
            }
        }
        self.state = BState::Answered;
        self.leg.learn_allow(&response.headers);
        negotiate::as_uac(response, self.offered, self.leg.timer_config())
    }

    /// The callee's answer was ACKed (the caller's ACK crossed).
    pub fn confirm(&mut self) {
        if self.state == BState::Answered {
            self.state = BState::Confirmed;
        }
    }

    /// The INVITE failed or was given up: nothing more happens on this leg.
    pub fn close(&mut self) {
        self.state = BState::Done;
        self.timers.clear_all();
    }

    /// A final response arrived: nothing is waited for any more.
    pub fn on_final(&mut self) {
        self.timers.clear(BTimer::NoResponse);
    }

    /// RFC 4028 §7.4: after a 422, the INVITE goes again (once) with the
    /// callee's Min-SE as the interval, same dialog identifiers, next CSeq.
    /// False if it may not (already retried, or an unacceptable Min-SE).
    pub fn retry_after_422(
        &mut self,
        now: Instant,
        response: &Response,
        env: &mut Env<'_>,
    ) -> bool {
        if self.retried_422 {
            return false;
        }
        let Some(interval) = retry_after_422(response, self.leg.timer_config()) else {
            return false;
        };
        let Some(invite) = self.invite.as_deref_mut() else {
            return false;
        };
        invite.cseq.seq += 1;
        invite.via = vec![self.leg.via(env)];
        reoffer_timer(invite, interval, self.leg.timer_config(), false);
        invite.headers.set(HeaderName::MinSe, interval.to_string());
        if self.prack.enabled() {
            invite.headers.remove(&HeaderName::Require);
            offer_100rel(self.prack, &mut invite.headers);
        }
        self.invite_tx = Some(env.tx.send_request(
            now,
            invite.clone(),
            self.leg.path(),
            self.leg.owner(Purpose::BInvite),
        ));
        self.invite_seq = invite.cseq.seq;
        self.offered = interval;
        self.retried_422 = true;
        self.state = BState::Calling;
        self.arm_no_response(now);
        true
    }

    /// The callee (a carrier) challenged the INVITE with 401 or 407: with
    /// its trunk's credentials the INVITE goes again (same dialog-to-be,
    /// next CSeq, new branch). False when there are none, or this realm
    /// refused them already (RFC 3261 §22.2: then the INVITE fails).
    pub fn answer_challenge(
        &mut self,
        now: Instant,
        response: &Response,
        env: &mut Env<'_>,
    ) -> bool {
        let (Some(auth), Some(invite)) = (self.leg.auth.as_ref(), self.invite.as_deref_mut())
        else {
            return false;
        };
        let cnonce = env.ids.tag();
        let retry = match authorize(
            invite,
            response,
            &auth.credentials,
            env.ids.branch(),
            &cnonce,
        ) {
            Ok(retry) => retry,
            Err(e) => {
                tracing::warn!(call_id = %response.call_id, status = response.status, error = %e, "INVITE challenge not answered");
                return false;
            }
        };
        *invite = retry;
        self.invite_tx = Some(env.tx.send_request(
            now,
            invite.clone(),
            self.leg.path(),
            self.leg.owner(Purpose::BInvite),
        ));
        self.invite_seq = invite.cseq.seq;
        self.state = BState::Calling;
        self.arm_no_response(now);
        true
    }

    /// A 2xx to the INVITE retransmitted by the callee: the same dialog gets
    /// its ACK again; another fork's is ACKed and hung up (§13.2.2.4).
    pub fn on_2xx_again(&mut self, now: Instant, response: &Response, env: &mut Env<'_>) {
        let same_dialog = self
            .leg
            .dialog()
            .is_some_and(|d| Some(d.remote_tag()) == response.to.tag());
        if same_dialog {
            self.leg.resend_ack(response.cseq.seq, env);
        } else {
            self.hang_up_fork(now, response, env);
        }
    }

    /// ACKs and BYEs a 2xx that does not belong to the call's B dialog (a
    /// second fork, or an answer after the call ended) so the callee does not
    /// ring on.
    pub fn hang_up_fork(&mut self, now: Instant, response: &Response, env: &mut Env<'_>) {
        let mut fork = match (self.invite.as_deref(), self.leg.dialog()) {
            (Some(invite), _) => Dialog::as_uac(invite, response, self.leg.contact()),
            (None, Some(dialog)) => dialog.fork(response),
            (None, None) => return,
        };
        let hop = self.leg.path().to(fork.next_hop(self.leg.path().remote));
        let ack = fork.ack(response.cseq.seq, self.leg.via(env));
        if let Some(ack) = ack {
            env.tx.send_stateless(ack.encode(), hop);
        }
        let bye = fork.new_request(Method::Bye, self.leg.via(env));
        if let Some(bye) = bye {
            env.tx
                .send_request(now, bye, hop, self.leg.owner(Purpose::Teardown));
        }
    }

    /// Ends the leg in whatever state it is: CANCEL before answer, ACK + BYE
    /// after.
    pub fn hang_up(&mut self, now: Instant, bye_reason: Option<&str>, env: &mut Env<'_>) {
        match self.state {
            BState::Waiting => self.state = BState::Done,
            BState::Calling | BState::Proceeding => self.cancel(now, bye_reason, env),
            BState::Answered => {
                self.leg.send_ack(now, self.invite_seq, None, env);
                self.leg.send_bye(now, bye_reason, env);
                self.state = BState::Done;
            }
            BState::Confirmed => {
                self.leg.send_bye(now, bye_reason, env);
                self.state = BState::Done;
            }
            BState::Cancelling | BState::Done => {}
        }
    }

    /// CANCELs the INVITE, or remembers to once a provisional arrives.
    pub fn cancel(&mut self, now: Instant, bye_reason: Option<&str>, env: &mut Env<'_>) {
        match self.state {
            BState::Waiting => self.state = BState::Done,
            BState::Calling => self.cancel_pending = true,
            BState::Proceeding => self.send_cancel(now, env),
            BState::Answered | BState::Confirmed => self.hang_up(now, bye_reason, env),
            BState::Cancelling | BState::Done => {}
        }
    }

    fn send_cancel(&mut self, now: Instant, env: &mut Env<'_>) {
        self.cancel_pending = false;
        let Some(invite_tx) = self.invite_tx else {
            return;
        };
        if env.tx.client_state(invite_tx) != Some(ClientState::Proceeding) {
            return;
        }
        if let Some((cancel, path)) = env.tx.build_cancel(invite_tx) {
            env.tx
                .send_request(now, cancel, path, self.leg.owner(Purpose::Teardown));
            self.state = BState::Cancelling;
            self.timers.set(
                BTimer::CancelWait,
                now + env.settings.timers.transaction_timeout(),
            );
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let own = self.timers.next().map(|(at, _)| at);
        own.into_iter().chain(self.leg.next_deadline()).min()
    }

    /// Fires this leg's own timers (not the shared [`CallLeg`] ones).
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) -> Option<BTimeout> {
        let mut report = None;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                BTimer::NoResponse => {
                    if self.state == BState::Calling {
                        if let Some(tx) = self.invite_tx.take() {
                            env.tx.abandon_client(tx);
                        }
                        report = Some(BTimeout::NoResponse);
                    }
                }
                BTimer::CancelWait => {
                    // §9.1: no final answer 64*T1 after CANCEL: consider it cancelled.
                    if self.state == BState::Cancelling {
                        if let Some(invite_tx) = self.invite_tx {
                            env.tx.abandon_client(invite_tx);
                        }
                        self.state = BState::Done;
                    }
                }
            }
        }
        report
    }
}

/// The session-timer offer of an INVITE sent again (after a 422, or to
/// another gateway): the old one's headers go, the new interval's come.
fn reoffer_timer(
    invite: &mut Request,
    interval: u32,
    timer: &crate::config::SessionTimerConfig,
    prefer_local: bool,
) {
    invite.headers.remove(&HeaderName::SessionExpires);
    invite.headers.remove(&HeaderName::MinSe);
    invite.headers.remove(&HeaderName::Supported);
    uac_offer_headers(
        interval,
        timer,
        prefer_local && timer.prefer_refresher == PreferRefresher::Local,
        &mut invite.headers,
    );
}

/// What a B-leg INVITE says of `100rel` (RFC 3262) for a trunk's `prack`.
/// One `Supported` field lists every tag (some peers read only the first).
fn offer_100rel(mode: PrackMode, headers: &mut crate::sip::Headers) {
    if !mode.enabled() {
        return;
    }
    let mut tags: Vec<String> = headers
        .list(&HeaderName::Supported)
        .filter(|t| !t.eq_ignore_ascii_case(TAG_100REL))
        .map(str::to_string)
        .collect();
    tags.push(TAG_100REL.to_string());
    headers.set(HeaderName::Supported, tags.join(", "));
    if mode == PrackMode::Required {
        headers.push(HeaderName::Require, TAG_100REL);
    }
}

/// An `invite_timeout` in whole seconds (config allows 1..=30).
fn compact(timeout: Option<std::time::Duration>) -> Option<std::num::NonZeroU16> {
    timeout.and_then(|t| std::num::NonZeroU16::new(u16::try_from(t.as_secs()).unwrap_or(u16::MAX)))
}
