//! RFC 4028 negotiation: what Vigil answers as UAS (§9), offers as UAC (§7.1) and
//! concludes from a UAS's answer (§7.2), for one leg under one trunk's settings.

use vigil_plugin_api::Refresher;

use crate::config::{PreferRefresher, SessionTimerConfig};
use crate::sip::{self, HeaderName, Headers, Request, Response, SessionExpires};

/// The longest session interval Vigil keeps for a peer: a day. A longer one
/// (an absurd Min-SE, a 2xx stretching the offer) would leave a dead peer's
/// call up for longer than any billing period should.
const MAX_INTERVAL: u32 = 86_400;

/// The session timer agreed on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The session interval (Session-Expires), seconds.
    pub interval: u32,
    pub refresher: Refresher,
    /// The peer said `Supported: timer` (so `Require: timer` may be used).
    pub peer_supports: bool,
}

/// What Vigil, as UAS, does with a session-timer request (an INVITE or a
/// refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasOutcome {
    /// RFC 4028 §9: Session-Expires below Vigil's Min-SE: 422 with this Min-SE.
    TooSmall {
        min_se: u32,
    },
    /// No session timer on this leg.
    NoTimer,
    Timer(Agreed),
}

fn supports_timer(headers: &Headers) -> bool {
    headers.has_tag(&HeaderName::Supported, "timer")
        || headers.has_tag(&HeaderName::Require, "timer")
}

/// RFC 4028 §9, with Vigil's rules: a Session-Expires below our Min-SE is refused
/// (422); the interval is the caller's, reduced to `ttl` (a switch that promises no
/// zombies does not let a caller stretch it; §9 allows reducing it, never below the
/// request's Min-SE); `refresher=` is honoured; left open, a timer-capable peer
/// refreshes (`prefer_refresher: remote`) or Vigil does (`local`). A peer without
/// timer support is refreshed by Vigil if `refresh_non_timer_peers`, else the leg
/// has no timer.
pub fn as_uas(request: &Request, config: &SessionTimerConfig) -> UasOutcome {
    let peer_supports = supports_timer(&request.headers);
    let offered = request.session_expires();
    // A Min-SE above the request's own Session-Expires contradicts it (§7.1:
    // a UAC offers at least its Min-SE). §9 forbids the UAS to raise the
    // interval, so the offer bounds their minimum: the answer never exceeds
    // what the caller offered.
    let their_min = request.min_se().map_or(0, |m| m.0);
    let their_min = offered
        .as_ref()
        .map_or(their_min, |se| their_min.min(se.delta));
    if let Some(se) = &offered
        && se.delta < config.min_se
    {
        return UasOutcome::TooSmall {
            min_se: config.min_se,
        };
    }
    if !peer_supports && !config.refresh_non_timer_peers {
        return UasOutcome::NoTimer;
    }
    if their_min > MAX_INTERVAL {
        // No interval both honours their Min-SE and keeps the call honest:
        // the leg goes without a timer, under `no_timer_max_duration`.
        return UasOutcome::NoTimer;
    }
    let wanted = offered
        .as_ref()
        .map_or(config.ttl, |se| se.delta.min(config.ttl));
    let interval = wanted.max(their_min).max(config.min_se);
    let refresher = if !peer_supports {
        // §9: a UAC without timer support cannot refresh; the UAS must.
        Refresher::Vigil
    } else {
        match offered.and_then(|se| se.refresher) {
            Some(sip::Refresher::Uac) => Refresher::Peer,
            Some(sip::Refresher::Uas) => Refresher::Vigil,
            None => match config.prefer_refresher {
                PreferRefresher::Remote => Refresher::Peer,
                PreferRefresher::Local => Refresher::Vigil,
            },
        }
    };
    UasOutcome::Timer(Agreed {
        interval,
        refresher,
        peer_supports,
    })
}

/// The headers of Vigil's 2xx to a request it negotiated as UAS: Session-Expires
/// with `refresher=` (the request's sender is the uac), and `Require: timer` when
/// the peer supports it (§9).
pub fn uas_answer_headers(agreed: &Agreed, headers: &mut Headers) {
    let refresher = match agreed.refresher {
        Refresher::Peer => sip::Refresher::Uac,
        Refresher::Vigil => sip::Refresher::Uas,
    };
    headers.push(
        HeaderName::SessionExpires,
        SessionExpires {
            delta: agreed.interval,
            refresher: Some(refresher),
        }
        .to_string(),
    );
    if agreed.peer_supports {
        headers.push(HeaderName::Require, "timer");
    }
}

/// The headers of a request Vigil sends as UAC to start or refresh a session
/// (§7.1, §7.4): `Supported: timer`, Session-Expires and Min-SE. `refresher=uac`
/// when Vigil means to refresh.
pub fn uac_offer_headers(
    interval: u32,
    config: &SessionTimerConfig,
    we_refresh: bool,
    headers: &mut Headers,
) {
    headers.push(HeaderName::Supported, "timer");
    headers.push(
        HeaderName::SessionExpires,
        SessionExpires {
            delta: interval,
            refresher: we_refresh.then_some(sip::Refresher::Uac),
        }
        .to_string(),
    );
    headers.push(HeaderName::MinSe, config.min_se.to_string());
}

/// What a UAS's 2xx to Vigil's session-timer request means (§7.2). Without a
/// Session-Expires the peer does no timers: Vigil refreshes it anyway (a 2xx is a
/// 2xx) if `refresh_non_timer_peers`, at the interval it offered.
pub fn as_uac(response: &Response, offered: u32, config: &SessionTimerConfig) -> Option<Agreed> {
    let peer_supports = supports_timer(&response.headers);
    match response.session_expires() {
        Some(se) => {
            // §7.2: refresher=uas hands the refreshing to the peer; uac (or, from
            // a sloppy UAS, nothing) leaves it with Vigil.
            let refresher = if se.refresher == Some(sip::Refresher::Uas) {
                Refresher::Peer
            } else {
                Refresher::Vigil
            };
            // §9 lets a UAS reduce the interval, never raise it. Vigil keeps
            // to its offer when it refreshes (refreshing early is always
            // allowed); a peer that refreshes is held to at most a day.
            let cap = match refresher {
                Refresher::Vigil => offered.max(1),
                Refresher::Peer => MAX_INTERVAL,
            };
            Some(Agreed {
                interval: se.delta.clamp(1, cap),
                refresher,
                peer_supports,
            })
        }
        None if config.refresh_non_timer_peers => Some(Agreed {
            interval: offered,
            refresher: Refresher::Vigil,
            peer_supports,
        }),
        None => None,
    }
}

/// The interval to retry with after a 422 (§7.4): the peer's Min-SE, if it is
/// within what Vigil accepts (at least our Min-SE, at most a day).
pub fn retry_after_422(response: &Response, config: &SessionTimerConfig) -> Option<u32> {
    let theirs = response.min_se()?.0;
    (theirs <= MAX_INTERVAL).then(|| theirs.max(config.min_se))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, decode};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}\r\n"
        );
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ok(extra: &str) -> Response {
        let mut r = invite("").response(200);
        let text = String::from_utf8(r.encode())
            .expect("utf8")
            .replace("Content-Length: 0", &format!("{extra}Content-Length: 0"));
        r = match decode(text.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        };
        r
    }

    fn config() -> SessionTimerConfig {
        SessionTimerConfig::default()
    }

    fn timer(interval: u32, refresher: Refresher, peer_supports: bool) -> UasOutcome {
        UasOutcome::Timer(Agreed {
            interval,
            refresher,
            peer_supports,
        })
    }

    /// The negotiation matrix of the issue: caller supports timer or not ×
    /// refresher uac / uas / absent.
    #[test]
    fn uas_matrix() {
        let c = config();
        let cases = [
            (
                "Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n",
                timer(600, Refresher::Peer, true),
            ),
            (
                "Supported: timer\r\nSession-Expires: 300;refresher=uas\r\n",
                timer(300, Refresher::Vigil, true),
            ),
            (
                "Supported: timer\r\nSession-Expires: 300\r\n",
                timer(300, Refresher::Peer, true),
            ),
            ("Supported: timer\r\n", timer(600, Refresher::Peer, true)),
            (
                "k: timer\r\nx: 120;refresher=uac\r\n",
                timer(120, Refresher::Peer, true),
            ),
            (
                "Session-Expires: 300;refresher=uac\r\n",
                timer(300, Refresher::Vigil, false),
            ),
            ("", timer(600, Refresher::Vigil, false)),
            (
                "Supported: timer\r\nSession-Expires: 60\r\n",
                UasOutcome::TooSmall { min_se: 90 },
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(as_uas(&invite(headers), &c), expected, "{headers:?}");
        }
    }

    #[test]
    fn uas_respects_min_se_and_local_preference() {
        let c = config();
        // Their Min-SE above our ttl wins over the reduction to ttl.
        let r = invite("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 900\r\n");
        assert_eq!(as_uas(&r, &c), timer(900, Refresher::Peer, true));
        // Issue 15: Min-SE 3600 with Session-Expires 1800 was answered 3600,
        // above the offer and ttl. §9: a UAS MUST NOT increase the interval;
        // the Min-SE that exceeds its own request's offer is the inconsistent
        // part (§7.1), so the offer bounds it. What is left of it still says
        // "no less than 1800", which wins over ttl as any Min-SE does: 1800.
        let r = invite("Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 3600\r\n");
        assert_eq!(as_uas(&r, &c), timer(1800, Refresher::Peer, true));
        // Below ttl it is the offer itself, never more.
        let r = invite("Supported: timer\r\nSession-Expires: 300\r\nMin-SE: 3600\r\n");
        assert_eq!(as_uas(&r, &c), timer(300, Refresher::Peer, true));
        // Without a Session-Expires, a Min-SE is a floor Vigil's choice obeys.
        let r = invite("Supported: timer\r\nMin-SE: 1200\r\n");
        assert_eq!(as_uas(&r, &c), timer(1200, Refresher::Peer, true));
        // A Min-SE beyond a day cannot be honoured: no timer on that leg.
        let r = invite("Supported: timer\r\nSession-Expires: 999999\r\nMin-SE: 999999\r\n");
        assert_eq!(as_uas(&r, &c), UasOutcome::NoTimer);
        let local = SessionTimerConfig {
            prefer_refresher: PreferRefresher::Local,
            ..c
        };
        assert_eq!(
            as_uas(&invite("Supported: timer\r\n"), &local),
            timer(600, Refresher::Vigil, true)
        );
        let strict = SessionTimerConfig {
            refresh_non_timer_peers: false,
            ..c
        };
        assert_eq!(as_uas(&invite(""), &strict), UasOutcome::NoTimer);
        assert_eq!(
            as_uas(&invite("Supported: timer\r\n"), &strict),
            timer(600, Refresher::Peer, true)
        );
    }

    #[test]
    fn uas_answer_says_who_refreshes() {
        let mut h = Headers::new();
        uas_answer_headers(
            &Agreed {
                interval: 600,
                refresher: Refresher::Peer,
                peer_supports: true,
            },
            &mut h,
        );
        assert_eq!(
            h.get(&HeaderName::SessionExpires),
            Some("600;refresher=uac")
        );
        assert_eq!(h.get(&HeaderName::Require), Some("timer"));
        let mut h = Headers::new();
        uas_answer_headers(
            &Agreed {
                interval: 600,
                refresher: Refresher::Vigil,
                peer_supports: false,
            },
            &mut h,
        );
        assert_eq!(
            h.get(&HeaderName::SessionExpires),
            Some("600;refresher=uas")
        );
        assert_eq!(
            h.get(&HeaderName::Require),
            None,
            "no Require towards a peer without timer support"
        );
    }

    #[test]
    fn uac_side() {
        let c = config();
        let mut h = Headers::new();
        uac_offer_headers(600, &c, false, &mut h);
        assert_eq!(h.get(&HeaderName::SessionExpires), Some("600"));
        assert_eq!(h.get(&HeaderName::MinSe), Some("90"));
        assert!(h.has_tag(&HeaderName::Supported, "timer"));
        assert_eq!(
            as_uac(
                &ok("Require: timer\r\nSession-Expires: 600;refresher=uas\r\n"),
                600,
                &c
            ),
            Some(Agreed {
                interval: 600,
                refresher: Refresher::Peer,
                peer_supports: true
            })
        );
        assert_eq!(
            as_uac(&ok("Session-Expires: 300;refresher=uac\r\n"), 600, &c)
                .map(|a| (a.interval, a.refresher)),
            Some((300, Refresher::Vigil)),
            "a UAS may reduce the interval"
        );
        assert_eq!(
            as_uac(&ok("Session-Expires: 900;refresher=uac\r\n"), 600, &c)
                .map(|a| (a.interval, a.refresher)),
            Some((600, Refresher::Vigil)),
            "not raise it: Vigil refreshes at its offer"
        );
        assert_eq!(
            as_uac(&ok("Session-Expires: 7200;refresher=uas\r\n"), 600, &c)
                .map(|a| (a.interval, a.refresher)),
            Some((7200, Refresher::Peer)),
            "a peer that refreshes keeps its (sloppy) interval..."
        );
        assert_eq!(
            as_uac(
                &ok("Session-Expires: 4000000000;refresher=uas\r\n"),
                600,
                &c
            )
            .map(|a| a.interval),
            Some(86_400),
            "...up to a day"
        );
        assert_eq!(
            as_uac(&ok(""), 600, &c).map(|a| a.refresher),
            Some(Refresher::Vigil),
            "a non-timer callee is refreshed by Vigil"
        );
        let strict = SessionTimerConfig {
            refresh_non_timer_peers: false,
            ..c
        };
        assert_eq!(as_uac(&ok(""), 600, &strict), None);
    }

    #[test]
    fn retry_after_422_within_limits() {
        let c = config();
        let mut r = ok("Min-SE: 1800\r\n");
        r.status = 422;
        assert_eq!(retry_after_422(&r, &c), Some(1800));
        let mut absurd = ok("Min-SE: 999999\r\n");
        absurd.status = 422;
        assert_eq!(retry_after_422(&absurd, &c), None);
        let mut none = ok("");
        none.status = 422;
        assert_eq!(retry_after_422(&none, &c), None);
    }
}
