//! Typed header values: each type quotes its ABNF and parses it strictly, because a
//! value from the network is untrusted until it has been through one of these.

use std::fmt;

use super::text::{
    Param, find_param, is_token, is_token_char, is_wsp, parse_params, quoted_string_len, trim_lws,
    write_params,
};
use super::uri::{Host, Uri, UriError};

/// A typed header value failed to parse; the message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    pub(super) fn new(msg: impl Into<String>) -> Self {
        ValueError(msg.into())
    }
}

impl From<UriError> for ValueError {
    fn from(e: UriError) -> Self {
        ValueError(e.to_string())
    }
}

impl From<super::text::LexError> for ValueError {
    fn from(e: super::text::LexError) -> Self {
        ValueError(e.to_string())
    }
}

/// A request method. `Method = INVITEm / ACKm / … / extension-method`; methods are
/// case-sensitive (RFC 3261 §7.1), so `invite` is an extension method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Update,
    Info,
    Message,
    Notify,
    Subscribe,
    Refer,
    Prack,
    Publish,
    Extension(Box<str>),
}

impl Method {
    /// Parses a `Method` token; `None` if it is not a token at all.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "REFER" => Method::Refer,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Extension(other.into()),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Refer => "REFER",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Extension(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CSeq = "CSeq" HCOLON 1*DIGIT LWS Method`; the number must be below 2**31
/// (RFC 3261 §8.1.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, ValueError> {
        let s = trim_lws(s);
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, rest) = s.split_at(digits);
        if num.is_empty() {
            return Err(ValueError::new("CSeq must start with a sequence number"));
        }
        let seq = parse_bounded(num, u64::from(i32::MAX as u32))
            .ok_or_else(|| ValueError::new(format!("CSeq number {num} is not below 2^31")))?;
        if !rest.starts_with(is_wsp) {
            return Err(ValueError::new("CSeq needs whitespace before the method"));
        }
        let method = Method::parse(trim_lws(rest))
            .ok_or_else(|| ValueError::new(format!("invalid CSeq method {:?}", trim_lws(rest))))?;
        Ok(CSeq {
            seq: seq as u32,
            method,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Parses `1*DIGIT` no larger than `max`; leading zeros are allowed.
pub fn parse_bounded(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = s.trim_start_matches('0');
    if significant.len() > 19 {
        return None;
    }
    let n: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    (n <= max).then_some(n)
}

/// `delta-seconds = 1*DIGIT`. RFC 3261 §20.19 asks that an overlarge value be read
/// as 2**32-1 rather than rejected, so it saturates.
pub fn parse_delta_seconds(s: &str) -> Result<u32, ValueError> {
    let s = trim_lws(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new(format!("invalid delta-seconds {s:?}")));
    }
    Ok(parse_bounded(s, u64::from(u32::MAX)).map_or(u32::MAX, |n| n as u32))
}

/// `Max-Forwards = "Max-Forwards" HCOLON 1*DIGIT`, an integer in 0-255 (§20.22).
pub fn parse_max_forwards(s: &str) -> Result<u8, ValueError> {
    parse_bounded(trim_lws(s), 255)
        .map(|n| n as u8)
        .ok_or_else(|| ValueError::new(format!("Max-Forwards {s:?} is not in 0-255")))
}

/// One Via header value (RFC 3261 §20.42):
///
/// ```text
/// via-parm      = sent-protocol LWS sent-by *( SEMI via-params )
/// sent-protocol = protocol-name SLASH protocol-version SLASH transport
/// sent-by       = host [ COLON port ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token in upper case (`UDP`, `TCP`, …).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// The transport a SIP message travels on (RFC 3261 §18): what a Via's
/// sent-protocol and a URI's `transport` parameter name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Protocol {
    /// The token in a Via's sent-protocol (`SIP/2.0/TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
        }
    }

    /// Over a reliable transport nothing is retransmitted (RFC 3261 §17.1.1.2,
    /// §17.1.2.2) and a message may be larger than a datagram.
    pub fn is_reliable(self) -> bool {
        self != Protocol::Udp
    }

    /// The `transport` URI parameter that asks a peer to use it (none for UDP,
    /// the default).
    pub fn uri_param(self) -> Option<&'static str> {
        match self {
            Protocol::Udp => None,
            Protocol::Tcp => Some("tcp"),
            Protocol::Tls => Some("tls"),
        }
    }

    /// The protocol a Via's token names, if Vigil speaks it.
    pub fn from_token(token: &str) -> Option<Protocol> {
        [Protocol::Udp, Protocol::Tcp, Protocol::Tls]
            .into_iter()
            .find(|p| p.via_token().eq_ignore_ascii_case(token))
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.uri_param().unwrap_or("udp"))
    }
}

/// The RFC 3261 branch prefix that promises a globally unique branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// The Via of a request Vigil originates over UDP from the address it
    /// advertises (`sent-by`), with a branch of its own and `rport`
    /// (RFC 3581) so the answer comes back through any NAT.
    pub fn ours(sent_by: std::net::SocketAddr, branch: String) -> Via {
        Via::ours_over(Protocol::Udp, sent_by, branch)
    }

    /// [`Via::ours`] over `protocol`.
    pub fn ours_over(protocol: Protocol, sent_by: std::net::SocketAddr, branch: String) -> Via {
        Via {
            transport: protocol.via_token().into(),
            host: Host::Ip(sent_by.ip()),
            port: Some(sent_by.port()),
            params: vec![
                Param::new("branch", Some(branch)),
                Param::new("rport", None),
            ],
        }
    }

    pub fn parse(s: &str) -> Result<Via, ValueError> {
        let mut parts = s.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ValueError::new("Via needs SIP/2.0/transport"));
        };
        if !trim_lws(name).eq_ignore_ascii_case("SIP") || trim_lws(version) != "2.0" {
            return Err(ValueError::new(format!(
                "unsupported Via protocol {}/{}",
                trim_lws(name),
                trim_lws(version)
            )));
        }
        let rest = trim_lws(rest);
        let transport_len = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let transport = &rest[..transport_len];
        let after_transport = &rest[transport_len..];
        if transport.is_empty() || !after_transport.starts_with(is_wsp) {
            return Err(ValueError::new("Via needs a transport and a sent-by"));
        }
        let after_transport = trim_lws(after_transport);
        let sent_by_end = after_transport.find(';').unwrap_or(after_transport.len());
        let sent_by = trim_lws(&after_transport[..sent_by_end]);
        let (host, port) = split_sent_by(sent_by)?;
        let params = parse_params(&after_transport[sent_by_end..])?;
        for p in &params {
            match (p.name.to_ascii_lowercase().as_str(), p.value.as_deref()) {
                ("branch", None) => return Err(ValueError::new("Via branch without a value")),
                // `via-received = "received" EQUAL (IPv4address / IPv6address)`: a
                // bare IPv6 address, as `stamp_received` writes it; the bracketed
                // form is common in the wild too (RFC 5118 §4.5).
                ("received", Some(v))
                    if v.parse::<std::net::IpAddr>().is_err()
                        && Host::parse(v).ok().and_then(|h| h.ip()).is_none() =>
                {
                    return Err(ValueError::new(format!("Via received={v:?} is not an IP")));
                }
                ("rport", Some(v)) if v.parse::<u16>().is_err() => {
                    return Err(ValueError::new(format!("Via rport={v:?} is not a port")));
                }
                _ => {}
            }
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").and_then(|p| p.value.as_deref())
    }

    /// True if the branch carries RFC 3261's magic cookie (and something after it), so
    /// transactions can be matched on it alone (§17.2.3).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    pub fn has_rport(&self) -> bool {
        find_param(&self.params, "rport").is_some()
    }

    /// `sent-by` as `host:port` text, the part of a transaction key (§17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Records where a request really came from (RFC 3261 §18.2.1, RFC 3581 §4):
    /// `received` when the address differs from sent-by, and the source port in a
    /// valueless `rport`.
    pub fn stamp_received(&mut self, source: std::net::SocketAddr) {
        let differs = self.host.ip() != Some(source.ip());
        if differs || self.has_rport() {
            self.set_param("received", Some(source.ip().to_string()));
        }
        if self.has_rport() {
            self.set_param("rport", Some(source.port().to_string()));
        }
    }

    fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.params.push(Param::new(name, value)),
        }
    }
}

fn split_sent_by(s: &str) -> Result<(Host, Option<u16>), ValueError> {
    let (host_text, port_text) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) if end + 1 == s.len() => (s, None),
            Some(end) => (&s[..=end], Some(&s[end + 1..])),
            None => return Err(ValueError::new(format!("invalid sent-by {s:?}"))),
        }
    } else {
        match s.rfind(':') {
            Some(c) => (&s[..c], Some(&s[c..])),
            None => (s, None),
        }
    };
    let host = Host::parse(trim_lws(host_text))?;
    let port = match port_text {
        None => None,
        Some(p) => {
            let digits = trim_lws(p.strip_prefix(':').unwrap_or(p));
            Some(
                parse_bounded(digits, 65535)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| ValueError::new(format!("invalid port in sent-by {s:?}")))?
                    as u16,
            )
        }
    };
    Ok((host, port))
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("SIP/2.0/{} {}", self.transport, self.sent_by());
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// From, To, Contact, Route and Record-Route values (RFC 3261 §20):
///
/// ```text
/// ( name-addr / addr-spec ) *( SEMI generic-param )
/// name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
/// display-name = *(token LWS) / quoted-string
/// ```
///
/// In the `addr-spec` form, everything after the first `;` is a header parameter,
/// and a URI with `,`, `;` or `?` must use the `<...>` form (§20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written, with its quotes if it had them.
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, ValueError> {
        let s = trim_lws(s);
        let (display, rest) = if s.starts_with('"') {
            let len = quoted_string_len(s)
                .ok_or_else(|| ValueError::new("unterminated quoted display name"))?;
            (Some(s[..len].to_string()), trim_lws(&s[len..]))
        } else if let Some(lt) = s.find('<') {
            let name = trim_lws(&s[..lt]);
            let tokens_ok = name.split(is_wsp).filter(|w| !w.is_empty()).all(is_token);
            if !tokens_ok {
                return Err(ValueError::new(format!(
                    "display name {name:?} must be tokens or a quoted string"
                )));
            }
            ((!name.is_empty()).then(|| name.to_string()), &s[lt..])
        } else {
            (None, s)
        };
        if let Some(inner) = rest.strip_prefix('<') {
            let end = inner
                .find('>')
                .ok_or_else(|| ValueError::new("missing '>' after URI"))?;
            let uri = Uri::parse(&inner[..end])?;
            let params = parse_params(&inner[end + 1..])?;
            Ok(NameAddr {
                display,
                uri,
                params,
            })
        } else if display.is_some() {
            Err(ValueError::new("display name without <URI>"))
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            let uri_text = trim_lws(&rest[..end]);
            if uri_text.contains(['?', ',']) {
                return Err(ValueError::new(
                    "a URI with '?' or ',' must be enclosed in <>",
                ));
            }
            let uri = Uri::parse(uri_text)?;
            let params = parse_params(&rest[end..])?;
            Ok(NameAddr {
                display: None,
                uri,
                params,
            })
        }
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
        self.params.push(Param::new("tag", Some(tag.to_string())));
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(64);
        if let Some(d) = &self.display {
            out.push_str(d);
            out.push(' ');
        }
        out.push('<');
        out.push_str(&self.uri.to_string());
        out.push('>');
        write_params(&mut out, &self.params);
        f.write_str(&out)
    }
}

/// Who refreshes a session (RFC 4028 §4): `refresher-param = "refresher" EQUAL ("uas" / "uac")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// RFC 4028 §4:
///
/// ```text
/// Session-Expires = ("Session-Expires" / "x") HCOLON delta-seconds *(SEMI se-params)
/// se-params       = refresher-param / generic-param
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(s: &str) -> Result<SessionExpires, ValueError> {
        let s = trim_lws(s);
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let delta = parse_delta_seconds(&s[..end])?;
        let params = parse_params(&s[end..])?;
        let refresher = match find_param(&params, "refresher").map(|p| p.value.as_deref()) {
            None => None,
            Some(Some(v)) if v.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(Some(v)) if v.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            Some(other) => {
                return Err(ValueError::new(format!(
                    "refresher must be uac or uas, not {other:?}"
                )));
            }
        };
        Ok(SessionExpires { delta, refresher })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={}", r.as_str())?;
        }
        Ok(())
    }
}

/// RFC 4028 §5: `Min-SE = "Min-SE" HCOLON delta-seconds *(SEMI generic-param)`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinSe(pub u32);

impl MinSe {
    pub fn parse(s: &str) -> Result<MinSe, ValueError> {
        let s = trim_lws(s);
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let delta = parse_delta_seconds(&s[..end])?;
        parse_params(&s[end..])?;
        Ok(MinSe(delta))
    }
}

/// `media-type = m-type SLASH m-subtype *(SEMI m-parameter)` (RFC 3261 §20.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: String,
    pub subtype: String,
}

impl MediaType {
    pub fn parse(s: &str) -> Result<MediaType, ValueError> {
        let s = trim_lws(s);
        let end = s.find(';').unwrap_or(s.len());
        let (kind, subtype) = s[..end]
            .split_once('/')
            .ok_or_else(|| ValueError::new(format!("invalid media type {s:?}")))?;
        let (kind, subtype) = (trim_lws(kind), trim_lws(subtype));
        if !is_token(kind) || !is_token(subtype) {
            return Err(ValueError::new(format!("invalid media type {s:?}")));
        }
        parse_params(&s[end..])?;
        Ok(MediaType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
        })
    }

    /// True if this media range (from an Accept header) admits `kind/subtype`.
    pub fn admits(&self, kind: &str, subtype: &str) -> bool {
        (self.kind == "*" || self.kind == kind) && (self.subtype == "*" || self.subtype == subtype)
    }
}

/// Checks `rfc1123-date = wkday "," SP date1 SP time SP "GMT"` (RFC 3261 §20.17 only
/// allows GMT).
pub fn validate_sip_date(s: &str) -> Result<(), ValueError> {
    let bad = || ValueError::new(format!("Date {s:?} is not an RFC 1123 GMT date"));
    let (wkday, rest) = trim_lws(s).split_once(", ").ok_or_else(bad)?;
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let fields: Vec<&str> = rest.split(' ').collect();
    let digits = |f: &str, n: usize| f.len() == n && f.bytes().all(|b| b.is_ascii_digit());
    let time_ok = |t: &str| {
        let parts: Vec<&str> = t.split(':').collect();
        parts.len() == 3 && parts.iter().all(|p| digits(p, 2))
    };
    let ok = DAYS.contains(&wkday)
        && fields.len() == 5
        && digits(fields[0], 2)
        && MONTHS.contains(&fields[1])
        && digits(fields[2], 4)
        && time_ok(fields[3])
        && fields[4] == "GMT";
    if ok { Ok(()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_torture_whitespace() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").expect("valid");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .expect("valid");
        assert_eq!(v.sent_by(), "spindle.example.com");
        assert!(v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx").expect("v6");
        assert_eq!(v.sent_by(), "[2001:db8::9]:5070");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx"
        );
    }

    #[test]
    fn via_rejects_garbage() {
        for s in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP host",
            "HTTP/2.0/UDP host",
            "SIP/2.0/UDP host:0",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host;received=not-an-ip",
        ] {
            assert!(Via::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn via_stamps_rport_and_received() {
        let mut v = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport").expect("valid");
        v.stamp_received("203.0.113.9:40001".parse().expect("addr"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=40001;received=203.0.113.9"
        );
        let mut same = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa").expect("valid");
        same.stamp_received("10.0.0.1:5060".parse().expect("addr"));
        assert_eq!(
            same.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa"
        );
    }

    /// Regression (found by the `fuzz/` sip_decode target): a Via stamped with
    /// an IPv6 source got `received=2001:db8::7`, which Vigil's own parser then
    /// refused, so its answers to IPv6 peers, and their answers to it, were
    /// malformed to Vigil.
    #[test]
    fn via_received_takes_ipv6_bare_and_bracketed() {
        let mut v =
            Via::parse("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport").expect("valid");
        v.stamp_received("[2001:db8::7]:40000".parse().expect("addr"));
        let text = v.to_string();
        assert!(
            text.ends_with(";rport=40000;received=2001:db8::7"),
            "{text}"
        );
        assert_eq!(Via::parse(&text), Ok(v));
        assert!(Via::parse("SIP/2.0/UDP h;received=[2001:db8::9:255]").is_ok());
        assert!(Via::parse("SIP/2.0/UDP h;received=[2001:db8::9:255").is_err());
        // The fuzzer's input: RFC 4475's mpart01 from an IPv6 source, answered.
        let datagram = include_bytes!("../../../tests/data/rfc4475/mpart01.dat");
        let Ok(crate::sip::Message::Request(request)) = crate::sip::decode(datagram) else {
            panic!("mpart01 is a valid request");
        };
        let mut response = request.response(200);
        response.via[0].stamp_received("[2001:db8::7]:40000".parse().expect("addr"));
        assert!(crate::sip::decode(&response.encode()).is_ok());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>   ;   tag = 98asjd8"#,
        )
        .expect("valid");
        assert_eq!(n.display.as_deref(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
            .expect("valid");
        assert_eq!(n.tag(), Some("1918181833n"));
        assert_eq!(n.display, None);
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").expect("lwsdisp");
        assert_eq!(n.display.as_deref(), Some("caller"));
        assert_eq!(n.to_string(), "caller <sip:caller@example.com>;tag=323");
        let n = NameAddr::parse("token1~` token2'+_ <sip:m@example.com>;tag=_t").expect("tokens");
        assert_eq!(n.tag(), Some("_t"));
    }

    #[test]
    fn name_addr_rejects_torture_cases() {
        for s in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:user@example.com",
        ] {
            assert!(NameAddr::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn cseq_bounds_and_methods() {
        assert_eq!(
            CSeq::parse("0009   INVITE").expect("valid"),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("2147483647 INVITE").is_ok());
        assert!(CSeq::parse("1INVITE").is_err());
        assert_eq!(
            CSeq::parse("1 NEWMETHOD").expect("ext").method,
            Method::Extension("NEWMETHOD".into())
        );
        assert_eq!(
            Method::parse("invite"),
            Some(Method::Extension("invite".into()))
        );
    }

    #[test]
    fn session_timer_headers() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=uac").expect("valid"),
            SessionExpires {
                delta: 1800,
                refresher: Some(Refresher::Uac)
            }
        );
        assert_eq!(
            SessionExpires::parse("90 ; x=1").expect("valid").refresher,
            None
        );
        assert_eq!(
            SessionExpires::parse("99999999999999999999")
                .expect("saturates")
                .delta,
            u32::MAX
        );
        assert!(SessionExpires::parse("abc").is_err());
        assert!(SessionExpires::parse("90;refresher=proxy").is_err());
        assert_eq!(MinSe::parse("90").expect("valid"), MinSe(90));
        assert!(MinSe::parse("-1").is_err());
        assert_eq!(
            SessionExpires {
                delta: 600,
                refresher: Some(Refresher::Uas)
            }
            .to_string(),
            "600;refresher=uas"
        );
    }

    #[test]
    fn dates_must_be_gmt() {
        assert!(validate_sip_date("Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(validate_sip_date("Fri, 01 Jan 2010 16:00:00 EST").is_err());
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse("application/SDP ; charset=x").expect("valid");
        assert!(
            MediaType::parse("*/*")
                .expect("valid")
                .admits(&m.kind, &m.subtype)
        );
        assert!(MediaType::parse("application").is_err());
    }
}
