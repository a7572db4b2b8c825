//! Decision points that operators customise: a call starts, a refresh is due,
//! a refresh failed, a keep-alive is due, the call hangs up. The core asks a
//! [`SessionPolicy`], which always answers; the [`BuiltinPolicy`] is the
//! behaviour documented in README when nothing is configured.
//!
//! Operators' code comes as [`PolicySource`]s — a Lua script ([`lua`]) or a
//! vendor plugin ([`plugin`]) — which may decline to decide (`Ok(None)`) or fail
//! (`Err`). A trunk's chain asks its plugin, then its script, then falls back to
//! the built-in decision; a source that fails is reported and skipped.
//!
//! A policy sees a read-only view, never the call's internals, and answers with
//! a decision the call can always carry out.

use std::time::Duration;

use crate::cdr::EndReason;
use crate::config::RefreshMethod;
pub use crate::metrics::{PolicyBackend, PolicyHook};
use crate::session_timer::Refresher;

mod chain;
mod load;
pub mod lua;
pub mod plugin;

pub use chain::{Policies, PolicyChain};
pub use load::{PolicyLoadError, PolicyLoader, check};

/// Which side of a call: what a policy is told about a leg, and how a call
/// names its two legs.
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

/// What a call-start hook sees: a new INVITE that was admitted and routed.
#[derive(Debug, Clone)]
pub struct CallStartView<'a> {
    pub call_id: &'a str,
    /// The trunk (or `user:<name>`) the call comes from.
    pub trunk_in: &'a str,
    /// The trunk (or `user:<name>`) the call goes to.
    pub trunk_out: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// The address the INVITE came from.
    pub source: std::net::SocketAddr,
}

/// Session-timer settings a call-start hook may change for this call only (both
/// legs). The core validates them like the config (`ttl` not below `min_se`,
/// `update_segment` in 2..=10); an invalid one is reported and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOverrides {
    pub ttl: Option<u32>,
    pub update_segment: Option<u32>,
    pub refresh_method: Option<RefreshMethod>,
    pub no_timer_max_duration: Option<u32>,
}

/// The call-start decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallStartDecision {
    /// Place the call, with these changes to its session timers (none by default).
    Accept(CallOverrides),
    /// Answer the caller with this final status (400..=699) and reason phrase.
    Reject { status: u16, reason: String },
}

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
    pub refresher: Refresher,
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

/// Extra CDR fields a hang-up hook adds (the CDR's `extra` object).
pub type ExtraFields = Vec<(String, String)>;

/// The decision points as the core asks them: every method answers, and has the
/// built-in behaviour as its default.
pub trait SessionPolicy: Send + Sync {
    fn call_start(&self, _view: &CallStartView<'_>) -> CallStartDecision {
        CallStartDecision::Accept(CallOverrides::default())
    }

    fn keepalive_tick(&self, _view: &ContactView<'_>) -> KeepaliveDecision {
        KeepaliveDecision::Default
    }

    fn refresh_due(&self, _view: &LegView<'_>) -> RefreshDecision {
        RefreshDecision::Default
    }

    /// Called when Vigil's refresh timed out or got an error status, except 481
    /// (the dialog is gone) and a session that already expired: those always end
    /// the call.
    fn refresh_failed(&self, _view: &LegView<'_>, _failure: RefreshFailure) -> FailureDecision {
        FailureDecision::Hangup
    }

    /// The call is ending (whoever ended it): observe it, and add CDR fields.
    fn hangup(&self, _view: &CallView<'_>) -> ExtraFields {
        Vec::new()
    }
}

/// Why a hook of a [`PolicySource`] gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The script raised an error (the message carries `file:line`).
    #[error("script error: {0}")]
    Script(String),
    /// The script ran past its instruction budget for one hook call; `at` is
    /// the `file:line` it was running when cut off (empty if unknown).
    #[error("{at}instruction budget of {limit} exhausted (endless loop?)")]
    InstructionBudget { limit: u64, at: String },
    /// The script's state reached its memory limit.
    #[error("memory limit of {0} bytes reached")]
    MemoryLimit(usize),
    /// The plugin panicked; the panic was caught inside it.
    #[error("plugin panicked: {0}")]
    Panic(String),
    /// The plugin returned an error status.
    #[error("plugin returned error {0}")]
    PluginStatus(i32),
    /// The answer is not a decision this hook can take.
    #[error("invalid decision: {0}")]
    InvalidDecision(String),
}

/// Operators' code that may decide at the decision points: a Lua script or a
/// plugin. `Ok(None)` means "no decision": the next source in the trunk's chain,
/// and finally the built-in policy, decides.
pub trait PolicySource: Send + Sync {
    /// What to call it in logs: the script's or the library's path.
    fn name(&self) -> &str;

    /// The kind of code it is (the metrics' `backend` label).
    fn backend(&self) -> PolicyBackend;

    fn call_start(&self, view: &CallStartView<'_>) -> Result<Option<CallStartDecision>, HookError>;

    fn refresh_due(&self, view: &LegView<'_>) -> Result<Option<RefreshDecision>, HookError>;

    fn refresh_failed(
        &self,
        view: &LegView<'_>,
        failure: RefreshFailure,
    ) -> Result<Option<FailureDecision>, HookError>;

    fn keepalive_tick(
        &self,
        view: &ContactView<'_>,
    ) -> Result<Option<KeepaliveDecision>, HookError>;

    /// Adds CDR fields to `extra` (every source of the chain is asked).
    fn hangup(&self, view: &CallView<'_>, extra: &mut ExtraFields) -> Result<(), HookError>;
}

/// The behaviour with no policy configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinPolicy;

impl SessionPolicy for BuiltinPolicy {}
