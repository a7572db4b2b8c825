//! What a gateway's address says before any lookup: an IP address, a host
//! name with a port, a host name alone, or a domain to be looked up by SRV.
//! RFC 3263 §4.2 decides which records each one asks for.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::sip::Protocol;

/// The port a name without one is reached on when it has no SRV records
/// (RFC 3263 §4.2, RFC 3261 §19.1.2); TLS uses [`DEFAULT_SIPS_PORT`].
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// The same for TLS (`sips:`, `transport: tls`).
pub const DEFAULT_SIPS_PORT: u16 = 5061;

/// The default port of a gateway reached over `transport`.
pub fn default_port(transport: Protocol) -> u16 {
    match transport {
        Protocol::Tls => DEFAULT_SIPS_PORT,
        Protocol::Udp | Protocol::Tcp => DEFAULT_SIP_PORT,
    }
}

/// The longest name DNS carries (RFC 1035 §2.3.4, without the final dot).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A name kept resolved for a gateway, and how (RFC 3263 §4.2). Host names
/// are kept lower-case, without a final dot: two spellings of one name are
/// one entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GatewayName {
    /// `host:port`: A and AAAA only, since an explicit port rules SRV out.
    HostPort { host: Box<str>, port: u16 },
    /// `host`: the SRV records of its transport first (`_sip._udp`,
    /// `_sip._tcp`, `_sips._tcp`); without any, A and AAAA on the
    /// transport's default port (5060, or 5061 for TLS).
    Host { host: Box<str>, transport: Protocol },
}

impl GatewayName {
    /// The host or domain name, as it is looked up.
    pub fn host(&self) -> &str {
        match self {
            GatewayName::HostPort { host, .. } | GatewayName::Host { host, .. } => host,
        }
    }

    /// The SRV owner name asked for, if this name is looked up by SRV: the
    /// service and protocol labels RFC 3263 §4.2 gives the transport.
    pub fn srv_query(&self) -> Option<String> {
        match self {
            GatewayName::HostPort { .. } => None,
            GatewayName::Host { host, transport } => Some(match transport {
                Protocol::Udp => format!("_sip._udp.{host}"),
                Protocol::Tcp => format!("_sip._tcp.{host}"),
                Protocol::Tls => format!("_sips._tcp.{host}"),
            }),
        }
    }

    /// The port its A/AAAA addresses are reached on when it has no SRV
    /// records.
    pub fn fallback_port(&self) -> u16 {
        match self {
            GatewayName::HostPort { port, .. } => *port,
            GatewayName::Host { transport, .. } => default_port(*transport),
        }
    }
}

impl fmt::Display for GatewayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayName::HostPort { host, port } => write!(f, "{host}:{port}"),
            GatewayName::Host {
                host,
                transport: Protocol::Udp,
            } => write!(f, "{host}"),
            GatewayName::Host { host, transport } => {
                write!(f, "{host} ({})", transport.via_token())
            }
        }
    }
}

/// A gateway's address as the config writes it: one that needs no DNS, or a
/// name to keep resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Gateway {
    Addr(SocketAddr),
    Name(GatewayName),
}

/// Why a gateway's address cannot be used; each message says what is
/// expected instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not an IP address, host:port, host name, or sip:/sips: URI of one")]
    Malformed(String),
    #[error("{0:?} has port 0")]
    PortZero(String),
    #[error("{0:?} is not a valid DNS name (letters, digits, `-` and `.`; labels of 1 to 63)")]
    BadName(String),
    #[error(
        "{0:?}: a gateway URI names a host, not a user (write sip:host:port), and takes no parameter but `transport`"
    )]
    UriExtras(String),
    #[error("{0:?}: transport {1:?} is not udp, tcp or tls")]
    UnknownTransport(String, String),
    #[error("{0:?}: sips: is SIP over TLS and cannot be sent over UDP")]
    SipsOverUdp(String),
    #[error("{text:?} asks for {uri} but the trunk's transport is {trunk}")]
    TransportConflict {
        text: String,
        uri: &'static str,
        trunk: &'static str,
    },
}

impl Gateway {
    /// Reads a gateway's `to`: `ip`, `ip:port`, `[v6]:port`, `host`,
    /// `host:port`, or any of them as a SIP URI (`sip:gw.example;transport=tcp`,
    /// `sips:gw.example`), and says which transport reaches it
    /// ([`transport_of`]). An address
    /// without a port gets the transport's default (5060, 5061 for TLS); a
    /// host without one is looked up by SRV first (RFC 3263 §4.2).
    pub fn parse(
        text: &str,
        trunk_transport: Option<Protocol>,
    ) -> Result<(Gateway, Protocol), NameError> {
        let text = text.trim();
        let (hostport, transport) = transport_of(text, trunk_transport)?;
        Ok((parse_hostport(text, hostport, transport)?, transport))
    }
}

/// The `host[:port]` of a peer's address as written (plain, or a `sip:` or
/// `sips:` URI) and the transport that reaches it: the URI's, else
/// `trunk_transport`, else UDP; a URI that contradicts the trunk's
/// `transport:` is refused rather than one silently winning.
pub fn transport_of(
    text: &str,
    trunk_transport: Option<Protocol>,
) -> Result<(&str, Protocol), NameError> {
    let text = text.trim();
    let (hostport, uri_transport) = strip_uri(text)?;
    match (uri_transport, trunk_transport) {
        (Some(uri), Some(trunk)) if uri != trunk => Err(NameError::TransportConflict {
            text: text.into(),
            uri: uri.via_token(),
            trunk: trunk.via_token(),
        }),
        (uri, trunk) => Ok((hostport, uri.or(trunk).unwrap_or_default())),
    }
}

/// `text` without its `sip:`/`sips:` scheme and `;transport=` parameter, and
/// the transport they ask for; a text that is not a URI is returned as is.
fn strip_uri(text: &str) -> Result<(&str, Option<Protocol>), NameError> {
    let scheme_end = text.find(':').unwrap_or(0);
    let scheme = &text[..scheme_end];
    let secure = if scheme.eq_ignore_ascii_case("sips") {
        true
    } else if scheme.eq_ignore_ascii_case("sip") {
        false
    } else {
        return Ok((text, None));
    };
    let rest = &text[scheme_end + 1..];
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    if hostport.contains('@') || hostport.contains('?') {
        return Err(NameError::UriExtras(text.into()));
    }
    let mut named = None;
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if !name.trim().eq_ignore_ascii_case("transport") {
            return Err(NameError::UriExtras(text.into()));
        }
        let value = value.trim();
        named = Some(
            Protocol::from_token(value)
                .ok_or_else(|| NameError::UnknownTransport(text.into(), value.into()))?,
        );
    }
    // RFC 5630 §3.1.3: `sips:` means TLS; `;transport=tcp` under it is the
    // TCP that TLS runs on, not plain TCP.
    let transport = match (secure, named) {
        (true, Some(Protocol::Udp)) => return Err(NameError::SipsOverUdp(text.into())),
        (true, _) => Some(Protocol::Tls),
        (false, named) => named,
    };
    Ok((hostport, transport))
}

/// `ip`, `ip:port`, `[v6]:port`, `host` or `host:port` (`text` is what the
/// config wrote, for errors).
fn parse_hostport(text: &str, hostport: &str, transport: Protocol) -> Result<Gateway, NameError> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(NameError::PortZero(text.into())),
            _ => Ok(Gateway::Addr(addr)),
        };
    }
    let bare = hostport
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(hostport);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Gateway::Addr(SocketAddr::new(ip, default_port(transport))));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| NameError::Malformed(text.into()))?;
            if port == 0 {
                return Err(NameError::PortZero(text.into()));
            }
            (host, Some(port))
        }
        None => (hostport, None),
    };
    let host = dns_name(host).ok_or_else(|| NameError::BadName(text.into()))?;
    Ok(Gateway::Name(match port {
        Some(port) => GatewayName::HostPort { host, port },
        None => GatewayName::Host { host, transport },
    }))
}

/// `text` as a DNS host name (lower-case, no final dot), if it is one.
fn dns_name(text: &str) -> Option<Box<str>> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            (1..=MAX_LABEL).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| name.to_ascii_lowercase().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Gateway, Protocol), NameError> {
        Gateway::parse(text, None)
    }

    fn name(text: &str) -> GatewayName {
        match parse(text) {
            Ok((Gateway::Name(n), _)) => n,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn rfc3263_decides_by_the_port() {
        assert_eq!(
            name("GW1.Carrier.test.:5071"),
            GatewayName::HostPort {
                host: "gw1.carrier.test".into(),
                port: 5071
            }
        );
        let host = name("carrier.test");
        assert_eq!(
            host,
            GatewayName::Host {
                host: "carrier.test".into(),
                transport: Protocol::Udp
            }
        );
        assert_eq!(host.srv_query().as_deref(), Some("_sip._udp.carrier.test"));
        assert_eq!(host.fallback_port(), 5060);
        assert_eq!(name("gw:5060").srv_query(), None);
    }

    #[test]
    fn the_transport_picks_the_srv_records_and_the_default_port() {
        let cases = [
            (
                "sip:carrier.test;transport=tcp",
                "_sip._tcp.carrier.test",
                5060,
            ),
            (
                "sip:carrier.test;transport=TLS",
                "_sips._tcp.carrier.test",
                5061,
            ),
            ("sips:carrier.test", "_sips._tcp.carrier.test", 5061),
            (
                "SIPS:carrier.test;transport=tcp",
                "_sips._tcp.carrier.test",
                5061,
            ),
            ("sip:carrier.test", "_sip._udp.carrier.test", 5060),
        ];
        for (text, query, port) in cases {
            let n = name(text);
            assert_eq!(n.srv_query().as_deref(), Some(query), "{text}");
            assert_eq!(n.fallback_port(), port, "{text}");
        }
        // The trunk's transport applies to a plain name.
        let (gw, transport) = Gateway::parse("carrier.test", Some(Protocol::Tcp)).unwrap();
        assert_eq!(transport, Protocol::Tcp);
        let Gateway::Name(n) = gw else { panic!() };
        assert_eq!(n.srv_query().as_deref(), Some("_sip._tcp.carrier.test"));
    }

    #[test]
    fn addresses_need_no_dns() {
        let addr = |text: &str| match parse(text) {
            Ok((Gateway::Addr(addr), transport)) => (addr, transport),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            addr("127.0.0.1:5080"),
            ("127.0.0.1:5080".parse().unwrap(), Protocol::Udp)
        );
        assert_eq!(addr("[::1]").0, "[::1]:5060".parse().unwrap());
        assert_eq!(addr("127.0.0.2").0, "127.0.0.2:5060".parse().unwrap());
        assert_eq!(
            addr("sips:127.0.0.2"),
            ("127.0.0.2:5061".parse().unwrap(), Protocol::Tls)
        );
        assert_eq!(
            addr("sip:[::1]:5070;transport=tcp"),
            ("[::1]:5070".parse().unwrap(), Protocol::Tcp)
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        let cases = [
            ("carrier.test:0", "port 0"),
            ("carrier.test:sip", "not an IP address"),
            ("bad name.test", "not a valid DNS name"),
            ("-gw.test", "not a valid DNS name"),
            ("", "not a valid DNS name"),
            ("sip:alice@carrier.test", "names a host, not a user"),
            ("sip:carrier.test;lr", "no parameter but `transport`"),
            (
                "sip:carrier.test;transport=sctp",
                "\"sctp\" is not udp, tcp or tls",
            ),
            ("sips:carrier.test;transport=udp", "cannot be sent over UDP"),
        ];
        for (text, says) in cases {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        let conflict = Gateway::parse("sips:carrier.test", Some(Protocol::Tcp))
            .expect_err("conflict")
            .to_string();
        assert!(
            conflict.contains("asks for TLS but the trunk's transport is TCP"),
            "{conflict}"
        );
        assert!(
            Gateway::parse("sips:carrier.test", Some(Protocol::Tls)).is_ok(),
            "agreeing is fine"
        );
    }
}
