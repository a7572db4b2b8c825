//! `trunks[].auth` and `trunks[].register`: Vigil as a client of a carrier —
//! the credentials it answers the carrier's digest challenges with (RFC 3261
//! §22.2, RFC 7616), and the registration it keeps with the carrier's
//! registrar (RFC 3261 §10.2) so that the carrier can send calls to it.

use std::net::SocketAddr;

use serde::Deserialize;

/// `auth:` as written: `{ user, password }`.
#[derive(Debug, Deserialize)]
pub(super) struct AuthFile {
    pub(super) user: String,
    pub(super) password: String,
}

/// `register:` as written.
#[derive(Debug, Deserialize)]
pub(super) struct RegisterFile {
    pub(super) user: String,
    pub(super) password: String,
    /// `ip:port` or `host:port`, resolved at load like `outbound.to`.
    pub(super) registrar: String,
    #[serde(default = "default_expires")]
    pub(super) expires: u32,
    /// The address-of-record's domain; default: the registrar's host as written.
    #[serde(default)]
    pub(super) domain: Option<String>,
    /// The user part of Vigil's Contact; default: `user`.
    #[serde(default)]
    pub(super) contact_user: Option<String>,
}

fn default_expires() -> u32 {
    3600
}

/// The registration interval Vigil asks for: at least a minute (RFC 3261
/// §10.2.8's usual Min-Expires), at most a day.
pub const REGISTER_EXPIRES: std::ops::RangeInclusive<u32> = 60..=86_400;

/// What Vigil answers a trunk's digest challenges with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkAuth {
    pub user: String,
    pub password: String,
}

/// A registration Vigil keeps with a trunk's registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRegistration {
    /// The user to register and the password its challenges are answered with.
    pub auth: TrunkAuth,
    /// Where REGISTERs go (resolved at load); calls from its IP whose
    /// Request-URI names `contact_user` are this trunk's.
    pub registrar: SocketAddr,
    /// What REGISTERs travel on: the registrar URI's (`sips:`,
    /// `;transport=`), else the trunk's `transport:`, else UDP.
    pub transport: crate::sip::Protocol,
    /// The AOR's host, and the REGISTER's Request-URI (`sip:<domain>`).
    pub domain: String,
    /// The user part of the Contact Vigil registers.
    pub contact_user: String,
    /// Seconds asked for; the registrar's answer decides.
    pub expires: u32,
}

/// True if `s` can be the user part of a SIP URI as Vigil writes it.
pub(super) fn is_sip_user(s: &str) -> bool {
    !s.trim().is_empty() && !s.contains(['@', ':', ';', ' ', '<', '>', '"'])
}

/// The host part of `host:port` / `[v6]:port` as written (a v6 address in
/// its brackets, as a SIP URI writes it).
pub(super) fn host_of(hostport: &str) -> &str {
    match hostport.find(']') {
        Some(end) if hostport.starts_with('[') => &hostport[..=end],
        _ => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    }
}
