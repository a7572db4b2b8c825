//! Server transactions (RFC 3261 §17.2): INVITE (figure 7, with RFC 6026's
//! Accepted state) and non-INVITE (figure 8).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Path, TimerValues, Transmit};
use crate::sip::{Method, Protocol, Request, Response};
use crate::timer::Scheduled;
use crate::timer_table;

timer_table!(
    /// G retransmits a non-2xx final, H waits for its ACK, I/J/L linger.
    /// Rel retransmits a reliable provisional and RelGiveUp ends its wait for
    /// the PRACK (RFC 3262 §3: T1 doubling, for 64*T1).
    ServerTimers: ServerTimer { G, H, I, J, L, Rel, RelGiveUp }
);

/// What a server transaction's timers report to the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerTimeout {
    /// Timer H: the ACK for a non-2xx final never came.
    Ack,
    /// A reliable provisional went unacknowledged for 64*T1.
    Prack,
}

/// Server transaction states. INVITE starts in Proceeding; non-INVITE in Trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    /// RFC 6026: a 2xx was sent; the user retransmits it, INVITE copies are absorbed.
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

pub(super) struct ServerTx<O> {
    pub(super) state: ServerState,
    invite: bool,
    pub(super) key: String,
    pub(super) local: SocketAddr,
    /// Its transport: over TCP and TLS nothing is retransmitted and the
    /// transaction does not linger (RFC 3261 §17.2.1, §17.2.2: Timers G, I
    /// and J are zero).
    pub(super) proto: Protocol,
    /// The address the request came from (its slot in the [`super::TxBudget`]).
    pub(super) source: IpAddr,
    pub(super) reply_to: SocketAddr,
    /// The last response sent, resent when the request is retransmitted.
    last_response: Option<Box<[u8]>>,
    /// The reliable provisional awaiting its PRACK (RFC 3262 §3), resent on
    /// Timer Rel; `None` when none is outstanding.
    reliable: Option<Box<[u8]>>,
    reliable_interval: Duration,
    pub(super) timers: ServerTimers,
    interval: Duration,
    pub(super) owner: Option<O>,
    pub(super) scheduled: Scheduled,
}

impl<O: Copy> ServerTx<O> {
    pub(super) fn new(request: &Request, key: String, path: Path, reply_to: SocketAddr) -> Self {
        let invite = request.method == Method::Invite;
        ServerTx {
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            invite,
            key,
            local: path.local,
            proto: path.proto,
            source: path.remote.ip(),
            reply_to,
            last_response: None,
            reliable: None,
            reliable_interval: Duration::ZERO,
            timers: ServerTimers::default(),
            interval: Duration::ZERO,
            owner: None,
            scheduled: Scheduled::default(),
        }
    }

    fn send(&self, bytes: Vec<u8>, out: &mut VecDeque<Transmit>) {
        out.push_back(Transmit {
            local: self.local,
            remote: self.reply_to,
            proto: self.proto,
            bytes,
        });
    }

    pub(super) fn send_response(
        &mut self,
        now: Instant,
        response: Response,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) {
        let status = response.status;
        match self.state {
            ServerState::Trying | ServerState::Proceeding => {}
            // The user retransmits its own 2xx (RFC 3261 §13.3.1.4).
            ServerState::Accepted if (200..300).contains(&status) => {}
            _ => return,
        }
        let bytes = response.encode();
        if self.state == ServerState::Accepted || (self.invite && (200..300).contains(&status)) {
            // Accepted absorbs INVITE copies without answering them (RFC 6026):
            // the 2xx need not be kept.
            self.send(bytes, out);
            self.last_response = None;
        } else {
            // The copy kept for retransmissions is exact-size; the encoder's
            // buffer has room to spare, and a registration storm keeps a
            // hundred thousand of these for Timer J's 32 s.
            self.last_response = Some(bytes.as_slice().into());
            self.send(bytes, out);
        }
        if status >= 200 {
            // RFC 3262 §3: once final, an unacknowledged reliable provisional
            // is no longer retransmitted.
            self.stop_reliable();
        }
        if status < 200 {
            if self.state == ServerState::Trying {
                self.state = ServerState::Proceeding;
            }
            return;
        }
        if self.state == ServerState::Accepted {
            return;
        }
        let reliable = self.proto.is_reliable();
        if !self.invite {
            self.state = ServerState::Completed;
            let linger = if reliable {
                Duration::ZERO
            } else {
                values.transaction_timeout()
            };
            self.timers.set(ServerTimer::J, now + linger);
        } else if status < 300 {
            self.state = ServerState::Accepted;
            self.timers
                .set(ServerTimer::L, now + values.transaction_timeout());
        } else {
            self.state = ServerState::Completed;
            self.interval = values.t1;
            if !reliable {
                self.timers.set(ServerTimer::G, now + values.t1);
            }
            self.timers
                .set(ServerTimer::H, now + values.transaction_timeout());
        }
    }

    /// Sends a reliable provisional (RFC 3262 §3: it carries `RSeq` and
    /// `Require: 100rel`) and retransmits it at T1, 2*T1, 4*T1… over an
    /// unreliable transport until [`ServerTx::stop_reliable`]; after 64*T1
    /// without its PRACK, Timer RelGiveUp reports it.
    pub(super) fn send_reliable(
        &mut self,
        now: Instant,
        response: Response,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) {
        if !matches!(self.state, ServerState::Proceeding) || response.status >= 200 {
            return;
        }
        let bytes = response.encode();
        let kept: Box<[u8]> = bytes.as_slice().into();
        self.last_response = Some(kept.clone());
        self.send(bytes, out);
        if !self.proto.is_reliable() {
            self.reliable = Some(kept);
            self.reliable_interval = values.t1;
            self.timers.set(ServerTimer::Rel, now + values.t1);
        }
        self.timers
            .set(ServerTimer::RelGiveUp, now + values.transaction_timeout());
    }

    /// The reliable provisional was PRACKed (or need not be any more).
    pub(super) fn stop_reliable(&mut self) {
        self.reliable = None;
        self.timers.clear(ServerTimer::Rel);
        self.timers.clear(ServerTimer::RelGiveUp);
    }

    /// A copy of the request (or the ACK of a non-2xx final) arrived.
    pub(super) fn on_retransmission(
        &mut self,
        now: Instant,
        request: &Request,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) {
        if request.method == Method::Ack {
            if self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                self.timers.clear(ServerTimer::G);
                self.timers.clear(ServerTimer::H);
                let linger = if self.proto.is_reliable() {
                    Duration::ZERO
                } else {
                    values.t4
                };
                self.timers.set(ServerTimer::I, now + linger);
            }
            return;
        }
        match self.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(last) = &self.last_response {
                    self.send(last.to_vec(), out);
                }
            }
            _ => {}
        }
    }

    /// Fires due timers; says whether an ACK or a PRACK never came.
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) -> Option<ServerTimeout> {
        let mut report = None;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                ServerTimer::G => {
                    if let Some(last) = &self.last_response {
                        self.send(last.to_vec(), out);
                    }
                    self.interval = (self.interval * 2).min(values.t2);
                    self.timers.set(ServerTimer::G, now + self.interval);
                }
                ServerTimer::H => {
                    report = Some(ServerTimeout::Ack);
                    self.terminate();
                }
                ServerTimer::I | ServerTimer::J | ServerTimer::L => self.terminate(),
                ServerTimer::Rel => {
                    if let Some(reliable) = &self.reliable {
                        self.send(reliable.to_vec(), out);
                        // §3: the interval doubles, without T2's cap.
                        self.reliable_interval *= 2;
                        self.timers
                            .set(ServerTimer::Rel, now + self.reliable_interval);
                    }
                }
                ServerTimer::RelGiveUp => {
                    self.stop_reliable();
                    report = Some(ServerTimeout::Prack);
                }
            }
        }
        report
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.timers.clear_all();
    }
}
