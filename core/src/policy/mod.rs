//! Decision points of a call's life that operators customise: a refresh is due,
//! a refresh failed, the call hangs up. The core asks a [`SessionPolicy`]; the
//! [`BuiltinPolicy`] is the behaviour documented in README when nothing is
//! configured. Lua scripts and plugins (a later issue) implement the same trait.
//!
//! A policy sees a read-only view, never the call's internals, and answers with
//! a decision the call can always carry out.

use std::time::Duration;

use crate::call::Leg;
use crate::cdr::EndReason;
use crate::session_timer::Who;

/// What a refresh hook sees of one leg.
#[derive(Debug, Clone)]
pub struct LegView<'a> {
    pub call_id: &'a str,
    pub b_call_id: &'a str,
    pub trunk: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    pub leg: Leg,
    /// The negotiated Session-Expires, seconds.
    pub session_expires: u32,
    pub refresher: Who,
    pub refresh_count: u32,
    pub since_answer: Duration,
}

/// What a hang-up hook sees of the call.
#[derive(Debug, Clone)]
pub struct CallView<'a> {
    pub call_id: &'a str,
    pub b_call_id: &'a str,
    pub trunk_in: &'a str,
    pub trunk_out: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    pub end_reason: EndReason,
    pub since_answer: Option<Duration>,
}

/// Why a refresh failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    /// No final answer within the transaction timeout (32 s on UDP).
    Timeout,
    /// A final error status.
    Status(u16),
    /// The peer was the refresher and never refreshed.
    Expired,
    /// A policy's `refresh_due` decided to hang up.
    Policy,
}

impl RefreshFailure {
    /// The CDR's `refresh_failure` value: `timeout`, `expired` or the status code.
    pub fn as_cdr_value(self) -> String {
        match self {
            RefreshFailure::Timeout => "timeout".into(),
            RefreshFailure::Expired => "expired".into(),
            RefreshFailure::Policy => "policy".into(),
            RefreshFailure::Status(code) => code.to_string(),
        }
    }
}

/// The refresh-due decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The configured method (`refresh_method`).
    Default,
    Update,
    Reinvite,
    /// Do not refresh now; treat the session as refreshed once.
    Skip,
    /// End the call.
    Hangup,
}

/// The refresh-failed decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureDecision {
    /// End the call (BYE both legs, CDR `session-timeout`).
    Hangup,
    /// Try again after this long (never past the session's expiry).
    Retry(Duration),
    /// Carry on as if the refresh had succeeded.
    Ignore,
}

/// What a keep-alive hook sees of a registered contact.
#[derive(Debug, Clone)]
pub struct ContactView<'a> {
    pub user: &'a str,
    pub contact: &'a str,
    pub received: std::net::SocketAddr,
    /// Keep-alives sent to this contact so far.
    pub sent: u64,
}

/// The keep-alive-tick decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepaliveDecision {
    /// Send what `nat_keepalive` says.
    Default,
    /// Send nothing this period.
    Skip,
    /// Send these bytes instead.
    Payload(Vec<u8>),
}

/// The decision points. Every method has the built-in behaviour as its default.
pub trait SessionPolicy: Send + Sync {
    fn keepalive_tick(&self, _view: &ContactView<'_>) -> KeepaliveDecision {
        KeepaliveDecision::Default
    }

    fn refresh_due(&self, _view: &LegView<'_>) -> RefreshDecision {
        RefreshDecision::Default
    }

    /// Called for failures other than timeout, 408 and 481, which always end the
    /// call (the dialog is gone).
    fn refresh_failed(&self, _view: &LegView<'_>, _failure: RefreshFailure) -> FailureDecision {
        FailureDecision::Hangup
    }

    fn hangup(&self, _view: &CallView<'_>) {}
}

/// The behaviour with no policy configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinPolicy;

impl SessionPolicy for BuiltinPolicy {}
