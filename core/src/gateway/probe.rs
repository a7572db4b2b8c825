//! Health probes: an OPTIONS to each gateway of a trunk with `outbound.probe`
//! every `interval`, as Kamailio's `dispatcher` does. A probe is sent once,
//! statelessly (the next one is the retry), and counts as failed when no
//! final answer comes within [`probe_timeout`] or the answer is not in
//! `ok_codes`; `failures` of those in a row take the gateway down,
//! `successes` answers bring it back (see [`Gateways::probed`]).
//!
//! One worker probes for all of them (every worker reads the shared health),
//! so a gateway gets one OPTIONS per interval however many workers run.
//! Sans-IO: [`Prober::handle_timeout`] returns the probes to send and
//! [`Prober::on_response`] takes their answers; state changes come back as
//! [`ProbeEvent`]s for the engine to log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Gateway, Gateways, HealthChange};
use crate::ids::IdGen;
use crate::sip::{Host, Method, NameAddr, Request, Response, SipUri, Uri, Via};

/// How long a probe waits for its answer: its interval, but no longer than a
/// non-INVITE transaction would live with T1 = 500 ms after its last
/// retransmission; a gateway slower than that is as good as down.
pub fn probe_timeout(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(4))
}

/// Which gateway a probe went to (looked up again when its answer comes: a
/// reload may have rebuilt the table meanwhile).
#[derive(Debug, Clone)]
struct Sent {
    trunk: Arc<str>,
    addr: SocketAddr,
    deadline: Instant,
}

/// A probe changed a gateway's state.
#[derive(Debug, Clone)]
pub struct ProbeEvent {
    pub gateway: Arc<Gateway>,
    pub change: HealthChange,
    /// The status that decided it; `None` for no answer.
    pub status: Option<u16>,
}

/// A probe to send: the request, and from which local address.
#[derive(Debug)]
pub struct ProbeOut {
    pub request: Request,
    pub to: SocketAddr,
    /// The advertised address of the local socket it goes from (Via).
    pub via: SocketAddr,
}

/// The probing of one table's gateways.
#[derive(Debug, Default)]
pub struct Prober {
    /// When each probed gateway (trunk, address) is next probed.
    next: HashMap<(Arc<str>, SocketAddr), Instant>,
    /// Probes awaiting their answer, by Via branch.
    sent: HashMap<String, Sent>,
}

impl Prober {
    /// Follows a (re)built table: new probed gateways are probed now, those
    /// gone are forgotten, the others keep their schedule.
    pub fn follow(&mut self, gateways: &Gateways, now: Instant) {
        let probed: Vec<(Arc<str>, SocketAddr)> = gateways
            .all()
            .filter(|g| g.probe.is_some())
            .map(|g| (g.trunk.clone(), g.addr))
            .collect();
        self.next.retain(|k, _| probed.contains(k));
        for key in probed {
            self.next.entry(key).or_insert(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.next.values().min().copied();
        let deadline = self.sent.values().map(|s| s.deadline).min();
        next.into_iter().chain(deadline).min()
    }

    /// Probes that went unanswered count as failures; gateways due are
    /// probed (`via` gives the advertised address to send from, `None` when
    /// no socket reaches it).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        gateways: &Gateways,
        ids: &mut IdGen,
        via: impl Fn(SocketAddr) -> Option<SocketAddr>,
        events: &mut Vec<ProbeEvent>,
    ) -> Vec<ProbeOut> {
        let expired: Vec<String> = self
            .sent
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(branch, _)| branch.clone())
            .collect();
        for branch in expired {
            if let Some(sent) = self.sent.remove(&branch) {
                record(gateways, &sent, now, None, events);
            }
        }
        let mut out = Vec::new();
        for ((trunk, addr), at) in &mut self.next {
            if *at > now {
                continue;
            }
            let Some(gateway) = gateways
                .all()
                .find(|g| g.trunk == *trunk && g.addr == *addr)
            else {
                continue;
            };
            let Some(probe) = &gateway.probe else {
                continue;
            };
            *at = now + probe.interval;
            let Some(via) = via(*addr) else {
                continue;
            };
            let branch = ids.branch();
            let request = options(*addr, via, branch.clone(), ids);
            self.sent.insert(
                branch,
                Sent {
                    trunk: trunk.clone(),
                    addr: *addr,
                    deadline: now + probe_timeout(probe.interval),
                },
            );
            out.push(ProbeOut {
                request,
                to: *addr,
                via,
            });
        }
        out
    }

    /// A response that may answer a probe; false if it answers none.
    pub fn on_response(
        &mut self,
        now: Instant,
        response: &Response,
        gateways: &Gateways,
        events: &mut Vec<ProbeEvent>,
    ) -> bool {
        let Some(branch) = response.top_via().branch() else {
            return false;
        };
        if response.cseq.method != Method::Options || !self.sent.contains_key(branch) {
            return false;
        }
        // A provisional is a probe's but decides nothing: the final does.
        if response.status >= 200
            && let Some(sent) = self.sent.remove(branch)
        {
            record(gateways, &sent, now, Some(response.status), events);
        }
        true
    }

    /// Probes awaiting an answer.
    pub fn outstanding(&self) -> usize {
        self.sent.len()
    }
}

fn record(
    gateways: &Gateways,
    sent: &Sent,
    now: Instant,
    status: Option<u16>,
    events: &mut Vec<ProbeEvent>,
) {
    let Some(gateway) = gateways
        .all()
        .find(|g| g.trunk == sent.trunk && g.addr == sent.addr)
    else {
        return;
    };
    let ok = match (status, &gateway.probe) {
        (Some(s), Some(probe)) => probe.is_ok(s),
        _ => false,
    };
    if let Some(change) = gateways.probed(gateway, now, ok, status.unwrap_or(0)) {
        events.push(ProbeEvent {
            gateway: gateway.clone(),
            change,
            status,
        });
    }
}

/// `OPTIONS sip:<gateway>` from Vigil (RFC 3261 §11: any SIP stack that
/// lives answers it).
fn options(to: SocketAddr, via: SocketAddr, branch: String, ids: &mut IdGen) -> Request {
    let uri = Uri::Sip(SipUri::new(None, Host::Ip(to.ip()), Some(to.port())));
    let mut from = NameAddr::new(Uri::Sip(SipUri::new(
        Some("probe".into()),
        Host::Ip(via.ip()),
        Some(via.port()),
    )));
    from.set_tag(&ids.tag());
    Request::out_of_dialog(
        Method::Options,
        uri,
        from,
        Via::ours(via, branch),
        ids.call_id(),
    )
}
