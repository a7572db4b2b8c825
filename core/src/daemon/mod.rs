//! The `vigil run` daemon: the thin tokio shell around the sans-IO engine.
//!
//! It reads top to bottom: bind sockets → open the CDR file → start one worker per
//! shard and one receive loop per socket → wait for SIGTERM/SIGINT → drain calls
//! (BYE on both legs, CDR `shutdown`) → flush CDRs → return. CDRs that could
//! not be written by then are printed on stderr or left in the spill file, and
//! `run` returns [`DaemonError::CdrsNotWritten`] so the process exits
//! [`EXIT_CDRS_NOT_WRITTEN`] and a supervisor sees it.

pub mod cdr_database;
mod cdr_writer;
mod commands;
pub mod control;
pub mod dns;
mod gateway_book;
mod lease;
mod logging;
mod metrics_http;
mod receive;
mod registrar;
mod reload;
mod state_writer;
pub mod watch;
mod worker;

use std::path::Path as FsPath;
use std::sync::Arc;

use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::sync::watch as latest;

use crate::config::Config;
use crate::ids::REGISTRAR_WORKER;
use crate::ingress::Ingress;
use crate::ingress::overload::Overload;
use crate::metrics::Metrics;
use crate::policy::{PolicyLoader, SessionPolicy};
use crate::registrar::Registrar;
use crate::registrar::digest::DigestAuth;
use crate::registrar::location::LocationView;
use crate::registrar::store::Store;
use crate::state::Recovery;
use crate::transaction::TxBudget;
use crate::transport::LocalSocket;
use crate::transport::connections::StreamLimits;
use crate::transport::{Transport, TransportError};
use cdr_database::{CdrDatabase, CdrDatabaseError, DbShutdown};
use cdr_writer::{CdrShutdown, CdrWriter, CdrWriterError, FINAL_FLUSH};
use gateway_book::{GatewayBook, follow_dns};

use commands::{Operator, serve_commands};
use control::ControlServer;
pub use logging::{LoggingError, init_logging};
use metrics_http::MetricsEndpoint;
use receive::{Handoff, Inputs, receive_loop, stream_loop};
use registrar::{Contacts, RegistrarInput, RegistrarThread};
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
/// `vigil run`'s exit code when another node took its lease (Redis state).
pub use lease::EXIT_FENCED;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Cdr(#[from] CdrWriterError),
    #[error(transparent)]
    CdrDatabase(#[from] CdrDatabaseError),
    /// Stopped with CDRs that neither the database nor its spool took (they
    /// are in the CDR file).
    #[error(
        "stopped with {held} CDRs not in the database nor its spool {}: they are in the CDR file only",
        spool.display()
    )]
    CdrsNotInDatabase {
        spool: std::path::PathBuf,
        held: usize,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::registrar::store::StoreError),
    #[error("state store: {0}")]
    State(#[from] state_writer::StateOpenError),
    #[error("state store: {0}")]
    Shared(#[from] crate::state::shared::SharedError),
    #[error("cannot start the registrar thread: {0}")]
    RegistrarThread(std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsSetupError),
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
            DaemonError::CdrsNotWritten { .. }
            | DaemonError::CdrWriterLost(_)
            | DaemonError::CdrsNotInDatabase { .. } => EXIT_CDRS_NOT_WRITTEN,
            _ => 1,
        }
    }
}

/// Runs the switch until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    // With Redis, a node is a standby until it holds the lease: it binds
    // nothing and loads no call before then.
    let lease = match &config.state {
        Some(crate::config::StateConfig::Redis { url }) => {
            Some(wait_for_lease(url, &config.control_socket).await?)
        }
        _ => None,
    };
    let lease_keeper = lease.map(|l| tokio::spawn(lease::keep(l)));
    let transport = Arc::new(Transport::bind(
        &config.listen,
        StreamLimits::from_config(&config.limits),
    )?);
    if let Some(tls) = &config.tls {
        tls_setup(tls)?.apply(transport.connections());
    }
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
    let mut cdr_writer = CdrWriter::open(&config.cdr, metrics.clone())?;
    let mut cdr_database = CdrDatabase::open(&config.cdr, metrics.clone()).await?;
    let cdr_status = cdr_writer.status();
    let cdr_database_status = cdr_database.as_ref().map(CdrDatabase::status);
    let workers = config.workers().min(usize::from(REGISTRAR_WORKER));
    let store = open_state_store(
        &config,
        &mut cdr_writer,
        cdr_database.as_mut(),
        &metrics,
        workers,
    )
    .await?;
    let (cdr_tx, cdr_rx) = mpsc::unbounded_channel();
    let (cdr_reopen, cdr_reopens) = latest::channel(0u64);
    // With a database, records go through its spool first and on to the
    // file from there (see `cdr_database`).
    let (writer, database) = match cdr_database {
        Some(database) => {
            let (lines, line_queue) = mpsc::unbounded_channel();
            let database = tokio::spawn(database.run(cdr_rx, lines));
            let writer = tokio::spawn(cdr_writer.run(line_queue, cdr_reopens));
            (writer, Some(database))
        }
        None => (tokio::spawn(cdr_writer.run(cdr_rx, cdr_reopens)), None),
    };
    let StateStore {
        changes: state_changes,
        task: state_task,
        status: state_status,
        mut restored,
    } = store;

    let local_sockets = transport.local_sockets();
    let policy_loader = load_policies(&config, &metrics);
    let (registrar_input, registrar_task, registrar_shared) = start_registrar(
        &config,
        &local_sockets,
        &metrics,
        &transport,
        policy_loader.policies(&config).0.default_policy(),
    )
    .await?;
    let location_view = registrar_shared.as_ref().map(|(view, _)| view.clone());
    let budget = Arc::new(TxBudget::new(&config.limits));
    let (gateway_book, dns_events) =
        GatewayBook::start(config.clone(), transport.connections().clone());
    let gateways = gateway_book
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .table();
    let shared = Shared {
        metrics: metrics.clone(),
        registrar: registrar_shared,
        transport: transport.clone(),
        cdrs: cdr_tx,
        budget: budget.clone(),
        gateways: gateways.clone(),
        state: state_changes,
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
            restored.get_mut(id).map(std::mem::take).unwrap_or_default(),
        )));
    }
    // The CDR writer stops once the workers' senders are all gone.
    drop(shared);
    let dns_follower = tokio::spawn(follow_dns(
        gateway_book.clone(),
        dns_events,
        worker_inputs.clone(),
    ));

    let (ingress_config, ingress_configs) = latest::channel(config.clone());
    let (ingress_overload, ingress_overloads) =
        latest::channel(Arc::new(Overload::new(&config.limits, metrics.clone())));
    let inputs = Inputs {
        workers: worker_inputs.clone(),
        registrar: registrar_input.clone(),
        overloads: ingress_overloads,
    };
    let handoff = {
        let (transport, configs, metrics) =
            (transport.clone(), ingress_configs.clone(), metrics.clone());
        let inputs = inputs.clone();
        move || {
            Handoff::new(
                Ingress::with_metrics(workers, metrics.clone()),
                configs.clone(),
                inputs.clone(),
                transport.clone(),
            )
        }
    };
    let spawn: SpawnReceiver = {
        let handoff = handoff.clone();
        Arc::new(move |(local, socket)| tokio::spawn(receive_loop(socket, local, handoff())))
    };
    // Each TCP connection is read by a task of its own, listening until
    // the daemon stops.
    transport.connections().set_reader({
        let handoff = handoff.clone();
        Arc::new(move |flow| {
            tokio::spawn(stream_loop(flow, handoff()));
        })
    });
    {
        // A closed connection: its transactions fail at once on every
        // worker, and the contacts registered on it go. Best effort: a full
        // queue leaves a transaction to its timer, a contact to its expiry.
        let (registrar, workers) = (registrar_input.clone(), worker_inputs.clone());
        transport.connections().set_on_close(Arc::new(move |path| {
            for worker in &workers {
                let _ = worker.try_send(WorkerInput::FlowClosed(path));
            }
            if let Some(registrar) = &registrar {
                let _ = registrar.try_send(RegistrarInput::FlowClosed(path));
            }
        }));
    }
    let stream_acceptors: Vec<_> = transport
        .take_stream_listeners()
        .into_iter()
        .map(|(local, listener)| {
            tokio::spawn(transport.connections().clone().accept_loop(listener, local))
        })
        .collect();
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
            gateways: gateway_book.clone(),
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
        tokio::spawn(e.serve(
            metrics.clone(),
            location_view.clone(),
            budget.clone(),
            gateways.clone(),
            Some(transport.connections().clone()),
        ))
    });
    let operator = Operator {
        workers: worker_inputs.clone(),
        location: location_view,
        reloads: reload_requests.clone(),
        status: reload_status,
        transport: transport.clone(),
        budget,
        cdr: cdr_status,
        cdr_database: cdr_database_status,
        state: state_status,
        gateways,
    };
    let control = start_control(&config.control_socket, operator);

    wait_for_signal(&reload_requests).await?;
    reporter.abort();
    dns_follower.abort();
    for acceptor in stream_acceptors {
        acceptor.abort();
    }
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
    let in_database = match database {
        Some(task) => match tokio::time::timeout(CDR_FLUSH_TIME, task).await {
            Ok(Ok(shutdown)) => account_for_database(shutdown),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CDR database task failed");
                Err(DaemonError::CdrWriterLost("database task failed"))
            }
            Err(_) => {
                tracing::error!("CDR database task did not finish in time");
                Err(DaemonError::CdrWriterLost(
                    "database task did not finish in time",
                ))
            }
        },
        None => Ok(()),
    };
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
    if let Some(task) = state_task
        && tokio::time::timeout(STATE_FLUSH_TIME, task).await.is_err()
    {
        tracing::error!("the state store did not finish its last writes in time");
    }
    // Held to the end: a standby takes over once this node sends no more.
    if let Some(keeper) = lease_keeper {
        keeper.abort();
    }
    tracing::info!(summary = %metrics.refresh_summary(), "session refreshes");
    tracing::info!(summary = %metrics.keepalive_summary(), "NAT keep-alives");
    tracing::info!("stopped");
    cdrs.and(in_database)
}

/// Says where the CDRs the database has not got are: in its spool (the next
/// start inserts them), or, when the spool refused them too, in the CDR file
/// only.
fn account_for_database(shutdown: DbShutdown) -> Result<(), DaemonError> {
    if shutdown.spooled > 0 {
        tracing::warn!(
            spool = %shutdown.spool.display(),
            cdrs = shutdown.spooled,
            "CDRs stay in the spool: the next start inserts them into the database"
        );
    } else {
        tracing::info!(rows = shutdown.written, "CDRs in the database");
    }
    if shutdown.held > 0 {
        tracing::error!(
            cdrs = shutdown.held,
            "CDRs neither the database nor its spool took: they are in the CDR file only"
        );
        return Err(DaemonError::CdrsNotInDatabase {
            spool: shutdown.spool,
            held: shutdown.held,
        });
    }
    Ok(())
}

/// How long shutdown waits for the state store's last batch, after the CDR
/// writer (the calls ended by the drain are forgotten once billed).
const STATE_FLUSH_TIME: Duration = Duration::from_secs(2);

/// The state store as the daemon runs it (all empty without `state:`).
struct StateStore {
    /// Where workers send what changed.
    changes: Option<mpsc::UnboundedSender<crate::engine::StateChange>>,
    task: Option<tokio::task::JoinHandle<()>>,
    status: Option<latest::Receiver<state_writer::StateStatus>>,
    /// The calls each worker resumes, by worker.
    restored: Vec<Vec<crate::call::SavedCall>>,
}

/// Opens the state store (`state:`), sorts what it held against the CDR
/// file, hands the CDRs of calls that ended unbilled to the CDR database
/// sink if there is one, else to the CDR writer, and
/// starts the task that writes it. The calls to resume go to the workers
/// their dialogs' requests reach.
async fn open_state_store(
    config: &Config,
    cdr_writer: &mut CdrWriter,
    cdr_database: Option<&mut CdrDatabase>,
    metrics: &Arc<Metrics>,
    workers: usize,
) -> Result<StateStore, DaemonError> {
    let mut restored = vec![Vec::new(); workers];
    let Some(state) = &config.state else {
        return Ok(StateStore {
            changes: None,
            task: None,
            status: None,
            restored,
        });
    };
    let (task, recovery) = state_writer::open(state, &config.cdr, metrics.clone()).await?;
    for (id, why) in &recovery.damaged {
        tracing::error!(id, error = %why, "a call in the state store cannot be read: it is dropped, unbilled");
    }
    tracing::info!(
        store = ?state,
        resumed = recovery.resume.len(),
        billed_now = recovery.rebill.len(),
        already_billed = recovery.forget.len(),
        "state store ready"
    );
    let status = task.status();
    let Recovery { resume, rebill, .. } = recovery;
    // With a database, they go through its spool like any CDR (and on to
    // the file from there).
    match cdr_database {
        Some(database) => database.replay(rebill),
        None => cdr_writer.replay(rebill),
    }
    let (billed_tx, billed) = mpsc::unbounded_channel();
    cdr_writer.report_written(billed_tx);
    for call in resume {
        let worker = crate::ingress::worker_for(&call.a.dialog.call_id, workers);
        let b_worker = crate::ids::worker_of(&call.b.dialog.call_id);
        if b_worker.is_some_and(|b| b != worker) {
            tracing::warn!(
                call_id = %call.a.dialog.call_id,
                worker,
                b_worker = ?b_worker,
                "a resumed call's legs land on different workers (sip.workers changed?): its B leg's requests will not find it"
            );
        }
        restored[worker].push(call);
    }
    let (changes, rx) = mpsc::unbounded_channel();
    Ok(StateStore {
        changes: Some(changes),
        task: Some(tokio::spawn(task.run(rx, billed))),
        status: Some(status),
        restored,
    })
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
async fn start_registrar(
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
    // With Redis, the nodes share the location store there.
    let (store, stored, location) = match &config.state {
        Some(crate::config::StateConfig::Redis { url }) => {
            let mut redis = crate::state::shared::Redis::new(url)?;
            let stored = redis.load_contacts(SystemTime::now()).await?;
            (Contacts::Redis(redis), stored, url.clone())
        }
        _ => {
            let store = Store::open(&settings.db)?;
            let stored = store.load(SystemTime::now())?;
            (
                Contacts::File(store),
                stored,
                settings.db.display().to_string(),
            )
        }
    };
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
    let loaded = registrar.load(now, stored);
    tracing::info!(db = %location, contacts = loaded, users = config.users.len(), "registrar ready");
    let (tx, rx) = mpsc::channel(WORKER_QUEUE);
    let thread = RegistrarThread::spawn(registrar, store, rx, transport.clone())
        .map_err(DaemonError::RegistrarThread)?;
    Ok((Some(tx), Some(thread), Some((view, auth))))
}

/// Waits as a standby until this node holds the lease on `url`. Meanwhile
/// the control socket answers that it is a standby (`vigil ctl status`), so
/// an operator or a health check can tell a standby from a dead node; the
/// socket is handed to the active node's commands once the lease is taken.
async fn wait_for_lease(
    url: &str,
    control: &FsPath,
) -> Result<crate::state::shared::Lease, DaemonError> {
    let (reach_tx, reach) = latest::channel(None);
    let (commands_tx, commands) = mpsc::channel(8);
    let location = url.to_string();
    let serving = match ControlServer::bind(control, commands_tx) {
        Ok(server) => Some(tokio::spawn(async move {
            tokio::join!(
                server.run(),
                commands::serve_standby(location, reach, commands)
            );
        })),
        Err(e) => {
            tracing::error!(error = %e, "no control socket while a standby");
            None
        }
    };
    let lease = lease::acquire(url, &reach_tx).await;
    if let Some(task) = serving {
        // Dropping the server removes its socket file before the active
        // node's commands bind it again.
        task.abort();
        let _ = task.await;
    }
    Ok(lease?)
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

/// The TLS configs built from `tls:`: the server's (TLS listeners) and the
/// client's (trunks over TLS, checking or trusting their certificates).
pub(crate) struct TlsSetup {
    server: Arc<rustls::ServerConfig>,
    clients: crate::transport::connections::TlsClients,
}

impl TlsSetup {
    pub(crate) fn apply(self, connections: &crate::transport::connections::Connections) {
        connections.set_tls(self.server);
        connections.set_tls_client(self.clients);
    }
}

/// Reads the certificate, key and CA files `tls` names; a bad one stops a
/// start and refuses a reload.
pub(crate) fn tls_setup(
    tls: &crate::config::TlsConfig,
) -> Result<TlsSetup, crate::transport::tls::TlsSetupError> {
    use crate::transport::tls::{client_config, server_config};
    let verifying = client_config(tls, true)
        .inspect_err(
            |e| tracing::warn!(error = %e, "TLS trunks that verify their server cannot connect"),
        )
        .ok();
    Ok(TlsSetup {
        server: server_config(tls)?,
        clients: crate::transport::connections::TlsClients {
            verifying,
            trusting: client_config(tls, false)?,
        },
    })
}
