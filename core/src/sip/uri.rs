//! SIP and SIPS URIs (RFC 3261 §19.1, ABNF in §25.1), kept as written.
//!
//! ```text
//! SIP-URI  = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
//! userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
//! hostport = host [ ":" port ]
//! host     = hostname / IPv4address / IPv6reference
//! ```
//!
//! A B2BUA relays numbers it does not own: a carrier's `sip:+4930123;npdi;rn=+4930999@gw`
//! must reach the next hop byte for byte. So every part keeps its original (escaped)
//! text and prints back unchanged; decoding happens only where Vigil compares.
//! Other schemes (`tel:`, or anything in `absoluteURI`) are kept opaque.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::text::{Param, find_param, percent_decode, write_params};

/// A URI as found in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// Any other `absoluteURI` (`tel:`, `urn:`, …): scheme and the rest, verbatim.
    Other {
        scheme: String,
        rest: String,
    },
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part, still escaped, e.g. `+4930123;npdi`.
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// The `?h=v&...` part without the `?`, escaped.
    pub headers: Option<String>,
}

/// `host = hostname / IPv4address / IPv6reference`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| UriError::BadHost(s.to_string()))?;
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| UriError::BadHost(s.to_string()))?;
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        if let Ok(ip) = s.parse::<std::net::Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; labels are alphanum and "-".
        let valid = !s.is_empty()
            && s.split('.').enumerate().all(|(i, label)| {
                // Only the final label may be empty (a trailing dot).
                (label.is_empty() && i > 0 && s.ends_with('.'))
                    || (!label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-'))
            });
        if !valid {
            return Err(UriError::BadHost(s.to_string()));
        }
        Ok(Host::Domain(s.to_string()))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Domain(_) => None,
        }
    }

    /// Case-insensitive comparison (RFC 3261 §19.1.4).
    pub fn matches(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing URI scheme")]
    NoScheme,
    #[error("invalid host {0:?}")]
    BadHost(String),
    #[error("invalid port {0:?}")]
    BadPort(String),
    #[error("invalid character in user part {0:?}")]
    BadUser(String),
    #[error("invalid URI parameter {0:?}")]
    BadParam(String),
    #[error("invalid URI headers {0:?}")]
    BadHeaders(String),
    #[error("whitespace or angle bracket inside URI")]
    Whitespace,
}

/// `unreserved = alphanum / mark`, `mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"`
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

/// Checks that `s` consists of unreserved characters, `%HH` escapes and `extra`.
fn escaped_chars_ok(s: &str, extra: &[char]) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '%' {
            let hex_ok = |j: usize| bytes.get(j).is_some_and(|b| b.is_ascii_hexdigit());
            if !(hex_ok(i + 1) && hex_ok(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(bytes[i].is_ascii() && (is_unreserved(c) || extra.contains(&c))) {
            return false;
        }
        i += 1;
    }
    true
}

/// `s` as a SIP URI's user part: what the grammar does not allow there is
/// `%HH`-escaped (an `@`, a `:`, a `%`), so any text can become a user.
pub fn escape_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let c = b as char;
        if b.is_ascii() && (is_unreserved(c) || USER_EXTRA.contains(&c)) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `s` can be a SIP URI's user part as it stands, without escapes:
/// unreserved and `user-unreserved` characters only (RFC 3261 §25.1). What a
/// policy may set as a number: text that needs escaping is no number.
pub fn is_plain_user(s: &str) -> bool {
    !s.is_empty() && !s.contains('%') && escaped_chars_ok(s, USER_EXTRA)
}

/// `user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"`
const USER_EXTRA: &[char] = &['&', '=', '+', '$', ',', ';', '?', '/'];
/// Characters a password may carry besides unreserved and escaped.
const PASSWORD_EXTRA: &[char] = &['&', '=', '+', '$', ','];
/// `param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"`
const PARAM_EXTRA: &[char] = &['[', ']', '/', ':', '&', '+', '$'];
/// `hnv-unreserved` plus the `=` and `&` that structure `headers`.
const HEADERS_EXTRA: &[char] = &['[', ']', '/', '?', ':', '+', '$', '=', '&'];

impl Uri {
    /// Parses a URI. `sip:`/`sips:` are parsed fully; any other syntactically valid
    /// scheme is kept opaque (the caller decides whether it is supported: 416).
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
            return Err(UriError::Whitespace);
        }
        let colon = s.find(':').ok_or(UriError::NoScheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(UriError::NoScheme);
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_after_scheme(scheme.eq_ignore_ascii_case("sips"), rest).map(Uri::Sip)
        } else {
            if rest.is_empty() {
                return Err(UriError::NoScheme);
            }
            Ok(Uri::Other {
                scheme: scheme.to_string(),
                rest: rest.to_string(),
            })
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }

    /// The scheme in lower case.
    pub fn scheme(&self) -> String {
        match self {
            Uri::Sip(u) if u.secure => "sips".into(),
            Uri::Sip(_) => "sip".into(),
            Uri::Other { scheme, .. } => scheme.to_ascii_lowercase(),
        }
    }

    /// The dialled number or user this URI names: the SIP user part up to its first
    /// `;` (telephone-subscriber parameters such as `;npdi` are not part of the
    /// number), percent-decoded; for `tel:` the global or local number.
    pub fn user_part(&self) -> Option<String> {
        match self {
            Uri::Sip(u) => u
                .user
                .as_deref()
                .map(|user| percent_decode(user.split(';').next().unwrap_or(user))),
            Uri::Other { scheme, rest } if scheme.eq_ignore_ascii_case("tel") => {
                Some(percent_decode(rest.split(';').next().unwrap_or(rest)))
            }
            Uri::Other { .. } => None,
        }
    }
}

impl SipUri {
    /// A plain `sip:[user@]host[:port]` URI.
    pub fn new(user: Option<String>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            secure: false,
            user,
            password: None,
            host,
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    /// A URI naming a socket address, e.g. a Contact for Vigil's own listener.
    pub fn for_socket(user: Option<String>, addr: SocketAddr) -> SipUri {
        SipUri::new(user, Host::Ip(addr.ip()), Some(addr.port()))
    }

    /// [`SipUri::for_socket`] reached over `proto`: `;transport=tcp` (or
    /// `tls`) so that the peer's requests come back over the same transport.
    pub fn for_socket_over(
        user: Option<String>,
        addr: SocketAddr,
        proto: super::typed::Protocol,
    ) -> SipUri {
        let mut uri = SipUri::for_socket(user, addr);
        if let Some(transport) = proto.uri_param() {
            uri.params
                .push(Param::new("transport", Some(transport.to_string())));
        }
        uri
    }

    fn parse_after_scheme(secure: bool, rest: &str) -> Result<SipUri, UriError> {
        // '@' cannot appear unescaped after the userinfo, so the first one ends it.
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.find(':') {
                    Some(c) => (&info[..c], Some(&info[c + 1..])),
                    None => (info, None),
                };
                if user.is_empty() || !escaped_chars_ok(user, USER_EXTRA) {
                    return Err(UriError::BadUser(user.to_string()));
                }
                if let Some(pw) = password
                    && !escaped_chars_ok(pw, PASSWORD_EXTRA)
                {
                    return Err(UriError::BadUser(info.to_string()));
                }
                (Some(user.to_string()), password.map(str::to_string))
            }
        };
        let (before_headers, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        if let Some(h) = headers
            && (h.is_empty() || !escaped_chars_ok(h, HEADERS_EXTRA))
        {
            return Err(UriError::BadHeaders(h.to_string()));
        }
        let (hostport, params_text) = match before_headers.find(';') {
            Some(semi) => (&before_headers[..semi], &before_headers[semi..]),
            None => (before_headers, ""),
        };
        let (host_text, port) = split_host_port(hostport)?;
        let host = Host::parse(host_text)?;
        let params = parse_uri_params(params_text)?;
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers: headers.map(str::to_string),
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// `host:port` with the default port filled in (5060, or 5061 for sips).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.secure { 5061 } else { 5060 })
    }

    /// The socket address this URI names when its host is an IP literal; `maddr`
    /// overrides the host (RFC 3261 §19.1.1).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.param("maddr").and_then(|p| p.value.as_deref()) {
            Some(maddr) => Host::parse(maddr).ok()?.ip()?,
            None => self.host.ip()?,
        };
        Some(SocketAddr::new(ip, self.port_or_default()))
    }
}

/// Splits `host [":" port]`, minding the colons of an IPv6 reference.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let port_sep = if s.starts_with('[') {
        s.find(']').map(|end| end + 1).filter(|&i| i < s.len())
    } else {
        s.rfind(':')
    };
    match port_sep {
        None => Ok((s, None)),
        Some(i) => {
            if s.as_bytes().get(i) != Some(&b':') {
                return Err(UriError::BadHost(s.to_string()));
            }
            let port_text = &s[i + 1..];
            let port = port_text
                .parse::<u16>()
                .ok()
                .filter(|_| port_text.chars().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| UriError::BadPort(port_text.to_string()))?;
            Ok((&s[..i], Some(port)))
        }
    }
}

/// `uri-parameters = *( ";" uri-parameter )`, each `pname [ "=" pvalue ]` made of
/// `paramchar`s. No whitespace is allowed inside a URI.
fn parse_uri_params(s: &str) -> Result<Vec<Param>, UriError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s[1..]
        .split(';')
        .map(|p| {
            let (name, value) = match p.find('=') {
                Some(eq) => (&p[..eq], Some(&p[eq + 1..])),
                None => (p, None),
            };
            let ok = !name.is_empty()
                && escaped_chars_ok(name, PARAM_EXTRA)
                && value.is_none_or(|v| !v.is_empty() && escaped_chars_ok(v, PARAM_EXTRA));
            if ok {
                Ok(Param::new(name, value.map(str::to_string)))
            } else {
                Err(UriError::BadParam(p.to_string()))
            }
        })
        .collect()
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(48);
        out.push_str(if self.secure { "sips:" } else { "sip:" });
        if let Some(user) = &self.user {
            out.push_str(user);
            if let Some(pw) = &self.password {
                out.push(':');
                out.push_str(pw);
            }
            out.push('@');
        }
        out.push_str(&self.host.to_string());
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        write_params(&mut out, &self.params);
        if let Some(h) = &self.headers {
            out.push('?');
            out.push_str(h);
        }
        f.write_str(&out)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn carrier_numbers_round_trip_byte_for_byte() {
        for s in [
            "sip:+4930123;npdi;rn=+4930999@gw.example.net;user=phone",
            "sip:sips%3Auser%40example.com@example.net",
            "sip:user;par=u%40example.net@example.com",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            "sip:[2001:db8::10]:5070;transport=udp",
            "sips:alice@example.com:5061;lr",
            "sip:vivekg@chair-dnrc.example.com;unknownparam",
            "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
        ] {
            assert_eq!(sip(s).to_string(), s);
        }
    }

    #[test]
    fn parts_are_found() {
        let u = sip("sip:+4930123;npdi@192.0.2.7:5080;transport=udp");
        assert_eq!(u.user.as_deref(), Some("+4930123;npdi"));
        assert_eq!(u.host, Host::Ip("192.0.2.7".parse().expect("ip")));
        assert_eq!(u.port, Some(5080));
        assert_eq!(Uri::Sip(u.clone()).user_part().as_deref(), Some("+4930123"));
        assert_eq!(
            u.socket_addr(),
            Some("192.0.2.7:5080".parse().expect("addr"))
        );
        let v6 = sip("sip:[::1]");
        assert_eq!(v6.socket_addr(), Some("[::1]:5060".parse().expect("addr")));
        assert_eq!(
            Uri::parse("sip:%75se%72@example.com")
                .expect("ok")
                .user_part()
                .as_deref(),
            Some("user")
        );
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").expect("ok");
        assert_eq!(u.scheme(), "nobodyknowsthisscheme");
        assert_eq!(u.to_string(), "nobodyKnowsThisScheme:totallyopaquecontent");
        assert_eq!(
            Uri::parse("tel:+1-201-555-0123;phone-context=x")
                .expect("ok")
                .user_part()
                .as_deref(),
            Some("+1-201-555-0123")
        );
    }

    #[test]
    fn invalid_uris_are_rejected() {
        for s in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:a@b:99999",
            "sip:a@b:x",
            "sip:a b@c",
            "sip:@example.com",
            "sip:user@exa_mple.com",
            "sip:[::1",
            "sip:u@h;=x",
            "1sip:x",
            "nocolon",
        ] {
            assert!(Uri::parse(s).is_err(), "{s} should be rejected");
        }
    }
}
