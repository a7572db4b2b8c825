//! Responses Vigil originates itself (RFC 3261 §8.2.6): one builder,
//! [`local_response`], and one type for "answer this request with a final
//! status" — [`Reply`]: a status, its reason phrase, and the headers that
//! explain it (`Retry-After`, `Min-SE`, `Min-Expires`, `Unsupported`, `Allow`,
//! challenges…). Every layer refuses a request through it, whether the
//! ingress sheds an INVITE, the registrar turns a REGISTER down, the engine
//! finds no route or a call answers a request in its dialog.

use std::borrow::Cow;

use super::{HeaderName, Request, Response};

/// A final answer Vigil gives a request on its own, most often a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Reply does nothing until it is sent"]
pub struct Reply {
    pub status: u16,
    /// The reason phrase; `None` is the standard one for the status.
    pub reason: Option<Cow<'static, str>>,
    /// Headers that explain the answer.
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    /// `status` with its standard reason phrase.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            reason: None,
            headers: Vec::new(),
        }
    }

    /// A reason phrase of Vigil's that says more than the standard one
    /// (`404 No Route`, `403 Not An Inbound Trunk`).
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Reply {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of an explaining header, if the reply has it.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After: seconds` (RFC 3261 §20.33): when the sender may try again.
    pub fn retry_after(self, seconds: u32) -> Reply {
        self.with_header(HeaderName::RetryAfter, seconds.to_string())
    }

    /// The response to `request`: see [`local_response`]; then the explaining
    /// headers.
    pub fn to(&self, request: &Request, to_tag: Option<&str>, server: &str) -> Response {
        let mut r = local_response(request, self.status, self.reason.as_deref(), to_tag, server);
        for (name, value) in &self.headers {
            r.headers.push(name.clone(), value.as_str());
        }
        r
    }
}

/// A response Vigil itself originates to `request` (§8.2.6): Via, From, To,
/// Call-ID and CSeq copied, `reason` (or the standard phrase), `to_tag` if the
/// request's To has none, and `Server` unless `server` is empty.
pub fn local_response(
    request: &Request,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    server: &str,
) -> Response {
    let mut r = request.response(status);
    if let Some(reason) = reason {
        r.reason = reason.to_string();
    }
    if let Some(tag) = to_tag
        && r.to.tag().is_none()
    {
        r.to.set_tag(tag);
    }
    if !server.is_empty() {
        r.headers.push(HeaderName::Server, server);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, decode};

    fn request(to_tag: &str) -> Request {
        let text = format!(
            "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n\
To: <sip:b@h>{to_tag}\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n"
        );
        match decode(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_has_the_standard_phrase_unless_told_and_its_headers() {
        let r = Reply::new(503)
            .retry_after(2)
            .to(&request(""), Some("t"), "Vigil");
        assert_eq!((r.status, r.reason.as_str()), (503, "Service Unavailable"));
        assert_eq!(r.to.tag(), Some("t"));
        assert_eq!(r.headers.get(&HeaderName::RetryAfter), Some("2"));
        assert_eq!(r.headers.get(&HeaderName::Server), Some("Vigil"));
        let r = Reply::new(404)
            .reason("No Route")
            .to(&request(";tag=x"), Some("t"), "");
        assert_eq!(r.reason, "No Route");
        assert_eq!(
            r.to.tag(),
            Some("x"),
            "an in-dialog request keeps its To tag"
        );
        assert_eq!(r.headers.get(&HeaderName::Server), None);
    }
}
