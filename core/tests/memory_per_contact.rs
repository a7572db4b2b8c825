//! Memory per registered contact, measured with a counting allocator: 10,000
//! contacts register with digest through the registrar and are held past every
//! transaction's and nonce's lifetime; the heap they keep must stay within the
//! issue's budget (1 KiB of RSS per contact) with room for the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use vigil::config::Config;
use vigil::ids::IdGen;
use vigil::ids::REGISTRAR_WORKER;
use vigil::registrar::digest::DigestAuth;
use vigil::registrar::{Output, Registrar};
use vigil::sip::digest_response;
use vigil::sip::{DigestAlgorithm, DigestCredentials, HeaderName, Message, decode};
use vigil::transaction::Path;
use vigil::transport::LocalSocket;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const USERS: usize = 1_000;
const PER_USER: usize = 10;
const BUDGET_PER_CONTACT: isize = 768;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn register(me: SocketAddr, contact: usize, cseq: u32, authorization: Option<&str>) -> Vec<u8> {
    let user = contact / PER_USER + 1;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-l{contact}-{cseq};rport\r\n\
From: <sip:u{user}@vigil.local>;tag=l{contact}\r\nTo: <sip:u{user}@vigil.local>\r\nCall-ID: load-{contact}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:u{user}@{me};line={contact}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn answers(registrar: &mut Registrar) -> Vec<vigil::sip::Response> {
    std::iter::from_fn(|| registrar.poll_output())
        .filter_map(|o| match o {
            Output::Transmit(t) => match decode(&t.bytes) {
                Ok(Message::Response(r)) => Some(r),
                _ => None,
            },
            Output::Persist(_) => None,
        })
        .collect()
}

#[test]
fn a_registered_contact_keeps_under_a_kibibyte() {
    let mut yaml = String::from(
        "listen: [\"udp:127.0.0.1:5060\"]\ncdr: { path: x }\nregistrar: { domain: vigil.local, max_contacts: 10, digest_algorithms: [MD5] }\nusers:\n",
    );
    for u in 1..=USERS {
        yaml.push_str(&format!("  - {{ user: u{u}, password: secret-u{u} }}\n"));
    }
    let config = Arc::new(Config::parse(&yaml, FsPath::new("t.yaml")).expect("config"));
    let t0 = Instant::now();
    let auth = DigestAuth::new("vigil.local", b"k", t0, Duration::from_secs(300));
    let sockets: Arc<[LocalSocket]> = Arc::from(vec![LocalSocket {
        bind: addr("127.0.0.1:5060"),
        advertised: addr("127.0.0.1:5060"),
        proto: vigil::sip::Protocol::Udp,
    }]);
    let mut registrar = Registrar::with_ids(
        config,
        sockets,
        auth,
        Arc::default(),
        Arc::default(),
        IdGen::seeded(REGISTRAR_WORKER, 9),
    );
    let before = LIVE.load(Ordering::Relaxed);
    let phones: Vec<SocketAddr> = (0..64)
        .map(|i| addr(&format!("127.0.0.2:{}", 20_000 + i)))
        .collect();
    let mut now = t0;
    for contact in 0..USERS * PER_USER {
        let me = phones[contact % phones.len()];
        let path = Path {
            local: addr("127.0.0.1:5060"),
            remote: me,
            proto: vigil::sip::Protocol::Udp,
        };
        let first = decode(&register(me, contact, 1, None)).expect("valid");
        registrar.handle_message(now, first, path);
        let challenge = answers(&mut registrar).pop().expect("401");
        let header = challenge
            .headers
            .get(&HeaderName::WwwAuthenticate)
            .expect("challenge")
            .to_string();
        let nonce = header
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("nonce")
            .to_string();
        let user = contact / PER_USER + 1;
        let mut creds = DigestCredentials {
            username: format!("u{user}"),
            realm: "vigil.local".into(),
            nonce: nonce.clone(),
            uri: "sip:vigil.local".into(),
            response: String::new(),
            algorithm: Some("MD5".into()),
            cnonce: Some("c".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            opaque: None,
        };
        creds.response = digest_response(
            DigestAlgorithm::Md5,
            &creds,
            &format!("secret-u{user}"),
            "REGISTER",
        );
        let auth = format!(
            "Digest username=\"u{user}\", realm=\"vigil.local\", nonce=\"{nonce}\", uri=\"sip:vigil.local\", response=\"{}\", algorithm=MD5, cnonce=\"c\", qop=auth, nc=00000001",
            creds.response
        );
        let second = decode(&register(me, contact, 2, Some(&auth))).expect("valid");
        registrar.handle_message(now, second, path);
        assert_eq!(answers(&mut registrar).pop().map(|r| r.status), Some(200));
        now += Duration::from_micros(100);
    }
    // Past the transactions' linger (32 s) and the nonces' lifetime (300 s),
    // sending keep-alives along the way.
    for s in 1..=400 {
        registrar.handle_timeout(t0 + Duration::from_secs(s));
        while registrar.poll_output().is_some() {}
    }
    assert_eq!(registrar.contacts(), USERS * PER_USER);
    let per_contact = (LIVE.load(Ordering::Relaxed) - before) / (USERS * PER_USER) as isize;
    eprintln!("heap per registered contact: {per_contact} bytes");
    assert!(
        per_contact <= BUDGET_PER_CONTACT,
        "{per_contact} bytes per contact, budget {BUDGET_PER_CONTACT}"
    );
}
