//! The stateless front of the switch: every datagram is decoded and judged here
//! before any state exists for it.
//!
//! - junk and malformed responses are dropped (rate-limited log);
//! - a malformed request is answered 400 (or 505) when it can be addressed;
//! - a request from an address no trunk admits is answered 403 and forgotten,
//!   unless it claims to be inside a dialog (a worker then checks the claim);
//! - a request from a source over `limits.per_source_rps` is dropped, and a new
//!   INVITE over `limits.max_calls`/`max_cps` answered 503 ([`overload`]);
//! - everything else goes to the worker that owns its Call-ID or branch.
//!
//! What goes to no worker is counted by reason (`vigil_datagrams_dropped_total`).

pub mod overload;
pub mod recent;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ids::REGISTRAR_WORKER;
use crate::ids::{IdGen, worker_of};
use crate::metrics::{DatagramDrop, Metrics};
use crate::ratelimit::RateLimit;
use crate::sip::{DecodeError, Message, Method, Request, decode};
use crate::transaction::{Path, response_target};
use overload::{Overload, Shed};
use recent::{RecentInvites, Seen};

/// What to do with a datagram.
#[derive(Debug)]
pub enum Verdict {
    /// Hand to worker `worker`. `admitted` is false for an in-dialog request from
    /// an unknown address. `fresh_call` is true for the first copy of a new
    /// INVITE: only such a one may still be shed (not a retransmission of a
    /// call already let in, whose caller must not get a 503 for it).
    Dispatch {
        worker: usize,
        message: Box<Message>,
        admitted: bool,
        fresh_call: bool,
    },
    /// Hand to the registrar: a REGISTER, or an answer to its keep-alive pings.
    Registrar(Box<Message>),
    /// Answer statelessly.
    Reply { bytes: Vec<u8>, to: SocketAddr },
    /// Ignore.
    Drop(DropReason),
}

/// Why a datagram was dropped (for counters and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    KeepAlive,
    Malformed,
    Forbidden,
    /// A response to nothing Vigil sent.
    Stray,
    /// The source is over `limits.per_source_rps`.
    Flood,
}

/// One receive path's judge. Each receive task owns one (`&mut self`, no locks).
pub struct Ingress {
    workers: usize,
    ids: IdGen,
    malformed_log: RateLimit,
    forbidden_log: RateLimit,
    /// Counts what goes to no worker (shared with the daemon).
    metrics: Arc<Metrics>,
    /// The overload limits (shared by every receive loop).
    overload: Arc<Overload>,
    /// The verdicts new INVITEs got, for their retransmissions.
    recent: RecentInvites,
}

impl Ingress {
    pub fn new(workers: usize) -> Ingress {
        Ingress::with_metrics(workers, Arc::new(Metrics::default()))
    }

    /// An ingress counting its drops into the daemon's `metrics`.
    pub fn with_metrics(workers: usize, metrics: Arc<Metrics>) -> Ingress {
        Ingress {
            workers: workers.max(1),
            ids: IdGen::new(u8::MAX),
            malformed_log: RateLimit::new(10, Duration::from_secs(10)),
            forbidden_log: RateLimit::new(10, Duration::from_secs(10)),
            metrics,
            overload: Arc::new(Overload::unlimited()),
            recent: RecentInvites::default(),
        }
    }

    /// Applies the limits in force (at start and after a reload).
    pub fn set_overload(&mut self, overload: Arc<Overload>) {
        self.overload = overload;
    }

    /// Answers a new INVITE `503` with `Retry-After` (it is shed), counts it
    /// and remembers it, so that its retransmissions get the same answer.
    pub fn shed(
        &mut self,
        now: Instant,
        request: &Request,
        path: Path,
        config: &Config,
        why: Shed,
    ) -> Verdict {
        self.metrics.call_shed(why.reason);
        self.recent
            .record(now, request, path.remote, Seen::Refused(why));
        self.refusal(request, path, config, why)
    }

    /// The stateless `503` with `Retry-After` for a shed INVITE.
    fn refusal(&mut self, request: &Request, path: Path, config: &Config, why: Shed) -> Verdict {
        let tag = self.ids.tag();
        let mut r = why.reply().to(request, Some(&tag), "");
        r.via[0].stamp_received(path.remote);
        let to = response_target(&r.via[0], path.remote, config.sip.force_rport);
        Verdict::Reply {
            bytes: r.encode(),
            to,
        }
    }

    /// Counts a datagram the receive path dropped before judging it (too
    /// large) or after (its worker's queue was full).
    pub fn dropped(&self, reason: DatagramDrop) {
        self.metrics.datagram_dropped(reason);
    }

    /// A datagram was read after waiting `waited` in the kernel's buffer.
    pub fn waited(&self, waited: Duration) {
        self.metrics.receive_wait.record(waited);
    }

    pub fn classify(
        &mut self,
        now: Instant,
        config: &Config,
        datagram: &[u8],
        path: Path,
    ) -> Verdict {
        let admitted = config.admits(path.remote.ip());
        let message = match decode(datagram) {
            Ok(m) => m,
            Err(DecodeError::KeepAlive) => return Verdict::Drop(DropReason::KeepAlive),
            Err(DecodeError::BadRequest {
                status,
                reason,
                reply: Some(reply),
            }) => {
                self.log_malformed(now, path, &reason);
                self.metrics.datagram_dropped(DatagramDrop::Malformed);
                let (status, reason) = if admitted {
                    (status, reason)
                } else {
                    (403, "Forbidden".to_string())
                };
                let to = reply.top_via.as_ref().map_or(path.remote, |v| {
                    response_target(v, path.remote, config.sip.force_rport)
                });
                let tag = self.ids.tag();
                return Verdict::Reply {
                    bytes: reply.render(status, &reason, path.remote, &tag),
                    to,
                };
            }
            Err(e) => {
                self.log_malformed(now, path, &e.to_string());
                self.metrics.datagram_dropped(DatagramDrop::Malformed);
                return Verdict::Drop(DropReason::Malformed);
            }
        };
        match message {
            Message::Response(response) => match response.top_via().branch().and_then(worker_of) {
                Some(worker)
                    if worker == usize::from(REGISTRAR_WORKER) && config.registrar.is_some() =>
                {
                    Verdict::Registrar(Box::new(Message::Response(response)))
                }
                Some(worker) if worker < self.workers => Verdict::Dispatch {
                    worker,
                    message: Box::new(Message::Response(response)),
                    admitted,
                    fresh_call: false,
                },
                _ => {
                    self.metrics.datagram_dropped(DatagramDrop::Stray);
                    Verdict::Drop(DropReason::Stray)
                }
            },
            Message::Request(request) => {
                if !self.overload.source_allowed(now, path.remote.ip()) {
                    self.metrics.datagram_dropped(DatagramDrop::Flood);
                    return Verdict::Drop(DropReason::Flood);
                }
                if request.method == Method::Register && config.registrar.is_some() {
                    // Users register from anywhere; the registrar authenticates them.
                    return Verdict::Registrar(Box::new(Message::Request(request)));
                }
                if !admitted && !request.is_in_dialog() && !is_user_call(config, &request) {
                    if let Some(suppressed) = self.forbidden_log.allow(now) {
                        tracing::warn!(
                            source = %path.remote, method = %request.method, call_id = %request.call_id,
                            suppressed, "request from an address no trunk admits: 403"
                        );
                    }
                    self.metrics.datagram_dropped(DatagramDrop::Forbidden);
                    if request.method == Method::Ack {
                        return Verdict::Drop(DropReason::Forbidden);
                    }
                    let mut r = request.response(403);
                    let tag = self.ids.tag();
                    r.to.set_tag(&tag);
                    r.via[0].stamp_received(path.remote);
                    let to = response_target(&r.via[0], path.remote, config.sip.force_rport);
                    return Verdict::Reply {
                        bytes: r.encode(),
                        to,
                    };
                }
                let mut fresh_call = false;
                if request.is_initial_invite() {
                    match self.recent.seen(now, &request, path.remote) {
                        // A retransmission: the first copy's answer stands.
                        Some(Seen::Admitted) => {}
                        Some(Seen::Refused(why)) => {
                            return self.refusal(&request, path, config, why);
                        }
                        None => {
                            if let Err(why) = self.overload.admit_call() {
                                return self.shed(now, &request, path, config, why);
                            }
                            self.recent
                                .record(now, &request, path.remote, Seen::Admitted);
                            fresh_call = true;
                        }
                    }
                }
                let worker = worker_for(&request.call_id, self.workers);
                Verdict::Dispatch {
                    worker,
                    message: Box::new(Message::Request(request)),
                    admitted,
                    fresh_call,
                }
            }
        }
    }

    fn log_malformed(&mut self, now: Instant, path: Path, reason: &str) {
        if let Some(suppressed) = self.malformed_log.allow(now) {
            tracing::warn!(source = %path.remote, %reason, suppressed, "malformed datagram");
        }
    }
}

/// A call from a configured user, who may call from any address once its INVITE
/// carries valid credentials (the worker challenges it); its ACK and CANCEL too.
fn is_user_call(config: &Config, request: &crate::sip::Request) -> bool {
    config.registrar.is_some()
        && matches!(
            request.method,
            Method::Invite | Method::Ack | Method::Cancel
        )
        && request
            .from
            .uri
            .user_part()
            .is_some_and(|u| config.user(&u).is_some())
}

/// The worker a request with this Call-ID goes to: the one a Vigil-made
/// Call-ID names, else a stable hash of it (a restored call is resumed
/// there, so its dialogs' requests find it).
pub fn worker_for(call_id: &str, workers: usize) -> usize {
    worker_of(call_id)
        .filter(|&w| w < workers)
        .unwrap_or_else(|| shard(call_id, workers))
}

/// The worker for a Call-ID Vigil did not generate: a stable hash, so every
/// message of the caller's dialog lands on the same worker.
fn shard(call_id: &str, workers: usize) -> usize {
    let mut h = DefaultHasher::new();
    call_id.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path as FsPath;

    fn config() -> Config {
        Config::parse(
            "listen: [\"udp:127.0.0.1:5060\"]\ntrunks:\n  - { name: pbx, inbound: { from: [\"127.0.0.2\"] } }\ncdr: { path: x }\n",
            FsPath::new("t.yaml"),
        )
        .expect("config")
    }

    fn path(remote: &str) -> Path {
        Path {
            local: "127.0.0.1:5060".parse().expect("addr"),
            remote: remote.parse().expect("addr"),
            proto: crate::sip::Protocol::Udp,
        }
    }

    const OPTIONS: &str = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bKq\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: q1\r\nCSeq: 1 OPTIONS\r\n\r\n";

    #[test]
    fn unknown_sources_get_403_statelessly_at_their_source_address() {
        let mut ingress = Ingress::new(2);
        let v = ingress.classify(
            Instant::now(),
            &config(),
            OPTIONS.as_bytes(),
            path("203.0.113.7:40000"),
        );
        let Verdict::Reply { bytes, to } = v else {
            panic!("expected a reply, got {v:?}");
        };
        assert_eq!(to, "203.0.113.7:40000".parse().expect("addr"));
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with("SIP/2.0 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("received=203.0.113.7"), "{text}");
    }

    #[test]
    fn admitted_requests_are_sharded_by_call_id() {
        let mut ingress = Ingress::new(4);
        let first = ingress.classify(
            Instant::now(),
            &config(),
            OPTIONS.as_bytes(),
            path("127.0.0.2:5061"),
        );
        let second = ingress.classify(
            Instant::now(),
            &config(),
            OPTIONS.as_bytes(),
            path("127.0.0.2:5061"),
        );
        match (first, second) {
            (Verdict::Dispatch { worker: a, .. }, Verdict::Dispatch { worker: b, .. }) => {
                assert_eq!(a, b)
            }
            other => panic!("{other:?}"),
        }
        let ours = OPTIONS.replace("Call-ID: q1", "Call-ID: vgl03-abc");
        match ingress.classify(
            Instant::now(),
            &config(),
            ours.as_bytes(),
            path("127.0.0.2:5061"),
        ) {
            Verdict::Dispatch { worker, .. } => assert_eq!(worker, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn junk_is_dropped_and_bad_requests_answered() {
        let metrics = Arc::new(Metrics::default());
        let mut ingress = Ingress::with_metrics(1, metrics.clone());
        let now = Instant::now();
        assert!(matches!(
            ingress.classify(now, &config(), b"\r\n\r\n", path("127.0.0.2:5061")),
            Verdict::Drop(DropReason::KeepAlive)
        ));
        assert!(matches!(
            ingress.classify(now, &config(), &[0xff, 0x00, 0x13], path("127.0.0.2:5061")),
            Verdict::Drop(DropReason::Malformed)
        ));
        let bad = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
        match ingress.classify(now, &config(), bad.as_bytes(), path("127.0.0.2:5061")) {
            Verdict::Reply { bytes, .. } => {
                assert!(String::from_utf8_lossy(&bytes).starts_with("SIP/2.0 400 Invalid CSeq"))
            }
            other => panic!("{other:?}"),
        }
        let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnotours\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(matches!(
            ingress.classify(now, &config(), stray.as_bytes(), path("127.0.0.2:5061")),
            Verdict::Drop(DropReason::Stray)
        ));
        let counted = |r| metrics.datagrams_dropped(r);
        assert_eq!(counted(DatagramDrop::Malformed), 2, "junk and the bad CSeq");
        assert_eq!(counted(DatagramDrop::Stray), 1);
        assert_eq!(counted(DatagramDrop::Forbidden), 0);
        ingress.classify(now, &config(), OPTIONS.as_bytes(), path("203.0.113.7:4000"));
        assert_eq!(counted(DatagramDrop::Forbidden), 1);
    }

    fn invite(call_id: &str) -> Vec<u8> {
        format!(
            "INVITE sip:1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK{call_id}\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:1@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n"
        )
        .into_bytes()
    }

    /// Found by the 3x spike benchmark: a retransmitted INVITE of an admitted
    /// call looked new and got a 503 once the bucket was empty; its caller
    /// gave up while the call went on, to be billed 32 s at its ACK timeout.
    #[test]
    fn retransmissions_get_the_verdict_of_their_first_copy() {
        let metrics = Arc::new(Metrics::default());
        let mut ingress = Ingress::with_metrics(2, metrics.clone());
        let limits = crate::config::LimitsConfig {
            max_cps: Some(1),
            ..Default::default()
        };
        ingress.set_overload(Arc::new(Overload::new(&limits, metrics.clone())));
        let (config, now, from) = (config(), Instant::now(), path("127.0.0.2:5061"));
        let fresh = |v: &Verdict| match v {
            Verdict::Dispatch { fresh_call, .. } => Some(*fresh_call),
            _ => None,
        };
        let is_503 = |v: &Verdict| matches!(v, Verdict::Reply { bytes, .. } if bytes.starts_with(b"SIP/2.0 503"));
        let first = ingress.classify(now, &config, &invite("a"), from);
        assert_eq!(fresh(&first), Some(true), "admitted: {first:?}");
        let again = ingress.classify(now, &config, &invite("a"), from);
        assert_eq!(fresh(&again), Some(false), "its retransmission: {again:?}");
        let other = ingress.classify(now, &config, &invite("b"), from);
        assert!(is_503(&other), "over max_cps: {other:?}");
        // The bucket refills on the real clock.
        std::thread::sleep(Duration::from_millis(1100));
        let later = now + Duration::from_secs(2);
        let other_again = ingress.classify(later, &config, &invite("b"), from);
        assert!(
            is_503(&other_again),
            "refused again, though a token is free: {other_again:?}"
        );
        assert_eq!(
            metrics.calls_shed(crate::metrics::CallShed::MaxCps),
            1,
            "a call is counted once"
        );
        let c = ingress.classify(later, &config, &invite("c"), from);
        assert_eq!(fresh(&c), Some(true), "the token went to a new call");
    }
}
