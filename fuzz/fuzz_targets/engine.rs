//! One worker's sans-IO engine (`vigil::engine::Engine`) driven by a sequence of
//! operations: raw datagrams from the caller, the callee, a registered phone or a
//! stranger, and messages built from realistic templates (INVITE, answers to
//! whatever Vigil sent, ACK, CANCEL, BYE, UPDATE, re-INVITE, INFO, OPTIONS, with
//! Session-Expires, Min-SE, Supported/Require, CSeq and bodies taken from the
//! input), clock jumps, operator hang-ups and shutdown. Every datagram goes through
//! the ingress (`vigil::ingress::Ingress::classify`), as in the daemon, and only what
//! it dispatches reaches the engine.
//!
//! An input that starts with an upper-case letter is a plain SIP message instead
//! (the RFC 4475 and hand-written seeds, and their mutations): it is played as
//! the caller's first message, followed by a scripted call (180, 200, ACK,
//! UPDATE, BYE), so the seeds reach deep call states from the first run.
//!
//! What it asserts beyond "no panic":
//! - everything Vigil transmits decodes (Vigil never sends what it would reject);
//! - firing deadlines makes progress (no deadline that keeps firing without the
//!   clock moving);
//! - no call outlives its timers: with no more input, every call is gone after
//!   2 h 5 min (the longest no-timer call, ring time and transaction timeouts of
//!   these configs), except a call whose negotiated session timer still runs; that
//!   one is gone once the clock passes its expiry. Transactions are gone too.

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil::config::Config;
use vigil::engine::{Engine, EngineDeps, Users};
use vigil::transport::LocalSocket;
use vigil::ids::IdGen;
use vigil::ingress::{Ingress, Verdict};
use vigil::registrar::digest::{DigestAuth, expected_response};
use vigil::registrar::location::{Binding, Location, LocationView, Target};
use vigil::sip::{
    DigestAlgorithm, DigestCredentials, HeaderName, Message, Method, Request, Response, Uri, decode,
};
use vigil::transaction::Path;

const BASE: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.2"] }
    route_to: carrier
  - name: carrier
    outbound: { to: "127.0.0.3:5080" }
routes: [ { prefix: "999", trunk: carrier } ]
cdr: { path: "cdr.jsonl" }
"#;

/// The configs an input picks from: defaults, Vigil refreshing by UPDATE with an
/// early hang-up, no refreshing of peers without timers, and a registrar with users.
const VARIANTS: [&str; 4] = [
    "",
    "session_timer: { prefer_refresher: local, refresh_method: update, early_hangup: 10, ttl: 300 }\n",
    "session_timer: { refresh_non_timer_peers: false, no_timer_max_duration: 600, refresh_method: reinvite }\nsip: { max_ring_time: 30 }\n",
    "registrar: { domain: vigil.local }\nusers:\n  - { user: \"1001\", password: secret1001, route_to: carrier }\n  - { user: \"1002\", password: secret1002 }\n",
];

/// Longer than any no-timer call (`no_timer_max_duration` is at most 2 h in the
/// variants), ring time and transaction timeout.
const SETTLE: Duration = Duration::from_secs(2 * 3600 + 300);

const LOCAL: &str = "127.0.0.1:5060";
/// Caller (the pbx trunk), callee (the carrier), a registered phone behind a NAT,
/// and a stranger no trunk admits.
const PEERS: [&str; 4] = [
    "127.0.0.2:5061",
    "127.0.0.3:5080",
    "198.51.100.7:33000",
    "203.0.113.9:5060",
];
const CALLER: usize = 0;
const PHONE: usize = 2;

const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const SDP_B: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4002 RTP/AVP 8\r\n";

/// `VIGIL_FUZZ_TRACE=1` prints every datagram both ways (to read a crash).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("VIGIL_FUZZ_TRACE").is_some());

/// `VIGIL_FUZZ_STRICT_SETTLE=1` fails on any call alive 2 h 5 min after the last
/// input, even one whose negotiated session timer still runs (to find them).
static STRICT_SETTLE: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("VIGIL_FUZZ_STRICT_SETTLE").is_some());

/// How many of Vigil's recent messages (and our own) operations can refer to.
const MEMORY: usize = 48;

#[derive(Arbitrary, Debug)]
struct Input {
    variant: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Any bytes, from one of the peers.
    Datagram { from: u8, bytes: Vec<u8> },
    /// A new call: INVITE from the caller (or the phone, as user 1001).
    Invite {
        call: u8,
        from_phone: bool,
        callee: u8,
        timer: Timer,
        body: u8,
        extra: Option<Extra>,
        /// Answer the last 407 challenge with the right credentials.
        authenticate: bool,
    },
    /// The peer answers a request Vigil sent it.
    Answer {
        pick: u8,
        status: u16,
        tag: u8,
        timer: Timer,
        body: u8,
        extra: Option<Extra>,
    },
    /// The peer ACKs a final response Vigil sent it.
    Ack { pick: u8, body: u8 },
    /// A request inside an A-leg dialog (from the caller) or a B-leg one (from the
    /// callee).
    InDialog {
        pick: u8,
        b_leg: bool,
        method: InDialogMethod,
        tag: u8,
        cseq: u32,
        timer: Timer,
        body: u8,
        extra: Option<Extra>,
    },
    /// The caller cancels an INVITE it sent.
    Cancel { pick: u8 },
    /// One of our datagrams again (a retransmission).
    Retransmit { pick: u8 },
    /// One of our datagrams with bytes spliced in at `at`.
    Mutate {
        pick: u8,
        at: u16,
        cut: u8,
        splice: Vec<u8>,
    },
    /// The clock moves, firing every deadline on the way.
    Advance { millis: u32 },
    /// The clock moves to the next deadline.
    NextDeadline,
    /// An operator hangs up a call (`vigil ctl hangup`).
    HangUp { pick: u8, by_b: bool },
    /// The daemon begins its graceful shutdown.
    Shutdown,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum InDialogMethod {
    Bye,
    Update,
    Reinvite,
    Info,
    Options,
    Prack,
    Message,
}

/// Session-timer headers (RFC 4028).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Timer {
    supported: bool,
    require: bool,
    session_expires: Option<Interval>,
    refresher: Option<bool>,
    min_se: Option<Interval>,
}

/// Mostly realistic intervals, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Interval {
    Small(u8),
    Typical(u16),
    Any(u32),
}

impl Interval {
    fn seconds(self) -> u32 {
        match self {
            Interval::Small(s) => u32::from(s),
            Interval::Typical(s) => u32::from(s % 7200),
            Interval::Any(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct Extra {
    name: u8,
    value: String,
}

const EXTRA_NAMES: [&str; 14] = [
    "Require",
    "Supported",
    "Allow",
    "Contact",
    "Record-Route",
    "Accept",
    "Content-Encoding",
    "Reason",
    "Expires",
    "Retry-After",
    "Proxy-Require",
    "P-Asserted-Identity",
    "Min-SE",
    "X-Fuzz",
];

const STATUSES: [u16; 24] = [
    100, 180, 183, 200, 200, 200, 202, 300, 401, 403, 404, 405, 407, 408, 422, 480, 481, 486, 487,
    488, 491, 500, 501, 503,
];

fn peer(i: usize) -> SocketAddr {
    PEERS[i % PEERS.len()].parse().expect("a valid address")
}

fn local() -> SocketAddr {
    LOCAL.parse().expect("a valid address")
}

/// The `i`-th most recent item (0 is the last one), wrapping around.
fn pick<T>(items: &[T], i: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[items.len() - 1 - usize::from(i) % items.len()])
}

fn remember<T>(items: &mut Vec<T>, item: T) {
    if items.len() == MEMORY {
        items.remove(0);
    }
    items.push(item);
}

fn timer_headers(t: &Timer) -> String {
    let mut h = String::new();
    if t.supported {
        h.push_str("Supported: timer\r\n");
    }
    if t.require {
        h.push_str("Require: timer\r\n");
    }
    if let Some(se) = t.session_expires {
        h.push_str(&format!("Session-Expires: {}", se.seconds()));
        match t.refresher {
            Some(true) => h.push_str(";refresher=uac"),
            Some(false) => h.push_str(";refresher=uas"),
            None => {}
        }
        h.push_str("\r\n");
    }
    if let Some(min) = t.min_se {
        h.push_str(&format!("Min-SE: {}\r\n", min.seconds()));
    }
    h
}

fn extra_header(extra: &Option<Extra>) -> String {
    match extra {
        Some(e) if !e.value.contains(['\r', '\n']) => format!(
            "{}: {}\r\n",
            EXTRA_NAMES[usize::from(e.name) % EXTRA_NAMES.len()],
            e.value
        ),
        _ => String::new(),
    }
}

/// Content-Type header and body.
fn body(choice: u8) -> (&'static str, &'static str) {
    match choice % 5 {
        0 | 1 => ("", ""),
        2 => ("Content-Type: application/sdp\r\n", SDP_A),
        3 => ("Content-Type: application/sdp\r\n", SDP_B),
        _ => ("Content-Type: text/plain\r\n", "hello"),
    }
}

struct Harness {
    engine: Engine,
    ingress: Ingress,
    config: Arc<Config>,
    start: Instant,
    now: Instant,
    /// Requests Vigil sent, with where to.
    requests: Vec<(usize, Request)>,
    /// Final responses Vigil sent, with where to.
    finals: Vec<(usize, Response)>,
    /// INVITEs we sent, for CANCEL.
    invites: Vec<(usize, Request)>,
    /// Datagrams we sent, for retransmissions.
    sent: Vec<(usize, Vec<u8>)>,
    /// Vigil's To tag on each A-leg dialog, by Call-ID.
    a_tags: HashMap<String, String>,
    /// The last nonce Vigil challenged the phone with.
    nonce: Option<String>,
    branches: u64,
}

impl Harness {
    fn new(variant: u8) -> Harness {
        let text = format!("{BASE}{}", VARIANTS[usize::from(variant) % VARIANTS.len()]);
        let config =
            Arc::new(Config::parse(&text, FsPath::new("fuzz.yaml")).expect("valid config"));
        let sockets: Arc<[LocalSocket]> = Arc::from(vec![LocalSocket {
            bind: local(),
            advertised: local(),
            proto: vigil::sip::Protocol::Udp,
        }]);
        let now = Instant::now();
        let mut deps = EngineDeps::standalone(IdGen::seeded(0, 7));
        if config.registrar.is_some() {
            let view = Arc::new(LocationView::default());
            let mut location = Location::new(view.clone());
            location.insert(Binding {
                id: 0,
                aor: "1002".into(),
                contact: Arc::new(Target::new(
                    &Uri::parse("sip:1002@192.168.1.20:5060").expect("a valid URI"),
                    peer(PHONE),
                    local(),
                    1000,
                    now,
                )),
                expires: now + Duration::from_secs(365 * 86_400),
                call_id: "reg".into(),
                cseq: 1,
            });
            let auth = DigestAuth::new("vigil.local", b"fuzz", now, Duration::from_secs(300));
            deps.users = Some(Users {
                location: view,
                auth,
            });
        }
        let engine = Engine::new(config.clone(), sockets, deps);
        Harness {
            engine,
            ingress: Ingress::new(1),
            config,
            start: now,
            now,
            requests: Vec::new(),
            finals: Vec::new(),
            invites: Vec::new(),
            sent: Vec::new(),
            a_tags: HashMap::new(),
            nonce: None,
            branches: 0,
        }
    }

    fn branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-fz{}", self.branches)
    }

    /// Drains what the engine wants sent and its CDRs.
    fn collect(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            let Some(to) = PEERS.iter().position(|p| p.parse() == Ok(t.remote)) else {
                continue;
            };
            if *TRACE {
                eprintln!(
                    "--> {} at +{:?}\n{}",
                    t.remote,
                    self.now - self.start,
                    String::from_utf8_lossy(&t.bytes)
                );
            }
            let message = decode(&t.bytes).unwrap_or_else(|e| {
                panic!(
                    "Vigil sent something it cannot decode: {e}\n{}",
                    String::from_utf8_lossy(&t.bytes)
                )
            });
            match message {
                Message::Request(r) => remember(&mut self.requests, (to, r)),
                Message::Response(r) => {
                    if let Some(tag) = r.to.tag()
                        && to == CALLER
                        && r.cseq.method == Method::Invite
                    {
                        self.a_tags.insert(r.call_id.clone(), tag.to_string());
                    }
                    if r.status == 407
                        && let Some(nonce) = r
                            .headers
                            .get(&HeaderName::ProxyAuthenticate)
                            .and_then(|c| c.split("nonce=\"").nth(1))
                            .and_then(|n| n.split('"').next())
                    {
                        self.nonce = Some(nonce.to_string());
                    }
                    if r.status >= 200 {
                        remember(&mut self.finals, (to, r));
                    }
                }
            }
        }
        while self.engine.poll_cdr().is_some() {}
    }

    /// A datagram from peer `from`, through the ingress as the daemon does.
    fn receive(&mut self, from: usize, bytes: Vec<u8>) {
        let path = Path {
            local: local(),
            remote: peer(from),
            proto: vigil::sip::Protocol::Udp,
        };
        if *TRACE {
            eprintln!(
                "<-- {} at +{:?}\n{}",
                path.remote,
                self.now - self.start,
                String::from_utf8_lossy(&bytes)
            );
        }
        match self.ingress.classify(self.now, &self.config, &bytes, path) {
            Verdict::Dispatch {
                message, admitted, ..
            } => {
                if let Message::Request(r) = message.as_ref()
                    && r.method == Method::Invite
                    && !r.is_in_dialog()
                {
                    remember(&mut self.invites, (from, r.clone()));
                }
                self.engine
                    .handle_message(self.now, *message, path, admitted);
                self.collect();
            }
            Verdict::Registrar(_) | Verdict::Reply { .. } | Verdict::Drop(_) => {}
        }
        remember(&mut self.sent, (from, bytes));
    }

    /// Moves the clock to `until`, firing every deadline on the way.
    fn advance_to(&mut self, until: Instant) {
        let mut fired = 0u32;
        while let Some(at) = self.engine.poll_timeout() {
            if at > until {
                break;
            }
            if at <= self.now {
                fired += 1;
                assert!(
                    fired < 10_000,
                    "a deadline keeps firing without the clock moving"
                );
            } else {
                fired = 0;
            }
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.collect();
        }
        self.now = self.now.max(until);
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        call: u8,
        from_phone: bool,
        callee: u8,
        timer: &Timer,
        body_choice: u8,
        extra: &Option<Extra>,
        authenticate: bool,
    ) {
        let from = if from_phone { PHONE } else { CALLER };
        let callee = ["0049301234", "9991", "1002", "1001", "x"][usize::from(callee) % 5];
        let call_id = format!("fz-{}", call % 8);
        let branch = self.branch();
        let (ct, body) = body(body_choice);
        let mut auth = String::new();
        if authenticate && let Some(nonce) = &self.nonce {
            let uri = format!("sip:{callee}@127.0.0.1:5060");
            let mut creds = DigestCredentials {
                username: "1001".into(),
                realm: "vigil.local".into(),
                nonce: nonce.clone(),
                uri: uri.clone(),
                response: String::new(),
                algorithm: Some("MD5".into()),
                cnonce: Some("cn".into()),
                qop: Some("auth".into()),
                nc: Some(format!("{:08x}", self.branches)),
                opaque: None,
            };
            creds.response =
                expected_response(DigestAlgorithm::Md5, &creds, "secret1001", "INVITE");
            auth = format!(
                "Proxy-Authorization: Digest username=\"1001\", realm=\"vigil.local\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=MD5, cnonce=\"cn\", qop=auth, nc={}\r\n",
                creds.response,
                creds.nc.as_deref().unwrap_or_default()
            );
        }
        let text = format!(
            "INVITE sip:{callee}@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {sent_by};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:1001@{sent_by}>;tag=caller-tag\r\n\
To: <sip:{callee}@127.0.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@{sent_by}>\r\n\
{auth}{timer}{extra}{ct}\r\n{body}",
            sent_by = PEERS[from],
            timer = timer_headers(timer),
            extra = extra_header(extra),
        );
        self.receive(from, text.into_bytes());
    }

    fn answer(
        &mut self,
        pick_: u8,
        status: u16,
        tag: u8,
        timer: &Timer,
        body_choice: u8,
        extra: &Option<Extra>,
    ) {
        let Some((to, request)) = pick(&self.requests, pick_).cloned() else {
            return;
        };
        if request.method == Method::Ack {
            return;
        }
        let status = if status < 0x8000 {
            STATUSES[usize::from(status) % STATUSES.len()]
        } else {
            100 + status % 600
        };
        let mut r = request.response(status);
        if status > 100 && r.to.tag().is_none() {
            r.to.set_tag(&format!("peer-{}", tag % 3));
        }
        if (200..300).contains(&status) || (101..200).contains(&status) {
            r.headers
                .push(HeaderName::Contact, format!("<sip:peer@{}>", PEERS[to]));
        }
        let mut text = String::from_utf8_lossy(&r.encode()).into_owned();
        let (ct, body) = body(body_choice);
        let added = format!("{}{}{ct}", timer_headers(timer), extra_header(extra));
        // Insert the headers before Content-Length and replace the empty body.
        if let Some(at) = text.find("Content-Length: 0\r\n\r\n") {
            text.truncate(at);
            text.push_str(&added);
            text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        }
        self.receive(to, text.into_bytes());
    }

    fn ack(&mut self, pick_: u8, body_choice: u8) {
        let Some((to, response)) = pick(&self.finals, pick_).cloned() else {
            return;
        };
        if response.cseq.method != Method::Invite {
            return;
        }
        let mut via = response.via[0].clone();
        if response.is_success() {
            // A 2xx is ACKed end to end, in a new transaction.
            via = vigil::sip::Via::parse(&format!(
                "SIP/2.0/UDP {};branch={};rport",
                PEERS[to],
                self.branch()
            ))
            .expect("a valid Via");
        }
        let (ct, body) = body(body_choice);
        let text = format!(
            "ACK sip:vigil@127.0.0.1:5060 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n{ct}\r\n{body}",
            response.from, response.to, response.call_id, response.cseq.seq
        );
        self.receive(to, text.into_bytes());
    }

    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        pick_: u8,
        b_leg: bool,
        method: InDialogMethod,
        tag: u8,
        cseq: u32,
        timer: &Timer,
        body_choice: u8,
        extra: &Option<Extra>,
    ) {
        let method = match method {
            InDialogMethod::Bye => "BYE",
            InDialogMethod::Update => "UPDATE",
            InDialogMethod::Reinvite => "INVITE",
            InDialogMethod::Info => "INFO",
            InDialogMethod::Options => "OPTIONS",
            InDialogMethod::Prack => "PRACK",
            InDialogMethod::Message => "MESSAGE",
        };
        let branch = self.branch();
        let (ct, body) = body(body_choice);
        let headers = format!("{}{}{ct}", timer_headers(timer), extra_header(extra));
        let (from, text) = if b_leg {
            // Mirror an INVITE Vigil sent the callee (or the phone).
            let invites: Vec<(usize, Request)> = self
                .requests
                .iter()
                .filter(|(_, r)| r.method == Method::Invite && !r.is_in_dialog())
                .cloned()
                .collect();
            let Some((to, b)) = pick(&invites, pick_).cloned() else {
                return;
            };
            let text = format!(
                "{method} sip:1001@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {peer};branch={branch};rport\r\n\
From: <sip:callee@{peer}>;tag=peer-{tag}\r\n\
To: {}\r\n\
Call-ID: {}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:callee@{peer}>\r\n\
{headers}\r\n{body}",
                b.from,
                b.call_id,
                peer = PEERS[to],
                tag = tag % 3,
            );
            (to, text)
        } else {
            let mut dialogs: Vec<(&String, &String)> = self.a_tags.iter().collect();
            dialogs.sort();
            let Some((call_id, a_tag)) = pick(&dialogs, pick_).copied() else {
                return;
            };
            let text = format!(
                "{method} sip:vigil@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {peer};branch={branch};rport\r\n\
From: \"Alice\" <sip:1001@{peer}>;tag=caller-tag\r\n\
To: <sip:0049301234@127.0.0.1:5060>;tag={a_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:1001@{peer}>\r\n\
{headers}\r\n{body}",
                peer = PEERS[CALLER],
            );
            (CALLER, text)
        };
        self.receive(from, text.into_bytes());
    }

    fn cancel(&mut self, pick_: u8) {
        let Some((from, invite)) = pick(&self.invites, pick_).cloned() else {
            return;
        };
        let text = format!(
            "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\n\r\n",
            invite.uri, invite.via[0], invite.from, invite.to, invite.call_id, invite.cseq.seq
        );
        self.receive(from, text.into_bytes());
    }

    fn hang_up(&mut self, pick_: u8, by_b: bool) {
        let calls = self.engine.calls(self.now);
        if let Some(call) = pick(&calls, pick_) {
            let id = if by_b { &call.b_call_id } else { &call.call_id };
            let _ = self.engine.hang_up(self.now, id);
            self.collect();
        }
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Datagram { from, bytes } => self.receive(usize::from(from) % PEERS.len(), bytes),
            Op::Invite {
                call,
                from_phone,
                callee,
                timer,
                body,
                extra,
                authenticate,
            } => self.invite(call, from_phone, callee, &timer, body, &extra, authenticate),
            Op::Answer {
                pick,
                status,
                tag,
                timer,
                body,
                extra,
            } => self.answer(pick, status, tag, &timer, body, &extra),
            Op::Ack { pick, body } => self.ack(pick, body),
            Op::InDialog {
                pick,
                b_leg,
                method,
                tag,
                cseq,
                timer,
                body,
                extra,
            } => self.in_dialog(pick, b_leg, method, tag, cseq, &timer, body, &extra),
            Op::Cancel { pick } => self.cancel(pick),
            Op::Retransmit { pick: i } => {
                if let Some((from, bytes)) = pick(&self.sent, i).cloned() {
                    self.receive(from, bytes);
                }
            }
            Op::Mutate {
                pick: i,
                at,
                cut,
                splice,
            } => {
                if let Some((from, mut bytes)) = pick(&self.sent, i).cloned() {
                    let at = usize::from(at) % (bytes.len() + 1);
                    let end = (at + usize::from(cut % 16)).min(bytes.len());
                    bytes.splice(at..end, splice);
                    self.receive(from, bytes);
                }
            }
            Op::Advance { millis } => {
                let until = self.now + Duration::from_millis(u64::from(millis));
                self.advance_to(until);
            }
            Op::NextDeadline => {
                if let Some(at) = self.engine.poll_timeout() {
                    self.advance_to(at);
                }
            }
            Op::HangUp { pick, by_b } => self.hang_up(pick, by_b),
            Op::Shutdown => {
                self.engine.begin_shutdown(self.now);
                self.collect();
            }
        }
    }

    /// With no more input, every call and transaction must end.
    fn settle(&mut self) {
        let until = self.now + SETTLE;
        self.advance_to(until);
        if self.engine.active_calls() > 0 {
            // Only a call whose session timer still runs may be alive; it must end
            // at its expiry.
            let calls = self.engine.calls(self.now);
            assert!(
                !*STRICT_SETTLE,
                "calls outlive {SETTLE:?} (VIGIL_FUZZ_STRICT_SETTLE): {calls:?}"
            );
            assert_eq!(
                calls.len(),
                self.engine.active_calls(),
                "a call that is ending is still here {SETTLE:?} after the last input"
            );
            let mut longest = 0.0f64;
            for call in &calls {
                let expires = [&call.a_leg, &call.b_leg]
                    .into_iter()
                    .flatten()
                    .filter_map(|leg| leg.expires_in)
                    .fold(None, |acc: Option<f64>, e| {
                        Some(acc.map_or(e, |a| a.min(e)))
                    });
                let Some(expires) = expires else {
                    panic!("a call without a running session timer outlives {SETTLE:?}: {call:?}");
                };
                longest = longest.max(expires.max(0.0));
            }
            let until = self.now + Duration::from_secs_f64(longest) + Duration::from_secs(300);
            self.advance_to(until);
            assert_eq!(
                self.engine.active_calls(),
                0,
                "calls outlive their session timers: {:?}",
                self.engine.calls(self.now)
            );
        }
        assert_eq!(
            self.engine.transactions(),
            0,
            "transactions outlive every timer"
        );
    }
}

/// A plain SIP message (a seed from RFC 4475, or a mutation of one) is played as
/// the first message of a call that then goes as far as it can: the callee rings
/// and answers, the caller ACKs, refreshes and hangs up, with time passing.
fn datagram_scenario(data: &[u8]) -> Vec<Op> {
    let none = Timer {
        supported: false,
        require: false,
        session_expires: None,
        refresher: None,
        min_se: None,
    };
    let timer = Timer {
        supported: true,
        require: true,
        session_expires: Some(Interval::Typical(120)),
        refresher: Some(false),
        min_se: None,
    };
    let answer = |status: u16, body: u8| Op::Answer {
        pick: 0,
        status,
        tag: 0,
        timer,
        body,
        extra: None,
    };
    let in_dialog = |method: InDialogMethod, cseq: u32| Op::InDialog {
        pick: 0,
        b_leg: false,
        method,
        tag: 0,
        cseq,
        timer: none,
        body: 0,
        extra: None,
    };
    // Indices into STATUSES: 180 and 200.
    vec![
        Op::Datagram {
            from: CALLER as u8,
            bytes: data.to_vec(),
        },
        answer(1, 0),
        answer(3, 2),
        Op::Ack { pick: 0, body: 0 },
        Op::Advance { millis: 61_000 },
        in_dialog(InDialogMethod::Update, 2),
        Op::Advance { millis: 1_000 },
        in_dialog(InDialogMethod::Bye, 3),
    ]
}

fuzz_target!(|data: &[u8]| {
    let (variant, ops) = if data.first().is_some_and(u8::is_ascii_uppercase) {
        (0, datagram_scenario(data))
    } else {
        let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
            return;
        };
        (input.variant, input.ops)
    };
    let mut h = Harness::new(variant);
    for op in ops {
        h.run(op);
    }
    h.settle();
});
