//! `dns:` — which servers gateway names are resolved with, how long to wait
//! for them, and the bounds put on the TTLs they give. Written here, below
//! the config layer, so the config can hold it without importing the daemon.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// The port a server written without one listens on.
const DNS_PORT: u16 = 53;
/// The shortest re-resolution interval without `allow_short_intervals`: a
/// carrier's TTL of 0 or 1 s must not turn Vigil into a DNS load generator.
pub const MIN_TTL_FLOOR: u32 = 5;
/// The longest time a name may go without being looked up again: a carrier
/// that moves a gateway is followed within the hour whatever its TTL says.
pub const MAX_TTL_CEILING: u32 = 86_400;

/// `dns:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DnsFile {
    /// `IP` or `IP:PORT` (`[v6]:PORT`); when given, only these are asked (no
    /// resolv.conf, no hosts file); when empty, the system's configuration.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Seconds to wait for one answer.
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// Queries sent for one lookup before it fails.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Seconds: a name is looked up again no sooner than this, whatever its TTL.
    #[serde(default = "default_min_ttl")]
    pub min_ttl: u32,
    /// Seconds: and no later than this.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u32,
    /// Lab and test only: lets `min_ttl` go down to 1 s.
    #[serde(default)]
    pub allow_short_intervals: bool,
}

impl Default for DnsFile {
    fn default() -> Self {
        DnsFile {
            servers: Vec::new(),
            timeout: default_timeout(),
            attempts: default_attempts(),
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            allow_short_intervals: false,
        }
    }
}

fn default_timeout() -> u32 {
    2
}
fn default_attempts() -> u32 {
    2
}
fn default_min_ttl() -> u32 {
    30
}
fn default_max_ttl() -> u32 {
    3600
}

/// `dns:` as the resolver uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Empty: the system's resolver configuration.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: u32,
    pub ttl: TtlBounds,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsFile::default().check().0
    }
}

/// The bounds a record's TTL is clamped to before it schedules the next
/// lookup; the shorter bound also starts the back-off after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    pub min: Duration,
    pub max: Duration,
}

impl TtlBounds {
    pub fn clamp(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min, self.max.max(self.min))
    }
}

impl DnsFile {
    /// The section as the resolver uses it, and every problem with it as
    /// `(key under dns., message)`. The settings are usable even with
    /// problems (bad servers left out, bounds forced into range), so a
    /// caller that only warns can still start.
    pub fn check(&self) -> (DnsSettings, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut servers = Vec::new();
        for (i, text) in self.servers.iter().enumerate() {
            match parse_server(text) {
                Ok(addr) => servers.push(addr),
                Err(message) => problems.push((format!("servers[{i}]"), message)),
            }
        }
        if !(1..=30).contains(&self.timeout) {
            problems.push(("timeout".into(), "must be 1 to 30 s".into()));
        }
        if !(1..=10).contains(&self.attempts) {
            problems.push(("attempts".into(), "must be 1 to 10".into()));
        }
        let floor = if self.allow_short_intervals {
            1
        } else {
            MIN_TTL_FLOOR
        };
        if self.min_ttl < floor {
            let hint = if self.allow_short_intervals {
                ""
            } else {
                " (`dns.allow_short_intervals: true` permits down to 1 s in a lab)"
            };
            problems.push((
                "min_ttl".into(),
                format!("{} is below {floor} s{hint}", self.min_ttl),
            ));
        }
        if self.max_ttl < self.min_ttl || self.max_ttl > MAX_TTL_CEILING {
            problems.push((
                "max_ttl".into(),
                format!("must be between min_ttl and {MAX_TTL_CEILING} s"),
            ));
        }
        let min = self.min_ttl.max(floor);
        let settings = DnsSettings {
            servers,
            timeout: Duration::from_secs(u64::from(self.timeout.clamp(1, 30))),
            attempts: self.attempts.clamp(1, 10),
            ttl: TtlBounds {
                min: Duration::from_secs(u64::from(min)),
                max: Duration::from_secs(u64::from(self.max_ttl.clamp(min, MAX_TTL_CEILING))),
            },
        };
        (settings, problems)
    }
}

/// `IP` or `IP:PORT`: an address, not a name (resolving the resolver would
/// need a resolver).
fn parse_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err(format!("{text:?} has port 0"))
        } else {
            Ok(addr)
        };
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| format!("{text:?} is not IP or IP:PORT (an address, not a name)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_the_system_with_a_30_s_floor() {
        let settings = DnsSettings::default();
        assert!(settings.servers.is_empty());
        assert_eq!(settings.timeout, Duration::from_secs(2));
        assert_eq!(settings.attempts, 2);
        assert_eq!(settings.ttl.min, Duration::from_secs(30));
        assert_eq!(settings.ttl.max, Duration::from_secs(3600));
    }

    #[test]
    fn servers_and_bounds_are_checked() {
        let file: DnsFile = serde_yaml::from_str(
            "{ servers: [\"127.0.0.1:5353\", \"::1\", \"dns.example\", \"127.0.0.1:0\"], timeout: 0, min_ttl: 1 }",
        )
        .expect("yaml");
        let (settings, problems) = file.check();
        assert_eq!(
            settings.servers,
            [
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["servers[2]", "servers[3]", "timeout", "min_ttl"]);
        assert!(
            problems[3].1.contains("allow_short_intervals"),
            "{problems:?}"
        );
        assert_eq!(
            settings.ttl.min,
            Duration::from_secs(u64::from(MIN_TTL_FLOOR))
        );
        let lab = DnsFile {
            min_ttl: 1,
            allow_short_intervals: true,
            ..DnsFile::default()
        };
        let (settings, problems) = lab.check();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.ttl.min, Duration::from_secs(1));
    }

    #[test]
    fn ttls_are_clamped_to_the_bounds() {
        let bounds = TtlBounds {
            min: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        };
        assert_eq!(bounds.clamp(Duration::ZERO), Duration::from_secs(30));
        assert_eq!(
            bounds.clamp(Duration::from_secs(300)),
            Duration::from_secs(300)
        );
        assert_eq!(
            bounds.clamp(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
    }
}
