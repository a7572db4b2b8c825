//! The run-time lookups on a built [`Config`]: whether a source address is
//! admitted and by which trunk, which trunk a dialled number is routed to, and
//! which user a name is. The ingress asks them of every datagram, the engine of
//! every new call and the registrar of every REGISTER, so they only read what
//! the checks built (parsed networks, trunk indices, the user index).

use std::net::IpAddr;

use super::{Config, User};
use crate::dns::{Gateway as DnsGateway, GatewayName};

impl Config {
    /// The trunk admitting INVITEs from `ip`: the most specific `inbound.from`
    /// network wins, then the first trunk listed.
    pub fn inbound_trunk(&self, ip: IpAddr) -> Option<usize> {
        let ip = canonical_ip(ip);
        self.trunks
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.inbound_from.iter().map(move |net| (i, net)))
            .filter(|(_, net)| net.contains(&ip))
            .max_by(|(ia, a), (ib, b)| a.prefix_len().cmp(&b.prefix_len()).then(ib.cmp(ia)))
            .map(|(i, _)| i)
    }

    /// True if some trunk admits traffic from `ip`: its inbound networks, or the
    /// addresses of its gateways (a carrier sends BYEs and OPTIONS from there;
    /// a gateway known by name is not admitted this way: a request inside a
    /// call's dialog is served whatever its source).
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.inbound_trunk(ip).is_some()
            || self.trunks.iter().any(|t| {
                t.outbound.as_ref().is_some_and(|o| {
                    o.gateways
                        .iter()
                        .filter_map(|g| g.addr())
                        .any(|a| canonical_ip(a.ip()) == ip)
                }) || t
                    .register
                    .as_ref()
                    .is_some_and(|r| canonical_ip(r.registrar.ip()) == ip)
            })
    }

    /// The outbound trunks, in order, for a call from trunk `from` to
    /// `callee`: the longest matching prefix in `routes`, else the inbound
    /// trunk's `route_to`; empty without either.
    pub fn route(&self, from: usize, callee: &str) -> Vec<usize> {
        match self.route_prefix(callee) {
            Some(trunks) => trunks.to_vec(),
            None => self
                .trunks
                .get(from)
                .and_then(|t| t.route_to)
                .into_iter()
                .collect(),
        }
    }
    /// The trunk whose registration a call from `ip` to the user `ruri_user`
    /// reaches: the carrier sends calls for Vigil's registered contact from
    /// its registrar's address (RFC 3261 §10: it found Vigil there).
    pub fn registered_trunk(&self, ip: IpAddr, ruri_user: &str) -> Option<usize> {
        let ip = canonical_ip(ip);
        self.trunks.iter().position(|t| {
            t.register.as_ref().is_some_and(|r| {
                canonical_ip(r.registrar.ip()) == ip && r.contact_user == ruri_user
            })
        })
    }

    /// The outbound trunks, in order, of the longest prefix in `routes`
    /// matching `callee`.
    pub fn route_prefix(&self, callee: &str) -> Option<&[usize]> {
        self.routes
            .iter()
            .filter(|r| callee.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())
            .map(|r| r.trunks.as_slice())
    }

    /// The trunk called `name`, if it can take calls (has `outbound`).
    pub fn outbound_trunk(&self, name: &str) -> Option<usize> {
        self.trunks
            .iter()
            .position(|t| &*t.name == name && t.outbound.is_some())
    }

    /// Every gateway name the trunks give, for the daemon to keep resolved.
    pub fn gateway_names(&self) -> std::collections::BTreeSet<GatewayName> {
        self.trunks
            .iter()
            .flat_map(|t| t.outbound.iter().flat_map(|o| &o.gateways))
            .filter_map(|g| match &g.target {
                DnsGateway::Name(name) => Some(name.clone()),
                DnsGateway::Addr(_) => None,
            })
            .collect()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.user_index.get(name).map(|&i| &self.users[i])
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
