//! The CDR writer task: the thin tokio shell around [`Delivery`].
//!
//! Every worker sends finished calls' records over one unbounded channel, so a
//! worker never waits on the disk. The task turns each record into its JSON
//! line the moment it arrives (wall-clock times are taken then, not when a
//! full disk finally takes the line), hands the lines to [`Delivery`], and
//! performs what it asks on tokio's blocking pool ([`CdrFiles`]), one round
//! at a time, sleeping until the next retry or identity check in between.
//! Each round is written in batches and not fsynced: a call's CDR is in the
//! OS's hands when its round ends; the file is fsynced on shutdown.
//!
//! A failed write is logged at once and then at most once per
//! [`ERROR_LOG_WINDOW`], counted (`vigil_cdr_write_errors_total`), shown by
//! `vigil ctl status` and retried every second; the writer never gives up
//! while the process runs. Each change on the reload channel reopens the file
//! by its path (log rotation: move it away, then reload), as does finding the
//! path deleted or naming another file.
//!
//! When every sender is gone (shutdown), the writer makes a last attempt
//! within [`FINAL_FLUSH`], fsyncs, and returns a [`CdrShutdown`] saying what
//! could not be written: the records held in memory (the daemon prints them
//! on stderr) and those left in the spill file (the next start replays them).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::cdr::CdrRecord;
use crate::cdr::delivery::{CdrIoError, Delivery, Event, Reopen, Target};
use crate::cdr::files::CdrFiles;
use crate::config::CdrConfig;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;

/// After the first error line, at most one more per this window (each says
/// how many were suppressed).
pub const ERROR_LOG_WINDOW: Duration = Duration::from_secs(10);
/// How long the last attempt at shutdown may go on (a spill being replayed
/// into the CDR file, say); what is left then stays in the spill or goes to
/// stderr. Within the 5 s a service manager gives, after the calls' drain.
pub const FINAL_FLUSH: Duration = Duration::from_millis(1500);
/// Records taken off the channel at a time.
const RECEIVE_BATCH: usize = 1024;
/// Actions per round on the blocking pool (up to ~64k records written): a
/// long backlog, such as a big spill being replayed, goes in rounds, so the
/// status, the metrics and reloads are served in between.
const ROUND_ACTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CdrWriterError {
    #[error("{0}")]
    Open(#[from] CdrIoError),
}

/// What `vigil ctl status` shows of the CDR writer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdrStatus {
    pub path: PathBuf,
    /// Where records wait when memory is full (`cdr.max_pending`).
    pub spill_path: PathBuf,
    /// `ok`, or `failing` while a write, spill or reopen fails.
    pub state: &'static str,
    /// Records written to the CDR file since start.
    pub written: u64,
    /// Records held in memory, in no file.
    pub pending: u64,
    /// Records in the spill file, not yet in the CDR file.
    pub spilled: u64,
    /// Failed attempts to write, spill, replay or reopen since start.
    pub write_errors: u64,
    pub last_error: Option<String>,
    /// When `last_error` happened (RFC 3339, UTC).
    pub last_error_at: Option<String>,
}

/// What the writer could not write when it stopped.
#[derive(Debug)]
pub struct CdrShutdown {
    pub path: PathBuf,
    pub spill_path: PathBuf,
    /// Records written to the CDR file since start.
    pub written: u64,
    /// Records held in memory only, oldest first, as JSON lines.
    pub held: Vec<String>,
    /// Records left in the spill file (replayed at the next start).
    pub spilled: u64,
    /// The final fsync failed: what was written may not be on disk.
    pub sync_error: Option<String>,
}

impl CdrShutdown {
    /// Every record is in the CDR file, on disk.
    pub fn is_complete(&self) -> bool {
        self.held.is_empty() && self.spilled == 0 && self.sync_error.is_none()
    }
}

/// What the writer is given: a finished call's record, turned into its line
/// on arrival, or a line made already (by the database sink, which passes
/// each line on once the spool has it).
pub trait CdrInput: Send + 'static {
    fn into_line(self, now: Instant, wall: SystemTime) -> String;
}

impl CdrInput for CdrRecord {
    fn into_line(self, now: Instant, wall: SystemTime) -> String {
        self.to_json_line(now, wall)
    }
}

impl CdrInput for String {
    fn into_line(self, _: Instant, _: SystemTime) -> String {
        self
    }
}

/// The CDR writer, opened and ready to run.
pub struct CdrWriter {
    core: Box<Core>,
}

/// What one round of I/O needs; moved to the blocking pool and back.
struct Core {
    delivery: Delivery,
    files: CdrFiles,
    metrics: Arc<Metrics>,
    errors_log: RateLimit,
    status: CdrStatus,
    published: watch::Sender<CdrStatus>,
    /// The last round stopped at [`ROUND_ACTIONS`] with work left.
    more: bool,
    /// Where the ids of written records go (the state store's task).
    written_to: Option<mpsc::UnboundedSender<Vec<String>>>,
}

impl CdrWriter {
    /// Opens (creating if needed) the CDR file for appending, and the spill
    /// file an earlier run left, which is then written before new records.
    pub fn open(config: &CdrConfig, metrics: Arc<Metrics>) -> Result<CdrWriter, CdrWriterError> {
        let spill_path = config.spill_path();
        let (files, found) = CdrFiles::open(&config.path, &spill_path)?;
        if let Some(found) = &found {
            tracing::warn!(
                spill = %spill_path.display(),
                file = %config.path.display(),
                records = found.lines,
                damaged_lines = found.damaged,
                "a spill file left by an earlier run: its CDRs are written to the CDR file before new ones, then it is removed"
            );
        }
        let now = Instant::now();
        let delivery = Delivery::new(now, config.max_pending, found.map(|f| f.lines));
        let status = CdrStatus {
            path: config.path.clone(),
            spill_path,
            state: "ok",
            written: 0,
            pending: 0,
            spilled: delivery.spilled(),
            write_errors: 0,
            last_error: None,
            last_error_at: None,
        };
        let (published, _) = watch::channel(status.clone());
        let mut core = Box::new(Core {
            delivery,
            files,
            metrics,
            errors_log: RateLimit::new(1, ERROR_LOG_WINDOW),
            status,
            published,
            more: false,
            written_to: None,
        });
        core.publish();
        Ok(CdrWriter { core })
    }

    /// Sends the ids of the records written, after each round, to `to`
    /// (the state store forgets a call once its CDR is durable).
    pub fn report_written(&mut self, to: mpsc::UnboundedSender<Vec<String>>) {
        self.core.delivery.track_written_ids();
        self.core.written_to = Some(to);
    }

    /// Records made before the writer runs (the CDRs of calls that ended
    /// before a crash without reaching the file), written before new ones.
    pub fn replay(&mut self, lines: Vec<String>) {
        self.core.delivery.handle_records(Instant::now(), lines);
    }

    /// The writer's state as `vigil ctl status` shows it, kept current.
    pub fn status(&self) -> watch::Receiver<CdrStatus> {
        self.core.published.subscribe()
    }

    /// Writes records until every sender is gone, then makes a last attempt,
    /// syncs and says what is left. Each change on `reopen` (every reload,
    /// applied or refused) reopens the file by its path.
    pub async fn run<T: CdrInput>(
        self,
        mut records: mpsc::UnboundedReceiver<T>,
        mut reopen: watch::Receiver<u64>,
    ) -> CdrShutdown {
        let mut core = round(self.core).await;
        let mut batch = Vec::with_capacity(RECEIVE_BATCH);
        let mut reopen_open = true;
        loop {
            let wake = if core.more {
                Instant::now()
            } else {
                core.delivery
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
            };
            tokio::select! {
                received = records.recv_many(&mut batch, RECEIVE_BATCH) => {
                    let now = Instant::now();
                    if received == 0 {
                        core.delivery.handle_close(now, now + FINAL_FLUSH);
                        break;
                    }
                    let wall = SystemTime::now();
                    let lines = batch.drain(..).map(|r| r.into_line(now, wall));
                    core.delivery.handle_records(now, lines);
                }
                changed = reopen.changed(), if reopen_open => match changed {
                    Ok(()) => core.delivery.handle_reload(Instant::now()),
                    Err(_) => reopen_open = false,
                },
                () = sleep_until(wake.into()) => {}
            }
            core = round(core).await;
        }
        loop {
            core = round(core).await;
            if !core.more {
                break;
            }
        }
        blocking(core, |core| core.finish()).await
    }
}

/// Performs every action due now, on the blocking pool.
async fn round(core: Box<Core>) -> Box<Core> {
    blocking(core, |mut core| {
        core.round();
        core
    })
    .await
}

async fn blocking<T: Send + 'static>(
    core: Box<Core>,
    work: impl FnOnce(Box<Core>) -> T + Send + 'static,
) -> T {
    match tokio::task::spawn_blocking(move || work(core)).await {
        Ok(done) => done,
        // The I/O code panicked (a bug): the writer task fails the same way,
        // and the daemon reports it.
        Err(e) => std::panic::resume_unwind(
            e.try_into_panic()
                .unwrap_or_else(|e| Box::new(format!("CDR I/O task cancelled: {e}"))),
        ),
    }
}

impl Core {
    fn round(&mut self) {
        self.more = false;
        let mut done = 0;
        while let Some(action) = self.delivery.poll_action(Instant::now()) {
            let outcome = self.files.perform(action);
            self.delivery.handle_outcome(Instant::now(), outcome);
            done += 1;
            if done == ROUND_ACTIONS {
                self.more = true;
                break;
            }
        }
        while let Some(event) = self.delivery.poll_event() {
            self.report(event);
        }
        if let Some(to) = &self.written_to {
            let ids = self.delivery.take_written_ids();
            if !ids.is_empty() {
                // The state task outlives the writer; gone, it needs none.
                let _ = to.send(ids);
            }
        }
        self.publish();
    }

    fn report(&mut self, event: Event) {
        let file = self.files.path().display();
        let spill = self.files.spill_path().display();
        let (pending, spilled) = (self.delivery.pending(), self.delivery.spilled());
        match event {
            Event::Failed { target, error } => {
                Metrics::count(&self.metrics.cdr_write_errors);
                self.status.write_errors += 1;
                self.status.last_error = Some(error.to_string());
                self.status.last_error_at =
                    Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
                if let Some(suppressed) = self.errors_log.allow(Instant::now()) {
                    tracing::error!(
                        %error,
                        which = which(target),
                        pending,
                        spilled,
                        suppressed,
                        "CDRs cannot be written: they are held (none is dropped) and retried every second"
                    );
                }
            }
            Event::Recovered { target, after } => tracing::warn!(
                which = which(target),
                %file,
                %spill,
                failing_for_s = after.as_secs_f64(),
                pending,
                spilled,
                "CDR writing works again: held CDRs follow in order"
            ),
            Event::SpillStarted => tracing::warn!(
                %spill,
                pending,
                "cdr.max_pending CDRs are held in memory: later ones go to the spill file until it is replayed"
            ),
            Event::SpillDrained { lines } => tracing::info!(
                %spill,
                %file,
                records = lines,
                "spill file replayed into the CDR file and removed"
            ),
            Event::Reopened(Reopen::Reload) => tracing::info!(%file, "CDR file reopened"),
            Event::Reopened(why) => tracing::warn!(
                %file,
                reason = why.as_str(),
                "CDR file reopened by its path: later CDRs go to the file there now"
            ),
        }
    }

    fn publish(&mut self) {
        let (pending, spilled) = (self.delivery.pending() as u64, self.delivery.spilled());
        self.metrics
            .cdrs_pending
            .store(pending + spilled, Ordering::Relaxed);
        self.status.state = if self.delivery.is_failing() {
            "failing"
        } else {
            "ok"
        };
        self.status.written = self.delivery.written();
        self.status.pending = pending;
        self.status.spilled = spilled;
        self.published.send_if_modified(|shown| {
            let changed = *shown != self.status;
            if changed {
                shown.clone_from(&self.status);
            }
            changed
        });
    }

    /// After the last attempt: fsync, cut the replayed part off a spill that
    /// stays, and say what is left.
    fn finish(self: Box<Self>) -> CdrShutdown {
        let Core {
            delivery,
            mut files,
            ..
        } = *self;
        let sync_error = files.sync().err().map(|e| {
            tracing::error!(error = %e, "CDR file sync at shutdown failed");
            e.to_string()
        });
        let written = delivery.written();
        let remaining = delivery.into_remaining();
        if let Some(left) = &remaining.spill
            && left.replayed_to > 0
            && let Err(e) = files.compact_spill(left.replayed_to)
        {
            tracing::error!(
                error = %e,
                spill = %files.spill_path().display(),
                bytes = left.replayed_to,
                "cannot cut the replayed CDRs off the spill file: the next start writes them to the CDR file a second time"
            );
        }
        CdrShutdown {
            path: files.path().to_path_buf(),
            spill_path: files.spill_path().to_path_buf(),
            written,
            held: remaining.held,
            spilled: remaining.spill.map_or(0, |s| s.lines),
            sync_error,
        }
    }
}

/// Which file a log line is about.
fn which(target: Target) -> &'static str {
    match target {
        Target::Cdr => "cdr file",
        Target::Spill => "spill file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{EndReason, EndedBy};

    fn record(call_id: &str) -> CdrRecord {
        let now = Instant::now();
        CdrRecord {
            id: crate::cdr::CdrId::from_random(1),
            call_id: call_id.into(),
            b_call_id: None,
            caller: "1001".into(),
            callee: "0049301234".into(),
            trunk_in: "pbx".into(),
            trunk_out: None,
            start: now,
            answer: None,
            end: now,
            end_reason: EndReason::NoRoute,
            ended_by: EndedBy::Switch,
            sip_code: Some(404),
            refresh_failure: None,
            extra: Vec::new(),
            media: None,
            attempts: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_big_cdr_spill_is_replayed_in_rounds_before_new_records() {
        const OLD: usize = 100_000;
        let dir = tempfile::tempdir().expect("dir");
        let config = CdrConfig::at(dir.path().join("cdr.jsonl"));
        let spill: String = (0..OLD)
            .map(|i| format!("{{\"call_id\":\"old-{i}\"}}\n"))
            .collect();
        std::fs::write(config.spill_path(), spill).expect("spill");
        let writer = CdrWriter::open(&config, Arc::default()).expect("open");
        let mut status = writer.status();
        assert_eq!(status.borrow().spilled, OLD as u64);
        let (records, queue) = mpsc::unbounded_channel();
        let (_reload, reloads) = watch::channel(0);
        let task = tokio::spawn(writer.run(queue, reloads));
        records.send(record("new")).expect("send");
        let replayed = status.wait_for(|s| s.spilled == 0 && s.pending == 0 && s.written > 0);
        tokio::time::timeout(Duration::from_secs(60), replayed)
            .await
            .expect("replayed in time")
            .expect("status");
        drop(records);
        let shutdown = task.await.expect("writer");
        assert!(shutdown.is_complete(), "{shutdown:?}");
        assert_eq!(shutdown.written, OLD as u64 + 1);
        let text = std::fs::read_to_string(&config.path).expect("cdr");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["call_id"].as_str().expect("call_id").to_string()
            })
            .collect();
        assert_eq!(ids.len(), OLD + 1);
        assert!(
            ids[..OLD]
                .iter()
                .enumerate()
                .all(|(i, id)| *id == format!("old-{i}"))
        );
        assert_eq!(ids[OLD], "new", "new records after the spill");
        assert!(!config.spill_path().exists());
    }
}
