//! Decision points that operators customise: a new call is routed, a call
//! starts, a refresh is due, a refresh failed, a keep-alive is due, the call
//! hangs up, a relayed call's media went silent. The core asks a
//! [`SessionPolicy`], which always answers; the [`BuiltinPolicy`] is the
//! behaviour documented in README when nothing is configured.
//!
//! Operators' code comes as [`PolicySource`]s — a Lua script ([`lua`]) or a
//! vendor plugin ([`plugin`]) — which may decline to decide (`Ok(None)`) or fail
//! (`Err`). A trunk's chain asks its plugin, then its script, then falls back to
//! the built-in decision; a source that fails is reported and skipped.
//!
//! A policy sees a read-only view, never the call's internals, and answers with
//! a decision the call can always carry out. The views and decisions are the
//! plugin API's ([`vigil_plugin_api`]), re-exported here: the core, Lua
//! scripts and plugins share one definition, so a hook or a field is written
//! once. A view borrows what the call already holds; what the call keeps in
//! another form (an address, an end reason) is written as text when the view
//! is built, once per hook call (an address on the stack, see [`AddrText`]).

mod addr;
mod chain;
mod load;
pub mod lua;
pub mod plugin;
mod route;

pub use addr::AddrText;
pub use chain::{Policies, PolicyChain};
pub use load::{PolicyLoadError, PolicyLoader, check};
pub use route::{MAX_ROUTE_USER, MAX_TRUNK_NAME, RouteProblem, route_headers};
pub use vigil_plugin_api::{
    CallOverrides, CallStartDecision, CallStartView, CallView, ContactView, FailureDecision,
    HeaderView, KeepaliveDecision, Leg, LegView, MAX_ROUTE_TRUNKS, MediaDirection,
    MediaTimeoutDecision, MediaTimeoutView, ROUTE_HEADERS, RefreshDecision, RefreshFailure,
    RefreshMethod, Refresher, RouteDecision, RouteView,
};

pub use crate::metrics::{PolicyBackend, PolicyHook};

/// The CDR's `refresh_failure` value: `timeout`, `expired`, `policy` or the
/// status code.
pub fn refresh_failure_cdr_value(failure: RefreshFailure) -> String {
    match failure {
        RefreshFailure::Timeout => "timeout".into(),
        RefreshFailure::Expired => "expired".into(),
        RefreshFailure::Policy => "policy".into(),
        RefreshFailure::Status(code) => code.to_string(),
    }
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

    /// Called when an answered call's relayed RTP has been silent for
    /// `media.timeout` (in the configured `timeout_mode`). `Hangup` ends it
    /// (BYE both legs, CDR `media-timeout`); `Ignore` keeps it, and the
    /// question comes back if the media is still silent after another
    /// `media.timeout`.
    fn media_timeout(&self, _view: &MediaTimeoutView<'_>) -> MediaTimeoutDecision {
        MediaTimeoutDecision::Hangup
    }

    /// Called for a new INVITE before Vigil picks its route (the prefix
    /// routes, else the source's default route): `Default` routes as
    /// configured, `Route` tries the
    /// trunks it names in order (with the B leg's callee and caller
    /// replaced where set), `Reject` answers the caller. A decision that
    /// reaches the core passed [`route::check`]; whether its trunks exist
    /// is the engine's to check.
    fn route(&self, _view: &RouteView<'_>) -> RouteDecision {
        RouteDecision::Default
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

    fn media_timeout(
        &self,
        view: &MediaTimeoutView<'_>,
    ) -> Result<Option<MediaTimeoutDecision>, HookError>;

    /// May answer a decision [`route::check`] refuses: the chain checks it.
    fn route(&self, view: &RouteView<'_>) -> Result<Option<RouteDecision>, HookError>;
}

/// The behaviour with no policy configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinPolicy;

impl SessionPolicy for BuiltinPolicy {}
