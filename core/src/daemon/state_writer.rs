//! The state task: the thin tokio shell around the state store.
//!
//! Workers send [`StateChange`]s over an unbounded channel (a worker never
//! waits on the store); the CDR writer sends the ids of the CDRs it wrote.
//! The task coalesces both in [`Pending`] and writes whatever accumulated in
//! one transaction on tokio's blocking pool, then takes what came meanwhile:
//! under load a batch grows while the previous one is written. A failed
//! batch is logged (at most once per [`ERROR_LOG_WINDOW`]), counted, shown
//! by `vigil ctl status`, and retried every [`RETRY`] with everything newer:
//! calls go on, and the store catches up when it works again.
//!
//! Changes are read before CDR ids (`biased`): a worker hands a call's end to
//! this task before its CDR to the writer, so the end is always known here
//! before the CDR that bills it.
//!
//! At start, [`open`] loads the store and sorts its rows ([`recover`]) against
//! the ids of the CDRs already in the CDR file.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::{CdrConfig, StateConfig};
use crate::engine::StateChange;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::state::pending::Batch;
use crate::state::shared::{Redis, SharedError};
use crate::state::{FileStore, Pending, Recovery, StateError, recover};

/// A failed batch is tried again after this long.
pub const RETRY: Duration = Duration::from_secs(1);
/// After the first error line, at most one more per this window.
pub const ERROR_LOG_WINDOW: Duration = Duration::from_secs(10);
/// How often the lag is published while nothing happens.
const TICK: Duration = Duration::from_millis(500);

/// What `vigil ctl status` shows of the state store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StateStatus {
    /// `file` (the embedded SQLite store) or `redis`.
    pub backend: &'static str,
    /// The file, or the Redis URL.
    pub location: String,
    /// `active`: this node holds the calls (with Redis: the lease; a
    /// standby waits for it before it even binds its addresses).
    pub role: &'static str,
    /// `ok`, or `failing` while batches are refused.
    pub state: &'static str,
    /// Calls with a row: established, or ended with their CDR not yet
    /// written.
    pub calls: u64,
    /// Changes not yet in the store.
    pub pending: u64,
    /// How long the oldest of them has waited.
    pub lag_ms: u64,
    /// Changes the store took since start.
    pub writes: u64,
    pub write_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateOpenError {
    #[error(transparent)]
    Store(#[from] StateError),
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error("cannot forget the calls already billed: {0}")]
    Forget(String),
    #[error("cannot read the CDR file to tell billed calls from live ones: {0}")]
    Cdr(std::io::Error),
}

/// Where the rows go.
enum Backend {
    /// The SQLite file (taken while a batch is written on the blocking pool).
    File(Option<FileStore>),
    Redis(Redis),
}

impl Backend {
    /// Writes `batch`; gives it back with the outcome.
    async fn apply(&mut self, batch: Batch) -> (Batch, Result<(), String>) {
        match self {
            Backend::Redis(redis) => {
                let result = redis.apply(&batch).await.map_err(|e| e.to_string());
                (batch, result)
            }
            Backend::File(slot) => {
                let Some(mut store) = slot.take() else {
                    return (batch, Err("the state file is gone".into()));
                };
                let written = tokio::task::spawn_blocking(move || {
                    let result = store.apply(&batch).map_err(|e| e.to_string());
                    (store, batch, result)
                })
                .await;
                match written {
                    Ok((store, batch, result)) => {
                        *slot = Some(store);
                        (batch, result)
                    }
                    // The I/O code panicked (a bug): the task fails the same way.
                    Err(e) => std::panic::resume_unwind(
                        e.try_into_panic()
                            .unwrap_or_else(|e| Box::new(format!("state I/O task cancelled: {e}"))),
                    ),
                }
            }
        }
    }
}

/// The state store, opened, with what it held at start sorted.
pub struct StateTask {
    store: Backend,
    pending: Pending,
    metrics: Arc<Metrics>,
    status: StateStatus,
    published: watch::Sender<StateStatus>,
    errors_log: RateLimit,
}

/// Opens the store, loads its rows and sorts them against the CDR file:
/// the task (with the rows of billed calls already deleted) and what to do
/// with the rest.
pub async fn open(
    config: &StateConfig,
    cdr: &CdrConfig,
    metrics: Arc<Metrics>,
) -> Result<(StateTask, Recovery), StateOpenError> {
    let (mut store, rows, backend, location) = match config {
        StateConfig::File { path } => {
            let store = FileStore::open(path)?;
            let rows = store.load()?;
            let location = path.display().to_string();
            (Backend::File(Some(store)), rows, "file", location)
        }
        StateConfig::Redis { url } => {
            let mut redis = Redis::new(url)?;
            let rows = redis.load().await?;
            (Backend::Redis(redis), rows, "redis", url.clone())
        }
    };
    let wanted: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let billed = crate::cdr::billed_ids(&cdr.path, &cdr.spill_path(), &wanted)
        .map_err(StateOpenError::Cdr)?;
    let recovery = recover(rows, &billed);
    let now = Instant::now();
    let mut pending = Pending::with_stored(recovery.forget.iter().cloned());
    for id in &recovery.forget {
        pending.cdr_written(now, id);
    }
    if let (_, Err(e)) = store.apply(pending.take()).await {
        return Err(StateOpenError::Forget(e));
    }
    let pending = Pending::with_stored(recovery.kept_ids());
    let status = StateStatus {
        backend,
        location,
        role: "active",
        state: "ok",
        calls: pending.stored() as u64,
        pending: 0,
        lag_ms: 0,
        writes: 0,
        write_errors: 0,
        last_error: None,
    };
    let (published, _) = watch::channel(status.clone());
    let task = StateTask {
        store,
        pending,
        metrics,
        status,
        published,
        errors_log: RateLimit::new(1, ERROR_LOG_WINDOW),
    };
    Ok((task, recovery))
}

impl StateTask {
    /// The store's state as `vigil ctl status` shows it, kept current.
    pub fn status(&self) -> watch::Receiver<StateStatus> {
        self.published.subscribe()
    }

    /// Writes changes until both the workers' and the CDR writer's senders
    /// are gone, then writes what is left (one last attempt).
    pub async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<StateChange>,
        mut billed: mpsc::UnboundedReceiver<Vec<String>>,
    ) {
        let (mut changes_open, mut billed_open) = (true, true);
        let mut retry_at: Option<Instant> = None;
        let mut batch = Vec::with_capacity(1024);
        while changes_open || billed_open {
            let wake = retry_at.unwrap_or_else(|| Instant::now() + TICK);
            tokio::select! {
                biased;
                received = changes.recv_many(&mut batch, 1024), if changes_open => {
                    if received == 0 {
                        changes_open = false;
                    }
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    for change in batch.drain(..) {
                        self.take_change(now, wall, change);
                    }
                }
                ids = billed.recv(), if billed_open => match ids {
                    Some(ids) => {
                        let now = Instant::now();
                        for id in &ids {
                            self.pending.cdr_written(now, id);
                        }
                    }
                    None => billed_open = false,
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            // What else came meanwhile joins this batch.
            while let Ok(change) = changes.try_recv() {
                self.take_change(Instant::now(), SystemTime::now(), change);
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                self.publish();
                continue;
            }
            retry_at = None;
            if !self.pending.is_empty() && !self.write().await {
                retry_at = Some(Instant::now() + RETRY);
            }
            self.publish();
        }
        if !self.pending.is_empty() && !self.write().await {
            tracing::error!(
                changes = self.pending.len(),
                "state store: the last changes could not be written; the next start resumes calls from older state"
            );
        }
        self.publish();
    }

    fn take_change(&mut self, now: Instant, wall: SystemTime, change: StateChange) {
        match change {
            StateChange::Save(call) => match serde_json::to_string(&call) {
                Ok(json) => self.pending.save(now, call.id.clone(), json),
                // A call is plain data: this is a bug, reported, not fatal.
                Err(e) => {
                    tracing::error!(id = %call.id, error = %e, "cannot serialise a call for the state store")
                }
            },
            StateChange::Ended(record) => {
                let line = record.to_json_line(now, wall);
                self.pending.end(now, record.id.to_string(), line);
            }
        }
    }

    /// Writes everything pending in one transaction; false if it failed
    /// (the batch is back in `pending`).
    async fn write(&mut self) -> bool {
        let batch = self.pending.take();
        let rows = batch.ops.len() as u64;
        let (batch, result) = self.store.apply(batch).await;
        match result {
            Ok(()) => {
                self.metrics.state_writes.fetch_add(rows, Ordering::Relaxed);
                self.status.writes += rows;
                if self.status.state != "ok" {
                    tracing::warn!(
                        store = %self.status.location,
                        "state store works again: it has caught up"
                    );
                }
                self.status.state = "ok";
                true
            }
            Err(e) => {
                Metrics::count(&self.metrics.state_write_failures);
                self.status.write_errors += 1;
                self.status.state = "failing";
                self.status.last_error = Some(e.clone());
                if let Some(suppressed) = self.errors_log.allow(Instant::now()) {
                    tracing::error!(
                        error = %e,
                        changes = rows,
                        suppressed,
                        "state store write failed: calls go on, their state is retried every second (a restart now would resume them from older state)"
                    );
                }
                self.pending.put_back(batch);
                false
            }
        }
    }

    fn publish(&mut self) {
        let lag = self.pending.lag(Instant::now()).as_millis() as u64;
        self.metrics.state_lag_ms.store(lag, Ordering::Relaxed);
        self.status.lag_ms = lag;
        self.status.pending = self.pending.len() as u64;
        self.status.calls = self.pending.stored() as u64;
        let status = &self.status;
        self.published.send_if_modified(|shown| {
            let changed = shown != status;
            if changed {
                shown.clone_from(status);
            }
            changed
        });
    }
}
