//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): nonces that expire
//! and cannot be replayed, MD5 and SHA-256 responses with `qop=auth`, and a cap on
//! failed attempts per source address.
//!
//! Nonces carry their own issue time and an HMAC over it (a per-process key), so
//! checking one needs no table; a table of nonces already used, each with the
//! highest nonce-count seen, stops replays until the nonce expires anyway.
//!
//! Each thread that checks credentials (the registrar, every call worker) owns
//! its own `DigestAuth`, made from the same key, so no worker waits on another.
//! A nonce carries the number of the one that issued it and is accepted only
//! there — where its replay record is — elsewhere it is stale and the client
//! is challenged again (RFC 7616 §3.3: it retries without asking its user).
//! A retried request keeps its Call-ID and so reaches the same worker. Failed
//! attempts are counted per owner: a source is refused after
//! [`MAX_FAILURES`] on any of them.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::sip::{DigestAlgorithm, DigestChallenge, DigestCredentials, Request, digest_response};

/// Failed attempts a source may make per [`FAILURE_WINDOW`] before it is refused
/// without a challenge.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Nonces remembered for replay protection; beyond this the oldest are
/// forgotten (their replays then fail as expired soon anyway).
const MAX_REMEMBERED_NONCES: usize = 200_000;

/// Where a nonce counter keeps its issuer.
const ISSUER_SHIFT: u32 = 56;
const COUNTER_MASK: u64 = (1 << ISSUER_SHIFT) - 1;

/// What a request's credentials are worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid, fresh credentials of this user.
    Accepted,
    /// Right password but an expired nonce: challenge again with `stale=true`.
    Stale,
    /// Wrong, replayed or malformed: challenge again (and count the failure).
    Rejected(&'static str),
    /// The very request that last used this nonce, seen again within
    /// [`RETRANSMISSION_WINDOW`]: a retransmission whose answer was lost, to be
    /// answered again without acting on it twice.
    Retransmission,
}

/// How long a request's retransmissions can arrive: Timer J (64·T1, 32 s with
/// RFC 3261's T1). A registrar that answers statelessly recognises them by this.
pub const RETRANSMISSION_WINDOW: Duration = Duration::from_secs(32);

#[derive(Clone)]
struct NonceUse {
    last_nc: u32,
    /// [`DigestAuth::fingerprint`] of the request that used `last_nc`, and when.
    last_request: u64,
    last_at: Instant,
}

/// Issues nonces and checks credentials for one realm. Which algorithms a
/// user is challenged with (and may answer with) is the config's, passed in on
/// each call, so a reload changes them at the next challenge. One per thread
/// (see the module's doc).
#[derive(Clone)]
pub struct DigestAuth {
    realm: String,
    key: Vec<u8>,
    epoch: Instant,
    lifetime: Duration,
    /// The owner's number (a worker's, or the registrar's), in the top byte
    /// of every nonce counter it issues.
    issuer: u8,
    counter: u64,
    /// Nonces used so far, by their (process-unique) counter: a few bytes each,
    /// where the nonce text would cost a hundred during a registration storm.
    used: HashMap<u64, NonceUse>,
    used_order: VecDeque<(Instant, u64)>,
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// Keyed per process, so that nobody can make two requests look alike.
    fingerprints: RandomState,
}

impl DigestAuth {
    /// `key` signs nonces (random per process); `epoch` is when time starts for
    /// them.
    pub fn new(realm: &str, key: &[u8], epoch: Instant, lifetime: Duration) -> DigestAuth {
        DigestAuth {
            realm: realm.to_string(),
            key: key.to_vec(),
            epoch,
            lifetime,
            issuer: 0,
            counter: 0,
            used: HashMap::new(),
            used_order: VecDeque::new(),
            failures: HashMap::new(),
            fingerprints: RandomState::new(),
        }
    }

    /// The same checker for another owner (a worker, the registrar): its
    /// nonces are its own.
    pub fn issued_by(mut self, issuer: u8) -> DigestAuth {
        self.issuer = issuer;
        self
    }

    /// What identifies a request among its retransmissions (RFC 3261 §17.2.3):
    /// Call-ID, CSeq and the top Via's branch, hashed with a per-process key.
    pub fn fingerprint(&self, request: &Request) -> u64 {
        let branch = request.via.first().and_then(|v| v.branch());
        self.fingerprints
            .hash_one((&request.call_id, request.cseq.seq, branch))
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, stamp: &str) -> String {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(stamp.as_bytes());
        mac.update(self.realm.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    /// A fresh nonce: issue time, a counter (its top byte the issuer), and
    /// their HMAC.
    pub fn nonce(&mut self, now: Instant) -> String {
        self.counter = (self.counter + 1) & COUNTER_MASK;
        let stamp = format!(
            "{:x}-{:x}",
            now.saturating_duration_since(self.epoch).as_secs(),
            (u64::from(self.issuer) << ISSUER_SHIFT) | self.counter
        );
        let mac = self.mac(&stamp);
        format!("{stamp}-{mac}")
    }

    /// One challenge per algorithm in `algorithms` (the user's, in order of
    /// preference: RFC 8760 §2.4), sharing one fresh nonce.
    pub fn challenges(
        &mut self,
        now: Instant,
        stale: bool,
        algorithms: &[DigestAlgorithm],
    ) -> Vec<DigestChallenge> {
        let nonce = self.nonce(now);
        algorithms
            .iter()
            .map(|&algorithm| DigestChallenge {
                realm: self.realm.clone(),
                nonce: nonce.clone(),
                algorithm,
                algorithm_named: true,
                qop_auth: true,
                opaque: None,
                stale,
            })
            .collect()
    }

    /// When `nonce` was issued and its counter, if Vigil issued it.
    fn issued(&self, nonce: &str) -> Option<(Instant, u64)> {
        let (stamp, mac) = nonce.rsplit_once('-')?;
        if !constant_time_eq(mac.as_bytes(), self.mac(stamp).as_bytes()) {
            return None;
        }
        let (secs, counter) = stamp.split_once('-')?;
        let secs = u64::from_str_radix(secs, 16).ok()?;
        let counter = u64::from_str_radix(counter, 16).ok()?;
        Some((self.epoch.checked_add(Duration::from_secs(secs))?, counter))
    }

    /// Checks `creds`, sent with a request with `method` whose
    /// [`fingerprint`](Self::fingerprint) is `request`, against `password`;
    /// only an algorithm in `algorithms` (the user's) is accepted.
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        creds: &DigestCredentials,
        password: &str,
        algorithms: &[DigestAlgorithm],
        request: u64,
    ) -> Verdict {
        self.forget_expired(now);
        if creds.realm != self.realm {
            return Verdict::Rejected("wrong realm");
        }
        let Some(algorithm) =
            DigestAlgorithm::parse(creds.algorithm.as_deref()).filter(|a| algorithms.contains(a))
        else {
            return Verdict::Rejected("unsupported algorithm");
        };
        if creds
            .qop
            .as_deref()
            .is_some_and(|q| !q.eq_ignore_ascii_case("auth"))
        {
            return Verdict::Rejected("unsupported qop");
        }
        let Some((issued, counter)) = self.issued(&creds.nonce) else {
            return Verdict::Rejected("not a nonce Vigil issued");
        };
        let expected = digest_response(algorithm, creds, password, method);
        if !constant_time_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Rejected("wrong response");
        }
        if now.saturating_duration_since(issued) > self.lifetime
            || counter >> ISSUER_SHIFT != u64::from(self.issuer)
        {
            // Too old, or another owner's (its replay record is there).
            return Verdict::Stale;
        }
        // qop=auth: each use must count up; without qop the nonce is single-use.
        let nc = match &creds.nc {
            Some(nc) => match u32::from_str_radix(nc, 16) {
                Ok(n) if n > 0 => n,
                _ => return Verdict::Rejected("invalid nonce count"),
            },
            None => 1,
        };
        let this_use = NonceUse {
            last_nc: nc,
            last_request: request,
            last_at: now,
        };
        match self.used.get_mut(&counter) {
            Some(used)
                if nc == used.last_nc
                    && request == used.last_request
                    && now.saturating_duration_since(used.last_at) <= RETRANSMISSION_WINDOW =>
            {
                Verdict::Retransmission
            }
            Some(used) if nc <= used.last_nc => Verdict::Rejected("replayed nonce"),
            Some(used) => {
                *used = this_use;
                Verdict::Accepted
            }
            None => {
                let expires = issued + self.lifetime;
                self.used.insert(counter, this_use);
                self.used_order.push_back((expires, counter));
                if self.used_order.len() > MAX_REMEMBERED_NONCES
                    && let Some((_, oldest)) = self.used_order.pop_front()
                {
                    self.used.remove(&oldest);
                }
                Verdict::Accepted
            }
        }
    }

    /// Drops the replay records of nonces that have expired anyway.
    pub fn forget_expired(&mut self, now: Instant) {
        while let Some((expires, _)) = self.used_order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, counter)) = self.used_order.pop_front() {
                self.used.remove(&counter);
            }
        }
        // After a burst of registrations the tables keep their capacity.
        let peak = self.used.capacity();
        crate::shrink::after_burst(&mut self.used);
        if self.used.capacity() < peak {
            self.used_order.shrink_to(self.used_order.len() * 2);
        }
    }

    /// Counts a failed attempt from `source`.
    pub fn note_failure(&mut self, now: Instant, source: IpAddr) {
        let entry = self.failures.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if self.failures.len() > 100_000 {
            self.failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
        }
    }

    /// True if `source` failed too often lately: refuse it without a challenge.
    pub fn is_blocked(&self, now: Instant, source: IpAddr) -> bool {
        self.failures.get(&source).is_some_and(|(start, count)| {
            *count >= MAX_FAILURES && now.saturating_duration_since(*start) < FAILURE_WINDOW
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[DigestAlgorithm] = &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5];

    /// What a phone answers to `challenge`.
    fn answer(
        auth: &mut DigestAuth,
        now: Instant,
        algorithm: DigestAlgorithm,
        password: &str,
        nc: u32,
    ) -> DigestCredentials {
        let nonce = auth.challenges(now, false, BOTH)[0].nonce.clone();
        sign(nonce, algorithm, password, nc)
    }

    fn sign(
        nonce: String,
        algorithm: DigestAlgorithm,
        password: &str,
        nc: u32,
    ) -> DigestCredentials {
        let mut c = DigestCredentials {
            username: "1001".into(),
            realm: "vigil.local".into(),
            nonce,
            uri: "sip:vigil.local".into(),
            response: String::new(),
            algorithm: Some(algorithm.name().into()),
            cnonce: Some("c0ffee".into()),
            qop: Some("auth".into()),
            nc: Some(format!("{nc:08x}")),
            opaque: None,
        };
        c.response = digest_response(algorithm, &c, password, "REGISTER");
        c
    }

    fn auth(t0: Instant) -> DigestAuth {
        DigestAuth::new("vigil.local", b"test key", t0, Duration::from_secs(300))
    }

    #[test]
    fn good_credentials_pass_with_both_algorithms() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let c = answer(&mut a, t0, alg, "secret1001", 1);
            assert_eq!(
                a.verify(t0, "REGISTER", &c, "secret1001", BOTH, 1),
                Verdict::Accepted
            );
        }
    }

    /// Each thread owns its checker (issue 16: no worker waits on another);
    /// a nonce is good only where it was issued, where its replay record is.
    #[test]
    fn a_nonce_is_accepted_only_by_the_owner_that_issued_it() {
        let t0 = Instant::now();
        let mut registrar = auth(t0).issued_by(0xfe);
        let mut worker = registrar.clone().issued_by(1);
        let c = answer(&mut registrar, t0, DigestAlgorithm::Md5, "secret1001", 1);
        assert_eq!(
            worker.verify(t0, "REGISTER", &c, "secret1001", BOTH, 1),
            Verdict::Stale,
            "another owner's nonce: challenged again, without counting a failure"
        );
        assert_eq!(
            registrar.verify(t0, "REGISTER", &c, "secret1001", BOTH, 2),
            Verdict::Accepted
        );
        let mine = answer(&mut worker, t0, DigestAlgorithm::Md5, "secret1001", 1);
        assert_ne!(mine.nonce, c.nonce);
        assert_eq!(
            worker.verify(t0, "REGISTER", &mine, "secret1001", BOTH, 3),
            Verdict::Accepted
        );
        assert_eq!(
            worker.verify(t0, "REGISTER", &mine, "secret1001", BOTH, 4),
            Verdict::Rejected("replayed nonce")
        );
    }

    #[test]
    fn only_the_users_algorithms_are_offered_and_accepted() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let sha_only = &[DigestAlgorithm::Sha256];
        let offered: Vec<DigestAlgorithm> = a
            .challenges(t0, false, sha_only)
            .iter()
            .map(|c| c.algorithm)
            .collect();
        assert_eq!(offered, sha_only);
        let md5 = answer(&mut a, t0, DigestAlgorithm::Md5, "secret1001", 1);
        assert_eq!(
            a.verify(t0, "REGISTER", &md5, "secret1001", sha_only, 1),
            Verdict::Rejected("unsupported algorithm"),
            "a user held to SHA-256 cannot answer with MD5"
        );
        let sha = answer(&mut a, t0, DigestAlgorithm::Sha256, "secret1001", 1);
        assert_eq!(
            a.verify(t0, "REGISTER", &sha, "secret1001", sha_only, 2),
            Verdict::Accepted
        );
    }

    #[test]
    fn wrong_password_forged_nonce_and_replay_fail() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let c = answer(&mut a, t0, DigestAlgorithm::Sha256, "wrong", 1);
        assert_eq!(
            a.verify(t0, "REGISTER", &c, "secret1001", BOTH, 1),
            Verdict::Rejected("wrong response")
        );
        let forged = sign(
            "1-1-000000000000000000000000".into(),
            DigestAlgorithm::Md5,
            "secret1001",
            1,
        );
        assert_eq!(
            a.verify(t0, "REGISTER", &forged, "secret1001", BOTH, 1),
            Verdict::Rejected("not a nonce Vigil issued")
        );
        let c = answer(&mut a, t0, DigestAlgorithm::Md5, "secret1001", 1);
        assert_eq!(
            a.verify(t0, "REGISTER", &c, "secret1001", BOTH, 1),
            Verdict::Accepted
        );
        assert_eq!(
            a.verify(t0, "REGISTER", &c, "secret1001", BOTH, 2),
            Verdict::Rejected("replayed nonce"),
            "another request with a used nonce count"
        );
        assert_eq!(
            a.verify(
                t0 + Duration::from_secs(5),
                "REGISTER",
                &c,
                "secret1001",
                BOTH,
                1
            ),
            Verdict::Retransmission,
            "the same request again, soon"
        );
        assert_eq!(
            a.verify(
                t0 + Duration::from_secs(33),
                "REGISTER",
                &c,
                "secret1001",
                BOTH,
                1
            ),
            Verdict::Rejected("replayed nonce"),
            "the same request, later than any retransmission"
        );
        let next = sign(c.nonce.clone(), DigestAlgorithm::Md5, "secret1001", 2);
        assert_eq!(
            a.verify(t0, "REGISTER", &next, "secret1001", BOTH, 1),
            Verdict::Accepted,
            "nc counts up"
        );
        let wrong_method = sign(c.nonce.clone(), DigestAlgorithm::Md5, "secret1001", 3);
        assert_eq!(
            a.verify(t0, "INVITE", &wrong_method, "secret1001", BOTH, 1),
            Verdict::Rejected("wrong response")
        );
    }

    #[test]
    fn nonces_expire_as_stale() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let c = answer(&mut a, t0, DigestAlgorithm::Sha256, "secret1001", 1);
        assert_eq!(
            a.verify(
                t0 + Duration::from_secs(301),
                "REGISTER",
                &c,
                "secret1001",
                BOTH,
                1
            ),
            Verdict::Stale
        );
    }

    #[test]
    fn a_source_that_keeps_failing_is_blocked_for_a_while() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(!a.is_blocked(t0, ip));
            a.note_failure(t0, ip);
        }
        assert!(a.is_blocked(t0, ip));
        assert!(!a.is_blocked(t0 + FAILURE_WINDOW, ip));
    }
}
