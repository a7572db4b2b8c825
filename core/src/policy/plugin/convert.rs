//! The host's side of the ABI: the policy views lent to the plugin as
//! borrowed `#[repr(C)]` views (nothing allocated), and its raw decisions read
//! back as policy decisions, validated. The views and decisions are the API
//! crate's own types; its `declare_plugin!` shims do the same conversions the
//! other way round, on the plugin's side.

use std::time::Duration;

use vigil_plugin_api::abi::{
    self, RawCallStartDecision, RawCallStartView, RawCallView, RawContactView, RawFailureDecision,
    RawHeader, RawKeepaliveDecision, RawLegView, RawMediaTimeoutDecision, RawMediaTimeoutView,
    RawRefreshDecision, RawRefreshFailure, RawRouteDecision, RawRouteView, RawStr,
};

use super::sink::{Hook, RouteParts, invalid};
use crate::policy::{
    CallOverrides, CallStartDecision, CallStartView, CallView, ContactView, FailureDecision,
    HookError, KeepaliveDecision, Leg, LegView, MediaDirection, MediaTimeoutDecision,
    MediaTimeoutView, RefreshDecision, RefreshFailure, RefreshMethod, Refresher, RouteDecision,
    RouteView,
};

// Views: lent to the plugin as borrowed ABI views.

fn raw(s: &str) -> RawStr {
    RawStr::new(s)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn raw_call_start(view: &CallStartView<'_>) -> RawCallStartView {
    RawCallStartView {
        call_id: raw(view.call_id),
        trunk_in: raw(view.trunk_in),
        trunk_out: raw(view.trunk_out),
        caller: raw(view.caller),
        callee: raw(view.callee),
        source: raw(view.source),
    }
}

pub(super) fn raw_leg(view: &LegView<'_>) -> RawLegView {
    RawLegView {
        call_id: raw(view.call_id),
        b_call_id: raw(view.b_call_id),
        trunk: raw(view.trunk),
        caller: raw(view.caller),
        callee: raw(view.callee),
        since_answer_ms: millis(view.since_answer),
        session_expires: view.session_expires,
        refresh_count: view.refresh_count,
        leg: match view.leg {
            Leg::A => abi::LEG_A,
            Leg::B => abi::LEG_B,
        },
        refresher: match view.refresher {
            Refresher::Vigil => abi::REFRESHER_VIGIL,
            Refresher::Peer => abi::REFRESHER_PEER,
        },
    }
}

pub(super) fn raw_contact(view: &ContactView<'_>) -> RawContactView {
    RawContactView {
        user: raw(view.user),
        contact: raw(view.contact),
        received: raw(view.received),
        sent: view.sent,
    }
}

pub(super) fn raw_call(view: &CallView<'_>) -> RawCallView {
    RawCallView {
        call_id: raw(view.call_id),
        b_call_id: raw(view.b_call_id),
        trunk_in: raw(view.trunk_in),
        trunk_out: raw(view.trunk_out),
        caller: raw(view.caller),
        callee: raw(view.callee),
        end_reason: raw(view.end_reason),
        since_answer_ms: view.since_answer.map_or(0, millis),
        answered: view.since_answer.is_some().into(),
    }
}

pub(super) fn raw_media_timeout(view: &MediaTimeoutView<'_>) -> RawMediaTimeoutView {
    RawMediaTimeoutView {
        call_id: raw(view.call_id),
        b_call_id: raw(view.b_call_id),
        trunk: raw(view.trunk),
        caller: raw(view.caller),
        callee: raw(view.callee),
        silent_for_ms: millis(view.silent_for),
        since_answer_ms: millis(view.since_answer),
        direction: match view.direction {
            MediaDirection::CallerToCallee => abi::MEDIA_CALLER_TO_CALLEE,
            MediaDirection::CalleeToCaller => abi::MEDIA_CALLEE_TO_CALLER,
            MediaDirection::Both => abi::MEDIA_BOTH,
        },
        on_hold: view.on_hold.into(),
    }
}

/// The view's headers as the ABI lends them (allocates only when there are
/// some; most INVITEs carry none or one).
pub(super) fn raw_headers(view: &RouteView<'_>) -> Vec<RawHeader> {
    view.headers
        .iter()
        .map(|h| RawHeader {
            name: raw(h.name),
            value: raw(h.value),
        })
        .collect()
}

/// `headers` is [`raw_headers`] of the same view, which must outlive the
/// returned one.
pub(super) fn raw_route(view: &RouteView<'_>, headers: &[RawHeader]) -> RawRouteView {
    RawRouteView {
        call_id: raw(view.call_id),
        trunk_in: raw(view.trunk_in),
        caller: raw(view.caller),
        callee: raw(view.callee),
        source: raw(view.source),
        headers: headers.as_ptr(),
        header_count: headers.len(),
    }
}

pub(super) fn raw_failure(failure: RefreshFailure) -> RawRefreshFailure {
    let (kind, status) = match failure {
        RefreshFailure::Timeout => (abi::FAILURE_TIMEOUT, 0),
        RefreshFailure::Status(code) => (abi::FAILURE_STATUS, code),
        RefreshFailure::Expired => (abi::FAILURE_EXPIRED, 0),
        RefreshFailure::Policy => (abi::FAILURE_POLICY, 0),
    };
    RawRefreshFailure { kind, status }
}

// Decisions: the plugin's raw answers back as policy decisions, validated.

pub(super) fn call_start_decision(
    raw: RawCallStartDecision,
    reason: Option<String>,
) -> Result<Option<CallStartDecision>, HookError> {
    let hook = Hook::CallStart;
    match raw.kind {
        abi::CALL_START_NONE => Ok(None),
        abi::CALL_START_ACCEPT => {
            let refresh_method = match raw.refresh_method {
                abi::METHOD_UNSET => None,
                abi::METHOD_AUTO => Some(RefreshMethod::Auto),
                abi::METHOD_UPDATE => Some(RefreshMethod::Update),
                abi::METHOD_REINVITE => Some(RefreshMethod::Reinvite),
                other => {
                    return Err(invalid(
                        hook,
                        format_args!("unknown refresh method {other}"),
                    ));
                }
            };
            Ok(Some(CallStartDecision::Accept(CallOverrides {
                ttl: (raw.has_ttl != 0).then_some(raw.ttl),
                update_segment: (raw.has_update_segment != 0).then_some(raw.update_segment),
                refresh_method,
                no_timer_max_duration: (raw.has_no_timer_max_duration != 0)
                    .then_some(raw.no_timer_max_duration),
            })))
        }
        abi::CALL_START_REJECT => {
            let (status, reason) = reject(hook, raw.reject_status, reason)?;
            Ok(Some(CallStartDecision::Reject {
                status,
                reason: reason.into(),
            }))
        }
        other => Err(invalid(hook, format_args!("unknown decision kind {other}"))),
    }
}

/// A reject's status and reason, as call_start and route take them.
fn reject(hook: Hook, status: u16, reason: Option<String>) -> Result<(u16, String), HookError> {
    if !(400..=699).contains(&status) {
        return Err(invalid(
            hook,
            format_args!("reject status {status} is not in 400..=699"),
        ));
    }
    let Some(reason) = reason else {
        return Err(invalid(hook, "a reject without a reason phrase"));
    };
    // The phrase goes into a status line: a CR or LF would let it write
    // headers of its own.
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(hook, "the reason phrase has control characters"));
    }
    Ok((status, reason))
}

/// The trunks and numbers are taken as sent; whether the engine can use
/// them is the chain's check (`policy::route`), the same for every backend.
pub(super) fn route_decision(
    raw: RawRouteDecision,
    parts: RouteParts,
    reason: Option<String>,
) -> Result<Option<RouteDecision>, HookError> {
    let hook = Hook::Route;
    Ok(Some(match raw.kind {
        abi::ROUTE_NONE => return Ok(None),
        abi::ROUTE_DEFAULT => RouteDecision::Default,
        abi::ROUTE_TRUNKS => RouteDecision::Route {
            trunks: parts.trunks,
            callee: parts.callee,
            caller: parts.caller,
        },
        abi::ROUTE_REJECT => {
            let (status, reason) = reject(hook, raw.reject_status, reason)?;
            RouteDecision::Reject {
                status,
                reason: reason.into(),
            }
        }
        other => return Err(invalid(hook, format_args!("unknown decision kind {other}"))),
    }))
}

pub(super) fn refresh_decision(
    raw: RawRefreshDecision,
) -> Result<Option<RefreshDecision>, HookError> {
    Ok(Some(match raw.kind {
        abi::REFRESH_NONE => return Ok(None),
        abi::REFRESH_DEFAULT => RefreshDecision::Default,
        abi::REFRESH_UPDATE => RefreshDecision::Update,
        abi::REFRESH_REINVITE => RefreshDecision::Reinvite,
        abi::REFRESH_SKIP => RefreshDecision::Skip,
        abi::REFRESH_HANGUP => RefreshDecision::Hangup,
        other => {
            return Err(invalid(
                Hook::RefreshDue,
                format_args!("unknown decision kind {other}"),
            ));
        }
    }))
}

pub(super) fn failure_decision(
    raw: RawFailureDecision,
) -> Result<Option<FailureDecision>, HookError> {
    Ok(Some(match raw.kind {
        abi::FAILURE_DECISION_NONE => return Ok(None),
        abi::FAILURE_DECISION_HANGUP => FailureDecision::Hangup,
        abi::FAILURE_DECISION_RETRY => {
            FailureDecision::Retry(Duration::from_millis(raw.retry_after_ms))
        }
        abi::FAILURE_DECISION_IGNORE => FailureDecision::Ignore,
        other => {
            return Err(invalid(
                Hook::RefreshFailed,
                format_args!("unknown decision kind {other}"),
            ));
        }
    }))
}

pub(super) fn keepalive_decision(
    raw: RawKeepaliveDecision,
    payload: Option<Vec<u8>>,
) -> Result<Option<KeepaliveDecision>, HookError> {
    let hook = Hook::KeepaliveTick;
    Ok(Some(match raw.kind {
        abi::KEEPALIVE_NONE => return Ok(None),
        abi::KEEPALIVE_DEFAULT => KeepaliveDecision::Default,
        abi::KEEPALIVE_SKIP => KeepaliveDecision::Skip,
        abi::KEEPALIVE_PAYLOAD => match payload {
            Some(bytes) => KeepaliveDecision::Payload(bytes.into()),
            None => return Err(invalid(hook, "a payload decision without a payload")),
        },
        other => return Err(invalid(hook, format_args!("unknown decision kind {other}"))),
    }))
}

pub(super) fn media_timeout_decision(
    raw: RawMediaTimeoutDecision,
) -> Result<Option<MediaTimeoutDecision>, HookError> {
    Ok(Some(match raw.kind {
        abi::MEDIA_TIMEOUT_NONE => return Ok(None),
        abi::MEDIA_TIMEOUT_HANGUP => MediaTimeoutDecision::Hangup,
        abi::MEDIA_TIMEOUT_IGNORE => MediaTimeoutDecision::Ignore,
        other => {
            return Err(invalid(
                Hook::MediaTimeout,
                format_args!("unknown decision kind {other}"),
            ));
        }
    }))
}
