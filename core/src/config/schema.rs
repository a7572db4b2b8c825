//! The config file as written: the serde types of its top level and of the
//! sections without a module of their own (`session_timer`, `registrar` and
//! `policy` have theirs), with their defaults. `log:`, `sip:`, `trace:` and
//! `limits:` are read in the form they are used in, so [`Config`](super::Config)
//! holds those types as they are. Nothing here checks a value; `check` does.
//!
//! The structs accept any key: `unknown::parse_yaml` reports every key they
//! leave unread, which `deny_unknown_fields` (first one only) could not. The
//! order of a struct's fields is the order its keys are listed in an unknown
//! key's hint.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::CdrConfig;
use super::gateways::FileOutbound;
use super::media::{MediaFile, MediaMode};
use super::policy::{PolicyFile, PolicySources};
use super::registrar::{KeepaliveFile, RegistrarConfig, UserFile};
use super::session_timer::SessionTimerFile;
use super::state::StateFile;
use super::tls::TlsFile;
use super::uplink::{AuthFile, RegisterFile};
use crate::dns::DnsFile;

#[derive(Debug, Deserialize)]
pub(super) struct FileConfig {
    pub(super) listen: Vec<ListenEntry>,
    #[serde(default)]
    pub(super) trunks: Vec<FileTrunk>,
    #[serde(default)]
    pub(super) routes: Vec<FileRoute>,
    pub(super) cdr: FileCdr,
    #[serde(default)]
    pub(super) log: LogConfig,
    #[serde(default)]
    pub(super) sip: SipConfig,
    #[serde(default)]
    pub(super) session_timer: SessionTimerFile,
    #[serde(default)]
    pub(super) registrar: Option<RegistrarConfig>,
    #[serde(default)]
    pub(super) users: Vec<UserFile>,
    #[serde(default)]
    pub(super) nat_keepalive: KeepaliveFile,
    #[serde(default)]
    pub(super) policy: PolicyFile,
    #[serde(default)]
    pub(super) control: ControlFile,
    #[serde(default)]
    pub(super) metrics: Option<MetricsFile>,
    #[serde(default)]
    pub(super) trace: TraceConfig,
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    #[serde(default)]
    pub(super) media: MediaFile,
    #[serde(default)]
    pub(super) dns: DnsFile,
    #[serde(default)]
    pub(super) tls: Option<TlsFile>,
    #[serde(default)]
    pub(super) state: Option<StateFile>,
}

/// `limits:` — overload and flood control (absent keys: no limit).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Active calls; past it new INVITEs get `503` with `Retry-After`.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// New INVITEs per second (a token bucket as deep as one second).
    #[serde(default)]
    pub max_cps: Option<u32>,
    /// Requests per second from one source address; past it the source is
    /// dropped silently for `per_source_cooldown` seconds.
    #[serde(default)]
    pub per_source_rps: Option<u32>,
    #[serde(default = "default_cooldown")]
    pub per_source_cooldown: u32,
    /// Live SIP transactions in all; past it a request that would open a new
    /// one (not a request inside a dialog, not a CANCEL) gets `503`.
    #[serde(default)]
    pub max_transactions: Option<u32>,
    /// Live server transactions opened by one source address; past it that
    /// source's new requests get `503`.
    #[serde(default)]
    pub max_transactions_per_source: Option<u32>,
    /// Registered contacts in all; past it a REGISTER adding a contact gets
    /// `503` (refreshes and removals always pass).
    #[serde(default)]
    pub max_registrations: Option<u32>,
    /// TCP and TLS connections open in all; past it new ones are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Connections accepted from one IP address.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: u32,
    /// Seconds a connection may carry nothing (keep-alives count) before
    /// Vigil closes it.
    #[serde(default = "default_connection_idle_timeout")]
    pub connection_idle_timeout: u32,
}

fn default_max_connections() -> u32 {
    50_000
}
fn default_max_connections_per_source() -> u32 {
    1_000
}
fn default_connection_idle_timeout() -> u32 {
    600
}

fn default_cooldown() -> u32 {
    10
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: None,
            max_cps: None,
            per_source_rps: None,
            per_source_cooldown: default_cooldown(),
            max_transactions: None,
            max_transactions_per_source: None,
            max_registrations: None,
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            connection_idle_timeout: default_connection_idle_timeout(),
        }
    }
}

/// `trace:` — SIP messages to and from these trunks and users are logged
/// (target `vigil::sip_trace`, debug level) and, with `file`, appended there.
/// `vigil ctl trace on|off NAME` switches them at run time.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct TraceConfig {
    #[serde(default)]
    pub trunks: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `metrics:` — where Prometheus scrapes `/metrics` (HTTP); absent, no endpoint.
#[derive(Debug, Deserialize)]
pub(super) struct MetricsFile {
    /// `ip:port`, e.g. `127.0.0.1:9060`.
    pub(super) listen: String,
}

/// `control:` — the local socket `vigil reload` talks to.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ControlFile {
    #[serde(default)]
    pub(super) socket: Option<PathBuf>,
}

/// `"udp:IP:PORT"`, or `{ addr: "udp:IP:PORT", advertise: IP }` when the address
/// to put in Via and Contact differs from the bound one (NAT, wildcard binds).
#[derive(Debug)]
pub(super) enum ListenEntry {
    Plain(String),
    Detailed(ListenDetailed),
}

#[derive(Debug, Deserialize)]
pub(super) struct ListenDetailed {
    pub(super) addr: String,
    #[serde(default)]
    pub(super) advertise: Option<IpAddr>,
}

/// A string or a mapping. Written out rather than `#[serde(untagged)]`, which
/// buffers the mapping and so hides its unknown keys from `unknown`.
impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ListenEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"udp:IP:PORT\" or { addr: \"udp:IP:PORT\", advertise: IP }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                Ok(ListenEntry::Plain(v.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ListenEntry, A::Error> {
                ListenDetailed::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ListenEntry::Detailed)
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct FileTrunk {
    pub(super) name: String,
    #[serde(default)]
    pub(super) inbound: Option<FileInbound>,
    #[serde(default)]
    pub(super) outbound: Option<FileOutbound>,
    #[serde(default)]
    pub(super) route_to: Option<String>,
    #[serde(default)]
    pub(super) session_timer: Option<SessionTimerFile>,
    #[serde(default)]
    pub(super) policy: Option<PolicySources>,
    /// `relay` anchors this trunk's legs on rtpengine (`media:`).
    #[serde(default)]
    pub(super) media: Option<MediaMode>,
    #[serde(default)]
    pub(super) auth: Option<AuthFile>,
    #[serde(default)]
    pub(super) register: Option<RegisterFile>,
    /// `false`: a TLS server's certificate is not checked (`tls.verify_server`
    /// when absent).
    #[serde(default)]
    pub(super) tls_verify: Option<bool>,
    /// How calls to its gateways travel: `udp` (default), `tcp` or `tls`.
    #[serde(default)]
    pub(super) transport: Option<crate::sip::Protocol>,
    /// Reliable provisionals on this trunk's legs (`sip.prack` when absent).
    #[serde(default)]
    pub(super) prack: Option<super::PrackMode>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FileInbound {
    pub(super) from: Vec<String>,
}

/// `trunk: NAME`, or `trunks: [NAME, …]` tried in order (failover).
#[derive(Debug, Deserialize)]
pub(super) struct FileRoute {
    pub(super) prefix: String,
    #[serde(default)]
    pub(super) trunk: Option<String>,
    #[serde(default)]
    pub(super) trunks: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FileCdr {
    pub(super) path: PathBuf,
    #[serde(default = "default_max_pending")]
    pub(super) max_pending: usize,
    #[serde(default)]
    pub(super) spool: Option<PathBuf>,
    /// `postgresql://user[:password]@host[:port]/database[?sslmode=...]`.
    #[serde(default)]
    pub(super) postgres: Option<String>,
    #[serde(default)]
    pub(super) table: Option<String>,
}

fn default_max_pending() -> usize {
    CdrConfig::DEFAULT_MAX_PENDING
}

/// `log:` — level is a tracing filter directive (`info`, `vigil=debug,warn`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `sip:` — protocol knobs with carrier-friendly defaults.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SipConfig {
    /// Answer every request to the address and port it came from, as if it carried
    /// `rport` (RFC 3581), like Kamailio's `force_rport()`. Devices behind NAT
    /// rarely ask for it but always need it. `false` follows RFC 3261 §18.2.2
    /// strictly for requests without `rport`.
    #[serde(default = "yes")]
    pub force_rport: bool,
    /// Worker shards; each owns its calls outright. Default: one per CPU.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Seconds an outbound INVITE may ring unanswered before Vigil cancels it and
    /// answers the caller 408 (RFC 3261 §16.6's Timer C plays this role for proxies).
    #[serde(default = "default_max_ring_time")]
    pub max_ring_time: u32,
    /// Sent as `User-Agent` in requests and `Server` in responses; empty omits it.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Seconds a gateway may leave a B-leg INVITE without any response
    /// before the call moves to the next gateway (VOS3000's
    /// `SS_SIP_TIMEOUT_INVITE`); a trunk's `outbound.invite_timeout` overrides it.
    #[serde(default = "default_invite_timeout")]
    pub invite_timeout: u32,
    /// Gateways one call tries at most, across the trunks of its route
    /// (VOS3000's `SS_GATEWAY_SWITCH_LIMIT`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Whether a call that got early media (a provisional with SDP) may still
    /// move to another gateway when it fails; VOS3000's
    /// `SS_GATEWAY_SWITCH_STOP_AFTER_RTP_START` is the opposite switch. Off by
    /// default: the caller has heard that gateway's announcement or ringback.
    #[serde(default)]
    pub failover_after_early_media: bool,
    /// Reliable provisional responses (RFC 3262) on legs with no trunk's
    /// own `prack` (registered users' legs among them).
    #[serde(default)]
    pub prack: super::PrackMode,
}

fn yes() -> bool {
    true
}

fn default_max_ring_time() -> u32 {
    180
}

fn default_user_agent() -> String {
    "Vigil".into()
}

fn default_invite_timeout() -> u32 {
    super::gateways::DEFAULT_INVITE_TIMEOUT
}

fn default_max_attempts() -> u32 {
    5
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            force_rport: true,
            workers: None,
            max_ring_time: default_max_ring_time(),
            user_agent: default_user_agent(),
            invite_timeout: default_invite_timeout(),
            max_attempts: default_max_attempts(),
            failover_after_early_media: false,
            prack: super::PrackMode::Supported,
        }
    }
}
