//! What the front door decided for each new INVITE of the last half minute,
//! so that its retransmissions get the same answer.
//!
//! The call limits answer a new INVITE statelessly, before any transaction
//! exists, so a retransmission looks like a new call. Judged afresh, a
//! retransmission of an admitted call could get a `503` (the caller takes it
//! as final while the call goes on: its callee answers, nobody ACKs, and 32 s
//! are billed), and one of a refused call could slip in once a token is free.
//! Remembering the verdict for 64*T1 (the longest an INVITE is retransmitted)
//! keeps both from happening, at about 17 bytes an INVITE.
//!
//! Two generations of a hash set of keyed hashes: entries older than one
//! generation are dropped wholesale when the next one starts, and a generation
//! that fills up (a flood of spoofed sources) starts the next one early.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::Request;

use super::overload::Shed;

/// How long an INVITE's verdict is remembered: 64*T1, the time a UAC keeps
/// retransmitting it (RFC 3261 §17.1.1.2).
const GENERATION: Duration = Duration::from_secs(32);
/// INVITEs remembered per generation, at most.
const MAX_PER_GENERATION: usize = 1 << 20;

/// The verdict an INVITE got the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Admitted,
    Refused(Shed),
}

pub struct RecentInvites {
    current: HashMap<u64, Seen>,
    previous: HashMap<u64, Seen>,
    started: Option<Instant>,
    hasher: RandomState,
}

impl Default for RecentInvites {
    fn default() -> Self {
        RecentInvites {
            current: HashMap::new(),
            previous: HashMap::new(),
            started: None,
            hasher: RandomState::new(),
        }
    }
}

impl RecentInvites {
    /// What `request` from `source` got before, if it is a retransmission.
    pub fn seen(&mut self, now: Instant, request: &Request, source: SocketAddr) -> Option<Seen> {
        self.rotate(now);
        let key = self.key(request, source);
        self.current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .copied()
    }

    /// Remembers the verdict `request` got (a later one replaces it).
    pub fn record(&mut self, now: Instant, request: &Request, source: SocketAddr, verdict: Seen) {
        self.rotate(now);
        if self.current.len() >= MAX_PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
            self.started = Some(now);
        }
        let key = self.key(request, source);
        self.current.insert(key, verdict);
    }

    /// INVITEs remembered (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rotate(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        if now.duration_since(started) >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
            // A generation wholly in the past: nothing of it can still be
            // retransmitted.
            if now.duration_since(started) >= 2 * GENERATION {
                self.previous.clear();
            }
            self.previous.shrink_to_fit();
            self.started = Some(now);
        }
    }

    /// A retransmission repeats the source, Call-ID, CSeq and top Via branch
    /// (sent-by included, for RFC 2543 peers without a branch).
    fn key(&self, request: &Request, source: SocketAddr) -> u64 {
        let via = request.top_via();
        self.hasher.hash_one((
            source,
            request.call_id.as_str(),
            request.cseq.seq,
            via.branch(),
            via.sent_by(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CallShed;
    use crate::sip::{Message, decode};

    fn invite(call_id: &str, branch: &str) -> Request {
        let text = format!(
            "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK{branch}\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const REFUSED: Seen = Seen::Refused(Shed {
        reason: CallShed::MaxCps,
        retry_after: 1,
    });

    #[test]
    fn a_retransmission_gets_the_first_verdict_for_64_t1() {
        let t0 = Instant::now();
        let source: SocketAddr = "10.0.0.2:5060".parse().expect("addr");
        let mut recent = RecentInvites::default();
        let (a, b) = (invite("a", "1"), invite("b", "2"));
        assert_eq!(recent.seen(t0, &a, source), None);
        recent.record(t0, &a, source, Seen::Admitted);
        recent.record(t0, &b, source, REFUSED);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(recent.seen(later, &a, source), Some(Seen::Admitted));
        assert_eq!(recent.seen(later, &b, source), Some(REFUSED));
        // Another branch, Call-ID or source is another INVITE.
        assert_eq!(recent.seen(later, &invite("a", "3"), source), None);
        let elsewhere: SocketAddr = "10.0.0.9:5060".parse().expect("addr");
        assert_eq!(recent.seen(later, &a, elsewhere), None);
        // Still known through the next generation, gone after it.
        assert_eq!(
            recent.seen(t0 + Duration::from_secs(40), &a, source),
            Some(Seen::Admitted)
        );
        assert_eq!(recent.seen(t0 + Duration::from_secs(80), &a, source), None);
        assert!(recent.is_empty());
    }

    #[test]
    fn a_later_verdict_replaces_the_first() {
        let t0 = Instant::now();
        let source: SocketAddr = "10.0.0.2:5060".parse().expect("addr");
        let mut recent = RecentInvites::default();
        let a = invite("a", "1");
        recent.record(t0, &a, source, Seen::Admitted);
        recent.record(t0, &a, source, REFUSED);
        assert_eq!(recent.seen(t0, &a, source), Some(REFUSED));
        assert_eq!(recent.len(), 1);
    }
}
