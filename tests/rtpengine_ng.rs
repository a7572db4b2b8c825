//! The ng client against a real rtpengine (issue 17): Debian's
//! `rtpengine-daemon` 10.5, which tests/run.sh installs when missing.
//!
//! One call's story over a real UDP socket: rtpengine answers its first ping
//! and comes up; an `offer` from a caller on 127.0.0.2 comes back naming
//! 127.0.0.1 and a port of rtpengine's range, without the offer's ICE; the
//! callee's `answer` likewise; RTP flows both ways through rtpengine, and
//! nothing else (no STUN: the offer's ICE was rejected); `query`
//! shows each party's tag, label and the packets it sent; `delete` returns
//! the totals; the deleted call is then unknown to `query` and `delete`
//! (rejected). Killed, rtpengine leaves a request to time out and goes down,
//! and a new call gets no engine at once; started again, it comes back up.
//!
//! Everything stays on loopback: ng on 127.0.0.1:23010, rtpengine's media
//! ports 31000–31099 (this file's own), the parties on 127.0.0.2 and .3.

mod support;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil::ids::IdGen;
use vigil::media::{
    Answer, Command, Delete, EngineId, MAX_DATAGRAM, NgClient, NgError, NgEvent, NgSettings,
    NoEngineUp, Offer, Outcome, Query, Reply, SdpOptions,
};
use vigil::metrics::{Metrics, NgFailure, export};

use support::rtpengine::Rtpengine;

const NG_PORT: u16 = 23010;
const PORT_MIN: u16 = 31000;
const PORT_MAX: u16 = 31099;

/// Generous for a busy machine: rtpengine answers on loopback in well under
/// a millisecond, but a loaded 2-core box can stall a process for seconds.
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The client on a real socket: the thin loop a worker would run.

struct Driver {
    client: NgClient,
    socket: UdpSocket,
    events: VecDeque<NgEvent>,
    buf: Vec<u8>,
}

impl Driver {
    fn new(engine: SocketAddr, metrics: Arc<Metrics>) -> Driver {
        let settings = NgSettings {
            ping_interval: Duration::from_secs(1),
            ..NgSettings::default()
        };
        let client = NgClient::new(
            Instant::now(),
            vec![engine],
            settings,
            IdGen::new(3),
            metrics,
        );
        Driver {
            client,
            socket: UdpSocket::bind("127.0.0.1:0").expect("bind the ng socket"),
            events: VecDeque::new(),
            buf: vec![0; MAX_DATAGRAM + 1],
        }
    }

    /// One turn: send what is queued, wait for a datagram until the next
    /// deadline (50 ms at most), fire due timers, collect events.
    fn turn(&mut self) {
        while let Some((to, bytes)) = self.client.poll_transmit() {
            self.socket.send_to(&bytes, to).expect("send to rtpengine");
        }
        let wait = self
            .client
            .poll_timeout()
            .map_or(Duration::from_millis(50), |at| {
                at.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        self.socket
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) => self
                .client
                .handle_datagram(Instant::now(), from, &self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable while rtpengine is dead surfaces here.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("ng socket: {e}"),
        }
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|at| at <= now) {
            self.client.handle_timeout(now);
        }
        self.events
            .extend(std::iter::from_fn(|| self.client.poll_event()));
    }

    /// Turns until an event `wanted` comes; returns it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&NgEvent) -> bool) -> NgEvent {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(i) = self.events.iter().position(&wanted) {
                if let Some(event) = self.events.remove(i) {
                    return event;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {LIMIT:?}; events: {:?}",
                self.events
            );
            self.turn();
        }
    }

    /// Sends `command` to `engine` and waits for its outcome.
    fn call(&mut self, engine: EngineId, command: Command) -> Result<Reply, NgError> {
        let (id, _) = self
            .client
            .request(Instant::now(), Some(engine), &command)
            .expect("a known engine");
        let name = command.name();
        match self.wait_for(
            name,
            |e| matches!(e, NgEvent::Reply { id: i, .. } if *i == id),
        ) {
            NgEvent::Reply { result, .. } => result,
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The call's parties and their media

/// A loopback SDP for a party at `addr`; with `ice`, ICE attributes for
/// rtpengine to strip (and reject: see [`receive_rtp`]).
fn sdp(user: &str, addr: SocketAddr, ice: bool) -> Vec<u8> {
    let (ip, port) = (addr.ip(), addr.port());
    let ice = if ice {
        format!(
            "a=ice-ufrag:Vx3a\r\na=ice-pwd:4sP1pXoG1qN3mW8kZ0rT5bYc\r\n\
a=candidate:1 1 UDP 2130706431 {ip} {port} typ host\r\n"
        )
    } else {
        String::new()
    };
    format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
{ice}a=sendrecv\r\n"
    )
    .into_bytes()
}

/// The address an SDP gives for its first audio stream.
fn media_of(sdp: &[u8]) -> SocketAddr {
    let text = String::from_utf8_lossy(sdp);
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= line in:\n{text}"));
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no m=audio line in:\n{text}"));
    format!("{ip}:{port}").parse().expect("media address")
}

/// Checks an SDP rtpengine rewrote: its own address everywhere, a port of its
/// range, no ICE left. Returns the port.
fn assert_anchored(sdp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(sdp);
    let media = media_of(sdp);
    assert_eq!(
        media.ip().to_string(),
        "127.0.0.1",
        "c= names rtpengine:\n{text}"
    );
    assert!(
        (PORT_MIN..=PORT_MAX).contains(&media.port()),
        "a port of rtpengine's range:\n{text}"
    );
    let origin = text
        .lines()
        .find(|l| l.starts_with("o="))
        .unwrap_or_default();
    assert!(
        origin.ends_with("IN IP4 127.0.0.1"),
        "replace origin: {origin}"
    );
    assert!(
        !text.contains("a=candidate") && !text.contains("a=ice-"),
        "ICE=remove:\n{text}"
    );
    media.port()
}

/// `count` RTP packets (PCMU, 20 ms) from `from` to `to`.
fn send_rtp(from: &UdpSocket, to: SocketAddr, count: u16) {
    for seq in 0..count {
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x5649_474cu32.to_be_bytes());
        packet.resize(12 + 160, 0xff);
        from.send_to(&packet, to).expect("send RTP");
    }
}

/// Waits until `socket` received `count` RTP packets from rtpengine. Any
/// other datagram fails the test: rtpengine 10.5 sends STUN checks to an
/// offerer whose SDP had ICE unless the offer rejects ICE, even with
/// `ICE=remove` (found with this test: a STUN packet was taken for RTP).
fn receive_rtp(socket: &UdpSocket, count: usize, who: &str) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < count {
        assert!(
            Instant::now() < deadline,
            "{who} got {got} of {count} RTP packets"
        );
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(
                from.ip().to_string(),
                "127.0.0.1",
                "media comes from rtpengine"
            );
            assert!(
                n == 172 && buf[0] == 0x80,
                "{who} got something other than our RTP: {:02x?}",
                &buf[..n.min(20)]
            );
            got += 1;
        }
    }
}

// ---------------------------------------------------------------------------

#[test]
fn a_call_through_a_real_rtpengine_then_its_death_and_return() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine_process = Rtpengine::start(dir.path(), 1, NG_PORT, PORT_MIN..=PORT_MAX);
    let engine_addr: SocketAddr = format!("127.0.0.1:{NG_PORT}").parse().expect("addr");
    let metrics = Arc::new(Metrics::default());
    let mut ng = Driver::new(engine_addr, metrics.clone());

    let up = ng.wait_for("EngineUp (ping -> pong)", |e| {
        matches!(e, NgEvent::EngineUp(_))
    });
    let NgEvent::EngineUp(engine) = up else {
        unreachable!()
    };
    assert_eq!(ng.client.engine_addr(engine), Some(engine_addr));

    // The parties: a caller on 127.0.0.2 and a callee on 127.0.0.3.
    let caller = UdpSocket::bind("127.0.0.2:0").expect("caller's RTP socket");
    let callee = UdpSocket::bind("127.0.0.3:0").expect("callee's RTP socket");
    let call_id = format!("vigil-ng-test-{}", std::process::id());

    // offer: a new call goes to an engine that is up.
    let (offer_id, chosen) = ng
        .client
        .request(
            Instant::now(),
            None,
            &Command::Offer(Offer {
                call_id: call_id.clone(),
                from_tag: "caller-tag".into(),
                sdp: sdp("alice", caller.local_addr().expect("addr"), true),
                options: SdpOptions {
                    label: Some("caller".into()),
                    ..SdpOptions::default()
                },
            }),
        )
        .expect("an engine is up");
    assert_eq!(chosen, engine);
    let offered = match ng.wait_for(
        "offer reply",
        |e| matches!(e, NgEvent::Reply { id, .. } if *id == offer_id),
    ) {
        NgEvent::Reply { result, .. } => result.expect("offer accepted"),
        other => panic!("{other:?}"),
    };
    assert_eq!(offered.outcome, Outcome::Ok);
    let to_callee = offered.sdp.expect("the offer's SDP, rewritten");
    let callee_sends_to = assert_anchored(&to_callee);

    // answer, on the call's engine.
    let answered = ng
        .call(
            engine,
            Command::Answer(Answer {
                call_id: call_id.clone(),
                from_tag: "caller-tag".into(),
                to_tag: "callee-tag".into(),
                sdp: sdp("bob", callee.local_addr().expect("addr"), false),
                options: SdpOptions {
                    label: Some("callee".into()),
                    ..SdpOptions::default()
                },
            }),
        )
        .expect("answer accepted");
    let to_caller = answered.sdp.expect("the answer's SDP, rewritten");
    let caller_sends_to = assert_anchored(&to_caller);
    assert_ne!(caller_sends_to, callee_sends_to);

    // Media both ways through rtpengine: 5 packets from the caller, 3 from
    // the callee, each sent to the port in the SDP it was given.
    let rtpengine_ip = "127.0.0.1".parse().expect("ip");
    send_rtp(&caller, SocketAddr::new(rtpengine_ip, caller_sends_to), 5);
    send_rtp(&callee, SocketAddr::new(rtpengine_ip, callee_sends_to), 3);
    receive_rtp(&callee, 5, "the callee");
    receive_rtp(&caller, 3, "the caller");

    // query: each party's tag and label, and what it sent.
    let queried = ng
        .call(
            engine,
            Command::Query(Query {
                call_id: call_id.clone(),
            }),
        )
        .expect("query answered");
    let stats = queried.stats.expect("a query reply has statistics");
    let a = stats.party("caller-tag").expect("the caller's tag");
    let b = stats.party("callee-tag").expect("the callee's tag");
    assert_eq!(a.label.as_deref(), Some("caller"));
    assert_eq!(b.label.as_deref(), Some("callee"));
    assert_eq!(a.peer.as_deref(), Some("callee-tag"));
    assert_eq!(a.rtp.packets, 5, "what the caller sent: {a:?}");
    assert_eq!(a.rtp.bytes, 5 * 172);
    assert_eq!(b.rtp.packets, 3, "what the callee sent: {b:?}");
    assert!(a.last_packet.is_some() && b.last_packet.is_some());
    assert!(
        a.streams
            .iter()
            .any(|s| !s.rtcp && s.local_port == Some(caller_sends_to)),
        "the caller's stream is the port the caller was told: {a:?}"
    );
    assert_eq!(
        a.streams
            .iter()
            .find(|s| s.rtcp)
            .and_then(|s| s.last_packet),
        None,
        "no RTCP was sent"
    );
    assert_eq!(stats.totals.rtp.packets, 8);
    assert!(stats.created.is_some());

    // delete: the totals come with it; then the call is unknown.
    let deleted = ng
        .call(
            engine,
            Command::Delete(Delete {
                call_id: call_id.clone(),
                from_tag: "caller-tag".into(),
                to_tag: None,
                delay: Some(0),
            }),
        )
        .expect("delete answered");
    let totals = deleted.stats.expect("delete returns statistics").totals;
    assert_eq!((totals.rtp.packets, totals.rtp.bytes), (8, 8 * 172));
    let unknown = ng.call(
        engine,
        Command::Query(Query {
            call_id: call_id.clone(),
        }),
    );
    assert!(
        matches!(&unknown, Err(NgError::Rejected(reason)) if reason.contains("Unknown call-id")),
        "{unknown:?}"
    );
    let unknown = ng.call(
        engine,
        Command::Delete(Delete {
            call_id: call_id.clone(),
            from_tag: "caller-tag".into(),
            to_tag: None,
            delay: None,
        }),
    );
    assert!(matches!(unknown, Err(NgError::Rejected(_))), "{unknown:?}");

    let counters = metrics.rtpengine(engine_addr);
    assert!(counters.round_trip.count() >= 6, "pings and requests timed");
    assert_eq!(counters.failures(NgFailure::Rejected), 2);
    assert_eq!(counters.is_up(), Some(true));

    // Killed: a request times out, the engine goes down, a new call is told
    // at once.
    engine_process.kill();
    let lost = ng.call(
        engine,
        Command::Query(Query {
            call_id: call_id.clone(),
        }),
    );
    assert_eq!(lost, Err(NgError::Timeout));
    ng.wait_for("EngineDown", |e| *e == NgEvent::EngineDown(engine));
    assert_eq!(
        ng.client.request(Instant::now(), None, &Command::Ping),
        Err(NoEngineUp)
    );
    assert!(counters.failures(NgFailure::Timeout) >= 2);
    assert!(counters.retransmissions.load(Ordering::Relaxed) >= 2);
    let text = export::encode(&metrics, export::Gauges::default()).expect("encode");
    assert!(
        text.contains(&format!("vigil_rtpengine_up{{engine=\"{engine_addr}\"}} 0")),
        "{text}"
    );

    // Started again: the pings bring it back.
    let restarted = Rtpengine::start(dir.path(), 2, NG_PORT, PORT_MIN..=PORT_MAX);
    ng.wait_for("EngineUp after the restart", |e| {
        *e == NgEvent::EngineUp(engine)
    });
    let pong = ng.call(engine, Command::Ping).expect("pong");
    assert_eq!(pong.outcome, Outcome::Pong);
    drop(restarted);
}
