//! The registrar with a scripted phone and the clock jumped: digest
//! registration, refusals, keep-alive cadence and payloads, OPTIONS pings that
//! go unanswered, expiry, and a restart from the store.

use std::path::Path as FsPath;

use super::*;
use crate::sip::digest_response;
use crate::sip::{DigestAlgorithm, decode};

const LOCAL: &str = "127.0.0.1:5060";
const PHONE: &str = "203.0.113.5:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn config(extra: &str) -> Arc<Config> {
    let text = format!(
        "listen: [\"udp:127.0.0.1:5060\"]\ncdr: {{ path: x }}\nregistrar: {{ domain: vigil.local }}\n\
users:\n  - {{ user: \"1001\", password: secret1001 }}\n{extra}"
    );
    Arc::new(Config::parse(&text, FsPath::new("t.yaml")).expect("config"))
}

struct Phone {
    registrar: Registrar,
    now: Instant,
    sent: Vec<Transmit>,
    persisted: Vec<Change>,
    cseq: u32,
    last_request: String,
    /// What the call workers and `vigil ctl registrations` see.
    view: Arc<LocationView>,
}

impl Phone {
    fn new(config: Arc<Config>) -> Phone {
        let now = Instant::now();
        let auth = DigestAuth::new("vigil.local", b"k", now, Duration::from_secs(300));
        let sockets: Arc<[LocalSocket]> = Arc::from(vec![LocalSocket {
            bind: addr(LOCAL),
            advertised: addr(LOCAL),
            proto: crate::sip::Protocol::Udp,
        }]);
        let view = Arc::new(LocationView::default());
        Phone {
            view: view.clone(),
            registrar: Registrar::with_ids(
                config,
                sockets,
                auth,
                view,
                Arc::default(),
                IdGen::seeded(REGISTRAR_WORKER, 3),
            ),
            now,
            sent: Vec::new(),
            persisted: Vec::new(),
            cseq: 0,
            last_request: String::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.registrar.poll_output() {
            match out {
                Output::Transmit(t) => self.sent.push(t),
                Output::Persist(c) => {
                    assert!(
                        self.sent
                            .iter()
                            .all(|t| !t.bytes.starts_with(b"SIP/2.0 200")),
                        "a binding is persisted before its 200 goes out"
                    );
                    self.persisted.push(c)
                }
            }
        }
    }

    fn register(&mut self, expires: u32, authorization: Option<&str>) -> Response {
        self.cseq += 1;
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let text = format!(
            "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-r{};rport\r\n\
From: <sip:1001@vigil.local>;tag=ph\r\nTo: <sip:1001@vigil.local>\r\nCall-ID: reg-1\r\nCSeq: {} REGISTER\r\n\
Contact: <sip:1001@10.0.0.5:5060>\r\nExpires: {expires}\r\n{auth}\r\n",
            self.cseq, self.cseq
        );
        self.send(text)
    }

    /// The last REGISTER again, as a phone retransmits it when the answer is lost.
    fn retransmit(&mut self) -> Response {
        self.send(self.last_request.clone())
    }

    fn send(&mut self, text: String) -> Response {
        let Ok(message) = decode(text.as_bytes()) else {
            panic!("bad test message")
        };
        self.registrar.handle_message(
            self.now,
            message,
            Path {
                local: addr(LOCAL),
                remote: addr(PHONE),
                proto: crate::sip::Protocol::Udp,
            },
        );
        self.sent.clear();
        self.drain();
        let r = self.sent.iter().find_map(|t| match decode(&t.bytes) {
            Ok(Message::Response(r)) => Some(r),
            _ => None,
        });
        self.sent.clear();
        self.last_request = text;
        r.expect("an answer")
    }

    /// Registers with digest as a phone does: answers the 401's first
    /// challenge with its algorithm (or returns whatever came instead).
    fn register_with(&mut self, password: &str, expires: u32) -> Response {
        let challenge = self.register(expires, None);
        if challenge.status != 401 {
            return challenge;
        }
        let first = challenge
            .headers
            .get(&HeaderName::WwwAuthenticate)
            .expect("a challenge")
            .to_string();
        let algorithm = if first.contains("algorithm=SHA-256") {
            DigestAlgorithm::Sha256
        } else {
            DigestAlgorithm::Md5
        };
        self.answer(&first, algorithm, password, expires)
    }

    /// REGISTER with credentials for `challenge`'s nonce, computed with
    /// `algorithm`.
    fn answer(
        &mut self,
        challenge: &str,
        algorithm: DigestAlgorithm,
        password: &str,
        expires: u32,
    ) -> Response {
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("nonce")
            .to_string();
        let mut creds = DigestCredentials {
            username: "1001".into(),
            realm: "vigil.local".into(),
            nonce,
            uri: "sip:vigil.local".into(),
            response: String::new(),
            algorithm: Some(algorithm.name().into()),
            cnonce: Some("abc".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            opaque: None,
        };
        creds.response = digest_response(algorithm, &creds, password, "REGISTER");
        let header = format!(
            "Digest username=\"1001\", realm=\"vigil.local\", nonce=\"{}\", uri=\"sip:vigil.local\", response=\"{}\", algorithm={algorithm}, cnonce=\"abc\", qop=auth, nc=00000001",
            creds.nonce, creds.response
        );
        self.register(expires, Some(&header))
    }

    /// The `algorithm=` of each challenge in a 401, in order.
    fn challenged_with(&mut self) -> Vec<String> {
        let r = self.register(600, None);
        assert_eq!(r.status, 401);
        r.headers
            .get_all(&HeaderName::WwwAuthenticate)
            .map(|c| {
                c.split("algorithm=")
                    .nth(1)
                    .and_then(|a| a.split(',').next())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Runs the clock to `until`, collecting what was sent.
    fn advance(&mut self, d: Duration) -> Vec<(Duration, Transmit)> {
        let start = self.now;
        let until = self.now + d;
        let mut out = Vec::new();
        while let Some(at) = self.registrar.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.registrar.handle_timeout(self.now);
            self.drain();
            for t in self.sent.drain(..) {
                out.push((self.now - start, t));
            }
        }
        self.now = until;
        out
    }
}

#[test]
fn digest_registration_then_keepalives_every_period_from_the_right_socket() {
    let mut p = Phone::new(config(""));
    let ok = p.register_with("secret1001", 120);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers.get(&HeaderName::Contact),
        Some("<sip:1001@10.0.0.5:5060>;expires=120")
    );
    assert!(matches!(&p.persisted[..], [Change::Upsert(b)] if b.contact.received == addr(PHONE)));
    let sent = p.advance(Duration::from_secs(95));
    let times: Vec<u64> = sent.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(times, vec![30, 60, 90], "every period (30 s)");
    for (_, t) in &sent {
        assert_eq!(
            (t.local, t.remote, t.bytes.as_slice()),
            (addr(LOCAL), addr(PHONE), &b"HELLO"[..])
        );
    }
    // Expiry (120 s): no more keep-alives, and the store forgets the binding.
    let sent = p.advance(Duration::from_secs(60));
    assert_eq!(sent.len(), 0, "{sent:?}");
    assert!(matches!(p.persisted.last(), Some(Change::Remove { .. })));
}

#[test]
fn md5_by_default_and_sha_256_for_a_user_that_asks_for_it() {
    let mut p = Phone::new(config(""));
    assert_eq!(
        p.challenged_with(),
        ["MD5"],
        "one MD5 challenge, which every phone answers"
    );
    let config = |user: &str| {
        let text = format!(
            "listen: [\"udp:127.0.0.1:5060\"]\ncdr: {{ path: x }}\n\
registrar: {{ domain: vigil.local, digest_algorithms: [SHA-256, MD5] }}\n\
users:\n  - {{ user: \"1001\", password: secret1001{user} }}\n"
        );
        Arc::new(Config::parse(&text, FsPath::new("t.yaml")).expect("config"))
    };
    let mut p = Phone::new(config(""));
    assert_eq!(
        p.challenged_with(),
        ["SHA-256", "MD5"],
        "the registrar's list"
    );
    let mut p = Phone::new(config(", digest_algorithms: [SHA-256]"));
    assert_eq!(p.challenged_with(), ["SHA-256"], "the user's own list");
    let challenge = p.register(600, None);
    let offered = challenge
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .expect("challenge")
        .to_string();
    assert_eq!(
        p.answer(&offered, DigestAlgorithm::Md5, "secret1001", 600)
            .status,
        401,
        "MD5 credentials from a user held to SHA-256 are refused"
    );
    assert_eq!(p.register_with("secret1001", 600).status, 200);
}

#[test]
fn a_retransmitted_register_is_answered_again_but_applied_once() {
    let mut phone = Phone::new(config(""));
    assert_eq!(phone.register_with("secret1001", 600).status, 200);
    assert_eq!(phone.persisted.len(), 1);
    phone.now += Duration::from_secs(4);
    let again = phone.retransmit();
    assert_eq!(again.status, 200, "not a replay: the first 200 was lost");
    assert_eq!(again.headers.get_all(&HeaderName::Contact).count(), 1);
    assert_eq!(phone.persisted.len(), 1, "nothing written twice");
    phone.now += Duration::from_secs(40);
    let replay = phone.retransmit();
    assert_eq!(replay.status, 401, "past any retransmission it is a replay");
}

#[test]
fn wrong_passwords_get_401_then_403_and_unknown_users_403() {
    let mut p = Phone::new(config(""));
    let r = p.register_with("wrong", 120);
    assert_eq!(r.status, 401, "another chance");
    assert!(p.persisted.is_empty(), "nothing stored");
    let mut last = 0;
    for _ in 0..digest::MAX_FAILURES {
        last = p.register_with("wrong", 120).status;
    }
    assert_eq!(last, 403, "rate-limited per source address");
    let mut stranger = Phone::new(config(""));
    let text = "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-x\r\n\
From: <sip:9999@vigil.local>;tag=s\r\nTo: <sip:9999@vigil.local>\r\nCall-ID: s\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:9999@10.0.0.9>\r\n\r\n";
    let Ok(m) = decode(text.as_bytes()) else {
        panic!()
    };
    stranger.registrar.handle_message(
        stranger.now,
        m,
        Path {
            local: addr(LOCAL),
            remote: addr(PHONE),
            proto: crate::sip::Protocol::Udp,
        },
    );
    stranger.drain();
    assert!(
        stranger
            .sent
            .iter()
            .any(|t| t.bytes.starts_with(b"SIP/2.0 403"))
    );
}

#[test]
fn too_brief_an_expiry_is_423_with_min_expires() {
    let mut p = Phone::new(config(""));
    let r = p.register_with("secret1001", 30);
    assert_eq!(r.status, 423);
    assert_eq!(r.headers.get(&HeaderName::MinExpires), Some("60"));
}

#[test]
fn an_empty_message_sends_no_keepalives_and_crlf_mode_sends_crlf() {
    let mut p = Phone::new(config("nat_keepalive: { message: \"\" }\n"));
    assert_eq!(p.register_with("secret1001", 600).status, 200);
    assert!(p.advance(Duration::from_secs(100)).is_empty());
    let mut p = Phone::new(config("nat_keepalive: { mode: crlf, message: \"\" }\n"));
    assert_eq!(p.register_with("secret1001", 600).status, 200);
    let sent = p.advance(Duration::from_secs(31));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.bytes, b"\r\n\r\n");
}

#[test]
fn an_options_contact_that_never_answers_is_dropped_after_the_failures() {
    let mut p = Phone::new(config(
        "nat_keepalive: { mode: options, options_failures: 3 }\n",
    ));
    assert_eq!(p.register_with("secret1001", 3600).status, 200);
    let sent = p.advance(Duration::from_secs(125));
    let pings: Vec<u64> = sent.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(
        pings,
        vec![30, 60, 90],
        "the 4th would follow 3 unanswered ones: the contact is dropped instead"
    );
    assert!(sent.iter().all(|(_, t)| {
        t.bytes
            .starts_with(b"OPTIONS sip:1001@10.0.0.5:5060 SIP/2.0")
    }));
    assert_eq!(p.registrar.contacts(), 0);
    assert!(matches!(p.persisted.last(), Some(Change::Remove { .. })));
}

#[test]
fn an_answered_options_ping_keeps_the_contact() {
    let mut p = Phone::new(config(
        "nat_keepalive: { mode: options, options_failures: 2 }\n",
    ));
    assert_eq!(p.register_with("secret1001", 3600).status, 200);
    for _ in 0..5 {
        let sent = p.advance(Duration::from_secs(30));
        let Ok(Message::Request(ping)) = decode(&sent[0].1.bytes) else {
            panic!("a ping")
        };
        let mut answer = ping.response(200);
        answer.to.set_tag("phone");
        let Ok(m) = decode(&answer.encode()) else {
            panic!()
        };
        p.registrar.handle_message(
            p.now,
            m,
            Path {
                local: addr(LOCAL),
                remote: addr(PHONE),
                proto: crate::sip::Protocol::Udp,
            },
        );
    }
    assert_eq!(p.registrar.contacts(), 1);
}

#[test]
fn loaded_bindings_get_keepalives_at_once() {
    let mut p = Phone::new(config(""));
    let loaded = p.registrar.load(
        p.now,
        vec![StoredBinding {
            aor: "1001".into(),
            uri: "sip:1001@10.0.0.5:5060".into(),
            received: addr(PHONE),
            local: addr(LOCAL),
            expires_in: Duration::from_secs(500),
            call_id: "reg-1".into(),
            cseq: 4,
            q: 1000,
            registered_ago: Some(Duration::from_secs(300)),
        }],
    );
    assert_eq!(loaded, 1);
    // Issue 15: the registration time survives a restart.
    let listed = p.view.snapshot(p.now);
    assert_eq!(listed[0].registered_ago, 300.0);
    let sent = p.advance(Duration::from_secs(31));
    let times: Vec<u64> = sent.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(times, vec![0, 30]);
}

#[test]
fn the_keepalive_tick_is_a_decision_point() {
    use crate::policy::{ContactView, KeepaliveDecision, SessionPolicy};
    struct Custom;
    impl SessionPolicy for Custom {
        fn keepalive_tick(&self, view: &ContactView<'_>) -> KeepaliveDecision {
            // Skip every other one; otherwise a custom payload naming the user.
            if view.sent % 2 == 1 {
                KeepaliveDecision::Skip
            } else {
                KeepaliveDecision::Payload(format!("PING {}", view.user).into_bytes().into())
            }
        }
    }
    let mut p = Phone::new(config(""));
    p.registrar.set_policy(Arc::new(Custom));
    assert_eq!(p.register_with("secret1001", 600).status, 200);
    let sent = p.advance(Duration::from_secs(125));
    let got: Vec<(u64, &[u8])> = sent
        .iter()
        .map(|(at, t)| (at.as_secs(), t.bytes.as_slice()))
        .collect();
    assert_eq!(got, vec![(30, &b"PING 1001"[..]), (90, &b"PING 1001"[..])]);
}
