//! One leg's session timer while the call is up (RFC 4028 §7.4, §10): when Vigil
//! refreshes, when the session expires, and what proves the peer alive.

use std::time::{Duration, Instant};

use super::{Agreed, Refresher};
use crate::config::{RefreshMethod, SessionTimerConfig};
use crate::timer::Timeline;
use crate::timer_table;

timer_table!(
    /// Refresh: Vigil's refresh is due. Expiry: the session runs out (minus
    /// `early_hangup`, and for a peer refresher minus min(32, SE/3), RFC 4028 §10).
    /// Retry: a refresh answered 491 (or postponed) goes again.
    LegTimers: LegTimer { Refresh, Expiry, Retry }
);

/// The request Vigil refreshes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshKind {
    Update,
    Reinvite,
}

/// What a leg's timers say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// Vigil should send a refresh; it was due at `due`.
    RefreshDue { due: Instant },
    /// No proof of life came in time: the session is over since `at`.
    Expired { at: Instant },
}

/// A leg's live session timer.
#[derive(Debug, Clone)]
pub struct SessionLeg {
    agreed: Agreed,
    config: SessionTimerConfig,
    last_proof: Instant,
    refreshes: u32,
    /// Vigil's refresh waiting for its answer.
    in_flight: Option<RefreshKind>,
    /// The peer refused UPDATE (405/501): re-INVITE from now on (remembered for
    /// the dialog).
    update_refused: bool,
    /// A refresh answered 422 was retried once already.
    retried_422: bool,
    timers: LegTimers,
}

impl SessionLeg {
    /// Starts the timer at `now` (the 2xx that established the session).
    pub fn start(now: Instant, agreed: Agreed, config: SessionTimerConfig) -> SessionLeg {
        let mut leg = SessionLeg {
            agreed,
            config,
            last_proof: now,
            refreshes: 0,
            in_flight: None,
            update_refused: false,
            retried_422: false,
            timers: LegTimers::default(),
        };
        leg.arm(now);
        leg
    }

    fn arm(&mut self, now: Instant) {
        self.timers.clear_all();
        let interval = Duration::from_secs(u64::from(self.agreed.interval));
        let early = Duration::from_secs(u64::from(self.config.early_hangup));
        match self.agreed.refresher {
            Refresher::Vigil => {
                // VOS3000: refresh every ttl / SS_SIP_SESSION_UPDATE_SEGMENT.
                let every = interval / self.config.update_segment.max(1);
                self.timers.set(
                    LegTimer::Refresh,
                    now + every.max(Duration::from_millis(500)),
                );
                self.timers
                    .set(LegTimer::Expiry, now + interval.saturating_sub(early));
            }
            Refresher::Peer => {
                // RFC 4028 §10: BYE at expiry minus min(32 s, SE/3).
                let margin = Duration::from_secs(32).min(interval / 3);
                self.timers.set(
                    LegTimer::Expiry,
                    now + interval.saturating_sub(margin).saturating_sub(early),
                );
            }
        }
    }

    /// A 2xx to a refresh (ours or relayed), or a refresh from the peer, proves the
    /// peer alive: the timer restarts, renegotiated if the exchange said so.
    pub fn proof_of_life(&mut self, now: Instant, renegotiated: Option<Agreed>) {
        if let Some(agreed) = renegotiated {
            self.agreed = agreed;
        }
        self.last_proof = now;
        self.in_flight = None;
        self.retried_422 = false;
        self.arm(now);
    }

    /// Counts a successful refresh Vigil sent, then restarts the timer.
    pub fn refreshed(&mut self, now: Instant, renegotiated: Option<Agreed>) {
        self.refreshes += 1;
        self.proof_of_life(now, renegotiated);
    }

    /// The next thing due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<LegEvent> {
        while let Some((due, timer)) = self.timers.next().filter(|(at, _)| *at <= now) {
            self.timers.clear(timer);
            match timer {
                LegTimer::Expiry => {
                    self.timers.clear_all();
                    return Some(LegEvent::Expired { at: due });
                }
                LegTimer::Refresh | LegTimer::Retry if self.in_flight.is_none() => {
                    return Some(LegEvent::RefreshDue { due });
                }
                // A refresh is on its way already: its answer decides.
                LegTimer::Refresh | LegTimer::Retry => {}
            }
        }
        None
    }

    /// When Vigil's next refresh (or retry) of this leg is due; `None` where the
    /// peer refreshes.
    pub fn refresh_due_at(&self) -> Option<Instant> {
        match (
            self.timers.get(LegTimer::Refresh),
            self.timers.get(LegTimer::Retry),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the session ends without a refresh (early hang-up included).
    pub fn expires_at(&self) -> Option<Instant> {
        self.timers.get(LegTimer::Expiry)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    /// The method for Vigil's next refresh: `refresh_method`, with `auto` meaning
    /// UPDATE when the peer allows it, and re-INVITE once the peer refused UPDATE.
    pub fn method(&self, peer_allows_update: bool) -> RefreshKind {
        match self.config.refresh_method {
            _ if self.update_refused => RefreshKind::Reinvite,
            RefreshMethod::Update => RefreshKind::Update,
            RefreshMethod::Reinvite => RefreshKind::Reinvite,
            RefreshMethod::Auto if peer_allows_update => RefreshKind::Update,
            RefreshMethod::Auto => RefreshKind::Reinvite,
        }
    }

    pub fn sent(&mut self, kind: RefreshKind) {
        self.in_flight = Some(kind);
    }

    pub fn in_flight(&self) -> Option<RefreshKind> {
        self.in_flight
    }

    /// The peer answered UPDATE with 405 or 501: use re-INVITE for this dialog.
    pub fn refuse_update(&mut self) {
        self.update_refused = true;
        self.in_flight = None;
    }

    /// A 422 to a refresh: take the peer's interval, once per refresh (a second 422
    /// would be a loop).
    pub fn retry_with_interval(&mut self, interval: u32) -> bool {
        if self.retried_422 {
            return false;
        }
        self.retried_422 = true;
        self.agreed.interval = interval;
        self.in_flight = None;
        true
    }

    /// Tries the refresh again after `delay` (491, or a policy's retry), never past
    /// the expiry.
    pub fn retry_in(&mut self, now: Instant, delay: Duration) {
        self.in_flight = None;
        let at = now + delay;
        let at = self
            .timers
            .get(LegTimer::Expiry)
            .map_or(at, |expiry| at.min(expiry));
        self.timers.set(LegTimer::Retry, at);
    }

    /// The refresh got no usable answer: stop refreshing; the caller decides.
    pub fn failed(&mut self) {
        self.in_flight = None;
    }

    pub fn agreed(&self) -> Agreed {
        self.agreed
    }

    pub fn refreshes(&self) -> u32 {
        self.refreshes
    }

    pub fn config(&self) -> &SessionTimerConfig {
        &self.config
    }

    pub fn last_proof(&self) -> Instant {
        self.last_proof
    }
}

/// A leg's session timer as the state store keeps it: what was agreed, and
/// every deadline as an offset on the saving's [`Timeline`] (absolute, so a
/// process started later knows what fell due while it was down).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedSession {
    pub interval: u32,
    /// Vigil refreshes (else the peer does).
    pub vigil_refreshes: bool,
    pub peer_supports: bool,
    pub config: SessionTimerConfig,
    pub last_proof: i64,
    pub refreshes: u32,
    pub update_refused: bool,
    pub refresh_at: Option<i64>,
    pub retry_at: Option<i64>,
    pub expiry_at: Option<i64>,
    /// A refresh of Vigil's was waiting for its answer.
    pub in_flight: bool,
}

impl SessionLeg {
    /// What the state store keeps of this timer.
    pub fn save(&self, timeline: &Timeline) -> SavedSession {
        let at = |timer| self.timers.get(timer).map(|t| timeline.offset(t));
        SavedSession {
            interval: self.agreed.interval,
            vigil_refreshes: self.agreed.refresher == Refresher::Vigil,
            peer_supports: self.agreed.peer_supports,
            config: self.config,
            last_proof: timeline.offset(self.last_proof),
            refreshes: self.refreshes,
            update_refused: self.update_refused,
            refresh_at: at(LegTimer::Refresh),
            retry_at: at(LegTimer::Retry),
            expiry_at: at(LegTimer::Expiry),
            in_flight: self.in_flight.is_some(),
        }
    }

    /// The timer back from the store at `now`. A refresh that was on its way
    /// lost its transaction with the process: it goes again at once. A
    /// session that expired meanwhile only expires (nothing is refreshed
    /// first), at its own deadline.
    pub fn restore(now: Instant, saved: &SavedSession, timeline: &Timeline) -> SessionLeg {
        let mut timers = LegTimers::default();
        let mut set = |timer, at: Option<i64>| {
            if let Some(at) = at {
                timers.set(timer, timeline.instant(at));
            }
        };
        set(LegTimer::Refresh, saved.refresh_at);
        set(LegTimer::Retry, saved.retry_at);
        set(LegTimer::Expiry, saved.expiry_at);
        if saved.in_flight {
            timers.set(LegTimer::Retry, now);
        }
        if timers.get(LegTimer::Expiry).is_some_and(|at| at <= now) {
            timers.clear(LegTimer::Refresh);
            timers.clear(LegTimer::Retry);
        }
        SessionLeg {
            agreed: Agreed {
                interval: saved.interval,
                refresher: if saved.vigil_refreshes {
                    Refresher::Vigil
                } else {
                    Refresher::Peer
                },
                peer_supports: saved.peer_supports,
            },
            config: saved.config,
            last_proof: timeline.instant(saved.last_proof),
            refreshes: saved.refreshes,
            in_flight: None,
            update_refused: saved.update_refused,
            retried_422: false,
            timers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(interval: u32, refresher: Refresher) -> Agreed {
        Agreed {
            interval,
            refresher,
            peer_supports: true,
        }
    }

    /// Steps to the next deadline and returns what fired ("refresh" or
    /// "expired"), with its time from t0.
    fn next(leg: &mut SessionLeg, t0: Instant) -> Option<(u64, &'static str)> {
        let at = leg.next_deadline()?;
        leg.poll(at).map(|e| {
            let what = match e {
                LegEvent::RefreshDue { due } => {
                    assert_eq!(due, at, "a refresh reports when it was due");
                    "refresh"
                }
                LegEvent::Expired { at: expired } => {
                    assert_eq!(expired, at, "an expiry reports when it was due");
                    "expired"
                }
            };
            ((at - t0).as_secs(), what)
        })
    }

    #[test]
    fn vigil_refreshes_every_interval_over_segment_for_two_hours() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(600, Refresher::Vigil),
            SessionTimerConfig::default(),
        );
        let mut now = t0;
        for i in 1..=24 {
            let (at, event) = next(&mut leg, t0).expect("due");
            assert_eq!((at, event), (300 * i, "refresh"));
            now = t0 + Duration::from_secs(at);
            leg.sent(RefreshKind::Update);
            leg.refreshed(now + Duration::from_millis(0), None);
        }
        assert_eq!(leg.refreshes(), 24);
        assert_eq!((now - t0).as_secs(), 7200);
    }

    #[test]
    fn an_unanswered_refresh_lets_the_session_expire() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(600, Refresher::Vigil),
            SessionTimerConfig::default(),
        );
        assert_eq!(next(&mut leg, t0), Some((300, "refresh")));
        leg.sent(RefreshKind::Update);
        assert_eq!(next(&mut leg, t0), Some((600, "expired")));
    }

    #[test]
    fn a_silent_peer_refresher_expires_early_per_rfc_4028_section_10() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(1800, Refresher::Peer),
            SessionTimerConfig::default(),
        );
        assert_eq!(next(&mut leg, t0), Some((1800 - 32, "expired")));
        let mut short = SessionLeg::start(
            t0,
            agreed(90, Refresher::Peer),
            SessionTimerConfig::default(),
        );
        assert_eq!(
            next(&mut short, t0),
            Some((60, "expired")),
            "min(32, 90/3) = 30"
        );
    }

    #[test]
    fn a_peer_refresh_restarts_the_timer() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(600, Refresher::Peer),
            SessionTimerConfig::default(),
        );
        leg.proof_of_life(
            t0 + Duration::from_secs(500),
            Some(agreed(900, Refresher::Peer)),
        );
        assert_eq!(next(&mut leg, t0), Some((500 + 900 - 32, "expired")));
    }

    #[test]
    fn early_hangup_ends_before_expiry() {
        let t0 = Instant::now();
        let config = SessionTimerConfig {
            early_hangup: 20,
            ..SessionTimerConfig::default()
        };
        let mut mine = SessionLeg::start(t0, agreed(600, Refresher::Vigil), config);
        mine.poll(t0 + Duration::from_secs(300));
        mine.sent(RefreshKind::Update);
        assert_eq!(next(&mut mine, t0), Some((580, "expired")));
        let mut theirs = SessionLeg::start(t0, agreed(600, Refresher::Peer), config);
        assert_eq!(next(&mut theirs, t0), Some((600 - 32 - 20, "expired")));
    }

    #[test]
    fn retries_stay_before_expiry_and_422_is_retried_once() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(600, Refresher::Vigil),
            SessionTimerConfig::default(),
        );
        leg.poll(t0 + Duration::from_secs(300));
        leg.sent(RefreshKind::Update);
        leg.retry_in(t0 + Duration::from_secs(300), Duration::from_secs(3));
        assert_eq!(next(&mut leg, t0), Some((303, "refresh")));
        leg.sent(RefreshKind::Update);
        leg.retry_in(t0 + Duration::from_secs(303), Duration::from_secs(1000));
        assert_eq!(
            next(&mut leg, t0),
            Some((600, "expired")),
            "a retry never outlives the session"
        );
        assert!(leg.retry_with_interval(1800));
        assert!(
            !leg.retry_with_interval(3600),
            "at most one 422 retry per refresh"
        );
    }

    #[test]
    fn the_method_follows_config_allow_and_refusals() {
        let t0 = Instant::now();
        let mut leg = SessionLeg::start(
            t0,
            agreed(600, Refresher::Vigil),
            SessionTimerConfig::default(),
        );
        assert_eq!(leg.method(true), RefreshKind::Update);
        assert_eq!(leg.method(false), RefreshKind::Reinvite);
        leg.refuse_update();
        assert_eq!(
            leg.method(true),
            RefreshKind::Reinvite,
            "a 501/405 to UPDATE is remembered"
        );
        let forced = SessionLeg::start(
            t0,
            agreed(600, Refresher::Vigil),
            SessionTimerConfig {
                refresh_method: RefreshMethod::Reinvite,
                ..SessionTimerConfig::default()
            },
        );
        assert_eq!(forced.method(true), RefreshKind::Reinvite);
    }
}
