//! `registrar:`, `users:` and `nat_keepalive:` — who may register, how long a
//! registration lasts, and how Vigil keeps registered devices' NAT bindings open
//! (VOS3000's SS_SIP_NAT_KEEP_ALIVE_* parameters).

use std::path::PathBuf;

use serde::Deserialize;

use crate::sip::DigestAlgorithm;

/// `registrar:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// The domain users register in (the realm of the digest challenge too).
    pub domain: String,
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    /// The location store (SQLite), written before every 200 to REGISTER.
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// Seconds a digest nonce stays valid.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: u32,
    /// Contacts one address-of-record may hold.
    #[serde(default = "default_max_contacts")]
    pub max_contacts: u32,
    /// Digest algorithms users are challenged with, in order of preference
    /// (RFC 8760 §2.4: one challenge each), unless a user has its own list.
    /// `[MD5]` by default: every deployed phone answers MD5 (Kamailio and
    /// Asterisk challenge with it alone), while some give up on a 401 that
    /// offers SHA-256 at all rather than answer its MD5 challenge (baresip
    /// 1.0, sipp).
    #[serde(default = "default_algorithms")]
    pub digest_algorithms: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["MD5".into()]
}

/// `digest_algorithms` as written → the algorithms, or what is wrong with it.
pub fn parse_digest_algorithms(names: &[String]) -> Result<Vec<DigestAlgorithm>, String> {
    if names.is_empty() {
        return Err("needs at least one of MD5, SHA-256".into());
    }
    names
        .iter()
        .map(|name| {
            DigestAlgorithm::parse(Some(name))
                .ok_or_else(|| format!("{name:?} is not MD5 or SHA-256"))
        })
        .collect()
}

fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    3600
}
fn default_db() -> PathBuf {
    PathBuf::from("registrar.db")
}
fn default_nonce_lifetime() -> u32 {
    300
}
fn default_max_contacts() -> u32 {
    5
}

/// One user that may register and place calls.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserFile {
    pub user: String,
    pub password: String,
    /// The trunk this user's calls go to when no prefix route matches.
    #[serde(default)]
    pub route_to: Option<String>,
    #[serde(default)]
    pub nat_keepalive: Option<KeepaliveFile>,
    /// This user's own `digest_algorithms` (e.g. `[SHA-256]` for a phone that
    /// does RFC 8760), instead of the registrar's.
    #[serde(default)]
    pub digest_algorithms: Option<Vec<String>>,
    /// `relay` or `passthrough` for this user's calls; absent: relayed when
    /// the user registers from behind a NAT (its REGISTER came from another
    /// address than its Contact names).
    #[serde(default)]
    pub media: Option<super::media::MediaMode>,
}

/// How a keep-alive is sent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeepaliveMode {
    /// `message` as a raw UDP datagram (VOS3000's behaviour).
    #[default]
    Payload,
    /// RFC 5626's double-CRLF ping.
    Crlf,
    /// A SIP OPTIONS request whose answers are tracked.
    Options,
}

/// `nat_keepalive:` as written (global, or a user's overrides).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct KeepaliveFile {
    pub message: Option<String>,
    pub period: Option<u32>,
    pub send_interval_ms: Option<u32>,
    pub batch_size: Option<u32>,
    pub mode: Option<KeepaliveMode>,
    pub options_failures: Option<u32>,
    pub allow_short_intervals: Option<bool>,
}

/// Keep-alive settings in force for one user's contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// SS_SIP_NAT_KEEP_ALIVE_MESSAGE; empty disables keep-alive.
    pub message: String,
    /// SS_SIP_NAT_KEEP_ALIVE_PERIOD, seconds (10..86400).
    pub period: u32,
    /// SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL: milliseconds between batches.
    pub send_interval_ms: u32,
    /// SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME: datagrams per batch.
    pub batch_size: u32,
    pub mode: KeepaliveMode,
    /// `mode: options`: unanswered pings before the contact is dropped.
    pub options_failures: u32,
    /// Lab and test only: lets `period` go down to 1 s.
    pub allow_short_intervals: bool,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            message: "HELLO".into(),
            period: 30,
            send_interval_ms: 500,
            batch_size: 3000,
            mode: KeepaliveMode::Payload,
            options_failures: 3,
            allow_short_intervals: false,
        }
    }
}

impl KeepaliveConfig {
    pub fn merged(&self, over: &KeepaliveFile) -> KeepaliveConfig {
        KeepaliveConfig {
            message: over.message.clone().unwrap_or_else(|| self.message.clone()),
            period: over.period.unwrap_or(self.period),
            send_interval_ms: over.send_interval_ms.unwrap_or(self.send_interval_ms),
            batch_size: over.batch_size.unwrap_or(self.batch_size),
            mode: over.mode.unwrap_or(self.mode),
            options_failures: over.options_failures.unwrap_or(self.options_failures),
            allow_short_intervals: over
                .allow_short_intervals
                .unwrap_or(self.allow_short_intervals),
        }
    }

    /// Keep-alive is off when the message is empty (VOS3000), except for the
    /// modes that do not send the message.
    pub fn enabled(&self) -> bool {
        self.mode != KeepaliveMode::Payload || !self.message.is_empty()
    }

    /// The problems with these values, as (key, message); `section` is where
    /// they were written (`nat_keepalive`, `users[0].nat_keepalive`), so a
    /// message can name the key that would lift a bound.
    pub fn problems(&self, section: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let floor = if self.allow_short_intervals { 1 } else { 10 };
        if !(floor..=86_400).contains(&self.period) {
            let hint = if self.allow_short_intervals {
                String::new()
            } else {
                format!(" (`{section}.allow_short_intervals: true` permits down to 1 s in a lab)")
            };
            out.push((
                "period",
                format!("{} is not in {floor}..86400 s{hint}", self.period),
            ));
        }
        if self.send_interval_ms == 0 {
            out.push(("send_interval_ms", "must be at least 1 ms".into()));
        }
        if self.batch_size == 0 {
            out.push(("batch_size", "must be at least 1".into()));
        }
        if self.options_failures == 0 {
            out.push(("options_failures", "must be at least 1".into()));
        }
        if self.message.len() > 1_400 {
            out.push((
                "message",
                "is longer than 1,400 bytes (one unfragmented datagram)".into(),
            ));
        }
        out
    }
}

impl RegistrarConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.domain.trim().is_empty() {
            out.push(("domain", "must not be empty".into()));
        }
        if self.min_expires == 0 {
            out.push(("min_expires", "must be at least 1 s".into()));
        }
        if self.max_expires < self.min_expires {
            out.push((
                "max_expires",
                format!(
                    "{} is below min_expires ({})",
                    self.max_expires, self.min_expires
                ),
            ));
        }
        if self.nonce_lifetime < 10 {
            out.push(("nonce_lifetime", "must be at least 10 s".into()));
        }
        if self.max_contacts == 0 {
            out.push(("max_contacts", "must be at least 1".into()));
        }
        if let Err(message) = parse_digest_algorithms(&self.digest_algorithms) {
            out.push(("digest_algorithms", message));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_defaults_are_vos3000s() {
        let k = KeepaliveConfig::default();
        assert_eq!(
            (
                k.message.as_str(),
                k.period,
                k.send_interval_ms,
                k.batch_size
            ),
            ("HELLO", 30, 500, 3000)
        );
        assert!(k.enabled());
        assert!(k.problems("nat_keepalive").is_empty());
        let off = KeepaliveConfig {
            message: String::new(),
            ..k.clone()
        };
        assert!(!off.enabled(), "an empty message disables keep-alive");
        let crlf = KeepaliveConfig {
            message: String::new(),
            mode: KeepaliveMode::Crlf,
            ..k
        };
        assert!(crlf.enabled());
    }

    #[test]
    fn keepalive_ranges() {
        let k = KeepaliveConfig::default().merged(&KeepaliveFile {
            period: Some(5),
            batch_size: Some(0),
            ..KeepaliveFile::default()
        });
        let problems = k.problems("nat_keepalive");
        let keys: Vec<&str> = problems.iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["period", "batch_size"]);
        assert_eq!(
            problems[0].1,
            "5 is not in 10..86400 s (`nat_keepalive.allow_short_intervals: true` permits down to 1 s in a lab)"
        );
        let lab = KeepaliveConfig {
            allow_short_intervals: true,
            batch_size: 1,
            ..k
        };
        assert!(lab.problems("users[0].nat_keepalive").is_empty());
    }
}
