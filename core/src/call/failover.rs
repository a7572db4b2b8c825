//! Failover: a call routed to trunks tries their gateways in the order its
//! plan gives ([`crate::gateway::Gateways::plan`]). The B-leg INVITE moves
//! to the next gateway when the current one gives no response within its
//! `invite_timeout`, no final answer before Timer B, or a final status in
//! its trunk's `failover_codes` — never after a 2xx, never once the caller
//! has heard early media unless `sip.failover_after_early_media` allows it,
//! never after the call was given up. The caller sees one call: its 100,
//! the provisionals of the gateway being tried, one final answer.
//!
//! A `503` with `Retry-After` rests that gateway for every call for that
//! long (RFC 3261 §21.5.4). Every attempt, with what it got, goes into the
//! CDR.

use std::sync::Arc;
use std::time::Instant;

use super::{Call, Env, Outbound};
use crate::cdr::Attempt;
use crate::gateway::{Attempts, Gateway};
use crate::sip::{HeaderName, Response};
use crate::transaction::Path;
use crate::transport::LocalSocket;

/// The gateways a call may try, and what the tried ones did. Small inline:
/// most calls go to their first gateway and never need the rest.
pub struct Failover {
    current: Arc<Gateway>,
    /// Boxed and dropped once answered with nothing to tell.
    more: Option<Box<More>>,
}

/// What only a call that may still fail over, or did, needs.
#[derive(Default)]
struct More {
    /// The gateways still to try.
    rest: Attempts,
    /// Attempts that ended without the call being answered there.
    failed: Vec<Attempt>,
    /// A provisional with SDP came from the current gateway.
    early_media: bool,
    /// How the current attempt failed, when the call did not move on.
    outcome: Option<String>,
}

/// How an attempt ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// A final status.
    Status(u16),
    /// No response within `invite_timeout`.
    NoResponse,
    /// No final response before Timer B.
    Timeout,
}

impl Failover {
    /// The first gateway of `plan` to try now gets the INVITE; `None` for
    /// an empty plan.
    pub fn new(plan: Vec<Arc<Gateway>>, now: Instant, max_attempts: u32) -> Option<Failover> {
        let (current, rest) = Attempts::start(plan, now, max_attempts)?;
        current.attempt_started();
        let more = (!rest.is_exhausted()).then(|| {
            Box::new(More {
                rest,
                ..More::default()
            })
        });
        Some(Failover { current, more })
    }

    pub fn current(&self) -> &Arc<Gateway> {
        &self.current
    }

    /// Every attempt for the CDR: the failed ones, then the current one with
    /// `last` (its final status, `None` while it had none).
    pub fn attempts(&self, last: Option<u16>) -> Vec<Attempt> {
        let more = self.more.as_deref();
        let outcome = match (more.and_then(|m| m.outcome.clone()), last) {
            (Some(outcome), _) => outcome,
            (None, Some(status)) => status.to_string(),
            (None, None) => "none".into(),
        };
        let mut all = more.map(|m| m.failed.clone()).unwrap_or_default();
        all.push(attempt(&self.current, outcome));
        all
    }

    /// The call was answered: the gateways it did not need are let go.
    pub fn answered(&mut self) {
        if let Some(more) = self.more.as_mut() {
            more.rest = Attempts::default();
            if more.failed.is_empty() && more.outcome.is_none() {
                self.more = None;
            }
        }
    }

    /// The call is over: the gateway it was with has one call less.
    pub fn release(&self) {
        self.current.call_left();
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }
}

fn attempt(gateway: &Gateway, outcome: String) -> Attempt {
    Attempt {
        trunk: gateway.trunk.clone(),
        gateway: gateway.addr.to_string(),
        outcome,
    }
}

/// Where the B leg goes for `gateway`, or `None` when no socket reaches it.
pub fn outbound_to(gateway: &Gateway, sockets: &[LocalSocket]) -> Option<Outbound> {
    let socket = LocalSocket::for_target_over(sockets, gateway.addr, gateway.proto)?;
    Some(Outbound {
        path: Path {
            local: socket.bind,
            remote: gateway.addr,
            proto: gateway.proto,
        },
        advertised: socket.advertised,
        timer: gateway.session_timer,
        request_uri: None,
        to: None,
        invite_timeout: Some(gateway.invite_timeout),
        callee: None,
        caller: None,
        auth: gateway.auth.clone(),
        prack: gateway.prack,
    })
}

impl Call {
    /// A provisional from the gateway being tried; `with_sdp`: early media.
    pub(super) fn note_provisional_media(&mut self, with_sdp: bool) {
        if with_sdp && let Some(more) = self.failover.as_mut().and_then(|f| f.more.as_mut()) {
            more.early_media = true;
        }
    }

    /// The B-leg INVITE failed as `end` says: true if the call moved on to
    /// its next gateway (the caller is told nothing), false if the failure
    /// is the call's.
    pub(super) fn fail_over(
        &mut self,
        now: Instant,
        end: AttemptEnd,
        response: Option<&Response>,
        env: &mut Env<'_>,
    ) -> bool {
        let Some(f) = self.failover.as_mut() else {
            return false;
        };
        let gateway = f.current.clone();
        let (outcome, wanted) = match end {
            AttemptEnd::Status(status) => (status.to_string(), gateway.fails_over_on(status)),
            AttemptEnd::NoResponse => ("no-response".to_string(), true),
            AttemptEnd::Timeout => ("timeout".to_string(), true),
        };
        if let Some(seconds) = response
            .filter(|r| r.status == 503)
            .and_then(|r| r.headers.get(&HeaderName::RetryAfter))
            .and_then(retry_after_seconds)
        {
            tracing::info!(trunk = %gateway.trunk, gateway = %gateway.to, seconds, "gateway asks for a rest (503 Retry-After)");
            gateway.rest(now, seconds);
        }
        if wanted {
            gateway.attempt_failed();
        }
        let ending = self.ending.is_some();
        let more = f.more();
        let may =
            wanted && !ending && (!more.early_media || env.settings.failover_after_early_media);
        let mut next = None;
        while may && next.is_none() {
            let Some(candidate) = more.rest.next(now) else {
                break;
            };
            next = outbound_to(&candidate, env.sockets).map(|o| (candidate, o));
        }
        let Some((next, outbound)) = next else {
            more.outcome = Some(outcome);
            return false;
        };
        tracing::info!(
            call_id = %self.a.call_id(), trunk = %gateway.trunk, gateway = %gateway.to,
            %outcome, next = %next.to, "gateway failed the call: trying the next"
        );
        more.failed.push(attempt(&gateway, outcome));
        more.early_media = false;
        gateway.call_left();
        next.attempt_started();
        if next.trunk != self.parties.trunk_out {
            self.parties.trunk_out = next.trunk.clone();
            self.parties.policy_out = Some(next.trunk.clone());
        }
        f.current = next;
        self.b.retarget(now, outbound, env)
    }
}

/// `Retry-After: 120 (maintenance);duration=…`: the delta-seconds, capped
/// at an hour (a gateway cannot opt out of a trunk for a day by typo).
fn retry_after_seconds(value: &str) -> Option<u32> {
    let digits: &str = value
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse::<u32>().ok().map(|s| s.min(3600))
}

#[cfg(test)]
mod tests {
    use super::retry_after_seconds;

    #[test]
    fn retry_after_reads_its_delta_seconds() {
        assert_eq!(retry_after_seconds("120"), Some(120));
        assert_eq!(retry_after_seconds(" 18000;duration=3600"), Some(3600));
        assert_eq!(retry_after_seconds("5 (overloaded)"), Some(5));
        assert_eq!(retry_after_seconds("soon"), None);
    }
}
