//! `sip.prack` and each trunk's `prack`: whether Vigil takes part in RFC
//! 3262's reliable provisional responses (`100rel`, PRACK) on a leg — what
//! its B-leg INVITEs put in `Supported` / `Require`, and what it accepts from
//! callers.

use serde::Deserialize;

/// How a leg deals with `100rel`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrackMode {
    /// Offered on B-leg INVITEs (`Supported: 100rel`); a caller that supports
    /// it gets early media reliably, one that requires it gets every
    /// provisional reliably.
    #[default]
    Supported,
    /// Demanded: B-leg INVITEs carry `Require: 100rel`; a caller without
    /// `100rel` support is refused with 421.
    Required,
    /// Not used: never offered, and a caller that requires it gets 420.
    Disabled,
}

impl PrackMode {
    /// Whether Vigil does PRACK on a leg in this mode at all.
    pub fn enabled(self) -> bool {
        self != PrackMode::Disabled
    }
}
