//! Identifiers Vigil generates: Call-IDs, tags and Via branches (RFC 3261 §8.1.1).
//!
//! Each worker has its own generator. Vigil's B-leg Call-IDs and its branches
//! carry the worker number, so the receive path can hand every in-dialog request
//! and every response to the worker that owns the call without shared state.
//! Randomness comes from ChaCha (`StdRng`): a guessable Call-ID and tags would let
//! anyone forge a BYE and cut a call.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::sip::MAGIC_COOKIE;

/// The worker number the registrar's Via branches and Call-IDs carry, so the
/// receive path hands answers to its keep-alive pings back to it. Call workers
/// are numbered below it.
pub const REGISTRAR_WORKER: u8 = 0xfe;

/// Marks identifiers Vigil made: `vgl` + two hex digits of worker number + `-`.
const PREFIX: &str = "vgl";

pub struct IdGen {
    worker: u8,
    rng: StdRng,
}

impl IdGen {
    pub fn new(worker: u8) -> IdGen {
        IdGen {
            worker,
            rng: rand::make_rng(),
        }
    }

    /// A generator with a fixed seed, for reproducible tests.
    pub fn seeded(worker: u8, seed: u64) -> IdGen {
        IdGen {
            worker,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn random_hex(&mut self) -> String {
        format!(
            "{:016x}{:08x}",
            self.rng.random::<u64>(),
            self.rng.random::<u32>()
        )
    }

    /// A Call-ID for a B leg, routable back to this worker.
    pub fn call_id(&mut self) -> String {
        let random = self.random_hex();
        format!("{PREFIX}{:02x}-{random}", self.worker)
    }

    /// A cookie for one rtpengine ng request, routable back to this worker
    /// like a Call-ID. Random, not a counter: rtpengine answers a cookie it
    /// has seen lately with its cached reply, whoever sends it, so a counter
    /// that starts again after a restart would get another request's answer.
    pub fn ng_cookie(&mut self) -> String {
        let random = self.random_hex();
        format!("{PREFIX}{:02x}-{random}", self.worker)
    }

    /// A Via branch with the magic cookie, routable back to this worker.
    pub fn branch(&mut self) -> String {
        let random = self.random_hex();
        format!("{MAGIC_COOKIE}{PREFIX}{:02x}-{random}", self.worker)
    }

    /// A random delay in `[from_ms, to_ms)` milliseconds (RFC 3261 §14.1 glare
    /// back-off).
    pub fn jitter(&mut self, from_ms: u64, to_ms: u64) -> std::time::Duration {
        let span = to_ms.saturating_sub(from_ms).max(1);
        std::time::Duration::from_millis(from_ms + self.rng.random::<u64>() % span)
    }

    /// A random number in `[0, n)` (`0` for `n` = 0): weighted choices.
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random::<u64>().checked_rem(n).unwrap_or(0)
    }

    /// A call's CDR id: 128 random bits, unique across restarts and nodes
    /// (written as [`cdr_id_text`]; kept as a number, a call carries no
    /// string for it).
    pub fn cdr_id(&mut self) -> u128 {
        self.rng.random::<u128>()
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }
}

/// A CDR id as the CDR and the state store write it: 32 hex digits.
pub fn cdr_id_text(id: u128) -> String {
    format!("{id:032x}")
}

/// A CDR id read back from its text; `None` for anything else.
pub fn parse_cdr_id(text: &str) -> Option<u128> {
    (text.len() == 32)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// The worker encoded in a Call-ID or branch Vigil generated, if it is one.
pub fn worker_of(id: &str) -> Option<usize> {
    let rest = id.strip_prefix(MAGIC_COOKIE).unwrap_or(id);
    let rest = rest.strip_prefix(PREFIX)?;
    let (hex, tail) = (rest.get(..2)?, rest.get(2..)?);
    if !tail.starts_with('-') {
        return None;
    }
    u8::from_str_radix(hex, 16).ok().map(usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_route_back_to_their_worker() {
        let mut ids = IdGen::seeded(0x2a, 1);
        let call_id = ids.call_id();
        let branch = ids.branch();
        assert!(branch.starts_with("z9hG4bK"));
        assert_eq!(worker_of(&call_id), Some(0x2a));
        assert_eq!(worker_of(&branch), Some(0x2a));
        let cookie = ids.ng_cookie();
        assert_eq!(worker_of(&cookie), Some(0x2a));
        assert!(!cookie.contains(' '), "a space ends an ng cookie");
        assert_ne!(cookie, ids.ng_cookie());
        assert_ne!(ids.tag(), ids.tag());
        assert_eq!(worker_of("a84b4c76e66710@pc33.atlanta.com"), None);
        assert_eq!(worker_of("vglzz-1"), None);
        assert_eq!(worker_of("vgl"), None);
    }
}
