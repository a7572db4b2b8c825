//! RFC 4475's torture messages through the codec: every valid-but-tricky message
//! decodes, every invalid one is rejected with the status RFC 4475 asks for (or
//! dropped when it is a response), and none panics.
//!
//! What happens after decoding (501, 416, 420, 415, 406, …) is proven end to end in
//! `tests/rfc4475_torture.rs` against the running daemon.

use std::path::PathBuf;

use vigil::sip::{DecodeError, Message, decode};

fn message(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/rfc4475")
        .join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Request,
    Response,
    Rejected(u16),
    Dropped,
}

fn outcome(name: &str) -> Outcome {
    match decode(&message(name)) {
        Ok(Message::Request(_)) => Outcome::Request,
        Ok(Message::Response(_)) => Outcome::Response,
        Err(DecodeError::BadRequest {
            status,
            reply: Some(_),
            ..
        }) => Outcome::Rejected(status),
        Err(e) => {
            eprintln!("{name}: dropped: {e}");
            Outcome::Dropped
        }
    }
}

#[test]
fn valid_but_tricky_messages_decode() {
    for name in [
        "wsinv",
        "intmeth",
        "esc01",
        "escnull",
        "esc02",
        "lwsdisp",
        "longreq",
        "dblreq",
        "semiuri",
        "transports",
        "mpart01",
        "badbranch",
        "unkscm",
        "novelsc",
        "unksm2",
        "bext01",
        "invut",
        "regaut01",
        "zeromf",
        "cparam01",
        "cparam02",
        "regescrt",
        "sdp01",
        "inv2543",
    ] {
        assert_eq!(outcome(name), Outcome::Request, "{name}");
    }
    for name in ["unreason", "noreason", "bcast"] {
        assert_eq!(outcome(name), Outcome::Response, "{name}");
    }
}

#[test]
fn invalid_requests_are_answered_400() {
    for name in [
        "badinv01",
        "clerr",
        "ncl",
        "scalar02",
        "quotbal",
        "ltgtruri",
        "lwsruri",
        "lwsstart",
        "trws",
        "escruri",
        "baddate",
        "regbadct",
        "badaspec",
        "baddn",
        "mismatch01",
        "mismatch02",
        "insuf",
        "multi01",
        "mcl01",
    ] {
        assert_eq!(outcome(name), Outcome::Rejected(400), "{name}");
    }
    assert_eq!(outcome("badvers"), Outcome::Rejected(505));
}

#[test]
fn invalid_responses_are_dropped() {
    for name in ["scalarlg", "bigcode"] {
        assert_eq!(outcome(name), Outcome::Dropped, "{name}");
    }
}

#[test]
fn tricky_values_survive_exactly() {
    let Ok(Message::Request(r)) = decode(&message("esc01")) else {
        panic!("esc01 must decode");
    };
    assert_eq!(
        r.uri.to_string(),
        "sip:sips%3Auser%40example.com@example.net"
    );
    assert_eq!(r.uri.user_part().as_deref(), Some("sips:user@example.com"));
    let Ok(Message::Request(r)) = decode(&message("wsinv")) else {
        panic!("wsinv must decode");
    };
    assert_eq!(r.max_forwards, 68);
    assert_eq!(r.cseq.seq, 9);
    assert_eq!(r.via.len(), 3);
    assert_eq!(r.to.tag(), Some("1918181833n"));
    assert_eq!(r.from.tag(), Some("98asjd8"));
    let Ok(Message::Request(r)) = decode(&message("dblreq")) else {
        panic!("dblreq must decode");
    };
    assert!(
        r.body.is_empty(),
        "the second request is not part of the first"
    );
}

#[test]
fn every_message_decodes_without_panicking_when_truncated_anywhere() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rfc4475");
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).expect("read");
            for cut in 0..bytes.len() {
                let _ = decode(&bytes[..cut]);
            }
        }
    }
}
