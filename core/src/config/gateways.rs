//! A trunk's `outbound:` — the gateways its calls go to, in what order, when
//! a call moves on to the next one (failover), and how their health is
//! probed. VOS3000 calls these its gateway switch parameters
//! (`SS_SIP_TIMEOUT_INVITE`, `SS_GATEWAY_SWITCH_LIMIT`); Kamailio operators
//! know them from `dispatcher`.
//!
//! ```yaml
//! outbound:
//!   gateways:
//!     - { to: "192.0.2.10:5060", priority: 1, weight: 70 }
//!     - { to: "192.0.2.11:5060", priority: 1, weight: 30 }
//!     - { to: "backup.example.net:5060", priority: 2 }
//!   invite_timeout: 4            # s without a provisional: next gateway
//!   failover_codes: [408, 480, 500, 502, 503, 504]
//!   probe: { interval: 30, failures: 3, successes: 2 }
//! ```
//!
//! `outbound: { to: "ip:port" }` is the one-gateway short form. A gateway may
//! be written as a SIP URI whose scheme or `transport` parameter chooses its
//! transport (`sips:sbc.carrier.example`, `sip:gw.example;transport=tcp`),
//! which also picks its SRV records (`_sips._tcp`, `_sip._tcp`). A gateway
//! named by host is never looked up here: the daemon keeps it resolved
//! (`crate::dns`), so loading a config never waits on DNS.

use std::time::Duration;

use serde::Deserialize;

use crate::dns::Gateway as DnsGateway;
use crate::sip::Protocol;

/// The final statuses that move a call to its next gateway unless the trunk
/// says otherwise: timeouts and server failures, and 480 (a carrier's "no
/// circuit"), as VOS3000 and Teams Direct Routing do by default.
pub const DEFAULT_FAILOVER_CODES: &[u16] = &[408, 480, 500, 502, 503, 504];

/// `outbound:` as written.
#[derive(Debug, Deserialize)]
pub(super) struct FileOutbound {
    /// One gateway, `ip:port` or `host:port` (the short form).
    #[serde(default)]
    pub(super) to: Option<String>,
    #[serde(default)]
    pub(super) gateways: Vec<FileGateway>,
    #[serde(default)]
    pub(super) invite_timeout: Option<u32>,
    #[serde(default)]
    pub(super) failover_codes: Option<Vec<u16>>,
    #[serde(default)]
    pub(super) probe: Option<FileProbe>,
    /// Lab and test only: lets `invite_timeout` and `probe.interval` go
    /// down to a second.
    #[serde(default)]
    pub(super) allow_short_intervals: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct FileGateway {
    pub(super) to: String,
    #[serde(default = "default_priority")]
    pub(super) priority: u16,
    #[serde(default = "default_weight")]
    pub(super) weight: u16,
}

fn default_priority() -> u16 {
    1
}
fn default_weight() -> u16 {
    1
}

/// `outbound.probe:` as written: absent, gateways are never probed (a peer
/// that does not expect OPTIONS is not sent any).
#[derive(Debug, Deserialize)]
pub(super) struct FileProbe {
    #[serde(default = "default_probe_interval")]
    pub(super) interval: u32,
    #[serde(default = "default_probe_failures")]
    pub(super) failures: u32,
    #[serde(default = "default_probe_successes")]
    pub(super) successes: u32,
    /// Statuses that count as alive; absent, any final response does (a
    /// gateway that answers 404 to OPTIONS is up, just picky).
    #[serde(default)]
    pub(super) ok_codes: Option<Vec<u16>>,
}

fn default_probe_interval() -> u32 {
    30
}
fn default_probe_failures() -> u32 {
    3
}
fn default_probe_successes() -> u32 {
    2
}

/// A trunk's outbound side as in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkOutbound {
    /// In the order written; a call orders them by priority and weight.
    pub gateways: Vec<GatewayConfig>,
    /// How long a gateway may leave an INVITE without any response before the
    /// call moves on (the transaction goes on to Timer B for a late answer's
    /// sake, but that answer is no longer wanted).
    pub invite_timeout: Duration,
    /// Final statuses after which the next gateway is tried.
    pub failover_codes: Vec<u16>,
    pub probe: Option<ProbeConfig>,
}

impl TrunkOutbound {
    pub fn fails_over_on(&self, status: u16) -> bool {
        self.failover_codes.contains(&status)
    }
}

/// One gateway of a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// As written (`ip:port`, `host:port` or a domain), for logs and `vigil ctl`.
    pub to: String,
    /// An address, or a name the daemon keeps resolved (RFC 3263: a domain
    /// without a port asks for SRV records first); never looked up here.
    pub target: DnsGateway,
    /// What it is reached over: its URI's (`sips:`, `;transport=`), else the
    /// trunk's `transport:`, else UDP.
    pub transport: Protocol,
    /// Lower first.
    pub priority: u16,
    /// Share of the calls among gateways of the same priority.
    pub weight: u16,
}

impl GatewayConfig {
    /// Its address when the config gives one (not a name to resolve).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        match self.target {
            DnsGateway::Addr(addr) => Some(addr),
            DnsGateway::Name(_) => None,
        }
    }
}

/// `outbound.probe` as in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    pub interval: Duration,
    /// Unanswered or refused probes in a row that take a gateway down.
    pub failures: u32,
    /// Answered probes in a row that bring it back up.
    pub successes: u32,
    /// Statuses that count as an answer; empty: any final response.
    pub ok_codes: Vec<u16>,
}

impl ProbeConfig {
    pub fn is_ok(&self, status: u16) -> bool {
        status >= 200 && (self.ok_codes.is_empty() || self.ok_codes.contains(&status))
    }
}

/// The most gateways a trunk may list: a call tries them in turn, and a
/// longer list only delays the caller's answer.
pub const MAX_GATEWAYS: usize = 32;

/// `sip.invite_timeout`'s default: long enough for a gateway across an ocean
/// to send its 100, well short of Timer B's 32 s.
pub const DEFAULT_INVITE_TIMEOUT: u32 = 5;

/// Checks `outbound:` as written. Problems are `(key suffix, message)`
/// under the trunk's `outbound` key.
pub(super) fn check_outbound(
    ob: &FileOutbound,
    default_invite_timeout: u32,
    trunk_transport: Option<Protocol>,
) -> (Option<TrunkOutbound>, Vec<(String, String)>) {
    let allow_short = ob.allow_short_intervals;
    let mut problems = Vec::new();
    let mut gateways = Vec::new();
    let written: Vec<(String, &str, u16, u16)> = match (&ob.to, ob.gateways.is_empty()) {
        (Some(to), true) => vec![(".to".into(), to.as_str(), 1, 1)],
        (None, false) => ob
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    format!(".gateways[{i}].to"),
                    g.to.as_str(),
                    g.priority,
                    g.weight,
                )
            })
            .collect(),
        (Some(_), false) => {
            problems.push((
                String::new(),
                "give either `to` (one gateway) or `gateways`, not both".into(),
            ));
            Vec::new()
        }
        (None, true) => {
            problems.push((String::new(), "needs `to` or `gateways`".into()));
            Vec::new()
        }
    };
    if written.len() > MAX_GATEWAYS {
        problems.push((
            ".gateways".into(),
            format!("at most {MAX_GATEWAYS} gateways"),
        ));
    }
    for (key, to, priority, weight) in written {
        match DnsGateway::parse(to, trunk_transport) {
            Ok((target, transport)) => {
                if gateways.iter().any(|g: &GatewayConfig| g.target == target) {
                    problems.push((key, format!("{to:?} is listed twice")));
                } else {
                    gateways.push(GatewayConfig {
                        to: to.to_string(),
                        target,
                        transport,
                        priority,
                        weight,
                    });
                }
            }
            Err(e) => problems.push((key, e.to_string())),
        }
    }
    let invite_timeout = ob.invite_timeout.unwrap_or(default_invite_timeout);
    let min_timeout = if allow_short { 1 } else { 2 };
    if !(min_timeout..=30).contains(&invite_timeout) {
        problems.push((
            ".invite_timeout".into(),
            format!(
                "{invite_timeout} s is outside {min_timeout}..=30 (Timer B ends an INVITE at 32 s)"
            ),
        ));
    }
    let failover_codes = ob
        .failover_codes
        .clone()
        .unwrap_or_else(|| DEFAULT_FAILOVER_CODES.to_vec());
    for (i, code) in failover_codes.iter().enumerate() {
        if !(300..=699).contains(code) {
            problems.push((
                format!(".failover_codes[{i}]"),
                format!("{code} is not a final failure status (300..=699)"),
            ));
        }
    }
    let probe = ob.probe.as_ref().map(|p| {
        let min_interval = if allow_short { 1 } else { 5 };
        if !(min_interval..=3600).contains(&p.interval) {
            problems.push((
                ".probe.interval".into(),
                format!("{} s is outside {min_interval}..=3600", p.interval),
            ));
        }
        for (name, n) in [("failures", p.failures), ("successes", p.successes)] {
            if !(1..=100).contains(&n) {
                problems.push((format!(".probe.{name}"), format!("{n} is outside 1..=100")));
            }
        }
        let ok_codes = p.ok_codes.clone().unwrap_or_default();
        for (i, code) in ok_codes.iter().enumerate() {
            if !(200..=699).contains(code) {
                problems.push((
                    format!(".probe.ok_codes[{i}]"),
                    format!("{code} is not a final status (200..=699)"),
                ));
            }
        }
        ProbeConfig {
            interval: Duration::from_secs(u64::from(p.interval)),
            failures: p.failures,
            successes: p.successes,
            ok_codes,
        }
    });
    let outbound = (!gateways.is_empty()).then(|| TrunkOutbound {
        gateways,
        invite_timeout: Duration::from_secs(u64::from(invite_timeout)),
        failover_codes,
        probe,
    });
    (outbound, problems)
}
