//! The B2BUA call: two dialogs, the A leg (Vigil is UAS towards the caller) and
//! the B leg (Vigil is UAC towards the trunk), and the rules that tie them —
//! relaying provisional and final responses, ACK, CANCEL, BYE from either side,
//! re-INVITE and UPDATE with their SDP, and writing the CDR the moment the call
//! ends, with the reason it ended.
//!
//! Each leg also carries its own RFC 4028 session timer ([`refresh`]), and a
//! call with a leg that has none is limited to `no_timer_max_duration`.
//!
//! A `Call` is sans-IO: every input comes with `now`, every output goes through
//! [`Env`] (the worker's transaction layer, CDR queue and policy), and its only
//! clocks are its own timer tables.

pub mod build;
mod in_dialog;
mod refresh;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cdr::{CdrRecord, EndReason, EndedBy};
use crate::config::{PreferRefresher, SessionTimerConfig};
use crate::dialog::Dialog;
use crate::ids::IdGen;
use crate::metrics::Metrics;
use crate::policy::{CallView, Policies, RefreshFailure};
use crate::session_timer::negotiate::{retry_after_422, uac_offer_headers, uas_answer_headers};
use crate::session_timer::{SessionLeg, UasOutcome, negotiate};
use crate::sip::{HeaderName, Method, Request, Response, SipUri, Uri};
use crate::timer::Scheduled;
use crate::timer_table;
use crate::transaction::{
    ClientState, ClientTxId, Path, ServerTxId, TimerValues, TransactionLayer,
};

use build::{Body, OutboundInvite, b_leg_invite, local_response, our_via, relay_response};

/// A call's handle inside its worker.
pub type CallKey = u64;

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Towards the caller; Vigil is the UAS.
    A,
    /// Towards the trunk; Vigil is the UAC.
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

/// Why a client transaction exists, reported back with its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The B-leg INVITE.
    BInvite,
    /// A request relayed from one leg to the other.
    Relay(u32),
    /// Vigil's session refresh (UPDATE or re-INVITE) on a leg.
    Refresh(Leg),
    /// A request Vigil sends on its own (BYE, CANCEL): its answer changes nothing.
    Teardown,
}

/// The owner tag on every transaction a call starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOwner {
    pub call: CallKey,
    pub purpose: Purpose,
}

/// What a call needs from its worker to act.
pub struct Env<'a> {
    pub tx: &'a mut TransactionLayer<TxOwner>,
    pub ids: &'a mut IdGen,
    pub cdrs: &'a mut VecDeque<CdrRecord>,
    pub settings: &'a CallSettings,
    /// The worker's policies; a call asks those of its trunks.
    pub policies: &'a Policies,
    pub metrics: &'a Metrics,
}

/// Per-call knobs from the config snapshot the call started under.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub user_agent: String,
    pub max_ring_time: Duration,
    pub timers: TimerValues,
}

timer_table!(
    /// Ring: unanswered too long. Retransmit2xx/AckWait: our 2xx until its ACK
    /// (RFC 3261 §13.3.1.4). CancelWait: a CANCELled INVITE that never got its final.
    /// MaxDuration: `no_timer_max_duration` of a call with a leg without timer.
    /// ForgetAck: the ACKs kept for 2xx retransmissions are no longer needed.
    CallTimers: CallTimer { Ring, Retransmit2xx, AckWait, CancelWait, MaxDuration, ForgetAck }
);

/// The A leg's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    /// INVITE received, no final response yet.
    Proceeding,
    /// 2xx sent, waiting for its ACK.
    Answered,
    Confirmed,
    /// Final failure sent, or BYE exchanged: nothing more to do.
    Done,
}

/// The B leg's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
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

/// What one leg needs beyond its dialog.
struct LegInfo {
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
}

impl LegInfo {
    fn new(path: Path, advertised: SocketAddr, timer: SessionTimerConfig) -> LegInfo {
        LegInfo {
            path,
            advertised,
            dialog: None,
            last_ack: None,
            timer,
            session: None,
            allows_update: false,
            local_body: None,
            remote_body: None,
        }
    }

    fn contact(&self) -> SipUri {
        SipUri::for_socket(None, self.advertised)
    }

    fn next_hop(&self) -> Path {
        let remote = self
            .dialog
            .as_ref()
            .map_or(self.path.remote, |d| d.next_hop(self.path.remote));
        Path {
            local: self.path.local,
            remote,
        }
    }
}

/// A request relayed from one leg to the other, waiting for its answer.
struct Relay {
    id: u32,
    /// The leg the request came from (where the answer goes).
    from: Leg,
    server_tx: ServerTxId,
    request: Request,
    /// CSeq of the copy sent on the other leg.
    sent_seq: u32,
    /// For a re-INVITE or UPDATE: the session timer negotiated with its sender.
    negotiated: Option<UasOutcome>,
}

/// A 2xx to an INVITE that Vigil retransmits until the ACK (§13.3.1.4).
struct Pending2xx {
    leg: Leg,
    bytes: Vec<u8>,
    interval: Duration,
    invite_seq: u32,
    /// When the ACK arrives, ACK the other leg's INVITE with this CSeq (the 2xx
    /// came from there).
    ack_other_seq: Option<u32>,
}

/// How the call ended, fixed the first time it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub reason: EndReason,
    pub by: EndedBy,
    pub sip_code: Option<u16>,
    /// For `session-timeout`: why the session ran out.
    pub refresh_failure: Option<RefreshFailure>,
}

/// The INVITEs of a call being set up.
struct Setup {
    a_invite: Request,
    b_invite: Request,
}

/// A call as an operator sees it: who, how long, each leg's session timer.
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

/// Who the call is between, for the CDR and logs.
#[derive(Debug, Clone)]
pub struct Parties {
    pub caller: String,
    pub callee: String,
    pub trunk_in: Arc<str>,
    pub trunk_out: Arc<str>,
    /// The trunks whose policies serve the A and B legs; `None` for a
    /// registered user's leg, served by the default policy.
    pub policy_in: Option<Arc<str>>,
    pub policy_out: Option<Arc<str>>,
}

/// The A leg as it arrived: the INVITE, where it came from, and its session timer
/// as negotiated before the call was accepted (a too-small interval was refused).
pub struct Inbound {
    pub tx: ServerTxId,
    pub invite: Request,
    pub path: Path,
    pub advertised: SocketAddr,
    pub timer: SessionTimerConfig,
    pub negotiated: UasOutcome,
}

/// Where the B leg goes.
pub struct Outbound {
    pub path: Path,
    pub advertised: SocketAddr,
    pub timer: SessionTimerConfig,
    /// The Request-URI, when not `sip:<callee>@<trunk address>` (a registered
    /// user's contact).
    pub request_uri: Option<Uri>,
    /// The To URI, when not the Request-URI (a user's address-of-record).
    pub to: Option<Uri>,
}

/// One B2BUA call.
pub struct Call {
    key: CallKey,
    parties: Parties,
    start: Instant,
    answer: Option<Instant>,
    ending: Option<Ending>,
    a_state: AState,
    b_state: BState,
    /// The two INVITEs, kept until both legs are confirmed (they answer the A
    /// leg's INVITE, build the B leg's CANCEL and 422 retry); then they go.
    setup: Option<Box<Setup>>,
    /// The caller's Call-ID and From tag (the A dialog's key) and Vigil's B-leg
    /// Call-ID, for the call's whole life.
    a_call_id: String,
    a_from_tag: String,
    b_call_id: String,
    a_invite_tx: ServerTxId,
    a_local_tag: String,
    /// The A leg's session timer as negotiated on the INVITE.
    a_negotiated: UasOutcome,
    a: LegInfo,
    b_invite_tx: ClientTxId,
    /// CSeq of the B-leg INVITE (1, or 2 after a 422 retry).
    b_invite_seq: u32,
    /// The Session-Expires offered on the B leg (changes after a 422).
    b_offered: u32,
    /// The B-leg INVITE was retried after a 422 (RFC 4028 §7.4: only once).
    b_retried_422: bool,
    b: LegInfo,
    /// CANCEL wanted before B sent any provisional (§9.1 says wait).
    cancel_pending: bool,
    /// B hung up before the caller ACKed our 2xx; BYE the caller once it does.
    bye_a_after_ack: bool,
    relays: Vec<Relay>,
    next_relay: u32,
    pending_2xx: Option<Pending2xx>,
    timers: CallTimers,
    pub(crate) scheduled: Scheduled,
}

impl Call {
    /// Starts a call: sends the B-leg INVITE (offering session timers) and arms the
    /// ring timer. The A-leg INVITE has had its `100 Trying` from the transaction
    /// layer.
    pub fn start(
        now: Instant,
        key: CallKey,
        inbound: Inbound,
        parties: Parties,
        outbound: Outbound,
        env: &mut Env<'_>,
    ) -> Call {
        env.tx.set_server_owner(
            inbound.tx,
            TxOwner {
                call: key,
                purpose: Purpose::Teardown,
            },
        );
        let a_invite = inbound.invite;
        let mut b_invite = b_leg_invite(OutboundInvite {
            a_invite: &a_invite,
            target: outbound.path.remote,
            request_uri: outbound.request_uri,
            to: outbound.to,
            advertised: outbound.advertised,
            call_id: env.ids.call_id(),
            from_tag: env.ids.tag(),
            branch: env.ids.branch(),
            user_agent: &env.settings.user_agent,
        });
        let b_offered = outbound.timer.ttl;
        uac_offer_headers(
            b_offered,
            &outbound.timer,
            outbound.timer.prefer_refresher == PreferRefresher::Local,
            &mut b_invite.headers,
        );
        let b_invite_tx = env.tx.send_request(
            now,
            b_invite.clone(),
            outbound.path,
            TxOwner {
                call: key,
                purpose: Purpose::BInvite,
            },
        );
        let mut timers = CallTimers::default();
        timers.set(CallTimer::Ring, now + env.settings.max_ring_time);
        tracing::info!(
            call_id = %a_invite.call_id, b_call_id = %b_invite.call_id,
            caller = %parties.caller, callee = %parties.callee,
            trunk_in = %parties.trunk_in, trunk_out = %parties.trunk_out,
            "call started"
        );
        let mut a = LegInfo::new(inbound.path, inbound.advertised, inbound.timer);
        a.allows_update = a_invite.headers.has_tag(&HeaderName::Allow, "UPDATE");
        a.remote_body = Body::of(&a_invite.headers, &a_invite.body);
        let mut b = LegInfo::new(outbound.path, outbound.advertised, outbound.timer);
        b.local_body = Body::of(&b_invite.headers, &b_invite.body);
        Call {
            key,
            parties,
            start: now,
            answer: None,
            ending: None,
            a_state: AState::Proceeding,
            b_state: BState::Calling,
            a_local_tag: env.ids.tag(),
            a_negotiated: inbound.negotiated,
            a_call_id: a_invite.call_id.clone(),
            a_from_tag: a_invite.from.tag().unwrap_or_default().to_string(),
            b_call_id: b_invite.call_id.clone(),
            b_invite_seq: b_invite.cseq.seq,
            setup: Some(Box::new(Setup { a_invite, b_invite })),
            a_invite_tx: inbound.tx,
            a,
            b_invite_tx,
            b_offered,
            b_retried_422: false,
            b,
            cancel_pending: false,
            bye_a_after_ack: false,
            relays: Vec::new(),
            next_relay: 0,
            pending_2xx: None,
            timers,
            scheduled: Scheduled::default(),
        }
    }

    pub fn a_call_id(&self) -> &str {
        &self.a_call_id
    }

    /// The A leg's dialog key: Call-ID and the caller's From tag.
    pub fn a_from_tag(&self) -> &str {
        &self.a_from_tag
    }

    pub fn b_call_id(&self) -> &str {
        &self.b_call_id
    }

    /// The To tag Vigil uses on the A leg (also for the 200 to a CANCEL, §9.2).
    pub fn a_local_tag(&self) -> &str {
        &self.a_local_tag
    }

    /// Whether `request` names this call's dialog on `leg` by its full
    /// identifier (RFC 3261 §12.2.2): its To tag is Vigil's tag on that leg and
    /// its From tag the peer's. The Call-ID was matched by the caller. The B
    /// leg has no dialog until the callee answers, so nothing matches it then.
    pub fn owns_dialog(&self, leg: Leg, request: &Request) -> bool {
        let (local, remote) = match leg {
            Leg::A => (self.a_local_tag.as_str(), self.a_from_tag.as_str()),
            Leg::B => match &self.b.dialog {
                Some(d) => (d.local_tag.as_str(), d.remote_tag.as_str()),
                None => return false,
            },
        };
        request.to.tag() == Some(local) && request.from.tag().unwrap_or_default() == remote
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    pub fn is_answered(&self) -> bool {
        self.answer.is_some()
    }

    /// The call has nothing left to do: its CDR is written and both legs are
    /// closed. The worker then forgets it.
    pub fn is_finished(&self) -> bool {
        self.ending.is_some()
            && self.a_state == AState::Done
            && self.b_state == BState::Done
            && self.relays.is_empty()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = [&self.a.session, &self.b.session]
            .into_iter()
            .flatten()
            .filter_map(SessionLeg::next_deadline);
        self.timers
            .next()
            .map(|(at, _)| at)
            .into_iter()
            .chain(sessions)
            .min()
    }

    fn owner(&self, purpose: Purpose) -> TxOwner {
        TxOwner {
            call: self.key,
            purpose,
        }
    }

    fn leg(&self, leg: Leg) -> &LegInfo {
        match leg {
            Leg::A => &self.a,
            Leg::B => &self.b,
        }
    }

    fn leg_mut(&mut self, leg: Leg) -> &mut LegInfo {
        match leg {
            Leg::A => &mut self.a,
            Leg::B => &mut self.b,
        }
    }

    /// Records how the call ended and writes its CDR, once.
    fn end(
        &mut self,
        now: Instant,
        reason: EndReason,
        by: EndedBy,
        sip_code: Option<u16>,
        env: &mut Env<'_>,
    ) {
        self.finish(
            now,
            Ending {
                reason,
                by,
                sip_code,
                refresh_failure: None,
            },
            env,
        );
    }

    fn finish(&mut self, now: Instant, ending: Ending, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(ending);
        self.timers.clear(CallTimer::Ring);
        self.timers.clear(CallTimer::MaxDuration);
        self.a.session = None;
        self.b.session = None;
        let answered = self.answer.is_some();
        tracing::info!(
            call_id = %self.a_call_id, b_call_id = %self.b_call_id,
            reason = %ending.reason, sip_code = ?ending.sip_code,
            refresh_failure = ?ending.refresh_failure, answered,
            "call ended"
        );
        let view = CallView {
            call_id: &self.a_call_id,
            b_call_id: &self.b_call_id,
            trunk_in: &self.parties.trunk_in,
            trunk_out: &self.parties.trunk_out,
            caller: &self.parties.caller,
            callee: &self.parties.callee,
            end_reason: ending.reason,
            since_answer: self.answer.map(|a| now.saturating_duration_since(a)),
        };
        let (policy_in, policy_out) = (
            self.parties.policy_in.as_deref(),
            self.parties.policy_out.as_deref(),
        );
        let mut extra = env.policies.for_trunk(policy_in).hangup(&view);
        if !env.policies.same(policy_in, policy_out) {
            extra.extend(env.policies.for_trunk(policy_out).hangup(&view));
        }
        env.cdrs.push_back(CdrRecord {
            call_id: self.a_call_id.clone(),
            b_call_id: Some(self.b_call_id.clone()),
            caller: self.parties.caller.clone(),
            callee: self.parties.callee.clone(),
            trunk_in: self.parties.trunk_in.clone(),
            trunk_out: Some(self.parties.trunk_out.clone()),
            start: self.start,
            answer: self.answer,
            end: now,
            end_reason: ending.reason,
            ended_by: ending.by,
            sip_code: ending.sip_code,
            refresh_failure: ending.refresh_failure.map(RefreshFailure::as_cdr_value),
            extra,
        });
    }

    // ----- responses on the B-leg INVITE --------------------------------------

    /// A response to a client transaction this call started.
    pub fn on_response(
        &mut self,
        now: Instant,
        purpose: Purpose,
        response: Response,
        env: &mut Env<'_>,
    ) {
        match purpose {
            Purpose::BInvite => self.on_b_invite_response(now, response, env),
            Purpose::Relay(id) => self.on_relay_response(now, id, response, env),
            Purpose::Refresh(leg) => self.on_refresh_response(now, leg, response, env),
            Purpose::Teardown => {}
        }
    }

    fn on_b_invite_response(&mut self, now: Instant, response: Response, env: &mut Env<'_>) {
        let status = response.status;
        match self.b_state {
            BState::Calling | BState::Proceeding => {
                if status < 200 {
                    self.b_state = BState::Proceeding;
                    if self.cancel_pending {
                        self.send_b_cancel(now, env);
                    } else if status > 100 && self.a_state == AState::Proceeding {
                        self.note_early_media(&response);
                        if let Some(r) = self.to_caller(&response, env) {
                            env.tx.respond(now, self.a_invite_tx, r);
                        }
                    }
                } else if status < 300 {
                    self.on_b_answered(now, response, env);
                } else if status == 422
                    && self.ending.is_none()
                    && self.retry_b_after_422(now, &response, env)
                {
                    // RFC 4028 §7.4: the callee wants a longer interval; asked again.
                } else {
                    self.b_state = BState::Done;
                    if self.ending.is_none() {
                        let r = if status == 422 {
                            // The caller's interval was fine; the callee refused ours.
                            self.setup.as_ref().map(|s| {
                                local_response(
                                    &s.a_invite,
                                    500,
                                    Some("Session Interval Refused By Callee"),
                                    Some(&self.a_local_tag),
                                    &env.settings.user_agent,
                                )
                            })
                        } else {
                            self.to_caller(&response, env)
                        };
                        if let Some(r) = r {
                            env.tx.respond(now, self.a_invite_tx, r);
                        }
                        self.a_state = AState::Done;
                        self.end(now, EndReason::Rejected, EndedBy::Callee, Some(status), env);
                    }
                }
            }
            BState::Cancelling => {
                if (200..300).contains(&status) {
                    // The callee answered as the CANCEL crossed: ACK and BYE it.
                    self.hang_up_fork(now, &response, env);
                }
                if status >= 200 {
                    self.b_state = BState::Done;
                    self.timers.clear(CallTimer::CancelWait);
                }
            }
            BState::Answered | BState::Confirmed => {
                if !(200..300).contains(&status) {
                    return;
                }
                let same_dialog = self
                    .b
                    .dialog
                    .as_ref()
                    .is_some_and(|d| Some(d.remote_tag.as_str()) == response.to.tag());
                if same_dialog {
                    self.resend_ack(Leg::B, response.cseq.seq, env);
                } else {
                    self.hang_up_fork(now, &response, env);
                }
            }
            BState::Done => {
                if (200..300).contains(&status) {
                    self.hang_up_fork(now, &response, env);
                }
            }
        }
    }

    /// The callee's response to the B-leg INVITE, as the caller gets it (while
    /// the caller's INVITE is still unanswered, so still held).
    fn to_caller(&self, response: &Response, env: &Env<'_>) -> Option<Response> {
        let setup = self.setup.as_ref()?;
        Some(relay_response(
            &setup.a_invite,
            response,
            Some(&self.a_local_tag),
            &self.a.contact(),
            &env.settings.user_agent,
        ))
    }

    fn on_b_answered(&mut self, now: Instant, response: Response, env: &mut Env<'_>) {
        let Some(setup) = self.setup.take() else {
            return;
        };
        self.b.dialog = Some(Dialog::as_uac(&setup.b_invite, &response, self.b.contact()));
        if self.ending.is_some() {
            // Answered after the call was already given up (CANCEL race, shutdown).
            self.setup = Some(setup);
            self.b_state = BState::Answered;
            self.hang_up_b(now, env);
            return;
        }
        self.b_state = BState::Answered;
        self.answer = Some(now);
        Metrics::count(&env.metrics.calls_answered);
        self.timers.clear(CallTimer::Ring);
        self.b.allows_update = response.headers.has_tag(&HeaderName::Allow, "UPDATE");
        let mut ok = relay_response(
            &setup.a_invite,
            &response,
            Some(&self.a_local_tag),
            &self.a.contact(),
            &env.settings.user_agent,
        );
        ok.headers.push(HeaderName::Supported, "timer");
        if let UasOutcome::Timer(agreed) = self.a_negotiated {
            uas_answer_headers(&agreed, &mut ok.headers);
        }
        self.note_body(Leg::B, &response.headers, &response.body);
        self.a.dialog = Some(Dialog::as_uas(
            &setup.a_invite,
            self.a_local_tag.clone(),
            self.a.contact(),
        ));
        self.a_state = AState::Answered;
        let bytes = ok.encode();
        env.tx.respond(now, self.a_invite_tx, ok);
        self.arm_2xx(
            now,
            Pending2xx {
                leg: Leg::A,
                bytes,
                interval: env.settings.timers.t1,
                invite_seq: setup.a_invite.cseq.seq,
                ack_other_seq: Some(self.b_invite_seq),
            },
            env,
        );
        self.setup = Some(setup);
        let b_agreed = negotiate::as_uac(&response, self.b_offered, &self.b.timer);
        self.start_sessions(now, b_agreed);
        tracing::debug!(call_id = %self.a_call_id, "answered");
    }

    /// Both legs are confirmed: the INVITEs (most of a call's memory) go; the
    /// dialogs and the legs' SDPs hold all that is still needed.
    fn forget_invites(&mut self) {
        self.setup = None;
    }

    /// Early media: the callee's SDP in a provisional travels to the caller.
    fn note_early_media(&mut self, response: &Response) {
        if !response.body.is_empty() {
            self.note_body(Leg::B, &response.headers, &response.body);
        }
    }

    /// A body the peer on `from` sent, which Vigil passes to the other leg.
    fn note_body(&mut self, from: Leg, headers: &crate::sip::Headers, body: &[u8]) {
        if let Some(b) = Body::of(headers, body) {
            self.leg_mut(from.other()).local_body = Some(b.clone());
            self.leg_mut(from).remote_body = Some(b);
        }
    }

    /// RFC 4028 §7.4: after a 422, the B-leg INVITE goes again (once) with the
    /// callee's Min-SE as the interval, same dialog identifiers, next CSeq.
    fn retry_b_after_422(&mut self, now: Instant, response: &Response, env: &mut Env<'_>) -> bool {
        if self.b_retried_422 {
            return false;
        }
        let Some(interval) = retry_after_422(response, &self.b.timer) else {
            return false;
        };
        let Some(setup) = self.setup.as_mut() else {
            return false;
        };
        let mut again = setup.b_invite.clone();
        again.cseq.seq += 1;
        again.via = vec![our_via(self.b.advertised, env.ids.branch())];
        again.headers.remove(&HeaderName::SessionExpires);
        again.headers.remove(&HeaderName::MinSe);
        again.headers.remove(&HeaderName::Supported);
        uac_offer_headers(interval, &self.b.timer, false, &mut again.headers);
        again.headers.set(HeaderName::MinSe, interval.to_string());
        tracing::info!(call_id = %self.a_call_id, interval, "callee wants a longer session interval (422): retrying");
        self.b_invite_tx = env.tx.send_request(
            now,
            again.clone(),
            self.b.path,
            self.owner(Purpose::BInvite),
        );
        self.b_invite_seq = again.cseq.seq;
        if let Some(setup) = self.setup.as_mut() {
            setup.b_invite = again;
        }
        self.b_offered = interval;
        self.b_retried_422 = true;
        self.b_state = BState::Calling;
        true
    }

    fn arm_2xx(&mut self, now: Instant, pending: Pending2xx, env: &Env<'_>) {
        self.timers
            .set(CallTimer::Retransmit2xx, now + pending.interval);
        self.timers.set(
            CallTimer::AckWait,
            now + env.settings.timers.transaction_timeout(),
        );
        self.pending_2xx = Some(pending);
    }

    /// ACKs and BYEs a 2xx that does not belong to the call's B dialog (a second
    /// fork, or an answer after the call ended) so the callee does not ring on.
    fn hang_up_fork(&mut self, now: Instant, response: &Response, env: &mut Env<'_>) {
        let mut fork = match (&self.setup, &self.b.dialog) {
            (Some(setup), _) => Dialog::as_uac(&setup.b_invite, response, self.b.contact()),
            (None, Some(dialog)) => dialog.fork(response),
            (None, None) => return,
        };
        let hop = Path {
            local: self.b.path.local,
            remote: fork.next_hop(self.b.path.remote),
        };
        let ack = fork.ack(
            response.cseq.seq,
            our_via(self.b.advertised, env.ids.branch()),
        );
        env.tx.send_stateless(ack.encode(), hop);
        let bye = fork.new_request(Method::Bye, our_via(self.b.advertised, env.ids.branch()));
        env.tx
            .send_request(now, bye, hop, self.owner(Purpose::Teardown));
    }

    fn resend_ack(&mut self, leg: Leg, seq: u32, env: &mut Env<'_>) {
        let info = self.leg(leg);
        if let Some((ack_seq, bytes)) = &info.last_ack
            && *ack_seq == seq
        {
            let path = info.next_hop();
            env.tx.send_stateless(bytes.clone(), path);
        }
    }

    // ----- the caller's CANCEL and ACK ----------------------------------------

    /// The caller cancelled (its CANCEL is already answered 200).
    pub fn on_cancel(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.a_state != AState::Proceeding {
            return; // §9.2: a final response was sent already; CANCEL changes nothing.
        }
        self.fail_a(now, 487, None, env);
        self.end(now, EndReason::Cancelled, EndedBy::Caller, Some(487), env);
        self.cancel_b(now, env);
    }

    /// An ACK from a leg (for a 2xx Vigil sent on it).
    pub fn on_ack(&mut self, now: Instant, leg: Leg, ack: Request, env: &mut Env<'_>) {
        let Some(pending) = &self.pending_2xx else {
            return;
        };
        if pending.leg != leg || pending.invite_seq != ack.cseq.seq {
            return; // a retransmitted ACK
        }
        let ack_other = pending.ack_other_seq;
        self.pending_2xx = None;
        self.timers.clear(CallTimer::Retransmit2xx);
        self.timers.clear(CallTimer::AckWait);
        if leg == Leg::A && self.a_state == AState::Answered {
            self.a_state = AState::Confirmed;
        }
        self.note_body(leg, &ack.headers, &ack.body);
        if let Some(seq) = ack_other {
            let other = leg.other();
            self.send_ack(now, other, seq, Some(&ack), env);
            if other == Leg::B && self.b_state == BState::Answered {
                self.b_state = BState::Confirmed;
            }
        }
        if self.a_state == AState::Confirmed && self.b_state == BState::Confirmed {
            self.forget_invites();
        }
        if leg == Leg::A && self.bye_a_after_ack {
            self.bye_a_after_ack = false;
            self.send_bye(now, Leg::A, env);
            self.a_state = AState::Done;
        }
    }

    /// ACKs the 2xx to `leg`'s INVITE with CSeq `seq`, carrying the other leg's ACK
    /// body (the SDP answer of a late-offer call).
    fn send_ack(
        &mut self,
        now: Instant,
        leg: Leg,
        seq: u32,
        body_from: Option<&Request>,
        env: &mut Env<'_>,
    ) {
        let advertised = self.leg(leg).advertised;
        let info = self.leg_mut(leg);
        let Some(dialog) = info.dialog.as_ref() else {
            return;
        };
        let mut ack = dialog.ack(seq, our_via(advertised, env.ids.branch()));
        if let Some(from) = body_from {
            build::copy_body(&from.headers, &from.body, &mut ack.headers, &mut ack.body);
        }
        let bytes = ack.encode();
        let path = info.next_hop();
        env.tx.send_stateless(bytes.clone(), path);
        info.last_ack = Some((seq, bytes));
        // The peer retransmits its 2xx for at most 64*T1 if this ACK is lost.
        self.timers.set(
            CallTimer::ForgetAck,
            now + env.settings.timers.transaction_timeout(),
        );
    }

    /// A client transaction of this call got no answer (Timer B or F).
    pub fn on_timeout(&mut self, now: Instant, purpose: Purpose, env: &mut Env<'_>) {
        match purpose {
            Purpose::BInvite => {
                let was = self.b_state;
                self.b_state = BState::Done;
                self.timers.clear(CallTimer::CancelWait);
                if matches!(was, BState::Calling | BState::Proceeding) && self.ending.is_none() {
                    self.fail_a(now, 408, None, env);
                    self.end(now, EndReason::Rejected, EndedBy::Switch, Some(408), env);
                }
            }
            Purpose::Relay(id) => {
                if let Some(pos) = self.relays.iter().position(|r| r.id == id) {
                    let relay = self.relays.remove(pos);
                    let r =
                        local_response(&relay.request, 408, None, None, &env.settings.user_agent);
                    env.tx.respond(now, relay.server_tx, r);
                }
            }
            Purpose::Refresh(leg) => self.on_refresh_timeout(now, leg, env),
            Purpose::Teardown => {}
        }
    }

    // ----- timers ------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                CallTimer::Ring => {
                    if self.a_state == AState::Proceeding && self.ending.is_none() {
                        tracing::info!(call_id = %self.a_call_id, "no answer within max_ring_time");
                        self.fail_a(now, 408, Some("No Answer"), env);
                        self.end(now, EndReason::Rejected, EndedBy::Switch, Some(408), env);
                        self.cancel_b(now, env);
                    }
                }
                CallTimer::Retransmit2xx => {
                    if let Some(p) = self.pending_2xx.as_mut() {
                        let bytes = p.bytes.clone();
                        p.interval = (p.interval * 2).min(env.settings.timers.t2);
                        let at = now + p.interval;
                        let leg = p.leg;
                        let path = self.leg(leg).path;
                        env.tx.send_stateless(bytes, path);
                        self.timers.set(CallTimer::Retransmit2xx, at);
                    }
                }
                CallTimer::AckWait => self.on_ack_timeout(now, env),
                CallTimer::CancelWait => {
                    // §9.1: no final answer 64*T1 after CANCEL: consider it cancelled.
                    if self.b_state == BState::Cancelling {
                        env.tx.abandon_client(self.b_invite_tx);
                        self.b_state = BState::Done;
                    }
                }
                CallTimer::MaxDuration => self.on_max_duration(now, env),
                CallTimer::ForgetAck => {
                    self.a.last_ack = None;
                    self.b.last_ack = None;
                }
            }
        }
        self.poll_sessions(now, env);
    }

    fn on_ack_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        let Some(pending) = self.pending_2xx.take() else {
            return;
        };
        self.timers.clear(CallTimer::Retransmit2xx);
        tracing::warn!(call_id = %self.a_call_id, leg = ?pending.leg, "no ACK for 2xx; ending the call");
        // Complete the other side's INVITE so it stops retransmitting, then end.
        if let Some(seq) = pending.ack_other_seq {
            let other = pending.leg.other();
            if self.leg(other).last_ack.as_ref().map(|(s, _)| *s) != Some(seq) {
                self.send_ack(now, other, seq, None, env);
            }
            if other == Leg::B && self.b_state == BState::Answered {
                self.b_state = BState::Confirmed;
            }
        }
        if pending.leg == Leg::A && self.a_state == AState::Answered {
            // §13.3.1.4: confirm the dialog, then end it with BYE.
            self.a_state = AState::Confirmed;
        }
        self.end(now, EndReason::AckTimeout, EndedBy::Switch, None, env);
        self.hang_up_both(now, env);
    }

    // ----- tearing legs down ---------------------------------------------------

    /// Answers the caller's INVITE with a failure (before answer).
    fn fail_a(&mut self, now: Instant, status: u16, reason: Option<&str>, env: &mut Env<'_>) {
        if self.a_state != AState::Proceeding {
            return;
        }
        if let Some(setup) = &self.setup {
            let r = local_response(
                &setup.a_invite,
                status,
                reason,
                Some(&self.a_local_tag),
                &env.settings.user_agent,
            );
            env.tx.respond(now, self.a_invite_tx, r);
        }
        self.a_state = AState::Done;
    }

    /// Ends the B leg in whatever state it is: CANCEL before answer, ACK + BYE
    /// after.
    fn hang_up_b(&mut self, now: Instant, env: &mut Env<'_>) {
        match self.b_state {
            BState::Calling | BState::Proceeding => self.cancel_b(now, env),
            BState::Answered => {
                self.send_ack(now, Leg::B, self.b_invite_seq, None, env);
                self.send_bye(now, Leg::B, env);
                self.b_state = BState::Done;
            }
            BState::Confirmed => {
                self.send_bye(now, Leg::B, env);
                self.b_state = BState::Done;
            }
            BState::Cancelling | BState::Done => {}
        }
    }

    /// Ends the A leg: BYE once confirmed. Before the caller's ACK, §15 says wait
    /// for it, unless `now_anyway` (shutdown, ACK timeout).
    fn hang_up_a(&mut self, now: Instant, now_anyway: bool, env: &mut Env<'_>) {
        match self.a_state {
            AState::Proceeding => {}
            AState::Answered if !now_anyway => {
                self.bye_a_after_ack = true;
                return;
            }
            AState::Answered | AState::Confirmed => {
                self.clear_pending_2xx_on(Leg::A);
                self.send_bye(now, Leg::A, env);
            }
            AState::Done => {}
        }
        self.a_state = AState::Done;
    }

    fn send_bye(&mut self, now: Instant, leg: Leg, env: &mut Env<'_>) {
        let owner = self.owner(Purpose::Teardown);
        let session_expired = self
            .ending
            .is_some_and(|e| e.reason == EndReason::SessionTimeout);
        let info = self.leg_mut(leg);
        let advertised = info.advertised;
        let Some(dialog) = info.dialog.as_mut() else {
            return;
        };
        let mut bye = dialog.new_request(Method::Bye, our_via(advertised, env.ids.branch()));
        if session_expired {
            // RFC 3326 / RFC 4028 §10: say why.
            bye.headers
                .push(HeaderName::Reason, "SIP;cause=408;text=\"Session expired\"");
        }
        let path = info.next_hop();
        env.tx.send_request(now, bye, path, owner);
    }

    /// CANCELs the B-leg INVITE, or remembers to once a provisional arrives.
    fn cancel_b(&mut self, now: Instant, env: &mut Env<'_>) {
        match self.b_state {
            BState::Calling => self.cancel_pending = true,
            BState::Proceeding => self.send_b_cancel(now, env),
            BState::Answered | BState::Confirmed => self.hang_up_b(now, env),
            BState::Cancelling | BState::Done => {}
        }
    }

    fn send_b_cancel(&mut self, now: Instant, env: &mut Env<'_>) {
        self.cancel_pending = false;
        if env.tx.client_state(self.b_invite_tx) != Some(ClientState::Proceeding) {
            return;
        }
        if let Some((cancel, path)) = env.tx.build_cancel(self.b_invite_tx) {
            env.tx
                .send_request(now, cancel, path, self.owner(Purpose::Teardown));
            self.b_state = BState::Cancelling;
            self.timers.set(
                CallTimer::CancelWait,
                now + env.settings.timers.transaction_timeout(),
            );
        }
    }

    /// Graceful shutdown: fail an unanswered call, BYE an answered one.
    pub fn shutdown(&mut self, now: Instant, env: &mut Env<'_>) {
        self.end_by_switch(now, EndReason::Shutdown, (503, "Shutting Down"), env);
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
        if self.a_state == AState::Proceeding {
            let (status, phrase) = unanswered;
            self.fail_a(now, status, Some(phrase), env);
            self.end(now, reason, EndedBy::Switch, Some(status), env);
        } else {
            self.end(now, reason, EndedBy::Switch, None, env);
        }
        self.hang_up_both(now, env);
    }

    /// What an operator sees of the call (`vigil ctl calls`).
    pub fn snapshot(&self, now: Instant) -> CallSnapshot {
        let leg = |info: &LegInfo| {
            info.session.as_ref().map(|s| {
                let agreed = s.agreed();
                let secs_until = |at: Instant| at.saturating_duration_since(now).as_secs_f64();
                LegTimerSnapshot {
                    session_expires: agreed.interval,
                    refresher: match agreed.refresher {
                        crate::session_timer::Who::Vigil => "vigil",
                        crate::session_timer::Who::Peer => "peer",
                    },
                    refreshes: s.refreshes(),
                    next_refresh_in: s.refresh_due_at().map(secs_until),
                    expires_in: s.expires_at().map(secs_until),
                }
            })
        };
        CallSnapshot {
            call_id: self.a_call_id.clone(),
            b_call_id: self.b_call_id.clone(),
            caller: self.parties.caller.clone(),
            callee: self.parties.callee.clone(),
            trunk_in: self.parties.trunk_in.to_string(),
            trunk_out: self.parties.trunk_out.to_string(),
            age: now.saturating_duration_since(self.start).as_secs_f64(),
            answered_for: self
                .answer
                .map(|a| now.saturating_duration_since(a).as_secs_f64()),
            a_leg: leg(&self.a),
            b_leg: leg(&self.b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-call struct (boxed once per call) stays small: at 100,000 calls
    /// every byte here is 100 kB of RSS. Grow the budget on purpose, not by accident.
    #[test]
    fn a_call_stays_within_its_size_budget() {
        let size = std::mem::size_of::<Call>();
        assert!(size <= 2_816, "size_of::<Call>() = {size} bytes");
    }
}
