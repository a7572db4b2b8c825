//! The digest credentials parser (`Authorization` / `Proxy-Authorization`,
//! `vigil::sip::DigestCredentials::parse`) and the registrar's check of what it
//! parsed (`vigil::registrar::digest::DigestAuth::verify`).
//!
//! The input is the header value. The literal `NONCE` in it is replaced by a nonce
//! Vigil issued, so the verifier gets past its signature check; each parsed value
//! is then verified as sent, with its `response` computed right (the nonce-count
//! and replay logic), again (a retransmission or a replay), and after the nonce
//! expired (stale).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vigil::registrar::digest::{DigestAuth, Verdict, expected_response};
use vigil::sip::{DigestAlgorithm, DigestCredentials};

const LIFETIME: Duration = Duration::from_secs(300);
const BOTH: &[DigestAlgorithm] = &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut auth = DigestAuth::new("vigil.local", b"fuzz-key", now, LIFETIME);
    let nonce = auth.nonce(now);
    let value = text.replace("NONCE", &nonce);
    let Ok(mut creds) = DigestCredentials::parse(&value) else {
        return;
    };
    let _ = auth.verify(now, "REGISTER", &creds, "secret", BOTH, 1);
    let Some(algorithm) = DigestAlgorithm::parse(creds.algorithm.as_deref()) else {
        return;
    };
    creds.response = expected_response(algorithm, &creds, "secret", "INVITE");
    let first = auth.verify(now, "INVITE", &creds, "secret", BOTH, 2);
    let again = auth.verify(now, "INVITE", &creds, "secret", BOTH, 2);
    let replay = auth.verify(now, "INVITE", &creds, "secret", BOTH, 3);
    if first == Verdict::Accepted {
        assert_eq!(again, Verdict::Retransmission, "{creds:?}");
        assert!(
            matches!(replay, Verdict::Rejected(_)),
            "a replay got {replay:?}"
        );
    }
    let later = now + LIFETIME + Duration::from_secs(1);
    let stale = auth.verify(later, "INVITE", &creds, "secret", BOTH, 4);
    if first == Verdict::Accepted {
        assert_eq!(stale, Verdict::Stale, "{creds:?}");
    }
    auth.forget_expired(later);
});
