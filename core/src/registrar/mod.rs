//! The registrar (RFC 3261 §10) with digest authentication, and NAT keep-alive for
//! the contacts it holds. Sans-IO like the call engine: it takes REGISTERs,
//! answers to its keep-alive pings and timeouts, and returns what to send and
//! what to persist, in the order it must happen (a binding is written to the store
//! before its 200 OK goes out).
//!
//! One registrar serves the whole switch; the call workers read where each user
//! can be reached from its [`location::LocationView`].

pub mod digest;
pub mod keepalive;
pub mod location;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, KeepaliveMode};
use crate::ids::IdGen;
use crate::ids::REGISTRAR_WORKER;
use crate::metrics::{Metrics, RequestShed};
use crate::policy::{AddrText, BuiltinPolicy, ContactView, KeepaliveDecision, SessionPolicy};
use crate::ratelimit::RateLimit;
use crate::sip::{
    DigestCredentials, HeaderName, Host, Message, Method, NameAddr, Reply, Request, Response,
    SipUri, Uri, Via,
};
use crate::transaction::{Path, TimerValues, TransactionLayer, Transmit};
use crate::transport::LocalSocket;

use digest::{DigestAuth, Verdict};
use keepalive::{Due, Schedule};
use location::{Binding, Change, ContactId, Limits, Location, LocationView, Target};

/// What the registrar asks its shell to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this change to the location store (before anything after it is sent).
    Persist(Change),
    Transmit(Transmit),
}

/// A binding as the store holds it, to load at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    pub aor: String,
    pub uri: String,
    pub received: SocketAddr,
    pub local: SocketAddr,
    /// Time left before it expires.
    pub expires_in: Duration,
    pub call_id: String,
    pub cseq: u32,
    pub q: u16,
    /// How long ago it last registered (`None`: a row from before the store
    /// kept it).
    pub registered_ago: Option<Duration>,
}

/// An OPTIONS keep-alive in flight, and the unanswered ones before it.
#[derive(Debug, Default)]
struct PingState {
    outstanding: Option<String>,
    failures: u32,
}

pub struct Registrar {
    config: Arc<Config>,
    sockets: Arc<[LocalSocket]>,
    auth: DigestAuth,
    tx: TransactionLayer<()>,
    location: Location,
    schedule: Schedule,
    /// OPTIONS pings by branch, and each contact's ping state.
    pings: HashMap<String, ContactId>,
    ping_state: HashMap<ContactId, PingState>,
    ids: IdGen,
    metrics: Arc<Metrics>,
    /// The keep-alive-tick decision point (built in unless configured).
    policy: Arc<dyn SessionPolicy>,
    outputs: VecDeque<Output>,
    refusal_log: RateLimit,
}

impl Registrar {
    pub fn new(
        config: Arc<Config>,
        sockets: Arc<[LocalSocket]>,
        auth: DigestAuth,
        view: Arc<LocationView>,
        metrics: Arc<Metrics>,
    ) -> Registrar {
        Registrar::with_ids(
            config,
            sockets,
            auth,
            view,
            metrics,
            IdGen::new(REGISTRAR_WORKER),
        )
    }

    pub fn with_ids(
        config: Arc<Config>,
        sockets: Arc<[LocalSocket]>,
        auth: DigestAuth,
        view: Arc<LocationView>,
        metrics: Arc<Metrics>,
        ids: IdGen,
    ) -> Registrar {
        Registrar {
            tx: TransactionLayer::new(TimerValues::default(), config.sip.force_rport),
            config,
            sockets,
            auth,
            location: Location::new(view),
            schedule: Schedule::default(),
            pings: HashMap::new(),
            ping_state: HashMap::new(),
            ids,
            metrics,
            policy: Arc::new(BuiltinPolicy),
            outputs: VecDeque::new(),
            refusal_log: RateLimit::new(10, Duration::from_secs(10)),
        }
    }

    pub fn set_policy(&mut self, policy: Arc<dyn SessionPolicy>) {
        self.policy = policy;
    }

    /// The sockets known after a reload (a contact keeps the socket it
    /// registered on; a removed one only changes what is advertised).
    pub fn set_sockets(&mut self, sockets: Arc<[LocalSocket]>) {
        self.sockets = sockets;
    }

    pub fn set_config(&mut self, config: Arc<Config>) {
        self.tx.set_force_rport(config.sip.force_rport);
        self.config = config;
    }

    pub fn contacts(&self) -> usize {
        self.location.len()
    }

    /// Loads the bindings the store kept across a restart; their keep-alives
    /// resume at once.
    pub fn load(&mut self, now: Instant, stored: Vec<StoredBinding>) -> usize {
        let mut loaded = 0;
        for s in stored {
            let Some(user) = self.config.user(&s.aor) else {
                self.outputs.push_back(Output::Persist(Change::Remove {
                    aor: s.aor.as_str().into(),
                    uri: s.uri,
                }));
                continue;
            };
            let Ok(uri) = Uri::parse(&s.uri) else {
                continue;
            };
            let id = self.location.insert(Binding {
                id: 0,
                aor: user.name.clone(),
                contact: Arc::new(Target::new(
                    &uri,
                    Path::udp(s.local, s.received),
                    s.q,
                    s.registered_ago
                        .and_then(|ago| now.checked_sub(ago))
                        .unwrap_or(now),
                )),
                expires: now + s.expires_in,
                call_id: s.call_id.into_boxed_str(),
                cseq: s.cseq,
            });
            if user.keepalive.enabled() {
                self.schedule.add(id, now);
            }
            loaded += 1;
        }
        loaded
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.drain_transmits();
        self.outputs.pop_front()
    }

    fn drain_transmits(&mut self) {
        while let Some(t) = self.tx.poll_transmit() {
            self.outputs.push_back(Output::Transmit(t));
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            self.location.next_expiry(),
            self.schedule.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A message for the registrar: a REGISTER, or an answer to a keep-alive ping.
    /// The connection `flow` closed: the contacts registered on it are
    /// unreachable until they register again (RFC 5626 §4.4.1: nothing
    /// can connect in to a phone behind NAT).
    pub fn on_flow_closed(&mut self, flow: Path) {
        for id in self.location.on_flow(flow) {
            if let Some(b) = self.location.remove(id) {
                tracing::info!(user = %b.aor, contact = %b.contact.uri, received = %b.contact.received, "connection closed: contact unreachable until it registers again");
                self.forget(id);
            }
        }
    }

    pub fn handle_message(&mut self, now: Instant, message: Message, path: Path) {
        match message {
            // Stateless: a retransmitted REGISTER is answered again, and
            // `register` recognises one that was already applied.
            Message::Request(mut request) if request.method != Method::Ack => {
                let reply_path = self.tx.receive_stateless(&mut request, path);
                let response = self.register(now, &request, path);
                // After the store writes `register` queued: the 200 follows them.
                self.outputs.push_back(Output::Transmit(Transmit::new(
                    reply_path,
                    response.encode(),
                )));
            }
            Message::Request(_) => {}
            Message::Response(response) => self.on_ping_answer(&response),
        }
    }

    fn log_refusal(&mut self, now: Instant, path: Path, user: &str, why: &str) {
        if let Some(suppressed) = self.refusal_log.allow(now) {
            tracing::warn!(source = %path.remote, %user, reason = why, suppressed, "REGISTER refused");
        }
    }

    /// RFC 3261 §10.3: authenticate, then apply the bindings.
    fn register(&mut self, now: Instant, request: &Request, path: Path) -> Response {
        let server = self.config.sip.user_agent.clone();
        let tag = self.ids.tag();
        let reply = |answer: Reply| answer.to(request, Some(&tag), &server);
        if request.method != Method::Register {
            return reply(Reply::new(405).with_header(HeaderName::Allow, "REGISTER"));
        }
        let Some(registrar) = self.config.registrar.as_ref() else {
            return reply(Reply::new(405));
        };
        let limits = Limits {
            min_expires: registrar.min_expires,
            max_expires: registrar.max_expires,
            max_contacts: registrar.max_contacts,
            max_total: self.config.limits.max_registrations,
        };
        let aor_user = request.to.uri.user_part().unwrap_or_default();
        if self.auth.is_blocked(now, path.remote.ip()) {
            self.log_refusal(now, path, &aor_user, "too many failures from this address");
            return reply(Reply::new(403).reason("Too Many Failures"));
        }
        let Some(user) = self.config.user(&aor_user).cloned() else {
            self.auth.note_failure(now, path.remote.ip());
            self.log_refusal(now, path, &aor_user, "unknown user");
            return reply(Reply::new(403));
        };
        let credentials = request
            .headers
            .get(&HeaderName::Authorization)
            .and_then(|v| DigestCredentials::parse(v).ok());
        let verdict = match &credentials {
            None => None,
            Some(c) if c.username != *user.name => {
                Some(Verdict::Rejected("username is not the address-of-record"))
            }
            Some(c) => {
                let fingerprint = self.auth.fingerprint(request);
                Some(self.auth.verify(
                    now,
                    "REGISTER",
                    c,
                    &user.password,
                    &user.digest_algorithms,
                    fingerprint,
                ))
            }
        };
        match verdict {
            Some(Verdict::Accepted) => {}
            Some(Verdict::Retransmission) => {
                // Already applied: answer with the bindings as they are now.
                return self.bindings_ok(now, &user.name, reply(Reply::new(200)));
            }
            other => {
                let stale = other == Some(Verdict::Stale);
                if let Some(Verdict::Rejected(why)) = other {
                    self.auth.note_failure(now, path.remote.ip());
                    let blocked = self.auth.is_blocked(now, path.remote.ip());
                    self.log_refusal(now, path, &aor_user, why);
                    if blocked {
                        return reply(Reply::new(403).reason("Too Many Failures"));
                    }
                }
                let challenge = self
                    .auth
                    .challenges(now, stale, &user.digest_algorithms)
                    .iter()
                    .fold(Reply::new(401), |r, c| {
                        r.with_header(HeaderName::WwwAuthenticate, c.to_string())
                    });
                return reply(challenge);
            }
        }
        let result = self
            .location
            .register_over(now, &user.name, request, path, limits);
        let changes = match result {
            Ok(changes) => changes,
            Err(refusal) => {
                if refusal.status == 503 {
                    // The only 503 of the location service: a full registrar.
                    self.metrics.request_shed(RequestShed::MaxRegistrations);
                    self.log_refusal(now, path, &aor_user, "limits.max_registrations reached");
                }
                return reply(refusal);
            }
        };
        for change in changes {
            match &change {
                Change::Upsert(b) => {
                    tracing::info!(user = %b.aor, contact = %b.contact.uri, received = %b.contact.received, "registered");
                    if user.keepalive.enabled() {
                        self.schedule.add(
                            b.id,
                            now + Duration::from_secs(u64::from(user.keepalive.period)),
                        );
                    }
                }
                Change::Remove { aor, uri } => {
                    tracing::info!(user = %aor, contact = %uri, "unregistered")
                }
            }
            // A binding on a connection dies with it: a restart finds no
            // connection to reach it on, so it is not stored.
            if !matches!(&change, Change::Upsert(b) if b.contact.proto.is_reliable()) {
                self.outputs.push_back(Output::Persist(change));
            }
        }
        self.bindings_ok(now, &user.name, reply(Reply::new(200)))
    }

    /// A 200 to REGISTER lists every current binding of the AOR (§10.3 step 8).
    fn bindings_ok(&self, now: Instant, aor: &str, mut ok: Response) -> Response {
        for contact in location::contact_headers(self.location.of(aor), now) {
            ok.headers.push(HeaderName::Contact, contact);
        }
        ok
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.auth.forget_expired(now);
        self.tx.handle_timeout(now);
        while self.tx.poll_event().is_some() {}
        for gone in self.location.expire(now) {
            tracing::info!(user = %gone.aor, contact = %gone.contact.uri, "registration expired");
            self.forget(gone.id);
            self.outputs.push_back(Output::Persist(Change::Remove {
                aor: gone.aor,
                uri: gone.contact.uri.to_string(),
            }));
        }
        self.send_keepalives(now);
    }

    fn forget(&mut self, id: ContactId) {
        self.schedule.remove(id);
        if let Some(state) = self.ping_state.remove(&id)
            && let Some(branch) = state.outstanding
        {
            self.pings.remove(&branch);
        }
    }

    fn send_keepalives(&mut self, now: Instant) {
        let global = &self.config.nat_keepalive;
        let (batch_size, interval) = (
            global.batch_size as usize,
            Duration::from_millis(u64::from(global.send_interval_ms)),
        );
        let (location, config) = (&self.location, &self.config);
        let (batch, overran) = self.schedule.poll_batch(now, batch_size, interval, |id| {
            let binding = location.get(id)?;
            let user = config.user(&binding.aor)?;
            user.keepalive
                .enabled()
                .then(|| Duration::from_secs(u64::from(user.keepalive.period)))
        });
        if overran {
            tracing::warn!(
                contacts = self.schedule.len(),
                batch_size,
                send_interval_ms = global.send_interval_ms,
                "NAT keep-alive batches need longer than the period: raise batch_size or lower send_interval_ms"
            );
        }
        for due in batch {
            self.send_keepalive(now, due);
        }
    }

    fn send_keepalive(&mut self, now: Instant, due: Due) {
        let id = due.id;
        let Some(binding) = self.location.get(id).cloned() else {
            return;
        };
        let Some(user) = self.config.user(&binding.aor).cloned() else {
            return;
        };
        let keepalive = &user.keepalive;
        if let Some(previous) = due.previous {
            let interval = now.saturating_duration_since(previous);
            let period = Duration::from_secs(u64::from(keepalive.period));
            self.metrics
                .keepalive_deviation
                .record(interval.abs_diff(period));
        }
        let received = AddrText::new(binding.contact.received);
        let decision = self.policy.keepalive_tick(&ContactView {
            user: &binding.aor,
            contact: &binding.contact.uri,
            received: received.as_str(),
            sent: u64::from(due.sent),
        });
        let bytes = match decision {
            KeepaliveDecision::Skip => return,
            // On a connection, RFC 5626's CRLF ping (the pong comes back
            // on it; a dead connection closes and takes the contact along).
            _ if binding.contact.proto.is_reliable() => crate::transport::stream::PING.to_vec(),
            KeepaliveDecision::Payload(bytes) => bytes.into_owned(),
            KeepaliveDecision::Default => match keepalive.mode {
                KeepaliveMode::Payload => keepalive.message.as_bytes().to_vec(),
                KeepaliveMode::Crlf => b"\r\n\r\n".to_vec(),
                KeepaliveMode::Options => {
                    match self.next_ping(id, &binding, keepalive.options_failures) {
                        Some(bytes) => bytes,
                        None => return,
                    }
                }
            },
        };
        Metrics::count(&self.metrics.keepalives_sent);
        let path = binding.contact.flow();
        self.outputs
            .push_back(Output::Transmit(Transmit::new(path, bytes)));
    }

    /// The next OPTIONS ping to a contact; `None` once it left `options_failures`
    /// pings unanswered, and it is removed.
    fn next_ping(
        &mut self,
        id: ContactId,
        binding: &Binding,
        options_failures: u32,
    ) -> Option<Vec<u8>> {
        let state = self.ping_state.entry(id).or_default();
        if let Some(branch) = state.outstanding.take() {
            self.pings.remove(&branch);
            state.failures += 1;
            if state.failures >= options_failures {
                tracing::warn!(
                    user = %binding.aor, contact = %binding.contact.uri, received = %binding.contact.received,
                    failures = state.failures, "contact does not answer OPTIONS keep-alives: removed"
                );
                self.location.remove(id);
                self.forget(id);
                self.outputs.push_back(Output::Persist(Change::Remove {
                    aor: binding.aor.clone(),
                    uri: binding.contact.uri.to_string(),
                }));
                return None;
            }
        }
        let (request, branch) = self.ping(binding)?;
        self.pings.insert(branch.clone(), id);
        self.ping_state.entry(id).or_default().outstanding = Some(branch);
        Some(request.encode())
    }

    /// An OPTIONS keep-alive to a contact (answered by any SIP stack that lives).
    fn ping(&mut self, binding: &Binding) -> Option<(Request, String)> {
        let uri = binding.contact.parsed_uri()?;
        let local = binding.contact.local;
        let advertised = self
            .sockets
            .iter()
            .find(|s| s.bind == local && s.proto == crate::sip::Protocol::Udp)
            .map_or(local, |s| s.advertised);
        let branch = self.ids.branch();
        let domain = self
            .config
            .registrar
            .as_ref()
            .map_or("vigil", |r| r.domain.as_str());
        let mut from = NameAddr::new(Uri::Sip(SipUri::new(
            Some("keepalive".into()),
            Host::Domain(domain.to_string()),
            None,
        )));
        from.set_tag(&self.ids.tag());
        let request = Request::out_of_dialog(
            Method::Options,
            uri.clone(),
            from,
            Via::ours(advertised, branch.clone()),
            self.ids.call_id(),
        );
        Some((request, branch))
    }

    /// Any answer to an OPTIONS ping proves the contact (and its NAT binding) alive.
    fn on_ping_answer(&mut self, response: &Response) {
        let Some(branch) = response.top_via().branch() else {
            return;
        };
        if let Some(id) = self.pings.remove(branch)
            && let Some(state) = self.ping_state.get_mut(&id)
        {
            state.outstanding = None;
            state.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests;
