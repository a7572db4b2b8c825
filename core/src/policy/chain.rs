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
    FailureDecision, HookError, KeepaliveDecision, LegView, MediaTimeoutDecision, MediaTimeoutView,
    PolicySource, RefreshDecision, RefreshFailure, RouteDecision, RouteView, SessionPolicy, route,
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

    fn media_timeout(&self, view: &MediaTimeoutView<'_>) -> MediaTimeoutDecision {
        self.first(PolicyHook::MediaTimeout, |s| s.media_timeout(view))
            .unwrap_or_else(|| BuiltinPolicy.media_timeout(view))
    }

    /// A decision the engine could not carry out (no trunk, a number that is
    /// no SIP user part, …) is the source's failure, like a nonsense answer.
    fn route(&self, view: &RouteView<'_>) -> RouteDecision {
        self.first(PolicyHook::Route, |s| {
            let decision = s.route(view)?;
            if let Some(d) = &decision {
                route::check(d).map_err(|p| HookError::InvalidDecision(format!("route: {p}")))?;
            }
            Ok(decision)
        })
        .unwrap_or_else(|| BuiltinPolicy.route(view))
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

#[cfg(test)]
mod tests {
    //! The chain's order, its fallbacks and its counters, at the
    //! `media_timeout` and `route` hooks, with the real backends: the example
    //! plugin and the broken fixtures under plugins/, and Lua scripts.

    use std::path::Path;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::metrics::PolicyBackend;
    use crate::policy::lua::{LuaLimits, LuaPolicy};
    use crate::policy::plugin::{PluginPolicy, build_fixture};
    use crate::policy::{HeaderView, MediaDirection};

    fn plugin(crate_name: &str) -> Arc<dyn PolicySource> {
        let path = build_fixture(crate_name);
        Arc::new(PluginPolicy::load(&path).unwrap_or_else(|e| panic!("{e}")))
    }

    fn script(dir: &Path, text: &str) -> Arc<dyn PolicySource> {
        let path = dir.join("media.lua");
        std::fs::write(&path, text).expect("write script");
        Arc::new(LuaPolicy::load(&path, LuaLimits::default()).unwrap_or_else(|e| panic!("{e}")))
    }

    fn silent(direction: MediaDirection, on_hold: bool) -> MediaTimeoutView<'static> {
        MediaTimeoutView {
            call_id: "a84b4c76e66710@pc33.example.com",
            b_call_id: "w1-7f3a",
            trunk: "carrier",
            caller: "+3225551000",
            callee: "+3225552000",
            direction,
            silent_for: Duration::from_secs(30),
            on_hold,
            since_answer: Duration::from_secs(600),
        }
    }

    fn counts(metrics: &Metrics, backend: PolicyBackend) -> (u64, u64) {
        let h = metrics.hook(PolicyHook::MediaTimeout, backend);
        (
            h.calls.load(Ordering::Relaxed),
            h.errors.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn without_a_policy_dead_media_hangs_up() {
        let view = silent(MediaDirection::Both, false);
        assert_eq!(
            Policies::builtin()
                .for_trunk(Some("carrier"))
                .media_timeout(&view),
            MediaTimeoutDecision::Hangup
        );
    }

    #[test]
    fn media_timeout_asks_the_plugin_then_the_script_then_hangs_up() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::default());
        let chain = PolicyChain::new(
            vec![
                plugin("vigil-plugin-example"),
                script(
                    dir.path(),
                    "function media_timeout(call)\n  if call.on_hold then return 'ignore' end\nend\n",
                ),
            ],
            metrics.clone(),
        );

        // The carrier's one-way silence: the plugin decides, the script is
        // not asked.
        let one_way = silent(MediaDirection::CalleeToCaller, true);
        assert_eq!(chain.media_timeout(&one_way), MediaTimeoutDecision::Ignore);
        assert_eq!(counts(&metrics, PolicyBackend::Plugin), (1, 0));
        assert_eq!(counts(&metrics, PolicyBackend::Lua), (0, 0));

        // A held call's dead media: the plugin declines, the script keeps it.
        let held = silent(MediaDirection::Both, true);
        assert_eq!(chain.media_timeout(&held), MediaTimeoutDecision::Ignore);
        assert_eq!(counts(&metrics, PolicyBackend::Lua), (1, 0));

        // Neither decides: the built-in policy hangs up.
        let dead = silent(MediaDirection::Both, false);
        assert_eq!(chain.media_timeout(&dead), MediaTimeoutDecision::Hangup);
        assert_eq!(counts(&metrics, PolicyBackend::Plugin), (3, 0));
        assert_eq!(counts(&metrics, PolicyBackend::Lua), (2, 0));
        assert!(
            metrics
                .hook(PolicyHook::MediaTimeout, PolicyBackend::Plugin)
                .nanos
                .load(Ordering::Relaxed)
                > 0
        );
        // Counted under its own label only.
        let hangup = metrics.hook(PolicyHook::Hangup, PolicyBackend::Plugin);
        assert_eq!(hangup.calls.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.policy_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn failing_sources_are_counted_and_skipped_at_media_timeout() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::default());
        let chain = PolicyChain::new(
            vec![
                plugin("vigil-plugin-fixture-panicking"),
                plugin("vigil-plugin-fixture-bad-decisions"),
                script(
                    dir.path(),
                    "function media_timeout(call)\n  if call.direction == 'both' then return 'keep' end\n  return 'ignore'\nend\n",
                ),
            ],
            metrics.clone(),
        );

        // Both plugins fail, the script answers nonsense: the built-in
        // decision, and three faults.
        let dead = silent(MediaDirection::Both, false);
        assert_eq!(chain.media_timeout(&dead), MediaTimeoutDecision::Hangup);
        assert_eq!(counts(&metrics, PolicyBackend::Plugin), (2, 2));
        assert_eq!(counts(&metrics, PolicyBackend::Lua), (1, 1));
        assert_eq!(metrics.policy_errors.load(Ordering::Relaxed), 3);

        // Past the two broken plugins, the script decides.
        let one_way = silent(MediaDirection::CallerToCallee, false);
        assert_eq!(chain.media_timeout(&one_way), MediaTimeoutDecision::Ignore);
        assert_eq!(counts(&metrics, PolicyBackend::Plugin), (4, 4));
        assert_eq!(counts(&metrics, PolicyBackend::Lua), (2, 1));
        assert_eq!(metrics.policy_errors.load(Ordering::Relaxed), 5);
    }

    fn dialled(callee: &str) -> RouteView<'_> {
        const PAI: [HeaderView<'static>; 1] = [HeaderView {
            name: "P-Asserted-Identity",
            value: "<sip:+3225551000@pbx.example.com>",
        }];
        RouteView {
            call_id: "a84b4c76e66710@pc33.example.com",
            trunk_in: "pbx",
            caller: "+3225551000",
            callee,
            source: "192.0.2.10:5060",
            headers: &PAI,
        }
    }

    fn route_counts(metrics: &Metrics, backend: PolicyBackend) -> (u64, u64) {
        let h = metrics.hook(PolicyHook::Route, backend);
        (
            h.calls.load(Ordering::Relaxed),
            h.errors.load(Ordering::Relaxed),
        )
    }

    fn trunks(names: &[&str], callee: Option<&str>) -> RouteDecision {
        RouteDecision::Route {
            trunks: names.iter().map(|n| n.to_string()).collect(),
            callee: callee.map(str::to_owned),
            caller: None,
        }
    }

    #[test]
    fn without_a_policy_calls_route_as_configured() {
        assert_eq!(
            Policies::builtin()
                .for_trunk(Some("pbx"))
                .route(&dialled("025552000")),
            RouteDecision::Default
        );
    }

    #[test]
    fn route_asks_the_plugin_then_the_script_then_routes_as_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::default());
        let chain = PolicyChain::new(
            vec![
                plugin("vigil-plugin-example"),
                script(
                    dir.path(),
                    "function route(call)\n  if call.callee:sub(1, 2) == '00' then return { trunks = { 'intl' } } end\n  if call.callee == '0900' then return { reject = 403 } end\nend\n",
                ),
            ],
            metrics.clone(),
        );

        // A freephone number: the plugin decides, the script is not asked.
        assert_eq!(
            chain.route(&dialled("080012345")),
            trunks(&["carrier-freephone", "carrier"], Some("+3280012345"))
        );
        assert_eq!(route_counts(&metrics, PolicyBackend::Plugin), (1, 0));
        assert_eq!(route_counts(&metrics, PolicyBackend::Lua), (0, 0));

        // The plugin declines, the script routes or refuses.
        assert_eq!(chain.route(&dialled("0044207")), trunks(&["intl"], None));
        assert_eq!(
            chain.route(&dialled("0900")),
            RouteDecision::Reject {
                status: 403,
                reason: "Forbidden".into()
            }
        );
        assert_eq!(route_counts(&metrics, PolicyBackend::Lua), (2, 0));

        // Neither decides: the configured routes.
        assert_eq!(chain.route(&dialled("025552000")), RouteDecision::Default);
        assert_eq!(route_counts(&metrics, PolicyBackend::Plugin), (4, 0));
        assert_eq!(route_counts(&metrics, PolicyBackend::Lua), (3, 0));
        assert_eq!(metrics.policy_errors.load(Ordering::Relaxed), 0);
        // Counted under its own label only.
        let media = metrics.hook(PolicyHook::MediaTimeout, PolicyBackend::Plugin);
        assert_eq!(media.calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn malformed_routes_are_source_failures_and_the_next_source_decides() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::default());
        let chain = PolicyChain::new(
            vec![
                plugin("vigil-plugin-fixture-panicking"),
                plugin("vigil-plugin-fixture-bad-decisions"),
                script(
                    dir.path(),
                    r#"
                    local answers = {
                      ["no-trunks"] = { trunks = { "carrier" }, callee = "+3225552000" },
                      ["bad-callee"] = { trunks = {} },
                      ["seventeen-trunks"] = { trunks = { "a b" } },
                      ["empty-trunk"] = { trunks = { "carrier" }, caller = "" },
                    }
                    function route(call) return answers[call.callee] end
                    "#,
                ),
            ],
            metrics.clone(),
        );

        // The panicking plugin fails, the bad one's route has no trunk (the
        // chain refuses it): the script decides.
        assert_eq!(
            chain.route(&dialled("no-trunks")),
            trunks(&["carrier"], Some("+3225552000"))
        );
        assert_eq!(route_counts(&metrics, PolicyBackend::Plugin), (2, 2));
        assert_eq!(route_counts(&metrics, PolicyBackend::Lua), (1, 0));
        assert_eq!(metrics.policy_errors.load(Ordering::Relaxed), 2);

        // Every source answers something the engine cannot carry out: a
        // callee with a CRLF, an empty list, a name with a space, 17 trunks,
        // an empty caller. The configured routes apply.
        for (callee, errors) in [
            ("bad-callee", 5),
            ("seventeen-trunks", 8),
            ("empty-trunk", 11),
        ] {
            assert_eq!(chain.route(&dialled(callee)), RouteDecision::Default);
            assert_eq!(
                metrics.policy_errors.load(Ordering::Relaxed),
                errors,
                "{callee}"
            );
        }
        assert_eq!(route_counts(&metrics, PolicyBackend::Lua), (4, 3));
    }
}
