//! From what a hook function returned to the decision it stands for.
//!
//! Lenient where Lua is loose (`1800.0` is a whole number), strict where a
//! typo would silently change a call: an unknown key, a wrong type or a value
//! out of range is an [`HookError::InvalidDecision`] naming the hook and what
//! came back, and the next source decides.

use std::borrow::Cow;
use std::time::Duration;

use mlua::{Table, Value};

use crate::policy::{
    CallOverrides, CallStartDecision, ExtraFields, FailureDecision, HookError, KeepaliveDecision,
    MAX_ROUTE_TRUNKS, MediaTimeoutDecision, RefreshDecision, RefreshMethod, RouteDecision,
};
use crate::sip::reason_phrase;

/// The largest keep-alive payload: one datagram that fits any path's MTU.
pub(super) const MAX_PAYLOAD: usize = 1400;

/// The longest reason phrase a script may put on a status line.
const MAX_REASON: usize = 128;

/// `call_start`: nil | "accept" | `{ reject = status, reason = "..." }` |
/// `{ ttl, update_segment, refresh_method, no_timer_max_duration }`.
pub(super) fn call_start(value: Value) -> Result<Option<CallStartDecision>, HookError> {
    const HOOK: &str = "call_start";
    match &value {
        Value::Nil => Ok(None),
        Value::String(s) if &*s.as_bytes() == b"accept" => {
            Ok(Some(CallStartDecision::Accept(CallOverrides::default())))
        }
        Value::Table(t) => call_start_table(t).map(Some),
        other => Err(invalid(
            HOOK,
            other,
            "nil, \"accept\", { reject = <400..699>, reason = \"...\" } or a table of overrides",
        )),
    }
}

fn call_start_table(t: &Table) -> Result<CallStartDecision, HookError> {
    const HOOK: &str = "call_start";
    let mut reject = None;
    let mut reason = None;
    let mut overrides = CallOverrides::default();
    let mut any_override = false;
    for pair in t.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| HookError::InvalidDecision(format!("{HOOK}: {e}")))?;
        let name = table_key(HOOK, &key)?;
        match name.as_str() {
            "reject" => reject = Some(number_in(HOOK, &name, &value, 400, 699)?),
            "reason" => reason = Some(reason_text(HOOK, &value)?),
            "ttl" => overrides.ttl = Some(number_in(HOOK, &name, &value, 1, u32::MAX)?),
            "update_segment" => {
                overrides.update_segment = Some(number_in(HOOK, &name, &value, 1, u32::MAX)?)
            }
            "no_timer_max_duration" => {
                overrides.no_timer_max_duration = Some(number_in(HOOK, &name, &value, 1, u32::MAX)?)
            }
            "refresh_method" => overrides.refresh_method = Some(refresh_method(&value)?),
            _ => {
                return Err(HookError::InvalidDecision(format!(
                    "{HOOK} returned a table with unknown key {name:?} (known: reject, reason, ttl, \
                     update_segment, refresh_method, no_timer_max_duration)"
                )));
            }
        }
        any_override |= !matches!(name.as_str(), "reject" | "reason");
    }
    match reject {
        Some(status) => {
            if any_override {
                return Err(HookError::InvalidDecision(format!(
                    "{HOOK} returned a table with both reject and overrides"
                )));
            }
            // `number_in` bounded it to 400..=699.
            let status = u16::try_from(status).unwrap_or(500);
            let reason = reason.map_or(Cow::Borrowed(reason_phrase(status)), Cow::Owned);
            Ok(CallStartDecision::Reject { status, reason })
        }
        None if reason.is_some() => Err(HookError::InvalidDecision(format!(
            "{HOOK} returned a reason without reject"
        ))),
        None => Ok(CallStartDecision::Accept(overrides)),
    }
}

/// A reason phrase goes on a status line: printable text only (RFC 3261
/// §25.1 `Reason-Phrase`), so a script cannot inject a header.
fn reason_text(hook: &str, value: &Value) -> Result<String, HookError> {
    let bad = || invalid(hook, value, "reason = a printable string");
    let Value::String(s) = value else {
        return Err(bad());
    };
    let Ok(text) = s.to_str() else {
        return Err(bad());
    };
    let printable = text
        .chars()
        .all(|c| c == ' ' || c == '\t' || !c.is_control());
    if text.trim().is_empty() || text.len() > MAX_REASON || !printable {
        return Err(HookError::InvalidDecision(format!(
            "{hook} returned reason = {}: a reason must be 1..={MAX_REASON} bytes of printable text",
            describe(value)
        )));
    }
    Ok(text.to_string())
}

fn refresh_method(value: &Value) -> Result<RefreshMethod, HookError> {
    if let Value::String(s) = value {
        match &*s.as_bytes() {
            b"auto" => return Ok(RefreshMethod::Auto),
            b"update" => return Ok(RefreshMethod::Update),
            b"reinvite" => return Ok(RefreshMethod::Reinvite),
            _ => {}
        }
    }
    Err(invalid(
        "call_start",
        value,
        "refresh_method = \"auto\", \"update\" or \"reinvite\"",
    ))
}

/// `refresh_due`: nil | "default" | "update" | "reinvite" | "skip" | "hangup".
pub(super) fn refresh_due(value: Value) -> Result<Option<RefreshDecision>, HookError> {
    if let Value::String(s) = &value {
        match &*s.as_bytes() {
            b"default" => return Ok(Some(RefreshDecision::Default)),
            b"update" => return Ok(Some(RefreshDecision::Update)),
            b"reinvite" => return Ok(Some(RefreshDecision::Reinvite)),
            b"skip" => return Ok(Some(RefreshDecision::Skip)),
            b"hangup" => return Ok(Some(RefreshDecision::Hangup)),
            _ => {}
        }
    }
    match value {
        Value::Nil => Ok(None),
        other => Err(invalid(
            "refresh_due",
            &other,
            "nil, \"default\", \"update\", \"reinvite\", \"skip\" or \"hangup\"",
        )),
    }
}

/// `refresh_failed`: nil | "hangup" | "ignore" | "retry", seconds |
/// `{ retry = seconds }`.
pub(super) fn refresh_failed(
    value: Value,
    seconds: Value,
) -> Result<Option<FailureDecision>, HookError> {
    const HOOK: &str = "refresh_failed";
    const EXPECTED: &str =
        "nil, \"hangup\", \"ignore\", \"retry\", <seconds> or { retry = <seconds> }";
    match &value {
        Value::Nil => Ok(None),
        Value::String(s) => match &*s.as_bytes() {
            b"hangup" => Ok(Some(FailureDecision::Hangup)),
            b"ignore" => Ok(Some(FailureDecision::Ignore)),
            b"retry" => retry_delay(&seconds).map(|d| Some(FailureDecision::Retry(d))),
            _ => Err(invalid(HOOK, &value, EXPECTED)),
        },
        Value::Table(t) => {
            let mut delay = None;
            for pair in t.pairs::<Value, Value>() {
                let (key, v) =
                    pair.map_err(|e| HookError::InvalidDecision(format!("{HOOK}: {e}")))?;
                match table_key(HOOK, &key)?.as_str() {
                    "retry" => delay = Some(retry_delay(&v)?),
                    other => {
                        return Err(HookError::InvalidDecision(format!(
                            "{HOOK} returned a table with unknown key {other:?} (expected {{ retry = <seconds> }})"
                        )));
                    }
                }
            }
            match delay {
                Some(d) => Ok(Some(FailureDecision::Retry(d))),
                None => Err(invalid(HOOK, &value, EXPECTED)),
            }
        }
        other => Err(invalid(HOOK, other, EXPECTED)),
    }
}

/// A retry delay: seconds > 0, fractions allowed. The core bounds it.
fn retry_delay(value: &Value) -> Result<Duration, HookError> {
    let secs = match value {
        Value::Integer(i) if *i > 0 => Some(Duration::from_secs(i.unsigned_abs())),
        Value::Number(n) if *n > 0.0 => Duration::try_from_secs_f64(*n).ok(),
        _ => None,
    };
    secs.ok_or_else(|| {
        HookError::InvalidDecision(format!(
            "refresh_failed returned retry with {}; expected a number of seconds > 0",
            describe(value)
        ))
    })
}

/// `keepalive_tick`: nil | "send" | "skip" | `{ payload = "<bytes>" }`.
pub(super) fn keepalive_tick(value: Value) -> Result<Option<KeepaliveDecision>, HookError> {
    const HOOK: &str = "keepalive_tick";
    const EXPECTED: &str = "nil, \"send\", \"skip\" or { payload = \"<1..1400 bytes>\" }";
    match &value {
        Value::Nil => Ok(None),
        Value::String(s) => match &*s.as_bytes() {
            b"send" => Ok(Some(KeepaliveDecision::Default)),
            b"skip" => Ok(Some(KeepaliveDecision::Skip)),
            _ => Err(invalid(HOOK, &value, EXPECTED)),
        },
        Value::Table(t) => {
            let mut payload = None;
            for pair in t.pairs::<Value, Value>() {
                let (key, v) =
                    pair.map_err(|e| HookError::InvalidDecision(format!("{HOOK}: {e}")))?;
                match (table_key(HOOK, &key)?.as_str(), &v) {
                    ("payload", Value::String(bytes))
                        if (1..=MAX_PAYLOAD).contains(&bytes.as_bytes().len()) =>
                    {
                        payload = Some(Cow::Owned(bytes.as_bytes().to_vec()));
                    }
                    ("payload", other) => {
                        return Err(HookError::InvalidDecision(format!(
                            "{HOOK} returned payload = {}; expected a string of 1..={MAX_PAYLOAD} bytes",
                            describe(other)
                        )));
                    }
                    (other, _) => {
                        return Err(HookError::InvalidDecision(format!(
                            "{HOOK} returned a table with unknown key {other:?} (expected {{ payload = \"...\" }})"
                        )));
                    }
                }
            }
            payload
                .map(|p| Some(KeepaliveDecision::Payload(p)))
                .ok_or_else(|| invalid(HOOK, &value, EXPECTED))
        }
        other => Err(invalid(HOOK, other, EXPECTED)),
    }
}

/// `media_timeout`: nil | "hangup" | "ignore".
pub(super) fn media_timeout(value: Value) -> Result<Option<MediaTimeoutDecision>, HookError> {
    if let Value::String(s) = &value {
        match &*s.as_bytes() {
            b"hangup" => return Ok(Some(MediaTimeoutDecision::Hangup)),
            b"ignore" => return Ok(Some(MediaTimeoutDecision::Ignore)),
            _ => {}
        }
    }
    match value {
        Value::Nil => Ok(None),
        other => Err(invalid(
            "media_timeout",
            &other,
            "nil, \"hangup\" or \"ignore\"",
        )),
    }
}

/// `route`: nil | `{ trunks = { "a", "b" }, callee = "...", caller = "..." }`
/// | `{ reject = status, reason = "..." }`. The trunks and numbers are taken
/// as written (text only); whether the engine can use them is the chain's
/// check (`policy::route`), the same for every backend.
pub(super) fn route(value: Value) -> Result<Option<RouteDecision>, HookError> {
    const HOOK: &str = "route";
    const EXPECTED: &str = "nil, { trunks = { \"name\", ... }, callee = \"...\", caller = \"...\" } \
                            or { reject = <400..699>, reason = \"...\" }";
    let t = match &value {
        Value::Nil => return Ok(None),
        Value::Table(t) => t,
        other => return Err(invalid(HOOK, other, EXPECTED)),
    };
    let (mut reject, mut reason, mut trunks, mut callee, mut caller) =
        (None, None, None, None, None);
    for pair in t.pairs::<Value, Value>() {
        let (key, v) = pair.map_err(|e| HookError::InvalidDecision(format!("{HOOK}: {e}")))?;
        let name = table_key(HOOK, &key)?;
        match name.as_str() {
            "reject" => reject = Some(number_in(HOOK, &name, &v, 400, 699)?),
            "reason" => reason = Some(reason_text(HOOK, &v)?),
            "trunks" => trunks = Some(trunk_list(&v)?),
            "callee" => callee = Some(route_text("callee", &v)?),
            "caller" => caller = Some(route_text("caller", &v)?),
            _ => {
                return Err(HookError::InvalidDecision(format!(
                    "{HOOK} returned a table with unknown key {name:?} (known: trunks, callee, \
                     caller, reject, reason)"
                )));
            }
        }
    }
    let rewrites = callee.is_some() || caller.is_some();
    match (reject, trunks) {
        (Some(status), None) if !rewrites => {
            // `number_in` bounded it to 400..=699.
            let status = u16::try_from(status).unwrap_or(500);
            let reason = reason.map_or(Cow::Borrowed(reason_phrase(status)), Cow::Owned);
            Ok(Some(RouteDecision::Reject { status, reason }))
        }
        (Some(_), _) => Err(HookError::InvalidDecision(format!(
            "{HOOK} returned a table with both reject and a route"
        ))),
        (None, Some(_)) if reason.is_some() => Err(HookError::InvalidDecision(format!(
            "{HOOK} returned a reason without reject"
        ))),
        (None, Some(trunks)) => Ok(Some(RouteDecision::Route {
            trunks,
            callee,
            caller,
        })),
        (None, None) => Err(invalid(HOOK, &value, EXPECTED)),
    }
}

/// `trunks`: a list of 1..=[`MAX_ROUTE_TRUNKS`] strings. Read no further
/// than that, so a huge table costs no more than a short one.
fn trunk_list(value: &Value) -> Result<Vec<String>, HookError> {
    let bad = |what: &str| {
        HookError::InvalidDecision(format!(
            "route returned trunks = {}: {what}; expected a list of 1..={MAX_ROUTE_TRUNKS} trunk names",
            describe(value)
        ))
    };
    let Value::Table(list) = value else {
        return Err(bad("not a table"));
    };
    let mut indexed = Vec::new();
    for pair in list.pairs::<Value, Value>() {
        let (key, v) = pair.map_err(|e| HookError::InvalidDecision(format!("route: {e}")))?;
        if indexed.len() == MAX_ROUTE_TRUNKS {
            return Err(bad("too many"));
        }
        let index = match key {
            Value::Integer(i) => usize::try_from(i).ok().filter(|i| *i >= 1),
            _ => None,
        };
        let Some(index) = index else {
            return Err(bad("a key that is no list index"));
        };
        indexed.push((index, route_text("trunk", &v)?));
    }
    indexed.sort_unstable_by_key(|(i, _)| *i);
    if indexed.iter().enumerate().any(|(n, (i, _))| *i != n + 1) {
        return Err(bad("a list with holes"));
    }
    Ok(indexed.into_iter().map(|(_, name)| name).collect())
}

/// A trunk name or a number: a string of UTF-8 text.
fn route_text(field: &str, value: &Value) -> Result<String, HookError> {
    match value {
        Value::String(s) => s.to_str().map(|t| t.to_string()).ok(),
        _ => None,
    }
    .ok_or_else(|| {
        HookError::InvalidDecision(format!(
            "route returned {field} = {}; expected a string",
            describe(value)
        ))
    })
}

/// `hangup`: nil | a table of string keys → string, number or boolean values,
/// added to `extra` sorted by key (Lua's table order is arbitrary; CDRs
/// should not be).
pub(super) fn hangup(value: Value, extra: &mut ExtraFields) -> Result<(), HookError> {
    const HOOK: &str = "hangup";
    let t = match &value {
        Value::Nil => return Ok(()),
        Value::Table(t) => t,
        other => return Err(invalid(HOOK, other, "nil or a table of CDR fields")),
    };
    let mut fields = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (key, v) = pair.map_err(|e| HookError::InvalidDecision(format!("{HOOK}: {e}")))?;
        let name = table_key(HOOK, &key)?;
        let text = match &v {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => number_text(*n),
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(HookError::InvalidDecision(format!(
                    "{HOOK} returned {name} = {}; CDR fields must be strings, numbers or booleans",
                    describe(other)
                )));
            }
        };
        fields.push((name, text));
    }
    fields.sort();
    extra.extend(fields);
    Ok(())
}

/// A float for a CDR: whole numbers without a fraction (`3600/2` is `1800`),
/// others in the shortest form that reads back the same.
fn number_text(n: f64) -> String {
    // 2^53: beyond it not every whole number is representable anyway.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < EXACT {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

/// A table key that must be a non-empty string.
fn table_key(hook: &str, key: &Value) -> Result<String, HookError> {
    match key {
        Value::String(s) if !s.as_bytes().is_empty() => Ok(s.to_string_lossy()),
        other => Err(HookError::InvalidDecision(format!(
            "{hook} returned a table with key {}; keys must be non-empty strings",
            describe(other)
        ))),
    }
}

/// A whole number in `min..=max` (`1800.0` counts as whole).
fn number_in(hook: &str, field: &str, value: &Value, min: u32, max: u32) -> Result<u32, HookError> {
    let n = match value {
        Value::Integer(i) => u32::try_from(*i).ok(),
        Value::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX) => {
            Some(*n as u32)
        }
        _ => None,
    };
    n.filter(|n| (min..=max).contains(n)).ok_or_else(|| {
        HookError::InvalidDecision(format!(
            "{hook} returned {field} = {}; expected a whole number in {min}..={max}",
            describe(value)
        ))
    })
}

fn invalid(hook: &str, got: &Value, expected: &str) -> HookError {
    HookError::InvalidDecision(format!(
        "{hook} returned {}; expected {expected}",
        describe(got)
    ))
}

/// A returned value, short enough for a log line.
pub(super) fn describe(value: &Value) -> String {
    const MAX: usize = 40;
    match value {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let text = s.to_string_lossy();
            match text.char_indices().nth(MAX) {
                Some((cut, _)) => format!("{:?}…", &text[..cut]),
                None => format!("{text:?}"),
            }
        }
        other => format!("a {}", other.type_name()),
    }
}
