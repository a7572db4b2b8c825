//! Call detail records: what billing sees of a call, one JSON object per line.
//!
//! The call state machine produces a [`CdrRecord`] with monotonic instants the
//! moment a call ends; the writer turns them into wall-clock times when it writes
//! the line, microseconds later. Durations therefore come from the monotonic clock
//! (an NTP step mid-call cannot bill a caller for an hour they did not talk),
//! while `start`/`answer`/`end` are as accurate as the host's clock.
//!
//! Getting every record into the CDR file, whatever the disk does, is split
//! by concern: [`delivery`] decides (what waits where, what to write, spill or
//! retry next, when to check the file is still at its path) without I/O;
//! [`append`] writes whole lines only; `files` does the file I/O; `writer` is
//! the tokio task around them.

pub mod append;
pub mod database;
pub mod delivery;
pub mod files;
pub mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

pub use files::{CdrPathError, billed_ids, check_path};

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The caller hung up with BYE.
    CallerBye,
    /// The callee hung up with BYE.
    CalleeBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// The call failed before answer (busy, timeout, error): see `sip_code`.
    Rejected,
    /// No route matched the called number.
    NoRoute,
    /// Vigil was shut down during the call.
    Shutdown,
    /// The caller never ACKed the 200 OK (RFC 3261 §13.3.1.4); both legs got BYE.
    AckTimeout,
    /// A leg's session timer ran out: a refresh failed or the peer stopped
    /// refreshing (RFC 4028); both legs got BYE. See `refresh_failure`.
    SessionTimeout,
    /// A call with a leg without session timer reached `no_timer_max_duration`.
    MaxDuration,
    /// A policy's `call_start` refused the call: see `sip_code`.
    PolicyRejected,
    /// An operator hung the call up (`vigil ctl hangup`); both legs got BYE.
    Admin,
    /// A relayed call's RTP stopped for `media.timeout` (as rtpengine saw it,
    /// in the configured `timeout_mode`) and the `media_timeout` policy let it
    /// end; both legs got BYE.
    MediaTimeout,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerBye => "caller-bye",
            EndReason::CalleeBye => "callee-bye",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected => "rejected",
            EndReason::PolicyRejected => "policy-rejected",
            EndReason::Admin => "admin",
            EndReason::NoRoute => "no-route",
            EndReason::Shutdown => "shutdown",
            EndReason::AckTimeout => "ack-timeout",
            EndReason::SessionTimeout => "session-timeout",
            EndReason::MaxDuration => "max-duration",
            EndReason::MediaTimeout => "media-timeout",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which party ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    Caller,
    Callee,
    Switch,
}

/// A call's CDR identity: made when the call is created, random (a UUID,
/// version 4), and the same in the CDR file, the database (its primary key:
/// a retried insert never makes a second row) and the call's shared state.
/// The A-leg Call-ID cannot serve: a caller may reuse it, and a refused call
/// has no B leg.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CdrId([u8; 16]);

impl CdrId {
    /// A version 4 UUID from 128 random bits (6 of them are replaced by the
    /// version and variant).
    pub fn from_random(bits: u128) -> CdrId {
        let mut bytes = bits.to_be_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        CdrId(bytes)
    }
}

impl std::str::FromStr for CdrId {
    type Err = ();

    /// A CDR id read back from its text (the state store keeps it so):
    /// 32 hex digits in the UUID's 8-4-4-4-12 groups.
    fn from_str(text: &str) -> Result<CdrId, ()> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(());
        }
        let hex: String = groups.concat();
        u128::from_str_radix(&hex, 16)
            .map(|bits| CdrId(bits.to_be_bytes()))
            .map_err(|_| ())
    }
}

impl fmt::Display for CdrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CdrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One finished call, as the state machine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrRecord {
    /// Stable for the call: see [`CdrId`].
    pub id: CdrId,
    pub call_id: String,
    pub b_call_id: Option<String>,
    pub caller: String,
    pub callee: String,
    pub trunk_in: Arc<str>,
    pub trunk_out: Option<Arc<str>>,
    pub start: Instant,
    pub answer: Option<Instant>,
    pub end: Instant,
    pub end_reason: EndReason,
    pub ended_by: EndedBy,
    /// The final status of a call that failed before answer.
    pub sip_code: Option<u16>,
    /// For `session-timeout`: `timeout`, `expired` or the refresh's status code.
    pub refresh_failure: Option<String>,
    /// Fields the policies' `hangup` hooks added (a key given twice keeps its
    /// last value).
    pub extra: Vec<(String, String)>,
    /// For a call relayed through rtpengine: what its media carried, from
    /// rtpengine's own count. `None` for a call that was not relayed (or
    /// whose totals rtpengine could not give).
    pub media: Option<MediaTotals>,
    /// The gateways the B-leg INVITE went to, in order, each with what it
    /// got (empty for a call to a registered user).
    pub attempts: Vec<Attempt>,
}

/// One gateway a call tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Attempt {
    #[serde(serialize_with = "text", deserialize_with = "arc_text")]
    pub trunk: Arc<str>,
    /// The gateway's address (for a gateway the config names by host, the
    /// one DNS gave).
    pub gateway: String,
    /// Its final status (`200` when it answered), `no-response` (nothing
    /// within `invite_timeout`), `timeout` (no final answer before Timer B),
    /// or `none` (the call ended while it was being tried).
    pub outcome: String,
}

fn arc_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Arc::from)
}

fn text<S: serde::Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

/// What a relayed call's media carried, each way, and when its last packet
/// was seen: billing can stop the clock where the audio stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaTotals {
    pub caller_to_callee: Flow,
    pub callee_to_caller: Flow,
    /// The last RTP packet either way (rtpengine's clock, to the second).
    pub last_media_at: Option<SystemTime>,
}

/// Packets and bytes one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
}

/// The `id` of a CDR line Vigil wrote (its first field), without parsing
/// the whole line: the state store learns from the lines written which
/// calls are billed.
pub fn line_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"id\":\"")?;
    // Vigil's ids are hex: no escapes inside.
    rest.split_once('"').map(|(id, _)| id)
}

impl CdrRecord {
    /// Billable milliseconds: end − answer, 0 if never answered.
    pub fn duration_ms(&self) -> u64 {
        self.answer
            .map(|a| self.end.saturating_duration_since(a).as_millis() as u64)
            .unwrap_or(0)
    }

    /// The JSON line, with instants converted using `(now_instant, now_wall)`
    /// taken together by the writer.
    pub fn to_json_line(&self, now_instant: Instant, now_wall: SystemTime) -> String {
        let wall = |at: Instant| -> String {
            let ago = now_instant.saturating_duration_since(at);
            let t = now_wall.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
            humantime::format_rfc3339_millis(t).to_string()
        };
        let line = CdrLine {
            id: self.id.to_string(),
            call_id: &self.call_id,
            b_call_id: self.b_call_id.as_deref(),
            caller: &self.caller,
            callee: &self.callee,
            trunk_in: &self.trunk_in,
            trunk_out: self.trunk_out.as_deref(),
            start: wall(self.start),
            answer: self.answer.map(wall),
            end: wall(self.end),
            duration_ms: self.duration_ms(),
            end_reason: self.end_reason,
            ended_by: self.ended_by,
            sip_code: self.sip_code,
            refresh_failure: self.refresh_failure.as_deref(),
            extra: self
                .extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            gateway: self
                .answer
                .and_then(|_| self.attempts.last())
                .map(|a| a.gateway.as_str()),
            attempts: &self.attempts,
            media: self.media.map(|m| MediaLine {
                caller_to_callee: m.caller_to_callee,
                callee_to_caller: m.callee_to_caller,
                last_media_at: m
                    .last_media_at
                    .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            }),
        };
        // Serialising a struct of strings and numbers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct CdrLine<'a> {
    id: String,
    call_id: &'a str,
    b_call_id: Option<&'a str>,
    caller: &'a str,
    callee: &'a str,
    trunk_in: &'a str,
    trunk_out: Option<&'a str>,
    start: String,
    answer: Option<String>,
    end: String,
    duration_ms: u64,
    end_reason: EndReason,
    ended_by: EndedBy,
    sip_code: Option<u16>,
    refresh_failure: Option<&'a str>,
    extra: BTreeMap<&'a str, &'a str>,
    /// The gateway that answered.
    gateway: Option<&'a str>,
    attempts: &'a [Attempt],
    media: Option<MediaLine>,
}

#[derive(Serialize)]
struct MediaLine {
    caller_to_callee: Flow,
    callee_to_caller: Flow,
    last_media_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdr_id_reads_back_from_its_text() {
        let id = CdrId::from_random(0xfeed_beef_0123_4567_89ab_cdef_0011_2233);
        assert_eq!(id.to_string().parse::<CdrId>(), Ok(id));
        for bad in [
            "",
            "cdr-1",
            "5f0c2a9e41d7b3c8a2e6f1d09b4c7e35",
            "zzzzzzzz-9bba-44d8-8da4-231a21a6d229",
        ] {
            assert!(bad.parse::<CdrId>().is_err(), "{bad}");
        }
    }
    use std::time::Duration;

    #[test]
    fn json_line_has_every_field_in_utc_with_millis() {
        let t0 = Instant::now();
        let record = CdrRecord {
            id: CdrId::from_random(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            call_id: "a@b".into(),
            b_call_id: Some("vgl00-1".into()),
            caller: "1001".into(),
            callee: "0049301234".into(),
            trunk_in: "pbx".into(),
            trunk_out: Some("carrier".into()),
            start: t0,
            answer: Some(t0 + Duration::from_millis(1500)),
            end: t0 + Duration::from_millis(61_500),
            end_reason: EndReason::CallerBye,
            ended_by: EndedBy::Caller,
            sip_code: None,
            refresh_failure: None,
            extra: vec![
                ("route".into(), "gold".into()),
                ("route".into(), "silver".into()),
            ],
            media: None,
            attempts: vec![
                Attempt {
                    trunk: "carrier".into(),
                    gateway: "192.0.2.1:5060".into(),
                    outcome: "503".into(),
                },
                Attempt {
                    trunk: "carrier".into(),
                    gateway: "192.0.2.2:5060".into(),
                    outcome: "200".into(),
                },
            ],
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let line = record.to_json_line(t0 + Duration::from_millis(61_500), wall);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["id"], "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(v["duration_ms"], 60_000);
        assert_eq!(v["end_reason"], "caller-bye");
        assert_eq!(v["ended_by"], "caller");
        assert_eq!(v["sip_code"], serde_json::Value::Null);
        assert_eq!(v["refresh_failure"], serde_json::Value::Null);
        assert_eq!(v["end"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v["start"], "2027-01-15T07:58:58.500Z");
        assert_eq!(v["answer"], "2027-01-15T07:59:00.000Z");
        assert_eq!(v["trunk_out"], "carrier");
        assert_eq!(v["extra"], serde_json::json!({ "route": "silver" }));
        assert_eq!(v["gateway"], "192.0.2.2:5060");
        assert_eq!(v["attempts"][0]["outcome"], "503");
        assert_eq!(v["attempts"][1]["trunk"], "carrier");
        let unanswered = CdrRecord {
            id: CdrId::from_random(2),
            answer: None,
            end_reason: EndReason::Rejected,
            sip_code: Some(486),
            ..record
        };
        let v: serde_json::Value =
            serde_json::from_str(&unanswered.to_json_line(t0, wall)).expect("json");
        assert_eq!(v["answer"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 0);
        assert_eq!(v["sip_code"], 486);
    }
}
