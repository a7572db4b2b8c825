//! What a UAS checks before it acts on a request (RFC 3261 §8.2.1–8.2.3):
//! a URI scheme it serves, option tags it supports, a body it accepts.

use super::{Engine, SUPPORTED};
use crate::sip::{HeaderName, MediaType, Method, Reply, Request, TAG_100REL};

impl Engine {
    /// RFC 3261 §8.2.1-8.2.3 checks a UAS makes before acting on a request.
    pub(super) fn uas_checks(&self, request: &Request) -> Option<Reply> {
        let scheme = request.uri.scheme();
        if !matches!(scheme.as_str(), "sip" | "sips" | "tel") {
            return Some(Reply::new(416));
        }
        let unsupported: Vec<&str> = request
            .headers
            .list(&HeaderName::Require)
            .chain(request.headers.list(&HeaderName::ProxyRequire))
            .filter(|tag| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag)))
            // An INVITE's `100rel` is its source trunk's `prack` to judge,
            // once the trunk is known (`engine::invite`).
            .filter(|tag| request.method != Method::Invite || !tag.eq_ignore_ascii_case(TAG_100REL))
            .collect();
        if !unsupported.is_empty() {
            return Some(
                Reply::new(420).with_header(HeaderName::Unsupported, unsupported.join(", ")),
            );
        }
        None
    }

    /// Session description checks for an INVITE (§8.2.3, RFC 4475 `invut`, `sdp01`).
    pub(super) fn content_checks(request: &Request) -> Option<Reply> {
        if !request.body.is_empty() {
            let acceptable = request.content_type().is_some_and(|m| {
                (m.kind == "application" && m.subtype == "sdp")
                    || (m.kind == "multipart" && m.subtype == "mixed")
            });
            if !acceptable {
                return Some(Reply::new(415).with_header(HeaderName::Accept, "application/sdp"));
            }
            if let Some(enc) = request.headers.get(&HeaderName::ContentEncoding)
                && !enc.trim().eq_ignore_ascii_case("identity")
            {
                return Some(Reply::new(415).with_header(HeaderName::AcceptEncoding, "identity"));
            }
        }
        let accepts: Vec<MediaType> = request
            .headers
            .list(&HeaderName::Accept)
            .filter_map(|a| MediaType::parse(a).ok())
            .collect();
        if request.headers.count(&HeaderName::Accept) > 0
            && !accepts.iter().any(|m| m.admits("application", "sdp"))
        {
            return Some(Reply::new(406).with_header(HeaderName::Accept, "application/sdp"));
        }
        None
    }
}
