//! The B2BUA call: two legs — the A leg towards the caller (Vigil is UAS) and the
//! B leg towards the callee (Vigil is UAC), each a dialog of its own
//! ([`leg`]) — and the rules that tie them: what crosses from one leg to the
//! other (provisional and final responses, ACK, CANCEL, BYE, re-INVITE and
//! UPDATE with their SDP, INFO and friends) and the CDR written the moment the
//! call ends, with the reason it ended.
//!
//! Each leg carries its own RFC 4028 session timer ([`refresh`]), and a call
//! with a leg that has none is limited to `no_timer_max_duration`.
//!
//! A `Call` is sans-IO: every input comes with `now`, every output goes through
//! [`Env`] (the worker's transaction layer, CDR queue and policy), and its only
//! clocks are its own and its legs' timer tables.
//!
//! Files: [`setup`] (the INVITE until both legs are confirmed), [`in_dialog`]
//! (requests inside the dialogs), [`relay`] (a request crossing to the other
//! leg and its answer coming back), [`refresh`], [`teardown`], [`snapshot`].

mod anchoring;
pub mod build;
mod env;
mod failover;
mod in_dialog;
mod leg;
mod liveness;
pub mod media;
mod persist;
mod refresh;
mod relay;
mod setup;
mod snapshot;
mod teardown;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::cdr::{CdrId, CdrRecord, EndReason, EndedBy};
use crate::config::{PrackMode, SessionTimerConfig, TrunkAuth};
use crate::policy::{CallView, RefreshFailure, refresh_failure_cdr_value};
use crate::session_timer::UasOutcome;
use crate::sip::{Request, Response, Uri};
use crate::timer::Scheduled;
use crate::timer_table;
use crate::transaction::{Path, ServerTxId};

pub use crate::policy::Leg;
pub use env::{CallKey, CallSettings, Env, Purpose, TxOwner};
pub use failover::{AttemptEnd, Failover, outbound_to};
use leg::{ALeg, AState, BIdentity, BLeg, BState, BTimeout, CallLeg, LegTimeout};
pub use persist::{Restore, SavedBody, SavedCall, SavedLeg, SavedMedia};
use relay::Relays;
pub use snapshot::{CallSnapshot, LegMedia, LegTimerSnapshot};

timer_table!(
    /// Ring: unanswered too long. MaxDuration: `no_timer_max_duration` of a
    /// call with a leg without timer. (Each leg keeps its own timers, and a
    /// relayed call's media session its own check.)
    CallTimers: CallTimer { Ring, MaxDuration }
);

/// How the call ended, fixed the first time it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub reason: EndReason,
    pub by: EndedBy,
    pub sip_code: Option<u16>,
    /// For `session-timeout`: why the session ran out.
    pub refresh_failure: Option<RefreshFailure>,
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
    /// The source's `prack` (its 100rel checks passed already).
    pub prack: PrackMode,
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
    /// How long the peer may leave the INVITE without any response (a
    /// gateway's `invite_timeout`; `None`: Timer B decides).
    pub invite_timeout: Option<std::time::Duration>,
    /// The called and calling numbers for this leg, when a `route` policy
    /// rewrote them (the Request-URI's user and From's).
    pub callee: Option<String>,
    pub caller: Option<String>,
    /// The trunk's `auth`: what its carrier's 401/407 are answered with.
    pub auth: Option<Arc<TrunkAuth>>,
    /// The trunk's `prack`: `100rel` in the INVITE's Supported or Require.
    pub prack: PrackMode,
}

/// Where a new call's B leg goes: its first target, the gateways it may
/// fail over to, and whether its media goes through rtpengine.
pub struct Placement {
    pub outbound: Outbound,
    pub failover: Option<Failover>,
    pub relay: bool,
}

/// One B2BUA call.
pub struct Call {
    key: CallKey,
    /// The CDR's identity, made with the call.
    cdr_id: CdrId,
    parties: Parties,
    start: Instant,
    answer: Option<Instant>,
    ending: Option<Ending>,
    a: ALeg,
    b: BLeg,
    relays: Relays,
    /// rtpengine's side of a relayed call (`None`: its SDPs pass as they are).
    media: Option<Box<media::MediaSession>>,
    /// The gateways a call to trunks may still try (`None`: a call to a
    /// registered user).
    failover: Option<Failover>,
    /// A call restored from the state store: the gateways it had tried
    /// (it holds no [`Failover`] any more).
    restored_attempts: Option<Box<[crate::cdr::Attempt]>>,
    timers: CallTimers,
    /// The fingerprint of the state last sent to the state store; 0: never.
    saved: u64,
    pub(crate) scheduled: Scheduled,
}

impl Call {
    /// Starts a call: sends the B-leg INVITE (offering session timers) — for
    /// a call whose media is `relay`ed, once rtpengine has the caller's
    /// offer — and arms the ring timer. The A-leg INVITE has had its
    /// `100 Trying` from the transaction layer.
    pub fn start(
        now: Instant,
        key: CallKey,
        inbound: Inbound,
        parties: Parties,
        placement: Placement,
        env: &mut Env<'_>,
    ) -> Call {
        let Placement {
            outbound,
            failover,
            relay,
        } = placement;
        let ids = BIdentity {
            call_id: env.ids.call_id(),
            from_tag: env.ids.tag(),
            branch: env.ids.branch(),
        };
        let callee_tag = ids.from_tag.clone();
        let auth = outbound.auth.clone();
        let mut b = BLeg::new(key, &inbound.invite, outbound, ids, env);
        b.leg.set_auth(auth);
        let a = ALeg::new(key, inbound, env.ids.tag(), env);
        let mut timers = CallTimers::default();
        timers.set(CallTimer::Ring, now + env.settings.max_ring_time);
        tracing::info!(
            call_id = %a.call_id(), b_call_id = %b.call_id(),
            caller = %parties.caller, callee = %parties.callee,
            trunk_in = %parties.trunk_in, trunk_out = %parties.trunk_out,
            "call started"
        );
        let mut call = Call {
            key,
            cdr_id: env.ids.cdr_id(),
            parties,
            start: now,
            answer: None,
            ending: None,
            a,
            b,
            relays: Relays::default(),
            media: None,
            failover,
            restored_attempts: None,
            timers,
            saved: 0,
            scheduled: Scheduled::default(),
        };
        if relay && env.media.is_some() {
            call.begin_media(now, &callee_tag, env);
        } else {
            call.b.send_invite(now, None, env);
        }
        call
    }

    /// The CDR's id, as the CDR writes it.
    pub fn id(&self) -> String {
        self.cdr_id.to_string()
    }

    pub fn a_call_id(&self) -> &str {
        self.a.call_id()
    }

    /// The A leg's dialog key: Call-ID and the caller's From tag.
    pub fn a_from_tag(&self) -> &str {
        self.a.caller_tag()
    }

    pub fn b_call_id(&self) -> &str {
        self.b.call_id()
    }

    /// The To tag Vigil uses on the A leg (also for the 200 to a CANCEL, §9.2).
    pub fn a_local_tag(&self) -> &str {
        self.a.local_tag()
    }

    /// Whether `request` names this call's dialog on `leg` by its full
    /// identifier (RFC 3261 §12.2.2): its To tag is Vigil's tag on that leg and
    /// its From tag the peer's. The Call-ID was matched by the caller. The B
    /// leg has no dialog until the callee answers, so nothing matches it then.
    pub fn owns_dialog(&self, leg: Leg, request: &Request) -> bool {
        match leg {
            Leg::A => self.a.owns(request),
            Leg::B => self.b.owns(request),
        }
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
            && self.a.state() == AState::Done
            && self.b.state() == BState::Done
            && self.relays.is_empty()
            && !self.b.leg.awaits_challenge()
            && self.media.as_ref().is_none_or(|m| m.pending_cdr.is_none())
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.timers.next().map(|(at, _)| at),
            self.a.leg.next_deadline(),
            self.b.next_deadline(),
            self.media.as_ref().and_then(|m| m.check_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn owner(&self, purpose: Purpose) -> TxOwner {
        TxOwner {
            call: self.key,
            purpose,
        }
    }

    fn leg(&self, leg: Leg) -> &CallLeg {
        match leg {
            Leg::A => &self.a.leg,
            Leg::B => &self.b.leg,
        }
    }

    fn leg_mut(&mut self, leg: Leg) -> &mut CallLeg {
        match leg {
            Leg::A => &mut self.a.leg,
            Leg::B => &mut self.b.leg,
        }
    }

    /// A body the peer on `from` sent, which Vigil passes to the other leg.
    fn note_body(&mut self, from: Leg, headers: &crate::sip::Headers, body: &[u8]) {
        if let Some(b) = build::Body::of(headers, body) {
            self.leg_mut(from.other()).set_local_body(b.clone());
            self.leg_mut(from).set_remote_body(b);
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
        self.finish_at(now, now, ending, env);
    }

    /// Records how the call ended, at `end` (the CDR's; at most `now`).
    fn finish_at(&mut self, now: Instant, end: Instant, ending: Ending, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(ending);
        self.timers.clear(CallTimer::Ring);
        self.timers.clear(CallTimer::MaxDuration);
        if !self.a.was_answered() {
            // The callee's 2xx waited for the caller's PRACK (RFC 3262 §3)
            // and never reached it: the caller was never connected, nothing
            // is billed.
            self.answer = None;
        }
        self.a.leg.end_session();
        self.b.leg.end_session();
        let answered = self.answer.is_some();
        tracing::info!(
            call_id = %self.a.call_id(), b_call_id = %self.b.call_id(),
            reason = %ending.reason, sip_code = ?ending.sip_code,
            refresh_failure = ?ending.refresh_failure, answered,
            "call ended"
        );
        let view = CallView {
            call_id: self.a.call_id(),
            b_call_id: self.b.call_id(),
            trunk_in: &self.parties.trunk_in,
            trunk_out: &self.parties.trunk_out,
            caller: &self.parties.caller,
            callee: &self.parties.callee,
            end_reason: ending.reason.as_str(),
            since_answer: self.answer.map(|a| end.saturating_duration_since(a)),
        };
        let (policy_in, policy_out) = (
            self.parties.policy_in.as_deref(),
            self.parties.policy_out.as_deref(),
        );
        let mut extra = env.policies.for_trunk(policy_in).hangup(&view);
        if !env.policies.same(policy_in, policy_out) {
            extra.extend(env.policies.for_trunk(policy_out).hangup(&view));
        }
        let record = Box::new(CdrRecord {
            id: self.cdr_id,
            call_id: self.a.call_id().to_string(),
            b_call_id: Some(self.b.call_id().to_string()),
            caller: self.parties.caller.clone(),
            callee: self.parties.callee.clone(),
            trunk_in: self.parties.trunk_in.clone(),
            trunk_out: Some(self.parties.trunk_out.clone()),
            start: self.start,
            answer: self.answer,
            end,
            end_reason: ending.reason,
            ended_by: ending.by,
            sip_code: ending.sip_code,
            refresh_failure: ending.refresh_failure.map(refresh_failure_cdr_value),
            extra,
            media: None,
            attempts: self.attempts(ending),
        });
        if let Some(f) = &self.failover {
            f.release();
        }
        // A relayed call's CDR waits for rtpengine's totals.
        if let Some(record) = self.delete_media(now, record, env) {
            env.cdrs.push_back(*record);
        }
    }

    /// The gateways tried, for the CDR: the current one's outcome is the
    /// call's (answered, or the status it failed with).
    fn attempts(&self, ending: Ending) -> Vec<crate::cdr::Attempt> {
        let Some(f) = &self.failover else {
            return self
                .restored_attempts
                .as_deref()
                .map_or_else(Vec::new, <[_]>::to_vec);
        };
        let last = if self.answer.is_some() {
            Some(200)
        } else if ending.by == EndedBy::Callee {
            ending.sip_code
        } else {
            None
        };
        f.attempts(last)
    }

    /// A response to a client transaction this call started.
    pub fn on_response(
        &mut self,
        now: Instant,
        purpose: Purpose,
        response: Response,
        env: &mut Env<'_>,
    ) {
        // The B-leg INVITE's challenges are the INVITE's own business.
        if response.status >= 200
            && purpose != Purpose::BInvite
            && response.call_id == self.b.call_id()
            && let Some(seq) = self.b.leg.answer_challenge(now, purpose, &response, env)
        {
            if let Purpose::Relay(id) = purpose {
                self.relays.resent(id, seq);
            }
            return;
        }
        match purpose {
            Purpose::BInvite => self.on_b_invite_response(now, response, env),
            Purpose::Relay(id) => self.on_relay_response(now, id, response, env),
            Purpose::Refresh(leg) => self.on_refresh_response(now, leg, response, env),
            Purpose::Prack => {
                if response.status >= 300 {
                    tracing::info!(call_id = %self.a.call_id(), status = response.status, "callee refused Vigil's PRACK");
                }
            }
            Purpose::Teardown | Purpose::Register(_) => {}
        }
    }

    /// A client transaction of this call got no answer (Timer B or F).
    pub fn on_timeout(&mut self, now: Instant, purpose: Purpose, env: &mut Env<'_>) {
        self.b.leg.forget_sent(purpose);
        match purpose {
            Purpose::BInvite => {
                let was = self.b.state();
                if matches!(was, BState::Calling | BState::Proceeding)
                    && self.fail_over(now, AttemptEnd::Timeout, None, env)
                {
                    return;
                }
                self.b.close();
                if matches!(was, BState::Calling | BState::Proceeding) && self.ending.is_none() {
                    self.a.fail(now, 408, None, env);
                    self.end(now, EndReason::Rejected, EndedBy::Switch, Some(408), env);
                }
            }
            Purpose::Relay(id) => self.on_relay_timeout(now, id, env),
            Purpose::Refresh(leg) => self.on_refresh_timeout(now, leg, env),
            Purpose::Prack | Purpose::Teardown | Purpose::Register(_) => {}
        }
    }

    /// Fires every timer of the call and its legs due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                CallTimer::Ring => self.on_ring_timeout(now, env),
                CallTimer::MaxDuration => self.on_max_duration(now, env),
            }
        }
        if self
            .media
            .as_ref()
            .and_then(|m| m.check_at)
            .is_some_and(|at| at <= now)
        {
            self.on_media_check_due(now, env);
        }
        for leg in [Leg::A, Leg::B] {
            if let Some(LegTimeout::AckTimeout { ack_other_seq }) =
                self.leg_mut(leg).handle_timeout(now, env)
            {
                self.on_ack_timeout(now, leg, ack_other_seq, env);
            }
        }
        if self.b.handle_timeout(now, env) == Some(BTimeout::NoResponse)
            && !self.fail_over(now, AttemptEnd::NoResponse, None, env)
        {
            self.b.close();
            if self.ending.is_none() {
                tracing::info!(call_id = %self.a.call_id(), "no response to the INVITE within invite_timeout");
                self.a.fail(now, 408, None, env);
                self.end(now, EndReason::Rejected, EndedBy::Switch, Some(408), env);
            }
        }
        self.poll_sessions(now, env);
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
        // 1,288 after the issue 16 diet, + 8 for a relayed call's media session
        // (boxed: most calls are not relayed), + 32 for failover (the gateway
        // and its boxed plan, the B leg's no-response timer), + 8 per leg for
        // a trunk's `auth` (boxed: most trunks ask for none), + 8 per leg
        // for reliable provisionals and early dialogs (boxed: most calls
        // have none), + 8 for the A leg's early dialog (RFC 3311 UPDATE),
        // + 16 for the CDR's id (issue 22: the database's key for the call;
        // the state store's too), + 16 for the state store (a restored
        // call's attempts, the fingerprint last saved).
        assert!(size <= 1_416, "size_of::<Call>() = {size} bytes");
    }
}
