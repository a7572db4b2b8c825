//! Between the core's types and the ABI's: the core's views as borrowed
//! `#[repr(C)]` views (nothing allocated; an address is formatted on the
//! stack), and the plugin's raw decisions back as the core's, validated.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use vigil_plugin_api::abi::{
    self, RawCallStartDecision, RawFailureDecision, RawKeepaliveDecision, RawLegView,
    RawRefreshDecision, RawRefreshFailure, RawStr,
};

use super::sink::{Hook, invalid};
use crate::config::RefreshMethod;
use crate::policy::Leg;
use crate::policy::{
    CallOverrides, CallStartDecision, FailureDecision, HookError, KeepaliveDecision, LegView,
    RefreshDecision, RefreshFailure,
};
use crate::session_timer::Refresher;

// Views: the core's views as borrowed ABI views.

pub(super) fn raw(s: &str) -> RawStr {
    RawStr::new(s)
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

pub(super) fn raw_failure(failure: RefreshFailure) -> RawRefreshFailure {
    let (kind, status) = match failure {
        RefreshFailure::Timeout => (abi::FAILURE_TIMEOUT, 0),
        RefreshFailure::Status(code) => (abi::FAILURE_STATUS, code),
        RefreshFailure::Expired => (abi::FAILURE_EXPIRED, 0),
        RefreshFailure::Policy => (abi::FAILURE_POLICY, 0),
    };
    RawRefreshFailure { kind, status }
}

/// A socket address as `ip:port`, written on the stack so that building a view
/// allocates nothing. 80 bytes hold the longest form,
/// `[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535` (64).
pub(super) struct AddrText {
    buf: [u8; 80],
    len: usize,
}

impl AddrText {
    pub(super) fn new(addr: SocketAddr) -> AddrText {
        let mut text = AddrText {
            buf: [0; 80],
            len: 0,
        };
        // Cannot fail: the buffer holds the longest address (see above).
        let _ = write!(text, "{addr}");
        text
    }

    pub(super) fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this is UTF-8.
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// Decisions: the ABI's back into the core's, validated.

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
            let status = raw.reject_status;
            if !(400..=699).contains(&status) {
                return Err(invalid(
                    hook,
                    format_args!("reject status {status} is not in 400..=699"),
                ));
            }
            let Some(reason) = reason else {
                return Err(invalid(hook, "a reject without a reason phrase"));
            };
            // The phrase goes into a status line: a CR or LF would let it
            // write headers of its own.
            if reason.chars().any(|c| c.is_control() && c != '\t') {
                return Err(invalid(hook, "the reason phrase has control characters"));
            }
            Ok(Some(CallStartDecision::Reject { status, reason }))
        }
        other => Err(invalid(hook, format_args!("unknown decision kind {other}"))),
    }
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
            Some(bytes) => KeepaliveDecision::Payload(bytes),
            None => return Err(invalid(hook, "a payload decision without a payload")),
        },
        other => return Err(invalid(hook, format_args!("unknown decision kind {other}"))),
    }))
}
