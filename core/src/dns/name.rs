//! What a gateway's address says before any lookup: an IP address, a host
//! name with a port, a host name alone, or a domain to be looked up by SRV.
//! RFC 3263 §4.2 decides which records each one asks for.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The port a name without one is reached on when it has no SRV records
/// (RFC 3263 §4.2, RFC 3261 §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;

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
    /// `host`: SRV `_sip._udp.host` first; without SRV records, A and AAAA
    /// on port 5060.
    Host(Box<str>),
    /// An SRV domain (the config's flag): SRV `_sip._udp.domain` only, since
    /// the operator said the carrier publishes them; no records is a failure.
    Srv(Box<str>),
}

impl GatewayName {
    /// The host or domain name, as it is looked up.
    pub fn host(&self) -> &str {
        match self {
            GatewayName::HostPort { host, .. }
            | GatewayName::Host(host)
            | GatewayName::Srv(host) => host,
        }
    }

    /// The SRV owner name asked for, if this name is looked up by SRV. Only
    /// UDP for now: Vigil's SIP transport is UDP.
    pub fn srv_query(&self) -> Option<String> {
        match self {
            GatewayName::HostPort { .. } => None,
            GatewayName::Host(host) | GatewayName::Srv(host) => Some(format!("_sip._udp.{host}")),
        }
    }
}

impl fmt::Display for GatewayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayName::HostPort { host, port } => write!(f, "{host}:{port}"),
            GatewayName::Host(host) => write!(f, "{host}"),
            GatewayName::Srv(host) => write!(f, "SRV {host}"),
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
    #[error("{0:?} is not an IP address, host:port or host name")]
    Malformed(String),
    #[error("{0:?} has port 0")]
    PortZero(String),
    #[error("{0:?} is an IP address: SRV needs a domain name")]
    SrvOnAddress(String),
    #[error("{0:?} has a port: SRV records give the port (RFC 3263 §4.2)")]
    SrvWithPort(String),
    #[error("{0:?} is not a valid DNS name (letters, digits, `-` and `.`; labels of 1 to 63)")]
    BadName(String),
}

impl Gateway {
    /// Reads `ip`, `ip:port`, `[v6]:port`, `host`, `host:port`; with `srv`,
    /// the text must be a bare domain. An IP address without a port gets 5060.
    pub fn parse(text: &str, srv: bool) -> Result<Gateway, NameError> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return match (srv, addr.port()) {
                (true, _) => Err(NameError::SrvOnAddress(text.into())),
                (false, 0) => Err(NameError::PortZero(text.into())),
                (false, _) => Ok(Gateway::Addr(addr)),
            };
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if srv {
                Err(NameError::SrvOnAddress(text.into()))
            } else {
                Ok(Gateway::Addr(SocketAddr::new(ip, DEFAULT_SIP_PORT)))
            };
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| NameError::Malformed(text.into()))?;
                if port == 0 {
                    return Err(NameError::PortZero(text.into()));
                }
                (host, Some(port))
            }
            None => (text, None),
        };
        let host = dns_name(host).ok_or_else(|| NameError::BadName(text.into()))?;
        Ok(Gateway::Name(match (srv, port) {
            (true, Some(_)) => return Err(NameError::SrvWithPort(text.into())),
            (true, None) => GatewayName::Srv(host),
            (false, Some(port)) => GatewayName::HostPort { host, port },
            (false, None) => GatewayName::Host(host),
        }))
    }
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

    fn name(text: &str, srv: bool) -> GatewayName {
        match Gateway::parse(text, srv) {
            Ok(Gateway::Name(n)) => n,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn rfc3263_decides_by_the_port() {
        assert_eq!(
            name("GW1.Carrier.test.:5071", false),
            GatewayName::HostPort {
                host: "gw1.carrier.test".into(),
                port: 5071
            }
        );
        let host = name("carrier.test", false);
        assert_eq!(host, GatewayName::Host("carrier.test".into()));
        assert_eq!(host.srv_query().as_deref(), Some("_sip._udp.carrier.test"));
        assert_eq!(
            name("carrier.test", true),
            GatewayName::Srv("carrier.test".into())
        );
        assert_eq!(name("gw:5060", false).srv_query(), None);
    }

    #[test]
    fn addresses_need_no_dns() {
        let v4 = Gateway::parse("127.0.0.1:5080", false);
        assert_eq!(v4, Ok(Gateway::Addr("127.0.0.1:5080".parse().unwrap())));
        let v6 = Gateway::parse("[::1]", false);
        assert_eq!(v6, Ok(Gateway::Addr("[::1]:5060".parse().unwrap())));
        let bare = Gateway::parse("127.0.0.2", false);
        assert_eq!(bare, Ok(Gateway::Addr("127.0.0.2:5060".parse().unwrap())));
    }

    #[test]
    fn bad_addresses_say_why() {
        let cases = [
            ("127.0.0.1:5060", true, "SRV needs a domain"),
            ("carrier.test:5060", true, "SRV records give the port"),
            ("carrier.test:0", false, "port 0"),
            ("carrier.test:sip", false, "not an IP address"),
            ("bad name.test", false, "not a valid DNS name"),
            ("-gw.test", false, "not a valid DNS name"),
            ("", false, "not a valid DNS name"),
        ];
        for (text, srv, says) in cases {
            let error = Gateway::parse(text, srv).expect_err(text).to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
