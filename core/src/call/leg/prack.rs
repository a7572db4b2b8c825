//! Reliable provisional responses (RFC 3262) on each leg, hop by hop.
//!
//! On the A leg Vigil is the UAS: [`ReliableUas`] numbers the provisionals
//! it sends reliably (`RSeq`), keeps at most one unacknowledged (§3: "the
//! UAS MUST NOT send a second reliable provisional response until the first
//! is acknowledged"), and holds back what must wait for its PRACK — later
//! provisionals, and a 2xx while the unacknowledged one carried an SDP. The
//! transaction layer retransmits it and reports a PRACK that never comes.
//!
//! On the B leg Vigil is the UAC: [`ReliableUac`] keeps, per early dialog
//! (per callee To tag), the RSeq of the last in-order reliable provisional
//! (§4): the next one is PRACKed, a repeat or one that skips a number is
//! dropped, and the early dialog's CSeq numbers carry on into the confirmed
//! dialog.

use std::collections::VecDeque;

use crate::dialog::Dialog;
use crate::sip::{
    HeaderName, Method, RAck, RSeq, Request, Response, TAG_100REL, requires_100rel, supports_100rel,
};

/// Which provisionals the caller gets reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// Those with an SDP (early media): the caller supports `100rel`.
    WithSdp,
    /// Every one but 100: the caller requires `100rel` (§3).
    All,
}

impl Reliability {
    /// What the caller's INVITE asks for, when Vigil does PRACK on its leg;
    /// `None`: provisionals go unreliably.
    pub fn of(invite: &Request) -> Option<Reliability> {
        if requires_100rel(&invite.headers) {
            Some(Reliability::All)
        } else if supports_100rel(&invite.headers) {
            Some(Reliability::WithSdp)
        } else {
            None
        }
    }
}

/// What the A leg does with a response to the caller's INVITE.
#[derive(Debug)]
pub enum Outgoing {
    /// Send it now, reliably (it now carries `RSeq` and `Require: 100rel`).
    Reliable(Response),
    /// Send it now, as it is.
    Plain(Response),
    /// Held until the outstanding reliable provisional is PRACKed.
    Held,
}

/// A 2xx held for a PRACK, with the B-leg INVITE its ACK will confirm.
#[derive(Debug)]
pub struct HeldAnswer {
    pub ok: Response,
    pub b_invite_seq: u32,
}

#[derive(Debug)]
enum Held {
    Provisional(Response),
    Answer(HeldAnswer),
}

/// What a PRACK from the caller matched.
#[derive(Debug)]
pub enum PrackMatch {
    /// The outstanding reliable provisional: answer 200; then what was held
    /// goes out in order.
    Acknowledged,
    /// Nothing unacknowledged (§3: 481).
    Unknown,
}

/// The A leg's reliable provisionals (Vigil as UAS).
#[derive(Debug)]
pub struct ReliableUas {
    reliability: Reliability,
    /// The RSeq the next reliable provisional gets.
    next_rseq: u32,
    /// The unacknowledged one: its RSeq, and whether it carried an SDP.
    outstanding: Option<(u32, bool)>,
    /// The INVITE's CSeq, which a PRACK's RAck names.
    invite_cseq: u32,
    held: VecDeque<Held>,
}

/// Held responses beyond this many: the oldest provisional without SDP goes
/// (a callee's 180s repeated while the caller does not PRACK).
const MAX_HELD: usize = 8;

impl ReliableUas {
    /// `first_rseq`: random in 1..2^31 (§3), from the caller's id generator.
    pub fn new(reliability: Reliability, invite_cseq: u32, first_rseq: u32) -> ReliableUas {
        ReliableUas {
            reliability,
            next_rseq: first_rseq.clamp(1, 1 << 30),
            outstanding: None,
            invite_cseq,
            held: VecDeque::new(),
        }
    }

    fn is_reliable(&self, response: &Response) -> bool {
        response.status > 100 && (self.reliability == Reliability::All || !response.body.is_empty())
    }

    /// A provisional for the caller: sent reliably, plainly, or held behind
    /// an unacknowledged one.
    pub fn provisional(&mut self, response: Response) -> Outgoing {
        if self.outstanding.is_some() || !self.held.is_empty() {
            if self.held.len() >= MAX_HELD
                && let Some(i) = self
                    .held
                    .iter()
                    .position(|h| matches!(h, Held::Provisional(r) if r.body.is_empty()))
            {
                self.held.remove(i);
            }
            if self.held.len() < MAX_HELD {
                self.held.push_back(Held::Provisional(response));
            }
            return Outgoing::Held;
        }
        self.stamp(response)
    }

    fn stamp(&mut self, mut response: Response) -> Outgoing {
        if !self.is_reliable(&response) {
            return Outgoing::Plain(response);
        }
        let rseq = self.next_rseq;
        self.next_rseq = self.next_rseq.saturating_add(1);
        response.headers.push(HeaderName::Require, TAG_100REL);
        response.headers.push(HeaderName::RSeq, rseq.to_string());
        self.outstanding = Some((rseq, !response.body.is_empty()));
        Outgoing::Reliable(response)
    }

    /// A 2xx for the caller: §3 holds it while an unacknowledged reliable
    /// provisional carried an SDP (and behind anything already held, to keep
    /// the order). `Some`: send it now.
    pub fn answer(&mut self, answer: HeldAnswer) -> Option<HeldAnswer> {
        let sdp_outstanding = self.outstanding.is_some_and(|(_, sdp)| sdp);
        if sdp_outstanding || !self.held.is_empty() {
            self.held.push_back(Held::Answer(answer));
            return None;
        }
        Some(answer)
    }

    /// A PRACK from the caller: whether its RAck names the outstanding
    /// reliable provisional.
    pub fn on_prack(&mut self, prack: &Request) -> PrackMatch {
        let matches = RAck::of(&prack.headers).is_some_and(|rack| {
            rack.method == Method::Invite
                && rack.cseq == self.invite_cseq
                && self.outstanding.is_some_and(|(rseq, _)| rseq == rack.rseq)
        });
        if !matches {
            return PrackMatch::Unknown;
        }
        self.outstanding = None;
        PrackMatch::Acknowledged
    }

    /// After a PRACK: the next held response to send, if it may go now. A
    /// reliable one stops the flow again until its own PRACK.
    pub fn next_released(&mut self) -> Option<Released> {
        if self.outstanding.is_some() {
            return None;
        }
        match self.held.pop_front()? {
            Held::Provisional(r) => Some(Released::Provisional(self.stamp(r))),
            Held::Answer(a) => Some(Released::Answer(a)),
        }
    }

    /// The INVITE got its final answer otherwise (failure, CANCEL): nothing
    /// held goes out any more.
    pub fn clear(&mut self) {
        self.held.clear();
        self.outstanding = None;
    }

    /// A 2xx is held for a PRACK: to the caller the call is not answered yet.
    pub fn holds_answer(&self) -> bool {
        self.held.iter().any(|h| matches!(h, Held::Answer(_)))
    }
}

/// What a PRACK let go on the A leg.
#[derive(Debug)]
pub enum Released {
    Provisional(Outgoing),
    Answer(HeldAnswer),
}

/// How a provisional from the callee counts (§4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Not sent reliably: nothing to PRACK.
    Unreliable,
    /// The next in order: PRACK it with this RAck (in the early dialog the
    /// index names).
    Fresh { dialog: usize, rack: RAck },
    /// A retransmission of one already PRACKed, or one past a gap: dropped.
    Dropped,
}

/// One early dialog of the B-leg INVITE (a callee's To tag).
#[derive(Debug)]
struct Early {
    dialog: Dialog,
    /// The RSeq of its last in-order reliable provisional (`None`: none yet).
    last_rseq: Option<u32>,
}

/// The B leg's early dialogs and their reliable provisionals (Vigil as
/// UAC): PRACKs (RFC 3262) and UPDATEs (RFC 3311) go in them before the
/// answer.
#[derive(Debug, Default)]
pub struct ReliableUac {
    early: Vec<Early>,
    /// A PRACK that waits for the caller's SDP answer: the callee's reliable
    /// provisional carried an offer (a late-offer call).
    deferred: Option<(usize, RAck)>,
}

/// Early dialogs kept at most (forks answering with reliable provisionals).
const MAX_EARLY: usize = 4;

impl ReliableUac {
    /// Classifies a provisional to the B-leg INVITE `invite` (§4), keeping
    /// the early dialog it creates.
    pub fn on_provisional(
        &mut self,
        invite: &Request,
        response: &Response,
        contact: crate::sip::SipUri,
    ) -> Incoming {
        let Some(tag) = response.to.tag().filter(|_| response.status > 100) else {
            return Incoming::Unreliable;
        };
        let i = match self.position(tag) {
            Some(i) => i,
            None if self.early.len() >= MAX_EARLY => return Incoming::Unreliable,
            None => {
                self.early.push(Early {
                    dialog: Dialog::as_uac(invite, response, contact),
                    last_rseq: None,
                });
                self.early.len() - 1
            }
        };
        let Some(RSeq(rseq)) = RSeq::of(&response.headers) else {
            return Incoming::Unreliable;
        };
        if !requires_100rel(&response.headers) {
            return Incoming::Unreliable;
        }
        let early = &mut self.early[i];
        // §4: the first one sets the sequence; then only the next counts.
        if early
            .last_rseq
            .is_some_and(|last| rseq != last.wrapping_add(1))
        {
            return Incoming::Dropped;
        }
        early.last_rseq = Some(rseq);
        Incoming::Fresh {
            dialog: i,
            rack: RAck {
                rseq,
                cseq: response.cseq.seq,
                method: Method::Invite,
            },
        }
    }

    fn position(&self, remote_tag: &str) -> Option<usize> {
        self.early
            .iter()
            .position(|e| e.dialog.remote_tag() == remote_tag)
    }

    /// The early dialog whose remote tag is `remote_tag`.
    pub fn dialog_mut(&mut self, remote_tag: &str) -> Option<&mut Dialog> {
        let i = self.position(remote_tag)?;
        Some(&mut self.early[i].dialog)
    }

    /// A new request (an UPDATE relayed from the caller) in the latest early
    /// dialog, and where it goes.
    pub fn new_request(
        &mut self,
        method: Method,
        via: crate::sip::Via,
        fallback: std::net::SocketAddr,
    ) -> Option<(Request, std::net::SocketAddr)> {
        let early = self.early.last_mut()?;
        let request = early.dialog.new_request(method, via)?;
        Some((request, early.dialog.next_hop(fallback)))
    }

    /// The PRACK for `rack` in early dialog `dialog`, with the next CSeq of
    /// that dialog; `None` if the dialog is gone.
    pub fn prack(&mut self, dialog: usize, rack: &RAck, via: crate::sip::Via) -> Option<Request> {
        let early = self.early.get_mut(dialog)?;
        let mut prack = early.dialog.new_request(Method::Prack, via)?;
        prack.headers.push(HeaderName::RAck, rack.to_string());
        Some(prack)
    }

    /// Where requests of early dialog `dialog` go.
    pub fn next_hop(&self, dialog: usize, fallback: std::net::SocketAddr) -> std::net::SocketAddr {
        self.early
            .get(dialog)
            .map_or(fallback, |e| e.dialog.next_hop(fallback))
    }

    pub fn defer(&mut self, dialog: usize, rack: RAck) -> Option<(usize, RAck)> {
        self.deferred.replace((dialog, rack))
    }

    pub fn has_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    pub fn take_deferred(&mut self) -> Option<(usize, RAck)> {
        self.deferred.take()
    }

    /// The early dialog the callee's 2xx confirms (same To tag), whose CSeq
    /// numbers the confirmed dialog carries on.
    pub fn early_dialog(&self, remote_tag: &str) -> Option<&Dialog> {
        self.early
            .iter()
            .find(|e| e.dialog.remote_tag() == remote_tag)
            .map(|e| &e.dialog)
    }
}
