//! The safe side for plugin authors: borrowed views, decisions as Rust enums,
//! and the [`Plugin`] trait whose methods default to "no decision". The
//! `declare_plugin!` macro turns an implementation into the C ABI of
//! [`abi`](crate::abi).
//!
//! The views and decisions are also Vigil's own: its core asks its built-in
//! policy, Lua scripts and plugins with these very types, so a hook or a field
//! is defined once, here, and every kind of policy sees the same thing.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::abi::{self, HostSink, RawStr};

/// What a call-start hook sees: a new INVITE that was admitted and routed.
#[derive(Debug, Clone, Copy)]
pub struct CallStartView<'a> {
    pub call_id: &'a str,
    /// The trunk (or `user:<name>`) the call comes from.
    pub trunk_in: &'a str,
    /// The trunk (or `user:<name>`) the call goes to.
    pub trunk_out: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// The address the INVITE came from, `ip:port` (`[v6]:port` for IPv6).
    pub source: &'a str,
}

/// Which side of a call: what a policy is told about a leg, and how Vigil's
/// call names its two legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Towards the caller; Vigil is the UAS.
    A,
    /// Towards the trunk; Vigil is the UAC.
    B,
}

impl Leg {
    /// The leg at the other side of the call.
    pub const fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

/// Who refreshes a leg's session (RFC 4028): as negotiated on that leg, seen
/// from Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refresher {
    Vigil,
    Peer,
}

/// What a refresh hook sees of one leg.
#[derive(Debug, Clone, Copy)]
pub struct LegView<'a> {
    /// The A leg's Call-ID: the call's identity in CDRs and logs.
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
#[derive(Debug, Clone, Copy)]
pub struct CallView<'a> {
    pub call_id: &'a str,
    pub b_call_id: &'a str,
    pub trunk_in: &'a str,
    pub trunk_out: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// The CDR's end reason: `caller-bye`, `session-timeout`, `media-timeout`, ….
    pub end_reason: &'a str,
    /// `None` if the call ended before answer.
    pub since_answer: Option<Duration>,
}

/// Which media of a relayed call is silent: the RTP that stopped reaching
/// rtpengine, named by who sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaDirection {
    /// The caller's RTP towards the callee stopped (one-way audio).
    CallerToCallee,
    /// The callee's RTP towards the caller stopped (one-way audio).
    CalleeToCaller,
    /// No RTP either way.
    Both,
}

impl MediaDirection {
    /// The name scripts and logs use: `caller-to-callee`, `callee-to-caller`
    /// or `both`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaDirection::CallerToCallee => "caller-to-callee",
            MediaDirection::CalleeToCaller => "callee-to-caller",
            MediaDirection::Both => "both",
        }
    }
}

/// What a media-timeout hook sees: an answered call whose RTP, relayed
/// through rtpengine, has been silent for `media.timeout` (in the configured
/// `timeout_mode`).
#[derive(Debug, Clone, Copy)]
pub struct MediaTimeoutView<'a> {
    /// The A leg's Call-ID: the call's identity in CDRs and logs.
    pub call_id: &'a str,
    pub b_call_id: &'a str,
    /// The trunk (or `user:<name>`) of the side whose media died: the
    /// caller's for [`MediaDirection::CallerToCallee`], the callee's for
    /// [`MediaDirection::CalleeToCaller`], the call's inbound one for
    /// [`MediaDirection::Both`].
    pub trunk: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// Which media is silent.
    pub direction: MediaDirection,
    /// How long since the last packet of the silent media (it grows each
    /// time the hook is asked again after a [`MediaTimeoutDecision::Ignore`]).
    pub silent_for: Duration,
    /// Whether the call is on hold (a side sent `sendonly` or `inactive`).
    pub on_hold: bool,
    pub since_answer: Duration,
}

/// The INVITE headers a route hook sees, by their canonical names: who the
/// caller asserts or prefers to be (RFC 3325, and its draft predecessor
/// Remote-Party-ID), who diverted the call (RFC 5806 Diversion, RFC 7044
/// History-Info), and the privacy asked for (RFC 3323). Routing on anything
/// else belongs in the engine's config, not in a view of the request.
pub const ROUTE_HEADERS: [&str; 6] = [
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Diversion",
    "History-Info",
    "Privacy",
];

/// The most trunks a [`RouteDecision::Route`] may list: enough for any
/// least-cost list, few enough that a failing call cannot try for minutes.
pub const MAX_ROUTE_TRUNKS: usize = 16;

/// One header field of the INVITE: its canonical name (one of
/// [`ROUTE_HEADERS`]) and its value as received, unfolded and trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// What a route hook sees: a new INVITE that was admitted, before Vigil
/// picks where it goes (its prefix routes, or the source's default route).
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    pub call_id: &'a str,
    /// The trunk (or `user:<name>`) the call comes from.
    pub trunk_in: &'a str,
    /// The user part of the From URI.
    pub caller: &'a str,
    /// The user part of the Request-URI: the dialled number.
    pub callee: &'a str,
    /// The address the INVITE came from, `ip:port` (`[v6]:port` for IPv6).
    pub source: &'a str,
    /// The INVITE's fields among [`ROUTE_HEADERS`], in message order: a
    /// header sent several times (or as a comma-separated list over several
    /// lines) appears once per field.
    pub headers: &'a [HeaderView<'a>],
}

impl<'a> RouteView<'a> {
    /// The values of every field named `name` (compared without case), in
    /// message order.
    pub fn header(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let headers = self.headers;
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// What a keep-alive hook sees of a registered contact.
#[derive(Debug, Clone, Copy)]
pub struct ContactView<'a> {
    pub user: &'a str,
    /// The Contact URI as registered.
    pub contact: &'a str,
    /// Where the REGISTER came from, `ip:port` (`[v6]:port` for IPv6).
    pub received: &'a str,
    /// Keep-alives sent to this contact so far.
    pub sent: u64,
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

/// How Vigil refreshes a session it is the refresher of: a call-start
/// override, and the `refresh_method` of Vigil's config (read with the
/// `serde` feature, as `auto`, `update` or `reinvite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum RefreshMethod {
    /// UPDATE if the peer's `Allow` lists it, else re-INVITE.
    Auto,
    Update,
    Reinvite,
}

/// Session-timer settings a call-start hook may change for this call only
/// (both legs). Vigil validates them like its config (`ttl` not below
/// `min_se`, `update_segment` in 2..=10); an invalid one is reported and
/// ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOverrides {
    pub ttl: Option<u32>,
    pub update_segment: Option<u32>,
    pub refresh_method: Option<RefreshMethod>,
    pub no_timer_max_duration: Option<u32>,
}

/// The call-start decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallStartDecision {
    /// Place the call, with these changes to its session timers (none by
    /// default).
    Accept(CallOverrides),
    /// Answer the caller with this final status (400..=699) and reason phrase
    /// (no control characters).
    Reject {
        status: u16,
        reason: Cow<'static, str>,
    },
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

/// The keep-alive-tick decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepaliveDecision {
    /// Send what `nat_keepalive` says.
    Default,
    /// Send nothing this period.
    Skip,
    /// Send these bytes instead.
    Payload(Cow<'static, [u8]>),
}

/// The media-timeout decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTimeoutDecision {
    /// End the call: BYE on both legs, CDR `end_reason: media-timeout`.
    Hangup,
    /// Keep the call this time; if the media is still silent after another
    /// `media.timeout`, the hook is asked again.
    Ignore,
}

/// The route decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Route as configured: the longest prefix route, else the source's
    /// default route.
    Default,
    /// Answer the caller with this final status (400..=699) and reason phrase
    /// (no control characters), as a call-start reject does.
    Reject {
        status: u16,
        reason: Cow<'static, str>,
    },
    /// Try these trunks, in order (1..=[`MAX_ROUTE_TRUNKS`] names of
    /// configured trunks), with the B leg's callee (Request-URI user) and
    /// caller (From user) replaced where set. Numbers and names must be
    /// non-empty and plain: a SIP user part without escapes, a trunk name
    /// without whitespace or control characters. Vigil checks the names
    /// against its config when it routes: a decision naming a trunk it does
    /// not know is reported and the configured routes apply.
    Route {
        trunks: Vec<String>,
        callee: Option<String>,
        caller: Option<String>,
    },
}

/// A hook that could not decide because something went wrong in the plugin
/// (its database is down, …). Vigil logs the status and asks the next source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookFailure(i32);

impl HookFailure {
    /// A failure without a more specific code ([`abi::STATUS_ERROR`]).
    pub const GENERIC: HookFailure = HookFailure(abi::STATUS_ERROR);

    /// A failure with the plugin's own code, which should be
    /// `<=` [`abi::STATUS_FIRST_PLUGIN_CODE`]. A code that is not negative or
    /// would read as a panic becomes [`HookFailure::GENERIC`].
    pub const fn with_status(status: i32) -> HookFailure {
        if status >= 0 || status == abi::STATUS_PANICKED {
            HookFailure::GENERIC
        } else {
            HookFailure(status)
        }
    }

    /// The status the hook returns to Vigil.
    pub const fn status(self) -> i32 {
        self.0
    }
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin hook failed with status {}", self.0)
    }
}

impl std::error::Error for HookFailure {}

/// What a deciding hook returns: `Ok(None)` leaves the decision to the next
/// source (a Lua script, then Vigil's built-in behaviour).
pub type HookResult<T> = Result<Option<T>, HookFailure>;

/// Extra CDR fields a hang-up hook adds. Each field is handed to Vigil (which
/// copies it) as soon as it is added.
pub struct CdrFields<'a> {
    sink: &'a HostSink,
}

impl<'a> CdrFields<'a> {
    /// # Safety
    /// `sink` must be the host's sink for the running hook call.
    pub(crate) unsafe fn new(sink: &'a HostSink) -> CdrFields<'a> {
        CdrFields { sink }
    }

    /// Adds `key: value` to the CDR's `extra` object. The key must not be empty.
    pub fn add(&mut self, key: &str, value: &str) {
        // SAFETY: the sink belongs to the running hook call (see `new`), and
        // the views borrow `key` and `value`, which outlive the callback.
        unsafe { (self.sink.add_field)(self.sink.ctx, RawStr::new(key), RawStr::new(value)) }
    }
}

impl fmt::Debug for CdrFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdrFields").finish_non_exhaustive()
    }
}

/// A vendor's policy. One instance serves every call on every worker thread at
/// once, hence `Send + Sync`: keep per-call state behind a lock (or in atomics)
/// and clean it up in [`Plugin::hangup`].
///
/// Every method has a default that declines, so implement only what you need.
/// A panic inside a method is caught and reported to Vigil as a failure of that
/// hook; it does not take Vigil down (with `panic = "unwind"`, the default). A
/// lock the panic poisoned stays poisoned: prefer `lock().unwrap_or_else(PoisonError::into_inner)`.
pub trait Plugin: Send + Sync + 'static {
    /// A call was admitted and routed.
    fn call_start(&self, _call: &CallStartView<'_>) -> HookResult<CallStartDecision> {
        Ok(None)
    }

    /// Vigil is about to refresh a leg's session (RFC 4028).
    fn refresh_due(&self, _leg: &LegView<'_>) -> HookResult<RefreshDecision> {
        Ok(None)
    }

    /// Vigil's refresh timed out or got an error status (except 481, and a
    /// session that already expired: those always end the call).
    fn refresh_failed(
        &self,
        _leg: &LegView<'_>,
        _failure: RefreshFailure,
    ) -> HookResult<FailureDecision> {
        Ok(None)
    }

    /// A registered contact's NAT keep-alive is due.
    fn keepalive_tick(&self, _contact: &ContactView<'_>) -> HookResult<KeepaliveDecision> {
        Ok(None)
    }

    /// The call is ending (whoever ended it): observe it, and add CDR fields.
    fn hangup(&self, _call: &CallView<'_>, _extra: &mut CdrFields<'_>) -> Result<(), HookFailure> {
        Ok(())
    }

    /// A relayed call's media has been silent for `media.timeout`: hang up
    /// (Vigil's default) or ignore it this time.
    fn media_timeout(&self, _call: &MediaTimeoutView<'_>) -> HookResult<MediaTimeoutDecision> {
        Ok(None)
    }

    /// A new call, before Vigil picks its outbound trunk: route it as
    /// configured, to trunks of the plugin's choosing, or refuse it.
    fn route(&self, _call: &RouteView<'_>) -> HookResult<RouteDecision> {
        Ok(None)
    }
}
