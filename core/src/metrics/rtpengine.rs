//! Each rtpengine's counters (issue 17), shared by every worker's ng client
//! that talks to it, labelled by the engine's address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Histogram, Metrics};

/// Why an rtpengine ng request failed (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgFailure {
    /// No reply after every retransmission.
    Timeout,
    /// rtpengine answered `result: error`.
    Rejected,
    /// A reply with the request's cookie that did not decode as one.
    Malformed,
}

impl NgFailure {
    pub const ALL: [NgFailure; 3] = [
        NgFailure::Timeout,
        NgFailure::Rejected,
        NgFailure::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NgFailure::Timeout => "timeout",
            NgFailure::Rejected => "rejected",
            NgFailure::Malformed => "malformed",
        }
    }
}

/// One rtpengine's counters (issue 17), shared by every worker's ng client
/// that talks to it: registered once per address by [`Metrics::rtpengine`].
#[derive(Debug)]
pub struct RtpEngineCounters {
    /// The engine's ng address (the `engine` label).
    pub addr: SocketAddr,
    /// ng requests sent, health pings included (not their retransmissions).
    pub requests: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Requests that failed, by [`NgFailure`].
    failures: [AtomicU64; NgFailure::ALL.len()],
    /// Replies that came after their request had timed out (dropped).
    pub late_replies: AtomicU64,
    /// From a request's first send to its reply.
    pub round_trip: Histogram,
    /// Clients that track this engine, and how many of them see it up.
    clients: AtomicU64,
    clients_up: AtomicU64,
}

impl RtpEngineCounters {
    pub(super) fn new(addr: SocketAddr) -> RtpEngineCounters {
        RtpEngineCounters {
            addr,
            requests: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
            failures: Default::default(),
            late_replies: AtomicU64::new(0),
            round_trip: Histogram::default(),
            clients: AtomicU64::new(0),
            clients_up: AtomicU64::new(0),
        }
    }

    pub fn failed(&self, kind: NgFailure) {
        Metrics::count(&self.failures[kind as usize]);
    }

    pub fn failures(&self, kind: NgFailure) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }

    /// A client starts tracking this engine (it starts as down).
    pub fn watch(&self) {
        Metrics::count(&self.clients);
    }

    /// A client stops tracking this engine; `up` is how it last saw it.
    pub fn unwatch(&self, up: bool) {
        if up {
            self.went_down();
        }
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// A client that saw this engine down now sees it up.
    pub fn went_up(&self) {
        Metrics::count(&self.clients_up);
    }

    /// A client that saw this engine up now sees it down.
    pub fn went_down(&self) {
        self.clients_up.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether every client that tracks this engine sees it up (one worker
    /// whose requests time out is enough to call it down); `None` when no
    /// client tracks it any more.
    pub fn is_up(&self) -> Option<bool> {
        let clients = self.clients.load(Ordering::Relaxed);
        (clients > 0).then(|| self.clients_up.load(Ordering::Relaxed) >= clients)
    }
}
