//! From datagram bytes to a validated [`Message`] (RFC 3261 §7, §18.3).
//!
//! Decoding is eager and strict: framing, unfolding, compact-form expansion,
//! `Content-Length` against the body, then every header Vigil relies on is parsed
//! into its typed form. A value that is not valid now will never be "found bad
//! later" in the middle of a call. A request that fails is answered (400, or 505
//! for an unknown SIP version) when enough of it survives to address a response;
//! anything else is dropped.

use std::net::SocketAddr;

use super::header::{Header, HeaderName, Headers};
use super::message::{Message, Request, Response, parse_name_addr_list};
use super::status::reason_phrase;
use super::text::{is_token, is_wsp, split_list, trim_lws};
use super::typed::{
    CSeq, MediaType, Method, MinSe, NameAddr, SessionExpires, Via, parse_bounded,
    parse_delta_seconds, parse_max_forwards, validate_sip_date,
};
use super::uri::Uri;

/// The largest datagram Vigil reads (RFC 3261 §18.1.1 allows up to 65,535 bytes on
/// UDP; anything bigger cannot be a whole UDP datagram and is dropped).
pub const MAX_DATAGRAM: usize = 65_535;
/// Upper bound on header fields per message: no legitimate message needs more, and
/// it caps the work a crafted datagram can cause.
pub const MAX_HEADERS: usize = 256;

/// Why a datagram did not become a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Only CRLFs: a keep-alive (RFC 5626 §4.4.1 style), not an error.
    #[error("keep-alive")]
    KeepAlive,
    /// Not recognisable as SIP at all: dropped.
    #[error("not a SIP message: {0}")]
    Junk(String),
    /// A malformed response: dropped, since responses are never answered.
    #[error("malformed response: {0}")]
    BadResponse(String),
    /// A malformed request: answered with `status` when `reply` is present.
    #[error("malformed request ({status}): {reason}")]
    BadRequest {
        status: u16,
        reason: String,
        reply: Option<Box<ReplyContext>>,
    },
}

/// What survives of a malformed request to answer it with: its Via values as
/// written (the top one parsed if it can be, to address the response) and the raw
/// values of the other headers a response copies (RFC 3261 §8.2.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    pub via: Vec<String>,
    pub top_via: Option<Via>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

impl ReplyContext {
    /// Renders a stateless response with the headers copied verbatim; the top Via
    /// gets `received`/`rport` from `source`.
    pub fn render(&self, status: u16, reason: &str, source: SocketAddr, to_tag: &str) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for (i, raw) in self.via.iter().enumerate() {
            match (&self.top_via, i) {
                (Some(top), 0) => {
                    let mut top = top.clone();
                    top.stamp_received(source);
                    out.push_str(&format!("Via: {top}\r\n"));
                }
                _ => out.push_str(&format!("Via: {raw}\r\n")),
            }
        }
        if let Some(from) = &self.from {
            out.push_str(&format!("From: {from}\r\n"));
        }
        if let Some(to) = &self.to {
            // A response to a request without a To tag needs one (§8.2.6.2).
            if to.contains("tag=") {
                out.push_str(&format!("To: {to}\r\n"));
            } else {
                out.push_str(&format!("To: {to};tag={to_tag}\r\n"));
            }
        }
        if let Some(call_id) = &self.call_id {
            out.push_str(&format!("Call-ID: {call_id}\r\n"));
        }
        if let Some(cseq) = &self.cseq {
            out.push_str(&format!("CSeq: {cseq}\r\n"));
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::Junk(
            "datagram larger than 65,535 bytes".into(),
        ));
    }
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let start = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(DecodeError::KeepAlive)?;
    let data = &datagram[start..];
    let (head_bytes, body) = split_head(data);
    let head = match std::str::from_utf8(head_bytes) {
        Ok(h) => h,
        Err(_) => {
            let lossy = String::from_utf8_lossy(head_bytes);
            return Err(reject_with(&lossy, 400, "Invalid UTF-8 In Header"));
        }
    };
    let raw = RawHead::parse(head)?;
    if raw.start_line.starts_with("SIP/") {
        decode_response(raw, body).map(Message::Response)
    } else {
        decode_request(raw, body).map(Message::Request)
    }
}

/// Splits at the first empty line. A message without one (seen in the wild and in
/// RFC 4475's `baddn`) is all head.
fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let crlf = find(data, b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = find(data, b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => {
            let (end, body) = if a.0 <= b.0 { a } else { b };
            (&data[..end], &data[body..])
        }
        (Some((end, body)), None) | (None, Some((end, body))) => (&data[..end], &data[body..]),
        (None, None) => (data, &[]),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The start line and unfolded header lines, names canonicalised.
struct RawHead<'a> {
    start_line: &'a str,
    headers: Vec<Header>,
}

impl<'a> RawHead<'a> {
    fn parse(head: &'a str) -> Result<RawHead<'a>, DecodeError> {
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start_line = lines.next().unwrap_or_default();
        let mut headers: Vec<Header> = Vec::new();
        let mut bad_line: Option<String> = None;
        for line in lines {
            if line.starts_with(is_wsp) {
                // Folded continuation (RFC 3261 §7.3.1): joins the previous value.
                match headers.last_mut() {
                    Some(h) => {
                        let cont = trim_lws(line);
                        if !cont.is_empty() {
                            if !h.value.is_empty() {
                                h.value.push(' ');
                            }
                            h.value.push_str(cont);
                        }
                    }
                    None => bad_line = Some(line.to_string()),
                }
                continue;
            }
            let Some(colon) = line.find(':') else {
                bad_line.get_or_insert_with(|| line.to_string());
                continue;
            };
            let name = line[..colon].trim_end_matches(is_wsp);
            if !is_token(name) {
                bad_line.get_or_insert_with(|| line.to_string());
                continue;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(DecodeError::Junk(format!(
                    "more than {MAX_HEADERS} headers"
                )));
            }
            headers.push(Header {
                name: HeaderName::from_wire(name),
                value: trim_lws(&line[colon + 1..]).to_string(),
            });
        }
        let raw = RawHead {
            start_line,
            headers,
        };
        if let Some(line) = bad_line {
            return Err(raw.reject(400, &format!("Malformed Header Line {:?}", truncate(&line))));
        }
        Ok(raw)
    }

    fn first(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    fn count(&self, name: &HeaderName) -> usize {
        self.headers.iter().filter(|h| &h.name == name).count()
    }

    /// A request-side failure: what can be answered is answered.
    fn reject(&self, status: u16, reason: &str) -> DecodeError {
        if self.start_line.starts_with("SIP/") {
            return DecodeError::BadResponse(reason.to_string());
        }
        let via: Vec<String> = self
            .headers
            .iter()
            .filter(|h| h.name == HeaderName::Via)
            .map(|h| h.value.clone())
            .collect();
        let top_via = via
            .first()
            .and_then(|v| split_list(v).first().and_then(|top| Via::parse(top).ok()));
        let reply = (!via.is_empty()).then(|| {
            Box::new(ReplyContext {
                via,
                top_via,
                from: self.first(&HeaderName::From).map(str::to_string),
                to: self.first(&HeaderName::To).map(str::to_string),
                call_id: self.first(&HeaderName::CallId).map(str::to_string),
                cseq: self.first(&HeaderName::CSeq).map(str::to_string),
            })
        });
        DecodeError::BadRequest {
            status,
            reason: reason.to_string(),
            reply,
        }
    }
}

/// Builds a rejection from a head that could not even be read as UTF-8.
fn reject_with(lossy: &str, status: u16, reason: &str) -> DecodeError {
    match RawHead::parse(lossy) {
        Ok(raw) => raw.reject(status, reason),
        Err(e) => e,
    }
}

fn is_forbidden_control(c: char) -> bool {
    c.is_ascii_control() && c != '\t'
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The typed core every message needs, shared by requests and responses.
struct Core {
    via: Vec<Via>,
    from: NameAddr,
    to: NameAddr,
    call_id: String,
    cseq: CSeq,
    headers: Headers,
    body: Vec<u8>,
}

/// Headers that may appear only once (RFC 3261 §7.3.1 and RFC 4475's `multi01`,
/// `mcl01`).
const SINGLE: [HeaderName; 9] = [
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::SessionExpires,
    HeaderName::MinSe,
];

fn decode_core(raw: &RawHead<'_>, body: &[u8]) -> Result<Core, (u16, String)> {
    let bad = |reason: String| (400u16, reason);
    for name in &SINGLE {
        if raw.count(name) > 1 {
            return Err(bad(format!("Multiple {name} Headers")));
        }
    }
    let mut via = Vec::new();
    for h in raw.headers.iter().filter(|h| h.name == HeaderName::Via) {
        for v in split_list(&h.value) {
            via.push(Via::parse(v).map_err(|e| bad(format!("Invalid Via: {e}")))?);
        }
    }
    if via.is_empty() {
        return Err(bad("Missing Via".into()));
    }
    let required = |name: HeaderName| {
        raw.first(&name)
            .ok_or_else(|| bad(format!("Missing {name} Header")))
    };
    let from = NameAddr::parse(required(HeaderName::From)?)
        .map_err(|e| bad(format!("Invalid From: {e}")))?;
    let to =
        NameAddr::parse(required(HeaderName::To)?).map_err(|e| bad(format!("Invalid To: {e}")))?;
    let call_id = required(HeaderName::CallId)?;
    // callid = word [ "@" word ]: printable ASCII, not empty. A NUL or a
    // terminal escape would otherwise ride into CDRs, logs and `vigil ctl`.
    if call_id.is_empty() || !call_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad("Invalid Call-ID".into()));
    }
    let cseq =
        CSeq::parse(required(HeaderName::CSeq)?).map_err(|e| bad(format!("Invalid CSeq: {e}")))?;
    let body = frame_body(raw, body).map_err(bad)?;
    validate_other_headers(raw).map_err(bad)?;
    let headers = raw
        .headers
        .iter()
        .filter(|h| !is_core_header(&h.name))
        .cloned()
        .collect::<Vec<_>>();
    let mut list = Headers::new();
    for h in headers {
        list.push(h.name, h.value);
    }
    Ok(Core {
        via,
        from,
        to,
        call_id: call_id.to_string(),
        cseq,
        headers: list,
        body,
    })
}

fn is_core_header(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
    )
}

/// RFC 3261 §18.3: on UDP a Content-Length larger than the body makes the message
/// invalid; a smaller one truncates the body (the rest is not part of the message).
fn frame_body(raw: &RawHead<'_>, body: &[u8]) -> Result<Vec<u8>, String> {
    match raw.first(&HeaderName::ContentLength) {
        None => Ok(body.to_vec()),
        Some(v) => {
            let len = parse_bounded(v, u64::from(u32::MAX))
                .ok_or_else(|| format!("Invalid Content-Length {:?}", truncate(v)))?
                as usize;
            if len > body.len() {
                Err(format!(
                    "Content-Length {len} Exceeds Body Of {} Bytes",
                    body.len()
                ))
            } else {
                Ok(body[..len].to_vec())
            }
        }
    }
}

/// Validates the remaining headers Vigil acts on, so none fails "later".
fn validate_other_headers(raw: &RawHead<'_>) -> Result<(), String> {
    for h in &raw.headers {
        let v = h.value.as_str();
        let result = match &h.name {
            HeaderName::Contact if v == "*" => Ok(()),
            HeaderName::Contact | HeaderName::Route | HeaderName::RecordRoute => {
                parse_name_addr_list(v).map(drop)
            }
            HeaderName::SessionExpires => SessionExpires::parse(v).map(drop),
            HeaderName::MinSe => MinSe::parse(v).map(drop),
            HeaderName::RSeq => super::RSeq::parse(v).map(drop),
            HeaderName::RAck => super::RAck::parse(v).map(drop),
            HeaderName::Expires | HeaderName::MinExpires => parse_delta_seconds(v).map(drop),
            HeaderName::ContentType => MediaType::parse(v).map(drop),
            HeaderName::Date => validate_sip_date(v),
            HeaderName::Require
            | HeaderName::ProxyRequire
            | HeaderName::Supported
            | HeaderName::Unsupported => validate_token_list(v),
            _ => Ok(()),
        };
        result.map_err(|e| format!("Invalid {}: {e}", h.name))?;
    }
    Ok(())
}

fn validate_token_list(v: &str) -> Result<(), super::ValueError> {
    // An empty Supported is legal (`Supported = "Supported" HCOLON [option-tag *(COMMA option-tag)]`).
    if trim_lws(v).is_empty() {
        return Ok(());
    }
    if split_list(v).iter().all(|t| is_token(t)) {
        Ok(())
    } else {
        Err(super::ValueError(format!("invalid option-tag list {v:?}")))
    }
}

fn decode_request(raw: RawHead<'_>, body: &[u8]) -> Result<Request, DecodeError> {
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP each
    // (RFC 4475 `lwsstart`, `trws`, `lwsruri`).
    let parts: Vec<&str> = raw.start_line.split(' ').collect();
    // Control characters are nowhere in a Request-Line's grammar.
    if raw.start_line.contains(is_forbidden_control) {
        return Err(raw.reject(400, "Malformed Request-Line"));
    }
    let [method, uri, version] = parts[..] else {
        return Err(raw.reject(400, "Malformed Request-Line"));
    };
    if !is_sip_version(version) {
        return Err(raw.reject(400, "Malformed Request-Line"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(raw.reject(505, reason_phrase(505)));
    }
    let Some(method) = Method::parse(method) else {
        return Err(raw.reject(400, "Invalid Method"));
    };
    let uri = match Uri::parse(uri) {
        Ok(uri) => uri,
        Err(e) => return Err(raw.reject(400, &format!("Invalid Request-URI: {e}"))),
    };
    if uri.as_sip().is_some_and(|u| u.headers.is_some()) {
        // RFC 3261 §19.1.5: headers are not allowed in a Request-URI (RFC 4475 `escruri`).
        return Err(raw.reject(400, "Headers Not Allowed In Request-URI"));
    }
    let max_forwards = match raw.first(&HeaderName::MaxForwards) {
        None => 70,
        Some(v) => parse_max_forwards(v).map_err(|e| raw.reject(400, &format!("Invalid {e}")))?,
    };
    let core = decode_core(&raw, body).map_err(|(status, reason)| raw.reject(status, &reason))?;
    if core.cseq.method != method {
        return Err(raw.reject(400, "CSeq Method Does Not Match Request-Line"));
    }
    Ok(Request {
        method,
        uri,
        via: core.via,
        max_forwards,
        from: core.from,
        to: core.to,
        call_id: core.call_id,
        cseq: core.cseq,
        headers: core.headers,
        body: core.body,
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`
fn is_sip_version(s: &str) -> bool {
    let Some(rest) = s
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .map(|_| &s[4..])
    else {
        return false;
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    rest.split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

fn decode_response(raw: RawHead<'_>, body: &[u8]) -> Result<Response, DecodeError> {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
    let mut parts = raw.start_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(DecodeError::BadResponse(format!(
            "unsupported version {:?}",
            truncate(version)
        )));
    }
    let status = parse_bounded(code, 699)
        .filter(|&c| c >= 100 && code.len() == 3)
        .ok_or_else(|| {
            DecodeError::BadResponse(format!("invalid status code {:?}", truncate(code)))
        })? as u16;
    // Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(DecodeError::BadResponse(
            "control character in reason phrase".into(),
        ));
    }
    let core = decode_core(&raw, body).map_err(|(_, reason)| DecodeError::BadResponse(reason))?;
    Ok(Response {
        status,
        reason: reason.to_string(),
        via: core.via,
        from: core.from,
        to: core.to,
        call_id: core.call_id,
        cseq: core.cseq,
        headers: core.headers,
        body: core.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::typed::Refresher;

    const INVITE: &str = "INVITE sip:0049301234@vigil.example SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK-1;rport\r\n\
f: \"Alice\" <sip:alice@10.0.0.1>;tag=a1\r\n\
t: <sip:0049301234@vigil.example>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:alice@10.0.0.1:5061>\r\n\
k: timer\r\n\
x: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\nEXTRA";

    fn request(text: &str) -> Request {
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn compact_forms_are_expanded_and_typed() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.call_id, "call-1@10.0.0.1");
        assert_eq!(r.from.tag(), Some("a1"));
        assert_eq!(r.max_forwards, 70);
        assert!(r.headers.has_tag(&HeaderName::Supported, "timer"));
        let se = r.session_expires().expect("Session-Expires");
        assert_eq!((se.delta, se.refresher), (1800, Some(Refresher::Uac)));
        assert_eq!(r.min_se(), Some(MinSe(90)));
        // Content-Length 4 truncates what follows (RFC 3261 §18.3).
        assert_eq!(r.body, b"v=0\r");
        assert_eq!(
            r.contact().map(|c| c.uri.to_string()).as_deref(),
            Some("sip:alice@10.0.0.1:5061")
        );
    }

    #[test]
    fn encode_then_decode_is_stable() {
        let r = request(INVITE);
        let bytes = r.encode();
        let again = request(std::str::from_utf8(&bytes).expect("utf8"));
        assert_eq!(again, r);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains("Session-Expires: 1800;refresher=uac\r\n"));
        assert!(text.contains("Content-Length: 4\r\n\r\nv=0\r"));
    }

    fn rejected(text: &str) -> (u16, String) {
        match decode(text.as_bytes()) {
            Err(DecodeError::BadRequest { status, reason, .. }) => (status, reason),
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn broken_mandatory_headers_are_400_with_a_reason() {
        let (status, reason) = rejected(&INVITE.replace("CSeq: 1 INVITE", "CSeq: x INVITE"));
        assert_eq!(status, 400);
        assert!(reason.contains("CSeq"), "{reason}");
        let (status, reason) = rejected(&INVITE.replace("l: 4", "l: 400"));
        assert_eq!(status, 400);
        assert!(reason.contains("Content-Length"), "{reason}");
        let (_, reason) = rejected(&INVITE.replace("x: 1800;refresher=uac", "x: soon"));
        assert!(reason.contains("Session-Expires"), "{reason}");
        let (_, reason) = rejected(&INVITE.replace("Min-SE: 90", "Min-SE: -5"));
        assert!(reason.contains("Min-SE"), "{reason}");
        let (_, reason) = rejected(&INVITE.replace("i: call-1@10.0.0.1\r\n", ""));
        assert!(reason.contains("Call-ID"), "{reason}");
        let (status, _) = rejected(&INVITE.replace("SIP/2.0\r\n", "SIP/3.0\r\n"));
        assert_eq!(status, 505);
        let (_, reason) = rejected(&INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"));
        assert!(reason.contains("CSeq Method"), "{reason}");
    }

    #[test]
    fn control_characters_are_refused_in_call_ids_and_request_lines() {
        // Found by the mutation flood: a bit flip turned `Call-ID: ` into
        // `Call-ID:\0`, and the call went through with a NUL in its CDR.
        for ctl in ['\0', '\x1b', '\x15', '\x7f'] {
            let text = INVITE.replace("i: call-1@10.0.0.1", &format!("i: call{ctl}-1@10.0.0.1"));
            assert_eq!(rejected(&text), (400, "Invalid Call-ID".into()), "{ctl:?}");
        }
        let text = INVITE.replacen("INVITE sip:", "INVITE sip:\x1b[2J", 1);
        assert_eq!(rejected(&text).1, "Malformed Request-Line");
        // In a quoted string they may be escaped (RFC 4475 `intmeth`).
        let quoted = INVITE.replace("\"Alice\"", "\"NUL:\\\0 ESC:\\\x1b\"");
        assert!(decode(quoted.as_bytes()).is_ok(), "{quoted:?}");
    }

    #[test]
    fn rejection_can_be_answered() {
        let err = decode(INVITE.replace("CSeq: 1 INVITE", "CSeq: x").as_bytes()).unwrap_err();
        let DecodeError::BadRequest {
            reply: Some(reply), ..
        } = err
        else {
            panic!("no reply context");
        };
        let text = String::from_utf8(reply.render(
            400,
            "Invalid CSeq",
            "192.0.2.1:7000".parse().expect("addr"),
            "t1",
        ))
        .expect("utf8");
        assert!(text.starts_with("SIP/2.0 400 Invalid CSeq\r\n"));
        assert!(text.contains("rport=7000;received=192.0.2.1"), "{text}");
        assert!(
            text.contains("To: <sip:0049301234@vigil.example>;tag=t1"),
            "{text}"
        );
        assert!(text.contains("Call-ID: call-1@10.0.0.1"), "{text}");
    }

    #[test]
    fn junk_and_keepalives() {
        assert_eq!(decode(b"\r\n\r\n"), Err(DecodeError::KeepAlive));
        assert!(matches!(
            decode(b"HELLO"),
            Err(DecodeError::BadRequest { reply: None, .. })
        ));
        assert!(matches!(
            decode(&vec![b'A'; MAX_DATAGRAM + 1]),
            Err(DecodeError::Junk(_))
        ));
        assert!(decode(b"\xff\xfe\x00garbage").is_err());
    }

    #[test]
    fn responses_decode_and_bad_ones_drop() {
        let resp = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        match decode(resp.as_bytes()) {
            Ok(Message::Response(r)) => {
                assert_eq!(r.status, 180);
                assert_eq!(r.reason, "Ringing");
            }
            other => panic!("{other:?}"),
        }
        let bad = resp.replace("180 Ringing", "4294967301 Ringing");
        assert!(matches!(
            decode(bad.as_bytes()),
            Err(DecodeError::BadResponse(_))
        ));
    }
}
