//! What a script sees and what its answers mean, one hook at a time; then the
//! sandbox and the bounds; then the example scripts in `scripts/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;
use crate::cdr::EndReason;
use crate::config::RefreshMethod;
use crate::policy::{CallOverrides, HeaderView, MediaDirection};

/// Limits small enough that runaway tests end quickly.
const LIMITS: LuaLimits = LuaLimits {
    instructions: 200_000,
    memory_bytes: 8 * 1024 * 1024,
};

/// Writes `files` (name, source) to a fresh directory.
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, source) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, source).expect("write script");
    }
    dir
}

/// Loads `source` as `policy.lua` in a fresh directory.
fn load(source: &str) -> (TempDir, LuaPolicy) {
    let dir = dir_with(&[("policy.lua", source)]);
    let policy = LuaPolicy::load(&dir.path().join("policy.lua"), LIMITS).expect("script loads");
    (dir, policy)
}

fn load_err(source: &str) -> (TempDir, LuaLoadError) {
    let dir = dir_with(&[("policy.lua", source)]);
    let err =
        LuaPolicy::load(&dir.path().join("policy.lua"), LIMITS).expect_err("script must not load");
    (dir, err)
}

fn source() -> &'static str {
    "192.0.2.10:5060"
}

fn call_start_view(callee: &str) -> CallStartView<'_> {
    CallStartView {
        call_id: "a84b4c76e66710",
        trunk_in: "pbx",
        trunk_out: "carrier",
        caller: "4930123",
        callee,
        source: source(),
    }
}

fn leg_view(call_id: &str) -> LegView<'_> {
    LegView {
        call_id,
        b_call_id: "vigil-3-77",
        trunk: "carrier",
        caller: "4930123",
        callee: "4940555",
        leg: Leg::B,
        session_expires: 1800,
        refresher: Refresher::Vigil,
        refresh_count: 2,
        since_answer: Duration::from_millis(1_800_500),
    }
}

fn call_view(call_id: &str) -> CallView<'_> {
    CallView {
        call_id,
        b_call_id: "vigil-3-77",
        trunk_in: "pbx",
        trunk_out: "carrier",
        caller: "4930123",
        callee: "4940555",
        end_reason: EndReason::CallerBye.as_str(),
        since_answer: Some(Duration::from_secs(95)),
    }
}

fn contact_view(user: &str) -> ContactView<'_> {
    ContactView {
        user,
        contact: "sip:alice@10.0.0.5:5062",
        received: "198.51.100.7:40211",
        sent: 41,
    }
}

/// The callee's media has been silent for 30.25 s, an hour into the call.
fn media_view(call_id: &str) -> MediaTimeoutView<'_> {
    MediaTimeoutView {
        call_id,
        b_call_id: "vigil-3-77",
        trunk: "carrier",
        caller: "4930123",
        callee: "4940555",
        direction: MediaDirection::CalleeToCaller,
        silent_for: Duration::from_millis(30_250),
        on_hold: false,
        since_answer: Duration::from_secs(3600),
    }
}

/// An INVITE's identity and diversion headers, one of them twice.
const HEADERS: [HeaderView<'static>; 3] = [
    HeaderView {
        name: "Diversion",
        value: "<sip:+4930111@pbx>;reason=busy",
    },
    HeaderView {
        name: "P-Asserted-Identity",
        value: "\"Alice\" <sip:+4930123@pbx>",
    },
    HeaderView {
        name: "Diversion",
        value: "<sip:+4930222@pbx>;reason=no-answer",
    },
];

/// A call from the PBX to `callee`, with [`HEADERS`].
fn route_view(callee: &str) -> RouteView<'_> {
    RouteView {
        call_id: "a84b4c76e66710",
        trunk_in: "pbx",
        caller: "4930123",
        callee,
        source: source(),
        headers: &HEADERS,
    }
}

fn routed(trunks: &[&str], callee: Option<&str>, caller: Option<&str>) -> Option<RouteDecision> {
    Some(RouteDecision::Route {
        trunks: trunks.iter().map(|t| t.to_string()).collect(),
        callee: callee.map(str::to_owned),
        caller: caller.map(str::to_owned),
    })
}

fn invalid(result: Result<impl fmt::Debug, HookError>) -> String {
    match result {
        Err(HookError::InvalidDecision(msg)) => msg,
        other => panic!("expected InvalidDecision, got {other:?}"),
    }
}

fn accept(o: CallOverrides) -> Option<CallStartDecision> {
    Some(CallStartDecision::Accept(o))
}

#[test]
fn lua_policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LuaPolicy>();
}

// ---- call_start ----------------------------------------------------------

#[test]
fn call_start_sees_the_call() {
    let (_dir, policy) = load(
        r#"
        function call_start(call)
          assert(call.call_id == "a84b4c76e66710", "call_id")
          assert(call.trunk_in == "pbx" and call.trunk_out == "carrier", "trunks")
          assert(call.caller == "4930123" and call.callee == "4940555", "parties")
          assert(call.source == "192.0.2.10:5060", "source")
          call.caller = "changed" -- a fresh table: no effect anywhere
          return "accept"
        end
        "#,
    );
    let decision = policy.call_start(&call_start_view("4940555"));
    assert_eq!(decision, Ok(accept(CallOverrides::default())));
}

#[test]
fn call_start_answers() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          none = nil,
          accept = "accept",
          forbid = { reject = 403 },
          busy = { reject = 486, reason = "Busy Here Today" },
          odd = { reject = 499 },
          timers = { ttl = 1800, update_segment = 3, refresh_method = "reinvite",
                     no_timer_max_duration = 7200 },
          float = { ttl = 3600 / 2, refresh_method = "auto" },
          empty = {},
        }
        function call_start(call) return answers[call.callee] end
        "#,
    );
    let ask = |callee| policy.call_start(&call_start_view(callee));
    assert_eq!(ask("none"), Ok(None));
    assert_eq!(ask("accept"), Ok(accept(CallOverrides::default())));
    assert_eq!(
        ask("forbid"),
        Ok(Some(CallStartDecision::Reject {
            status: 403,
            reason: "Forbidden".into()
        }))
    );
    assert_eq!(
        ask("busy"),
        Ok(Some(CallStartDecision::Reject {
            status: 486,
            reason: "Busy Here Today".into()
        }))
    );
    assert_eq!(
        ask("odd"),
        Ok(Some(CallStartDecision::Reject {
            status: 499,
            reason: "Request Failure".into()
        }))
    );
    assert_eq!(
        ask("timers"),
        Ok(accept(CallOverrides {
            ttl: Some(1800),
            update_segment: Some(3),
            refresh_method: Some(RefreshMethod::Reinvite),
            no_timer_max_duration: Some(7200),
        }))
    );
    assert_eq!(
        ask("float"),
        Ok(accept(CallOverrides {
            ttl: Some(1800),
            refresh_method: Some(RefreshMethod::Auto),
            ..CallOverrides::default()
        }))
    );
    assert_eq!(ask("empty"), Ok(accept(CallOverrides::default())));
}

#[test]
fn call_start_rejects_nonsense() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          word = "yes",
          number = 42,
          ttl_zero = { ttl = 0 },
          ttl_fraction = { ttl = 1.5 },
          ttl_string = { ttl = "1800" },
          ttl_huge = { ttl = 2^40 },
          status_2xx = { reject = 200 },
          status_700 = { reject = 700 },
          both = { reject = 403, ttl = 90 },
          reason_only = { reason = "why" },
          crlf = { reject = 403, reason = "No\r\nX-Evil: 1" },
          method = { refresh_method = "INFO" },
          typo = { tll = 1800 },
          array = { 403 },
        }
        function call_start(call)
          if call.callee == "func" then return print end
          return answers[call.callee]
        end
        "#,
    );
    let ask = |callee| invalid(policy.call_start(&call_start_view(callee)));
    assert!(
        ask("word").contains("call_start returned \"yes\""),
        "{}",
        ask("word")
    );
    assert!(ask("number").contains("returned 42"));
    assert!(ask("func").contains("returned a function"));
    assert!(ask("ttl_zero").contains("ttl = 0"));
    assert!(ask("ttl_fraction").contains("ttl = 1.5"));
    assert!(ask("ttl_string").contains("ttl = \"1800\""));
    assert!(ask("ttl_huge").contains("ttl"));
    assert!(ask("status_2xx").contains("reject = 200"));
    assert!(ask("status_700").contains("reject = 700"));
    assert!(ask("both").contains("both reject and overrides"));
    assert!(ask("reason_only").contains("reason without reject"));
    assert!(ask("crlf").contains("printable"));
    assert!(ask("method").contains("refresh_method"));
    assert!(ask("typo").contains("unknown key \"tll\""));
    assert!(ask("array").contains("keys must be non-empty strings"));
}

// ---- refresh_due ----------------------------------------------------------

#[test]
fn refresh_due_sees_the_leg_and_answers() {
    let (_dir, policy) = load(
        r#"
        function refresh_due(leg)
          assert(leg.b_call_id == "vigil-3-77", "b_call_id")
          assert(leg.trunk == "carrier", "trunk")
          assert(leg.caller == "4930123" and leg.callee == "4940555", "parties")
          assert(leg.leg == "b", "leg")
          assert(math.type(leg.session_expires) == "integer" and leg.session_expires == 1800, "se")
          assert(leg.refresher == "vigil", "refresher")
          assert(leg.refresh_count == 2, "refresh_count")
          assert(leg.since_answer == 1800.5, "since_answer")
          if leg.call_id == "none" then return nil end
          return leg.call_id
        end
        "#,
    );
    let ask = |call_id| policy.refresh_due(&leg_view(call_id));
    assert_eq!(ask("none"), Ok(None));
    assert_eq!(ask("default"), Ok(Some(RefreshDecision::Default)));
    assert_eq!(ask("update"), Ok(Some(RefreshDecision::Update)));
    assert_eq!(ask("reinvite"), Ok(Some(RefreshDecision::Reinvite)));
    assert_eq!(ask("skip"), Ok(Some(RefreshDecision::Skip)));
    assert_eq!(ask("hangup"), Ok(Some(RefreshDecision::Hangup)));
    let msg = invalid(ask("REINVITE"));
    assert!(msg.contains("refresh_due returned \"REINVITE\""), "{msg}");
}

#[test]
fn leg_and_refresher_names() {
    let (_dir, policy) = load(
        r#"
        function refresh_due(leg)
          assert(leg.leg == "a" and leg.refresher == "peer", leg.leg .. "/" .. leg.refresher)
          return "skip"
        end
        "#,
    );
    let view = LegView {
        leg: Leg::A,
        refresher: Refresher::Peer,
        ..leg_view("x")
    };
    assert_eq!(policy.refresh_due(&view), Ok(Some(RefreshDecision::Skip)));
}

// ---- refresh_failed ---------------------------------------------------------

#[test]
fn refresh_failed_sees_why() {
    let (_dir, policy) = load(
        r#"
        function refresh_failed(leg, failure)
          assert(leg.call_id == "c1" and leg.leg == "b", "leg")
          if failure.kind == "status" then
            assert(math.type(failure.status) == "integer", "status type")
            return "retry", failure.status - 400
          end
          assert(failure.status == nil, "status must be nil")
          if failure.kind == "timeout" then return "ignore" end
          if failure.kind == "expired" then return "hangup" end
          if failure.kind == "policy" then return nil end
          error("unknown kind " .. tostring(failure.kind))
        end
        "#,
    );
    let ask = |f| policy.refresh_failed(&leg_view("c1"), f);
    assert_eq!(
        ask(RefreshFailure::Status(408)),
        Ok(Some(FailureDecision::Retry(Duration::from_secs(8))))
    );
    assert_eq!(
        ask(RefreshFailure::Timeout),
        Ok(Some(FailureDecision::Ignore))
    );
    assert_eq!(
        ask(RefreshFailure::Expired),
        Ok(Some(FailureDecision::Hangup))
    );
    assert_eq!(ask(RefreshFailure::Policy), Ok(None));
}

#[test]
fn refresh_failed_retry_forms() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          two = { "retry", 2 },
          half = { "retry", 0.5 },
          table = { { retry = 3 } },
          no_delay = { "retry" },
          zero = { "retry", 0 },
          negative = { "retry", -1 },
          nan = { "retry", 0/0 },
          huge = { "retry", math.huge },
          string_delay = { "retry", "2" },
          empty_table = { {} },
          other_key = { { retry = 1, after = 2 } },
          word = { "again" },
        }
        function refresh_failed(leg, failure) return table.unpack(answers[leg.call_id]) end
        "#,
    );
    let ask = |call_id| policy.refresh_failed(&leg_view(call_id), RefreshFailure::Timeout);
    assert_eq!(
        ask("two"),
        Ok(Some(FailureDecision::Retry(Duration::from_secs(2))))
    );
    assert_eq!(
        ask("half"),
        Ok(Some(FailureDecision::Retry(Duration::from_millis(500))))
    );
    assert_eq!(
        ask("table"),
        Ok(Some(FailureDecision::Retry(Duration::from_secs(3))))
    );
    for bad in [
        "no_delay",
        "zero",
        "negative",
        "nan",
        "huge",
        "string_delay",
    ] {
        let msg = invalid(ask(bad));
        assert!(msg.contains("retry with"), "{bad}: {msg}");
    }
    assert!(invalid(ask("empty_table")).contains("returned a table"));
    assert!(invalid(ask("other_key")).contains("unknown key \"after\""));
    assert!(invalid(ask("word")).contains("returned \"again\""));
}

// ---- keepalive_tick ---------------------------------------------------------

#[test]
fn keepalive_tick_sees_the_contact_and_answers() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          send = "send",
          skip = "skip",
          crlf = { payload = "\r\n\r\n" },
          binary = { payload = "\0\255\1" },
          too_big = { payload = string.rep("x", 1401) },
          empty = { payload = "" },
          number = { payload = 5 },
          other = { bytes = "x" },
          word = "ping",
        }
        function keepalive_tick(contact)
          assert(contact.contact == "sip:alice@10.0.0.5:5062", "contact")
          assert(contact.received == "198.51.100.7:40211", "received")
          assert(math.type(contact.sent) == "integer" and contact.sent == 41, "sent")
          return answers[contact.user]
        end
        "#,
    );
    let ask = |user| policy.keepalive_tick(&contact_view(user));
    assert_eq!(ask("nobody"), Ok(None));
    assert_eq!(ask("send"), Ok(Some(KeepaliveDecision::Default)));
    assert_eq!(ask("skip"), Ok(Some(KeepaliveDecision::Skip)));
    assert_eq!(
        ask("crlf"),
        Ok(Some(KeepaliveDecision::Payload(
            b"\r\n\r\n".to_vec().into()
        )))
    );
    assert_eq!(
        ask("binary"),
        Ok(Some(KeepaliveDecision::Payload(vec![0, 255, 1].into())))
    );
    assert!(invalid(ask("too_big")).contains("1..=1400 bytes"));
    assert!(invalid(ask("empty")).contains("payload = \"\""));
    assert!(invalid(ask("number")).contains("payload = 5"));
    assert!(invalid(ask("other")).contains("unknown key \"bytes\""));
    assert!(invalid(ask("word")).contains("returned \"ping\""));
}

// ---- hangup -----------------------------------------------------------------

#[test]
fn hangup_adds_fields_sorted() {
    let (_dir, policy) = load(
        r#"
        function hangup(call)
          assert(call.b_call_id == "vigil-3-77", "b_call_id")
          assert(call.trunk_in == "pbx" and call.trunk_out == "carrier", "trunks")
          assert(call.caller == "4930123" and call.callee == "4940555", "parties")
          if call.call_id == "nil" then return nil end
          if call.call_id == "unanswered" then
            assert(call.since_answer == nil, "since_answer must be nil")
            assert(call.end_reason == "cancelled", call.end_reason)
            return { answered = false }
          end
          assert(call.end_reason == "caller-bye", call.end_reason)
          return {
            route_class = "national", answered = call.since_answer ~= nil,
            billsec = call.since_answer, half = call.since_answer / 2, ratio = 0.25,
            hops = 3,
          }
        end
        "#,
    );
    let mut extra = vec![("earlier".to_string(), "kept".to_string())];
    policy.hangup(&call_view("c1"), &mut extra).expect("hangup");
    let expected: Vec<(String, String)> = [
        ("earlier", "kept"),
        ("answered", "true"),
        ("billsec", "95"),
        ("half", "47.5"),
        ("hops", "3"),
        ("ratio", "0.25"),
        ("route_class", "national"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(extra, expected);

    let mut extra = Vec::new();
    policy
        .hangup(&call_view("nil"), &mut extra)
        .expect("hangup");
    assert!(extra.is_empty());

    let view = CallView {
        end_reason: EndReason::Cancelled.as_str(),
        since_answer: None,
        ..call_view("unanswered")
    };
    let mut extra = Vec::new();
    policy.hangup(&view, &mut extra).expect("hangup");
    assert_eq!(extra, vec![("answered".to_string(), "false".to_string())]);
}

#[test]
fn hangup_rejects_nonsense() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          word = "done",
          nested = { tags = { "a" } },
          array = { "a", "b" },
        }
        function hangup(call) return answers[call.call_id] end
        "#,
    );
    let ask = |call_id| {
        let mut extra = Vec::new();
        let r = policy.hangup(&call_view(call_id), &mut extra);
        assert!(extra.is_empty(), "nothing added on error");
        invalid(r)
    };
    assert!(ask("word").contains("hangup returned \"done\""));
    assert!(ask("nested").contains("tags = a table"));
    assert!(ask("array").contains("keys must be non-empty strings"));
}

#[test]
fn hangup_sees_that_dead_media_ended_the_call() {
    let (_dir, policy) = load(
        r#"
        function hangup(call)
          if call.end_reason == "media-timeout" then return { media = "dead" } end
        end
        "#,
    );
    let view = CallView {
        end_reason: EndReason::MediaTimeout.as_str(),
        ..call_view("c1")
    };
    let mut extra = Vec::new();
    policy.hangup(&view, &mut extra).expect("hangup");
    assert_eq!(extra, [("media".to_string(), "dead".to_string())]);
}

// ---- media_timeout ----------------------------------------------------------

#[test]
fn media_timeout_sees_the_call_and_answers() {
    let (_dir, policy) = load(
        r#"
        function media_timeout(call)
          assert(call.b_call_id == "vigil-3-77", "b_call_id")
          assert(call.trunk == "carrier", "trunk")
          assert(call.caller == "4930123" and call.callee == "4940555", "parties")
          assert(math.type(call.silent_for) == "float" and call.silent_for == 30.25,
                 "silent_for " .. tostring(call.silent_for))
          assert(call.since_answer == 3600, "since_answer")
          assert(call.on_hold == false, "on_hold")
          if call.call_id == "direction" then return call.direction end
          if call.call_id == "none" then return nil end
          return call.call_id
        end
        "#,
    );
    let ask = |call_id| policy.media_timeout(&media_view(call_id));
    assert_eq!(ask("none"), Ok(None));
    assert_eq!(ask("hangup"), Ok(Some(MediaTimeoutDecision::Hangup)));
    assert_eq!(ask("ignore"), Ok(Some(MediaTimeoutDecision::Ignore)));
    // The direction's name comes back as an answer, which it is not.
    let msg = invalid(ask("direction"));
    assert!(
        msg.contains("media_timeout returned \"callee-to-caller\""),
        "{msg}"
    );
}

#[test]
fn media_timeout_directions_and_hold() {
    let (_dir, policy) = load(
        r#"
        function media_timeout(call)
          assert(type(call.on_hold) == "boolean", "on_hold is a boolean")
          if call.on_hold then return "ignore" end
          assert(call.direction == call.call_id, call.direction .. " ~= " .. call.call_id)
          return "hangup"
        end
        "#,
    );
    for (direction, name) in [
        (MediaDirection::CallerToCallee, "caller-to-callee"),
        (MediaDirection::CalleeToCaller, "callee-to-caller"),
        (MediaDirection::Both, "both"),
    ] {
        let view = MediaTimeoutView {
            direction,
            ..media_view(name)
        };
        assert_eq!(
            policy.media_timeout(&view),
            Ok(Some(MediaTimeoutDecision::Hangup)),
            "{name}"
        );
    }
    let held = MediaTimeoutView {
        on_hold: true,
        ..media_view("held")
    };
    assert_eq!(
        policy.media_timeout(&held),
        Ok(Some(MediaTimeoutDecision::Ignore))
    );
}

#[test]
fn media_timeout_rejects_nonsense() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          upper = "HANGUP",
          keep = "keep",
          yes = true,
          number = 1,
          table = { ignore = true },
        }
        function media_timeout(call) return answers[call.call_id] end
        "#,
    );
    let ask = |call_id| invalid(policy.media_timeout(&media_view(call_id)));
    let expected = "expected nil, \"hangup\" or \"ignore\"";
    for (call_id, returned) in [
        ("upper", "returned \"HANGUP\""),
        ("keep", "returned \"keep\""),
        ("yes", "returned true"),
        ("number", "returned 1"),
        ("table", "returned a table"),
    ] {
        let msg = ask(call_id);
        assert!(msg.starts_with("media_timeout "), "{call_id}: {msg}");
        assert!(msg.contains(returned), "{call_id}: {msg}");
        assert!(msg.contains(expected), "{call_id}: {msg}");
    }
}

#[test]
fn media_timeout_errors_and_budget_are_reported_and_the_state_carries_on() {
    let (_dir, policy) = load(
        "function media_timeout(call)\n  if call.call_id == 'loop' then while true do end end\n  return call.missing.field\nend\n",
    );
    match policy.media_timeout(&media_view("c1")) {
        Err(HookError::Script(msg)) => assert!(msg.contains("policy.lua:3:"), "{msg}"),
        other => panic!("expected Script, got {other:?}"),
    }
    match policy.media_timeout(&media_view("loop")) {
        Err(HookError::InstructionBudget { limit, at }) => {
            assert_eq!(limit, LIMITS.instructions);
            assert!(at.contains("policy.lua:2:"), "{at}");
        }
        other => panic!("expected InstructionBudget, got {other:?}"),
    }
    match policy.media_timeout(&media_view("c1")) {
        Err(HookError::Script(msg)) => assert!(msg.contains("policy.lua:3:"), "{msg}"),
        other => panic!("expected Script again, got {other:?}"),
    }
}

// ---- route ------------------------------------------------------------------

#[test]
fn route_sees_the_call_and_its_headers() {
    let (_dir, policy) = load(
        r#"
        function route(call)
          assert(call.call_id == "a84b4c76e66710", "call_id")
          assert(call.trunk_in == "pbx", "trunk_in")
          assert(call.caller == "4930123" and call.callee == "4940555", "parties")
          assert(call.source == "192.0.2.10:5060", "source")
          local div = call.headers["Diversion"]
          assert(#div == 2, "two Diversion fields")
          assert(div[1] == "<sip:+4930111@pbx>;reason=busy", div[1])
          assert(div[2] == "<sip:+4930222@pbx>;reason=no-answer", div[2])
          local pai = call.headers["P-Asserted-Identity"]
          assert(#pai == 1 and pai[1]:find("+4930123", 1, true), "PAI")
          assert(call.headers["Privacy"] == nil, "absent headers are nil")
          return nil
        end
        "#,
    );
    assert_eq!(policy.route(&route_view("4940555")), Ok(None));
    // No headers: an empty table, not nil.
    let (_dir, policy) = load(
        "function route(call)
  assert(next(call.headers) == nil)
  return { trunks = { call.trunk_in } }
end
",
    );
    let bare = RouteView {
        headers: &[],
        ..route_view("4940555")
    };
    assert_eq!(policy.route(&bare), Ok(routed(&["pbx"], None, None)));
}

#[test]
fn route_answers() {
    let (_dir, policy) = load(
        r#"
        local answers = {
          none = nil,
          one = { trunks = { "carrier" } },
          lcr = { trunks = { "cheap", "backup", "carrier" }, callee = "+4940555",
                  caller = "+4930123" },
          forbid = { reject = 403 },
          premium = { reject = 403, reason = "Premium Numbers Barred" },
          gone = { reject = 604.0 },
        }
        function route(call) return answers[call.callee] end
        "#,
    );
    let ask = |callee| policy.route(&route_view(callee));
    assert_eq!(ask("none"), Ok(None));
    assert_eq!(ask("one"), Ok(routed(&["carrier"], None, None)));
    assert_eq!(
        ask("lcr"),
        Ok(routed(
            &["cheap", "backup", "carrier"],
            Some("+4940555"),
            Some("+4930123")
        ))
    );
    let reject = |status, reason: &str| {
        Ok(Some(RouteDecision::Reject {
            status,
            reason: reason.to_owned().into(),
        }))
    };
    assert_eq!(ask("forbid"), reject(403, "Forbidden"));
    assert_eq!(ask("premium"), reject(403, "Premium Numbers Barred"));
    assert_eq!(ask("gone"), reject(604, "Does Not Exist Anywhere"));
}

#[test]
fn route_rejects_nonsense() {
    let (_dir, policy) = load(
        r#"
        local many = {}
        for i = 1, 1000 do many[i] = "t" .. i end
        local answers = {
          word = "carrier",
          list = { "carrier" },
          empty = {},
          numbers_only = { callee = "+4940555" },
          trunk_string = { trunks = "carrier" },
          trunk_number = { trunks = { 5060 } },
          holes = { trunks = { [1] = "a", [3] = "c" } },
          named = { trunks = { first = "a" } },
          many = { trunks = many },
          callee_number = { trunks = { "a" }, callee = 4940555 },
          both = { reject = 403, trunks = { "a" } },
          reject_rewrite = { reject = 403, callee = "1" },
          reason_only = { trunks = { "a" }, reason = "why" },
          status_200 = { reject = 200 },
          crlf = { reject = 403, reason = "No\r\nX-Evil: 1" },
          typo = { trunk = { "a" } },
        }
        function route(call) return answers[call.callee] end
        "#,
    );
    let ask = |callee| invalid(policy.route(&route_view(callee)));
    for (callee, expected) in [
        ("word", "route returned \"carrier\"; expected nil, { trunks"),
        ("list", "keys must be non-empty strings"),
        ("empty", "route returned a table; expected"),
        ("numbers_only", "route returned a table; expected"),
        ("trunk_string", "trunks = \"carrier\": not a table"),
        ("trunk_number", "trunk = 5060; expected a string"),
        ("holes", "a list with holes"),
        ("named", "a key that is no list index"),
        ("many", "too many"),
        ("callee_number", "callee = 4940555; expected a string"),
        ("both", "both reject and a route"),
        ("reject_rewrite", "both reject and a route"),
        ("reason_only", "reason without reject"),
        ("status_200", "reject = 200"),
        ("crlf", "printable"),
        ("typo", "unknown key \"trunk\""),
    ] {
        let msg = ask(callee);
        assert!(msg.starts_with("route "), "{callee}: {msg}");
        assert!(msg.contains(expected), "{callee}: {msg}");
    }
}

#[test]
fn route_errors_budget_and_memory_are_reported_and_the_state_carries_on() {
    let (_dir, policy) = load(
        r#"
        function route(call)
          if call.callee == "loop" then while true do end end
          if call.callee == "bomb" then
            local t = {}
            while true do t[#t + 1] = string.rep("x", 1e6) end
          end
          if call.callee == "error" then return call.missing.field end
          return { trunks = { "carrier" } }
        end
        "#,
    );
    let ask = |callee| policy.route(&route_view(callee));
    for _ in 0..2 {
        match ask("error") {
            Err(HookError::Script(msg)) => assert!(msg.contains("policy.lua:8:"), "{msg}"),
            other => panic!("expected Script, got {other:?}"),
        }
        match ask("loop") {
            Err(HookError::InstructionBudget { limit, at }) => {
                assert_eq!(limit, LIMITS.instructions);
                assert!(at.contains("policy.lua:3:"), "{at}");
            }
            other => panic!("expected InstructionBudget, got {other:?}"),
        }
        assert_eq!(
            ask("bomb"),
            Err(HookError::MemoryLimit(LIMITS.memory_bytes))
        );
        assert_eq!(ask("ok"), Ok(routed(&["carrier"], None, None)));
    }
}

#[test]
fn the_binder_does_not_depend_on_the_scripts_globals() {
    // A script that replaces `select` (or anything else) does not change
    // how its `call` table is built.
    let (_dir, policy) = load(
        r#"
        select = function() error("replaced") end
        function route(call)
          return { trunks = { #call.headers["Diversion"] .. "" } }
        end
        "#,
    );
    assert_eq!(
        policy.route(&route_view("4940555")),
        Ok(routed(&["2"], None, None))
    );
}

// ---- missing functions, errors ----------------------------------------------

#[test]
fn missing_functions_decide_nothing() {
    let (_dir, policy) = load("-- a script with no hooks at all\nlocal x = 1\n");
    assert_eq!(policy.call_start(&call_start_view("1")), Ok(None));
    assert_eq!(policy.refresh_due(&leg_view("c")), Ok(None));
    assert_eq!(
        policy.refresh_failed(&leg_view("c"), RefreshFailure::Timeout),
        Ok(None)
    );
    assert_eq!(policy.keepalive_tick(&contact_view("u")), Ok(None));
    let mut extra = vec![("a".to_string(), "b".to_string())];
    assert_eq!(policy.hangup(&call_view("c"), &mut extra), Ok(()));
    assert_eq!(extra.len(), 1);
    assert_eq!(policy.media_timeout(&media_view("c")), Ok(None));
    assert_eq!(policy.route(&route_view("c")), Ok(None));
}

#[test]
fn functions_are_looked_up_once_at_load() {
    let (_dir, policy) = load(
        r#"
        function refresh_due(leg)
          refresh_due = function() return "hangup" end -- too late: bound at load
          keepalive_tick = function() return "skip" end -- not defined at load
          return "update"
        end
        "#,
    );
    assert_eq!(
        policy.refresh_due(&leg_view("c")),
        Ok(Some(RefreshDecision::Update))
    );
    assert_eq!(
        policy.refresh_due(&leg_view("c")),
        Ok(Some(RefreshDecision::Update))
    );
    assert_eq!(policy.keepalive_tick(&contact_view("u")), Ok(None));
}

#[test]
fn a_hook_that_is_not_a_function_is_a_load_error() {
    let (_dir, err) = load_err("refresh_due = \"reinvite\"\n");
    assert!(
        matches!(
            err,
            LuaLoadError::NotAFunction {
                hook: "refresh_due",
                found: "string",
                ..
            }
        ),
        "{err:?}"
    );
    let (_dir, err) = load_err("route = { trunks = { \"carrier\" } }\n");
    assert!(
        matches!(
            err,
            LuaLoadError::NotAFunction {
                hook: "route",
                found: "table",
                ..
            }
        ),
        "{err:?}"
    );
    let (_dir, err) = load_err("media_timeout = { \"ignore\" }\n");
    assert!(
        matches!(
            err,
            LuaLoadError::NotAFunction {
                hook: "media_timeout",
                found: "table",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn runtime_error_names_file_and_line() {
    let (_dir, policy) = load("local n = nil\nfunction refresh_due(leg)\n  return n.field\nend\n");
    match policy.refresh_due(&leg_view("c")) {
        Err(HookError::Script(msg)) => {
            assert!(msg.contains("policy.lua:3:"), "{msg}");
            assert!(!msg.contains("stack traceback"), "{msg}");
        }
        other => panic!("expected Script, got {other:?}"),
    }
    // The state carries on.
    let (_dir, policy) = load(
        "calls = 0\nfunction refresh_due(leg)\n  calls = calls + 1\n  if calls == 1 then error('first') end\n  return 'skip'\nend\n",
    );
    assert!(
        matches!(policy.refresh_due(&leg_view("c")), Err(HookError::Script(m)) if m.contains("policy.lua:4: first"))
    );
    assert_eq!(
        policy.refresh_due(&leg_view("c")),
        Ok(Some(RefreshDecision::Skip))
    );
}

#[test]
fn endless_loop_hits_the_budget_and_the_state_carries_on() {
    let (_dir, policy) = load(
        r#"
        local calls = 0
        function refresh_due(leg)
          calls = calls + 1
          if leg.call_id == "loop" then while true do end end
          if leg.call_id == "pcall" then
            -- catching the budget error must not help
            while true do pcall(function() while true do end end) end
          end
          if leg.call_id == "coroutine" then
            while true do
              coroutine.resume(coroutine.create(function() while true do end end))
            end
          end
          if leg.call_id == "rethrow" then
            local ok, err = pcall(function() while true do end end)
            return "skip"
          end
          if leg.call_id == "after_coroutine" then
            -- the budget runs out in a coroutine first, then the main thread
            -- loops around pcall: it must be cut off too
            pcall(coroutine.wrap(function() while true do end end))
            while true do pcall(function() local x = 0 for i = 1, 1e12 do x = x + i end end) end
          end
          if leg.call_id == "close" then
            do
              local guard <close> = setmetatable({}, { __close = function() while true do end end })
            end
          end
          if leg.call_id == "handler" then
            while true do
              xpcall(function() while true do end end, function() while true do end end)
            end
          end
          if leg.call_id == "recursion" then
            local function f(n) return f(n + 1) end
            return f(1)
          end
          if leg.call_id == "busy" then
            -- a lot of work, but within budget: the count starts afresh per call
            local x = 0
            for i = 1, 10000 do x = x + i end
          end
          return "reinvite"
        end
        "#,
    );
    for how in [
        "loop",
        "pcall",
        "coroutine",
        "rethrow",
        "after_coroutine",
        "close",
        "handler",
        "recursion",
    ] {
        let started = Instant::now();
        match policy.refresh_due(&leg_view(how)) {
            Err(HookError::InstructionBudget { limit, at }) => {
                assert_eq!(limit, LIMITS.instructions, "{how}");
                assert!(at.contains(".lua:"), "{how}: cut off at {at:?}");
            }
            other => panic!("{how}: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{how} took {:?}",
            started.elapsed()
        );
        for _ in 0..50 {
            assert_eq!(
                policy.refresh_due(&leg_view("busy")),
                Ok(Some(RefreshDecision::Reinvite)),
                "after {how}"
            );
        }
    }
}

#[test]
fn memory_bomb_hits_the_limit_and_the_state_carries_on() {
    let (_dir, policy) = load(
        r#"
        keep = {}
        function refresh_due(leg)
          if leg.call_id == "bomb" then
            local t = {}
            while true do t[#t + 1] = string.rep("x", 1e6) end
          end
          if leg.call_id == "one_string" then return string.rep("x", 1e9) end
          keep[#keep + 1] = string.rep("y", 1000) -- some honest state
          return "update"
        end
        "#,
    );
    for how in ["bomb", "one_string", "bomb"] {
        assert_eq!(
            policy.refresh_due(&leg_view(how)),
            Err(HookError::MemoryLimit(LIMITS.memory_bytes)),
            "{how}"
        );
        for _ in 0..10 {
            assert_eq!(
                policy.refresh_due(&leg_view("ok")),
                Ok(Some(RefreshDecision::Update)),
                "after {how}"
            );
        }
    }
}

#[test]
fn syntax_error_at_load_names_file_and_line() {
    let (_dir, err) = load_err("function refresh_due(leg)\n  return 'x'\nedn\n");
    match &err {
        LuaLoadError::Syntax { message, .. } => {
            assert!(message.contains("policy.lua:3:"), "{message}")
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert!(err.to_string().contains("policy.lua:3:"));
}

#[test]
fn chunk_name_is_the_path_as_given() {
    let dir = dir_with(&[("carrier.lua", "\n\nerror('boom')\n")]);
    let err = LuaPolicy::load(&dir.path().join("carrier.lua"), LIMITS).expect_err("fails");
    let expected = format!("{}:3: boom", dir.path().join("carrier.lua").display());
    match err {
        LuaLoadError::Runtime { message, .. } => assert!(message.contains(&expected), "{message}"),
        other => panic!("expected Runtime, got {other:?}"),
    }
}

#[test]
fn load_errors() {
    let missing = LuaPolicy::load(Path::new("/nonexistent/vigil/none.lua"), LIMITS)
        .expect_err("missing file");
    assert!(matches!(&missing, LuaLoadError::Read { path, .. } if path.ends_with("none.lua")));
    assert!(missing.to_string().contains("/nonexistent/vigil/none.lua"));

    let (_d, err) = load_err("while true do end\n");
    assert!(
        matches!(err, LuaLoadError::InstructionBudget { budget, .. } if budget == LIMITS.instructions),
        "{err:?}"
    );

    let (_d, err) = load_err("local t = {}\nwhile true do t[#t + 1] = string.rep('x', 1e6) end\n");
    assert!(
        matches!(err, LuaLoadError::MemoryLimit { bytes, .. } if bytes == LIMITS.memory_bytes),
        "{err:?}"
    );

    let (_d, err) = load_err("local x = nil\nx()\n");
    assert!(
        matches!(&err, LuaLoadError::Runtime { message, .. } if message.contains("policy.lua:2:")),
        "{err:?}"
    );

    // A precompiled chunk is refused: only source text is loaded.
    let dir = dir_with(&[]);
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, b"\x1bLua\x54\x00garbage").expect("write");
    assert!(LuaPolicy::load(&path, LIMITS).is_err());
}

// ---- the sandbox --------------------------------------------------------------

#[test]
fn sandbox_has_no_way_out() {
    let (_dir, policy) = load(
        r#"
        -- of os, only the clock
        local kept = {}
        for name in pairs(os) do kept[#kept + 1] = name end
        table.sort(kept)
        assert(table.concat(kept, ",") == "clock,date,difftime,time", table.concat(kept, ","))
        assert(os.execute == nil and os.getenv == nil and os.exit == nil, "os")
        assert(os.remove == nil and os.rename == nil and os.tmpname == nil, "os files")
        assert(io == nil, "io")
        assert(debug == nil, "debug")
        assert(package == nil, "package")
        assert(dofile == nil, "dofile")
        assert(loadfile == nil, "loadfile")
        -- what stays
        assert(string and table and math and utf8 and coroutine, "libraries")
        assert(type(pcall) == "function" and type(collectgarbage) == "function")
        -- load takes text only, with the same globals
        assert(load("return 1 + 1")() == 2, "load text")
        local f, err = load(string.dump(function() return 1 end))
        assert(f == nil and err:find("binary"), "load binary: " .. tostring(err))
        local g = load("return x", "chunk", "t", { x = 7 })
        assert(g() == 7, "load env")
        -- finalizers would run outside the budget
        local ok, err2 = pcall(setmetatable, {}, { __gc = function() end })
        assert(not ok and err2:find("__gc"), "__gc: " .. tostring(err2))
        assert(getmetatable(setmetatable({}, { __index = {} })) ~= nil, "setmetatable")
        -- the collector can run but not be stopped
        assert(collectgarbage("count") > 0)
        collectgarbage()
        assert(not pcall(collectgarbage, "stop"), "stop")
        assert(not pcall(collectgarbage, "generational"), "generational")
        function refresh_due() return "skip" end
        "#,
    );
    assert_eq!(
        policy.refresh_due(&leg_view("c")),
        Ok(Some(RefreshDecision::Skip))
    );
}

#[test]
fn the_clock_tells_the_time_of_day() {
    let (_dir, policy) = load(
        r#"
        function route(call)
          local now = os.time()
          assert(math.type(now) == "integer", "os.time() is whole seconds")
          assert(math.abs(now - vigil.now()) < 5, "os.time() is the wall clock")
          local t = os.date("*t", now)
          assert(t.hour >= 0 and t.hour <= 23 and t.wday >= 1 and t.wday <= 7, "*t")
          -- UTC, and a calendar date back to a time
          assert(os.date("!%Y-%m-%d %H:%M", 86400 + 3600) == "1970-01-02 01:00", "!format")
          local u = os.date("!*t", 0)
          assert(u.year == 1970 and u.month == 1 and u.day == 1 and u.hour == 0, "!*t")
          assert(os.time({ year = 2026, month = 1, day = 1, hour = 12 }) > 0, "os.time(table)")
          assert(os.difftime(now + 60, now) == 60, "difftime")
          -- strftime never sees a conversion Lua does not know
          local ok, err = pcall(os.date, "%Ez %Q")
          assert(not ok and err:find("invalid conversion"), tostring(err))
          return { trunks = { os.date("!%H", 7 * 3600) } }
        end
        "#,
    );
    assert_eq!(
        policy.route(&route_view("4940555")),
        Ok(routed(&["07"], None, None))
    );
}

#[test]
fn vigil_helpers_and_print() {
    let (_dir, policy) = load(
        r#"
        print("loading", 1, true, nil, {})
        for _, level in ipairs({ "error", "warn", "info", "debug", "trace" }) do
          vigil.log(level, "hello from " .. level)
        end
        vigil.log("info", 42)
        function refresh_due(leg)
          local now = vigil.now()
          assert(math.type(now) == "float" and now > 1.7e9, "now " .. tostring(now))
          if leg.call_id == "bad_level" then vigil.log("loud", "x") end
          return "default"
        end
        "#,
    );
    assert_eq!(
        policy.refresh_due(&leg_view("c")),
        Ok(Some(RefreshDecision::Default))
    );
    match policy.refresh_due(&leg_view("bad_level")) {
        Err(HookError::Script(msg)) => {
            assert!(msg.contains("policy.lua:10:"), "{msg}");
            assert!(msg.contains("\"loud\""), "{msg}");
        }
        other => panic!("expected Script, got {other:?}"),
    }
}

#[test]
fn require_loads_siblings_once() {
    let dir = dir_with(&[
        (
            "policy.lua",
            r#"
            local common = require("common")
            local again = require("common")
            assert(common == again, "cached")
            assert(loads == 1, "loaded once, not " .. tostring(loads))
            local nested = require("lib.numbers")
            assert(nested.is_emergency("112"))
            assert(require("empty") == true, "a module returning nothing gives true")
            function call_start(call)
              if common.has_prefix(call.callee, "0900") then return { reject = 403 } end
              return nil
            end
            "#,
        ),
        (
            "common.lua",
            "loads = (loads or 0) + 1\nlocal M = {}\nfunction M.has_prefix(s, p) return s:sub(1, #p) == p end\nreturn M\n",
        ),
        (
            "lib/numbers.lua",
            "return { is_emergency = function(n) return n == '112' end }\n",
        ),
        ("empty.lua", "-- nothing\n"),
    ]);
    let policy = LuaPolicy::load(&dir.path().join("policy.lua"), LIMITS).expect("loads");
    assert!(matches!(
        policy.call_start(&call_start_view("09001234")),
        Ok(Some(CallStartDecision::Reject { status: 403, .. }))
    ));
    assert_eq!(policy.call_start(&call_start_view("4940")), Ok(None));
}

#[test]
fn require_stays_in_the_script_directory() {
    let outer = dir_with(&[
        ("secret.lua", "return 'leaked'\n"),
        ("scripts/x.lua", "return 1\n"),
    ]);
    let script = outer.path().join("scripts/policy.lua");
    std::fs::write(
        &script,
        r#"
        local function try(name)
          local ok, err = pcall(require, name)
          assert(not ok, name .. " must fail")
          return tostring(err)
        end
        local function invalid(name) return try(name):find("invalid module name", 1, true) ~= nil end
        assert(invalid("../secret"), "../secret")
        assert(invalid("/etc/passwd"), "/etc/passwd")
        assert(invalid("a..b"), "a..b")
        assert(invalid(".x"), ".x")
        assert(invalid(""), "empty")
        assert(try("os"):find("not found", 1, true), "os")
        assert(try("secret"):find("not found", 1, true), "secret")
        assert(try(42):find("must be a string", 1, true), "number")
        assert(require("x") == 1, "sibling")
        function refresh_due(leg) return require(leg.call_id) end
        "#,
    )
    .expect("write");
    let policy = LuaPolicy::load(&script, LIMITS).expect("loads");
    // An error from require names the caller's line.
    match policy.refresh_due(&leg_view("..")) {
        Err(HookError::Script(msg)) => {
            assert!(msg.contains("policy.lua:17:"), "{msg}");
            assert!(msg.contains("invalid module name"), "{msg}");
        }
        other => panic!("expected Script, got {other:?}"),
    }
}

#[test]
fn require_errors_and_cycles() {
    let dir = dir_with(&[
        (
            "policy.lua",
            "function refresh_due(leg) return require(leg.call_id) end\n",
        ),
        ("broken.lua", "return {\n"),
        ("raises.lua", "\nerror('module failed')\n"),
        ("cycle_a.lua", "return require('cycle_b')\n"),
        ("cycle_b.lua", "return require('cycle_a')\n"),
        ("word.lua", "return 'skip'\n"),
    ]);
    let policy = LuaPolicy::load(&dir.path().join("policy.lua"), LIMITS).expect("loads");
    let script_error = |name| match policy.refresh_due(&leg_view(name)) {
        Err(HookError::Script(msg)) => msg,
        other => panic!("expected Script for {name}, got {other:?}"),
    };
    let broken = script_error("broken");
    assert!(
        broken.contains("broken.lua:2:") && broken.contains("expected"),
        "{broken}"
    );
    assert!(script_error("raises").contains("raises.lua:2: module failed"));
    assert!(script_error("cycle_a").contains("cycle"));
    // A failed require is retried (and fails the same way), not cached.
    assert!(script_error("raises").contains("raises.lua:2: module failed"));
    assert_eq!(
        policy.refresh_due(&leg_view("word")),
        Ok(Some(RefreshDecision::Skip))
    );
}

#[test]
fn a_required_module_with_a_syntax_error_fails_the_load() {
    let dir = dir_with(&[
        ("policy.lua", "local m = require('m')\n"),
        ("m.lua", "local = 1\n"),
    ]);
    let err = LuaPolicy::load(&dir.path().join("policy.lua"), LIMITS).expect_err("fails");
    assert!(
        matches!(&err, LuaLoadError::Syntax { message, .. } if message.contains("m.lua:1:")),
        "{err:?}"
    );
}

// ---- the example scripts ----------------------------------------------------------

fn example(name: &str) -> LuaPolicy {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scripts", name]
        .iter()
        .collect();
    LuaPolicy::load(&path, LuaLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn example_scripts_load_and_answer_as_documented() {
    let scripts: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "scripts"]
        .iter()
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(&scripts)
        .expect("scripts/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lua"))
        .collect();
    names.sort();
    for name in &names {
        example(name);
    }
    for expected in [
        "cdr_tags.lua",
        "common.lua",
        "e164.lua",
        "lcr.lua",
        "one_way_audio.lua",
        "premium_block.lua",
        "reinvite_only.lua",
        "retry_408.lua",
        "time_of_day.lua",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // reinvite_only: every refresh is a re-INVITE, nothing else is decided.
    let p = example("reinvite_only.lua");
    assert_eq!(
        p.refresh_due(&leg_view("c1")),
        Ok(Some(RefreshDecision::Reinvite))
    );
    assert_eq!(p.call_start(&call_start_view("4940")), Ok(None));
    assert_eq!(
        p.refresh_failed(&leg_view("c1"), RefreshFailure::Timeout),
        Ok(None)
    );

    // retry_408: one retry per call after a 408 or a timeout, 2 s later.
    let p = example("retry_408.lua");
    let retry = Ok(Some(FailureDecision::Retry(Duration::from_secs(2))));
    let hangup = Ok(Some(FailureDecision::Hangup));
    assert_eq!(
        p.refresh_failed(&leg_view("c1"), RefreshFailure::Status(408)),
        retry
    );
    assert_eq!(
        p.refresh_failed(&leg_view("c1"), RefreshFailure::Status(408)),
        hangup
    );
    assert_eq!(
        p.refresh_failed(&leg_view("c2"), RefreshFailure::Timeout),
        retry
    );
    assert_eq!(
        p.refresh_failed(&leg_view("c3"), RefreshFailure::Status(503)),
        hangup
    );
    assert_eq!(
        p.refresh_failed(&leg_view("c4"), RefreshFailure::Expired),
        hangup
    );
    // The hang-up forgets the call (a reused Call-ID starts afresh).
    p.hangup(&call_view("c1"), &mut Vec::new()).expect("hangup");
    assert_eq!(
        p.refresh_failed(&leg_view("c1"), RefreshFailure::Timeout),
        retry
    );

    // cdr_tags: a premium-rate caller ID is refused, calls to the carrier get
    // a shorter session timer, CDRs get tags.
    let p = example("cdr_tags.lua");
    let spoofed = CallStartView {
        caller: "09005551234",
        ..call_start_view("4940555")
    };
    assert_eq!(
        p.call_start(&spoofed),
        Ok(Some(CallStartDecision::Reject {
            status: 403,
            reason: "Caller ID Not Allowed".into()
        }))
    );
    let to_carrier = p.call_start(&call_start_view("4940555"));
    assert_eq!(
        to_carrier,
        Ok(accept(CallOverrides {
            ttl: Some(900),
            ..CallOverrides::default()
        }))
    );
    let other_trunk = CallStartView {
        trunk_out: "user:alice",
        ..call_start_view("4940555")
    };
    assert_eq!(p.call_start(&other_trunk), Ok(None));
    let mut extra = Vec::new();
    p.hangup(&call_view("c1"), &mut extra).expect("hangup");
    let get = |k: &str| {
        extra
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("answered"), Some("true"));
    assert_eq!(get("route_class"), Some("national"));
    assert_eq!(get("billsec"), Some("95"));
    let view = CallView {
        callee: "004420799999",
        since_answer: None,
        end_reason: EndReason::Rejected.as_str(),
        ..call_view("c2")
    };
    let mut extra = Vec::new();
    p.hangup(&view, &mut extra).expect("hangup");
    let get = |k: &str| {
        extra
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("answered"), Some("false"));
    assert_eq!(get("route_class"), Some("international"));
    assert_eq!(get("billsec"), Some("0"));

    // one_way_audio: one-way silence is kept for ten minutes, a held call is
    // kept, both ways silent hangs up (no decision: the default); the CDR of
    // a call dead media ended says which media had died.
    let p = example("one_way_audio.lua");
    let ignore = Ok(Some(MediaTimeoutDecision::Ignore));
    let silent = |call_id, direction, secs, on_hold| MediaTimeoutView {
        direction,
        silent_for: Duration::from_secs(secs),
        on_hold,
        ..media_view(call_id)
    };
    let one_way = MediaDirection::CallerToCallee;
    assert_eq!(p.media_timeout(&silent("c1", one_way, 30, false)), ignore);
    assert_eq!(p.media_timeout(&silent("c1", one_way, 599, false)), ignore);
    assert_eq!(
        p.media_timeout(&silent("c1", one_way, 600, false)),
        Ok(None)
    );
    let both = MediaDirection::Both;
    assert_eq!(p.media_timeout(&silent("c2", both, 30, false)), Ok(None));
    assert_eq!(p.media_timeout(&silent("c3", both, 3600, true)), ignore);
    let dead = |call_id| CallView {
        end_reason: EndReason::MediaTimeout.as_str(),
        ..call_view(call_id)
    };
    let mut extra = Vec::new();
    p.hangup(&dead("c1"), &mut extra).expect("hangup");
    let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        extra,
        fields(&[("media", "dead"), ("silent", "caller-to-callee")])
    );
    // The hang-up forgot the call: ending it again no longer names the media.
    let mut extra = Vec::new();
    p.hangup(&dead("c1"), &mut extra).expect("hangup");
    assert_eq!(extra, fields(&[("media", "dead")]));
    let mut extra = Vec::new();
    p.hangup(&call_view("c3"), &mut extra).expect("hangup");
    assert!(extra.is_empty(), "{extra:?}");
}

/// `callee` dialled from `trunk_in` by `caller`, with no headers.
fn dialled<'a>(trunk_in: &'a str, caller: &'a str, callee: &'a str) -> RouteView<'a> {
    RouteView {
        trunk_in,
        caller,
        headers: &[],
        ..route_view(callee)
    }
}

#[test]
fn lcr_picks_the_longest_prefixs_trunks() {
    let p = example("lcr.lua");
    let ask = |callee| p.route(&dialled("pbx", "4930123", callee));
    let de = ["carrier-de", "carrier-intl"];
    assert_eq!(ask("00493012345"), Ok(routed(&de, None, None)));
    assert_eq!(
        ask("00442079460000"),
        Ok(routed(&["carrier-uk", "carrier-intl"], None, None))
    );
    assert_eq!(ask("0033123456"), Ok(routed(&["carrier-intl"], None, None)));
    assert_eq!(
        ask("01701234567"),
        Ok(routed(&["carrier-mobile", "carrier-de"], None, None))
    );
    assert_eq!(ask("0301234567"), Ok(routed(&de, None, None)));
    // No prefix matches: the configured routes.
    assert_eq!(ask("112"), Ok(None));
    assert_eq!(ask("+4930123"), Ok(None));
}

#[test]
fn e164_normalises_both_numbers_for_the_carrier() {
    let p = example("e164.lua");
    let trunks = ["carrier", "carrier-backup"];
    let ask = |caller, callee| p.route(&dialled("pbx", caller, callee));
    assert_eq!(
        ask("0301234567", "0401234567"),
        Ok(routed(&trunks, Some("+49401234567"), Some("+49301234567")))
    );
    assert_eq!(
        ask("00493012345", "00442079460000"),
        Ok(routed(&trunks, Some("+442079460000"), Some("+493012345")))
    );
    // Already E.164: unchanged. A caller that is no number: left as it is.
    assert_eq!(
        ask("anonymous", "+4940555"),
        Ok(routed(&trunks, Some("+4940555"), None))
    );
    // Short codes, and calls from elsewhere: no decision.
    assert_eq!(ask("0301234567", "112"), Ok(None));
    assert_eq!(
        p.route(&dialled("carrier", "+4930123", "0401234567")),
        Ok(None)
    );
    // What it answers passes the chain's checks.
    let Ok(Some(decision)) = ask("0301234567", "0401234567") else {
        panic!("no decision");
    };
    assert_eq!(crate::policy::route::check(&decision), Ok(()));
}

#[test]
fn premium_block_refuses_premium_numbers_in_every_form() {
    let p = example("premium_block.lua");
    let barred = Ok(Some(RouteDecision::Reject {
        status: 403,
        reason: "Premium Numbers Barred".into(),
    }));
    for callee in ["09001234567", "0137123456", "0049900123456", "+49138123456"] {
        assert_eq!(
            p.route(&dialled("pbx", "4930123", callee)),
            barred,
            "{callee}"
        );
    }
    for callee in ["0301234567", "0800123456", "+4930123", "0090012"] {
        assert_eq!(
            p.route(&dialled("pbx", "4930123", callee)),
            Ok(None),
            "{callee}"
        );
    }
}

#[test]
fn time_of_day_sends_the_front_desk_to_the_office_in_office_hours() {
    let p = example("time_of_day.lua");
    // Stands the script's clock (local time) still at `utc`, in UTC.
    let at = |utc: i64| {
        p.lua
            .load(format!(
                "local real = rawget(_G, 'vigil_real_date') or os.date\n\
                 vigil_real_date = real\n\
                 os.date = function(f, t) if f == '*t' and t == nil then return real('!*t', {utc}) end return real(f, t) end"
            ))
            .exec()
            .expect("clock stub");
        p.route(&dialled("pbx", "4930123", "100"))
    };
    let office = Ok(routed(&["office-pbx", "answering-service"], None, None));
    let closed = Ok(routed(&["answering-service"], None, None));
    // Monday 2026-01-05.
    assert_eq!(at(1_767_605_400), office, "Monday 09:30");
    assert_eq!(at(1_767_605_400 - 2 * 3600), closed, "Monday 07:30");
    assert_eq!(at(1_767_636_000), closed, "Monday 18:00");
    assert_eq!(at(1_767_636_000 - 60), office, "Monday 17:59");
    // Saturday 2026-01-10, 11:00.
    assert_eq!(at(1_768_042_800), closed, "Saturday 11:00");
    // Not the front desk: no decision, whatever the time.
    assert_eq!(p.route(&dialled("pbx", "4930123", "101")), Ok(None));
}

#[test]
fn time_of_day_runs_on_the_real_clock() {
    let p = example("time_of_day.lua");
    let decision = p.route(&dialled("pbx", "4930123", "100"));
    assert!(
        matches!(&decision, Ok(Some(RouteDecision::Route { trunks, .. })) if trunks.last().map(String::as_str) == Some("answering-service")),
        "{decision:?}"
    );
}
