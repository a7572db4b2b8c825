//! What one policy hook call costs, through each backend: the built-in policy
//! (the baseline), a Lua script (`tests/load/every_hook.lua`, a function on
//! every hook) and the example vendor plugin. Each iteration builds the view
//! from the call's data, as the engine does, and asks the trunk's chain, so
//! the figure is what a call pays per hook.
//!
//! Run: `cargo bench -p vigil-core --bench policy_hooks`. Targets (issue 5):
//! Lua ≤ 5 µs, plugin ≤ 0.5 µs per hook call.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::call::Leg;
use vigil::cdr::EndReason;
use vigil::metrics::Metrics;
use vigil::policy::lua::{LuaLimits, LuaPolicy};
use vigil::policy::plugin::PluginPolicy;
use vigil::policy::{
    AddrText, BuiltinPolicy, CallStartView, CallView, HeaderView, LegView, MediaDirection,
    MediaTimeoutView, PolicyChain, PolicySource, RefreshFailure, Refresher, RouteView,
    SessionPolicy,
};

#[path = "../../tests/support/plugin_build.rs"]
mod plugin_build;

/// What the engine keeps of a call, from which it builds the views.
struct CallData {
    call_id: String,
    b_call_id: String,
    trunk_in: String,
    trunk_out: String,
    caller: String,
    callee: String,
    source: SocketAddr,
}

impl CallData {
    fn new() -> CallData {
        CallData {
            call_id: "a84b4c76e66710@pbx.example.net".into(),
            b_call_id: "vigil-1-4711".into(),
            trunk_in: "pbx".into(),
            trunk_out: "carrier".into(),
            caller: "4930123456".into(),
            callee: "0049401234567".into(),
            source: SocketAddr::from(([192, 0, 2, 10], 5060)),
        }
    }

    fn leg(&self) -> LegView<'_> {
        LegView {
            call_id: &self.call_id,
            b_call_id: &self.b_call_id,
            trunk: &self.trunk_out,
            caller: &self.caller,
            callee: &self.callee,
            leg: Leg::B,
            session_expires: 1800,
            refresher: Refresher::Vigil,
            refresh_count: 3,
            since_answer: Duration::from_secs(2700),
        }
    }

    /// `source` is the call's address written out, as the engine does for
    /// each call start.
    fn start<'a>(&'a self, source: &'a AddrText) -> CallStartView<'a> {
        CallStartView {
            call_id: &self.call_id,
            trunk_in: &self.trunk_in,
            trunk_out: &self.trunk_out,
            caller: &self.caller,
            callee: &self.callee,
            source: source.as_str(),
        }
    }

    fn route<'a>(&'a self, source: &'a AddrText) -> RouteView<'a> {
        /// One asserted identity, as a carrier's INVITE usually has.
        const PAI: [HeaderView<'static>; 1] = [HeaderView {
            name: "P-Asserted-Identity",
            value: "<sip:+4930123456@pbx.example.com>",
        }];
        RouteView {
            call_id: &self.call_id,
            trunk_in: &self.trunk_in,
            caller: &self.caller,
            callee: &self.callee,
            source: source.as_str(),
            headers: &PAI,
        }
    }

    fn media_timeout(&self) -> MediaTimeoutView<'_> {
        MediaTimeoutView {
            call_id: &self.call_id,
            b_call_id: &self.b_call_id,
            trunk: &self.trunk_out,
            caller: &self.caller,
            callee: &self.callee,
            direction: MediaDirection::CalleeToCaller,
            silent_for: Duration::from_secs(30),
            on_hold: false,
            since_answer: Duration::from_secs(2700),
        }
    }

    fn end(&self) -> CallView<'_> {
        CallView {
            call_id: &self.call_id,
            b_call_id: &self.b_call_id,
            trunk_in: &self.trunk_in,
            trunk_out: &self.trunk_out,
            caller: &self.caller,
            callee: &self.callee,
            end_reason: EndReason::CallerBye.as_str(),
            since_answer: Some(Duration::from_secs(2712)),
        }
    }
}

fn chain(source: Arc<dyn PolicySource>) -> PolicyChain {
    PolicyChain::new(vec![source], Arc::new(Metrics::default()))
}

fn bench_backend(c: &mut Criterion, name: &str, policy: &dyn SessionPolicy) {
    let call = CallData::new();
    let mut group = c.benchmark_group(name);
    group.bench_function("route", |b| {
        b.iter(|| {
            let source = AddrText::new(call.source);
            policy.route(black_box(&call.route(&source)))
        })
    });
    group.bench_function("call_start", |b| {
        b.iter(|| {
            let source = AddrText::new(call.source);
            policy.call_start(black_box(&call.start(&source)))
        })
    });
    group.bench_function("refresh_due", |b| {
        b.iter(|| policy.refresh_due(black_box(&call.leg())))
    });
    group.bench_function("refresh_failed", |b| {
        b.iter(|| policy.refresh_failed(black_box(&call.leg()), RefreshFailure::Status(408)))
    });
    group.bench_function("media_timeout", |b| {
        b.iter(|| policy.media_timeout(black_box(&call.media_timeout())))
    });
    group.bench_function("hangup", |b| {
        b.iter(|| policy.hangup(black_box(&call.end())))
    });
    group.finish();
}

fn policy_hooks(c: &mut Criterion) {
    bench_backend(c, "builtin", &BuiltinPolicy);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/load/every_hook.lua");
    let limits = LuaLimits {
        instructions: 1_000_000,
        memory_bytes: 16 * 1024 * 1024,
    };
    let lua =
        LuaPolicy::load(&script, limits).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    bench_backend(c, "lua", &chain(Arc::new(lua)));

    let library = plugin_build::build_plugin_libraries(&["vigil-plugin-example"]).remove(0);
    let plugin =
        PluginPolicy::load(&library).unwrap_or_else(|e| panic!("{}: {e}", library.display()));
    bench_backend(c, "plugin", &chain(Arc::new(plugin)));
}

criterion_group!(benches, policy_hooks);
criterion_main!(benches);
