//! Client transactions (RFC 3261 §17.1): INVITE (figure 5, with RFC 6026's
//! Accepted state) and non-INVITE (figure 6).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Path, TimerValues, Transmit};
use crate::sip::{CSeq, HeaderName, Headers, Method, Request, Response};
use crate::timer::Scheduled;
use crate::timer_table;

timer_table!(
    /// A/E retransmit, B/F give up, D/K/M linger to absorb retransmissions.
    ClientTimers: ClientTimer { A, B, D, E, F, K, M }
);

/// Client transaction states. INVITE uses Calling; non-INVITE uses Trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    /// RFC 6026: a 2xx arrived; further 2xx retransmissions go to the user.
    Accepted,
    Completed,
    Terminated,
}

pub(super) struct ClientTx<O> {
    pub(super) state: ClientState,
    /// The INVITE, kept until its final response: a CANCEL or the ACK for a
    /// failure is built from it. Not kept for other methods, nor once answered,
    /// because thousands of answered transactions linger for Timers D, K and M.
    pub(super) request: Option<Box<Request>>,
    invite: bool,
    /// The request as sent, for retransmission.
    bytes: Vec<u8>,
    pub(super) key: String,
    pub(super) path: Path,
    pub(super) owner: O,
    pub(super) timers: ClientTimers,
    /// The current retransmission interval (doubles from T1).
    interval: Duration,
    /// The ACK for a non-2xx final, resent when the final is retransmitted.
    ack: Option<Vec<u8>>,
    pub(super) scheduled: Scheduled,
}

impl<O: Copy> ClientTx<O> {
    pub(super) fn start(
        now: Instant,
        request: Request,
        key: String,
        path: Path,
        owner: O,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) -> Self {
        let encoded = request.encode();
        // Over TCP and TLS nothing is retransmitted (§17.1.1.2, §17.1.2.2):
        // the bytes are not kept and Timers A and E never run.
        let reliable = path.proto.is_reliable();
        let bytes = if reliable {
            Vec::new()
        } else {
            encoded.clone()
        };
        out.push_back(Transmit::new(path, encoded));
        let mut timers = ClientTimers::default();
        let invite = request.method == Method::Invite;
        if invite {
            if !reliable {
                timers.set(ClientTimer::A, now + values.t1);
            }
            timers.set(ClientTimer::B, now + values.transaction_timeout());
        } else {
            if !reliable {
                timers.set(ClientTimer::E, now + values.t1);
            }
            timers.set(ClientTimer::F, now + values.transaction_timeout());
        }
        ClientTx {
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            request: invite.then(|| Box::new(request)),
            invite,
            bytes,
            key,
            path,
            owner,
            timers,
            interval: values.t1,
            ack: None,
            scheduled: Scheduled::default(),
        }
    }

    fn is_invite(&self) -> bool {
        self.invite
    }

    fn send(&self, bytes: Vec<u8>, out: &mut VecDeque<Transmit>) {
        out.push_back(Transmit::new(self.path, bytes));
    }

    /// Handles a matching response; true if the user must see it.
    pub(super) fn on_response(
        &mut self,
        now: Instant,
        response: &Response,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        let provisional = response.status < 200;
        let success = (200..300).contains(&response.status);
        if self.is_invite() {
            match self.state {
                ClientState::Calling | ClientState::Proceeding => {
                    self.timers.clear(ClientTimer::A);
                    self.timers.clear(ClientTimer::B);
                    // Answered: the INVITE is never retransmitted again.
                    self.bytes = Vec::new();
                    if provisional {
                        self.state = ClientState::Proceeding;
                    } else if success {
                        self.request = None;
                        self.state = ClientState::Accepted;
                        self.timers
                            .set(ClientTimer::M, now + values.transaction_timeout());
                    } else {
                        if let Some(ack) = self.build_ack(response).map(|a| a.encode()) {
                            self.send(ack.clone(), out);
                            self.ack = Some(ack);
                        }
                        self.request = None;
                        self.state = ClientState::Completed;
                        let linger = if self.path.proto.is_reliable() {
                            Duration::ZERO
                        } else {
                            values.timer_d()
                        };
                        self.timers.set(ClientTimer::D, now + linger);
                    }
                    true
                }
                ClientState::Accepted => success,
                ClientState::Completed => {
                    if !provisional
                        && !success
                        && let Some(ack) = &self.ack
                    {
                        self.send(ack.clone(), out);
                    }
                    false
                }
                ClientState::Trying | ClientState::Terminated => false,
            }
        } else {
            match self.state {
                ClientState::Trying | ClientState::Proceeding => {
                    if provisional {
                        self.state = ClientState::Proceeding;
                    } else {
                        self.timers.clear(ClientTimer::E);
                        self.timers.clear(ClientTimer::F);
                        // Only lingers to absorb copies of the final: the request's
                        // bytes are not needed any more.
                        self.bytes = Vec::new();
                        self.state = ClientState::Completed;
                        let linger = if self.path.proto.is_reliable() {
                            Duration::ZERO
                        } else {
                            values.t4
                        };
                        self.timers.set(ClientTimer::K, now + linger);
                    }
                    true
                }
                _ => false,
            }
        }
    }

    /// Fires due timers; true if the transaction timed out (B or F).
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        values: &TimerValues,
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        let mut timed_out = false;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                ClientTimer::A => {
                    self.send(self.bytes.clone(), out);
                    self.interval *= 2;
                    self.timers.set(ClientTimer::A, now + self.interval);
                }
                ClientTimer::E => {
                    self.send(self.bytes.clone(), out);
                    self.interval = if self.state == ClientState::Proceeding {
                        values.t2
                    } else {
                        (self.interval * 2).min(values.t2)
                    };
                    self.timers.set(ClientTimer::E, now + self.interval);
                }
                ClientTimer::B | ClientTimer::F => {
                    timed_out = true;
                    self.terminate();
                }
                ClientTimer::D | ClientTimer::K | ClientTimer::M => self.terminate(),
            }
        }
        timed_out
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.timers.clear_all();
    }

    /// The hop-by-hop ACK for a non-2xx final (RFC 3261 §17.1.1.3), while the
    /// INVITE is still held.
    fn build_ack(&self, response: &Response) -> Option<Request> {
        let invite = self.request.as_deref()?;
        let mut headers = Headers::new();
        for route in invite.headers.get_all(&HeaderName::Route) {
            headers.push(HeaderName::Route, route);
        }
        Some(Request {
            method: Method::Ack,
            uri: invite.uri.clone(),
            via: vec![invite.top_via().clone()],
            max_forwards: 70,
            from: invite.from.clone(),
            to: response.to.clone(),
            call_id: invite.call_id.clone(),
            cseq: CSeq {
                seq: invite.cseq.seq,
                method: Method::Ack,
            },
            headers,
            body: Vec::new(),
        })
    }
}
