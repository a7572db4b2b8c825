//! One worker's switch core, sans-IO: it owns a transaction layer and the calls of
//! its shard, routes every decoded message to the transaction, dialog and call it
//! belongs to, answers what no call owns (OPTIONS, 481, 405, 501, …) and starts
//! new calls on admitted INVITEs.
//!
//! Contract (str0m/quinn-proto style): feed [`Engine::handle_message`] and
//! [`Engine::handle_timeout`]; after each, drain [`Engine::poll_transmit`] and
//! [`Engine::poll_cdr`]; sleep until [`Engine::poll_timeout`]. Time never goes
//! backwards. Nothing here reads a clock, touches a socket or spawns a task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::media::MediaRelay;
use crate::call::{Call, CallKey, CallSettings, CallSnapshot, Env, Leg, SavedCall, TxOwner};
use crate::cdr::CdrRecord;
use crate::config::Config;
use crate::gateway::probe::{ProbeEvent, Prober};
use crate::gateway::{Gateways, Resolved};
use crate::ids::IdGen;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::ratelimit::RateLimit;
use crate::registrar::digest::DigestAuth;
use crate::registrar::location::LocationView;
use crate::shrink;
use crate::sip::{ALLOWED_METHODS, HeaderName, Message, Method, Reply, Request, local_response};
use crate::timer::TimerQueue;
use crate::transaction::{
    Inbound, Path, ServerTxId, TimerValues, TransactionLayer, Transmit, TxBudget, TxEvent, TxShed,
};
use crate::transport::LocalSocket;
use crate::uplink::registration::{RegEvent, RegistrationSnapshot, Registrations, UplinkEnv};

/// Option tags Vigil implements (for `Supported` and checking `Require`).
pub const SUPPORTED: &[&str] = &["timer"];

pub struct Engine {
    config: Arc<Config>,
    settings: CallSettings,
    sockets: Arc<[LocalSocket]>,
    tx: TransactionLayer<TxOwner>,
    /// Boxed: a call is a few KiB, and a table of 100,000 inline calls would
    /// move them all on every resize.
    calls: HashMap<CallKey, Box<Call>>,
    /// A-leg dialogs by Call-ID and the caller's From tag.
    by_a: HashMap<(String, String), CallKey>,
    /// B-leg dialogs by Vigil's Call-ID.
    by_b: HashMap<String, CallKey>,
    call_timers: TimerQueue<CallKey>,
    ids: IdGen,
    cdrs: VecDeque<CdrRecord>,
    /// The decision points' policies, per trunk (built-in unless configured).
    policies: Policies,
    /// Counters shared with the other workers and the daemon.
    metrics: Arc<Metrics>,
    /// Registered users: where they are, and this worker's own checker of
    /// their credentials (when a registrar is configured).
    users: Option<Users>,
    /// rtpengine, when `media:` names one.
    media: Option<MediaRelay>,
    /// Every trunk's gateways and their health (shared by the workers).
    gateways: Arc<Gateways>,
    /// The OPTIONS probes of gateways, on the one worker that sends them.
    prober: Option<Prober>,
    /// The table is this engine's own (no daemon shares one): a new config
    /// rebuilds it here.
    own_gateways: bool,
    /// A wall-clock reading and the instant it was taken, from the latest
    /// ng datagram: rtpengine's statistics are in wall-clock time.
    wall_at: Option<(Instant, std::time::SystemTime)>,
    next_key: CallKey,
    /// Set by [`Engine::begin_shutdown`]: new calls are refused.
    draining: bool,
    /// Calls a shutdown has yet to end, and when the next batch goes.
    shutdown_queue: Vec<CallKey>,
    /// How many of them each tick ends.
    shutdown_batch: usize,
    shutdown_next: Option<Instant>,
    /// Requests shed by the transaction limits are logged at this rate.
    shed_log: RateLimit,
    /// The trunks' registrations with their registrars, on the one worker
    /// that keeps them ([`EngineDeps::uplink`]); their REGISTERs go through
    /// this engine's transaction layer.
    uplink: Option<Registrations>,
    /// Established calls are saved to the state store (`state:`).
    persist: bool,
    /// What the state store is told, in order (ends of saved calls).
    state_out: VecDeque<StateChange>,
    /// Calls whose state changed since it was last saved; saved when
    /// [`Engine::poll_state`] is asked.
    dirty: Vec<CallKey>,
}

/// What the engine tells the state store (`state:`); the daemon batches
/// it, off the workers.
#[derive(Debug)]
pub enum StateChange {
    /// An established call's state changed: keep this (a record with its
    /// [`SavedCall::saved_at_ms`] set from the wall clock the shell gave).
    Save(Box<SavedCall>),
    /// A saved call ended with this CDR: keep it until the CDR is durable,
    /// then forget the call.
    Ended(Box<CdrRecord>),
}

/// The owner's call key on a REGISTER's transaction: no call has it.
const UPLINK_KEY: CallKey = CallKey::MAX;

/// What one engine holds, for leak checks and `vigil ctl status`: after the
/// calls end and their transactions linger out, every count is back to zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineResources {
    /// Calls, ending ones included.
    pub calls: usize,
    /// Entries in the dialog indexes (two per call).
    pub dialogs: usize,
    pub transactions: usize,
    /// Timer-queue entries of calls and transactions (stale ones dropped).
    pub timers: usize,
    /// CDRs written but not yet handed to the writer.
    pub cdrs_pending: usize,
    /// Calls' requests to rtpengine waiting for their reply (or timeout).
    pub ng_waiting: usize,
    /// Ended calls' deletes waiting for their rtpengine to answer again.
    pub ng_deletes_to_retry: usize,
}

impl std::ops::Add for EngineResources {
    type Output = EngineResources;
    fn add(self, o: EngineResources) -> EngineResources {
        EngineResources {
            calls: self.calls + o.calls,
            dialogs: self.dialogs + o.dialogs,
            transactions: self.transactions + o.transactions,
            timers: self.timers + o.timers,
            cdrs_pending: self.cdrs_pending + o.cdrs_pending,
            ng_waiting: self.ng_waiting + o.ng_waiting,
            ng_deletes_to_retry: self.ng_deletes_to_retry + o.ng_deletes_to_retry,
        }
    }
}

/// A shutdown hangs up at least this many calls at a time, every
/// [`SHUTDOWN_TICK`]: with 20,000 calls up, 40,000 BYEs at once would overflow
/// the peers' (and the kernel's) socket buffers and leave them to
/// retransmissions the drain does not wait for; paced, a worker ends 10,000
/// calls a second in bursts a peer's default receive buffer holds. A worker
/// with more calls than that rate ends within [`SHUTDOWN_SPREAD`] ticks sends
/// bigger batches, so every call is hung up inside the drain.
const SHUTDOWN_BATCH: usize = 100;
const SHUTDOWN_TICK: Duration = Duration::from_millis(10);
const SHUTDOWN_SPREAD: usize = 300;

/// `Retry-After` of a 503 for the transaction limits: transactions end
/// within seconds, so the sender may try again soon.
const TX_SHED_RETRY_AFTER: u32 = 2;

/// What an engine works with besides its config and sockets, given when it
/// is built: its identifiers, what it shares with the other workers (counters,
/// transaction limits), its policies and the registered users.
pub struct EngineDeps {
    pub ids: IdGen,
    pub metrics: Arc<Metrics>,
    /// Live transactions against `limits.max_transactions*` (every worker's).
    pub budget: Arc<TxBudget>,
    pub policies: Policies,
    pub users: Option<Users>,
    /// rtpengine for relayed calls (`media:`), with this worker's ng client.
    pub media: Option<MediaRelay>,
    /// The gateways' shared health; `None`: the engine keeps its own.
    pub gateways: Option<Arc<Gateways>>,
    /// This worker sends the gateways' health probes.
    pub probes: bool,
    /// This worker keeps the trunks' registrations (one worker does).
    pub uplink: bool,
    /// Established calls are saved to a state store (`state:`).
    pub persist: bool,
}

impl EngineDeps {
    /// An engine on its own: counters of its own, no transaction limits, the
    /// built-in policy, no users (tests, benchmarks, the fuzzer).
    pub fn standalone(ids: IdGen) -> EngineDeps {
        EngineDeps {
            ids,
            metrics: Arc::default(),
            budget: Arc::default(),
            policies: Policies::builtin(),
            users: None,
            media: None,
            gateways: None,
            probes: true,
            uplink: false,
            persist: false,
        }
    }
}

/// Registered users as a worker sees them.
pub struct Users {
    /// Where each user can be reached (written by the registrar).
    pub location: Arc<LocationView>,
    /// This worker's own digest checker (`registrar::digest`: one per thread,
    /// so no worker waits on another).
    pub auth: DigestAuth,
}

impl Engine {
    pub fn new(config: Arc<Config>, sockets: Arc<[LocalSocket]>, deps: EngineDeps) -> Engine {
        let timers = TimerValues::default();
        let mut tx = TransactionLayer::new(timers, config.sip.force_rport);
        tx.set_budget(deps.budget);
        let now = Instant::now();
        let own_gateways = deps.gateways.is_none();
        let gateways = deps
            .gateways
            .unwrap_or_else(|| Arc::new(Gateways::build(&config, None, now, &Resolved::new())));
        let prober = deps.probes.then(|| {
            let mut prober = Prober::default();
            prober.follow(&gateways, now);
            prober
        });
        Engine {
            gateways,
            prober,
            own_gateways,
            settings: settings_from(&config, timers),
            tx,
            config,
            sockets,
            calls: HashMap::new(),
            by_a: HashMap::new(),
            by_b: HashMap::new(),
            call_timers: TimerQueue::default(),
            ids: deps.ids,
            cdrs: VecDeque::new(),
            policies: deps.policies,
            metrics: deps.metrics,
            users: deps.users,
            media: deps.media,
            wall_at: None,
            next_key: 0,
            draining: false,
            shutdown_queue: Vec::new(),
            shutdown_batch: SHUTDOWN_BATCH,
            shutdown_next: None,
            shed_log: RateLimit::new(5, Duration::from_secs(10)),
            uplink: deps.uplink.then(Registrations::default),
            persist: deps.persist,
            state_out: VecDeque::new(),
            dirty: Vec::new(),
        }
    }

    /// Starts (or, after a reload, updates) the trunks' registrations, on
    /// the worker that keeps them.
    pub fn start_registrations(&mut self, now: Instant) {
        let Some(mut uplink) = self.uplink.take() else {
            return;
        };
        let (trunks, user_agent) = (&self.config.trunks, &self.config.sip.user_agent);
        let sockets = self.sockets.clone();
        let socket_for = |target, proto| LocalSocket::for_target_over(&sockets, target, proto);
        let mut env = UplinkEnv {
            ids: &mut self.ids,
            socket_for: &socket_for,
        };
        uplink.set_config(now, trunks, user_agent, &mut env);
        self.uplink = Some(uplink);
        self.drain_uplink(now);
    }

    /// The trunks' registrations (empty on the workers that keep none).
    pub fn registrations(&self, now: Instant) -> Vec<RegistrationSnapshot> {
        self.uplink
            .as_ref()
            .map_or_else(Vec::new, |u| u.snapshot(now))
    }

    /// Runs `f` on the registrations with their environment, then sends
    /// what they want sent.
    fn with_uplink(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Registrations, &mut UplinkEnv<'_>),
    ) {
        let Some(uplink) = self.uplink.as_mut() else {
            return;
        };
        let sockets = self.sockets.clone();
        let socket_for = |target, proto| LocalSocket::for_target_over(&sockets, target, proto);
        let mut env = UplinkEnv {
            ids: &mut self.ids,
            socket_for: &socket_for,
        };
        f(uplink, &mut env);
        self.drain_uplink(now);
    }

    /// Sends the REGISTERs the registrations ask for; logs and counts what
    /// happened to them.
    fn drain_uplink(&mut self, now: Instant) {
        let Some(uplink) = self.uplink.as_mut() else {
            return;
        };
        while let Some(out) = uplink.poll_request() {
            let owner = TxOwner {
                call: UPLINK_KEY,
                purpose: crate::call::Purpose::Register(out.id),
            };
            self.tx.send_request(now, out.request, out.path, owner);
        }
        while let Some(event) = uplink.poll_event() {
            match event {
                RegEvent::Registered { id, granted } => {
                    tracing::info!(trunk = ?uplink.trunk(id), granted = ?granted, "registered with the trunk's registrar");
                }
                RegEvent::Failed { .. } => {
                    Metrics::count(&self.metrics.trunk_registration_failures)
                }
            }
        }
    }

    /// What this engine holds now (drops stale timer entries to count).
    pub fn resources(&mut self) -> EngineResources {
        let calls = &self.calls;
        self.call_timers
            .purge(|at, key| calls.get(&key).is_some_and(|c| c.scheduled.is(at)));
        EngineResources {
            calls: self.calls.len(),
            dialogs: self.by_a.len() + self.by_b.len(),
            transactions: self.tx.len(),
            timers: self.tx.timer_entries() + self.call_timers.len(),
            cdrs_pending: self.cdrs.len(),
            ng_waiting: self.media.as_ref().map_or(0, MediaRelay::waiting),
            ng_deletes_to_retry: self.media.as_ref().map_or(0, MediaRelay::deletes_to_retry),
        }
    }

    /// Replaces the decision-point policies (hooks of later calls and events).
    pub fn set_policies(&mut self, policies: Policies) {
        self.policies = policies;
    }

    /// The sockets calls that start from now on may use (after a reload).
    pub fn set_sockets(&mut self, sockets: Arc<[LocalSocket]>) {
        self.sockets = sockets;
    }

    /// Applies a new config snapshot to calls that start from now on. A
    /// changed `media:` reaches rtpengine's client too (new engines are
    /// pinged; removed ones keep the calls they hold); `relay` is `media:`'s
    /// client for a worker that had none.
    pub fn set_config(&mut self, now: Instant, config: Arc<Config>, relay: Option<MediaRelay>) {
        self.settings = settings_from(&config, self.tx.timer_values());
        self.tx.set_force_rport(config.sip.force_rport);
        match (&mut self.media, &config.media) {
            (Some(current), Some(media)) => {
                current.client.set_engines(now, &media.rtpengines);
                current.config = media.clone();
            }
            (None, Some(_)) => self.media = relay,
            // Without `media:` no new call is relayed; the client stays for
            // the calls it holds.
            (_, None) => {}
        }
        if self.own_gateways {
            let gateways = Gateways::build(&config, Some(&self.gateways), now, &Resolved::new());
            self.set_gateways(now, Arc::new(gateways));
        }
        self.config = config;
    }

    /// The gateways' table every worker shares (the daemon rebuilds it on
    /// reload, after [`set_config`](Self::set_config)); calls in flight keep
    /// the gateways they hold.
    pub fn set_gateways(&mut self, now: Instant, gateways: Arc<Gateways>) {
        if gateways.generation < self.gateways.generation {
            return;
        }
        if let Some(prober) = self.prober.as_mut() {
            prober.follow(&gateways, now);
        }
        self.gateways = gateways;
    }

    /// Every gateway's health, as `vigil ctl gateways` shows it.
    pub fn gateways(&self) -> &Arc<Gateways> {
        &self.gateways
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// Requests Vigil sent that have no final answer yet (shutdown waits for the
    /// BYEs it sent).
    pub fn requests_in_flight(&self) -> usize {
        self.tx.clients_awaiting_final()
    }

    /// What [`requests_in_flight`](Self::requests_in_flight) counts, for a log
    /// line: `BYE to 192.0.2.7:5060, …`, at most `limit` of them, sorted.
    pub fn requests_in_flight_summary(&self, limit: usize) -> String {
        let mut pending: Vec<String> = self
            .tx
            .awaiting_final()
            .map(|(method, to)| format!("{method} to {to}"))
            .collect();
        pending.sort_unstable();
        let more = pending.len().saturating_sub(limit);
        pending.truncate(limit);
        let mut text = pending.join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    pub fn poll_cdr(&mut self) -> Option<CdrRecord> {
        let record = self.cdrs.pop_front()?;
        self.metrics.call_ended(&record);
        Some(record)
    }

    /// What the state store is to be told. Saves are taken now, at `now`,
    /// when the wall clock reads `wall_ms` (milliseconds since the Unix
    /// epoch): every deadline in them is absolute. Drain it before
    /// [`poll_cdr`](Self::poll_cdr) and hand both on in that order, so the
    /// store hears of a call's end before its CDR can be written.
    pub fn poll_state(&mut self, now: Instant, wall_ms: u64) -> Option<StateChange> {
        if let Some(change) = self.state_out.pop_front() {
            return Some(change);
        }
        while let Some(key) = self.dirty.pop() {
            if let Some(call) = self.calls.get(&key)
                && call.ending().is_none()
            {
                let mut saved = call.save(now, self.media.as_ref().map(|m| &m.client));
                saved.saved_at_ms = wall_ms;
                return Some(StateChange::Save(Box::new(saved)));
            }
        }
        None
    }

    /// Resumes a call from the state store on this worker (at start, or
    /// taking over). Whatever fell due while no process had it fires at the
    /// next [`handle_timeout`](Self::handle_timeout). False if the call is
    /// here already.
    pub fn restore_call(&mut self, now: Instant, wall_ms: u64, saved: &SavedCall) -> bool {
        let a_key = (
            saved.a.dialog.call_id.clone(),
            saved.a.dialog.remote_tag.clone(),
        );
        if self.by_a.contains_key(&a_key) || self.by_b.contains_key(&saved.b.dialog.call_id) {
            return false;
        }
        let Ok(id) = saved.id.parse::<crate::cdr::CdrId>() else {
            tracing::error!(id = %saved.id, call_id = %saved.a.dialog.call_id, "a saved call's id is not a CDR id: not resumed");
            return false;
        };
        let key = self.next_key;
        self.next_key += 1;
        let auth = self
            .config
            .trunks
            .iter()
            .find(|t| *t.name == *saved.trunk_out)
            .and_then(|t| t.auth.clone());
        let relay = self.restored_relay(saved);
        let mut call = Call::restore(crate::call::Restore {
            key,
            id,
            now,
            timeline: crate::timer::Timeline::restoring(now, wall_ms, saved.saved_at_ms),
            auth,
            relay,
            saved,
        });
        call.mark_saved(call.save_fingerprint().unwrap_or(1));
        self.by_a.insert(a_key, key);
        self.by_b.insert(saved.b.dialog.call_id.clone(), key);
        self.calls.insert(key, Box::new(call));
        self.metrics.call_placed();
        self.with_call(key, |_, _| {});
        true
    }

    /// How a saved relayed call's media goes on here: through the same
    /// rtpengine (which kept the call while no process had it). Said loudly
    /// when it cannot.
    fn restored_relay(&self, saved: &SavedCall) -> Option<Option<crate::media::EngineId>> {
        let media = saved.media.as_ref()?;
        let Some(relay) = self.media.as_ref() else {
            tracing::warn!(call_id = %saved.a.dialog.call_id, "a relayed call resumed where no media is relayed (no `media:`): its SDPs cross as they come and its media is not looked at");
            return None;
        };
        let engine = media.engine.and_then(|addr| relay.client.engine_id(addr));
        if let (Some(addr), None) = (media.engine, engine) {
            tracing::warn!(call_id = %saved.a.dialog.call_id, rtpengine = %addr, "a relayed call's rtpengine is not in `media.rtpengines`: its next media request goes to another rtpengine, which does not know the call");
        }
        Some(engine)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.tx.poll_timeout(),
            self.call_timers.next_deadline(),
            self.shutdown_next,
            self.media.as_ref().and_then(|m| m.client.poll_timeout()),
            self.prober.as_ref().and_then(Prober::poll_timeout),
            self.uplink.as_ref().and_then(Registrations::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Every call in progress, as an operator sees it.
    pub fn calls(&self, now: Instant) -> Vec<CallSnapshot> {
        self.calls
            .values()
            .filter(|c| c.ending().is_none())
            .map(|c| c.snapshot(now))
            .collect()
    }

    /// Hangs up the call whose A- or B-leg Call-ID is `call_id` (BYE both legs,
    /// CDR `admin`); what it was, or `None` if no such call is here.
    pub fn hang_up(&mut self, now: Instant, call_id: &str) -> Option<CallSnapshot> {
        let key = self.by_b.get(call_id).copied().or_else(|| {
            self.by_a
                .iter()
                .find(|((a_call_id, _), _)| a_call_id == call_id)
                .map(|(_, key)| *key)
        })?;
        let snapshot = self.calls.get(&key)?.snapshot(now);
        self.with_call(key, |call, env| call.hang_up_by_operator(now, env));
        Some(snapshot)
    }

    /// Handles a decoded message that arrived on `path`. `admitted` is false for an
    /// in-dialog request from an address no trunk admits: it is served only if it
    /// matches a dialog.
    pub fn handle_message(&mut self, now: Instant, message: Message, path: Path, admitted: bool) {
        match message {
            Message::Request(request) => match self.tx.receive_request(now, request, path) {
                Inbound::Absorbed => {}
                Inbound::Ack(ack) => self.on_ack(now, ack),
                Inbound::New(tx, request) => self.on_request(now, tx, request, path, admitted),
                Inbound::Refused(request, why, reply) => self.shed(now, &request, why, reply),
            },
            Message::Response(response) => {
                if self.is_probe_answer(now, &response) {
                    return;
                }
                if let Some((_, owner, response)) = self.tx.receive_response(now, response) {
                    if let crate::call::Purpose::Register(id) = owner.purpose {
                        self.with_uplink(now, |u, env| u.handle_response(now, id, &response, env));
                        return self.drain_tx_events(now);
                    }
                    self.with_call(owner.call, |call, env| {
                        call.on_response(now, owner.purpose, response, env)
                    });
                }
            }
        }
        self.drain_tx_events(now);
    }

    /// The connection `flow` closed: requests sent on it that await their
    /// answer fail at once (a B-leg INVITE fails over, a refresh or BYE
    /// fails as if timed out).
    pub fn flow_closed(&mut self, now: Instant, flow: Path) {
        self.tx.flow_closed(flow);
        self.drain_tx_events(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shutdown_next.is_some_and(|at| at <= now) {
            self.end_shutdown_batch(now);
        }
        self.tx.handle_timeout(now);
        self.drain_tx_events(now);
        if let Some(media) = self.media.as_mut() {
            media.client.handle_timeout(now);
        }
        self.drain_ng_events(now);
        self.probe_gateways(now);
        if self
            .uplink
            .as_ref()
            .and_then(Registrations::poll_timeout)
            .is_some_and(|at| at <= now)
        {
            self.with_uplink(now, |u, env| u.handle_timeout(now, env));
        }
        let calls = &self.calls;
        self.call_timers.purge_stale(calls.len(), |at, key| {
            calls.get(&key).is_some_and(|c| c.scheduled.is(at))
        });
        shrink::after_burst(&mut self.calls);
        shrink::after_burst(&mut self.by_a);
        shrink::after_burst(&mut self.by_b);
        while let Some((at, key)) = self.call_timers.pop_due(now) {
            let live = self
                .calls
                .get_mut(&key)
                .is_some_and(|c| c.scheduled.take_if(at));
            if live {
                self.with_call(key, |call, env| call.handle_timeout(now, env));
            }
        }
    }

    /// Sends the gateway probes that are due and counts the unanswered ones.
    fn probe_gateways(&mut self, now: Instant) {
        let Some(prober) = self.prober.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        let sockets = &self.sockets;
        let probes = prober.handle_timeout(
            now,
            &self.gateways,
            &mut self.ids,
            |to| LocalSocket::for_target(sockets, to).map(|s| s.advertised),
            &mut events,
        );
        for probe in probes {
            if let Some(socket) = LocalSocket::for_target(&self.sockets, probe.to) {
                let path = Path::udp(socket.bind, probe.to);
                self.tx.send_stateless(probe.request.encode(), path);
            }
        }
        log_probe_events(&events);
    }

    /// Takes an answer to a gateway probe; false if `response` is not one.
    fn is_probe_answer(&mut self, now: Instant, response: &crate::sip::Response) -> bool {
        let Some(prober) = self.prober.as_mut() else {
            return false;
        };
        let mut events = Vec::new();
        let taken = prober.on_response(now, response, &self.gateways, &mut events);
        log_probe_events(&events);
        taken
    }

    fn drain_tx_events(&mut self, now: Instant) {
        while let Some(event) = self.tx.poll_event() {
            if let TxEvent::PrackTimeout {
                owner: Some(owner), ..
            } = event
            {
                self.with_call(owner.call, |call, env| call.on_prack_timeout(now, env));
                continue;
            }
            if let TxEvent::Timeout { owner, .. } = event {
                if let crate::call::Purpose::Register(id) = owner.purpose {
                    self.with_uplink(now, |u, _| u.handle_tx_timeout(now, id));
                    continue;
                }
                self.with_call(owner.call, |call, env| {
                    call.on_timeout(now, owner.purpose, env)
                });
            }
        }
    }

    /// Runs `f` on a call with its environment, then reschedules or forgets it.
    fn with_call(&mut self, key: CallKey, f: impl FnOnce(&mut Call, &mut Env<'_>)) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let mut env = Env {
            tx: &mut self.tx,
            ids: &mut self.ids,
            cdrs: &mut self.cdrs,
            settings: &self.settings,
            policies: &self.policies,
            metrics: &self.metrics,
            media: self.media.as_mut(),
            sockets: &self.sockets,
        };
        let cdrs_before = env.cdrs.len();
        f(call, &mut env);
        if self.persist {
            if call.saved_fingerprint() != 0 {
                for record in self.cdrs.range(cdrs_before..) {
                    self.state_out
                        .push_back(StateChange::Ended(Box::new(record.clone())));
                }
            }
            if let Some(fingerprint) = call.save_fingerprint()
                && fingerprint != call.saved_fingerprint()
            {
                call.mark_saved(fingerprint);
                self.dirty.push(key);
            }
        }
        if call.is_finished() {
            let a_key = (call.a_call_id().to_string(), call.a_from_tag().to_string());
            let b_key = call.b_call_id().to_string();
            self.by_a.remove(&a_key);
            self.by_b.remove(&b_key);
            self.calls.remove(&key);
            self.metrics.call_released();
        } else if let Some(at) = call.scheduled.update(call.next_deadline()) {
            self.call_timers.schedule(at, key);
        }
    }

    /// The call and leg an in-dialog request belongs to: by its dialog's full
    /// identifier, Call-ID **and** local tag **and** remote tag (RFC 3261
    /// §12.2.2). The indexes find the candidate by Call-ID (and the caller's
    /// From tag); the call then checks the tags, so a request that only copied
    /// what the initial INVITE showed (it has no To tag) matches nothing.
    fn find_call(&self, request: &Request) -> Option<(CallKey, Leg)> {
        let (key, leg) = match self.by_b.get(&request.call_id) {
            Some(&key) => (key, Leg::B),
            None => {
                let tag = request.from.tag().unwrap_or_default();
                let key = *self.by_a.get(&(request.call_id.clone(), tag.to_string()))?;
                (key, Leg::A)
            }
        };
        self.calls
            .get(&key)
            .filter(|call| call.owns_dialog(leg, request))
            .map(|_| (key, leg))
    }

    fn on_ack(&mut self, now: Instant, ack: Request) {
        if let Some((key, leg)) = self.find_call(&ack) {
            self.with_call(key, |call, env| call.on_ack(now, leg, ack, env));
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: Request,
        path: Path,
        admitted: bool,
    ) {
        if request.method == Method::Cancel {
            return self.on_cancel(now, tx, request, path);
        }
        if request.is_in_dialog() {
            return match self.find_call(&request) {
                Some((key, leg)) => {
                    self.with_call(key, |call, env| call.on_request(now, leg, tx, request, env))
                }
                None if !admitted => self.reply(now, tx, &request, Reply::new(403)),
                None => self.reply(now, tx, &request, Reply::new(481)),
            };
        }
        match &request.method {
            Method::Invite => self.on_invite(now, tx, request, path),
            Method::Options => {
                if let Some(refusal) = self.uas_checks(&request) {
                    return self.reply(now, tx, &request, refusal);
                }
                let mut ok = Reply::new(200)
                    .with_header(HeaderName::Allow, ALLOWED_METHODS)
                    .with_header(HeaderName::Accept, "application/sdp");
                let mut supported = SUPPORTED.to_vec();
                if self.config.sip.prack.enabled() {
                    supported.push(crate::sip::TAG_100REL);
                }
                if !supported.is_empty() {
                    ok = ok.with_header(HeaderName::Supported, supported.join(", "));
                }
                self.reply(now, tx, &request, ok);
            }
            // These only make sense inside a dialog (RFC 3261 §15, RFC 3311, 3262, 6086).
            Method::Bye | Method::Update | Method::Prack | Method::Info => {
                self.reply(now, tx, &request, Reply::new(481))
            }
            Method::Extension(_) => self.reply(now, tx, &request, Reply::new(501)),
            _ => self.reply(
                now,
                tx,
                &request,
                Reply::new(405).with_header(HeaderName::Allow, ALLOWED_METHODS),
            ),
        }
    }

    fn on_cancel(&mut self, now: Instant, tx: ServerTxId, cancel: Request, path: Path) {
        let target = self
            .tx
            .invite_for_cancel(&cancel, path.remote)
            .and_then(|invite_tx| self.tx.server_owner(invite_tx));
        // §9.2: the CANCEL matches the INVITE's transaction (branch, sent-by
        // and source, above) and names the same call: Call-ID and From tag.
        let call = target.and_then(|owner| {
            self.calls
                .get(&owner.call)
                .filter(|c| {
                    c.a_call_id() == cancel.call_id
                        && c.a_from_tag() == cancel.from.tag().unwrap_or_default()
                })
                .map(|c| (owner.call, c))
        });
        match call {
            Some((key, call)) => {
                let tag = call.a_local_tag().to_string();
                let mut ok =
                    local_response(&cancel, 200, None, Some(&tag), &self.settings.user_agent);
                ok.headers.remove(&HeaderName::Server);
                self.tx.respond(now, tx, ok);
                self.with_call(key, |call, env| call.on_cancel(now, env));
            }
            None => self.reply(now, tx, &cancel, Reply::new(481)),
        }
    }

    /// Answers `503` with `Retry-After`, statelessly, a request the
    /// transaction limits refused, and counts it.
    fn shed(&mut self, now: Instant, request: &Request, why: TxShed, reply: Path) {
        if request.is_initial_invite() {
            self.metrics.call_shed(why.into());
        } else {
            self.metrics.request_shed(why.into());
        }
        if let Some(suppressed) = self.shed_log.allow(now) {
            tracing::warn!(source = %reply.remote, method = %request.method, reason = ?why, suppressed, "new request over the transaction limits: 503");
        }
        let tag = self.ids.tag();
        let r = Reply::new(503).retry_after(TX_SHED_RETRY_AFTER).to(
            request,
            Some(&tag),
            &self.settings.user_agent,
        );
        self.tx.send_stateless(r.encode(), reply);
    }

    /// Answers a request Vigil handles itself, with a fresh To tag.
    fn reply(&mut self, now: Instant, tx: ServerTxId, request: &Request, reply: Reply) {
        let tag = self.ids.tag();
        let r = reply.to(request, Some(&tag), &self.settings.user_agent);
        self.tx.respond(now, tx, r);
    }
}

/// A gateway going down or up is an operator's business: said once, when
/// it happens.
fn log_probe_events(events: &[ProbeEvent]) {
    for e in events {
        let g = &e.gateway;
        match e.change {
            crate::gateway::HealthChange::WentDown => {
                tracing::warn!(trunk = %g.trunk, gateway = %g.to, status = ?e.status, "gateway down: probes unanswered or refused")
            }
            crate::gateway::HealthChange::CameUp => {
                tracing::info!(trunk = %g.trunk, gateway = %g.to, status = ?e.status, "gateway up: probes answered")
            }
        }
    }
}

fn settings_from(config: &Config, timers: TimerValues) -> CallSettings {
    CallSettings {
        user_agent: config.sip.user_agent.clone(),
        max_ring_time: Duration::from_secs(u64::from(config.sip.max_ring_time)),
        timers,
        failover_after_early_media: config.sip.failover_after_early_media,
    }
}

#[cfg(test)]
mod tests;

mod checks;
mod invite;
mod media;
mod shutdown;
