//! Each leg's session timer once the call is up (RFC 4028): Vigil's refreshes and
//! their answers, a silent peer, and the maximum duration of a call with a leg
//! that has no timer. A dead leg ends the whole call: BYE on both legs, CDR
//! `session-timeout` with `refresh_failure`.

use std::time::{Duration, Instant};

use super::build::our_via;
use super::{Call, CallTimer, Ending, Env, Leg, Purpose};
use crate::cdr::{EndReason, EndedBy};
use crate::metrics::{Metrics, RefreshFailureCause};
use crate::policy::{FailureDecision, LegView, RefreshDecision, RefreshFailure, SessionPolicy};
use crate::session_timer::negotiate::{self, Agreed, retry_after_422, uac_offer_headers};
use crate::session_timer::{LegEvent, RefreshKind, SessionLeg, UasOutcome, Who};
use crate::sip::{ALLOWED_METHODS, HeaderName, Method, Response};

/// The longest a policy may postpone a failed refresh.
const MAX_POLICY_RETRY: Duration = Duration::from_secs(60);

impl Call {
    /// The call is answered: both legs' timers start now. A leg without a timer
    /// bounds the whole call to its trunk's `no_timer_max_duration`.
    pub(super) fn start_sessions(&mut self, now: Instant, b_agreed: Option<Agreed>) {
        if let UasOutcome::Timer(agreed) = self.a_negotiated {
            self.a.session = Some(SessionLeg::start(now, agreed, self.a.timer));
        }
        if let Some(agreed) = b_agreed {
            self.b.session = Some(SessionLeg::start(now, agreed, self.b.timer));
        }
        let limit = [&self.a, &self.b]
            .into_iter()
            .filter(|l| l.session.is_none())
            .map(|l| l.timer.no_timer_max_duration)
            .filter(|&s| s > 0)
            .min();
        if let Some(seconds) = limit {
            self.timers.set(
                CallTimer::MaxDuration,
                now + Duration::from_secs(u64::from(seconds)),
            );
        }
        tracing::debug!(
            call_id = %self.a_call_id,
            a_timer = ?self.a.session.as_ref().map(|s| s.agreed()),
            b_timer = ?self.b.session.as_ref().map(|s| s.agreed()),
            max_duration = ?limit,
            "session timers"
        );
    }

    pub(super) fn on_max_duration(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.a_call_id, "a leg without session timer reached no_timer_max_duration");
        self.end(now, EndReason::MaxDuration, EndedBy::Switch, None, env);
        self.hang_up_both(now, env);
    }

    /// Fires whatever the legs' timers say is due.
    pub(super) fn poll_sessions(&mut self, now: Instant, env: &mut Env<'_>) {
        for leg in [Leg::A, Leg::B] {
            while let Some(event) = self.leg_mut(leg).session.as_mut().and_then(|s| s.poll(now)) {
                match event {
                    LegEvent::Expired => {
                        let session = self.leg(leg).session.as_ref();
                        let in_flight = session.is_some_and(|s| s.in_flight().is_some());
                        let failure = match session {
                            Some(s) if s.agreed().refresher == Who::Peer && !in_flight => {
                                RefreshFailure::Expired
                            }
                            _ => RefreshFailure::Timeout,
                        };
                        if in_flight && self.ending.is_none() {
                            // Vigil's refresh never got its answer: the expiry cut
                            // its transaction short, and it failed like one that
                            // timed out (which `on_refresh_timeout` never sees now).
                            env.metrics
                                .refresh_failed(RefreshFailureCause::SessionExpired);
                        }
                        self.session_timeout(now, leg, failure, env);
                    }
                    LegEvent::RefreshDue { due } => self.refresh_due(now, due, leg, env),
                }
            }
        }
    }

    fn view(&self, leg: Leg, now: Instant) -> Option<LegView<'_>> {
        let session = self.leg(leg).session.as_ref()?;
        let agreed = session.agreed();
        Some(LegView {
            call_id: &self.a_call_id,
            b_call_id: &self.b_call_id,
            trunk: match leg {
                Leg::A => &self.parties.trunk_in,
                Leg::B => &self.parties.trunk_out,
            },
            caller: &self.parties.caller,
            callee: &self.parties.callee,
            leg,
            session_expires: agreed.interval,
            refresher: agreed.refresher,
            refresh_count: session.refreshes(),
            since_answer: self
                .answer
                .map_or(Duration::ZERO, |a| now.saturating_duration_since(a)),
        })
    }

    fn refresh_due(&mut self, now: Instant, due: Instant, leg: Leg, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        // An offer is already crossing this leg: its 2xx will prove the peer alive.
        let busy = self.pending_2xx.is_some()
            || self
                .relays
                .iter()
                .any(|r| matches!(r.request.method, Method::Invite | Method::Update));
        if busy {
            if let Some(s) = self.leg_mut(leg).session.as_mut() {
                s.retry_in(now, Duration::from_secs(1));
            }
            return;
        }
        let Some(view) = self.view(leg, now) else {
            return;
        };
        let decision = self.policy(leg, env).refresh_due(&view);
        let allows_update = self.leg(leg).allows_update;
        let Some(session) = self.leg_mut(leg).session.as_mut() else {
            return;
        };
        let kind = match decision {
            RefreshDecision::Default => session.method(allows_update),
            RefreshDecision::Update => RefreshKind::Update,
            RefreshDecision::Reinvite => RefreshKind::Reinvite,
            RefreshDecision::Skip => {
                session.proof_of_life(now, None);
                return;
            }
            RefreshDecision::Hangup => {
                return self.session_timeout(now, leg, RefreshFailure::Policy, env);
            }
        };
        env.metrics
            .refresh_lateness
            .record(now.saturating_duration_since(due));
        self.send_refresh(now, leg, kind, env);
    }

    /// Sends Vigil's refresh on `leg` (RFC 4028 §7.4): UPDATE, or re-INVITE with
    /// the SDP the leg already has; `refresher=uac` says Vigil keeps refreshing.
    fn send_refresh(&mut self, now: Instant, leg: Leg, kind: RefreshKind, env: &mut Env<'_>) {
        let owner = self.owner(Purpose::Refresh(leg));
        let info = self.leg_mut(leg);
        let (Some(session), Some(dialog)) = (info.session.as_mut(), info.dialog.as_mut()) else {
            return;
        };
        let method = match kind {
            RefreshKind::Update => Method::Update,
            RefreshKind::Reinvite => Method::Invite,
        };
        let mut request = dialog.new_request(method, our_via(info.advertised, env.ids.branch()));
        uac_offer_headers(
            session.agreed().interval,
            session.config(),
            true,
            &mut request.headers,
        );
        request.headers.push(HeaderName::Allow, ALLOWED_METHODS);
        if kind == RefreshKind::Reinvite
            && let Some(body) = &info.local_body
        {
            body.apply(&mut request.headers, &mut request.body);
        }
        session.sent(kind);
        Metrics::count(&env.metrics.refreshes_sent);
        let path = info.next_hop();
        tracing::debug!(call_id = %self.a_call_id, ?leg, ?kind, "session refresh sent");
        env.tx.send_request(now, request, path, owner);
    }

    /// The answer to Vigil's refresh on `leg`.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        leg: Leg,
        response: Response,
        env: &mut Env<'_>,
    ) {
        if response.status < 200 || self.ending.is_some() {
            return;
        }
        if response.is_success() && response.cseq.method == Method::Invite {
            self.send_ack(now, leg, response.cseq.seq, None, env);
        }
        let info = self.leg_mut(leg);
        let Some(session) = info.session.as_mut() else {
            return;
        };
        let kind = session.in_flight();
        let status = response.status;
        if response.is_success() {
            Metrics::count(&env.metrics.refreshes_answered);
            let renegotiated = negotiate::as_uac(&response, session.agreed().interval, &info.timer);
            session.refreshed(now, renegotiated);
            if let Some(d) = info.dialog.as_mut() {
                d.refresh_target(response.contact());
            }
            tracing::debug!(call_id = %self.a_call_id, ?leg, "session refreshed");
            return;
        }
        match status {
            491 => {
                // RFC 3261 §14.1: 2.1-4 s if Vigil owns the Call-ID (B leg), else 0-2 s.
                let delay = match leg {
                    Leg::B => env.ids.jitter(2100, 4000),
                    Leg::A => env.ids.jitter(0, 2000),
                };
                session.retry_in(now, delay);
            }
            405 | 501 if kind == Some(RefreshKind::Update) => {
                session.refuse_update();
                tracing::info!(call_id = %self.a_call_id, ?leg, status, "peer refuses UPDATE: refreshing with re-INVITE");
                self.send_refresh(now, leg, RefreshKind::Reinvite, env);
            }
            422 => {
                let retried = retry_after_422(&response, &info.timer)
                    .is_some_and(|interval| session.retry_with_interval(interval));
                if retried {
                    self.send_refresh(now, leg, kind.unwrap_or(RefreshKind::Update), env);
                } else {
                    self.refresh_failed(now, leg, RefreshFailure::Status(status), env);
                }
            }
            // The dialog is gone (RFC 3261 §12.2.1.2): nothing left to refresh.
            481 => {
                env.metrics.refresh_failed(RefreshFailureCause::Status);
                self.session_timeout(now, leg, RefreshFailure::Status(status), env)
            }
            _ => self.refresh_failed(now, leg, RefreshFailure::Status(status), env),
        }
    }

    /// Vigil's refresh got no final answer at all (Timer B or F).
    pub(super) fn on_refresh_timeout(&mut self, now: Instant, leg: Leg, env: &mut Env<'_>) {
        if self.ending.is_none() {
            self.refresh_failed(now, leg, RefreshFailure::Timeout, env);
        }
    }

    /// The policy serving `leg`: its trunk's, or the default for a user's leg.
    fn policy<'e>(&self, leg: Leg, env: &Env<'e>) -> &'e dyn SessionPolicy {
        env.policies.for_trunk(match leg {
            Leg::A => self.parties.policy_in.as_deref(),
            Leg::B => self.parties.policy_out.as_deref(),
        })
    }

    /// A refresh that timed out or got an error status (not 481): the policy
    /// decides (default: end the call).
    fn refresh_failed(
        &mut self,
        now: Instant,
        leg: Leg,
        failure: RefreshFailure,
        env: &mut Env<'_>,
    ) {
        env.metrics.refresh_failed(match failure {
            RefreshFailure::Timeout => RefreshFailureCause::Timeout,
            _ => RefreshFailureCause::Status,
        });
        let decision = match self.view(leg, now) {
            Some(view) => self.policy(leg, env).refresh_failed(&view, failure),
            None => return,
        };
        let Some(session) = self.leg_mut(leg).session.as_mut() else {
            return;
        };
        match decision {
            FailureDecision::Hangup => self.session_timeout(now, leg, failure, env),
            FailureDecision::Retry(delay) => session.retry_in(now, delay.min(MAX_POLICY_RETRY)),
            FailureDecision::Ignore => session.proof_of_life(now, None),
        }
    }

    /// The session on `leg` is dead: BYE on both legs (with `Reason: SIP;cause=408`),
    /// CDR `session-timeout`.
    fn session_timeout(
        &mut self,
        now: Instant,
        leg: Leg,
        failure: RefreshFailure,
        env: &mut Env<'_>,
    ) {
        if self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.a_call_id, ?leg, ?failure, "session timer expired");
        self.finish(
            now,
            Ending {
                reason: EndReason::SessionTimeout,
                by: EndedBy::Switch,
                sip_code: None,
                refresh_failure: Some(failure),
            },
            env,
        );
        self.hang_up_both(now, env);
    }

    /// BYE on both legs (the call's ending is already recorded).
    pub(super) fn hang_up_both(&mut self, now: Instant, env: &mut Env<'_>) {
        self.abandon_relays(now, env);
        self.hang_up_a(now, true, env);
        self.hang_up_b(now, env);
    }
}
