//! One worker task: owns an [`Engine`] outright (no locks on the hot path), feeds
//! it the messages of its shard and its timeouts, and performs what it asks.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::DRAIN_TIME;
use crate::call::CallSnapshot;
use crate::call::SavedCall;
use crate::call::media::MediaRelay;
use crate::cdr::CdrRecord;
use crate::config::Config;
use crate::engine::{Engine, EngineDeps, EngineResources, StateChange, Users};
use crate::gateway::Gateways;
use crate::ids::IdGen;
use crate::media::{MAX_DATAGRAM, NgClient, NgSettings};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::ratelimit::RateLimit;
use crate::registrar::digest::DigestAuth;
use crate::registrar::location::LocationView;
use crate::sip::Message;
use crate::transaction::{Path, TxBudget};
use crate::transport::LocalSocket;
use crate::transport::Transport;
use crate::uplink::registration::RegistrationSnapshot;

/// The worker that keeps the trunks' registrations: their REGISTERs' Call-IDs
/// and branches carry its number, so the answers come back to it.
pub const UPLINK_WORKER: u8 = 0;

/// What the receive loops and the daemon send a worker.
pub enum WorkerInput {
    Message {
        message: Box<Message>,
        path: Path,
        admitted: bool,
    },
    /// A reloaded config and this worker's policies: new calls use them at
    /// once; calls in progress keep their negotiated timers, and their next
    /// hook call goes to the new policies.
    Reload(Box<Reload>),
    /// The operator asks for this worker's calls.
    Calls(oneshot::Sender<Vec<CallSnapshot>>),
    /// The operator (or a leak check) asks what this worker holds.
    Resources(oneshot::Sender<EngineResources>),
    /// The operator asks for the trunks' registrations (worker 0 keeps them).
    Registrations(oneshot::Sender<Vec<RegistrationSnapshot>>),
    /// The operator hangs up the call with this Call-ID, if it is here.
    HangUp(String, oneshot::Sender<Option<CallSnapshot>>),
    /// The gateways' table changed (DNS gave a name new addresses).
    Gateways(Arc<Gateways>),
    /// A TCP or TLS connection closed.
    FlowClosed(crate::transaction::Path),
    /// End every call and stop once they are gone (or after [`DRAIN_TIME`]).
    Shutdown,
}

/// A reload's new state for one worker.
pub struct Reload {
    pub config: Arc<Config>,
    pub policies: Policies,
    /// The sockets new calls may use (a removed `listen` address is gone from
    /// here at once, though it still receives for a while).
    pub sockets: Arc<[LocalSocket]>,
    /// The gateways' shared health table for the new config.
    pub gateways: Arc<Gateways>,
}

/// Inputs handled per wake-up before outputs are flushed; bounds latency while
/// amortising the wake-up under load.
const BATCH: usize = 64;

/// What every worker shares with the others and the daemon.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The registrar's location view, and the digest checker each worker
    /// clones for itself, if users are configured.
    pub registrar: Option<(Arc<LocationView>, DigestAuth)>,
    pub transport: Arc<Transport>,
    /// Where finished calls' records go (the CDR writer).
    pub cdrs: mpsc::UnboundedSender<CdrRecord>,
    /// Live transactions against `limits.max_transactions*`.
    pub budget: Arc<TxBudget>,
    /// Every trunk's gateways and their health (replaced on reload).
    pub gateways: Arc<ArcSwap<Gateways>>,
    /// Where established calls' state goes (the state task), with `state:`.
    pub state: Option<mpsc::UnboundedSender<StateChange>>,
}

pub async fn run_worker(
    id: u8,
    config: Arc<Config>,
    sockets: Arc<[LocalSocket]>,
    shared: Shared,
    policies: Policies,
    mut inputs: mpsc::Receiver<WorkerInput>,
    restored: Vec<SavedCall>,
) {
    let Shared {
        metrics,
        registrar,
        transport,
        cdrs,
        budget,
        gateways,
        state,
    } = shared;
    let users = registrar.map(|(location, auth)| Users {
        location,
        auth: auth.issued_by(id),
    });
    let media = media_relay(id, &config, &metrics);
    let mut ng = NgSocket::open(&config).await;
    let deps = EngineDeps {
        ids: IdGen::new(id),
        metrics: metrics.clone(),
        budget,
        policies,
        users,
        media,
        gateways: Some(gateways.load_full()),
        // One worker probes every gateway; all of them read the health.
        probes: id == 0,
        uplink: id == UPLINK_WORKER,
        persist: state.is_some(),
    };
    let mut engine = Engine::new(config, sockets, deps);
    engine.start_registrations(Instant::now());
    if !restored.is_empty() {
        let (now, wall) = (Instant::now(), wall_ms(SystemTime::now()));
        let resumed = restored
            .iter()
            .filter(|call| engine.restore_call(now, wall, call))
            .count();
        tracing::info!(
            worker = id,
            calls = resumed,
            "calls resumed from the state store"
        );
    }
    let mut drain_until: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut ng_buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        // Without a deadline, sleep "forever" (a day) until input arrives.
        let wake = engine
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let drain_wake =
            drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            received = inputs.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                for input in batch.drain(..) {
                    let now = Instant::now();
                    match input {
                        WorkerInput::Message { message, path, admitted } => {
                            engine.handle_message(now, *message, path, admitted)
                        }
                        WorkerInput::Reload(reload) => {
                            let Reload { config, policies, sockets, gateways } = *reload;
                            let relay = (!engine.has_media())
                                .then(|| media_relay(id, &config, &metrics))
                                .flatten();
                            if ng.socket.is_none() {
                                ng = NgSocket::open(&config).await;
                            }
                            engine.set_config(now, config, relay);
                            engine.set_gateways(now, gateways);
                            engine.set_policies(policies);
                            engine.set_sockets(sockets);
                            engine.start_registrations(now);
                        }
                        WorkerInput::Calls(reply) => {
                            let _ = reply.send(engine.calls(now));
                        }
                        WorkerInput::Registrations(reply) => {
                            let _ = reply.send(engine.registrations(now));
                        }
                        WorkerInput::Resources(reply) => {
                            let _ = reply.send(engine.resources());
                        }
                        WorkerInput::HangUp(call_id, reply) => {
                            let _ = reply.send(engine.hang_up(now, &call_id));
                        }
                        WorkerInput::Gateways(gateways) => engine.set_gateways(now, gateways),
                        WorkerInput::FlowClosed(flow) => engine.flow_closed(now, flow),
                        WorkerInput::Shutdown => {
                            engine.begin_shutdown(now);
                            drain_until = Some(now + DRAIN_TIME);
                        }
                    }
                }
            }
            _ = sleep_until(wake.into()) => engine.handle_timeout(Instant::now()),
            received = ng.recv(&mut ng_buf) => {
                if let Ok((len, from)) = received
                    && len <= MAX_DATAGRAM
                {
                    engine.handle_ng_datagram(Instant::now(), SystemTime::now(), from, &ng_buf[..len]);
                }
            }
            _ = sleep_until(drain_wake.into()), if drain_until.is_some() => {
                log_drain_leftovers(id, &engine);
                flush(&mut engine, &transport, &cdrs, &state, &mut ng).await;
                break;
            }
        }
        flush(&mut engine, &transport, &cdrs, &state, &mut ng).await;
        if drain_until.is_some() && engine.active_calls() == 0 && engine.requests_in_flight() == 0 {
            break;
        }
    }
}

/// Says what the drain gave up on: calls still up, or (every call having
/// ended) only requests to peers that never answered, such as a BYE to a
/// dead phone, which cost nothing but their retransmissions.
fn log_drain_leftovers(id: u8, engine: &Engine) {
    let (calls, requests) = (engine.active_calls(), engine.requests_in_flight());
    let pending = engine.requests_in_flight_summary(5);
    if calls > 0 {
        tracing::warn!(worker = id, calls, requests_in_flight = requests, %pending, "calls still active at the end of the drain");
    } else {
        tracing::info!(worker = id, requests_in_flight = requests, %pending, "every call ended; requests still unanswered at the end of the drain");
    }
}

async fn flush(
    engine: &mut Engine,
    transport: &Transport,
    cdrs: &mpsc::UnboundedSender<CdrRecord>,
    state: &Option<mpsc::UnboundedSender<StateChange>>,
    ng: &mut NgSocket,
) {
    while let Some(t) = engine.poll_transmit() {
        transport.send(t).await;
    }
    while let Some((to, bytes)) = engine.poll_ng_transmit() {
        ng.send(to, &bytes).await;
    }
    // Before the CDRs: the state task hears of a saved call's end before
    // its CDR can be written and reported billed.
    if let Some(state) = state {
        let (now, wall) = (Instant::now(), wall_ms(SystemTime::now()));
        while let Some(change) = engine.poll_state(now, wall) {
            // The state task only stops after every worker has.
            let _ = state.send(change);
        }
    }
    while let Some(record) = engine.poll_cdr() {
        // The writer only goes away after every worker has stopped.
        let _ = cdrs.send(record);
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This worker's ng client of the rtpengines `media:` names (none without).
fn media_relay(id: u8, config: &Config, metrics: &Arc<Metrics>) -> Option<MediaRelay> {
    let media = config.media.as_ref()?;
    let settings = NgSettings {
        ping_interval: media.ping_interval,
        ..NgSettings::default()
    };
    let client = NgClient::new(
        Instant::now(),
        media.rtpengines.clone(),
        settings,
        IdGen::new(id),
        metrics.clone(),
    );
    Some(MediaRelay::new(client, media.clone()))
}

/// The worker's socket to rtpengine's ng port: one per worker, so replies
/// come back to the worker that sent the request, and no worker shares a
/// socket or waits on another.
struct NgSocket {
    socket: Option<UdpSocket>,
    send_errors: RateLimit,
}

impl NgSocket {
    /// Bound on an ephemeral port of the engines' family, when `media:` names
    /// any (IPv6 is bound dual-stack, so IPv4 engines are reached too).
    async fn open(config: &Config) -> NgSocket {
        let socket = match &config.media {
            Some(media) => {
                let v6 = media.rtpengines.iter().any(|e| e.is_ipv6());
                let any: SocketAddr = if v6 {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                };
                match UdpSocket::bind(any).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open a socket to rtpengine: relayed calls will fail");
                        None
                    }
                }
            }
            None => None,
        };
        NgSocket {
            socket,
            send_errors: RateLimit::new(5, Duration::from_secs(10)),
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match &self.socket {
            Some(socket) => socket.recv_from(buf).await,
            None => std::future::pending().await,
        }
    }

    async fn send(&mut self, to: SocketAddr, bytes: &[u8]) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = socket.send_to(bytes, to).await
            && let Some(suppressed) = self.send_errors.allow(Instant::now())
        {
            tracing::warn!(rtpengine = %to, error = %e, suppressed, "cannot send to rtpengine");
        }
    }
}
