//! The registrations Vigil keeps with its trunks' registrars (RFC 3261 §10.2):
//! one per trunk with `register:`, sent from the socket Vigil would use
//! towards the registrar, with that socket's advertised address as Contact.
//!
//! - A 2xx grants an interval (our Contact's `expires`, else `Expires`, else
//!   what was asked); the refresh goes [`refresh_margin`] before it runs out.
//! - A 401/407 is answered once with the registration's credentials
//!   ([`super::auth::authorize`]); 423 is retried with the `Min-Expires`.
//! - Any other failure, or no answer at all, backs off: `Retry-After` when
//!   the registrar gives one, else [`BACKOFF_FIRST`] doubling up to
//!   [`BACKOFF_MAX`]. The registration keeps trying for as long as it is
//!   configured.
//! - A reload that changes a registration unregisters the old one (expires=0)
//!   and registers the new one with a fresh Call-ID; one that removes it
//!   unregisters it. So does a shutdown ([`Registrations::unregister_all`]).
//!
//! Sans-IO: inputs carry `now`; requests to send come out of
//! [`Registrations::poll_request`] tagged with an id that the engine's
//! transaction layer hands back with the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{authorize, is_challenge};
use crate::config::{Trunk, TrunkRegistration};
use crate::ids::IdGen;
use crate::sip::{
    CSeq, HeaderName, Headers, Host, Method, NameAddr, Protocol, Request, Response, SipUri, Uri,
    Via,
};
use crate::transaction::Path;
use crate::transport::LocalSocket;

/// The first retry after a failure; each further one waits twice as long.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(30);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1800);
/// The longest `Retry-After` honoured (a registrar asking for more is asked
/// again after this).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// How long before a granted registration runs out Vigil refreshes it: a
/// minute, or half the interval when that is shorter, so that one lost
/// REGISTER still has its retransmissions' time (Timer F, 32 s) to get in.
pub fn refresh_margin(granted: Duration) -> Duration {
    (granted / 2).min(Duration::from_secs(60))
}

/// Where a registration stands, as `vigil ctl registrations` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegState {
    /// The first REGISTER (or one after a change) awaits its answer.
    Registering,
    Registered,
    /// Refused (a final status other than a challenge): tried again later.
    Failed,
    /// No answer, or the registrar asked to wait (`Retry-After`).
    BackingOff,
    /// Removed by a reload or a shutdown: expires=0 sent.
    Unregistering,
}

/// One registration, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationSnapshot {
    pub trunk: String,
    pub aor: String,
    pub registrar: SocketAddr,
    pub state: RegState,
    /// Seconds until the registrar forgets Vigil (when registered).
    pub expires_in: Option<u64>,
    /// Seconds until the next REGISTER (a refresh or a retry).
    pub next_in: Option<u64>,
    pub last_status: Option<u16>,
    /// Failures in a row.
    pub failures: u32,
}

/// A REGISTER to send: `id` comes back with its answer.
#[derive(Debug)]
pub struct Outgoing {
    pub id: u32,
    pub request: Request,
    pub path: Path,
}

/// What happened to a registration, for the caller's logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegEvent {
    Registered {
        id: u32,
        granted: Duration,
    },
    /// A failure the back-off applies to (a refusal or a timeout).
    Failed {
        id: u32,
        status: Option<u16>,
    },
}

struct Registration {
    id: u32,
    trunk: Arc<str>,
    config: Arc<TrunkRegistration>,
    state: RegState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The Contact's socket, chosen at the first REGISTER (an unregister must
    /// name the same Contact).
    socket: Option<LocalSocket>,
    /// The REGISTER awaiting its answer.
    in_flight: Option<Request>,
    /// When the next REGISTER goes (refresh or retry).
    next: Option<Instant>,
    expires_at: Option<Instant>,
    /// The interval asked for (raised by a 423).
    asked: u32,
    last_status: Option<u16>,
    failures: u32,
    /// Forget it once the unregister is answered (removed by a reload).
    removed: bool,
}

/// Every registration of the running config. See the module's doc.
#[derive(Default)]
pub struct Registrations {
    entries: Vec<Registration>,
    next_id: u32,
    outgoing: Vec<Outgoing>,
    events: Vec<RegEvent>,
    user_agent: String,
}

/// What a REGISTER needs from its worker: identifiers, and the socket towards
/// an address.
pub struct UplinkEnv<'a> {
    pub ids: &'a mut IdGen,
    pub socket_for: &'a dyn Fn(SocketAddr, Protocol) -> Option<LocalSocket>,
}

impl Registrations {
    /// Follows a config: registers new registrations at once, re-registers
    /// changed ones and unregisters removed ones.
    pub fn set_config(
        &mut self,
        now: Instant,
        trunks: &[Trunk],
        user_agent: &str,
        env: &mut UplinkEnv<'_>,
    ) {
        self.user_agent = user_agent.to_string();
        let wanted: Vec<(&Arc<str>, &Arc<TrunkRegistration>)> = trunks
            .iter()
            .filter_map(|t| t.register.as_ref().map(|r| (&t.name, r)))
            .collect();
        let stale: Vec<u32> = self
            .entries
            .iter()
            .filter(|e| !e.removed)
            .filter(|e| {
                !wanted
                    .iter()
                    .any(|(n, r)| **n == e.trunk && **r == e.config)
            })
            .map(|e| e.id)
            .collect();
        for id in stale {
            self.unregister(now, id, env);
        }
        for (name, config) in wanted {
            let kept = self
                .entries
                .iter()
                .any(|e| !e.removed && e.trunk == *name && e.config == *config);
            if !kept {
                let id = self.add(name.clone(), config.clone(), env);
                self.send(now, id, env);
            }
        }
    }

    /// Shutdown: expires=0 for every registration that holds one.
    pub fn unregister_all(&mut self, now: Instant, env: &mut UplinkEnv<'_>) {
        let ids: Vec<u32> = self
            .entries
            .iter()
            .filter(|e| !e.removed)
            .map(|e| e.id)
            .collect();
        for id in ids {
            self.unregister(now, id, env);
        }
    }

    pub fn poll_request(&mut self) -> Option<Outgoing> {
        (!self.outgoing.is_empty()).then(|| self.outgoing.remove(0))
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// True while an unregister awaits its answer (a shutdown waits for it).
    pub fn is_unregistering(&self) -> bool {
        self.entries.iter().any(|e| e.removed)
    }

    /// Sends the REGISTERs that are due.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut UplinkEnv<'_>) {
        let due: Vec<u32> = self
            .entries
            .iter()
            .filter(|e| e.next.is_some_and(|at| at <= now))
            .map(|e| e.id)
            .collect();
        for id in due {
            self.send(now, id, env);
        }
    }

    /// The final answer to REGISTER `id` (provisionals change nothing).
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: u32,
        response: &Response,
        env: &mut UplinkEnv<'_>,
    ) {
        if response.status < 200 {
            return;
        }
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else {
            return;
        };
        let Some(sent) = self.entries[pos].in_flight.take() else {
            return;
        };
        if sent.cseq.seq != response.cseq.seq {
            // The answer to an older REGISTER: the current one still waits.
            self.entries[pos].in_flight = Some(sent);
            return;
        }
        let e = &mut self.entries[pos];
        e.last_status = Some(response.status);
        if e.removed {
            if !is_challenge(response.status) {
                self.entries.remove(pos);
                return;
            }
        } else if response.is_success() {
            let granted = Duration::from_secs(u64::from(granted_expires(response, &sent, e.asked)));
            e.state = RegState::Registered;
            e.failures = 0;
            e.expires_at = Some(now + granted);
            e.next = Some(now + granted - refresh_margin(granted));
            self.events.push(RegEvent::Registered { id, granted });
            return;
        }
        if is_challenge(response.status) {
            let cnonce = env.ids.tag();
            match authorize(&sent, response, &e.config.auth, env.ids.branch(), &cnonce) {
                Ok(retry) => {
                    e.cseq = retry.cseq.seq;
                    let path = Path::udp(
                        e.socket.map_or(sent_from(&sent), |s| s.bind),
                        e.config.registrar,
                    );
                    e.in_flight = Some(retry.clone());
                    self.outgoing.push(Outgoing {
                        id,
                        request: retry,
                        path,
                    });
                    return;
                }
                Err(err) => {
                    tracing::warn!(trunk = %e.trunk, status = response.status, error = %err, "registration refused");
                }
            }
        }
        if e.removed {
            self.entries.remove(pos);
            return;
        }
        if response.status == 423
            && let Some(min) = header_secs(&response.headers, &HeaderName::MinExpires)
            && min > u64::from(e.asked)
            && min <= u64::from(*crate::config::REGISTER_EXPIRES.end())
        {
            // §10.3 step 7: ask again with the registrar's minimum.
            e.asked = u32::try_from(min).unwrap_or(e.asked);
            e.next = Some(now);
            return self.send(now, id, env);
        }
        let retry_after = header_secs(&response.headers, &HeaderName::RetryAfter);
        self.fail(now, pos, Some(response.status), retry_after);
    }

    /// REGISTER `id` got no answer (Timer F).
    pub fn handle_tx_timeout(&mut self, now: Instant, id: u32) {
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else {
            return;
        };
        if self.entries[pos].removed {
            self.entries.remove(pos);
            return;
        }
        self.entries[pos].in_flight = None;
        self.fail(now, pos, None, None);
    }

    /// The trunk whose registration `id` is, for logs and metrics.
    pub fn trunk(&self, id: u32) -> Option<&Arc<str>> {
        self.entries.iter().find(|e| e.id == id).map(|e| &e.trunk)
    }

    pub fn snapshot(&self, now: Instant) -> Vec<RegistrationSnapshot> {
        self.entries
            .iter()
            .map(|e| RegistrationSnapshot {
                trunk: e.trunk.to_string(),
                aor: format!("sip:{}@{}", e.config.auth.user, e.config.domain),
                registrar: e.config.registrar,
                state: e.state,
                expires_in: e
                    .expires_at
                    .filter(|_| e.state == RegState::Registered)
                    .map(|at| at.saturating_duration_since(now).as_secs()),
                next_in: e.next.map(|at| at.saturating_duration_since(now).as_secs()),
                last_status: e.last_status,
                failures: e.failures,
            })
            .collect()
    }

    fn add(
        &mut self,
        trunk: Arc<str>,
        config: Arc<TrunkRegistration>,
        env: &mut UplinkEnv<'_>,
    ) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.push(Registration {
            id,
            trunk,
            asked: config.expires,
            config,
            state: RegState::Registering,
            call_id: env.ids.call_id(),
            from_tag: env.ids.tag(),
            cseq: 0,
            socket: None,
            in_flight: None,
            next: None,
            expires_at: None,
            last_status: None,
            failures: 0,
            removed: false,
        });
        id
    }

    fn unregister(&mut self, now: Instant, id: u32, env: &mut UplinkEnv<'_>) {
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        e.removed = true;
        e.state = RegState::Unregistering;
        let held = e.expires_at.is_some_and(|at| at > now) || e.in_flight.is_some();
        if !held {
            self.entries.retain(|e| e.id != id);
            return;
        }
        self.send(now, id, env);
    }

    /// Sends the registration's next REGISTER (expires=0 once removed).
    fn send(&mut self, now: Instant, id: u32, env: &mut UplinkEnv<'_>) {
        let user_agent = self.user_agent.clone();
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        e.next = None;
        let Some(socket) = e
            .socket
            .or_else(|| (env.socket_for)(e.config.registrar, e.config.transport))
        else {
            tracing::warn!(trunk = %e.trunk, registrar = %e.config.registrar, "no socket towards the registrar");
            if e.removed {
                self.entries.retain(|e| e.id != id);
            } else if let Some(pos) = self.entries.iter().position(|e| e.id == id) {
                self.fail(now, pos, None, None);
            }
            return;
        };
        e.socket = Some(socket);
        e.cseq += 1;
        let expires = if e.removed { 0 } else { e.asked };
        match build_register(e, socket, expires, env.ids.branch(), &user_agent) {
            Some(request) => {
                e.in_flight = Some(request.clone());
                let path = Path {
                    local: socket.bind,
                    remote: e.config.registrar,
                    proto: socket.proto,
                };
                self.outgoing.push(Outgoing { id, request, path });
            }
            None => {
                tracing::warn!(trunk = %e.trunk, "cannot build a REGISTER from the trunk's register settings");
                if let Some(pos) = self.entries.iter().position(|e| e.id == id) {
                    self.fail(now, pos, None, None);
                }
            }
        }
    }

    /// A failed attempt: back off (Retry-After, else doubling).
    fn fail(&mut self, now: Instant, pos: usize, status: Option<u16>, retry_after: Option<u64>) {
        let e = &mut self.entries[pos];
        e.failures = e.failures.saturating_add(1);
        let backoff = BACKOFF_FIRST
            .saturating_mul(1u32 << (e.failures - 1).min(10))
            .min(BACKOFF_MAX);
        let wait = match retry_after {
            Some(secs) => Duration::from_secs(secs).min(RETRY_AFTER_MAX),
            None => backoff,
        };
        e.state = match (status, retry_after) {
            (Some(_), None) => RegState::Failed,
            _ => RegState::BackingOff,
        };
        e.next = Some(now + wait);
        tracing::warn!(trunk = %e.trunk, ?status, failures = e.failures, retry_in = ?wait, "registration failed");
        self.events.push(RegEvent::Failed { id: e.id, status });
    }
}

/// The local address a request went out from (its Via), for a retry when
/// the socket is somehow unknown.
fn sent_from(request: &Request) -> SocketAddr {
    let via = request.top_via();
    match (via.host.ip(), via.port) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

/// The REGISTER of RFC 3261 §10.2: Request-URI the domain, To and From the
/// AOR, Contact Vigil's socket with the contact user.
fn build_register(
    e: &Registration,
    socket: LocalSocket,
    expires: u32,
    branch: String,
    user_agent: &str,
) -> Option<Request> {
    let domain = Host::parse(&e.config.domain).ok()?;
    let aor = Uri::Sip(SipUri::new(
        Some(e.config.auth.user.clone()),
        domain.clone(),
        None,
    ));
    let mut from = NameAddr::new(aor.clone());
    from.set_tag(&e.from_tag);
    let contact = SipUri::for_socket_over(
        Some(e.config.contact_user.clone()),
        socket.advertised,
        socket.proto,
    );
    let mut headers = Headers::new();
    headers.push(HeaderName::Contact, format!("<{contact}>"));
    headers.push(HeaderName::Expires, expires.to_string());
    if !user_agent.is_empty() {
        headers.push(HeaderName::UserAgent, user_agent);
    }
    Some(Request {
        method: Method::Register,
        uri: Uri::Sip(SipUri::new(None, domain, None)),
        via: vec![Via::ours_over(socket.proto, socket.advertised, branch)],
        max_forwards: 70,
        from,
        to: NameAddr::new(aor),
        call_id: e.call_id.clone(),
        cseq: CSeq {
            seq: e.cseq,
            method: Method::Register,
        },
        headers,
        body: Vec::new(),
    })
}

/// The interval a 2xx grants Vigil's Contact (RFC 3261 §10.2.4): the
/// `expires` of the Contact that is Vigil's, else `Expires`, else what was
/// asked. Never zero (a registrar granting nothing is refreshed soon).
fn granted_expires(response: &Response, sent: &Request, asked: u32) -> u32 {
    let ours = sent
        .headers
        .get(&HeaderName::Contact)
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|c| c.uri);
    let from_contact = response
        .headers
        .list(&HeaderName::Contact)
        .filter_map(|c| NameAddr::parse(c).ok())
        .find(|c| ours.as_ref().is_some_and(|o| same_contact(o, &c.uri)))
        .and_then(|c| {
            c.param("expires")
                .and_then(|p| p.value.as_deref()?.parse::<u32>().ok())
        });
    from_contact
        .or_else(|| {
            response
                .headers
                .get(&HeaderName::Expires)
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .unwrap_or(asked)
        .max(1)
}

/// Two Contact URIs name the same binding: user, host and port (a
/// registrar may add parameters or rewrite case).
fn same_contact(a: &Uri, b: &Uri) -> bool {
    match (a.as_sip(), b.as_sip()) {
        (Some(a), Some(b)) => {
            a.user == b.user
                && a.host.matches(&b.host)
                && a.port_or_default() == b.port_or_default()
        }
        _ => false,
    }
}

/// A header holding a number of seconds (`Retry-After: 120 (comment)`).
fn header_secs(headers: &Headers, name: &HeaderName) -> Option<u64> {
    let value = headers.get(name)?;
    let digits: &str = value.trim().split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
