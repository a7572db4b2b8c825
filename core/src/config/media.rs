//! `media:`, and each trunk's and user's `media:` — whether a call's RTP is
//! anchored on rtpengine (driven over its ng control protocol) and when dead
//! media ends a call: VOS3000's RTP interrupt detection, done with rtpengine's
//! per-stream statistics.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// `media:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MediaFile {
    /// ng control addresses, `udp:IP:PORT`; several share the load.
    #[serde(default)]
    pub rtpengines: Vec<String>,
    /// Seconds without RTP before a relayed call's media counts as dead.
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    #[serde(default)]
    pub timeout_mode: TimeoutMode,
    /// The same for a call on hold (`sendonly`/`recvonly`/`inactive`).
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout: u32,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Seconds between ng `ping`s to each rtpengine (its health check).
    #[serde(default = "default_ping_interval")]
    pub ping_interval: u32,
    /// Lab and test only: lets `timeout` go below 10 s.
    #[serde(default)]
    pub allow_short_intervals: bool,
}

impl Default for MediaFile {
    fn default() -> Self {
        MediaFile {
            rtpengines: Vec::new(),
            timeout: default_timeout(),
            timeout_mode: TimeoutMode::default(),
            hold_timeout: default_hold_timeout(),
            on_failure: OnFailure::default(),
            ping_interval: default_ping_interval(),
            allow_short_intervals: false,
        }
    }
}

fn default_timeout() -> u32 {
    60
}
fn default_hold_timeout() -> u32 {
    3600
}
fn default_ping_interval() -> u32 {
    5
}

/// When a relayed call's media counts as dead.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutMode {
    /// No RTP either way for `timeout`.
    #[default]
    Both,
    /// One direction silent for `timeout` (one-way audio).
    Either,
}

/// What a new call gets when no rtpengine answers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// `503 Service Unavailable` to the caller.
    #[default]
    Reject,
    /// The call goes on without relay (its SDPs as they are).
    Passthrough,
}

/// Whether a trunk's or user's calls are relayed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    Relay,
    Passthrough,
}

/// `media:` as Vigil uses it (present only with at least one rtpengine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    pub rtpengines: Vec<SocketAddr>,
    pub timeout: Duration,
    pub timeout_mode: TimeoutMode,
    pub hold_timeout: Duration,
    pub on_failure: OnFailure,
    pub ping_interval: Duration,
}

/// The shortest `timeout` without `allow_short_intervals`: rtpengine reports
/// a stream's last packet to the second, and RTP stops for a second or two in
/// normal calls (silence suppression, re-INVITEs).
pub const MIN_TIMEOUT: u32 = 10;

impl MediaFile {
    /// The section as Vigil uses it, or every problem with it as
    /// `(key under media., message)`. `None` without rtpengines.
    pub fn check(&self) -> (Option<MediaConfig>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut engines = Vec::new();
        for (i, text) in self.rtpengines.iter().enumerate() {
            match parse_engine(text) {
                Ok(addr) => engines.push(addr),
                Err(message) => problems.push((format!("rtpengines[{i}]"), message)),
            }
        }
        let min = if self.allow_short_intervals {
            1
        } else {
            MIN_TIMEOUT
        };
        if self.timeout < min {
            problems.push((
                "timeout".to_string(),
                format!(
                    "must be at least {min} s (media.allow_short_intervals allows 1 s, for labs)"
                ),
            ));
        }
        if self.hold_timeout < self.timeout {
            problems.push((
                "hold_timeout".to_string(),
                "must not be below media.timeout".to_string(),
            ));
        }
        if self.ping_interval == 0 {
            problems.push((
                "ping_interval".to_string(),
                "must be at least 1 s".to_string(),
            ));
        }
        let config = (!engines.is_empty()).then(|| MediaConfig {
            rtpengines: engines,
            timeout: Duration::from_secs(u64::from(self.timeout)),
            timeout_mode: self.timeout_mode,
            hold_timeout: Duration::from_secs(u64::from(self.hold_timeout)),
            on_failure: self.on_failure,
            ping_interval: Duration::from_secs(u64::from(self.ping_interval)),
        });
        (config, problems)
    }
}

/// `udp:IP:PORT` (the ng protocol runs over UDP; IPv6 as `[addr]:port`).
fn parse_engine(text: &str) -> Result<SocketAddr, String> {
    let addr = text
        .strip_prefix("udp:")
        .ok_or_else(|| format!("{text:?} is not udp:IP:PORT"))?;
    addr.parse()
        .map_err(|_| format!("{text:?} is not udp:IP:PORT (an IP address, not a name)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_and_limits_are_checked() {
        let ok = MediaFile {
            rtpengines: vec!["udp:127.0.0.1:2223".into(), "udp:[::1]:2224".into()],
            ..MediaFile::default()
        };
        let (config, problems) = ok.check();
        assert!(problems.is_empty(), "{problems:?}");
        let config = config.expect("engines configured");
        assert_eq!(config.rtpengines.len(), 2);
        assert_eq!(config.timeout, Duration::from_secs(60));
        assert_eq!(config.on_failure, OnFailure::Reject);
        let bad = MediaFile {
            rtpengines: vec!["127.0.0.1:2223".into(), "udp:rtp.example:2223".into()],
            timeout: 2,
            hold_timeout: 1,
            ..MediaFile::default()
        };
        let (config, problems) = bad.check();
        assert_eq!(config, None);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["rtpengines[0]", "rtpengines[1]", "timeout", "hold_timeout"]
        );
        let lab = MediaFile {
            rtpengines: vec!["udp:127.0.0.1:2223".into()],
            timeout: 2,
            allow_short_intervals: true,
            ..MediaFile::default()
        };
        assert!(lab.check().1.is_empty());
        assert_eq!(MediaFile::default().check(), (None, Vec::new()));
    }
}
