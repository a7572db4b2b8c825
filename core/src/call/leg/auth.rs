//! A leg towards a trunk with `auth`: the requests Vigil sent in its dialog
//! (refreshes, relayed requests, BYE), kept until their final answer so that
//! a carrier's 401/407 is answered with credentials ([`crate::uplink::auth`])
//! instead of failing the request. Only such legs pay for the copies.

use std::sync::Arc;

use super::super::Purpose;
use crate::config::TrunkAuth;
use crate::sip::{HeaderName, Method, Request, Response};

/// The credentials of a leg's trunk and its requests awaiting their answer.
pub(super) struct LegAuth {
    pub(super) credentials: Arc<TrunkAuth>,
    /// By purpose: a leg has at most one refresh and one BYE in flight, and
    /// relay ids are unique.
    sent: Vec<(Purpose, Request)>,
    /// The credentials of the last re-INVITE answered 2xx, by its CSeq: its
    /// ACK carries them too (RFC 3261 §13.2.2.4).
    invite_credentials: Option<(u32, Vec<(HeaderName, String)>)>,
}

impl LegAuth {
    pub(super) fn new(credentials: Arc<TrunkAuth>) -> LegAuth {
        LegAuth {
            credentials,
            sent: Vec::new(),
            invite_credentials: None,
        }
    }

    pub(super) fn remember(&mut self, purpose: Purpose, request: &Request) {
        self.forget(purpose);
        self.sent.push((purpose, request.clone()));
    }

    pub(super) fn forget(&mut self, purpose: Purpose) {
        self.sent.retain(|(p, _)| *p != purpose);
    }

    /// The request `response` answers, taken out (it is answered finally,
    /// or will be sent again and remembered anew).
    pub(super) fn take(&mut self, purpose: Purpose, response: &Response) -> Option<Request> {
        let pos = self.sent.iter().position(|(p, r)| {
            *p == purpose
                && r.cseq.seq == response.cseq.seq
                && r.cseq.method == response.cseq.method
        })?;
        let sent = self.sent.swap_remove(pos).1;
        if sent.method == Method::Invite && response.is_success() {
            self.invite_answered(&sent);
        }
        Some(sent)
    }

    /// An INVITE of this leg was answered 2xx: the ACK for it repeats its
    /// credentials, if it carried any.
    pub(super) fn invite_answered(&mut self, sent: &Request) {
        let creds: Vec<(HeaderName, String)> =
            [HeaderName::Authorization, HeaderName::ProxyAuthorization]
                .into_iter()
                .flat_map(|name| {
                    sent.headers
                        .get_all(&name)
                        .map(|v| (name.clone(), v.to_string()))
                        .collect::<Vec<_>>()
                })
                .collect();
        self.invite_credentials = (!creds.is_empty()).then_some((sent.cseq.seq, creds));
    }

    /// The credentials the ACK for the 2xx to the re-INVITE with CSeq `seq`
    /// repeats.
    pub(super) fn ack_credentials(&self, seq: u32) -> &[(HeaderName, String)] {
        match &self.invite_credentials {
            Some((s, creds)) if *s == seq => creds,
            _ => &[],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}
