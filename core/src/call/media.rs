//! A relayed call's media (issue 17): every SDP that crosses the call goes
//! through rtpengine first — the caller's offer before the B-leg INVITE, the
//! callee's answer (in a provisional or the 2xx) before the caller sees it, a
//! late offer and its answer in the ACK, a re-INVITE's or UPDATE's new offer
//! and its answer — so each leg sees rtpengine's address, never the other
//! peer's. When the call ends, rtpengine's `delete` answers what the media
//! carried, for the CDR. While the call is up, a `query` at the moment its
//! media could have died tells whether it did (`media.timeout`, or
//! `media.hold_timeout` on hold).
//!
//! A round trip to rtpengine is an event like a SIP response: the message
//! that waits for it is held in its [`MediaOp`], and no worker ever waits.
//! Vigil's own refreshes, and its answers to a peer's refresh, carry the SDP
//! the leg already has: a refresh never moves the media.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::build::Body;
use super::relay::Relay;
use super::{CallKey, Leg};
use crate::cdr::{CdrRecord, Flow, MediaTotals};
use crate::config::{MediaConfig, TimeoutMode};
use crate::media::{CallStats, Command, Delete, EngineId, NgClient, NoEngineUp, RequestId};
use crate::policy::MediaDirection;
use crate::ratelimit::RateLimit;
use crate::session_timer::UasOutcome;
use crate::sip::{Request, Response};
use crate::transaction::ServerTxId;

/// The worker's side of rtpengine, lent to its calls: the ng client and
/// which call waits for which request.
pub struct MediaRelay {
    pub client: NgClient,
    pub config: MediaConfig,
    waiting: HashMap<RequestId, (CallKey, MediaOp)>,
    /// Calls' failures with rtpengine are logged at this rate: with
    /// rtpengine down, every new call and every look at a call up fails.
    failure_log: RateLimit,
    /// Deletes of ended calls that got no answer, with the engine that
    /// holds each: sent again when it is next up, so that an rtpengine
    /// that was only unreachable frees those calls' ports at once rather
    /// than at its own timeout. At most [`MAX_DELETES_TO_RETRY`].
    deletes_to_retry: Vec<(EngineId, Delete)>,
}

/// Deletes a worker keeps to send again; beyond, rtpengine's own timeout
/// frees the calls (their media stopped with them).
const MAX_DELETES_TO_RETRY: usize = 10_000;

/// Failures with rtpengine logged per worker: this many per window.
const FAILURE_LOG_BURST: u32 = 10;
const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(10);

impl MediaRelay {
    pub fn new(client: NgClient, config: MediaConfig) -> MediaRelay {
        MediaRelay {
            client,
            config,
            waiting: HashMap::new(),
            failure_log: RateLimit::new(FAILURE_LOG_BURST, FAILURE_LOG_WINDOW),
            deletes_to_retry: Vec::new(),
        }
    }

    /// A call's `delete` went unanswered: sent again when `engine` is up.
    pub fn retry_delete(&mut self, engine: EngineId, delete: Delete) {
        if self.deletes_to_retry.len() < MAX_DELETES_TO_RETRY {
            self.deletes_to_retry.push((engine, delete));
        }
    }

    /// `engine` answers again: the deletes it missed go to it now (no call
    /// waits for their replies). Returns how many.
    pub fn engine_up(&mut self, now: Instant, engine: EngineId) -> usize {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deletes_to_retry)
            .into_iter()
            .partition(|(e, _)| *e == engine);
        self.deletes_to_retry = rest;
        let sent = due.len();
        for (_, delete) in due {
            // The engine is up: it cannot refuse; a failure now is final.
            let _ = self
                .client
                .request(now, Some(engine), &Command::Delete(delete));
        }
        sent
    }

    /// Deletes waiting for their engine to come back (for leak checks).
    pub fn deletes_to_retry(&self) -> usize {
        self.deletes_to_retry.len()
    }

    /// Whether a call's failure with rtpengine may be logged now; `Some`
    /// with how many were not since the last that was.
    pub fn log_failure(&mut self, now: Instant) -> Option<u64> {
        self.failure_log.allow(now)
    }

    /// Sends `command` for call `call` to its engine (`None`: a new call's,
    /// the next one up); its reply comes back with `op`. On `Err` the op is
    /// handed back: nothing was sent.
    pub fn request(
        &mut self,
        now: Instant,
        call: CallKey,
        engine: Option<EngineId>,
        command: &Command,
        op: MediaOp,
    ) -> Result<EngineId, (NoEngineUp, MediaOp)> {
        match self.client.request(now, engine, command) {
            Ok((id, engine)) => {
                self.waiting.insert(id, (call, op));
                Ok(engine)
            }
            Err(e) => Err((e, op)),
        }
    }

    /// The call and op a reply is for (it is forgotten).
    pub fn take(&mut self, id: RequestId) -> Option<(CallKey, MediaOp)> {
        let taken = self.waiting.remove(&id);
        crate::shrink::after_burst(&mut self.waiting);
        taken
    }

    /// Requests waiting for their reply (for leak checks).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// What a call waits for from rtpengine, with what waits on it.
pub enum MediaOp {
    /// The caller's offer, before the B-leg INVITE goes.
    CallerOffer,
    /// The callee's answer, in a provisional or a 2xx to the B-leg INVITE.
    CalleeAnswer(Box<Response>),
    /// A late offer: the callee's 2xx to an INVITE without SDP.
    CalleeOffer(Box<Response>),
    /// The caller's answer to a late offer, in its ACK.
    CallerAnswer(Box<LateAnswer>),
    /// The caller's answer to a late offer the callee made in a reliable
    /// 18x, in its PRACK (RFC 3262): it goes on in the B leg's PRACK.
    CallerPrackAnswer(Box<super::build::Body>),
    /// A re-INVITE or UPDATE with a new SDP, before it is relayed.
    Reoffer(Box<Reoffer>),
    /// The answer to a relayed offer, before it goes back.
    Reanswer(Box<(Relay, Response)>),
    /// Whether the media still flows.
    Check,
    /// The call is over: what its media carried, for the CDR.
    Delete,
}

impl MediaOp {
    /// What the call asked rtpengine, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            MediaOp::CallerOffer => "caller's offer",
            MediaOp::CalleeAnswer(_) => "callee's answer",
            MediaOp::CalleeOffer(_) => "callee's offer",
            MediaOp::CallerAnswer(_) => "caller's answer",
            MediaOp::CallerPrackAnswer(_) => "caller's answer in a PRACK",
            MediaOp::Reoffer(_) => "re-offer",
            MediaOp::Reanswer(_) => "re-answer",
            MediaOp::Check => "media check",
            MediaOp::Delete => "delete",
        }
    }
}

/// The caller's ACK that answers a late offer, and what it completes.
pub struct LateAnswer {
    pub ack: Request,
    /// The B-leg INVITE the ACK crosses to.
    pub ack_other_seq: u32,
    /// The callee hung up meanwhile: BYE the caller after.
    pub owed_bye: bool,
}

/// A re-INVITE or UPDATE offer waiting for rtpengine.
pub struct Reoffer {
    pub from: Leg,
    pub tx: ServerTxId,
    pub request: Request,
    /// The session timer the sender's leg agreed, for an in-dialog offer;
    /// `None` for an UPDATE in the early dialog (no session before the
    /// answer).
    pub negotiated: Option<UasOutcome>,
}

/// rtpengine's side of one call.
pub struct MediaSession {
    /// The engine that holds the call, from its first request on.
    pub engine: Option<EngineId>,
    /// The tag rtpengine knows the callee's side by (Vigil's tag on the B
    /// leg); the caller's side is the caller's From tag.
    pub callee_tag: Box<str>,
    /// The caller offered SDP in its INVITE (else the callee offers, late).
    pub caller_offered: bool,
    /// An op about the B-leg INVITE's responses is with rtpengine; later
    /// responses wait behind it, in order.
    pub b_busy: bool,
    pub held: VecDeque<Response>,
    /// The leg whose offer is with rtpengine (a re-INVITE or UPDATE, before
    /// or after it crossed): a second offer is glare.
    pub offer_from: Option<Leg>,
    /// The latest offer or answer put the call on hold.
    pub on_hold: bool,
    /// Since when silence counts against the call: its answer, or the
    /// latest time it went on or off hold (`None` until answered).
    pub silence_from: Option<Instant>,
    /// The latest packet (either way) a look at the media saw, in
    /// rtpengine's wall-clock time: all there is to go on once rtpengine
    /// no longer knows the call.
    pub heard_at: Option<SystemTime>,
    /// When to look at the media next (its timeout could have run out).
    pub check_at: Option<Instant>,
    /// The CDR of the call that ended, waiting for rtpengine's totals.
    pub pending_cdr: Option<Box<CdrRecord>>,
}

impl MediaSession {
    pub fn new(callee_tag: &str, caller_offered: bool) -> MediaSession {
        MediaSession {
            engine: None,
            callee_tag: callee_tag.into(),
            caller_offered,
            b_busy: false,
            held: VecDeque::new(),
            offer_from: None,
            on_hold: false,
            silence_from: None,
            heard_at: None,
            check_at: None,
            pending_cdr: None,
        }
    }

    /// How long media may be silent before it counts as dead.
    pub fn timeout(&self, config: &MediaConfig) -> Duration {
        if self.on_hold {
            config.hold_timeout
        } else {
            config.timeout
        }
    }
}

/// What a `query` says of the media, at wall-clock time `wall`: which way is
/// silent and for how long. `baseline` is when silence began to count (the
/// answer, or the latest hold or resume): a direction that carried no
/// packet since is silent since then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    pub caller_to_callee: Duration,
    pub callee_to_caller: Duration,
}

/// rtpengine reports when a packet came in whole seconds, cut down: the
/// packet came up to this much later than it says.
const REPORTED_IN_SECONDS: Duration = Duration::from_secs(1);

/// The latest a packet rtpengine reports at `reported` can have come: media
/// is judged silent since then, so it never counts as dead before it has
/// been silent for the whole `timeout` (at most a second after).
pub fn packet_came_by(reported: SystemTime) -> SystemTime {
    reported + REPORTED_IN_SECONDS
}

impl Silence {
    pub fn of(
        stats: &CallStats,
        caller_tag: &str,
        callee_tag: &str,
        wall: SystemTime,
        baseline: SystemTime,
    ) -> Silence {
        let since = |tag: &str| {
            let last = stats
                .party(tag)
                .and_then(|p| p.last_packet)
                .map_or(baseline, |t| packet_came_by(t).max(baseline));
            wall.duration_since(last).unwrap_or(Duration::ZERO)
        };
        Silence {
            caller_to_callee: since(caller_tag),
            callee_to_caller: since(callee_tag),
        }
    }

    /// How long the media counts as silent under `mode`: `both` needs both
    /// ways silent (the shorter silence), `either` only one (the longer).
    pub fn silent_for(&self, mode: TimeoutMode) -> Duration {
        match mode {
            TimeoutMode::Both => self.caller_to_callee.min(self.callee_to_caller),
            TimeoutMode::Either => self.caller_to_callee.max(self.callee_to_caller),
        }
    }

    /// Which way is silent that long (both, when both are equally: no
    /// packet either way since the same moment).
    pub fn direction(&self, mode: TimeoutMode) -> MediaDirection {
        match mode {
            TimeoutMode::Both => MediaDirection::Both,
            TimeoutMode::Either if self.caller_to_callee == self.callee_to_caller => {
                MediaDirection::Both
            }
            TimeoutMode::Either if self.caller_to_callee >= self.callee_to_caller => {
                MediaDirection::CallerToCallee
            }
            TimeoutMode::Either => MediaDirection::CalleeToCaller,
        }
    }
}

/// A `delete`'s statistics as the CDR's media totals.
pub fn totals(stats: &CallStats, caller_tag: &str, callee_tag: &str) -> MediaTotals {
    let flow = |tag: &str| {
        stats.party(tag).map_or(Flow::default(), |p| Flow {
            packets: p.rtp.packets,
            bytes: p.rtp.bytes,
        })
    };
    MediaTotals {
        caller_to_callee: flow(caller_tag),
        callee_to_caller: flow(callee_tag),
        last_media_at: stats.parties.iter().filter_map(|p| p.last_packet).max(),
    }
}

/// The body of a message with rtpengine's SDP in place of the one it had.
pub fn with_sdp(original: Option<&Body>, sdp: Vec<u8>) -> Option<Body> {
    let mut headers = crate::sip::Headers::new();
    match original {
        Some(body) => body.apply(&mut headers, &mut Vec::new()),
        None => headers.push(crate::sip::HeaderName::ContentType, "application/sdp"),
    }
    Body::of(&headers, &sdp)
}
