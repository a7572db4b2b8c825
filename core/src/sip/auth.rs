//! HTTP Digest authentication headers as SIP uses them (RFC 3261 §22, §25.1;
//! RFC 7616 and RFC 8760 for SHA-256):
//!
//! ```text
//! challenge   = ("Digest" LWS digest-cln *(COMMA digest-cln))
//! credentials = ("Digest" LWS digest-response *(COMMA dig-resp))
//! ```
//!
//! Only the syntax lives here; computing and checking responses is the
//! registrar's business.

use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: DigestAlgorithm,
    /// The nonce was valid once but has expired: retry with the new one without
    /// asking the user again (RFC 7616 §3.3).
    pub stale: bool,
}

impl fmt::Display for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            self.realm, self.nonce, self.algorithm
        )?;
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
            stale: true,
        };
        assert_eq!(
            c.to_string(),
            r#"Digest realm="vigil.local", nonce="n1", algorithm=SHA-256, qop="auth", stale=true"#
        );
    }
}
