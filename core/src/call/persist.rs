//! A call that outlives the process: the record the state store keeps of an
//! established call ([`SavedCall`]) and the call rebuilt from it.
//!
//! Only confirmed calls are saved (both legs ACKed): what a call needs to go
//! on after a restart or on another node — both dialogs (Call-ID, tags,
//! route set, remote target, CSeqs), each leg's last SDP each way, each
//! leg's session timer with its deadlines as absolute times (see
//! [`Timeline`]), the call's maximum duration, and the CDR so far (its id,
//! start, answer, trunks, the gateways tried), and for a relayed call which
//! rtpengine holds its media and how it is being watched ([`SavedMedia`]):
//! rtpengine keeps the call while Vigil restarts, so the restored call's
//! SDP still goes through it, its media is still looked at, and its end
//! still frees rtpengine's ports and bills what the media carried.
//! Transactions in flight are not: a refresh that was on its way goes again
//! at once, and a peer retransmits what it had sent.
//!
//! A call knows when it has changed in a way worth saving
//! ([`Call::save_fingerprint`]): an answer, a refresh (its deadlines move), a
//! re-INVITE or UPDATE (CSeq, SDP, target). The engine compares fingerprints
//! and emits a save only when it changed.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::build::Body;
use super::leg::{ALeg, AState, BLeg, BState, CallLeg};
use super::media::MediaSession;
use super::relay::Relays;
use super::{Call, CallKey, CallTimer, CallTimers, Leg, Parties};
use crate::cdr::Attempt;
use crate::config::{SessionTimerConfig, TrunkAuth};
use crate::dialog::SavedDialog;
use crate::media::{EngineId, NgClient};
use crate::session_timer::SavedSession;
use crate::sip::{HeaderName, Protocol};
use crate::timer::{Scheduled, Timeline};

/// An established call as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedCall {
    /// The CDR's id (the store's key).
    pub id: String,
    /// The wall clock when it was saved, milliseconds since the Unix epoch:
    /// every instant below is an offset from then. Set by the shell.
    pub saved_at_ms: u64,
    pub caller: String,
    pub callee: String,
    pub trunk_in: String,
    pub trunk_out: String,
    pub policy_in: Option<String>,
    pub policy_out: Option<String>,
    pub start: i64,
    pub answer: i64,
    /// `no_timer_max_duration` of a call with a leg without timer.
    pub max_duration_at: Option<i64>,
    /// The gateways tried, for the CDR (the last one answered).
    pub attempts: Vec<Attempt>,
    pub a: SavedLeg,
    pub b: SavedLeg,
    /// A relayed call's rtpengine side (absent in what earlier versions
    /// saved: those calls resume unrelayed).
    #[serde(default)]
    pub media: Option<SavedMedia>,
}

/// What a relayed call knows of its rtpengine session. rtpengine knows the
/// call by the caller's Call-ID and From tag (in the A leg's dialog) and by
/// `callee_tag`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedMedia {
    /// The ng address of the rtpengine that holds the call (`None`: none
    /// took it).
    pub engine: Option<SocketAddr>,
    pub callee_tag: String,
    pub caller_offered: bool,
    pub on_hold: bool,
    /// Since when silence counts against the call, and when its media is
    /// next looked at (offsets, like every instant here).
    pub silence_from: Option<i64>,
    pub check_at: Option<i64>,
    /// The latest packet a look saw, milliseconds since the Unix epoch.
    pub heard_at_ms: Option<u64>,
}

impl SavedMedia {
    fn of(m: &MediaSession, timeline: &Timeline, engines: Option<&NgClient>) -> SavedMedia {
        SavedMedia {
            engine: m
                .engine
                .and_then(|id| engines.and_then(|c| c.engine_addr(id))),
            callee_tag: m.callee_tag.to_string(),
            caller_offered: m.caller_offered,
            on_hold: m.on_hold,
            silence_from: m.silence_from.map(|at| timeline.offset(at)),
            check_at: m.check_at.map(|at| timeline.offset(at)),
            heard_at_ms: m.heard_at.and_then(|t| {
                let ms = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
                u64::try_from(ms).ok()
            }),
        }
    }

    /// The session back, held by `engine` (its id in this process's ng
    /// client). A look that fell due while no process watched the call goes
    /// at the first timeout.
    fn session(&self, engine: Option<EngineId>, timeline: &Timeline) -> MediaSession {
        let mut m = MediaSession::new(&self.callee_tag, self.caller_offered);
        m.engine = engine;
        m.on_hold = self.on_hold;
        m.silence_from = self.silence_from.map(|at| timeline.instant(at));
        m.check_at = self.check_at.map(|at| timeline.instant(at));
        m.heard_at = self
            .heard_at_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        m
    }
}

/// One leg of a saved call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedLeg {
    /// Vigil's socket on this leg and the peer's address.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub proto: Protocol,
    /// What Vigil writes into Via and Contact on this leg.
    pub advertised: SocketAddr,
    pub dialog: SavedDialog,
    pub timer: SessionTimerConfig,
    pub session: Option<SavedSession>,
    pub allows_update: bool,
    /// The last SDP Vigil sent this peer, and the last one it sent Vigil.
    pub local_body: Option<SavedBody>,
    pub remote_body: Option<SavedBody>,
}

/// A message body and the headers describing it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedBody {
    pub headers: Vec<(String, String)>,
    /// An SDP is text; anything else is kept with its invalid bytes replaced.
    pub text: String,
}

impl SavedBody {
    pub(super) fn of(body: &Body) -> SavedBody {
        SavedBody {
            headers: body
                .headers()
                .map(|(name, value)| (name.as_str().to_string(), value.to_string()))
                .collect(),
            text: String::from_utf8_lossy(body.bytes()).into_owned(),
        }
    }

    pub(super) fn body(&self) -> Body {
        Body::from_parts(
            self.headers
                .iter()
                .map(|(name, value)| (HeaderName::from_wire(name), value.as_str())),
            self.text.as_bytes(),
        )
    }
}

/// What a restored call takes from the engine that resumes it.
pub struct Restore<'a> {
    pub key: CallKey,
    /// `saved.id`, read back.
    pub id: crate::cdr::CdrId,
    pub now: Instant,
    pub timeline: Timeline,
    /// The B-leg trunk's `auth` in the config now (its carrier's challenges
    /// to in-dialog requests are answered with it).
    pub auth: Option<Arc<TrunkAuth>>,
    /// This process relays media (`media:` is configured), and the id of
    /// the saved rtpengine in its ng client (`None`: not configured now).
    /// A relayed call restored where nothing relays crosses its SDPs as
    /// they come.
    pub relay: Option<Option<EngineId>>,
    pub saved: &'a SavedCall,
}

impl Call {
    /// A number that changes when what the store keeps of the call changes
    /// in a way that matters; `None` while the call is not established (or
    /// has ended): then nothing is saved.
    pub fn save_fingerprint(&self) -> Option<u64> {
        if self.ending.is_some()
            || self.a.state() != AState::Confirmed
            || self.b.state() != BState::Confirmed
        {
            return None;
        }
        let mut h = std::hash::DefaultHasher::new();
        self.timers.get(CallTimer::MaxDuration).hash(&mut h);
        for leg in [&self.a.leg, &self.b.leg] {
            leg.fingerprint(&mut h);
        }
        // 0 means "never saved".
        Some(h.finish().max(1))
    }

    /// Notes that the store has (or is being sent) the state with this
    /// fingerprint.
    pub fn mark_saved(&mut self, fingerprint: u64) {
        self.saved = fingerprint;
    }

    /// The fingerprint last saved; 0 for a call never saved.
    pub fn saved_fingerprint(&self) -> u64 {
        self.saved
    }

    /// The record the store keeps, with instants measured from `now`;
    /// `engines` names a relayed call's rtpengine by its address.
    pub fn save(&self, now: Instant, engines: Option<&NgClient>) -> SavedCall {
        let timeline = Timeline::saving(now);
        let p = &self.parties;
        SavedCall {
            id: self.id(),
            saved_at_ms: 0,
            caller: p.caller.clone(),
            callee: p.callee.clone(),
            trunk_in: p.trunk_in.to_string(),
            trunk_out: p.trunk_out.to_string(),
            policy_in: p.policy_in.as_deref().map(str::to_string),
            policy_out: p.policy_out.as_deref().map(str::to_string),
            start: timeline.offset(self.start),
            answer: timeline.offset(self.answer.unwrap_or(self.start)),
            max_duration_at: self
                .timers
                .get(CallTimer::MaxDuration)
                .map(|at| timeline.offset(at)),
            attempts: self.answered_attempts(),
            a: self.a.leg.save(&timeline),
            b: self.b.leg.save(&timeline),
            media: self
                .media
                .as_deref()
                .map(|m| SavedMedia::of(m, &timeline, engines)),
        }
    }

    /// The call back from the store, confirmed on both legs, its timers
    /// re-armed from their absolute deadlines: whatever fell due while no
    /// process had it fires at the first timeout.
    pub fn restore(r: Restore<'_>) -> Call {
        let s = r.saved;
        let a = CallLeg::restore(r.key, Leg::A, &s.a, r.now, &r.timeline, None);
        let b = CallLeg::restore(r.key, Leg::B, &s.b, r.now, &r.timeline, r.auth);
        let mut timers = CallTimers::default();
        if let Some(at) = s.max_duration_at {
            timers.set(CallTimer::MaxDuration, r.timeline.instant(at));
        }
        let attempts = (!s.attempts.is_empty()).then(|| s.attempts.clone().into_boxed_slice());
        Call {
            key: r.key,
            cdr_id: r.id,
            parties: Parties {
                caller: s.caller.clone(),
                callee: s.callee.clone(),
                trunk_in: s.trunk_in.as_str().into(),
                trunk_out: s.trunk_out.as_str().into(),
                policy_in: s.policy_in.as_deref().map(Arc::from),
                policy_out: s.policy_out.as_deref().map(Arc::from),
            },
            start: r.timeline.instant(s.start),
            answer: Some(r.timeline.instant(s.answer)),
            ending: None,
            a: ALeg::restore(a),
            b: BLeg::restore(b),
            relays: Relays::default(),
            media: match (&s.media, r.relay) {
                (Some(m), Some(engine)) => Some(Box::new(m.session(engine, &r.timeline))),
                _ => None,
            },
            failover: None,
            restored_attempts: attempts,
            timers,
            // The engine marks what it restored as saved.
            saved: 0,
            scheduled: Scheduled::default(),
        }
    }

    /// The gateways tried, as the CDR of this answered call says them.
    fn answered_attempts(&self) -> Vec<Attempt> {
        match (&self.failover, &self.restored_attempts) {
            (Some(f), _) => f.attempts(Some(200)),
            (None, Some(restored)) => restored.to_vec(),
            (None, None) => Vec::new(),
        }
    }
}

impl CallLeg {
    /// Feeds what the store keeps of this leg, and that changes, into `h`.
    fn fingerprint(&self, h: &mut impl Hasher) {
        if let Some(d) = self.dialog() {
            d.remote_seq().hash(h);
        }
        self.local_body().map(Body::identity).hash(h);
        self.remote_body().map(Body::identity).hash(h);
        if let Some(s) = self.session() {
            (s.agreed().interval, s.refreshes(), s.last_proof()).hash(h);
            (s.refresh_due_at(), s.expires_at()).hash(h);
        }
    }
}
