//! The `vigil run` daemon: the thin tokio shell around the sans-IO engine.
//!
//! It reads top to bottom: bind sockets → open the CDR file → start one worker per
//! shard and one receive loop per socket → wait for SIGTERM/SIGINT → drain calls
//! (BYE on both legs, CDR `shutdown`) → flush CDRs → return. CDRs that could
//! not be written by then are printed on stderr or left in the spill file, and
//! `run` returns [`DaemonError::CdrsNotWritten`] so the process exits
//! [`EXIT_CDRS_NOT_WRITTEN`] and a supervisor sees it.

mod cdr_writer;
mod commands;
pub mod control;
mod logging;
mod metrics_http;
mod registrar;
mod reload;
pub mod watch;
mod worker;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::sync::watch as latest;

use crate::config::Config;
use crate::ids::REGISTRAR_WORKER;
use crate::ingress::overload::{Overload, Refusal};
use crate::ingress::{Ingress, Verdict};
use crate::metrics::{CallShed, DatagramDrop, Metrics};
use crate::policy::{PolicyLoader, SessionPolicy};
use crate::ratelimit::RateLimit;
use crate::registrar::Registrar;
use crate::registrar::digest::DigestAuth;
use crate::registrar::location::LocationView;
use crate::registrar::store::Store;
use crate::sip::{MAX_DATAGRAM, Message};
use crate::transaction::{Path, Transmit, TxBudget};
use crate::transport::LocalSocket;
use crate::transport::trace::Direction;
use crate::transport::{Received, Receiver, Transport, TransportError};
use cdr_writer::{CdrShutdown, CdrWriter, CdrWriterError, FINAL_FLUSH};

use commands::{Operator, serve_commands};
use control::ControlServer;
pub use logging::{LoggingError, init_logging};
use metrics_http::MetricsEndpoint;
use registrar::{RegistrarInput, RegistrarThread};
use reload::{
    Listening, ReloadRequest, Reloader, SpawnReceiver, Targets, serve_reloads, watch_files,
};
use worker::{Shared, WorkerInput, run_worker};

/// How long shutdown waits for calls to end before giving up on stragglers; the
/// whole shutdown stays within the 5 s a service manager gives.
const DRAIN_TIME: Duration = Duration::from_secs(4);
/// Datagrams queued per worker before the receive path sheds load.
const WORKER_QUEUE: usize = 16_384;
/// How long shutdown waits for the CDR writer: its last attempt, then the
/// fsync (a slow disk's).
const CDR_FLUSH_TIME: Duration = FINAL_FLUSH.saturating_add(Duration::from_millis(1500));
/// `vigil run`'s exit code when it stopped with CDRs not in the CDR file:
/// they were printed on stderr or left in the spill file (see the log).
pub const EXIT_CDRS_NOT_WRITTEN: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Cdr(#[from] CdrWriterError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::registrar::store::StoreError),
    #[error("cannot start the registrar thread: {0}")]
    RegistrarThread(std::io::Error),
    #[error("cannot serve metrics on {addr} (metrics.listen): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Stopped, but not every CDR reached the CDR file on disk.
    #[error(
        "stopped with CDRs not written to {}: {held} printed on stderr, {spilled} left in {} for the next start{}",
        path.display(),
        spill.display(),
        sync_error.as_deref().map(|e| format!(", and the final sync failed: {e}")).unwrap_or_default()
    )]
    CdrsNotWritten {
        path: std::path::PathBuf,
        spill: std::path::PathBuf,
        held: usize,
        spilled: u64,
        sync_error: Option<String>,
    },
    /// The CDR writer failed or hung: what it held is lost with it.
    #[error("the CDR writer {0}: the CDRs it held are lost")]
    CdrWriterLost(&'static str),
}

impl DaemonError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::CdrsNotWritten { .. } | DaemonError::CdrWriterLost(_) => {
                EXIT_CDRS_NOT_WRITTEN
            }
            _ => 1,
        }
    }
}

/// Runs the switch until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let transport = Arc::new(Transport::bind(&config.listen)?);
    let metrics_endpoint = match config.metrics_listen {
        Some(addr) => Some(
            MetricsEndpoint::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    transport.trace().configure(&config);
    let metrics = Arc::new(Metrics::default());
    let cdr_writer = CdrWriter::open(&config.cdr, metrics.clone())?;
    let cdr_status = cdr_writer.status();
    let (cdr_tx, cdr_rx) = mpsc::unbounded_channel();
    let (cdr_reopen, cdr_reopens) = latest::channel(0u64);
    let writer = tokio::spawn(cdr_writer.run(cdr_rx, cdr_reopens));

    let workers = config.workers().min(usize::from(REGISTRAR_WORKER));
    let local_sockets = transport.local_sockets();
    let policy_loader = load_policies(&config, &metrics);
    let (registrar_input, registrar_task, registrar_shared) = start_registrar(
        &config,
        &local_sockets,
        &metrics,
        &transport,
        policy_loader.policies(&config).0.default_policy(),
    )?;
    let location_view = registrar_shared.as_ref().map(|(view, _)| view.clone());
    let budget = Arc::new(TxBudget::new(&config.limits));
    let shared = Shared {
        metrics: metrics.clone(),
        registrar: registrar_shared,
        transport: transport.clone(),
        cdrs: cdr_tx,
        budget: budget.clone(),
    };
    let mut worker_inputs = Vec::with_capacity(workers);
    let mut worker_tasks = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        worker_inputs.push(tx);
        // Each worker compiles its own Lua states (a state is not shared).
        let (policies, _) = policy_loader.policies(&config);
        worker_tasks.push(tokio::spawn(run_worker(
            id as u8,
            config.clone(),
            local_sockets.clone(),
            shared.clone(),
            policies,
            rx,
        )));
    }
    // The CDR writer stops once the workers' senders are all gone.
    drop(shared);

    let (ingress_config, ingress_configs) = latest::channel(config.clone());
    let (ingress_overload, ingress_overloads) =
        latest::channel(Arc::new(Overload::new(&config.limits, metrics.clone())));
    let spawn: SpawnReceiver = {
        let (transport, configs) = (transport.clone(), ingress_configs.clone());
        let metrics = metrics.clone();
        let inputs = Inputs {
            workers: worker_inputs.clone(),
            registrar: registrar_input.clone(),
            overloads: ingress_overloads,
        };
        Arc::new(move |(local, socket)| {
            tokio::spawn(receive_loop(
                socket,
                local,
                Ingress::with_metrics(workers, metrics.clone()),
                configs.clone(),
                inputs.clone(),
                transport.clone(),
            ))
        })
    };
    let listening = Listening {
        transport: transport.clone(),
        spawn: spawn.clone(),
        receivers: Arc::default(),
    };
    for bound in transport.sockets() {
        let bind = bound.0.bind;
        let task = spawn(bound);
        listening
            .receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(bind, task);
    }
    tracing::info!(
        workers,
        trunks = config.trunks.len(),
        routes = config.routes.len(),
        "vigil running"
    );
    let reporter = tokio::spawn(report_stats(metrics.clone()));
    let reloader = Reloader::new(
        config.clone(),
        policy_loader,
        Targets {
            ingress: ingress_config,
            workers: worker_inputs.clone(),
            registrar: registrar_input.clone(),
            listening: listening.clone(),
            cdr_reopen,
            overload: ingress_overload,
            budget: budget.clone(),
        },
        metrics.clone(),
    );
    let (reload_requests, reload_queue) = mpsc::channel(16);
    let reload_status = reloader.status();
    let reloads = tokio::spawn(serve_reloads(reloader, reload_queue));
    let watcher = tokio::spawn(watch_files(ingress_configs, reload_requests.clone()));
    let metrics_server = metrics_endpoint.map(|e| {
        if let Ok(addr) = e.local_addr() {
            tracing::info!(%addr, "metrics endpoint ready: GET /metrics");
        }
        tokio::spawn(e.serve(metrics.clone(), location_view.clone(), budget.clone()))
    });
    let operator = Operator {
        workers: worker_inputs.clone(),
        location: location_view,
        reloads: reload_requests.clone(),
        status: reload_status,
        transport: transport.clone(),
        budget,
        cdr: cdr_status,
    };
    let control = start_control(&config.control_socket, operator);

    wait_for_signal(&reload_requests).await?;
    reporter.abort();
    reloads.abort();
    watcher.abort();
    if let Some(control) = control {
        control.abort();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }

    tracing::info!("shutting down: ending active calls");
    for input in &worker_inputs {
        let _ = input.send(WorkerInput::Shutdown).await;
    }
    for mut task in worker_tasks {
        let drained = tokio::time::timeout(DRAIN_TIME + Duration::from_millis(500), &mut task);
        if drained.await.is_err() {
            // A stuck worker would hold its CDR sender, and the CDR writer
            // would wait for it instead of flushing: stop it.
            task.abort();
        }
    }
    listening.stop_all();
    if let Some(thread) = registrar_task {
        thread.stop(Duration::from_secs(1)).await;
    }
    drop(worker_inputs);
    let cdrs = match tokio::time::timeout(CDR_FLUSH_TIME, writer).await {
        Ok(Ok(shutdown)) => account_for_cdrs(shutdown),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CDR writer task failed");
            Err(DaemonError::CdrWriterLost("failed"))
        }
        Err(_) => {
            tracing::error!("CDR writer did not finish in time");
            Err(DaemonError::CdrWriterLost("did not finish in time"))
        }
    };
    tracing::info!(summary = %metrics.refresh_summary(), "session refreshes");
    tracing::info!(summary = %metrics.keepalive_summary(), "NAT keep-alives");
    tracing::info!("stopped");
    cdrs
}

/// Says where every CDR the writer could not write went: those held in
/// memory are printed on stderr now, one JSON line each (stderr is the only
/// place left for them), those in the spill file stay there for the next
/// start.
fn account_for_cdrs(shutdown: CdrShutdown) -> Result<(), DaemonError> {
    if shutdown.is_complete() {
        tracing::info!(cdrs_written = shutdown.written, "CDRs flushed");
        return Ok(());
    }
    if !shutdown.held.is_empty() {
        tracing::error!(
            file = %shutdown.path.display(),
            cdrs = shutdown.held.len(),
            "CDRs could not be written to the CDR file: they follow on stderr, one JSON line each"
        );
        use std::io::Write;
        let mut stderr = std::io::stderr().lock();
        for line in &shutdown.held {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
    if shutdown.spilled > 0 {
        tracing::error!(
            spill = %shutdown.spill_path.display(),
            cdrs = shutdown.spilled,
            "CDRs stay in the spill file: the next start writes them to the CDR file first"
        );
    }
    Err(DaemonError::CdrsNotWritten {
        path: shutdown.path,
        spill: shutdown.spill_path,
        held: shutdown.held.len(),
        spilled: shutdown.spilled,
        sync_error: shutdown.sync_error,
    })
}

/// Logs the refresh and keep-alive counters once a minute while they move (for
/// hosts nothing scrapes `/metrics` on).
async fn report_stats(metrics: Arc<Metrics>) {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut refreshes, mut keepalives) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        let sent = metrics.refreshes_sent.load(Relaxed);
        if sent != refreshes {
            refreshes = sent;
            tracing::info!(summary = %metrics.refresh_summary(), "session refreshes");
        }
        let sent = metrics.keepalives_sent.load(Relaxed);
        if sent != keepalives {
            keepalives = sent;
            tracing::info!(summary = %metrics.keepalive_summary(), "NAT keep-alives");
        }
    }
}

/// Loads the plugins and checks the scripts the config names. A source that
/// cannot be loaded is logged and left out: its trunk gets the default policy.
fn load_policies(config: &Config, metrics: &Arc<Metrics>) -> PolicyLoader {
    let (loader, mut errors) = PolicyLoader::new(config, metrics.clone());
    errors.extend(loader.policies(config).1);
    for error in &errors {
        tracing::error!(%error, "policy not loaded: the default policy applies instead");
    }
    let default = &config.policy.default;
    let trunks = config
        .trunks
        .iter()
        .filter_map(|t| Some((&*t.name, t.policy.as_ref()?)));
    for (trunk, sources) in std::iter::once(("(default)", default)).chain(trunks) {
        if !sources.is_empty() {
            tracing::info!(
                trunk,
                plugin = ?sources.plugin.as_deref().map(FsPath::display),
                lua = ?sources.lua.as_deref().map(FsPath::display),
                "policy"
            );
        }
    }
    loader
}

/// The registrar's side of what the call workers share.
type RegistrarShared = Option<(Arc<LocationView>, DigestAuth)>;

/// Opens the location store, loads the registrations it kept (their keep-alives
/// resume at once) and starts the registrar task, when users are configured.
#[allow(clippy::type_complexity)]
fn start_registrar(
    config: &Arc<Config>,
    sockets: &Arc<[LocalSocket]>,
    metrics: &Arc<Metrics>,
    transport: &Arc<Transport>,
    policy: Arc<dyn SessionPolicy>,
) -> Result<
    (
        Option<mpsc::Sender<RegistrarInput>>,
        Option<RegistrarThread>,
        RegistrarShared,
    ),
    DaemonError,
> {
    let Some(settings) = &config.registrar else {
        return Ok((None, None, None));
    };
    let store = Store::open(&settings.db)?;
    let now = Instant::now();
    let key: [u8; 32] = rand::random();
    let auth = DigestAuth::new(
        &settings.domain,
        &key,
        now,
        Duration::from_secs(u64::from(settings.nonce_lifetime)),
    );
    let view = Arc::new(LocationView::default());
    let mut registrar = Registrar::new(
        config.clone(),
        sockets.clone(),
        auth.clone().issued_by(REGISTRAR_WORKER),
        view.clone(),
        metrics.clone(),
    );
    registrar.set_policy(policy);
    let loaded = registrar.load(now, store.load(SystemTime::now())?);
    tracing::info!(db = %settings.db.display(), contacts = loaded, users = config.users.len(), "registrar ready");
    let (tx, rx) = mpsc::channel(WORKER_QUEUE);
    let thread = RegistrarThread::spawn(registrar, store, rx, transport.clone())
        .map_err(DaemonError::RegistrarThread)?;
    Ok((Some(tx), Some(thread), Some((view, auth))))
}

/// Serves `vigil ctl` and `vigil reload` on the control socket. Without it (the
/// path cannot be bound) the switch still runs; SIGHUP and file changes still
/// reload.
fn start_control(path: &FsPath, operator: Operator) -> Option<tokio::task::JoinHandle<()>> {
    let (commands_tx, commands) = mpsc::channel(8);
    match ControlServer::bind(path, commands_tx) {
        Ok(server) => {
            tracing::info!(socket = %server.path().display(), "control socket ready");
            Some(tokio::spawn(async move {
                tokio::join!(server.run(), serve_commands(operator, commands));
            }))
        }
        Err(e) => {
            tracing::error!(error = %e, "no control socket: `vigil reload` will not reach this daemon");
            None
        }
    }
}

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile asks for a reload.
async fn wait_for_signal(reloads: &mpsc::Sender<ReloadRequest>) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT");
                return Ok(());
            }
            _ = hup.recv() => {
                let request = ReloadRequest { cause: "SIGHUP", reply: None };
                // A full queue already holds a reload that will read the file.
                let _ = reloads.try_send(request);
            }
        }
    }
}

/// Where the receive loops hand messages on.
#[derive(Clone)]
struct Inputs {
    workers: Vec<mpsc::Sender<WorkerInput>>,
    registrar: Option<mpsc::Sender<RegistrarInput>>,
    /// The overload limits in force (a reload may replace them).
    overloads: latest::Receiver<Arc<Overload>>,
}

/// Whether a receive loop keeps up with its socket, judged by how long the
/// datagrams it reads waited in the kernel's buffer (each one's
/// `SO_TIMESTAMPNS` stamp against the clock when it is read). A loop that is
/// merely busy reads datagrams a millisecond old. One that has fallen behind
/// reads datagrams that waited [`Backlog::STALE`] or more, and only such, for
/// [`Backlog::SUSTAINED`], without catching up: they wait longer and longer
/// (or as long as a full buffer holds) until callers retransmit (T1 =
/// 500 ms), which only adds load. New calls are then shed (a 503 costs a
/// tenth of a call) until the loop catches up.
///
/// Catching up is reading faster than datagrams arrive: the waits fall. A
/// loop whose process was frozen (a loaded machine, a page-in) reads what
/// piled up meanwhile, old datagrams first, and each one read has waited
/// less than the one before; while the waits fall by half the time spent
/// reading them or more (the loop reads 1.5 times as fast as datagrams
/// come), it sheds nothing, however long the freeze was. Stamps are on the
/// real-time clock: only the datagrams queued when the clock is stepped are
/// misjudged, and one stamped after its reading time (the clock stepped
/// back) counts as not having waited.
#[derive(Debug, Default)]
struct Backlog {
    /// The stretch of stale datagrams the loop is reading; `None` after a
    /// fresh one.
    stale: Option<StaleStretch>,
}

/// Since when a receive loop has read only stale datagrams, and how long the
/// first and the latest of them waited.
#[derive(Debug, Clone, Copy)]
struct StaleStretch {
    since: Instant,
    first_wait: Duration,
    last_wait: Duration,
}

impl Backlog {
    /// A datagram that waited this long in the kernel is stale: well inside
    /// T1 (500 ms), when callers start retransmitting.
    const STALE: Duration = Duration::from_millis(200);
    /// Reading only stale datagrams for this long, without catching up, is
    /// falling behind: shedding starts with datagrams about 300 ms old, still
    /// inside T1.
    const SUSTAINED: Duration = Duration::from_millis(100);

    /// How long a datagram stamped `arrived` by the kernel waited until
    /// `read_at`; `None` without a stamp.
    fn waited(arrived: Option<SystemTime>, read_at: SystemTime) -> Option<Duration> {
        arrived.map(|at| read_at.duration_since(at).unwrap_or(Duration::ZERO))
    }

    /// The loop read, at `now`, a datagram that had waited `waited` (`None`:
    /// not known, which changes nothing).
    fn read(&mut self, now: Instant, waited: Option<Duration>) {
        let Some(waited) = waited else {
            return;
        };
        if waited < Self::STALE {
            self.stale = None;
            return;
        }
        match &mut self.stale {
            Some(stretch) => stretch.last_wait = waited,
            None => {
                self.stale = Some(StaleStretch {
                    since: now,
                    first_wait: waited,
                    last_wait: waited,
                });
            }
        }
    }

    /// Behind: only stale datagrams read for [`Backlog::SUSTAINED`], and
    /// their waits fell by less than half the time spent reading them.
    fn is_behind(&self, now: Instant) -> bool {
        let Some(stretch) = self.stale else {
            return false;
        };
        let reading = now.saturating_duration_since(stretch.since);
        let caught_up = stretch.first_wait.saturating_sub(stretch.last_wait);
        reading >= Self::SUSTAINED && caught_up < reading / 2
    }
}

/// Why new calls are shed now, if they are: the worker's queue is half full,
/// or this receive loop is behind ([`Backlog`]).
fn falling_behind(
    worker: &mpsc::Sender<WorkerInput>,
    backlog: &Backlog,
    now: Instant,
) -> Option<CallShed> {
    if worker.capacity() < WORKER_QUEUE / 2 {
        Some(CallShed::Overload)
    } else {
        backlog.is_behind(now).then_some(CallShed::Backlog)
    }
}

/// Reads datagrams from one socket, judges them and hands them on.
async fn receive_loop(
    socket: Arc<UdpSocket>,
    local: LocalSocket,
    mut ingress: Ingress,
    mut configs: latest::Receiver<Arc<Config>>,
    mut inputs: Inputs,
    transport: Arc<Transport>,
) {
    let mut config = configs.borrow_and_update().clone();
    ingress.set_overload(inputs.overloads.borrow_and_update().clone());
    // One byte more than the largest datagram, to notice an oversized one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut errors_log = RateLimit::new(5, Duration::from_secs(10));
    let mut overload_log = RateLimit::new(5, Duration::from_secs(10));
    let mut backlog = Backlog::default();
    let mut receiver = Receiver::default();
    loop {
        let received = receiver.recv(&socket, &mut buf).await;
        let (wall, now) = (SystemTime::now(), Instant::now());
        let Received {
            len,
            remote,
            arrived,
        } = match received {
            Ok(r) => r,
            Err(e) => {
                if let Some(suppressed) = errors_log.allow(now) {
                    tracing::warn!(error = %e, suppressed, "receive failed");
                }
                continue;
            }
        };
        let waited = Backlog::waited(arrived, wall);
        if let Some(waited) = waited {
            ingress.waited(waited);
        }
        backlog.read(now, waited);
        if len > MAX_DATAGRAM {
            ingress.dropped(DatagramDrop::Oversized);
            if let Some(suppressed) = errors_log.allow(now) {
                tracing::warn!(source = %remote, suppressed, "datagram over 64 KiB dropped");
            }
            continue;
        }
        let path = Path {
            local: local.bind,
            remote,
        };
        transport
            .trace()
            .datagram(Direction::Received, local.bind, remote, &buf[..len]);
        // An atomic load per datagram; a reload swaps the snapshot.
        if configs.has_changed().unwrap_or(false) {
            config = configs.borrow_and_update().clone();
        }
        if inputs.overloads.has_changed().unwrap_or(false) {
            ingress.set_overload(inputs.overloads.borrow_and_update().clone());
        }
        match ingress.classify(now, &config, &buf[..len], path) {
            Verdict::Dispatch {
                worker,
                message,
                admitted,
                fresh_call,
            } => {
                // Falling behind — a worker's queue half full, or this loop
                // reading only datagrams that waited long in the kernel —
                // sheds new calls first, long before the queues are full of
                // what calls in progress need.
                if fresh_call
                    && let Some(reason) = falling_behind(&inputs.workers[worker], &backlog, now)
                    && let Message::Request(request) = message.as_ref()
                {
                    let why = Refusal {
                        reason,
                        retry_after: 2,
                    };
                    if let Verdict::Reply { bytes, to } =
                        ingress.shed(now, request, path, &config, why)
                    {
                        transport
                            .send(&Transmit {
                                local: local.bind,
                                remote: to,
                                bytes,
                            })
                            .await;
                    }
                    continue;
                }
                let input = WorkerInput::Message {
                    message,
                    path,
                    admitted,
                };
                if inputs.workers[worker].try_send(input).is_err() {
                    ingress.dropped(DatagramDrop::Overload);
                    if let Some(suppressed) = overload_log.allow(now) {
                        tracing::warn!(worker, suppressed, "worker queue full: datagram dropped");
                    }
                }
            }
            Verdict::Registrar(message) => {
                let full = inputs.registrar.as_ref().is_some_and(|r| {
                    r.try_send(RegistrarInput::Message { message, path })
                        .is_err()
                });
                if full {
                    ingress.dropped(DatagramDrop::Overload);
                    if let Some(suppressed) = overload_log.allow(now) {
                        tracing::warn!(suppressed, "registrar queue full: datagram dropped");
                    }
                }
            }
            Verdict::Reply { bytes, to } => {
                transport
                    .send(&Transmit {
                        local: local.bind,
                        remote: to,
                        bytes,
                    })
                    .await;
            }
            Verdict::Drop(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_loop_reading_fresh_datagrams_is_never_behind() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        assert!(!backlog.is_behind(t0), "nothing read yet");
        // Ten seconds of datagrams read 5 ms after they arrived, without a
        // pause: busy, not behind.
        for i in 0..10_000 {
            let now = t0 + i * MS;
            backlog.read(now, Some(5 * MS));
            assert!(!backlog.is_behind(now));
        }
    }

    #[test]
    fn a_freeze_leaves_stale_datagrams_that_shed_nothing_once_read() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        backlog.read(t0, Some(MS));
        // The process was frozen 400 ms; the loop reads what piled up, each
        // younger than the last, and is through it in about 35 ms.
        for i in 0..60u32 {
            let now = t0 + 400 * MS + i * MS;
            backlog.read(now, Some((400 - 6 * i) * MS));
            assert!(!backlog.is_behind(now), "{i} ms into the pile");
        }
        assert!(!backlog.is_behind(t0 + 1000 * MS));
    }

    #[test]
    fn a_long_freeze_caught_up_at_one_and_a_half_times_the_arrival_rate_sheds_nothing() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        // Frozen 2 s on a loaded machine, then reading 1.5 times as fast as
        // datagrams arrive: the waits fall 0.5 ms per ms, for 3.6 s of stale
        // datagrams.
        for i in 0..3_600u32 {
            let now = t0 + i * MS;
            backlog.read(now, Some(2_000 * MS - i * MS / 2));
            assert!(!backlog.is_behind(now), "{i} ms into the pile");
        }
    }

    #[test]
    fn reading_stale_datagrams_for_100_ms_without_catching_up_is_behind_until_a_fresh_one() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        backlog.read(t0, Some(199 * MS));
        assert!(!backlog.is_behind(t0 + 500 * MS), "199 ms is not stale");
        // Waits that grow: datagrams arrive faster than the loop reads them.
        backlog.read(t0, Some(200 * MS));
        assert!(!backlog.is_behind(t0 + 99 * MS));
        // A datagram without a stamp tells nothing either way.
        backlog.read(t0 + 50 * MS, None);
        backlog.read(t0 + 100 * MS, Some(250 * MS));
        assert!(backlog.is_behind(t0 + 100 * MS));
        // Waits that stay put: a full buffer, the kernel dropping the rest.
        for i in 0..1_000u32 {
            let now = t0 + 100 * MS + i * MS;
            backlog.read(now, Some((250 + i % 7) * MS));
            assert!(backlog.is_behind(now), "{i} ms into a full buffer");
        }
        // One fresh datagram: it caught up, and it takes another 100 ms of
        // stale ones to be behind again.
        let t1 = t0 + 10_000 * MS;
        backlog.read(t1, Some(20 * MS));
        assert!(!backlog.is_behind(t1));
        backlog.read(t1 + MS, Some(300 * MS));
        backlog.read(t1 + 100 * MS, Some(300 * MS));
        assert!(!backlog.is_behind(t1 + 100 * MS));
        backlog.read(t1 + 101 * MS, Some(300 * MS));
        assert!(backlog.is_behind(t1 + 101 * MS));
    }

    #[test]
    fn catching_up_slower_than_half_a_second_per_second_is_behind() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        // Reading only 1.2 times as fast as datagrams come: the waits fall
        // 0.2 ms per ms, from 800 ms.
        backlog.read(t0, Some(800 * MS));
        let now = t0 + 150 * MS;
        backlog.read(now, Some(770 * MS));
        assert!(backlog.is_behind(now), "shedding speeds the catching up");
        // Faster: 0.6 ms per ms over the stretch.
        backlog.read(t0 + 500 * MS, Some(500 * MS));
        assert!(!backlog.is_behind(t0 + 500 * MS));
    }

    #[test]
    fn the_wait_is_the_kernel_stamp_to_the_reading_and_never_negative() {
        let read_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            Backlog::waited(Some(read_at - 250 * MS), read_at),
            Some(250 * MS)
        );
        // The real-time clock stepped back between the stamp and the read.
        assert_eq!(
            Backlog::waited(Some(read_at + 3_600_000 * MS), read_at),
            Some(Duration::ZERO)
        );
        assert_eq!(Backlog::waited(None, read_at), None);
    }
}
