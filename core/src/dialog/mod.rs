//! SIP dialogs (RFC 3261 §12): the state one leg of a call keeps to send and check
//! requests inside it — Call-ID, tags, CSeq numbers, remote target and route set.
//!
//! A dialog is plain data with the rules of §12 as methods; it does no I/O and
//! keeps no timers (those belong to the call and the session timer).
//!
//! A worker holds two dialogs per call for hours, so a dialog keeps its URIs as
//! the text it writes into requests (a parsed `NameAddr` is a few hundred bytes
//! of structure for forty bytes of text) and parses them again only when it
//! builds a request, a handful of times in a call's life.

use std::net::SocketAddr;

use crate::sip::{
    CSeq, HeaderName, Headers, Method, NameAddr, Request, Response, SipUri, Uri, Via,
};

/// One side of a call as a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Its texts, one after the other in one allocation ([`Part`]).
    text: Box<str>,
    /// Where each [`Part`] ends in `text`.
    ends: [u32; Part::COUNT],
    local_seq: u32,
    remote_seq: Option<u32>,
    /// Route set in the order requests carry it (§12.1.1, §12.1.2).
    route_set: Box<[Box<str>]>,
    /// The address requests go to when the route set or remote target names
    /// one (an IP literal), worked out once.
    hop: Option<SocketAddr>,
}

/// The texts a dialog keeps.
#[derive(Debug, Clone, Copy)]
enum Part {
    CallId,
    LocalTag,
    RemoteTag,
    /// Our From (without tag) in requests we send, as written.
    LocalUri,
    /// Our To (without tag) in requests we send, as written.
    RemoteUri,
    /// Where requests go (the peer's Contact), updated by target refreshes.
    RemoteTarget,
    /// Our Contact, sent in target-refresh requests.
    LocalContact,
}

impl Part {
    const COUNT: usize = 7;
}

/// A dialog's texts before they are packed.
struct Texts<'a> {
    call_id: &'a str,
    local_tag: &'a str,
    remote_tag: &'a str,
    local_uri: &'a str,
    remote_uri: &'a str,
    remote_target: &'a str,
    local_contact: &'a str,
}

impl Texts<'_> {
    /// Packs the texts into one string, in [`Part`] order.
    fn pack(&self) -> (Box<str>, [u32; Part::COUNT]) {
        let parts = [
            self.call_id,
            self.local_tag,
            self.remote_tag,
            self.local_uri,
            self.remote_uri,
            self.remote_target,
            self.local_contact,
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; Part::COUNT];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // Texts from one datagram (at most 64 KiB) and Vigil's own.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        (text.into_boxed_str(), ends)
    }
}

/// `addr` without its tag, as written in a header.
fn without_tag(addr: &NameAddr) -> String {
    let mut addr = addr.clone();
    addr.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    addr.to_string()
}

/// A dialog as the state store keeps it (a call that outlives the process):
/// every text as written, the CSeqs and the route set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedDialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    pub local_uri: String,
    pub remote_uri: String,
    pub remote_target: String,
    pub local_contact: String,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    pub route_set: Vec<String>,
}

/// How far a restored dialog's own CSeq jumps: the store may lag the last
/// requests Vigil sent, and a peer refuses a CSeq it has seen (§12.2.2);
/// CSeqs only have to grow, not to be consecutive.
pub const RESTORED_SEQ_GAP: u32 = 100;

impl Dialog {
    fn new(
        texts: Texts<'_>,
        local_seq: u32,
        remote_seq: Option<u32>,
        route_set: Vec<String>,
    ) -> Dialog {
        let (text, ends) = texts.pack();
        let mut dialog = Dialog {
            text,
            ends,
            local_seq,
            remote_seq,
            route_set: route_set.into_iter().map(String::into_boxed_str).collect(),
            hop: None,
        };
        dialog.find_hop();
        dialog
    }

    /// What the state store keeps of this dialog.
    pub fn save(&self) -> SavedDialog {
        let t = self.texts();
        SavedDialog {
            call_id: t.call_id.into(),
            local_tag: t.local_tag.into(),
            remote_tag: t.remote_tag.into(),
            local_uri: t.local_uri.into(),
            remote_uri: t.remote_uri.into(),
            remote_target: t.remote_target.into(),
            local_contact: t.local_contact.into(),
            local_seq: self.local_seq,
            remote_seq: self.remote_seq,
            route_set: self.route_set.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// The dialog back from the store, its own CSeq moved on by
    /// [`RESTORED_SEQ_GAP`].
    pub fn restore(saved: SavedDialog) -> Dialog {
        let texts = Texts {
            call_id: &saved.call_id,
            local_tag: &saved.local_tag,
            remote_tag: &saved.remote_tag,
            local_uri: &saved.local_uri,
            remote_uri: &saved.remote_uri,
            remote_target: &saved.remote_target,
            local_contact: &saved.local_contact,
        };
        Dialog::new(
            texts,
            saved.local_seq.saturating_add(RESTORED_SEQ_GAP),
            saved.remote_seq,
            saved.route_set,
        )
    }

    /// The last CSeq the peer used (an in-dialog request moves it).
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    fn part(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    fn texts(&self) -> Texts<'_> {
        Texts {
            call_id: self.part(Part::CallId),
            local_tag: self.part(Part::LocalTag),
            remote_tag: self.part(Part::RemoteTag),
            local_uri: self.part(Part::LocalUri),
            remote_uri: self.part(Part::RemoteUri),
            remote_target: self.part(Part::RemoteTarget),
            local_contact: self.part(Part::LocalContact),
        }
    }

    pub fn call_id(&self) -> &str {
        self.part(Part::CallId)
    }

    /// Vigil's tag in this dialog.
    pub fn local_tag(&self) -> &str {
        self.part(Part::LocalTag)
    }

    /// The peer's tag (empty for an RFC 2543 peer that sent none).
    pub fn remote_tag(&self) -> &str {
        self.part(Part::RemoteTag)
    }

    /// The dialog Vigil holds as UAS, from an INVITE and the tag of its 2xx/1xx
    /// (§12.1.1): route set is the Record-Route in order, remote target is the
    /// request's Contact.
    pub fn as_uas(invite: &Request, local_tag: String, local_contact: SipUri) -> Dialog {
        let remote_target = invite
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| invite.from.uri.clone());
        let texts = Texts {
            call_id: &invite.call_id,
            local_tag: &local_tag,
            remote_tag: invite.from.tag().unwrap_or_default(),
            local_uri: &without_tag(&invite.to),
            remote_uri: &without_tag(&invite.from),
            remote_target: &remote_target.to_string(),
            local_contact: &local_contact.to_string(),
        };
        // §12.1.1: our sequence space starts fresh; 1 is as good as random.
        Dialog::new(texts, 0, Some(invite.cseq.seq), invite.record_route())
    }

    /// The dialog Vigil holds as UAC, from its INVITE and the peer's 2xx (§12.1.2):
    /// route set is the response's Record-Route reversed.
    pub fn as_uac(invite: &Request, response: &Response, local_contact: SipUri) -> Dialog {
        let mut route_set = response.record_route();
        route_set.reverse();
        let remote_target = response
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| invite.uri.clone());
        let texts = Texts {
            call_id: &invite.call_id,
            local_tag: invite.from.tag().unwrap_or_default(),
            remote_tag: response.to.tag().unwrap_or_default(),
            local_uri: &without_tag(&invite.from),
            remote_uri: &without_tag(&invite.to),
            remote_target: &remote_target.to_string(),
            local_contact: &local_contact.to_string(),
        };
        Dialog::new(texts, invite.cseq.seq, None, route_set)
    }

    /// The dialog another fork's 2xx to the same INVITE creates (§13.2.2.4): same
    /// local side, the fork's tag, Contact and Record-Route.
    pub fn fork(&self, response: &Response) -> Dialog {
        let mut route_set = response.record_route();
        route_set.reverse();
        let contact = response.contact().map(|c| c.uri.to_string());
        let texts = Texts {
            remote_tag: response.to.tag().unwrap_or_default(),
            remote_target: contact
                .as_deref()
                .unwrap_or_else(|| self.part(Part::RemoteTarget)),
            ..self.texts()
        };
        Dialog::new(texts, response.cseq.seq, None, route_set)
    }

    /// Works out the next hop's address once (see [`Dialog::next_hop`]).
    fn find_hop(&mut self) {
        let hop = match self.route_set.first() {
            Some(route) => NameAddr::parse(route).ok().map(|r| r.uri),
            None => Uri::parse(self.part(Part::RemoteTarget)).ok(),
        };
        self.hop = hop
            .as_ref()
            .and_then(Uri::as_sip)
            .and_then(SipUri::socket_addr);
    }

    /// Checks an incoming in-dialog request's CSeq (§12.2.2): one lower than the
    /// last is out of order (answer 500). ACK and CANCEL reuse the INVITE's number.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> bool {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return true;
        }
        let seq = request.cseq.seq;
        match self.remote_seq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// Applies a target refresh (re-INVITE, UPDATE or their 2xx): the Contact
    /// becomes the new remote target (§12.2).
    pub fn refresh_target(&mut self, contact: Option<NameAddr>) {
        if let Some(c) = contact {
            let target = c.uri.to_string();
            let (text, ends) = Texts {
                remote_target: &target,
                ..self.texts()
            }
            .pack();
            (self.text, self.ends) = (text, ends);
            self.find_hop();
        }
    }

    /// A new request in this dialog (§12.2.1.1) with the next CSeq; `None` if
    /// the dialog's own URIs no longer parse (a codec bug: nothing is sent).
    pub fn new_request(&mut self, method: Method, via: Via) -> Option<Request> {
        self.local_seq += 1;
        let seq = self.local_seq;
        self.request_with_seq(method, via, seq)
    }

    /// The next local CSeq, for a request built elsewhere (one sent again
    /// with credentials, RFC 3261 §22.2): later requests count on from it.
    pub fn take_seq(&mut self) -> u32 {
        self.local_seq += 1;
        self.local_seq
    }

    /// This dialog confirms the early one `early` (RFC 3262's PRACKs or RFC
    /// 3311's UPDATEs went in it): its CSeq numbers carry on from there.
    pub fn continue_from(&mut self, early: &Dialog) {
        self.local_seq = self.local_seq.max(early.local_seq);
        self.remote_seq = self.remote_seq.max(early.remote_seq);
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32, via: Via) -> Option<Request> {
        self.request_with_seq(Method::Ack, via, invite_seq)
    }

    fn request_with_seq(&self, method: Method, via: Via, seq: u32) -> Option<Request> {
        let texts = self.texts();
        let parsed = NameAddr::parse(texts.local_uri)
            .ok()
            .zip(NameAddr::parse(texts.remote_uri).ok())
            .zip(Uri::parse(texts.remote_target).ok());
        let Some(((mut from, mut to), remote_target)) = parsed else {
            tracing::error!(call_id = %texts.call_id, "a dialog's own URIs do not parse: request not sent");
            return None;
        };
        from.set_tag(texts.local_tag);
        // §12.1.1: a peer that sent no tag (RFC 2543) has a null remote tag, and
        // the To of our requests then carries none (`tag=` would be malformed).
        if !texts.remote_tag.is_empty() {
            to.set_tag(texts.remote_tag);
        }
        let mut headers = Headers::new();
        // §12.2.1.1: with a loose-routing first hop (lr), the Request-URI is the
        // remote target and the route set goes in Route; with a strict router, the
        // first route becomes the Request-URI and the target goes last.
        let strict_first = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .filter(|r| r.uri.as_sip().is_some_and(|u| u.param("lr").is_none()));
        let uri = match strict_first {
            Some(first) => {
                for route in &self.route_set[1..] {
                    headers.push(HeaderName::Route, &**route);
                }
                headers.push(HeaderName::Route, format!("<{}>", texts.remote_target));
                first.uri
            }
            None => {
                for route in &self.route_set {
                    headers.push(HeaderName::Route, &**route);
                }
                remote_target
            }
        };
        if matches!(method, Method::Invite | Method::Update) {
            headers.push(HeaderName::Contact, format!("<{}>", texts.local_contact));
        }
        Some(Request {
            method: method.clone(),
            uri,
            via: vec![via],
            max_forwards: 70,
            from,
            to,
            call_id: texts.call_id.to_string(),
            cseq: CSeq { seq, method },
            headers,
            body: Vec::new(),
        })
    }

    /// The address the next request goes to: the first route's, else the remote
    /// target's, when it is an IP literal; else `fallback` (the address this leg's
    /// peer talks from), since the sans-IO core does not resolve names.
    pub fn next_hop(&self, fallback: SocketAddr) -> SocketAddr {
        self.hop.unwrap_or(fallback)
    }

    /// True if `request` (from the peer) belongs to this dialog (§12.2.2).
    pub fn matches_incoming(&self, request: &Request) -> bool {
        request.call_id == self.call_id()
            && request.from.tag() == Some(self.remote_tag())
            && request.to.tag() == Some(self.local_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, decode};

    fn invite() -> Request {
        let text = "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:192.0.2.30:5070;lr>\r\n\
From: Alice <sip:alice@192.0.2.10>;tag=ta\r\nTo: <sip:bob@192.0.2.20>\r\n\
Call-ID: d1\r\nCSeq: 314 INVITE\r\nContact: <sip:alice@192.0.2.10:5062>\r\n\r\n";
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn via() -> Via {
        Via::parse("SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKx").expect("via")
    }

    #[test]
    fn uas_dialog_sends_requests_per_rfc3261_12_2_1_1() {
        let contact = SipUri::for_socket(None, "192.0.2.20:5060".parse().expect("addr"));
        let mut d = Dialog::as_uas(&invite(), "tb".into(), contact);
        let bye = d.new_request(Method::Bye, via()).expect("request");
        assert_eq!(bye.uri.to_string(), "sip:alice@192.0.2.10:5062");
        assert_eq!(bye.from.tag(), Some("tb"));
        assert_eq!(bye.to.tag(), Some("ta"));
        assert_eq!(bye.cseq.seq, 1);
        let routes: Vec<&str> = bye.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec!["<sip:p1.example.com;lr>", "<sip:192.0.2.30:5070;lr>"]
        );
        // The first route is a hostname: fall back to the peer's address.
        let fallback = "192.0.2.99:5060".parse().expect("addr");
        assert_eq!(d.next_hop(fallback), fallback);
        d.route_set = d.route_set[1..].into();
        d.find_hop();
        assert_eq!(
            d.next_hop(fallback),
            "192.0.2.30:5070".parse().expect("addr")
        );
    }

    #[test]
    fn remote_cseq_must_grow() {
        let contact = SipUri::for_socket(None, "192.0.2.20:5060".parse().expect("addr"));
        let mut d = Dialog::as_uas(&invite(), "tb".into(), contact);
        let mut req = invite();
        req.to.set_tag("tb");
        assert!(!d.accept_remote_cseq(&req), "same CSeq as the INVITE");
        req.cseq.seq = 315;
        assert!(d.accept_remote_cseq(&req));
        assert!(d.matches_incoming(&req));
    }

    /// Regression (found by the `fuzz/` engine target on RFC 4475's `inv2543`): a
    /// caller without a From tag got a session-timeout BYE with `To: …;tag=`,
    /// which is malformed (Vigil itself rejects it).
    #[test]
    fn a_null_remote_tag_puts_no_tag_in_our_requests() {
        let contact = SipUri::for_socket(None, "192.0.2.20:5060".parse().expect("addr"));
        let datagram = include_bytes!("../../../tests/data/rfc4475/inv2543.dat");
        let Ok(Message::Request(rfc2543)) = decode(datagram) else {
            panic!("inv2543 is a valid request");
        };
        assert_eq!(rfc2543.from.tag(), None);
        let mut d = Dialog::as_uas(&rfc2543, "tb".into(), contact);
        let bye = d.new_request(Method::Bye, via()).expect("request");
        assert_eq!(bye.to.tag(), None);
        assert!(!bye.to.to_string().contains("tag"), "{}", bye.to);
        assert!(matches!(decode(&bye.encode()), Ok(Message::Request(_))));
    }

    #[test]
    fn strict_router_becomes_the_request_uri() {
        let contact = SipUri::for_socket(None, "192.0.2.20:5060".parse().expect("addr"));
        let mut d = Dialog::as_uas(&invite(), "tb".into(), contact);
        d.route_set = vec!["<sip:192.0.2.40>".into()].into();
        d.find_hop();
        let req = d.new_request(Method::Info, via()).expect("request");
        assert_eq!(req.uri.to_string(), "sip:192.0.2.40");
        assert_eq!(
            req.headers.get(&HeaderName::Route),
            Some("<sip:alice@192.0.2.10:5062>")
        );
        assert_eq!(
            d.next_hop("192.0.2.99:5060".parse().expect("addr")),
            "192.0.2.40:5060".parse().expect("addr")
        );
    }
}
