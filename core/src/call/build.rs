//! Building the messages a B2BUA sends: the B-leg INVITE from the A-leg INVITE,
//! and each leg's view of what the other leg said. Only a known set of headers
//! crosses from one leg to the other; everything else (Via, Route, Contact, tags,
//! Call-ID) belongs to a single dialog and never leaks across.

use std::net::SocketAddr;

use crate::sip::{
    ALLOWED_METHODS, CSeq, HeaderName, Headers, Host, Method, NameAddr, Protocol, Request,
    Response, SipUri, Uri, Via,
};
use crate::transaction::Path;

/// Headers describing a body; they travel with it.
pub const BODY_HEADERS: [HeaderName; 5] = [
    HeaderName::ContentType,
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::MimeVersion,
];

/// Identity and call-information headers a carrier expects to pass through a
/// switch on the initial INVITE.
const INVITE_PASSTHROUGH: [HeaderName; 7] = [
    HeaderName::PAssertedIdentity,
    HeaderName::PPreferredIdentity,
    HeaderName::Privacy,
    HeaderName::RemotePartyId,
    HeaderName::Diversion,
    HeaderName::UserToUser,
    HeaderName::Subject,
];

/// Headers of a response that mean something to the other side.
const RESPONSE_PASSTHROUGH: [HeaderName; 7] = [
    HeaderName::PAssertedIdentity,
    HeaderName::Privacy,
    HeaderName::RemotePartyId,
    HeaderName::Reason,
    HeaderName::RetryAfter,
    HeaderName::Warning,
    HeaderName::ErrorInfo,
];

/// Headers of mid-dialog requests (INFO, NOTIFY, …) that carry their meaning.
const IN_DIALOG_PASSTHROUGH: [HeaderName; 4] = [
    HeaderName::Event,
    HeaderName::SubscriptionState,
    HeaderName::InfoPackage,
    HeaderName::Reason,
];

fn copy(from: &Headers, to: &mut Headers, names: &[HeaderName]) {
    for name in names {
        for value in from.get_all(name) {
            to.push(name.clone(), value);
        }
    }
}

/// Copies a body and the headers that describe it.
pub fn copy_body(
    from_headers: &Headers,
    body: &[u8],
    to_headers: &mut Headers,
    to_body: &mut Vec<u8>,
) {
    if let Some(b) = Body::of(from_headers, body) {
        b.apply(to_headers, to_body);
    }
}

/// A message body (an SDP, or a multipart carrying one) with the headers that
/// describe it, as a leg last saw it: re-sent in a re-INVITE refresh, or in a local
/// answer to the peer's refresh.
///
/// Shared (`Arc`): the same SDP is one leg's remote body and the other's local
/// one, and a worker holds tens of thousands of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(std::sync::Arc<BodyParts>);

#[derive(Debug, PartialEq, Eq)]
struct BodyParts {
    /// The headers that describe it (`Content-Type`, …), as exact-size slices:
    /// a call keeps two bodies for its whole life.
    headers: Box<[(HeaderName, Box<str>)]>,
    bytes: Box<[u8]>,
}

impl Body {
    /// The body of a message, if it has one.
    pub fn of(headers: &Headers, bytes: &[u8]) -> Option<Body> {
        if bytes.is_empty() {
            return None;
        }
        let own = BODY_HEADERS
            .iter()
            .flat_map(|name| headers.get_all(name).map(|v| (name.clone(), v.into())))
            .collect();
        Some(Body(std::sync::Arc::new(BodyParts {
            headers: own,
            bytes: bytes.into(),
        })))
    }

    /// A body from its describing headers and bytes (read back from the
    /// state store).
    pub fn from_parts<'a>(
        headers: impl IntoIterator<Item = (HeaderName, &'a str)>,
        bytes: &[u8],
    ) -> Body {
        Body(std::sync::Arc::new(BodyParts {
            headers: headers.into_iter().map(|(n, v)| (n, v.into())).collect(),
            bytes: bytes.into(),
        }))
    }

    /// The headers that describe it.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &str)> {
        self.0.headers.iter().map(|(n, v)| (n, &**v))
    }

    /// Tells this body apart from another one set later: the same value for
    /// the same body, shared or cloned.
    pub fn identity(&self) -> usize {
        std::sync::Arc::as_ptr(&self.0) as usize
    }

    /// The body itself (an SDP, most often).
    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// Puts this body (and its headers) on a message.
    pub fn apply(&self, headers: &mut Headers, body: &mut Vec<u8>) {
        for (name, value) in self.0.headers.iter() {
            headers.push(name.clone(), &**value);
        }
        *body = self.0.bytes.to_vec();
    }
}

/// The raw user part of a URI, as written (keeps `;npdi;rn=` and escapes).
pub fn raw_user(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(u) => u.user.clone(),
        // A tel: number, or whatever another scheme holds: escaped, since it
        // may carry what a SIP user part cannot (`foo:11@host:5061`, found by
        // the engine fuzzer, made a B-leg From Vigil itself rejects).
        Uri::Other { rest, .. } => Some(crate::sip::escape_user(rest)),
    }
}

/// Everything needed to build the B-leg INVITE.
pub struct OutboundInvite<'a> {
    pub a_invite: &'a Request,
    pub target: SocketAddr,
    /// Overrides `sip:<callee>@<target>` (a registered contact's URI).
    pub request_uri: Option<Uri>,
    /// Overrides the To URI (defaults to the Request-URI).
    pub to: Option<Uri>,
    pub advertised: SocketAddr,
    /// The transport it goes over (Via, Contact).
    pub proto: Protocol,
    /// The callee's and caller's numbers when not the caller's INVITE's (a
    /// `route` policy rewrote them).
    pub callee: Option<String>,
    pub caller: Option<String>,
    pub call_id: String,
    pub from_tag: String,
    pub branch: String,
    pub user_agent: &'a str,
}

/// The B-leg INVITE: a new dialog towards the trunk, carrying the caller's number
/// and display name, the called number exactly as dialled, the SDP and the
/// identity headers — and nothing that belongs to the A-leg dialog.
pub fn b_leg_invite(o: OutboundInvite<'_>) -> Request {
    let a = o.a_invite;
    let callee = o.callee.or_else(|| raw_user(&a.uri));
    let target_uri = o.request_uri.unwrap_or_else(|| {
        Uri::Sip(SipUri::new(
            callee,
            Host::Ip(o.target.ip()),
            Some(o.target.port()),
        ))
    });
    let to_uri = o.to.unwrap_or_else(|| target_uri.clone());
    let caller_user = o.caller.or_else(|| raw_user(&a.from.uri));
    let mut from = NameAddr::new(Uri::Sip(SipUri::for_socket(
        caller_user.clone(),
        o.advertised,
    )));
    from.display = a.from.display.clone();
    from.set_tag(&o.from_tag);
    let mut headers = Headers::new();
    headers.push(
        HeaderName::Contact,
        format!(
            "<{}>",
            SipUri::for_socket_over(caller_user, o.advertised, o.proto)
        ),
    );
    headers.push(HeaderName::Allow, ALLOWED_METHODS);
    if !o.user_agent.is_empty() {
        headers.push(HeaderName::UserAgent, o.user_agent);
    }
    copy(&a.headers, &mut headers, &INVITE_PASSTHROUGH);
    let mut body = Vec::new();
    copy_body(&a.headers, &a.body, &mut headers, &mut body);
    Request {
        method: Method::Invite,
        uri: target_uri,
        via: vec![Via::ours_over(o.proto, o.advertised, o.branch)],
        max_forwards: a.max_forwards.saturating_sub(1),
        from,
        to: NameAddr::new(to_uri),
        call_id: o.call_id,
        cseq: CSeq {
            seq: 1,
            method: Method::Invite,
        },
        headers,
        body,
    }
}

/// The B-leg INVITE sent again to another gateway (failover): the same
/// Call-ID and From tag, the next CSeq, a new branch; the Request-URI and
/// To name the callee at the new gateway, Contact the socket it is sent from.
pub fn retarget_invite(invite: &mut Request, path: Path, advertised: SocketAddr, branch: String) {
    let (target, proto) = (path.remote, path.proto);
    let callee = raw_user(&invite.uri);
    let uri = Uri::Sip(SipUri::new(
        callee,
        Host::Ip(target.ip()),
        Some(target.port()),
    ));
    invite.to = NameAddr::new(uri.clone());
    invite.uri = uri;
    invite.cseq.seq += 1;
    invite.via = vec![Via::ours_over(proto, advertised, branch)];
    let caller = raw_user(&invite.from.uri);
    invite.headers.set(
        HeaderName::Contact,
        format!("<{}>", SipUri::for_socket_over(caller, advertised, proto)),
    );
}

/// What one leg tells the other in a response: status and reason as received
/// (486 stays 486 with its reason phrase), the body and pass-through headers.
pub fn relay_response(
    original: &Request,
    received: &Response,
    local_tag: Option<&str>,
    contact: &SipUri,
    server_header: &str,
) -> Response {
    let mut r = original
        .response(received.status)
        .with_reason(received.reason.clone());
    if let Some(tag) = local_tag
        && r.to.tag().is_none()
    {
        r.to.set_tag(tag);
    }
    let creates_dialog =
        original.method == Method::Invite && received.status > 100 && received.status < 300;
    if creates_dialog && !original.is_in_dialog() {
        // §12.1.1: a dialog-creating response copies the request's Record-Route.
        for rr in original.headers.get_all(&HeaderName::RecordRoute) {
            r.headers.push(HeaderName::RecordRoute, rr);
        }
    }
    if creates_dialog || (original.method == Method::Update && received.is_success()) {
        r.headers.push(HeaderName::Contact, format!("<{contact}>"));
    }
    if received.is_success()
        && matches!(
            original.method,
            Method::Invite | Method::Update | Method::Options
        )
    {
        r.headers.push(HeaderName::Allow, ALLOWED_METHODS);
    }
    if (300..400).contains(&received.status) {
        copy(&received.headers, &mut r.headers, &[HeaderName::Contact]);
    }
    copy(&received.headers, &mut r.headers, &RESPONSE_PASSTHROUGH);
    if !server_header.is_empty() {
        r.headers.push(HeaderName::Server, server_header);
    }
    copy_body(
        &received.headers,
        &received.body,
        &mut r.headers,
        &mut r.body,
    );
    r
}

/// Copies the payload of a mid-dialog request onto its relayed copy.
pub fn relay_request_payload(from: &Request, to: &mut Request) {
    copy(&from.headers, &mut to.headers, &IN_DIALOG_PASSTHROUGH);
    copy_body(&from.headers, &from.body, &mut to.headers, &mut to.body);
}
