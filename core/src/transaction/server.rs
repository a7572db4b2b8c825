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
    ServerTimers: ServerTimer { G, H, I, J, L }
);

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

    /// Fires due timers; true if Timer H fired (no ACK came).
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        let mut ack_timeout = false;
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
                    ack_timeout = true;
                    self.terminate();
                }
                ServerTimer::I | ServerTimer::J | ServerTimer::L => self.terminate(),
            }
        }
        ack_timeout
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.timers.clear_all();
    }
}
