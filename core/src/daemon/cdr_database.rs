//! The CDR database task: the thin tokio shell around [`DbQueue`], with
//! `tokio-postgres` for the database and tokio's blocking pool for the spool.
//!
//! Workers send finished calls' records here (never waiting: the channel is
//! unbounded); each is turned into its CDR line on arrival, appended to the
//! spool and fsynced, passed on to the CDR file writer, and inserted in
//! batches (one statement per batch, rows built by the server from the very
//! lines the CDR file gets). The spool and the database work at once, one
//! operation each; a failure is logged (at once, then at most once per
//! [`ERROR_LOG_WINDOW`]), counted, shown by `vigil ctl status`, and retried
//! every second, for as long as the process runs.
//!
//! The connection is made on the first insert and again after any error
//! that closed it; an insert without an answer within [`INSERT_TIMEOUT`]
//! drops the connection (the batch is sent again: its rows, if they did
//! commit, are skipped by their key).
//!
//! At start, [`check_database`] tells a database that refuses Vigil (wrong
//! credentials, no such database, no table or an older schema: the daemon
//! does not start) from one that is only down (the daemon starts, and CDRs
//! wait in the spool). `vigil check` and `vigil cdr init-db` use the same
//! functions.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Connection, NoTls, Socket, Statement};

use super::cdr_writer::{ERROR_LOG_WINDOW, FINAL_FLUSH};
use crate::cdr::CdrRecord;
use crate::cdr::database::queue::{Action, DbQueue, Event, InsertError, Op, Outcome};
use crate::cdr::database::schema;
use crate::cdr::database::spool::{Spool, SpoolError};
use crate::config::{CdrConfig, PostgresSink};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a batch insert may take before the connection is given up.
pub const INSERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Records taken off the channel at a time.
const RECEIVE_BATCH: usize = 1024;

/// Why the database cannot take CDRs.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    /// Down or out of reach: CDRs can wait in the spool.
    #[error("cannot reach the CDR database {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// It answers, and says no: wrong credentials, no such database, no right.
    #[error("the CDR database {url} refuses Vigil: {reason}")]
    Refused { url: String, reason: String },
    #[error(
        "the CDR database {url} has no table {table} (or no {}): create it with `vigil cdr init-db --config FILE`",
        schema::VERSIONS_TABLE
    )]
    NoTable { url: String, table: String },
    #[error(
        "the CDR table {table} in {url} is at schema version {found}, this Vigil writes version {wanted}: {advice}"
    )]
    Version {
        url: String,
        table: String,
        found: i32,
        wanted: i32,
        advice: &'static str,
    },
    #[error("the CDR database {url}: {reason}")]
    Other { url: String, reason: String },
}

impl DbSetupError {
    /// True when the daemon may start anyway (CDRs wait in the spool).
    pub fn is_transient(&self) -> bool {
        matches!(self, DbSetupError::Unreachable { .. })
    }

    fn from_postgres(sink: &PostgresSink, e: &tokio_postgres::Error) -> DbSetupError {
        let url = sink.shown_url();
        let reason = describe(e);
        match e.as_db_error().map(|d| d.code().clone()) {
            Some(code)
                if code == SqlState::INVALID_PASSWORD
                    || code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || code == SqlState::INVALID_CATALOG_NAME
                    || code == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                DbSetupError::Refused { url, reason }
            }
            Some(code) if code == SqlState::UNDEFINED_TABLE => DbSetupError::NoTable {
                url,
                table: sink.table.clone(),
            },
            Some(_) => DbSetupError::Other { url, reason },
            None => DbSetupError::Unreachable { url, reason },
        }
    }
}

/// An error's message with its cause (tokio-postgres keeps the server's
/// words in the source).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// A connection with the batch insert prepared on it.
struct Conn {
    client: Client,
    insert: Statement,
}

/// Connects (within [`CONNECT_TIMEOUT`]), over TLS with `sslmode=require`
/// (the server's certificate checked against the host's trust store); the
/// connection is driven by a task of its own until the client is dropped.
async fn connect(sink: &PostgresSink) -> Result<Client, DbSetupError> {
    let mut config: tokio_postgres::Config = sink.url.parse().map_err(|e| DbSetupError::Other {
        url: sink.shown_url(),
        reason: describe(&e),
    })?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("vigil");
    if config.get_ssl_mode() == SslMode::Require {
        let tls =
            crate::transport::tls::system_client_config().map_err(|e| DbSetupError::Other {
                url: sink.shown_url(),
                reason: format!("sslmode=require: {e}"),
            })?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        spawn_connection(sink, timeout(CONNECT_TIMEOUT, config.connect(tls)).await)
    } else {
        spawn_connection(sink, timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await)
    }
}

/// A connection attempt within [`CONNECT_TIMEOUT`], over a stream `T`.
type Attempt<T> = Result<
    Result<(Client, Connection<Socket, T>), tokio_postgres::Error>,
    tokio::time::error::Elapsed,
>;

/// The client of a connection attempt, its connection driven by a task.
fn spawn_connection<T>(sink: &PostgresSink, attempt: Attempt<T>) -> Result<Client, DbSetupError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = match attempt {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(DbSetupError::from_postgres(sink, &e)),
        Err(_) => {
            return Err(DbSetupError::Unreachable {
                url: sink.shown_url(),
                reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
            });
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "CDR database connection ended");
        }
    });
    Ok(client)
}

async fn connect_for_inserts(sink: &PostgresSink) -> Result<Conn, String> {
    let client = connect(sink).await.map_err(|e| e.to_string())?;
    let insert = client
        .prepare(&schema::insert(&sink.table))
        .await
        .map_err(|e| DbSetupError::from_postgres(sink, &e).to_string())?;
    Ok(Conn { client, insert })
}

/// Whether Vigil can write CDRs to the database: it answers, lets Vigil in,
/// and has the table at the schema version this Vigil writes.
pub async fn check_database(sink: &PostgresSink) -> Result<(), DbSetupError> {
    let client = connect(sink).await?;
    let version = client
        .query_opt(&schema::version_query(), &[&sink.table])
        .await
        .map_err(|e| DbSetupError::from_postgres(sink, &e))?;
    let no_table = || DbSetupError::NoTable {
        url: sink.shown_url(),
        table: sink.table.clone(),
    };
    let found: i32 = version.ok_or_else(no_table)?.get(0);
    let wanted = schema::VERSION;
    if found != wanted {
        return Err(DbSetupError::Version {
            url: sink.shown_url(),
            table: sink.table.clone(),
            found,
            wanted,
            advice: if found < wanted {
                "migrate it with `vigil cdr init-db --config FILE`"
            } else {
                "a newer Vigil migrated it: run that one"
            },
        });
    }
    // The table itself, not only its record in the versions table.
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&sink.table])
        .await
        .map_err(|e| DbSetupError::from_postgres(sink, &e))?;
    if !exists.get::<_, bool>(0) {
        return Err(no_table());
    }
    Ok(())
}

/// `vigil cdr init-db`: creates the table or migrates it to this Vigil's
/// version, in one transaction (concurrent runs wait for each other).
/// Returns the versions applied (none: it was up to date).
pub async fn init_database(sink: &PostgresSink) -> Result<Vec<i32>, DbSetupError> {
    let mut client = connect(sink).await?;
    let fail = |e: tokio_postgres::Error| DbSetupError::from_postgres(sink, &e);
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('vigil_schema'))",
        &[],
    )
    .await
    .map_err(fail)?;
    tx.batch_execute(&schema::versions_table())
        .await
        .map_err(fail)?;
    let current: i32 = tx
        .query_opt(&schema::version_query(), &[&sink.table])
        .await
        .map_err(fail)?
        .map_or(0, |row| row.get(0));
    let mut applied = Vec::new();
    for (version, sql) in schema::migrations(&sink.table) {
        if version > current {
            tx.batch_execute(&sql).await.map_err(fail)?;
            tx.batch_execute(&schema::record_version(&sink.table, version))
                .await
                .map_err(fail)?;
            applied.push(version);
        }
    }
    tx.commit().await.map_err(fail)?;
    Ok(applied)
}

/// What `vigil ctl status` shows of the database sink.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdrDbStatus {
    /// The URL without its password.
    pub url: String,
    pub table: String,
    pub spool: PathBuf,
    /// `ok`, or `failing` while an insert or the spool fails.
    pub state: &'static str,
    /// What is failing: `database`, `spool write` (a full disk: CDRs are
    /// held in memory), `spool read`.
    pub failing: Vec<&'static str>,
    /// Rows committed since start.
    pub written: u64,
    /// CDRs in the spool not yet committed.
    pub spooled: u64,
    pub spool_bytes: u64,
    /// CDRs in memory only (the spool refuses them and the database has not
    /// taken them yet).
    pub pending: u64,
    pub db_errors: u64,
    pub spool_errors: u64,
    /// CDRs the database refused for their content, set aside in the
    /// spool's `rejected.cdrs`.
    pub rejected: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// What the task could not do when it stopped.
#[derive(Debug)]
pub struct DbShutdown {
    pub spool: PathBuf,
    pub written: u64,
    /// CDRs left in the spool (the next start inserts them).
    pub spooled: u64,
    /// CDRs in neither (the spool refused them, the database too): they are
    /// in the CDR file only.
    pub held: usize,
}

/// The database task, with its spool opened.
pub struct CdrDatabase {
    sink: Arc<PostgresSink>,
    queue: DbQueue,
    /// `None` while an operation has it on the blocking pool.
    spool: Option<Spool>,
    spool_dir: PathBuf,
    conn: Option<Conn>,
    metrics: Arc<Metrics>,
    errors_log: RateLimit,
    status: CdrDbStatus,
    published: watch::Sender<CdrDbStatus>,
    /// When `status.spool_bytes` was last measured.
    bytes_checked: Instant,
    /// Lines made before the sink runs, taken first (see [`Self::replay`]).
    replayed: Vec<String>,
}

type SpoolTask = JoinHandle<(Spool, Outcome)>;
type InsertTask = JoinHandle<(Option<Conn>, Outcome)>;

impl CdrDatabase {
    /// Checks the database (see [`check_database`]: a transient failure only
    /// warns) and opens the spool, counting what an earlier run left.
    pub async fn open(
        config: &CdrConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<CdrDatabase>, CdrDatabaseError> {
        let (Some(sink), Some(spool_dir)) = (&config.postgres, config.db_spool_dir()) else {
            return Ok(None);
        };
        match check_database(sink).await {
            Ok(()) => {}
            Err(e) if e.is_transient() => tracing::warn!(
                error = %e,
                spool = %spool_dir.display(),
                "CDR database down at start: CDRs wait in the spool until it is back"
            ),
            Err(e) => return Err(e.into()),
        }
        let (spool, found) = Spool::open(&spool_dir)?;
        if found.lines > 0 {
            tracing::warn!(
                spool = %spool_dir.display(),
                records = found.lines,
                "the CDR spool holds records from an earlier run: they are inserted first (rows already in are skipped)"
            );
        }
        let queue = DbQueue::new(config.max_pending, found);
        let status = CdrDbStatus {
            url: sink.shown_url(),
            table: sink.table.clone(),
            spool: spool_dir.clone(),
            state: "ok",
            failing: Vec::new(),
            written: 0,
            spooled: found.lines,
            spool_bytes: spool.bytes(),
            pending: 0,
            db_errors: 0,
            spool_errors: 0,
            rejected: 0,
            last_error: None,
            last_error_at: None,
        };
        let (published, _) = watch::channel(status.clone());
        Ok(Some(CdrDatabase {
            sink: Arc::new(sink.clone()),
            queue,
            spool: Some(spool),
            spool_dir,
            conn: None,
            metrics,
            errors_log: RateLimit::new(1, ERROR_LOG_WINDOW),
            status,
            published,
            bytes_checked: Instant::now(),
            replayed: Vec::new(),
        }))
    }

    /// Lines made before the sink runs (the CDRs of calls that ended
    /// before a crash without being billed, which the state store kept):
    /// spooled, inserted and passed on to the file before new ones, like
    /// any record.
    pub fn replay(&mut self, lines: Vec<String>) {
        self.replayed.extend(lines);
    }

    /// The sink's state as `vigil ctl status` shows it, kept current.
    pub fn status(&self) -> watch::Receiver<CdrDbStatus> {
        self.published.subscribe()
    }

    /// Takes records until every sender is gone, passing each line on to
    /// `file` once the spool has it; then one last attempt within
    /// [`FINAL_FLUSH`], and every line not passed on yet is.
    pub async fn run(
        mut self,
        mut records: mpsc::UnboundedReceiver<CdrRecord>,
        file: mpsc::UnboundedSender<String>,
    ) -> DbShutdown {
        let mut given: VecDeque<String> = VecDeque::new();
        let mut batch = Vec::with_capacity(RECEIVE_BATCH);
        let mut spool_task: Option<SpoolTask> = None;
        let mut insert_task: Option<InsertTask> = None;
        let mut closing_at: Option<Instant> = None;
        let replayed = std::mem::take(&mut self.replayed);
        given.extend(replayed.iter().cloned());
        self.queue.handle_records(replayed);
        loop {
            self.start_actions(&mut spool_task, &mut insert_task);
            self.settle(&mut given, &file);
            let idle = spool_task.is_none() && insert_task.is_none();
            if closing_at.is_some() && idle {
                break;
            }
            let wake = match closing_at {
                // Past the last attempt's time, an insert still in flight is
                // given up (the spool keeps its rows).
                Some(at) => at + FINAL_FLUSH,
                None => self
                    .queue
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
            };
            tokio::select! {
                received = records.recv_many(&mut batch, RECEIVE_BATCH), if closing_at.is_none() => {
                    let now = Instant::now();
                    if received == 0 {
                        closing_at = Some(now);
                        self.queue.handle_close(now + FINAL_FLUSH);
                        continue;
                    }
                    let wall = SystemTime::now();
                    let lines: Vec<String> =
                        batch.drain(..).map(|r| r.to_json_line(now, wall)).collect();
                    given.extend(lines.iter().cloned());
                    self.queue.handle_records(lines);
                }
                done = join(&mut spool_task) => {
                    spool_task = None;
                    match done {
                        Ok((spool, outcome)) => {
                            self.spool = Some(spool);
                            self.queue.handle_outcome(Instant::now(), outcome);
                        }
                        Err(e) => {
                            // The spool I/O panicked (a bug): the task fails
                            // the same way, and the daemon reports it.
                            std::panic::resume_unwind(e.try_into_panic().unwrap_or_else(|e| {
                                Box::new(format!("CDR spool task cancelled: {e}"))
                            }))
                        }
                    }
                }
                done = join(&mut insert_task) => {
                    insert_task = None;
                    let outcome = match done {
                        Ok((conn, outcome)) => {
                            self.conn = conn;
                            outcome
                        }
                        Err(e) => Outcome::Inserted(Err(InsertError::transient(format!(
                            "insert task failed: {e}"
                        )))),
                    };
                    self.queue.handle_outcome(Instant::now(), outcome);
                }
                () = sleep_until(wake.into()) => {
                    if closing_at.is_some() {
                        if let Some(task) = insert_task.take() {
                            task.abort();
                            let _ = task.await;
                        }
                        if let Some(task) = spool_task.take()
                            && let Ok((spool, _)) = task.await
                        {
                            self.spool = Some(spool);
                        }
                        break;
                    }
                }
            }
        }
        // Whatever was not passed on yet goes to the CDR file now.
        for line in given.drain(..) {
            let _ = file.send(line);
        }
        self.publish();
        let written = self.queue.written();
        let remaining = self.queue.into_remaining();
        DbShutdown {
            spool: self.spool_dir,
            written,
            spooled: remaining.spooled,
            held: remaining.held.len(),
        }
    }

    /// Starts what the queue asks for, one operation per lane.
    fn start_actions(
        &mut self,
        spool_task: &mut Option<SpoolTask>,
        insert_task: &mut Option<InsertTask>,
    ) {
        while let Some(action) = self.queue.poll_action(Instant::now()) {
            match action {
                Action::Insert { json, .. } => {
                    let conn = self.conn.take();
                    let sink = self.sink.clone();
                    let metrics = self.metrics.clone();
                    *insert_task = Some(tokio::spawn(async move {
                        let started = Instant::now();
                        let (conn, result) = insert(conn, &sink, json).await;
                        metrics.cdr_db_batch.record(started.elapsed());
                        (conn, Outcome::Inserted(result))
                    }));
                }
                action => {
                    let Some(mut spool) = self.spool.take() else {
                        debug_assert!(false, "two spool operations at once");
                        return;
                    };
                    *spool_task = Some(tokio::task::spawn_blocking(move || {
                        let outcome = spool.perform(action);
                        (spool, outcome)
                    }));
                }
            }
        }
    }

    /// After any change: lines on to the CDR file, events logged and
    /// counted, the status published.
    fn settle(&mut self, given: &mut VecDeque<String>, file: &mpsc::UnboundedSender<String>) {
        let released = self.queue.poll_released().min(given.len());
        for line in given.drain(..released) {
            let _ = file.send(line);
        }
        while let Some(event) = self.queue.poll_event() {
            self.report(event);
        }
        self.publish();
    }

    fn report(&mut self, event: Event) {
        let spool = self.spool_dir.display();
        let (pending, spooled) = (self.queue.pending(), self.queue.spooled());
        match event {
            Event::Failed { op, error } => {
                if op == Op::Database {
                    Metrics::count(&self.metrics.cdr_db_errors);
                    self.status.db_errors += 1;
                } else {
                    Metrics::count(&self.metrics.cdr_spool_errors);
                    self.status.spool_errors += 1;
                }
                self.status.last_error = Some(format!("{}: {error}", op.as_str()));
                self.status.last_error_at =
                    Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
                if let Some(suppressed) = self.errors_log.allow(Instant::now()) {
                    let what = match op {
                        Op::Database => {
                            "CDRs cannot be inserted into the database: they wait in the spool (none is dropped) and are retried every second"
                        }
                        Op::SpoolWrite => {
                            "the CDR spool cannot be written (disk full?): CDRs are held in memory and go straight to the database while it takes them"
                        }
                        Op::SpoolRead => {
                            "the CDR spool cannot be read or trimmed: retried every second"
                        }
                    };
                    tracing::error!(%error, which = op.as_str(), %spool, pending, spooled, suppressed, "{what}");
                }
            }
            Event::Recovered { op, after } => tracing::warn!(
                which = op.as_str(),
                failing_for_s = after.as_secs_f64(),
                pending,
                spooled,
                "CDR database sink works again: the spool follows in order"
            ),
            Event::Committed { rows, .. } => {
                self.metrics
                    .cdr_db_written
                    .fetch_add(rows as u64, Ordering::Relaxed);
            }
            Event::Rejected { line } => {
                Metrics::count(&self.metrics.cdr_db_rejected);
                self.status.rejected += 1;
                tracing::error!(
                    %spool,
                    cdr = %line,
                    "the database refuses this CDR for its content: set aside in rejected.cdrs in the spool, the CDRs behind it go on"
                );
            }
            Event::SpoolDrained => {
                tracing::info!(%spool, "the CDR spool is replayed into the database")
            }
        }
    }

    fn publish(&mut self) {
        let spooled = self.queue.spooled();
        self.metrics
            .cdr_spool_depth
            .store(spooled, Ordering::Relaxed);
        let failing: Vec<&'static str> = self.queue.failing().iter().map(|o| o.as_str()).collect();
        self.status.state = if failing.is_empty() { "ok" } else { "failing" };
        self.status.failing = failing;
        self.status.written = self.queue.written();
        self.status.spooled = spooled;
        self.status.pending = self.queue.pending() as u64;
        // Its size takes a stat per segment: once a second is enough.
        if let Some(spool) = &self.spool
            && self.bytes_checked.elapsed() >= Duration::from_secs(1)
        {
            self.status.spool_bytes = spool.bytes();
            self.bytes_checked = Instant::now();
        }
        self.published.send_if_modified(|shown| {
            let changed = *shown != self.status;
            if changed {
                shown.clone_from(&self.status);
            }
            changed
        });
    }
}

/// One batch insert, connecting first when there is no live connection.
async fn insert(
    conn: Option<Conn>,
    sink: &PostgresSink,
    json: String,
) -> (Option<Conn>, Result<u64, InsertError>) {
    let conn = match conn {
        Some(conn) if !conn.client.is_closed() => conn,
        _ => match connect_for_inserts(sink).await {
            Ok(conn) => conn,
            Err(e) => return (None, Err(InsertError::transient(e))),
        },
    };
    match timeout(INSERT_TIMEOUT, conn.client.execute(&conn.insert, &[&json])).await {
        Ok(Ok(new)) => (Some(conn), Ok(new)),
        Ok(Err(e)) => {
            // SQLSTATE classes 22 (data exception) and 23 (integrity
            // constraint violation): the rows, not the database.
            let refused = e
                .as_db_error()
                .is_some_and(|d| matches!(d.code().code().get(..2), Some("22" | "23")));
            let keep = !conn.client.is_closed();
            let error = InsertError {
                message: describe(&e),
                refused,
            };
            (keep.then_some(conn), Err(error))
        }
        Err(_) => (
            None,
            Err(InsertError::transient(format!(
                "no answer within {INSERT_TIMEOUT:?}: the connection is dropped and the batch sent again"
            ))),
        ),
    }
}

/// A task's result, or never when there is none.
async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CdrDatabaseError {
    #[error(transparent)]
    Setup(#[from] DbSetupError),
    #[error("{0}")]
    Spool(#[from] SpoolError),
}
