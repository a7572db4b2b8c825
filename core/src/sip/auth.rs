//! HTTP Digest authentication headers as SIP uses them (RFC 3261 §22, §25.1;
//! RFC 7616 and RFC 8760 for SHA-256):
//!
//! ```text
//! challenge   = ("Digest" LWS digest-cln *(COMMA digest-cln))
//! credentials = ("Digest" LWS digest-response *(COMMA dig-resp))
//! ```
//!
//! The syntax lives here, and the one computation both sides share: the
//! `response` of RFC 7616 §3.4.1 ([`digest_response`]), which Vigil's registrar
//! checks and Vigil as a client (a trunk's `auth`, `register`) sends. Whether a
//! nonce is fresh is the registrar's business; when to answer a challenge is
//! the caller's (`uplink::auth`).

use std::fmt;

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::text::{is_token, quoted_string_len, split_list, trim_lws};
use super::typed::ValueError;

/// A Digest hash algorithm Vigil knows (RFC 7616 §3.3, RFC 8760 §2):
///
/// ```text
/// algorithm = "algorithm" EQUAL ( "MD5" / "MD5-sess" / "SHA-256"
///             / "SHA-256-sess" / "SHA-512-256" / "SHA-512-256-sess" / token )
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The algorithm a challenge or credentials name; no `algorithm`
    /// parameter means MD5 (RFC 7616 §3.4.1). `None` for any other.
    pub fn parse(name: Option<&str>) -> Option<DigestAlgorithm> {
        match name {
            None => Some(DigestAlgorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(DigestAlgorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(DigestAlgorithm::Sha256),
            Some(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// How strong Vigil deems it, to pick among a server's challenges
    /// (RFC 8760 §2.4: the client uses the first one it supports, and
    /// servers list the preferred first, but some list MD5 first for old
    /// phones; Vigil prefers the strongest).
    fn strength(self) -> u8 {
        match self {
            DigestAlgorithm::Md5 => 0,
            DigestAlgorithm::Sha256 => 1,
        }
    }

    /// `H(data)` of RFC 7616 §3.4.1, as lowercase hex.
    pub fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// The `response` of RFC 7616 §3.4.1 for `creds` (its `response` field is not
/// read), or RFC 2069's when `creds` carry no `qop`. Both the registrar's check
/// and Vigil's own answers use it, so they cannot disagree.
pub fn digest_response(
    algorithm: DigestAlgorithm,
    creds: &DigestCredentials,
    password: &str,
    method: &str,
) -> String {
    let ha1 = algorithm.hash(&format!("{}:{}:{password}", creds.username, creds.realm));
    let ha2 = algorithm.hash(&format!("{method}:{}", creds.uri));
    match (&creds.qop, &creds.nc, &creds.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => {
            algorithm.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", creds.nonce))
        }
        _ => algorithm.hash(&format!("{ha1}:{}:{ha2}", creds.nonce)),
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The parameters of a Digest `Authorization` or `Proxy-Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// `MD5` when absent (RFC 7616 §3.4.1).
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    /// The nonce count, 8 hex digits.
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

impl DigestCredentials {
    /// Vigil's answer to `challenge` as `username` with `password`, for a
    /// request with `method` and Request-URI `uri`: `qop=auth` with `cnonce`
    /// and the nonce count `nc` when the challenge offers it (RFC 7616
    /// §3.4), RFC 2617's plain form when it offers no qop at all.
    pub fn answer(
        challenge: &DigestChallenge,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> DigestCredentials {
        let with_qop = challenge.qop_auth;
        let mut creds = DigestCredentials {
            username: username.to_string(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: challenge
                .algorithm_named
                .then(|| challenge.algorithm.name().to_string()),
            cnonce: with_qop.then(|| cnonce.to_string()),
            qop: with_qop.then(|| "auth".to_string()),
            nc: with_qop.then(|| format!("{nc:08x}")),
            opaque: challenge.opaque.clone(),
        };
        creds.response = digest_response(challenge.algorithm, &creds, password, method);
        creds
    }

    pub fn parse(value: &str) -> Result<DigestCredentials, ValueError> {
        let value = trim_lws(value);
        let (scheme, rest) = value
            .split_once([' ', '\t'])
            .ok_or_else(|| ValueError("credentials without parameters".into()))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ValueError(format!("unsupported auth scheme {scheme:?}")));
        }
        let mut creds = DigestCredentials {
            username: String::new(),
            realm: String::new(),
            nonce: String::new(),
            uri: String::new(),
            response: String::new(),
            algorithm: None,
            cnonce: None,
            qop: None,
            nc: None,
            opaque: None,
        };
        for param in split_list(rest) {
            if param.is_empty() {
                continue;
            }
            let (name, raw) = param
                .split_once('=')
                .ok_or_else(|| ValueError(format!("auth parameter {param:?} has no value")))?;
            let (name, raw) = (trim_lws(name), trim_lws(raw));
            if !is_token(name) {
                return Err(ValueError(format!("invalid auth parameter name {name:?}")));
            }
            let value = unquote(raw)?;
            match name.to_ascii_lowercase().as_str() {
                "username" => creds.username = value,
                "realm" => creds.realm = value,
                "nonce" => creds.nonce = value,
                "uri" => creds.uri = value,
                "response" => creds.response = value,
                "algorithm" => creds.algorithm = Some(value),
                "cnonce" => creds.cnonce = Some(value),
                "qop" => creds.qop = Some(value),
                "nc" => creds.nc = Some(value),
                "opaque" => creds.opaque = Some(value),
                _ => {} // auth-param extensions are ignored
            }
        }
        for (field, v) in [
            ("username", &creds.username),
            ("realm", &creds.realm),
            ("nonce", &creds.nonce),
            ("uri", &creds.uri),
            ("response", &creds.response),
        ] {
            if v.is_empty() {
                return Err(ValueError(format!("credentials without {field}")));
            }
        }
        Ok(creds)
    }
}

/// The value of an `Authorization` or `Proxy-Authorization` header (RFC 3261
/// §25.1 `dig-resp`): quoted where the grammar quotes, `algorithm`, `qop`
/// and `nc` as tokens.
impl fmt::Display for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\"",
            Quoted(&self.username),
            Quoted(&self.realm),
            Quoted(&self.nonce),
            Quoted(&self.uri),
            Quoted(&self.response)
        )?;
        if let Some(a) = &self.algorithm {
            write!(f, ", algorithm={a}")?;
        }
        if let Some(c) = &self.cnonce {
            write!(f, ", cnonce=\"{}\"", Quoted(c))?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque=\"{}\"", Quoted(o))?;
        }
        if let (Some(q), Some(nc)) = (&self.qop, &self.nc) {
            write!(f, ", qop={q}, nc={nc}")?;
        }
        Ok(())
    }
}

/// Text inside a quoted-string, with `"` and `\` escaped as quoted-pairs.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A parameter value: a token, or a quoted string with its quoted-pairs undone.
fn unquote(raw: &str) -> Result<String, ValueError> {
    if !raw.starts_with('"') {
        return Ok(raw.to_string());
    }
    let len =
        quoted_string_len(raw).ok_or_else(|| ValueError("unterminated quoted string".into()))?;
    if len != raw.len() {
        return Err(ValueError(format!("text after quoted string in {raw:?}")));
    }
    let mut out = String::with_capacity(len);
    let mut chars = raw[1..len - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A Digest challenge for `WWW-Authenticate` (401) or `Proxy-Authenticate` (407).
///
/// ```text
/// digest-cln = realm / domain / nonce / opaque / stale / algorithm
///              / qop-options / auth-param
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: DigestAlgorithm,
    /// The challenge named its algorithm; the answer names it only then, as
    /// RFC 2617 servers that never heard of SHA-256 expect.
    pub algorithm_named: bool,
    /// The challenge offers `qop="auth"` (RFC 7616); without it the answer
    /// takes RFC 2617's form without `cnonce` and `nc`.
    pub qop_auth: bool,
    /// Returned unchanged in the answer (RFC 7616 §3.3).
    pub opaque: Option<String>,
    /// The nonce was valid once but has expired: retry with the new one without
    /// asking the user again (RFC 7616 §3.3).
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("malformed challenge: {0}")]
    Malformed(String),
    #[error("unsupported auth scheme {0:?}")]
    Scheme(String),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// `qop` offered, but not `auth` (`auth-int` alone: Vigil does not hash bodies).
    #[error("unsupported qop {0:?}")]
    Qop(String),
}

impl DigestChallenge {
    /// A server's challenge, from the value of a `WWW-Authenticate` or
    /// `Proxy-Authenticate` header. Untrusted input: any problem is an error.
    pub fn parse(value: &str) -> Result<DigestChallenge, ChallengeError> {
        let value = trim_lws(value);
        let (scheme, rest) = value
            .split_once([' ', '\t'])
            .ok_or_else(|| ChallengeError::Malformed("no parameters".into()))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ChallengeError::Scheme(scheme.to_string()));
        }
        let (mut realm, mut nonce, mut algorithm, mut qop, mut opaque, mut stale) =
            (None, None, None, None, None, false);
        for param in split_list(rest) {
            if param.is_empty() {
                continue;
            }
            let (name, raw) = param
                .split_once('=')
                .ok_or_else(|| ChallengeError::Malformed(format!("{param:?} has no value")))?;
            let (name, raw) = (trim_lws(name), trim_lws(raw));
            let value = unquote(raw).map_err(|e| ChallengeError::Malformed(e.0))?;
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "algorithm" => algorithm = Some(value),
                "qop" => qop = Some(value),
                "opaque" => opaque = Some(value),
                "stale" => stale = value.eq_ignore_ascii_case("true"),
                _ => {} // domain and extensions change nothing for Vigil
            }
        }
        let realm = realm.ok_or_else(|| ChallengeError::Malformed("no realm".into()))?;
        let nonce = nonce.ok_or_else(|| ChallengeError::Malformed("no nonce".into()))?;
        let parsed = DigestAlgorithm::parse(algorithm.as_deref())
            .ok_or_else(|| ChallengeError::Algorithm(algorithm.clone().unwrap_or_default()))?;
        let qop_auth = match &qop {
            None => false,
            Some(q)
                if q.split(',')
                    .any(|o| trim_lws(o).eq_ignore_ascii_case("auth")) =>
            {
                true
            }
            Some(q) => return Err(ChallengeError::Qop(q.clone())),
        };
        Ok(DigestChallenge {
            realm,
            nonce,
            algorithm: parsed,
            algorithm_named: algorithm.is_some(),
            qop_auth,
            opaque,
            stale,
        })
    }

    /// The challenge Vigil answers among a response's (every `WWW-Authenticate`
    /// or `Proxy-Authenticate` value): the strongest supported algorithm of
    /// the first realm, so that a server offering SHA-256 beside MD5 gets
    /// SHA-256 (RFC 8760 §2.4). The error is the first value's when none can
    /// be answered.
    pub fn pick<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<DigestChallenge, ChallengeError> {
        let mut best: Option<DigestChallenge> = None;
        let mut first_error = None;
        for value in values {
            match DigestChallenge::parse(value) {
                Ok(c) => match &best {
                    Some(b) if b.realm != c.realm => {}
                    Some(b) if b.algorithm.strength() >= c.algorithm.strength() => {}
                    _ => best = Some(c),
                },
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        best.ok_or_else(|| {
            first_error.unwrap_or_else(|| ChallengeError::Malformed("no challenge".into()))
        })
    }
}

impl fmt::Display for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm=\"{}\", nonce=\"{}\"",
            Quoted(&self.realm),
            Quoted(&self.nonce)
        )?;
        if self.algorithm_named {
            write!(f, ", algorithm={}", self.algorithm)?;
        }
        if self.qop_auth {
            f.write_str(", qop=\"auth\"")?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque=\"{}\"", Quoted(o))?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_as_softphones_send_them() {
        let c = DigestCredentials::parse(
            r#"Digest username="1001",realm="vigil.local", nonce="abc", uri="sip:vigil.local", response="0123", algorithm=SHA-256, cnonce="x\"y", qop=auth, nc=00000001"#,
        )
        .expect("valid");
        assert_eq!(c.username, "1001");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(c.cnonce.as_deref(), Some("x\"y"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.qop.as_deref(), Some("auth"));
    }

    #[test]
    fn broken_credentials_are_refused() {
        for v in [
            "Basic dXNlcjpwYXNz",
            "Digest",
            r#"Digest username="1001", realm="r""#,
            r#"Digest username="unterminated, realm="r", nonce="n", uri="u", response="x""#,
        ] {
            assert!(DigestCredentials::parse(v).is_err(), "{v}");
        }
    }

    #[test]
    fn challenges_print_as_rfc_8760_asks() {
        let c = DigestChallenge {
            realm: "vigil.local".into(),
            nonce: "n1".into(),
            algorithm: DigestAlgorithm::Sha256,
            algorithm_named: true,
            qop_auth: true,
            opaque: None,
            stale: true,
        };
        assert_eq!(
            c.to_string(),
            r#"Digest realm="vigil.local", nonce="n1", algorithm=SHA-256, qop="auth", stale=true"#
        );
    }

    /// RFC 7616 §3.9.1's challenge (HTTP, but the computation is the same),
    /// answered as Vigil answers a carrier.
    fn rfc7616_answer(algorithm: &str, expected: &str) {
        let challenge = DigestChallenge::parse(&format!(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        ))
        .expect("valid challenge");
        let creds = DigestCredentials::answer(
            &challenge,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        );
        assert_eq!(creds.response, expected, "{algorithm}");
        assert_eq!(creds.nc.as_deref(), Some("00000001"));
        let printed = creds.to_string();
        let back = DigestCredentials::parse(&printed).expect("Vigil's own credentials parse");
        assert_eq!(back, creds, "{printed}");
    }

    #[test]
    fn rfc_7616_test_vectors() {
        rfc7616_answer("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        rfc7616_answer(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
    }

    /// RFC 2617 §3.5's example: MD5 without an `algorithm` parameter, which
    /// the answer then leaves out too.
    #[test]
    fn rfc_2617_test_vector() {
        let challenge = DigestChallenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("valid");
        assert!(!challenge.algorithm_named);
        let creds = DigestCredentials::answer(
            &challenge,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert_eq!(creds.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(creds.algorithm, None);
        assert_eq!(
            creds.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
    }

    /// A challenge without qop gets RFC 2069's answer: no cnonce, no nc.
    /// (Vector computed with Python's hashlib.)
    #[test]
    fn a_challenge_without_qop_gets_the_old_form() {
        let challenge =
            DigestChallenge::parse(r#"Digest realm="vigil.test", nonce="abc123""#).expect("valid");
        let creds = DigestCredentials::answer(
            &challenge,
            "alice",
            "secret",
            "REGISTER",
            "sip:127.0.0.1:5070",
            "ignored",
            1,
        );
        assert_eq!(creds.response, "2bf134b54f8536fa565b2dc75de01028");
        assert!(!creds.to_string().contains("nc="));
        assert_eq!((creds.qop, creds.nc, creds.cnonce), (None, None, None));
    }

    #[test]
    fn the_strongest_algorithm_of_the_first_realm_is_picked() {
        let md5 = r#"Digest realm="carrier", nonce="n1", algorithm=MD5, qop="auth""#;
        let sha = r#"Digest realm="carrier", nonce="n1", algorithm=SHA-256, qop="auth""#;
        let other = r#"Digest realm="elsewhere", nonce="n2", algorithm=SHA-256"#;
        let unknown = r#"Digest realm="carrier", nonce="n1", algorithm=SHA-512-256"#;
        let picked = DigestChallenge::pick([unknown, md5, other, sha]).expect("one answerable");
        assert_eq!(
            (picked.realm.as_str(), picked.algorithm),
            ("carrier", DigestAlgorithm::Sha256)
        );
        assert_eq!(
            DigestChallenge::pick([unknown]),
            Err(ChallengeError::Algorithm("SHA-512-256".into()))
        );
        assert!(DigestChallenge::pick([]).is_err());
    }

    #[test]
    fn challenges_vigil_cannot_answer_are_errors() {
        for (v, want) in [
            ("Basic realm=\"x\"", "scheme"),
            ("Digest nonce=\"n\"", "malformed"),
            ("Digest realm=\"r\"", "malformed"),
            ("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"", "qop"),
            ("Digest realm=\"r, nonce=\"n\"", "malformed"),
        ] {
            let e = DigestChallenge::parse(v).expect_err(v);
            assert!(
                e.to_string().to_lowercase().contains(want),
                "{v}: {e} (want {want})"
            );
        }
    }
}
