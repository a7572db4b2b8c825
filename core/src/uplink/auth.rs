//! Answering a carrier's digest challenge to a request Vigil sent on a trunk
//! (RFC 3261 §22.2 and §8.1.3.5; RFC 7616 for SHA-256): the same request
//! again, with `Authorization` (to a 401) or `Proxy-Authorization` (to a 407),
//! a new branch and the next CSeq. Once per challenge: a request that already
//! carried credentials for the challenging realm and is challenged again was
//! refused, and fails with that status; the caller never sees the challenge.
//!
//! Sans-IO and stateless: what was sent is the whole state, so any request
//! type (the B-leg INVITE, refreshes, relayed requests, BYE, REGISTER) uses the
//! same function, and the caller decides where the result goes.

use crate::config::TrunkAuth;
use crate::sip::{
    ChallengeError, DigestChallenge, DigestCredentials, HeaderName, Param, Request, Response,
};

/// Why a challenged request is not sent again: it fails with the challenge's
/// status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0} is not a digest challenge (401 or 407)")]
    NotAChallenge(u16),
    /// The request answered this realm's challenge already: wrong credentials
    /// (or a nonce the carrier will not take).
    #[error("realm {0:?} refused Vigil's credentials")]
    Refused(String),
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
}

/// The headers a challenge comes in and its answer goes out in.
fn header_pair(status: u16) -> Result<(HeaderName, HeaderName), AuthError> {
    match status {
        401 => Ok((HeaderName::WwwAuthenticate, HeaderName::Authorization)),
        407 => Ok((
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
        )),
        other => Err(AuthError::NotAChallenge(other)),
    }
}

/// True if `status` asks for credentials: worth calling [`authorize`].
pub fn is_challenge(status: u16) -> bool {
    header_pair(status).is_ok()
}

/// The request to send instead of `sent`, which `challenge` (a 401 or 407 to
/// it) refused: a copy with credentials for the challenge's realm (the
/// strongest algorithm offered), top Via branch `branch`, CSeq one higher
/// (RFC 3261 §22.2; within a dialog the caller may renumber it) and
/// `cnonce` as the client nonce. Fails when `sent` already carried
/// credentials for that realm, or the challenge cannot be answered.
pub fn authorize(
    sent: &Request,
    challenge: &Response,
    auth: &TrunkAuth,
    branch: String,
    cnonce: &str,
) -> Result<Request, AuthError> {
    let (asks, answers) = header_pair(challenge.status)?;
    let picked = DigestChallenge::pick(challenge.headers.get_all(&asks))?;
    let answered_before = sent
        .headers
        .get_all(&answers)
        .filter_map(|v| DigestCredentials::parse(v).ok())
        .any(|c| c.realm == picked.realm);
    if answered_before {
        return Err(AuthError::Refused(picked.realm));
    }
    let uri = sent.uri.to_string();
    // A fresh nonce for each challenge: its first use.
    let creds = DigestCredentials::answer(
        &picked,
        &auth.user,
        &auth.password,
        sent.method.as_str(),
        &uri,
        cnonce,
        1,
    );
    let mut retry = sent.clone();
    retry.cseq.seq = sent.cseq.seq.wrapping_add(1);
    if let Some(via) = retry.via.first_mut() {
        via.params
            .retain(|p| !p.name.eq_ignore_ascii_case("branch"));
        via.params.insert(0, Param::new("branch", Some(branch)));
    }
    retry.headers.push(answers, creds.to_string());
    Ok(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{DigestAlgorithm, Message, decode, digest_response};

    fn parse_request(text: &str) -> Request {
        match decode(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn parse_response(text: &str) -> Response {
        match decode(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn bye() -> Request {
        parse_request(
            "BYE sip:4930@127.0.0.20:5070 SIP/2.0\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport\n\
             Max-Forwards: 70\n\
             From: <sip:vigil@127.0.0.1>;tag=a\n\
             To: <sip:4930@127.0.0.20>;tag=b\n\
             Call-ID: vgl00-1\n\
             CSeq: 7 BYE\n\
             Content-Length: 0\n\n",
        )
    }

    fn challenge(status: u16, header: &str, value: &str) -> Response {
        parse_response(&format!(
            "SIP/2.0 {status} Unauthorized\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport\n\
             From: <sip:vigil@127.0.0.1>;tag=a\n\
             To: <sip:4930@127.0.0.20>;tag=b\n\
             Call-ID: vgl00-1\n\
             CSeq: 7 BYE\n\
             {header}: {value}\n\
             Content-Length: 0\n\n"
        ))
    }

    fn carrier() -> TrunkAuth {
        TrunkAuth {
            user: "vigil".into(),
            password: "s3cret".into(),
        }
    }

    /// A 407 with SHA-256 and MD5 challenges: the SHA-256 one is answered
    /// in Proxy-Authorization, with a new branch and the next CSeq, and the
    /// carrier's check (the registrar's hash code) accepts the answer.
    #[test]
    fn a_proxy_challenge_is_answered_once_with_the_strongest_algorithm() {
        let sent = bye();
        let c407 = parse_response(
            "SIP/2.0 407 Proxy Authentication Required\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport\n\
             From: <sip:vigil@127.0.0.1>;tag=a\n\
             To: <sip:4930@127.0.0.20>;tag=b\n\
             Call-ID: vgl00-1\n\
             CSeq: 7 BYE\n\
             Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\n\
             Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\", opaque=\"op\"\n\
             Content-Length: 0\n\n",
        );
        let retry =
            authorize(&sent, &c407, &carrier(), "z9hG4bKsecond".into(), "cn1").expect("answered");
        assert_eq!(retry.cseq.seq, 8);
        assert_eq!(retry.top_via().branch(), Some("z9hG4bKsecond"));
        assert_eq!(retry.headers.get(&HeaderName::Authorization), None);
        let creds = DigestCredentials::parse(
            retry
                .headers
                .get(&HeaderName::ProxyAuthorization)
                .expect("credentials"),
        )
        .expect("parses");
        assert_eq!(creds.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(creds.uri, "sip:4930@127.0.0.20:5070");
        assert_eq!(creds.opaque.as_deref(), Some("op"));
        assert_eq!(
            creds.response,
            digest_response(DigestAlgorithm::Sha256, &creds, "s3cret", "BYE")
        );
        // The carrier challenges the answered request again: refused.
        let mut again = c407.clone();
        again.cseq.seq = 8;
        assert_eq!(
            authorize(&retry, &again, &carrier(), "z9hG4bKthird".into(), "cn2"),
            Err(AuthError::Refused("carrier".into()))
        );
    }

    /// A 401 after a proxy's 407 was answered is another realm's: answered
    /// too, in Authorization, keeping the proxy's credentials.
    #[test]
    fn a_401_without_qop_gets_rfc_2617_credentials_beside_the_proxys() {
        let sent = bye();
        let c407 = challenge(
            407,
            "Proxy-Authenticate",
            "Digest realm=\"proxy\", nonce=\"p1\"",
        );
        let first = authorize(&sent, &c407, &carrier(), "z9hG4bK2".into(), "c").expect("407");
        let c401 = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"uas\", nonce=\"u1\"",
        );
        let second = authorize(&first, &c401, &carrier(), "z9hG4bK3".into(), "c").expect("401");
        assert_eq!(second.cseq.seq, 9);
        assert!(
            second
                .headers
                .get(&HeaderName::ProxyAuthorization)
                .is_some()
        );
        let creds = DigestCredentials::parse(
            second
                .headers
                .get(&HeaderName::Authorization)
                .expect("credentials"),
        )
        .expect("parses");
        assert_eq!((creds.qop, creds.nc, creds.algorithm), (None, None, None));
    }

    #[test]
    fn unanswerable_challenges_fail_the_request() {
        let sent = bye();
        let sha512 = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
        );
        assert!(matches!(
            authorize(&sent, &sha512, &carrier(), "b".into(), "c"),
            Err(AuthError::Challenge(ChallengeError::Algorithm(_)))
        ));
        let mut not_challenge = sha512.clone();
        not_challenge.status = 403;
        assert_eq!(
            authorize(&sent, &not_challenge, &carrier(), "b".into(), "c"),
            Err(AuthError::NotAChallenge(403))
        );
        let mut bare = challenge(401, "X-Other", "1");
        bare.status = 401;
        assert!(authorize(&sent, &bare, &carrier(), "b".into(), "c").is_err());
    }
}
