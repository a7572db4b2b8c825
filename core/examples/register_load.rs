//! Registration load for `tests/load/registrations.sh`: registers many contacts
//! with digest authentication (REGISTER, 401, REGISTER with credentials, 200)
//! from a few UDP sockets, then counts the NAT keep-alives those sockets receive.
//!
//! ```sh
//! cargo run --release --example register_load -- \
//!     --vigil 127.0.0.1:5060 --local 127.0.0.2 --users 10000 --per-user 10 \
//!     --sockets 8 --window 256 --listen 65
//! ```
//!
//! Users are named `u1`..`uN` with password `secret-uN` (the script writes the
//! matching config). Contacts of one user differ by a `;line=` URI parameter.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil::sip::digest_response;
use vigil::sip::{DigestAlgorithm, DigestCredentials, HeaderName, Message, decode};

struct Args {
    vigil: SocketAddr,
    local: IpAddr,
    users: usize,
    per_user: usize,
    sockets: usize,
    window: usize,
    listen: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        vigil: SocketAddr::from(([127, 0, 0, 1], 5060)),
        local: IpAddr::from([127, 0, 0, 2]),
        users: 10_000,
        per_user: 10,
        sockets: 8,
        window: 256,
        listen: 65,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let (flag, value) = (
            pair[0].as_str(),
            pair.get(1).map(String::as_str).unwrap_or_default(),
        );
        let bad = || -> ! {
            eprintln!("register_load: bad value {value:?} for {flag}");
            std::process::exit(2)
        };
        match flag {
            "--vigil" => args.vigil = value.parse().unwrap_or_else(|_| bad()),
            "--local" => args.local = value.parse().unwrap_or_else(|_| bad()),
            "--users" => args.users = value.parse().unwrap_or_else(|_| bad()),
            "--per-user" => args.per_user = value.parse().unwrap_or_else(|_| bad()),
            "--sockets" => args.sockets = value.parse().unwrap_or_else(|_| bad()),
            "--window" => args.window = value.parse().unwrap_or_else(|_| bad()),
            "--listen" => args.listen = value.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
    }
    args
}

/// Where one contact's registration stands.
struct Pending {
    contact: usize,
    sent: Instant,
    tries: u32,
    message: Vec<u8>,
}

fn register(
    me: SocketAddr,
    contact: usize,
    per_user: usize,
    cseq: u32,
    authorization: Option<&str>,
) -> Vec<u8> {
    let user = contact / per_user + 1;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-l{contact}-{cseq};rport\r\n\
From: <sip:u{user}@vigil.local>;tag=l{contact}\r\nTo: <sip:u{user}@vigil.local>\r\nCall-ID: load-{contact}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:u{user}@{me};line={contact}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn authorization(challenge: &str, contact: usize, per_user: usize) -> Option<String> {
    let user = contact / per_user + 1;
    let nonce = challenge.split("nonce=\"").nth(1)?.split('"').next()?;
    let mut creds = DigestCredentials {
        username: format!("u{user}"),
        realm: "vigil.local".into(),
        nonce: nonce.into(),
        uri: "sip:vigil.local".into(),
        response: String::new(),
        algorithm: Some("MD5".into()),
        cnonce: Some(format!("c{contact}")),
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
    Some(format!(
        "Digest username=\"u{user}\", realm=\"vigil.local\", nonce=\"{nonce}\", uri=\"sip:vigil.local\", response=\"{}\", algorithm=MD5, cnonce=\"c{contact}\", qop=auth, nc=00000001",
        creds.response
    ))
}

/// Registers every contact `c` with `c % sockets == index` through `socket`.
fn register_all(
    socket: &UdpSocket,
    index: usize,
    args: &Args,
    registered: &AtomicU64,
    failed: &AtomicU64,
) {
    let me = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("socket: {e}"));
    let mut todo = (0..args.users * args.per_user).filter(|c| c % args.sockets == index);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // A 200 lists every binding of the user: it can be several kB.
    let mut buf = vec![0u8; 65_536];
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap_or_default();
    loop {
        while pending.len() < args.window {
            let Some(contact) = todo.next() else { break };
            let message = register(me, contact, args.per_user, 1, None);
            let _ = socket.send_to(&message, args.vigil);
            pending.insert(
                format!("load-{contact}"),
                Pending {
                    contact,
                    sent: Instant::now(),
                    tries: 1,
                    message,
                },
            );
        }
        if pending.is_empty() {
            return;
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && let Ok(Message::Response(r)) = decode(&buf[..n])
            && let Some(p) = pending.get_mut(&r.call_id)
        {
            match r.status {
                401 => {
                    let challenge = r
                        .headers
                        .get_all(&HeaderName::WwwAuthenticate)
                        .find(|c| c.contains("MD5"))
                        .unwrap_or_default()
                        .to_string();
                    match authorization(&challenge, p.contact, args.per_user) {
                        Some(auth) => {
                            p.message = register(me, p.contact, args.per_user, 2, Some(&auth));
                            p.sent = Instant::now();
                            p.tries = 1;
                            let _ = socket.send_to(&p.message, args.vigil);
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            pending.remove(&r.call_id);
                        }
                    }
                }
                200 => {
                    registered.fetch_add(1, Ordering::Relaxed);
                    pending.remove(&r.call_id);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    pending.remove(&r.call_id);
                }
            }
        }
        // UDP: retransmit what got no answer, give up after a few tries.
        let now = Instant::now();
        pending.retain(|_, p| {
            if now.duration_since(p.sent) < Duration::from_secs(1) {
                return true;
            }
            if p.tries >= 5 {
                failed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            p.tries += 1;
            p.sent = now;
            let _ = socket.send_to(&p.message, args.vigil);
            true
        });
    }
}

fn main() {
    let args = Arc::new(parse_args());
    let total = args.users * args.per_user;
    let sockets: Vec<Arc<UdpSocket>> = (0..args.sockets)
        .map(|_| {
            Arc::new(
                UdpSocket::bind(SocketAddr::new(args.local, 0))
                    .unwrap_or_else(|e| panic!("bind: {e}")),
            )
        })
        .collect();
    let registered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = sockets
        .iter()
        .enumerate()
        .map(|(i, socket)| {
            let (socket, args, registered, failed) = (
                socket.clone(),
                args.clone(),
                registered.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || register_all(&socket, i, &args, &registered, &failed))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let took = start.elapsed();
    println!(
        "registered: {} of {total} in {:.2} s ({:.0}/s), failed {}",
        registered.load(Ordering::Relaxed),
        took.as_secs_f64(),
        registered.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );

    // Keep-alives: count what arrives on the sockets the contacts registered from.
    let received = Arc::new(AtomicU64::new(0));
    let listen = Duration::from_secs(args.listen);
    let begin = Instant::now();
    let threads: Vec<_> = sockets
        .iter()
        .map(|socket| {
            let (socket, received) = (socket.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while begin.elapsed() < listen {
                    if let Ok((n, _)) = socket.recv_from(&mut buf)
                        && &buf[..n] == b"HELLO"
                    {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let got = received.load(Ordering::Relaxed);
    println!(
        "keep-alives received: {got} in {} s ({:.0}/s)",
        args.listen,
        got as f64 / listen.as_secs_f64()
    );
}
