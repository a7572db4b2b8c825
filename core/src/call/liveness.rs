//! Whether a relayed call's media is alive (issue 17): a `query` at the
//! moment its media could have died (`media.timeout`, or `hold_timeout` on
//! hold), judged in the configured `timeout_mode`; dead media asks the
//! `media_timeout` policy, then ends the call with BYE on both legs.

use std::time::{Duration, Instant, SystemTime};

use super::build::Body;
use super::media::{MediaOp, Silence, packet_came_by};
use super::{Call, Env};
use crate::cdr::{EndReason, EndedBy};
use crate::media::{Command, NgError, Query, Reply};
use crate::metrics::Metrics;
use crate::policy::{MediaDirection, MediaTimeoutDecision, MediaTimeoutView};
use crate::sdp;

/// At least this long between two looks at a call's media.
const MIN_CHECK: Duration = Duration::from_secs(1);

impl Call {
    /// The call is answered: its media is looked at once `timeout` could
    /// have run out.
    pub(super) fn start_media_checks(&mut self, now: Instant, env: &Env<'_>) {
        let (Some(m), Some(relay)) = (self.media.as_mut(), env.media.as_ref()) else {
            return;
        };
        if m.engine.is_some() {
            m.silence_from = Some(now);
            m.check_at = Some(now + m.timeout(&relay.config));
        }
    }

    pub(super) fn on_media_check_due(&mut self, now: Instant, env: &mut Env<'_>) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        m.check_at = None;
        if self.ending.is_some() {
            return;
        }
        let command = Command::Query(Query {
            call_id: self.a.call_id().to_string(),
        });
        self.media_request(now, command, MediaOp::Check, env);
    }

    /// What a `query` says: dead media ends the call (after the policy's
    /// say); live media is looked at again when it could next run out.
    pub(super) fn on_media_check(
        &mut self,
        now: Instant,
        wall: SystemTime,
        result: Result<Reply, NgError>,
        env: &mut Env<'_>,
    ) {
        let (Some(m), Some(relay), Some(answer)) =
            (self.media.as_mut(), env.media.as_ref(), self.answer)
        else {
            return;
        };
        if self.ending.is_some() {
            return;
        }
        let timeout = m.timeout(&relay.config);
        let mode = relay.config.timeout_mode;
        let since = m.silence_from.unwrap_or(answer);
        let baseline = wall
            .checked_sub(now.saturating_duration_since(since))
            .unwrap_or(wall);
        let silence = match result {
            Ok(Reply {
                stats: Some(stats), ..
            }) => {
                let latest = stats.parties.iter().filter_map(|p| p.last_packet).max();
                m.heard_at = m.heard_at.max(latest);
                Silence::of(&stats, self.a.caller_tag(), &m.callee_tag, wall, baseline)
            }
            // rtpengine does not know the call: it deleted it on its own
            // `--timeout` (every stream was dead) or it restarted. Nothing
            // can flow through it any more: both ways are silent since the
            // last packet a look saw.
            Err(NgError::Rejected(_)) => {
                let last = m
                    .heard_at
                    .map_or(baseline, |h| packet_came_by(h).max(baseline));
                let silent = wall.duration_since(last).unwrap_or(Duration::ZERO);
                Silence {
                    caller_to_callee: silent,
                    callee_to_caller: silent,
                }
            }
            // No answer (rtpengine down or cut off): no judgement now; look
            // again a timeout later.
            _ => {
                m.check_at = Some(now + timeout);
                return;
            }
        };
        let silent_for = silence.silent_for(mode);
        if silent_for < timeout {
            let next = (timeout - silent_for).max(MIN_CHECK);
            m.check_at = Some(now + next);
            return;
        }
        let direction = silence.direction(mode);
        let on_hold = m.on_hold;
        // The side whose media died decides (the caller's when both did).
        let (trunk, policy) = match direction {
            MediaDirection::CalleeToCaller => {
                (&self.parties.trunk_out, self.parties.policy_out.as_deref())
            }
            _ => (&self.parties.trunk_in, self.parties.policy_in.as_deref()),
        };
        let view = MediaTimeoutView {
            call_id: self.a.call_id(),
            b_call_id: self.b.call_id(),
            trunk,
            caller: &self.parties.caller,
            callee: &self.parties.callee,
            direction,
            silent_for,
            on_hold,
            since_answer: now.saturating_duration_since(answer),
        };
        if env.policies.for_trunk(policy).media_timeout(&view) == MediaTimeoutDecision::Ignore {
            tracing::info!(call_id = %self.a.call_id(), direction = direction.as_str(), silent_for = silent_for.as_secs(), "media timeout ignored by policy");
            if let Some(m) = self.media.as_mut() {
                m.check_at = Some(now + timeout);
            }
            return;
        }
        tracing::info!(call_id = %self.a.call_id(), direction = direction.as_str(), silent_for = silent_for.as_secs(), "media timeout");
        Metrics::count(&env.metrics.media_timeouts);
        self.end(now, EndReason::MediaTimeout, EndedBy::Switch, None, env);
        self.hang_up_both(now, env);
    }

    /// An offer's SDP: whether the call is now on hold.
    pub(super) fn note_hold(&mut self, now: Instant, offer: Option<&Body>, env: &Env<'_>) {
        if let Some(body) = offer {
            self.set_hold(now, sdp::is_hold(body.bytes()), env);
        }
    }

    /// An answer's SDP: on hold too if it holds (an answer to a hold offer
    /// says `recvonly`).
    pub(super) fn note_hold_answer(&mut self, now: Instant, answer: Option<&Body>, env: &Env<'_>) {
        if let Some(body) = answer {
            let held = self.media.as_ref().is_some_and(|m| m.on_hold);
            self.set_hold(now, held || sdp::is_hold(body.bytes()), env);
        }
    }

    /// The call goes on or off hold. Once answered, its silence counts from
    /// now, against the timeout of its new state: a call resumed after an
    /// hour on hold is looked at again within `timeout`, not when its
    /// `hold_timeout` would have run out, and the silence of its hold is
    /// not held against it.
    pub(super) fn set_hold(&mut self, now: Instant, on_hold: bool, env: &Env<'_>) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if m.on_hold == on_hold {
            return;
        }
        m.on_hold = on_hold;
        if let (Some(_), Some(relay), None) = (m.silence_from, env.media.as_ref(), self.ending) {
            m.silence_from = Some(now);
            m.check_at = Some(now + m.timeout(&relay.config));
        }
    }
}
