//! A carrier's registrar played by the test, the clock jumped to each
//! deadline: granted intervals and refreshes, challenges, refusals, silence,
//! Retry-After, 423, and reloads that add, change and remove registrations.

use std::path::Path as FsPath;

use super::*;
use crate::config::Config;
use crate::sip::{DigestAlgorithm, DigestCredentials, digest_response};

const LOCAL: &str = "127.0.0.1:5060";
const REGISTRAR: &str = "127.0.0.20:5070";

fn config(register: &str) -> Config {
    let text = format!(
        "listen: [\"udp:{LOCAL}\"]\ntrunks:\n  - name: carrier\n    register: {register}\ncdr: {{ path: cdr.jsonl }}\n"
    );
    Config::parse(&text, FsPath::new("test.yaml")).expect("config")
}

const PLAIN: &str =
    "{ user: \"4930\", password: s3cret, registrar: \"127.0.0.20:5070\", expires: 600 }";

struct World {
    regs: Registrations,
    ids: IdGen,
    now: Instant,
}

fn socket_for(_: SocketAddr, _: crate::sip::Protocol) -> Option<LocalSocket> {
    let addr: SocketAddr = LOCAL.parse().expect("addr");
    Some(LocalSocket {
        bind: addr,
        advertised: addr,
        proto: crate::sip::Protocol::Udp,
    })
}

impl World {
    fn new(register: &str) -> World {
        let mut w = World {
            regs: Registrations::default(),
            ids: IdGen::seeded(0, 3),
            now: Instant::now(),
        };
        w.reload(register);
        w
    }

    fn reload(&mut self, register: &str) {
        let trunks = if register.is_empty() {
            Vec::new()
        } else {
            config(register).trunks
        };
        let mut env = UplinkEnv {
            ids: &mut self.ids,
            socket_for: &socket_for,
        };
        self.regs.set_config(self.now, &trunks, "Vigil", &mut env);
    }

    /// The one REGISTER Vigil sends now.
    fn sent(&mut self) -> Outgoing {
        let out = self.regs.poll_request().expect("a REGISTER");
        assert!(self.regs.poll_request().is_none(), "only one");
        assert_eq!(out.path.remote, REGISTRAR.parse().expect("addr"));
        assert_eq!(out.request.method, Method::Register);
        out
    }

    fn answer(&mut self, out: &Outgoing, status: u16, headers: &[(HeaderName, &str)]) {
        let mut r = out.request.response(status);
        for (name, value) in headers {
            r.headers.push(name.clone(), *value);
        }
        let mut env = UplinkEnv {
            ids: &mut self.ids,
            socket_for: &socket_for,
        };
        self.regs.handle_response(self.now, out.id, &r, &mut env);
    }

    /// Jumps to the next deadline and fires it; returns how far it was.
    fn jump(&mut self) -> Duration {
        let at = self.regs.poll_timeout().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = at;
        let mut env = UplinkEnv {
            ids: &mut self.ids,
            socket_for: &socket_for,
        };
        self.regs.handle_timeout(self.now, &mut env);
        waited
    }

    fn state(&self) -> RegistrationSnapshot {
        let mut all = self.regs.snapshot(self.now);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }
}

fn expires(out: &Outgoing) -> &str {
    out.request
        .headers
        .get(&HeaderName::Expires)
        .expect("Expires")
}

#[test]
fn registers_at_once_and_refreshes_a_minute_before_the_granted_expiry() {
    let mut w = World::new(PLAIN);
    let first = w.sent();
    let r = &first.request;
    assert_eq!(r.uri.to_string(), "sip:127.0.0.20");
    assert_eq!(r.to.uri.to_string(), "sip:4930@127.0.0.20");
    assert_eq!(r.from.uri, r.to.uri);
    assert_eq!(
        r.headers.get(&HeaderName::Contact),
        Some("<sip:4930@127.0.0.1:5060>")
    );
    assert_eq!(expires(&first), "600");
    assert_eq!(w.state().state, RegState::Registering);
    // The registrar grants 300 s on Vigil's Contact (and lists another one).
    w.answer(
        &first,
        200,
        &[(
            HeaderName::Contact,
            "<sip:other@192.0.2.1>;expires=3600, <sip:4930@127.0.0.1:5060>;expires=300",
        )],
    );
    let s = w.state();
    assert_eq!(
        (s.state, s.expires_in, s.last_status),
        (RegState::Registered, Some(300), Some(200))
    );
    assert_eq!(
        w.regs.poll_event(),
        Some(RegEvent::Registered {
            id: first.id,
            granted: Duration::from_secs(300)
        })
    );
    assert_eq!(w.jump(), Duration::from_secs(240), "a minute before expiry");
    let refresh = w.sent();
    assert_eq!(refresh.request.call_id, first.request.call_id);
    assert_eq!(refresh.request.cseq.seq, first.request.cseq.seq + 1);
    // Granted by Expires alone this time, a short one: refreshed at half.
    w.answer(&refresh, 200, &[(HeaderName::Expires, "80")]);
    assert_eq!(w.jump(), Duration::from_secs(40));
}

#[test]
fn a_challenge_is_answered_once_and_a_second_one_fails() {
    let mut w = World::new(PLAIN);
    let first = w.sent();
    let challenge = "Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\", algorithm=MD5";
    w.answer(&first, 401, &[(HeaderName::WwwAuthenticate, challenge)]);
    let retry = w.sent();
    assert_eq!(retry.request.cseq.seq, first.request.cseq.seq + 1);
    let creds = DigestCredentials::parse(
        retry
            .request
            .headers
            .get(&HeaderName::Authorization)
            .expect("credentials"),
    )
    .expect("valid");
    assert_eq!(creds.username, "4930");
    assert_eq!(
        creds.response,
        digest_response(DigestAlgorithm::Md5, &creds, "s3cret", "REGISTER")
    );
    assert_eq!(w.state().state, RegState::Registering, "not a failure");
    // Wrong password, say: challenged again → failed, retried after 30 s.
    w.answer(&retry, 401, &[(HeaderName::WwwAuthenticate, challenge)]);
    let s = w.state();
    assert_eq!(
        (s.state, s.failures, s.last_status),
        (RegState::Failed, 1, Some(401))
    );
    assert_eq!(w.jump(), BACKOFF_FIRST);
    let again = w.sent();
    assert_eq!(again.request.headers.get(&HeaderName::Authorization), None);
    w.answer(&again, 401, &[(HeaderName::WwwAuthenticate, challenge)]);
    let ok = w.sent();
    w.answer(&ok, 200, &[]);
    let s = w.state();
    assert_eq!(
        (s.state, s.failures, s.expires_in),
        (RegState::Registered, 0, Some(600))
    );
}

#[test]
fn refusals_back_off_doubling_and_silence_backs_off_too() {
    let mut w = World::new(PLAIN);
    for wait in [30, 60, 120] {
        let out = w.sent();
        w.answer(&out, 403, &[]);
        assert_eq!(w.state().state, RegState::Failed);
        assert_eq!(
            w.regs.poll_event(),
            Some(RegEvent::Failed {
                id: out.id,
                status: Some(403)
            })
        );
        assert_eq!(w.jump(), Duration::from_secs(wait));
    }
    let out = w.sent();
    w.regs.handle_tx_timeout(w.now, out.id);
    let s = w.state();
    assert_eq!((s.state, s.failures), (RegState::BackingOff, 4));
    assert_eq!(w.jump(), Duration::from_secs(240));
    let out = w.sent();
    w.answer(&out, 200, &[]);
    assert_eq!(w.state().failures, 0);
}

#[test]
fn a_503_with_retry_after_is_honoured_and_a_423_raises_the_interval() {
    let mut w = World::new(PLAIN);
    let out = w.sent();
    w.answer(&out, 503, &[(HeaderName::RetryAfter, "120 (maintenance)")]);
    assert_eq!(w.state().state, RegState::BackingOff);
    assert_eq!(w.jump(), Duration::from_secs(120));
    let out = w.sent();
    w.answer(&out, 423, &[(HeaderName::MinExpires, "1200")]);
    let raised = w.sent();
    assert_eq!(expires(&raised), "1200", "asked again at once");
    w.answer(&raised, 200, &[]);
    assert_eq!(w.state().expires_in, Some(1200));
}

#[test]
fn reloads_register_changes_and_unregister_removals() {
    let mut w = World::new(PLAIN);
    let first = w.sent();
    w.answer(&first, 200, &[]);
    // The same settings again: nothing to do.
    w.reload(PLAIN);
    assert!(w.regs.poll_request().is_none());
    // A new password: the old binding goes (expires=0), a new one comes.
    w.reload(&PLAIN.replace("s3cret", "n3w"));
    let bye = w.regs.poll_request().expect("unregister");
    let hello = w.regs.poll_request().expect("register");
    assert_eq!(expires(&bye), "0");
    assert_eq!(bye.request.call_id, first.request.call_id);
    assert_eq!(expires(&hello), "600");
    assert_ne!(hello.request.call_id, first.request.call_id);
    assert_eq!(w.regs.snapshot(w.now).len(), 2);
    w.answer(&bye, 200, &[]);
    w.answer(&hello, 200, &[]);
    assert_eq!(w.state().state, RegState::Registered);
    // Removed: unregistered, then forgotten once answered.
    w.reload("");
    let bye = w.sent();
    assert_eq!(expires(&bye), "0");
    assert_eq!(w.state().state, RegState::Unregistering);
    assert!(w.regs.is_unregistering());
    w.answer(&bye, 200, &[]);
    assert!(w.regs.snapshot(w.now).is_empty());
    assert!(!w.regs.is_unregistering());
    assert_eq!(w.regs.poll_timeout(), None);
}

#[test]
fn a_shutdown_unregisters_what_is_registered() {
    let mut w = World::new(PLAIN);
    let first = w.sent();
    w.answer(&first, 200, &[]);
    let mut env = UplinkEnv {
        ids: &mut w.ids,
        socket_for: &socket_for,
    };
    w.regs.unregister_all(w.now, &mut env);
    let bye = w.sent();
    assert_eq!(expires(&bye), "0");
    // Challenged: answered, still expires=0.
    w.answer(
        &bye,
        407,
        &[(
            HeaderName::ProxyAuthenticate,
            "Digest realm=\"c\", nonce=\"n\"",
        )],
    );
    let bye2 = w.sent();
    assert_eq!(expires(&bye2), "0");
    assert!(
        bye2.request
            .headers
            .get(&HeaderName::ProxyAuthorization)
            .is_some()
    );
    w.regs.handle_tx_timeout(w.now, bye2.id);
    assert!(!w.regs.is_unregistering(), "given up on silence");
}
