//! The SIP codec on arbitrary datagrams: `vigil::sip::decode` (framing,
//! unfolding, typed headers, validation), the ingress's verdict on the same bytes
//! (the daemon's receive path: 400/403 replies, sharding, drops), and the round
//! trip of whatever decodes.
//!
//! What it asserts beyond "no panic":
//! - a decoded message re-encodes to bytes that decode to the same message, and
//!   encoding that again gives the same bytes (the codec keeps each part as
//!   written, so a relayed value must survive Vigil unchanged);
//! - a response Vigil builds for a decoded request (`Request::response`) decodes.

#![no_main]

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;
use vigil::ingress::{Ingress, Verdict};
use vigil::sip::{DecodeError, Message, decode};
use vigil::transaction::{Path, response_target};

/// A config with a registrar, so REGISTER and user calls take their own branch.
static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::parse(
        "listen: [\"udp:127.0.0.1:5060\"]\n\
         trunks:\n  - { name: pbx, inbound: { from: [\"127.0.0.2\"] }, route_to: carrier }\n  \
         - { name: carrier, outbound: { to: \"127.0.0.3:5080\" } }\n\
         cdr: { path: cdr.jsonl }\n\
         registrar: { domain: vigil.local }\n\
         users:\n  - { user: \"1001\", password: secret }\n",
        FsPath::new("fuzz.yaml"),
    )
    .expect("the fuzz config is valid")
});

const SOURCES: [&str; 3] = ["127.0.0.2:5061", "127.0.0.3:5080", "[2001:db8::7]:40000"];

fn encode(message: &Message) -> Vec<u8> {
    match message {
        Message::Request(r) => r.encode(),
        Message::Response(r) => r.encode(),
    }
}

/// Calls the accessors the transaction, dialog and call layers use, which parse
/// header values again (they must not fail on anything decode let through).
fn use_accessors(message: &Message, source: SocketAddr) {
    match message {
        Message::Request(r) => {
            let _ = (
                r.contact(),
                r.record_route(),
                r.session_expires(),
                r.min_se(),
            );
            let _ = (r.content_type(), r.is_in_dialog(), r.uri.scheme());
            let _ = (
                r.uri.user_part(),
                r.from.uri.user_part(),
                r.to.uri.user_part(),
            );
            if let Some(sip) = r.uri.as_sip() {
                let _ = (sip.socket_addr(), sip.port_or_default(), sip.host.ip());
            }
            let top = r.top_via();
            let _ = (top.branch(), top.has_rfc3261_branch(), top.sent_by());
            let _ = response_target(top, source, false);
            for status in [100, 200, 400, 481] {
                let mut response = r.response(status);
                response.to.set_tag("fuzz-tag");
                response.via[0].stamp_received(source);
                let bytes = response.encode();
                if let Err(e) = decode(&bytes) {
                    panic!(
                        "Vigil's own {status} to a valid request does not decode: {e}\n{}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
        Message::Response(r) => {
            let _ = (
                r.contact(),
                r.record_route(),
                r.session_expires(),
                r.min_se(),
            );
            let _ = (r.top_via().branch(), r.is_success(), r.to.tag());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let source: SocketAddr = SOURCES[data.first().map_or(0, |b| usize::from(*b) % SOURCES.len())]
        .parse()
        .expect("a valid address");
    match decode(data) {
        Ok(message) => {
            use_accessors(&message, source);
            let bytes = encode(&message);
            let again = decode(&bytes).unwrap_or_else(|e| {
                panic!(
                    "a decoded message re-encodes to something that does not decode: {e}\n{}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(again, message, "the round trip changed the message");
            assert_eq!(encode(&again), bytes, "encoding is not a fixed point");
        }
        Err(DecodeError::BadRequest {
            status,
            reason,
            reply: Some(reply),
        }) => {
            let _ = reply.render(status, &reason, source, "fuzz-tag");
        }
        Err(_) => {}
    }
    let mut ingress = Ingress::new(2);
    let path = Path {
        local: "127.0.0.1:5060".parse().expect("a valid address"),
        remote: source,
        proto: vigil::sip::Protocol::Udp,
    };
    if let Verdict::Dispatch { message, .. } | Verdict::Registrar(message) =
        ingress.classify(Instant::now(), &CONFIG, data, path)
    {
        let _ = encode(&message);
    }
});
