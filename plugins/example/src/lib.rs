//! An example vendor plugin: the rules of a carrier whose gateways answer
//! UPDATE with 501, drop a refresh now and then under load, and suppress
//! silence (a callee who only listens sends no RTP).
//!
//! - A refresh is always a re-INVITE, whatever `refresh_method` says.
//! - A failed refresh is retried after [`RETRY_AFTER`]; the
//!   [`MAX_FAILED_REFRESHES`]th failure of the same call hangs it up. Failures
//!   are counted per call (keyed by the A leg's Call-ID) and forgotten when the
//!   call hangs up.
//! - Dead media on a relayed call: the callee's side alone silent (one-way,
//!   `callee-to-caller`) is the gateways' silence suppression and is ignored
//!   until it has lasted [`MAX_CARRIER_SILENCE`]; then, and for any other
//!   dead media, Vigil's default (hang up) applies.
//! - Calls to its freephone numbers ([`FREEPHONE_PREFIX`], national format)
//!   go to its freephone gateway first, then its main one
//!   ([`FREEPHONE_TRUNKS`]), with the number in E.164 (the carrier wants
//!   `+32800…`); every other call is routed as Vigil's config says.
//! - Every CDR gets `plugin = "vigil-plugin-example"`, and
//!   `refresh_failures = N` when refreshes failed.
//!
//! The rules are constants on purpose: a plugin is code the vendor ships, not
//! configuration.
//!
//! Build: `cargo build --release -p vigil-plugin-example`, then point a trunk's
//! `policy.plugin` at `target/release/libvigil_plugin_example.so`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use vigil_plugin_api::{
    CallView, CdrFields, FailureDecision, HookFailure, HookResult, LegView, MediaDirection,
    MediaTimeoutDecision, MediaTimeoutView, Plugin, RefreshDecision, RefreshFailure, RouteDecision,
    RouteView, declare_plugin,
};

/// The failed refresh that ends the call (counting from 1).
pub const MAX_FAILED_REFRESHES: u32 = 3;

/// How long to wait before trying a failed refresh again. Vigil never waits
/// past the session's expiry, so on a short session the last retry comes first.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest one-way silence from the carrier's side that is taken for
/// silence suppression rather than dead media.
pub const MAX_CARRIER_SILENCE: Duration = Duration::from_secs(300);

/// The carrier's freephone numbers, as dialled nationally.
pub const FREEPHONE_PREFIX: &str = "0800";

/// Where freephone calls go, in order: the trunk names Vigil's config gives
/// the carrier's gateways.
pub const FREEPHONE_TRUNKS: [&str; 2] = ["carrier-freephone", "carrier"];

/// The carrier's country code: a national number's leading 0 becomes this.
pub const COUNTRY_CODE: &str = "+32";

/// The value of the `plugin` CDR field.
pub const CDR_TAG: &str = "vigil-plugin-example";

/// The carrier's rules; one instance serves every call.
#[derive(Debug, Default)]
pub struct CarrierRules {
    /// Failed refreshes per call (A leg's Call-ID). Behind a lock because
    /// Vigil's workers call in concurrently; the lock is held for a map lookup.
    failures: Mutex<HashMap<String, u32>>,
}

impl CarrierRules {
    pub fn new() -> CarrierRules {
        CarrierRules::default()
    }

    /// A panic in another hook poisons nothing we cannot trust: the map holds
    /// counters only, so carry on with it.
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Plugin for CarrierRules {
    fn refresh_due(&self, _leg: &LegView<'_>) -> HookResult<RefreshDecision> {
        Ok(Some(RefreshDecision::Reinvite))
    }

    fn refresh_failed(
        &self,
        leg: &LegView<'_>,
        _failure: RefreshFailure,
    ) -> HookResult<FailureDecision> {
        let mut failures = self.failures();
        let count = match failures.get_mut(leg.call_id) {
            Some(count) => {
                *count = count.saturating_add(1);
                *count
            }
            None => {
                failures.insert(leg.call_id.to_owned(), 1);
                1
            }
        };
        Ok(Some(if count >= MAX_FAILED_REFRESHES {
            FailureDecision::Hangup
        } else {
            FailureDecision::Retry(RETRY_AFTER)
        }))
    }

    fn hangup(&self, call: &CallView<'_>, extra: &mut CdrFields<'_>) -> Result<(), HookFailure> {
        let failed = self.failures().remove(call.call_id);
        extra.add("plugin", CDR_TAG);
        if let Some(count) = failed {
            extra.add("refresh_failures", &count.to_string());
        }
        Ok(())
    }

    fn media_timeout(&self, call: &MediaTimeoutView<'_>) -> HookResult<MediaTimeoutDecision> {
        let suppressed = call.direction == MediaDirection::CalleeToCaller
            && call.silent_for < MAX_CARRIER_SILENCE;
        Ok(suppressed.then_some(MediaTimeoutDecision::Ignore))
    }

    fn route(&self, call: &RouteView<'_>) -> HookResult<RouteDecision> {
        if !call.callee.starts_with(FREEPHONE_PREFIX) {
            return Ok(None);
        }
        // The prefix starts with the national 0, which E.164 drops.
        let national = &call.callee[1..];
        Ok(Some(RouteDecision::Route {
            trunks: FREEPHONE_TRUNKS.map(str::to_owned).to_vec(),
            callee: Some(format!("{COUNTRY_CODE}{national}")),
            caller: None,
        }))
    }
}

declare_plugin!(CarrierRules, CarrierRules::new());

#[cfg(test)]
mod tests {
    use vigil_plugin_api::{Leg, Refresher};

    use super::*;

    fn leg(call_id: &str) -> LegView<'_> {
        LegView {
            call_id,
            b_call_id: "w0-1",
            trunk: "carrier",
            caller: "+3225551000",
            callee: "+3225552000",
            leg: Leg::B,
            session_expires: 1800,
            refresher: Refresher::Vigil,
            refresh_count: 0,
            since_answer: Duration::from_secs(900),
        }
    }

    fn silent(direction: MediaDirection, secs: u64) -> MediaTimeoutView<'static> {
        MediaTimeoutView {
            call_id: "a",
            b_call_id: "w0-1",
            trunk: "carrier",
            caller: "+3225551000",
            callee: "+3225552000",
            direction,
            silent_for: Duration::from_secs(secs),
            on_hold: false,
            since_answer: Duration::from_secs(600),
        }
    }

    fn dialled(callee: &str) -> RouteView<'_> {
        RouteView {
            call_id: "a",
            trunk_in: "pbx",
            caller: "+3225551000",
            callee,
            source: "192.0.2.1:5060",
            headers: &[],
        }
    }

    #[test]
    fn freephone_calls_go_to_the_freephone_gateway_in_e164() {
        let rules = CarrierRules::new();
        assert_eq!(
            rules.route(&dialled("080012345")),
            Ok(Some(RouteDecision::Route {
                trunks: vec!["carrier-freephone".into(), "carrier".into()],
                callee: Some("+3280012345".into()),
                caller: None,
            }))
        );
        assert_eq!(rules.route(&dialled("025552000")), Ok(None));
        assert_eq!(rules.route(&dialled("080")), Ok(None));
    }

    #[test]
    fn the_carriers_silence_is_ignored_for_five_minutes_then_left_to_vigil() {
        let rules = CarrierRules::new();
        let ignore = Ok(Some(MediaTimeoutDecision::Ignore));
        assert_eq!(
            rules.media_timeout(&silent(MediaDirection::CalleeToCaller, 30)),
            ignore
        );
        assert_eq!(
            rules.media_timeout(&silent(MediaDirection::CalleeToCaller, 299)),
            ignore
        );
        assert_eq!(
            rules.media_timeout(&silent(MediaDirection::CalleeToCaller, 300)),
            Ok(None)
        );
        assert_eq!(
            rules.media_timeout(&silent(MediaDirection::CallerToCallee, 30)),
            Ok(None)
        );
        assert_eq!(
            rules.media_timeout(&silent(MediaDirection::Both, 30)),
            Ok(None)
        );
    }

    #[test]
    fn the_third_failed_refresh_of_a_call_hangs_it_up() {
        let rules = CarrierRules::new();
        let retry = Ok(Some(FailureDecision::Retry(RETRY_AFTER)));
        assert_eq!(
            rules.refresh_due(&leg("a")),
            Ok(Some(RefreshDecision::Reinvite))
        );
        assert_eq!(
            rules.refresh_failed(&leg("a"), RefreshFailure::Timeout),
            retry
        );
        assert_eq!(
            rules.refresh_failed(&leg("b"), RefreshFailure::Timeout),
            retry
        );
        assert_eq!(
            rules.refresh_failed(&leg("a"), RefreshFailure::Status(500)),
            retry
        );
        assert_eq!(
            rules.refresh_failed(&leg("a"), RefreshFailure::Timeout),
            Ok(Some(FailureDecision::Hangup))
        );
    }
}
