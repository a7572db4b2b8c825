//! `session_timer:` — RFC 4028 session timers with VOS3000's parameters
//! (SS_SIP_SESSION_TTL, SS_SIP_SESSION_UPDATE_SEGMENT,
//! SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP, SS_SIP_NO_TIMER_REINVITE_INTERVAL), global
//! and overridable per trunk key by key.

use serde::Deserialize;

/// RFC 4028 §5: no session interval below 90 s, unless the operator explicitly
/// asks for lab values.
pub const RFC_MIN_SE: u32 = 90;

/// `refresh_method: auto | update | reinvite`: the policy API's enum, which a
/// call-start hook may override per call, read with its `serde` feature.
pub use vigil_plugin_api::RefreshMethod;

/// Who refreshes when the peer leaves the choice to Vigil.
#[derive(Debug, Clone, Copy, serde::Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PreferRefresher {
    /// The peer (it supports timers and did not say otherwise).
    Remote,
    /// Vigil.
    Local,
}

/// The section as written: every key optional, so a trunk can override one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct SessionTimerFile {
    pub ttl: Option<u32>,
    pub update_segment: Option<u32>,
    pub early_hangup: Option<u32>,
    pub no_timer_max_duration: Option<u32>,
    pub min_se: Option<u32>,
    pub refresh_method: Option<RefreshMethod>,
    pub prefer_refresher: Option<PreferRefresher>,
    pub refresh_non_timer_peers: Option<bool>,
    pub allow_short_intervals: Option<bool>,
}

/// Session-timer settings in force for one trunk's legs (kept with a saved
/// call: it goes on with the settings it started under).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SessionTimerConfig {
    /// Session-Expires offered and the most Vigil accepts, seconds.
    pub ttl: u32,
    /// Refresh every `interval / update_segment` seconds (2..=10).
    pub update_segment: u32,
    /// End a call this many seconds before its session would expire.
    pub early_hangup: u32,
    /// Longest call (s of conversation) when a leg has no session timer; 0: none.
    pub no_timer_max_duration: u32,
    /// Vigil's Min-SE.
    pub min_se: u32,
    pub refresh_method: RefreshMethod,
    pub prefer_refresher: PreferRefresher,
    pub refresh_non_timer_peers: bool,
    pub allow_short_intervals: bool,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            ttl: 600,
            update_segment: 2,
            early_hangup: 0,
            no_timer_max_duration: 7200,
            min_se: RFC_MIN_SE,
            refresh_method: RefreshMethod::Auto,
            prefer_refresher: PreferRefresher::Remote,
            refresh_non_timer_peers: true,
            allow_short_intervals: false,
        }
    }
}

impl SessionTimerConfig {
    /// `over`'s keys replace this config's.
    pub fn merged(&self, over: &SessionTimerFile) -> SessionTimerConfig {
        SessionTimerConfig {
            ttl: over.ttl.unwrap_or(self.ttl),
            update_segment: over.update_segment.unwrap_or(self.update_segment),
            early_hangup: over.early_hangup.unwrap_or(self.early_hangup),
            no_timer_max_duration: over
                .no_timer_max_duration
                .unwrap_or(self.no_timer_max_duration),
            min_se: over.min_se.unwrap_or(self.min_se),
            refresh_method: over.refresh_method.unwrap_or(self.refresh_method),
            prefer_refresher: over.prefer_refresher.unwrap_or(self.prefer_refresher),
            refresh_non_timer_peers: over
                .refresh_non_timer_peers
                .unwrap_or(self.refresh_non_timer_peers),
            allow_short_intervals: over
                .allow_short_intervals
                .unwrap_or(self.allow_short_intervals),
        }
    }

    /// The problems with these values, as (key, message); `section` is where
    /// they were written (`session_timer`, `trunks[2].session_timer`), so a
    /// message can name the key that would lift a bound.
    pub fn problems(&self, section: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let floor = if self.allow_short_intervals {
            1
        } else {
            RFC_MIN_SE
        };
        let lab = format!("`{section}.allow_short_intervals: true` permits down to 1 s in a lab");
        if self.min_se < floor {
            out.push((
                "min_se",
                format!("{} is below {floor} s (RFC 4028 §5; {lab})", self.min_se),
            ));
        }
        if self.ttl < self.min_se.max(floor) {
            let hint = if self.ttl < RFC_MIN_SE && !self.allow_short_intervals {
                format!(" ({lab}, with a lower `min_se`)")
            } else {
                String::new()
            };
            out.push((
                "ttl",
                format!(
                    "{} is below min_se ({}): Vigil would offer an interval it refuses itself{hint}",
                    self.ttl,
                    self.min_se.max(floor)
                ),
            ));
        }
        if !(2..=10).contains(&self.update_segment) {
            out.push((
                "update_segment",
                format!("{} is not in 2..10", self.update_segment),
            ));
        }
        if self.early_hangup >= self.ttl {
            out.push((
                "early_hangup",
                format!(
                    "{} s must be below ttl ({} s), or every call would end at once",
                    self.early_hangup, self.ttl
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vos3000s_and_valid() {
        let d = SessionTimerConfig::default();
        assert_eq!(
            (
                d.ttl,
                d.update_segment,
                d.early_hangup,
                d.no_timer_max_duration
            ),
            (600, 2, 0, 7200)
        );
        assert!(d.problems("session_timer").is_empty());
    }

    #[test]
    fn lab_values_need_the_switch() {
        let short = SessionTimerConfig {
            ttl: 4,
            min_se: 2,
            ..SessionTimerConfig::default()
        };
        let problems = short.problems("trunks[1].session_timer");
        let keys: Vec<&str> = problems.iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["min_se", "ttl"]);
        assert!(
            problems.iter().all(|(_, message)| message
                .contains("`trunks[1].session_timer.allow_short_intervals: true` permits")),
            "each names the key that lifts the bound: {problems:?}"
        );
        let lab = SessionTimerConfig {
            allow_short_intervals: true,
            ..short
        };
        assert!(lab.problems("session_timer").is_empty());
    }

    #[test]
    fn a_trunk_overrides_key_by_key() {
        let global = SessionTimerConfig::default();
        let over = SessionTimerFile {
            ttl: Some(900),
            refresh_method: Some(RefreshMethod::Reinvite),
            ..SessionTimerFile::default()
        };
        let t = global.merged(&over);
        assert_eq!(
            (t.ttl, t.refresh_method, t.update_segment),
            (900, RefreshMethod::Reinvite, 2)
        );
        let bad = global.merged(&SessionTimerFile {
            update_segment: Some(11),
            early_hangup: Some(600),
            ..SessionTimerFile::default()
        });
        let keys: Vec<&str> = bad.problems("session_timer").iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["update_segment", "early_hangup"]);
    }
}
