//! A trunk's chain of policy sources — its plugin, then its Lua script — ending
//! in the built-in decision, and the set of chains a worker holds. A source
//! that fails is reported (a rate-limited log line naming the hook and the
//! source, and the `policy_errors` counter) and the next one decides: a broken
//! script or plugin never takes a call down with it. Every call into a source
//! is counted and timed per hook and backend (`vigil_policy_hook_*`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    BuiltinPolicy, CallStartDecision, CallStartView, CallView, ContactView, ExtraFields,
    FailureDecision, HookError, KeepaliveDecision, LegView, PolicySource, RefreshDecision,
    RefreshFailure, SessionPolicy,
};
use crate::metrics::{Metrics, PolicyHook};
use crate::ratelimit::RateLimit;

/// Sources asked in order; the first decision wins, else the built-in one.
pub struct PolicyChain {
    sources: Vec<Arc<dyn PolicySource>>,
    metrics: Arc<Metrics>,
    failure_log: Mutex<RateLimit>,
}

impl PolicyChain {
    pub fn new(sources: Vec<Arc<dyn PolicySource>>, metrics: Arc<Metrics>) -> PolicyChain {
        PolicyChain {
            sources,
            metrics,
            failure_log: Mutex::new(RateLimit::new(10, Duration::from_secs(60))),
        }
    }

    fn first<T>(
        &self,
        hook: PolicyHook,
        ask: impl Fn(&dyn PolicySource) -> Result<Option<T>, HookError>,
    ) -> Option<T> {
        for source in &self.sources {
            if let Some(decision) = self.call(hook, source.as_ref(), &ask).flatten() {
                return Some(decision);
            }
        }
        None
    }

    /// Asks one source, counting and timing the call; a failure is reported
    /// and comes back as `None`.
    fn call<T>(
        &self,
        hook: PolicyHook,
        source: &dyn PolicySource,
        ask: impl FnOnce(&dyn PolicySource) -> Result<T, HookError>,
    ) -> Option<T> {
        let started = Instant::now();
        let answer = ask(source);
        let took = started.elapsed();
        self.metrics
            .hook_called(hook, source.backend(), took, answer.is_err());
        answer
            .inspect_err(|e| self.report(hook, source.name(), e))
            .ok()
    }

    fn report(&self, hook: PolicyHook, source: &str, error: &HookError) {
        Metrics::count(&self.metrics.policy_errors);
        let mut log = self.failure_log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(suppressed) = log.allow(Instant::now()) {
            let hook = hook.as_str();
            tracing::error!(hook, source, %error, suppressed, "policy hook failed: the default decision applies");
        }
    }
}

impl SessionPolicy for PolicyChain {
    fn call_start(&self, view: &CallStartView<'_>) -> CallStartDecision {
        self.first(PolicyHook::CallStart, |s| match s.call_start(view)? {
            Some(CallStartDecision::Reject { status, .. }) if !(400..=699).contains(&status) => {
                Err(HookError::InvalidDecision(format!(
                    "call_start: reject status {status} is not a final error status (400..=699)"
                )))
            }
            other => Ok(other),
        })
        .unwrap_or_else(|| BuiltinPolicy.call_start(view))
    }

    fn keepalive_tick(&self, view: &ContactView<'_>) -> KeepaliveDecision {
        self.first(PolicyHook::KeepaliveTick, |s| s.keepalive_tick(view))
            .unwrap_or_else(|| BuiltinPolicy.keepalive_tick(view))
    }

    fn refresh_due(&self, view: &LegView<'_>) -> RefreshDecision {
        self.first(PolicyHook::RefreshDue, |s| s.refresh_due(view))
            .unwrap_or_else(|| BuiltinPolicy.refresh_due(view))
    }

    fn refresh_failed(&self, view: &LegView<'_>, failure: RefreshFailure) -> FailureDecision {
        self.first(PolicyHook::RefreshFailed, |s| {
            s.refresh_failed(view, failure)
        })
        .unwrap_or_else(|| BuiltinPolicy.refresh_failed(view, failure))
    }

    /// Every source observes the hang-up; the fields of those that succeed are
    /// kept (in chain order), a failing one's are dropped whole.
    fn hangup(&self, view: &CallView<'_>) -> ExtraFields {
        let mut extra = ExtraFields::new();
        for source in &self.sources {
            let mut fields = ExtraFields::new();
            let hangup = |s: &dyn PolicySource| s.hangup(view, &mut fields);
            if self
                .call(PolicyHook::Hangup, source.as_ref(), hangup)
                .is_some()
            {
                extra.append(&mut fields);
            }
        }
        extra
    }
}

/// A worker's policies: one per trunk (its own chain, or the default), and the
/// default for everything that is no trunk's (registered users' legs and
/// keep-alives). Trunks are looked up by name, so a call keeps finding its
/// trunk's policy across a reload that reorders the config, and a call on a
/// trunk that was removed gets the default.
#[derive(Clone)]
pub struct Policies {
    pub(super) default: Arc<dyn SessionPolicy>,
    pub(super) trunks: HashMap<Arc<str>, Arc<dyn SessionPolicy>>,
}

impl Policies {
    /// Built-in decisions everywhere: what runs with no `policy` configured.
    pub fn builtin() -> Policies {
        Policies {
            default: Arc::new(BuiltinPolicy),
            trunks: HashMap::new(),
        }
    }

    /// The policy for a leg or call on the trunk named `trunk`, or the
    /// default one for `None` (a registered user) or a trunk not configured.
    pub fn for_trunk(&self, trunk: Option<&str>) -> &dyn SessionPolicy {
        trunk
            .and_then(|t| self.trunks.get(t))
            .unwrap_or(&self.default)
            .as_ref()
    }

    pub fn default_policy(&self) -> Arc<dyn SessionPolicy> {
        self.default.clone()
    }

    /// Whether `a` and `b` are served by the same policy (a call-level hook is
    /// then asked once).
    pub fn same(&self, a: Option<&str>, b: Option<&str>) -> bool {
        std::ptr::addr_eq(
            self.for_trunk(a) as *const dyn SessionPolicy,
            self.for_trunk(b) as *const dyn SessionPolicy,
        )
    }
}
