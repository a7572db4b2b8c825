//! Each leg's session timer once the call is up (RFC 4028), as the call's rules
//! see it: when to refresh and how (the trunk's policy decides), what a failed
//! refresh means (the policy again), a silent peer, and the maximum duration of a
//! call with a leg that has no timer. A dead leg ends the whole call: BYE on both
//! legs, CDR `session-timeout` with `refresh_failure`. The refresh requests
//! themselves are the leg's ([`super::leg::CallLeg::send_refresh`]).

use std::time::{Duration, Instant};

use super::leg::RefreshAnswer;
use super::{Call, CallTimer, Ending, Env, Leg};
use crate::cdr::{EndReason, EndedBy};
use crate::metrics::RefreshFailureCause;
use crate::policy::{FailureDecision, LegView, RefreshDecision, RefreshFailure, SessionPolicy};
use crate::session_timer::negotiate::Agreed;
use crate::session_timer::{LegEvent, RefreshKind, Refresher, UasOutcome};
use crate::sip::Response;

/// The longest a policy may postpone a failed refresh.
const MAX_POLICY_RETRY: Duration = Duration::from_secs(60);

impl Call {
    /// The call is answered: both legs' timers start now. A leg without a timer
    /// bounds the whole call to its trunk's `no_timer_max_duration`.
    pub(super) fn start_sessions(&mut self, now: Instant, b_agreed: Option<Agreed>) {
        if let UasOutcome::Timer(agreed) = self.a.negotiated() {
            self.a.leg.start_session(now, agreed);
        }
        if let Some(agreed) = b_agreed {
            self.b.leg.start_session(now, agreed);
        }
        let limit = [&self.a.leg, &self.b.leg]
            .into_iter()
            .filter(|l| l.session().is_none())
            .map(|l| l.timer_config().no_timer_max_duration)
            .filter(|&s| s > 0)
            .min();
        if let Some(seconds) = limit {
            self.timers.set(
                CallTimer::MaxDuration,
                now + Duration::from_secs(u64::from(seconds)),
            );
        }
        tracing::debug!(
            call_id = %self.a.call_id(),
            a_timer = ?self.a.leg.session().map(|s| s.agreed()),
            b_timer = ?self.b.leg.session().map(|s| s.agreed()),
            max_duration = ?limit,
            "session timers"
        );
    }

    pub(super) fn on_max_duration(&mut self, now: Instant, env: &mut Env<'_>) {
        if self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.a.call_id(), "a leg without session timer reached no_timer_max_duration");
        self.end(now, EndReason::MaxDuration, EndedBy::Switch, None, env);
        self.hang_up_both(now, env);
    }

    /// Fires whatever the legs' session timers say is due.
    pub(super) fn poll_sessions(&mut self, now: Instant, env: &mut Env<'_>) {
        for leg in [Leg::A, Leg::B] {
            while let Some(event) = self.leg_mut(leg).poll_session(now) {
                match event {
                    LegEvent::Expired { at } => {
                        let session = self.leg(leg).session();
                        let in_flight = session.is_some_and(|s| s.in_flight().is_some());
                        let failure = match session {
                            Some(s) if s.agreed().refresher == Refresher::Peer && !in_flight => {
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
                        // The CDR ends when the session did: a call restored
                        // after its session expired ends at its expiry.
                        self.session_timeout_at(now, at.min(now), leg, failure, env);
                    }
                    LegEvent::RefreshDue { due } => self.refresh_due(now, due, leg, env),
                }
            }
        }
    }

    fn view(&self, leg: Leg, now: Instant) -> Option<LegView<'_>> {
        let session = self.leg(leg).session()?;
        let agreed = session.agreed();
        Some(LegView {
            call_id: self.a.call_id(),
            b_call_id: self.b.call_id(),
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
        let busy = self.a.leg.awaits_ack()
            || self.b.leg.awaits_ack()
            || self.relays.offer_from().is_some()
            || self.media_offer_from().is_some();
        if busy {
            if let Some(s) = self.leg_mut(leg).session_mut() {
                s.retry_in(now, Duration::from_secs(1));
            }
            return;
        }
        let Some(view) = self.view(leg, now) else {
            return;
        };
        let decision = self.policy(leg, env).refresh_due(&view);
        let allows_update = self.leg(leg).allows_update();
        let Some(session) = self.leg_mut(leg).session_mut() else {
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
        tracing::debug!(call_id = %self.a.call_id(), ?leg, ?kind, "session refresh sent");
        self.leg_mut(leg).send_refresh(now, kind, env);
    }

    /// The answer to Vigil's refresh on `leg`.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        leg: Leg,
        response: Response,
        env: &mut Env<'_>,
    ) {
        if self.ending.is_some() {
            return;
        }
        let status = response.status;
        match self.leg_mut(leg).on_refresh_answer(now, &response, env) {
            RefreshAnswer::Ignored | RefreshAnswer::Retrying => {}
            RefreshAnswer::Refreshed => {
                tracing::debug!(call_id = %self.a.call_id(), ?leg, "session refreshed");
            }
            RefreshAnswer::SwitchedToReinvite => {
                tracing::info!(call_id = %self.a.call_id(), ?leg, status, "peer refuses UPDATE: refreshing with re-INVITE");
            }
            // The dialog is gone (RFC 3261 §12.2.1.2): nothing left to refresh.
            RefreshAnswer::DialogGone => {
                env.metrics.refresh_failed(RefreshFailureCause::Status);
                self.session_timeout(now, leg, RefreshFailure::Status(status), env)
            }
            RefreshAnswer::Failed(status) => {
                self.refresh_failed(now, leg, RefreshFailure::Status(status), env)
            }
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
        let Some(session) = self.leg_mut(leg).session_mut() else {
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
        self.session_timeout_at(now, now, leg, failure, env);
    }

    /// The same, for a session that was over at `ended_at` (the CDR's end).
    fn session_timeout_at(
        &mut self,
        now: Instant,
        ended_at: Instant,
        leg: Leg,
        failure: RefreshFailure,
        env: &mut Env<'_>,
    ) {
        if self.ending.is_some() {
            return;
        }
        tracing::info!(call_id = %self.a.call_id(), ?leg, ?failure, "session timer expired");
        self.finish_at(
            now,
            ended_at,
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
}
