//! RFC 3261 §17 transactions over UDP, sans-IO, with RFC 6026's Accepted states.
//!
//! The layer owns every client and server transaction of one worker: it matches
//! requests and responses to them (§17.1.3, §17.2.3, including RFC 2543 requests
//! without a magic-cookie branch), absorbs retransmissions, retransmits on timers
//! A, E and G, times out on B, F and H, generates `100 Trying` for INVITE and the
//! hop-by-hop ACK for non-2xx finals. Its user (the engine) sees only what a
//! transaction user should: new requests, responses, 2xx ACKs and timeouts.
//!
//! Contract: after any `handle_*`/`send_*` call, drain [`TransactionLayer::poll_transmit`]
//! and [`TransactionLayer::poll_event`]; call [`TransactionLayer::handle_timeout`] at
//! [`TransactionLayer::poll_timeout`]. `now` never goes backwards.

pub mod budget;
mod client;
mod linger;
mod matching;
mod server;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shrink;
use crate::sip::{HeaderName, Method, Protocol, Request, Response};
use crate::timer::TimerQueue;
pub use budget::{TxBudget, TxShed};

pub use client::ClientState;
use client::ClientTx;
use linger::{is_awaited, reschedule_in};
pub use matching::response_target;
use matching::{client_key_for, method_of_client_key, server_key, server_key_for};
pub use server::ServerState;
use server::{ServerTimeout, ServerTx};

/// RFC 3261's timer base values (§17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerValues {
    /// 64*T1: timers B, F, H, J, L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s on unreliable transports.
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t1 * 64)
    }
}

/// A message to send: from which local socket (or on which connection) to
/// which peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub proto: Protocol,
    pub bytes: Vec<u8>,
}

impl Transmit {
    pub fn new(path: Path, bytes: Vec<u8>) -> Transmit {
        Transmit {
            local: path.local,
            remote: path.remote,
            proto: path.proto,
            bytes,
        }
    }

    pub fn path(&self) -> Path {
        Path {
            local: self.local,
            remote: self.remote,
            proto: self.proto,
        }
    }
}

/// Identifies a client transaction of this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// Identifies a server transaction of this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

impl ServerTxId {
    /// No transaction: what a call restored from the state store holds for
    /// the INVITE it was answered on (long gone with the old process).
    pub const GONE: ServerTxId = ServerTxId(u64::MAX);
}

/// What the layer tells its user, besides the direct results of `receive_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent<O> {
    /// Timer B or F fired: the request was never answered (treat as 408).
    Timeout { tx: ClientTxId, owner: O },
    /// Timer H fired: the ACK for a non-2xx final never came.
    AckTimeout { tx: ServerTxId, owner: Option<O> },
    /// A reliable provisional sent with [`TransactionLayer::respond_reliably`]
    /// got no PRACK within 64*T1 (RFC 3262 §3: reject the request with 5xx).
    PrackTimeout { tx: ServerTxId, owner: Option<O> },
}

/// An incoming request, as the layer classifies it.
#[derive(Debug)]
pub enum Inbound {
    /// A new request: the user must answer it through [`TransactionLayer::respond`].
    New(ServerTxId, Request),
    /// An ACK that belongs to no transaction: the ACK for a 2xx (RFC 3261 §17.2.3,
    /// RFC 6026), which the dialog layer handles end to end.
    Ack(Request),
    /// A retransmission or the ACK of a non-2xx final: handled here.
    Absorbed,
    /// A request that would open a transaction past the [`TxBudget`]: no
    /// transaction exists for it; the user answers it statelessly (503) on
    /// the path given.
    Refused(Request, TxShed, Path),
}

/// Where a message arrived or goes: the transport, the local address (a
/// UDP socket, or the listener or local end of a connection) and the peer's
/// address. Over TCP and TLS the three name one connection (a flow, RFC 5626).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub proto: Protocol,
}

impl Path {
    /// A UDP path: Vigil's socket `local` and the peer `remote`.
    pub fn udp(local: SocketAddr, remote: SocketAddr) -> Path {
        Path {
            local,
            remote,
            proto: Protocol::Udp,
        }
    }

    /// The same flow towards another address of the peer (a response to
    /// `rport`/`received`, a dialog's remote target).
    pub fn to(self, remote: SocketAddr) -> Path {
        Path { remote, ..self }
    }
}

/// The live transactions of one worker. `O` is the owner tag the user attaches
/// (the engine uses it to find the call a transaction belongs to).
pub struct TransactionLayer<O: Copy> {
    values: TimerValues,
    /// Answer to the source address even without `rport` (config `sip.force_rport`).
    force_rport: bool,
    next_id: u64,
    /// Boxed: a burst of transactions grows these tables, which keep their
    /// capacity; a boxed slot costs 16 bytes, an inline one a few hundred.
    clients: HashMap<ClientTxId, Box<ClientTx<O>>>,
    client_keys: HashMap<String, ClientTxId>,
    /// The client transactions sent on each TCP or TLS connection, so a
    /// connection that closes fails its own at once without a scan of every
    /// transaction (phones open and close a connection per call).
    clients_on_flows: HashMap<Path, Vec<ClientTxId>>,
    servers: HashMap<ServerTxId, Box<ServerTx<O>>>,
    server_keys: HashMap<String, ServerTxId>,
    queue: TimerQueue<TxRef>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent<O>>,
    /// Live transactions counted against the limits (shared by every worker).
    budget: Arc<TxBudget>,
}

/// A timer-queue entry's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TxRef {
    Client(ClientTxId),
    Server(ServerTxId),
}

impl<O: Copy> TransactionLayer<O> {
    pub fn new(values: TimerValues, force_rport: bool) -> Self {
        TransactionLayer {
            values,
            force_rport,
            next_id: 0,
            clients: HashMap::new(),
            client_keys: HashMap::new(),
            clients_on_flows: HashMap::new(),
            servers: HashMap::new(),
            server_keys: HashMap::new(),
            queue: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            budget: Arc::new(TxBudget::default()),
        }
    }

    /// Counts this layer's transactions in `budget` (the daemon's, shared by
    /// every worker) from now on; those alive move over to it.
    pub fn set_budget(&mut self, budget: Arc<TxBudget>) {
        for tx in self.servers.values() {
            self.budget.release_server(tx.source);
            let _ = budget.acquire_server(tx.source, true);
        }
        for _ in self.clients.values() {
            self.budget.release_client();
            budget.acquire_client();
        }
        self.budget = budget;
    }

    pub fn set_force_rport(&mut self, force_rport: bool) {
        self.force_rport = force_rport;
    }

    pub fn timer_values(&self) -> TimerValues {
        self.values
    }

    /// Live transactions (for bounds and leak checks).
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Client transactions still waiting for a final response.
    pub fn clients_awaiting_final(&self) -> usize {
        self.awaiting_final().count()
    }

    /// The requests Vigil sent that still wait for a final response: their
    /// method and where they went.
    pub fn awaiting_final(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.clients
            .values()
            .filter(|t| {
                matches!(
                    t.state,
                    ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                )
            })
            .map(|t| (method_of_client_key(&t.key), t.path.remote))
    }

    fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ----- server side ------------------------------------------------------

    /// Classifies a request that arrived on `path`. The top Via is stamped with
    /// `received`/`rport` (RFC 3261 §18.2.1, RFC 3581) before anyone sees it.
    pub fn receive_request(&mut self, now: Instant, mut request: Request, path: Path) -> Inbound {
        request.via[0].stamp_received(path.remote);
        let key = server_key(&request, path.remote);
        if let Some(&id) = self.server_keys.get(&key) {
            if let Some(tx) = self.servers.get_mut(&id) {
                let values = self.values;
                tx.on_retransmission(now, &request, &values, &mut self.transmits);
                self.reschedule(TxRef::Server(id));
            }
            return Inbound::Absorbed;
        }
        if request.method == Method::Ack {
            return Inbound::Ack(request);
        }
        let reply_to = response_target(&request.via[0], path.remote, self.force_rport);
        // In-dialog requests and CANCELs serve what already exists: never shed.
        let essential = request.is_in_dialog() || request.method == Method::Cancel;
        if let Err(why) = self.budget.acquire_server(path.remote.ip(), essential) {
            let reply = path.to(reply_to);
            return Inbound::Refused(request, why, reply);
        }
        let id = ServerTxId(self.allocate_id());
        let mut tx = ServerTx::new(&request, key.clone(), path, reply_to);
        if request.method == Method::Invite {
            // §17.2.1: a 100 stops the caller's retransmissions at once.
            let trying = request.response(100);
            tx.send_response(now, trying, &self.values, &mut self.transmits);
        }
        self.servers.insert(id, Box::new(tx));
        self.server_keys.insert(key, id);
        self.reschedule(TxRef::Server(id));
        Inbound::New(id, request)
    }

    /// Sends the user's response on a server transaction. Responses after the final
    /// one are ignored (the transaction already answered).
    pub fn respond(&mut self, now: Instant, tx: ServerTxId, response: Response) {
        if let Some(t) = self.servers.get_mut(&tx) {
            t.send_response(now, response, &self.values, &mut self.transmits);
            self.reschedule(TxRef::Server(tx));
        }
    }

    /// Sends a reliable provisional on an INVITE server transaction (RFC 3262
    /// §3; the user has put `Require: 100rel` and `RSeq` on it) and
    /// retransmits it, T1 doubling, until
    /// [`provisional_acknowledged`](Self::provisional_acknowledged) or a final
    /// response; after 64*T1 the layer reports [`TxEvent::PrackTimeout`].
    pub fn respond_reliably(&mut self, now: Instant, tx: ServerTxId, response: Response) {
        if let Some(t) = self.servers.get_mut(&tx) {
            t.send_reliable(now, response, &self.values, &mut self.transmits);
            self.reschedule(TxRef::Server(tx));
        }
    }

    /// The PRACK for the reliable provisional outstanding on `tx` arrived:
    /// its retransmissions stop.
    pub fn provisional_acknowledged(&mut self, tx: ServerTxId) {
        if let Some(t) = self.servers.get_mut(&tx) {
            t.stop_reliable();
            self.reschedule(TxRef::Server(tx));
        }
    }

    /// Takes a request to be answered with no server transaction at all
    /// (RFC 3261 §8.2.7, a stateless UAS), as Kamailio's registrar does: a
    /// registration storm then leaves no 32 s of state behind each REGISTER. A
    /// retransmitted request is handled afresh, so the caller must recognise one.
    /// Stamps the top Via as [`receive_request`](Self::receive_request) does and
    /// returns the path its responses take.
    pub fn receive_stateless(&self, request: &mut Request, path: Path) -> Path {
        request.via[0].stamp_received(path.remote);
        path.to(response_target(
            &request.via[0],
            path.remote,
            self.force_rport,
        ))
    }

    /// Tags a server transaction with its owner (reported with its events).
    pub fn set_server_owner(&mut self, tx: ServerTxId, owner: O) {
        if let Some(t) = self.servers.get_mut(&tx) {
            t.owner = Some(owner);
        }
    }

    pub fn server_owner(&self, tx: ServerTxId) -> Option<O> {
        self.servers.get(&tx).and_then(|t| t.owner)
    }

    pub fn server_state(&self, tx: ServerTxId) -> Option<ServerState> {
        self.servers.get(&tx).map(|t| t.state)
    }

    /// The INVITE server transaction a CANCEL from `source` targets (RFC 3261
    /// §9.2): same branch and sent-by, method INVITE.
    pub fn invite_for_cancel(&self, cancel: &Request, source: SocketAddr) -> Option<ServerTxId> {
        let key = server_key_for(cancel, &Method::Invite, source);
        self.server_keys.get(&key).copied()
    }

    /// Where responses on a server transaction go.
    pub fn reply_path(&self, tx: ServerTxId) -> Option<Path> {
        self.servers.get(&tx).map(|t| Path {
            local: t.local,
            remote: t.reply_to,
            proto: t.proto,
        })
    }

    // ----- client side ------------------------------------------------------

    /// Starts a client transaction: sends `request` to `path.remote` from
    /// `path.local` and retransmits it until answered. The top Via's branch must be
    /// unique (the user generates it).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        path: Path,
        owner: O,
    ) -> ClientTxId {
        let id = ClientTxId(self.allocate_id());
        self.budget.acquire_client();
        let key = client_key_for(request.top_via(), &request.cseq.method);
        let tx = ClientTx::start(
            now,
            request,
            key.clone(),
            path,
            owner,
            &self.values,
            &mut self.transmits,
        );
        self.clients.insert(id, Box::new(tx));
        self.client_keys.insert(key, id);
        if path.proto.is_reliable() {
            self.clients_on_flows.entry(path).or_default().push(id);
        }
        self.reschedule(TxRef::Client(id));
        id
    }

    /// Matches a response to its client transaction (§17.1.3). Returns the
    /// transaction, its owner and the response when the user must see it;
    /// retransmissions and strays are absorbed here.
    pub fn receive_response(
        &mut self,
        now: Instant,
        response: Response,
    ) -> Option<(ClientTxId, O, Response)> {
        let key = client_key_for(response.top_via(), &response.cseq.method);
        let id = *self.client_keys.get(&key)?;
        let tx = self.clients.get_mut(&id)?;
        let owner = tx.owner;
        let values = self.values;
        let pass = tx.on_response(now, &response, &values, &mut self.transmits);
        self.reschedule(TxRef::Client(id));
        pass.then_some((id, owner, response))
    }

    /// Gives up on a client transaction without an answer (RFC 3261 §9.1: an
    /// INVITE whose CANCEL got no final response within 64*T1).
    /// The connection `flow` closed (RFC 3261 §17.1.4: a transport error):
    /// every client transaction on it still waiting for its final answer
    /// fails now, as a timeout would, instead of at Timer B or F.
    pub fn flow_closed(&mut self, flow: Path) {
        let Some(on_flow) = self.clients_on_flows.get(&flow) else {
            return;
        };
        let failed: Vec<ClientTxId> = on_flow
            .iter()
            .copied()
            .filter(|id| {
                self.clients.get(id).is_some_and(|t| {
                    matches!(
                        t.state,
                        ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                    )
                })
            })
            .collect();
        for tx in failed {
            if let Some(t) = self.clients.get(&tx) {
                self.events
                    .push_back(TxEvent::Timeout { tx, owner: t.owner });
            }
            self.abandon_client(tx);
        }
    }

    pub fn abandon_client(&mut self, tx: ClientTxId) {
        if let Some(t) = self.clients.get_mut(&tx) {
            t.state = ClientState::Terminated;
            t.timers.clear_all();
        }
        self.reschedule(TxRef::Client(tx));
    }

    pub fn client_state(&self, tx: ClientTxId) -> Option<ClientState> {
        self.clients.get(&tx).map(|t| t.state)
    }

    /// Builds the CANCEL for an INVITE client transaction (RFC 3261 §9.1). Only
    /// valid once a provisional arrived; the caller checks [`ClientState::Proceeding`].
    pub fn build_cancel(&self, tx: ClientTxId) -> Option<(Request, Path)> {
        let t = self.clients.get(&tx)?;
        let invite = t.request.as_deref()?;
        let mut headers = crate::sip::Headers::new();
        for route in invite.headers.get_all(&HeaderName::Route) {
            headers.push(HeaderName::Route, route);
        }
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            via: vec![invite.top_via().clone()],
            max_forwards: 70,
            from: invite.from.clone(),
            to: invite.to.clone(),
            call_id: invite.call_id.clone(),
            cseq: crate::sip::CSeq {
                seq: invite.cseq.seq,
                method: Method::Cancel,
            },
            headers,
            body: Vec::new(),
        };
        Some((cancel, t.path))
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, §13.2.2.4).
    pub fn send_stateless(&mut self, bytes: Vec<u8>, path: Path) {
        self.transmits.push_back(Transmit::new(path, bytes));
    }

    // ----- time and output --------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.next_deadline()
    }

    /// Gives memory back after a burst: tables that are mostly empty shrink.
    fn compact(&mut self) {
        shrink::after_burst(&mut self.clients);
        shrink::after_burst(&mut self.client_keys);
        shrink::after_burst(&mut self.servers);
        shrink::after_burst(&mut self.server_keys);
        let (clients, servers) = (&self.clients, &self.servers);
        let live = clients.len() + servers.len();
        self.queue
            .purge_stale(live, |at, target| is_awaited(clients, servers, at, target));
        self.queue.compact();
    }

    /// Timer-queue entries, after dropping the stale ones (for leak checks).
    pub fn timer_entries(&mut self) -> usize {
        let (clients, servers) = (&self.clients, &self.servers);
        self.queue
            .purge(|at, target| is_awaited(clients, servers, at, target));
        self.queue.len()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.compact();
        while let Some((at, target)) = self.queue.pop_due(now) {
            match target {
                TxRef::Client(id) => {
                    let Some(tx) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    if !tx.scheduled.take_if(at) {
                        continue;
                    }
                    let values = self.values;
                    if tx.on_timeout(now, &values, &mut self.transmits) {
                        self.events.push_back(TxEvent::Timeout {
                            tx: id,
                            owner: tx.owner,
                        });
                    }
                }
                TxRef::Server(id) => {
                    let Some(tx) = self.servers.get_mut(&id) else {
                        continue;
                    };
                    if !tx.scheduled.take_if(at) {
                        continue;
                    }
                    let values = self.values;
                    let owner = tx.owner;
                    match tx.on_timeout(now, &values, &mut self.transmits) {
                        Some(ServerTimeout::Ack) => {
                            self.events.push_back(TxEvent::AckTimeout { tx: id, owner })
                        }
                        Some(ServerTimeout::Prack) => self
                            .events
                            .push_back(TxEvent::PrackTimeout { tx: id, owner }),
                        None => {}
                    }
                }
            }
            self.reschedule(target);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent<O>> {
        self.events.pop_front()
    }

    /// Re-queues a transaction's next deadline, or removes it once terminated.
    /// Drops `id` from its connection's list (a UDP path has none).
    fn forget_on_flow(&mut self, path: Path, id: ClientTxId) {
        if let Some(ids) = self.clients_on_flows.get_mut(&path) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.clients_on_flows.remove(&path);
            }
        }
    }

    fn reschedule(&mut self, target: TxRef) {
        match target {
            TxRef::Client(id) => {
                let removed = reschedule_in(
                    &mut self.clients,
                    &mut self.client_keys,
                    &mut self.queue,
                    id,
                    target,
                );
                if let Some(tx) = removed {
                    self.budget.release_client();
                    self.forget_on_flow(tx.path, id);
                }
            }
            TxRef::Server(id) => {
                let removed = reschedule_in(
                    &mut self.servers,
                    &mut self.server_keys,
                    &mut self.queue,
                    id,
                    target,
                );
                if let Some(tx) = removed {
                    self.budget.release_server(tx.source);
                }
            }
        }
    }
}

impl<O: Copy> Drop for TransactionLayer<O> {
    /// A layer that goes away gives its slots back (the budget outlives it).
    fn drop(&mut self) {
        for tx in self.servers.values() {
            self.budget.release_server(tx.source);
        }
        for _ in self.clients.values() {
            self.budget.release_client();
        }
    }
}

#[cfg(test)]
mod tests;
