//! A graceful shutdown of one worker's calls: every call ends (its CDR
//! written) at once, and its BYEs go out in paced batches so that peers'
//! socket buffers hold them, all within the drain.

use std::time::Instant;

use super::{Engine, SHUTDOWN_BATCH, SHUTDOWN_SPREAD, SHUTDOWN_TICK};
use crate::call::CallKey;

impl Engine {
    /// Stops taking calls and ends every active one: each gets its CDR
    /// (`shutdown`) at once, whatever the drain manages to send, and BYE on
    /// both legs in batches ([`SHUTDOWN_BATCH`]).
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.draining = true;
        // The carriers forget Vigil's contacts now rather than at expiry.
        self.with_uplink(now, |u, env| u.unregister_all(now, env));
        let mut keys: Vec<CallKey> = self.calls.keys().copied().collect();
        // Oldest first, popped from the end.
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for &key in &keys {
            self.with_call(key, |call, env| call.record_shutdown(now, env));
        }
        self.shutdown_batch = SHUTDOWN_BATCH.max(keys.len().div_ceil(SHUTDOWN_SPREAD));
        self.shutdown_queue = keys;
        self.end_shutdown_batch(now);
    }

    pub(super) fn end_shutdown_batch(&mut self, now: Instant) {
        for _ in 0..self.shutdown_batch {
            let Some(key) = self.shutdown_queue.pop() else {
                break;
            };
            self.with_call(key, |call, env| call.shutdown(now, env));
        }
        self.shutdown_next = (!self.shutdown_queue.is_empty()).then(|| now + SHUTDOWN_TICK);
    }
}
