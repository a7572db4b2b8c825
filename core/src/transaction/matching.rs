//! Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3) and
//! where the responses of a server transaction go (§18.2.2, RFC 3581): the
//! keys the transaction layer files its transactions under.

use std::net::SocketAddr;

use crate::sip::{Method, Request, Via};

/// Server transaction key (RFC 3261 §17.2.3). With a magic-cookie branch: branch,
/// sent-by and method (ACK matches INVITE). Without (RFC 2543 peers): the
/// Request-URI, From tag, Call-ID, CSeq number and top Via.
///
/// Vigil adds the source address: a retransmission always comes from where the
/// original came from, while a copy of someone else's branch from elsewhere (RFC
/// 4475's messages reuse branches; an attacker can too) must not be absorbed into,
/// or answered from, another client's transaction.
pub(super) fn server_key(request: &Request, source: SocketAddr) -> String {
    let method = match request.method {
        Method::Ack => Method::Invite,
        ref m => m.clone(),
    };
    server_key_for(request, &method, source)
}

pub(super) fn server_key_for(request: &Request, method: &Method, source: SocketAddr) -> String {
    let via = request.top_via();
    match via.branch() {
        Some(branch) if via.has_rfc3261_branch() => {
            format!("{source}|{branch}|{}|{method}", via.sent_by())
        }
        _ => format!(
            "{source}|2543|{}|{}|{}|{}|{}|{method}",
            request.uri,
            request.from.tag().unwrap_or_default(),
            request.call_id,
            request.cseq.seq,
            via.sent_by(),
        ),
    }
}

/// Client transaction key (§17.1.3): the top Via branch and the CSeq method.
pub(super) fn client_key_for(via: &Via, method: &Method) -> String {
    format!("{}|{method}", via.branch().unwrap_or_default())
}

/// The method a [`client_key_for`] key ends with (a method is a token: no `|`).
pub(super) fn method_of_client_key(key: &str) -> &str {
    key.rsplit_once('|').map_or(key, |(_, method)| method)
}

/// Where to send responses (RFC 3261 §18.2.2, RFC 3581 §4): to the source with
/// `rport` (or when forced), else to `received` or sent-by at sent-by's port.
pub fn response_target(top: &Via, source: SocketAddr, force_rport: bool) -> SocketAddr {
    if force_rport || top.has_rport() {
        return source;
    }
    let port = top.port.unwrap_or(5060);
    let received = top
        .params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("received"))
        .and_then(|p| p.value.as_deref())
        .and_then(|v| crate::sip::Host::parse(v).ok())
        .and_then(|h| h.ip());
    match received.or_else(|| top.host.ip()) {
        Some(ip) => SocketAddr::new(ip, port),
        // A hostname in sent-by would need DNS; the source address is the answer
        // that reaches the sender.
        None => source,
    }
}
