//! SIP requests and responses as Vigil holds them: the headers every transaction and
//! dialog needs are typed fields (validated once, on the way in), the rest is an
//! ordered [`Headers`] list relayed verbatim. Writing a message always computes
//! `Content-Length` from the body, so Vigil never sends one that lies.

use std::fmt::Write as _;

use super::header::{HeaderName, Headers};
use super::status::reason_phrase;
use super::text::split_list;
use super::typed::{CSeq, MediaType, Method, MinSe, NameAddr, SessionExpires, Via};
use super::uri::Uri;

/// A SIP request (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    /// All Via values, topmost first (never empty on a decoded request).
    pub via: Vec<Via>,
    /// Max-Forwards; a request without one (RFC 2543 style) is read as 70.
    pub max_forwards: u8,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response (RFC 3261 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Either kind of message, as decoded from a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn call_id(&self) -> &str {
        match self {
            Message::Request(r) => &r.call_id,
            Message::Response(r) => &r.call_id,
        }
    }
}

/// Methods Vigil implements, for `Allow` (RFC 3261 §20.5).
pub const ALLOWED_METHODS: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK";

impl Request {
    /// A request outside any dialog (RFC 3261 §8.1.1): To is the
    /// Request-URI without a tag, CSeq 1, no body. Vigil's own OPTIONS
    /// (keep-alives, gateway probes) and REGISTERs start here.
    pub fn out_of_dialog(
        method: Method,
        uri: Uri,
        from: NameAddr,
        via: Via,
        call_id: String,
    ) -> Request {
        Request {
            cseq: CSeq {
                seq: 1,
                method: method.clone(),
            },
            method,
            to: NameAddr::new(uri.clone()),
            uri,
            via: vec![via],
            max_forwards: 70,
            from,
            call_id,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    pub fn top_via(&self) -> &Via {
        // A decoded request has at least one Via (decode rejects it otherwise), and
        // Vigil never builds one without; an empty list is a bug caught in tests.
        &self.via[0]
    }

    /// The first Contact value, parsed (validated on decode).
    pub fn contact(&self) -> Option<NameAddr> {
        self.headers
            .list(&HeaderName::Contact)
            .next()
            .and_then(|c| NameAddr::parse(c).ok())
    }

    /// Record-Route values in order, as written (RFC 3261 §12.1).
    pub fn record_route(&self) -> Vec<String> {
        self.headers
            .list(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect()
    }

    pub fn session_expires(&self) -> Option<SessionExpires> {
        self.headers
            .get(&HeaderName::SessionExpires)
            .and_then(|v| SessionExpires::parse(v).ok())
    }

    pub fn min_se(&self) -> Option<MinSe> {
        self.headers
            .get(&HeaderName::MinSe)
            .and_then(|v| MinSe::parse(v).ok())
    }

    pub fn content_type(&self) -> Option<MediaType> {
        self.headers
            .get(&HeaderName::ContentType)
            .and_then(|v| MediaType::parse(v).ok())
    }

    /// A request inside a dialog carries a To tag (RFC 3261 §12.2.2).
    pub fn is_in_dialog(&self) -> bool {
        self.to.tag().is_some()
    }

    /// An INVITE that would start a call (not a re-INVITE inside one).
    pub fn is_initial_invite(&self) -> bool {
        self.method == Method::Invite && !self.is_in_dialog()
    }

    /// Starts a response per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq are
    /// copied; the caller adds a To tag where the response needs one.
    pub fn response(&self, status: u16) -> Response {
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            via: self.via.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            call_id: self.call_id.clone(),
            cseq: self.cseq.clone(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut head = String::with_capacity(512 + self.headers.len() * 32);
        let _ = write!(head, "{} {} SIP/2.0\r\n", self.method, self.uri);
        write_via(&mut head, &self.via);
        let _ = write!(head, "Max-Forwards: {}\r\n", self.max_forwards);
        write_common(
            &mut head,
            &self.from,
            &self.to,
            &self.call_id,
            &self.cseq,
            &self.headers,
        );
        finish(head, &self.body)
    }
}

impl Response {
    pub fn top_via(&self) -> &Via {
        // See Request::top_via: decode guarantees at least one Via.
        &self.via[0]
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn contact(&self) -> Option<NameAddr> {
        self.headers
            .list(&HeaderName::Contact)
            .next()
            .and_then(|c| NameAddr::parse(c).ok())
    }

    pub fn record_route(&self) -> Vec<String> {
        self.headers
            .list(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect()
    }

    pub fn session_expires(&self) -> Option<SessionExpires> {
        self.headers
            .get(&HeaderName::SessionExpires)
            .and_then(|v| SessionExpires::parse(v).ok())
    }

    pub fn min_se(&self) -> Option<MinSe> {
        self.headers
            .get(&HeaderName::MinSe)
            .and_then(|v| MinSe::parse(v).ok())
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Response {
        self.reason = reason.into();
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut head = String::with_capacity(512 + self.headers.len() * 32);
        let _ = write!(head, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_via(&mut head, &self.via);
        write_common(
            &mut head,
            &self.from,
            &self.to,
            &self.call_id,
            &self.cseq,
            &self.headers,
        );
        finish(head, &self.body)
    }
}

fn write_via(out: &mut String, vias: &[Via]) {
    for v in vias {
        let _ = write!(out, "Via: {v}\r\n");
    }
}

fn write_common(
    out: &mut String,
    from: &NameAddr,
    to: &NameAddr,
    call_id: &str,
    cseq: &CSeq,
    headers: &Headers,
) {
    let _ = write!(
        out,
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
    );
    for h in headers.iter() {
        let _ = write!(out, "{}: {}\r\n", h.name, h.value);
    }
}

fn finish(mut head: String, body: &[u8]) -> Vec<u8> {
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Parses every element of a list header as a name-addr (Route, Record-Route,
/// Contact), for validation.
pub(crate) fn parse_name_addr_list(value: &str) -> Result<Vec<NameAddr>, super::ValueError> {
    split_list(value)
        .into_iter()
        .map(|element| {
            if element.is_empty() {
                Err(super::ValueError("empty list element".into()))
            } else {
                NameAddr::parse(element)
            }
        })
        .collect()
}
