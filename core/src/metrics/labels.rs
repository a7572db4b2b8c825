//! The label values of Vigil's metric families: which hook and backend, why
//! a datagram was dropped or a call or request shed, why a refresh failed.
//! Each enum lists its values once (`ALL`) so the export cannot miss one.

use crate::transaction::TxShed;
use std::sync::atomic::AtomicU64;

/// A decision point of the policies (the `hook` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyHook {
    CallStart,
    RefreshDue,
    RefreshFailed,
    KeepaliveTick,
    Hangup,
    MediaTimeout,
    Route,
}

impl PolicyHook {
    pub const ALL: [PolicyHook; 7] = [
        PolicyHook::CallStart,
        PolicyHook::RefreshDue,
        PolicyHook::RefreshFailed,
        PolicyHook::KeepaliveTick,
        PolicyHook::Hangup,
        PolicyHook::MediaTimeout,
        PolicyHook::Route,
    ];

    /// The hook's name, as scripts and plugins know it.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyHook::CallStart => "call_start",
            PolicyHook::RefreshDue => "refresh_due",
            PolicyHook::RefreshFailed => "refresh_failed",
            PolicyHook::KeepaliveTick => "keepalive_tick",
            PolicyHook::Hangup => "hangup",
            PolicyHook::MediaTimeout => "media_timeout",
            PolicyHook::Route => "route",
        }
    }
}

/// What kind of operator code a policy source is (the `backend` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyBackend {
    Lua,
    Plugin,
}

impl PolicyBackend {
    pub const ALL: [PolicyBackend; 2] = [PolicyBackend::Lua, PolicyBackend::Plugin];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyBackend::Lua => "lua",
            PolicyBackend::Plugin => "plugin",
        }
    }
}

/// One hook of one backend: how often it ran, failed, and for how long.
#[derive(Debug, Default)]
pub struct HookCounts {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub nanos: AtomicU64,
}

/// Why a datagram went to no worker (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramDrop {
    /// Did not decode as SIP (answered 400 when it could be addressed).
    Malformed,
    /// A request from an address no trunk admits (answered 403).
    Forbidden,
    /// A response to nothing Vigil sent.
    Stray,
    /// Larger than a UDP datagram may be.
    Oversized,
    /// The worker's or registrar's queue was full.
    Overload,
    /// The source is over `limits.per_source_rps` (or cooling down).
    Flood,
}

impl DatagramDrop {
    pub const ALL: [DatagramDrop; 6] = [
        DatagramDrop::Malformed,
        DatagramDrop::Forbidden,
        DatagramDrop::Stray,
        DatagramDrop::Oversized,
        DatagramDrop::Overload,
        DatagramDrop::Flood,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatagramDrop::Malformed => "malformed",
            DatagramDrop::Forbidden => "forbidden",
            DatagramDrop::Stray => "stray",
            DatagramDrop::Oversized => "oversized",
            DatagramDrop::Overload => "overload",
            DatagramDrop::Flood => "flood",
        }
    }
}

/// Why a new call was refused with `503` (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallShed {
    /// `limits.max_calls` calls were up.
    MaxCalls,
    /// Over `limits.max_cps`.
    MaxCps,
    /// The worker that would own it is falling behind (its queue is half
    /// full).
    Overload,
    /// The receive loop is falling behind: it has read only datagrams that
    /// waited long in the kernel's buffer for a while.
    Backlog,
    /// `limits.max_transactions` were alive.
    MaxTransactions,
    /// Its source had `limits.max_transactions_per_source` alive.
    SourceTransactions,
}

impl CallShed {
    pub const ALL: [CallShed; 6] = [
        CallShed::MaxCalls,
        CallShed::MaxCps,
        CallShed::Overload,
        CallShed::Backlog,
        CallShed::MaxTransactions,
        CallShed::SourceTransactions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallShed::MaxCalls => "max_calls",
            CallShed::MaxCps => "max_cps",
            CallShed::Overload => "overload",
            CallShed::Backlog => "backlog",
            CallShed::MaxTransactions => "max_transactions",
            CallShed::SourceTransactions => "source_transactions",
        }
    }
}

impl From<TxShed> for CallShed {
    fn from(why: TxShed) -> CallShed {
        match why {
            TxShed::MaxTransactions => CallShed::MaxTransactions,
            TxShed::SourceTransactions => CallShed::SourceTransactions,
        }
    }
}

/// Why a request other than a new call was refused with `503` (the `reason`
/// label of `vigil_requests_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestShed {
    /// `limits.max_transactions` were alive.
    MaxTransactions,
    /// Its source had `limits.max_transactions_per_source` alive.
    SourceTransactions,
    /// A REGISTER would have added a contact past `limits.max_registrations`.
    MaxRegistrations,
}

impl RequestShed {
    pub const ALL: [RequestShed; 3] = [
        RequestShed::MaxTransactions,
        RequestShed::SourceTransactions,
        RequestShed::MaxRegistrations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestShed::MaxTransactions => "max_transactions",
            RequestShed::SourceTransactions => "source_transactions",
            RequestShed::MaxRegistrations => "max_registrations",
        }
    }
}

impl From<TxShed> for RequestShed {
    fn from(why: TxShed) -> RequestShed {
        match why {
            TxShed::MaxTransactions => RequestShed::MaxTransactions,
            TxShed::SourceTransactions => RequestShed::SourceTransactions,
        }
    }
}

/// Why one of Vigil's refreshes failed (the `cause` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailureCause {
    /// No final answer within the transaction timeout.
    Timeout,
    /// A final error status.
    Status,
    /// The session expired while the refresh still waited for its final
    /// answer: the expiry cut the transaction short (short intervals, a
    /// late refresh after 491 back-offs, `early_hangup`).
    SessionExpired,
}

impl RefreshFailureCause {
    pub const ALL: [RefreshFailureCause; 3] = [
        RefreshFailureCause::Timeout,
        RefreshFailureCause::Status,
        RefreshFailureCause::SessionExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshFailureCause::Timeout => "timeout",
            RefreshFailureCause::Status => "status",
            RefreshFailureCause::SessionExpired => "session_expired",
        }
    }
}
