//! A leg towards a trunk with `auth`: the requests Vigil sent in its dialog
//! (refreshes, relayed requests, BYE), kept until their final answer so that
//! a carrier's 401/407 is answered with credentials ([`crate::uplink::auth`])
//! instead of failing the request. Only such legs pay for the copies.

use std::sync::Arc;

use super::super::Purpose;
use crate::config::TrunkAuth;
use crate::sip::{Request, Response};

/// The credentials of a leg's trunk and its requests awaiting their answer.
pub(super) struct LegAuth {
    pub(super) credentials: Arc<TrunkAuth>,
    /// By purpose: a leg has at most one refresh and one BYE in flight, and
    /// relay ids are unique.
    sent: Vec<(Purpose, Request)>,
}

impl LegAuth {
    pub(super) fn new(credentials: Arc<TrunkAuth>) -> LegAuth {
        LegAuth {
            credentials,
            sent: Vec::new(),
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
        Some(self.sent.swap_remove(pos).1)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}
