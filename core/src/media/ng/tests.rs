//! The ng client driven by a fake clock and a scripted rtpengine: every
//! retransmission, timeout and health check is checked by jumping time, so
//! seconds of waiting run in microseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::ids::IdGen;
use crate::metrics::{Metrics, NgFailure};

/// Settings that keep the pings out of the way unless a test wants them.
fn quiet() -> NgSettings {
    NgSettings {
        ping_interval: Duration::from_secs(3600),
        ..NgSettings::default()
    }
}

fn addr(i: usize) -> SocketAddr {
    format!("192.0.2.{}:2223", i + 1).parse().expect("addr")
}

/// A datagram the client sent, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    to: SocketAddr,
    cookie: String,
    command: String,
}

fn drain(c: &mut NgClient) -> Vec<Sent> {
    std::iter::from_fn(|| c.poll_transmit())
        .map(|(to, bytes)| {
            let (cookie, body) = split_cookie(&bytes).expect("a cookie");
            let dict: bt_bencode::Value = bt_bencode::from_slice(body).expect("bencode");
            let command = dict
                .get("command")
                .and_then(|v| v.as_str())
                .expect("a command")
                .to_string();
            Sent {
                to,
                cookie: String::from_utf8(cookie.to_vec()).expect("ascii"),
                command,
            }
        })
        .collect()
}

fn events(c: &mut NgClient) -> Vec<NgEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Answers `sent` as rtpengine would (from its address, with its cookie).
fn reply(c: &mut NgClient, now: Instant, sent: &Sent, body: &str) {
    c.handle_datagram(now, sent.to, format!("{} {body}", sent.cookie).as_bytes());
}

const PONG: &str = "d6:result4:ponge";
const OFFER_OK: &str = "d3:sdp5:v=0\r\n6:result2:oke";

/// A client of `n` engines that all answered their first ping.
fn client_up(n: usize, settings: NgSettings) -> (NgClient, Instant, Arc<Metrics>) {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let engines = (0..n).map(addr).collect();
    let mut c = NgClient::new(t0, engines, settings, IdGen::seeded(7, 1), metrics.clone());
    let pings = drain(&mut c);
    assert_eq!(pings.len(), n, "one ping per engine at once");
    for p in &pings {
        assert_eq!(p.command, "ping");
        reply(&mut c, t0, p, PONG);
    }
    let ups = events(&mut c);
    assert_eq!(ups.len(), n, "{ups:?}");
    (c, t0, metrics)
}

fn offer() -> Command {
    Command::Offer(Offer {
        call_id: "c1".into(),
        from_tag: "f1".into(),
        sdp: b"v=0\r\n".to_vec(),
        options: SdpOptions::default(),
    })
}

/// Fires every timer up to `until`, returning what was sent and when
/// (seconds after `t0`).
fn run_until(c: &mut NgClient, t0: Instant, until: Duration) -> Vec<(f64, Sent)> {
    let mut out = Vec::new();
    while let Some(at) = c.poll_timeout() {
        if at > t0 + until {
            break;
        }
        c.handle_timeout(at);
        for s in drain(c) {
            out.push(((at - t0).as_secs_f64(), s));
        }
    }
    out
}

#[test]
fn engines_are_pinged_at_once_and_come_up_at_their_first_pong() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let mut c = NgClient::new(
        t0,
        vec![addr(0), addr(1)],
        NgSettings::default(),
        IdGen::seeded(7, 1),
        metrics.clone(),
    );
    let pings = drain(&mut c);
    assert_eq!(
        pings.iter().map(|p| p.to).collect::<Vec<_>>(),
        vec![addr(0), addr(1)]
    );
    assert!(
        pings.iter().all(|p| p.cookie.starts_with("vgl07-")),
        "{pings:?}"
    );
    assert!(c.engines().all(|(_, _, up)| !up), "down until they answer");
    assert_eq!(
        c.request(t0, None, &offer()),
        Err(NoEngineUp),
        "a new call is told at once"
    );
    assert_eq!(metrics.ng_no_engine.load(Ordering::Relaxed), 1);
    assert!(drain(&mut c).is_empty(), "nothing sent for it");

    reply(&mut c, t0 + Duration::from_millis(2), &pings[1], PONG);
    let engine1 = c.engine_id(addr(1)).expect("engine 1");
    assert_eq!(events(&mut c), vec![NgEvent::EngineUp(engine1)]);
    assert!(c.is_up(engine1));
    let counters = metrics.rtpengine(addr(1));
    assert_eq!(counters.is_up(), Some(true));
    assert_eq!(counters.round_trip.count(), 1);
    assert_eq!(metrics.rtpengine(addr(0)).is_up(), Some(false));

    // The next ping goes one interval later, to each engine.
    let later = run_until(&mut c, t0, Duration::from_secs(5));
    let pinged: Vec<_> = later
        .iter()
        .map(|(at, s)| (*at, s.to, s.command.as_str()))
        .collect();
    assert!(pinged.contains(&(5.0, addr(1), "ping")), "{pinged:?}");
    drop(c);
    assert_eq!(counters.is_up(), None, "a dropped client tracks nothing");
}

#[test]
fn a_request_is_sent_again_after_t1_then_doubling_and_times_out() {
    let (mut c, t0, metrics) = client_up(1, quiet());
    let (id, engine) = c.request(t0, None, &offer()).expect("an engine is up");
    let first = drain(&mut c);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].to, first[0].command.as_str()), (addr(0), "offer"));

    let sends = run_until(&mut c, t0, Duration::from_secs(10));
    let times: Vec<f64> = sends.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![0.5, 1.5], "3 tries: 0, 0.5 and 1.5 s");
    assert!(
        sends.iter().all(|(_, s)| s.cookie == first[0].cookie),
        "the same cookie: rtpengine answers a resend from its cache"
    );
    assert_eq!(
        events(&mut c),
        vec![NgEvent::Reply {
            id,
            result: Err(NgError::Timeout)
        }]
    );
    assert!(
        c.is_up(engine),
        "one failure is not yet down (down_after = 2)"
    );
    let counters = metrics.rtpengine(addr(0));
    assert_eq!(counters.retransmissions.load(Ordering::Relaxed), 2);
    assert_eq!(counters.failures(NgFailure::Timeout), 1);
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + Duration::from_secs_f64(3.5) + quiet().late_window)
    );
}

#[test]
fn a_reply_is_matched_by_cookie_and_source_and_its_copies_are_absorbed() {
    let (mut c, t0, metrics) = client_up(2, quiet());
    let (id, _) = c
        .request(t0, Some(c.engine_id(addr(1)).expect("1")), &offer())
        .expect("sent");
    let sent = drain(&mut c).remove(0);
    // A resend goes out, so copies of the reply may come.
    run_until(&mut c, t0, Duration::from_millis(600));
    let now = t0 + Duration::from_millis(700);

    // The right cookie from the wrong address; an unknown cookie from the
    // right one; no cookie at all.
    c.handle_datagram(
        now,
        addr(0),
        format!("{} {OFFER_OK}", sent.cookie).as_bytes(),
    );
    c.handle_datagram(now, addr(1), format!("vgl07-nope {OFFER_OK}").as_bytes());
    c.handle_datagram(now, addr(1), OFFER_OK.as_bytes());
    assert!(events(&mut c).is_empty());
    assert_eq!(metrics.ng_stray_replies.load(Ordering::Relaxed), 3);

    reply(&mut c, now, &sent, OFFER_OK);
    let got = events(&mut c);
    let [
        NgEvent::Reply {
            id: got_id,
            result: Ok(r),
        },
    ] = got.as_slice()
    else {
        panic!("{got:?}");
    };
    assert_eq!(*got_id, id);
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.sdp.as_deref(), Some(&b"v=0\r\n"[..]));
    let counters = metrics.rtpengine(addr(1));
    assert_eq!(
        counters.round_trip.max(),
        Duration::from_millis(700),
        "from the first send"
    );

    reply(&mut c, now + Duration::from_millis(1), &sent, OFFER_OK);
    assert!(events(&mut c).is_empty(), "a copy is absorbed");
    assert_eq!(
        metrics.ng_stray_replies.load(Ordering::Relaxed),
        3,
        "not a stray"
    );
    assert!(
        run_until(&mut c, t0, Duration::from_secs(10)).is_empty(),
        "no more resends"
    );
    assert_eq!(c.pending(), 0, "forgotten once copies can no longer come");
}

#[test]
fn an_error_reply_is_a_rejection_with_rtpengines_reason() {
    let (mut c, t0, metrics) = client_up(1, quiet());
    let (id, _) = c.request(t0, None, &offer()).expect("sent");
    let sent = drain(&mut c).remove(0);
    reply(
        &mut c,
        t0,
        &sent,
        "d12:error-reason15:Unknown call-id6:result5:errore",
    );
    assert_eq!(
        events(&mut c),
        vec![NgEvent::Reply {
            id,
            result: Err(NgError::Rejected("Unknown call-id".into()))
        }]
    );
    assert_eq!(metrics.rtpengine(addr(0)).failures(NgFailure::Rejected), 1);
    assert_eq!(
        c.pending(),
        0,
        "answered at the first send: nothing to linger for"
    );
}

#[test]
fn new_calls_go_round_robin_over_the_engines_that_are_up() {
    let (mut c, t0, _) = client_up(3, NgSettings::default());
    let mut targets = Vec::new();
    for _ in 0..4 {
        let (_, engine) = c.request(t0, None, &offer()).expect("sent");
        targets.push(c.engine_addr(engine).expect("engine"));
    }
    assert_eq!(targets, vec![addr(0), addr(1), addr(2), addr(0)]);
    for s in drain(&mut c) {
        reply(&mut c, t0, &s, OFFER_OK);
    }
    assert_eq!(events(&mut c).len(), 4);

    // Engine 1 stops answering; the others answer every ping.
    let mut now = t0;
    let mut down = Vec::new();
    while down.is_empty() {
        now = c.poll_timeout().expect("a timer");
        c.handle_timeout(now);
        for s in drain(&mut c) {
            if s.to != addr(1) && s.command == "ping" {
                reply(&mut c, now, &s, PONG);
            }
        }
        down.extend(
            events(&mut c)
                .into_iter()
                .filter(|e| matches!(e, NgEvent::EngineDown(_))),
        );
        assert!(
            now < t0 + Duration::from_secs(60),
            "engine 1 never went down"
        );
    }
    let engine1 = c.engine_id(addr(1)).expect("1");
    assert_eq!(down, vec![NgEvent::EngineDown(engine1)]);
    let mut targets = Vec::new();
    for _ in 0..4 {
        let (_, engine) = c.request(now, None, &offer()).expect("sent");
        targets.push(c.engine_addr(engine).expect("engine"));
    }
    assert!(!targets.contains(&addr(1)), "{targets:?}");
    assert!(
        targets.contains(&addr(0)) && targets.contains(&addr(2)),
        "{targets:?}"
    );

    // A call that lives on engine 1 still talks to it.
    let (_, engine) = c.request(now, Some(engine1), &offer()).expect("sticky");
    assert_eq!(engine, engine1);
    let sent = drain(&mut c);
    assert_eq!(sent.last().map(|s| s.to), Some(addr(1)));
}

#[test]
fn an_engine_goes_down_after_failures_in_a_row_and_up_at_its_first_answer() {
    let settings = NgSettings {
        ping_interval: Duration::from_secs(5),
        down_after: 3,
        ..NgSettings::default()
    };
    let (mut c, t0, metrics) = client_up(1, settings);
    let engine = c.engine_id(addr(0)).expect("0");
    let counters = metrics.rtpengine(addr(0));

    // Two requests time out: not yet down.
    for _ in 0..2 {
        c.request(t0, None, &offer()).expect("sent");
    }
    drain(&mut c);
    run_until(&mut c, t0, Duration::from_secs(4));
    let evs = events(&mut c);
    assert_eq!(evs.len(), 2, "two timeouts: {evs:?}");
    assert!(c.is_up(engine));

    // The next ping (at 5 s) times out too: the third failure in a row.
    let pings = run_until(&mut c, t0, Duration::from_secs(9));
    assert_eq!(
        pings.first().map(|(at, s)| (*at, s.command.as_str())),
        Some((5.0, "ping"))
    );
    assert_eq!(events(&mut c), vec![NgEvent::EngineDown(engine)]);
    assert!(!c.is_up(engine));
    assert_eq!(counters.is_up(), Some(false));
    assert_eq!(c.request(t0, None, &offer()), Err(NoEngineUp));

    // Pinged on while down; the first pong brings it back.
    let pings = run_until(&mut c, t0, Duration::from_secs(10));
    let (at, ping) = pings.last().expect("a ping at 10 s").clone();
    assert_eq!((at, ping.command.as_str()), (10.0, "ping"));
    reply(&mut c, t0 + Duration::from_secs(10), &ping, PONG);
    assert_eq!(events(&mut c), vec![NgEvent::EngineUp(engine)]);
    assert_eq!(counters.is_up(), Some(true));
    assert!(
        c.request(t0 + Duration::from_secs(10), None, &offer())
            .is_ok()
    );
}

#[test]
fn a_ping_still_waiting_is_not_doubled() {
    let settings = NgSettings {
        ping_interval: Duration::from_secs(1),
        ..NgSettings::default()
    };
    let t0 = Instant::now();
    let mut c = NgClient::new(
        t0,
        vec![addr(0)],
        settings,
        IdGen::seeded(1, 1),
        Arc::default(),
    );
    let first = drain(&mut c).remove(0);
    // Its retransmissions go at 0.5 and 1.5 s; the 1 s and 2 s ticks see it
    // still waiting; after its timeout (3.5 s) the 4 s tick pings anew.
    let sent = run_until(&mut c, t0, Duration::from_secs(4));
    let new_pings: Vec<f64> = sent
        .iter()
        .filter(|(_, s)| s.cookie != first.cookie)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(new_pings, vec![4.0]);
}

#[test]
fn a_late_reply_is_counted_and_dropped() {
    let (mut c, t0, metrics) = client_up(1, quiet());
    let (id, engine) = c.request(t0, None, &offer()).expect("sent");
    let sent = drain(&mut c).remove(0);
    run_until(&mut c, t0, Duration::from_secs(4));
    assert_eq!(
        events(&mut c),
        vec![NgEvent::Reply {
            id,
            result: Err(NgError::Timeout)
        }]
    );
    reply(&mut c, t0 + Duration::from_secs(5), &sent, OFFER_OK);
    assert!(
        events(&mut c).is_empty(),
        "the caller already heard: timeout"
    );
    let counters = metrics.rtpengine(addr(0));
    assert_eq!(counters.late_replies.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.ng_stray_replies.load(Ordering::Relaxed), 0);
    assert!(
        c.is_up(engine),
        "a late reply neither brings up nor takes down"
    );

    // After the late window the cookie is forgotten: now it is a stray.
    run_until(&mut c, t0, Duration::from_secs(40));
    assert_eq!(c.pending(), 0);
    reply(&mut c, t0 + Duration::from_secs(41), &sent, OFFER_OK);
    assert_eq!(metrics.ng_stray_replies.load(Ordering::Relaxed), 1);
}

#[test]
fn malformed_and_oversized_replies_fail_their_request_at_once() {
    let (mut c, t0, metrics) = client_up(1, quiet());
    let (garbled, _) = c.request(t0, None, &offer()).expect("sent");
    let (huge, _) = c.request(t0, None, &offer()).expect("sent");
    let sent = drain(&mut c);
    reply(&mut c, t0, &sent[0], "d6:result2:ok");
    let mut oversized = format!("{} d6:result2:ok3:sdp", sent[1].cookie).into_bytes();
    oversized.extend(format!("{}:", MAX_DATAGRAM).bytes());
    oversized.resize(MAX_DATAGRAM + 100, b'x');
    oversized.push(b'e');
    c.handle_datagram(t0, sent[1].to, &oversized);
    assert_eq!(
        events(&mut c),
        vec![
            NgEvent::Reply {
                id: garbled,
                result: Err(NgError::Malformed)
            },
            NgEvent::Reply {
                id: huge,
                result: Err(NgError::Malformed)
            },
        ]
    );
    assert_eq!(metrics.rtpengine(addr(0)).failures(NgFailure::Malformed), 2);
    assert!(
        run_until(&mut c, t0, Duration::from_secs(10)).is_empty(),
        "no resends"
    );
}

#[test]
fn an_unknown_engine_is_no_engine_and_addresses_compare_across_families() {
    let (other, _, _) = client_up(2, quiet());
    let not_ours = other.engine_id(addr(1)).expect("1");
    let (mut c, t0, _) = client_up(1, quiet());
    assert_eq!(c.request(t0, Some(not_ours), &offer()), Err(NoEngineUp));
    let (id, _) = c.request(t0, None, &offer()).expect("sent");
    let sent = drain(&mut c).remove(0);
    // A dual-stack socket shows an IPv4 engine as IPv4-mapped IPv6.
    let mapped: SocketAddr = "[::ffff:192.0.2.1]:2223".parse().expect("addr");
    c.handle_datagram(t0, mapped, format!("{} {OFFER_OK}", sent.cookie).as_bytes());
    let got = events(&mut c);
    assert!(
        matches!(got.as_slice(), [NgEvent::Reply { id: i, result: Ok(_) }] if *i == id),
        "{got:?}"
    );
}

#[test]
fn the_request_timeout_is_the_sum_of_the_intervals() {
    assert_eq!(
        NgSettings::default().request_timeout(),
        Duration::from_millis(3500)
    );
    let one = NgSettings {
        tries: 1,
        ..NgSettings::default()
    };
    assert_eq!(one.request_timeout(), Duration::from_millis(500));
    let many = NgSettings {
        tries: 100,
        ..NgSettings::default()
    };
    assert!(
        many.request_timeout() > Duration::from_secs(3600),
        "saturates, no overflow"
    );
}

/// A reload changes the engines: a new one is pinged and takes new calls
/// once up; a removed one takes no new call but keeps the calls it holds.
#[test]
fn a_reload_adds_engines_and_retires_removed_ones() {
    let (mut c, t0, _) = client_up(2, quiet());
    let (_, old) = c.request(t0, None, &offer()).expect("sent");
    assert_eq!(c.engine_addr(old), Some(addr(0)));
    drain(&mut c);
    c.set_engines(t0, &[addr(1), addr(2)]);
    let pings = drain(&mut c);
    assert_eq!(pings.len(), 1, "only the new engine is pinged: {pings:?}");
    assert_eq!((pings[0].to, pings[0].command.as_str()), (addr(2), "ping"));
    reply(&mut c, t0, &pings[0], PONG);
    let engine2 = c.engine_id(addr(2)).expect("added");
    assert_eq!(events(&mut c), vec![NgEvent::EngineUp(engine2)]);
    let targets: Vec<SocketAddr> = (0..4)
        .map(|_| {
            let (_, e) = c.request(t0, None, &offer()).expect("sent");
            c.engine_addr(e).expect("engine")
        })
        .collect();
    assert!(!targets.contains(&addr(0)), "retired: {targets:?}");
    assert!(targets.contains(&addr(1)) && targets.contains(&addr(2)));
    // The call on the retired engine still reaches it, with the same id.
    assert_eq!(c.engine_id(addr(0)), Some(old));
    let (_, engine) = c.request(t0, Some(old), &offer()).expect("sticky");
    assert_eq!(engine, old);
    // Listed again, it takes new calls again.
    c.set_engines(t0, &[addr(0), addr(1), addr(2)]);
    assert!(
        c.engines()
            .any(|(id, a, up)| id == old && a == addr(0) && up)
    );
}
