//! What Vigil owes the CDR database, as a state machine without I/O: which
//! records wait where, what to append to the spool, what to insert, what to
//! read back, and which spool segments may go.
//!
//! The spool is the queue. Every record is appended to it (and fsynced)
//! first, in the order calls ended; rows are inserted from it in that order,
//! a batch per statement; the spool forgets a record only once the batch that
//! holds it has committed. So a record is durable (in the spool on disk, or
//! committed in the database) before anything else happens to it, a database
//! that is down or slow just lets the spool grow, and a restart (even after
//! `kill -9`) inserts again from the spool's oldest segment: the rows already
//! in are skipped by their primary key (`ON CONFLICT DO NOTHING`).
//!
//! Records the database has not taken yet are kept in memory too (up to
//! `window` of them, read back from the spool beyond that), so a healthy
//! database never waits for a read. If the spool cannot be written (a full
//! disk), records wait in memory, never dropped, and go to the database
//! straight from there while nothing older waits in the spool.
//!
//! A batch the database refuses for its content (a data or constraint error:
//! sent again it would fail again, forever) is sent again one row per
//! statement, and the one row it refuses is set aside in the spool's
//! `rejected.cdrs` file (fsynced, logged with its text) so the rows behind
//! it go on.
//!
//! Two lanes work at once, one action in flight on each: the spool (append,
//! load, trim: blocking file I/O) and the database (insert). A record is
//! *released* (may go on to the CDR file) once its first append was tried:
//! so a line is in the CDR file only after it is in the spool, and a `kill -9`
//! cannot leave a record in the file that the database will never get.
//!
//! The contract, as for [`super::super::delivery::Delivery`]: after each input
//! (`handle_*`), drain [`DbQueue::poll_action`] (it gives at most one action
//! per lane), perform each and feed its [`Outcome`] back through
//! [`DbQueue::handle_outcome`]; read [`DbQueue::poll_event`] and
//! [`DbQueue::poll_released`], and sleep until [`DbQueue::poll_timeout`].
//! Time never goes back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::cdr::append::join_lines;
use crate::cdr::retry::{Health, Settled};

/// How long a failed append, load, trim or insert waits before its retry.
pub const RETRY: Duration = Duration::from_secs(1);
/// At most this many rows per INSERT...
pub const BATCH_ROWS: usize = 1000;
/// ... and about this many bytes of JSON (at least one row).
pub const BATCH_BYTES: usize = 1 << 20;
/// Spool segments are closed at about this size (the I/O rolls over): a
/// segment is deleted once every record in it has committed, and a restart
/// sends again at most the committed part of the oldest one.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// A drained spool's current segment is cut off (closed and deleted) once it
/// holds this much, rather than at every commit.
pub const TRIM_DRAINED: u64 = 256 << 10;

/// A place in the spool: a segment (numbered in write order) and a byte
/// offset in it. Ordered like the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// What the spool I/O does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Append these lines (each with its newline), in order, to the
    /// spool's current segment (a new one if it is [`SEGMENT_BYTES`] long),
    /// and fsync.
    Append { bytes: Vec<u8>, lines: usize },
    /// Read up to `max_lines` records from `from` on (across segments).
    Load { from: SpoolPos, max_lines: usize },
    /// Every record before `committed` is in the database: delete the
    /// segments wholly before it; if it is the end of the current segment,
    /// that one too (the next append starts a new one).
    Trim { committed: SpoolPos },
    /// Insert these records (a JSON array of CDR objects) in one statement.
    Insert { json: String, rows: usize },
    /// Set this record aside (append it to the rejected file, fsynced): the
    /// database refuses it.
    Reject { line: String },
}

impl Action {
    pub fn lane(&self) -> Lane {
        match self {
            Action::Insert { .. } => Lane::Database,
            _ => Lane::Spool,
        }
    }
}

/// Which kind of I/O an action is: one of each may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Spool,
    Database,
}

/// Records read back from the spool.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Each record with the spool position just past it.
    pub lines: Vec<(String, SpoolPos)>,
    /// Where the next read starts.
    pub next: SpoolPos,
}

/// How an action went. Errors are their messages (logged, shown by `vigil
/// ctl status`): the machine only needs to know that it failed.
#[derive(Debug)]
pub enum Outcome {
    /// `lines` whole records went to `segment` from byte `start` on (the
    /// first `lines` of the batch); `error` says why the rest did not.
    Appended {
        segment: u64,
        start: u64,
        lines: usize,
        error: Option<String>,
    },
    Loaded(Result<Loaded, String>),
    /// Where the next append goes now.
    Trimmed(Result<SpoolPos, String>),
    /// The batch committed (`Ok` with the rows that were new), or not.
    Inserted(Result<u64, InsertError>),
    Rejected(Result<(), String>),
}

/// Why a batch did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertError {
    pub message: String,
    /// The database refused the rows for what they hold (a data or
    /// constraint error), not for being down or slow: the same batch would
    /// fail again.
    pub refused: bool,
}

impl InsertError {
    /// An error that may pass on retry (a connection lost, a timeout).
    pub fn transient(message: impl Into<String>) -> InsertError {
        InsertError {
            message: message.into(),
            refused: false,
        }
    }
}

/// Which operation failed or recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Appending to the spool (a full disk, most likely).
    SpoolWrite,
    /// Reading the spool back, or deleting its committed segments.
    SpoolRead,
    /// Inserting into the database.
    Database,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::SpoolWrite => "spool write",
            Op::SpoolRead => "spool read",
            Op::Database => "database",
        }
    }
}

/// What is worth logging and counting.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Failed {
        op: Op,
        error: String,
    },
    Recovered {
        op: Op,
        after: Duration,
    },
    /// A batch committed: `rows` records are in the database (`new` of them
    /// were not before: the others were sent again after a restart).
    Committed {
        rows: usize,
        new: u64,
    },
    /// Everything the spool held is in the database.
    SpoolDrained,
    /// The database refused this record for its content: it was set aside
    /// in the rejected file.
    Rejected {
        line: String,
    },
}

/// What a spool found at start holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolFound {
    /// Where its oldest record is (`None`: it is empty).
    pub first: Option<SpoolPos>,
    /// Where the next append goes (a segment of its own).
    pub write_at: SpoolPos,
    /// Records in it (some may be in the database already).
    pub lines: u64,
}

/// What was not in the database nor the spool when the queue stopped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Records in memory only, oldest first.
    pub held: Vec<String>,
    /// Records in the spool, for the next start.
    pub spooled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpoolFlight {
    Append(usize),
    Load,
    Trim(SpoolPos),
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbFlight {
    /// The first rows of `loaded`.
    Loaded(usize),
    /// The first rows of `unspooled` (the spool cannot be written).
    Direct(usize),
}

/// The database sink's state. See the module documentation for the contract.
#[derive(Debug)]
pub struct DbQueue {
    window: usize,
    /// Received, not in the spool (nor the database) yet.
    unspooled: VecDeque<String>,
    /// Sequence number of `unspooled`'s first record.
    unspooled_seq: u64,
    /// Records before this sequence number may go to the CDR file.
    release_upto: u64,
    released: u64,
    /// In the spool, in memory, not committed; each with its end.
    loaded: VecDeque<(String, SpoolPos)>,
    /// Where the next load reads (== `write_at`: every spooled record not
    /// committed is in `loaded`).
    read_at: SpoolPos,
    write_at: SpoolPos,
    /// Everything before this is in the database.
    committed: SpoolPos,
    /// The oldest segment that may still be on disk.
    oldest_segment: u64,
    /// Records in the spool not yet committed.
    spooled: u64,
    spool_write: Health,
    spool_read: Health,
    database: Health,
    spool_flight: Option<SpoolFlight>,
    db_flight: Option<DbFlight>,
    give_up_at: Option<Instant>,
    events: VecDeque<Event>,
    written: u64,
    /// Records were read back from the spool since it was last drained.
    replaying: bool,
    /// Rows to insert one per statement (a batch was refused: one of them
    /// is the row the database will not take).
    one_by_one: usize,
    /// The row the database refused, to set aside before any insert.
    rejecting: Option<DbFlight>,
    rejected: u64,
}

impl DbQueue {
    /// A queue over a spool as found at start; `window` bounds the records
    /// kept in memory for the database.
    pub fn new(window: usize, found: SpoolFound) -> DbQueue {
        let read_at = found.first.unwrap_or(found.write_at);
        DbQueue {
            window: window.max(1),
            unspooled: VecDeque::new(),
            unspooled_seq: 0,
            release_upto: 0,
            released: 0,
            loaded: VecDeque::new(),
            read_at,
            write_at: found.write_at,
            committed: read_at,
            oldest_segment: read_at.segment,
            spooled: found.lines,
            spool_write: Health::default(),
            spool_read: Health::default(),
            database: Health::default(),
            spool_flight: None,
            db_flight: None,
            give_up_at: None,
            events: VecDeque::new(),
            written: 0,
            replaying: false,
            one_by_one: 0,
            rejecting: None,
            rejected: 0,
        }
    }

    /// New records (JSON lines without their newline), in the order their
    /// calls ended.
    pub fn handle_records(&mut self, lines: impl IntoIterator<Item = String>) {
        self.unspooled.extend(lines);
        if self.spool_write.failing_since.is_some() {
            // The spool is failing: the CDR file need not wait for it.
            self.release_upto = self.end_seq();
        }
    }

    /// No more records will come: one more attempt on each lane now, none
    /// after a failure or after `give_up_at`.
    pub fn handle_close(&mut self, give_up_at: Instant) {
        self.give_up_at = Some(give_up_at);
        self.release_upto = self.end_seq();
        for health in [
            &mut self.spool_write,
            &mut self.spool_read,
            &mut self.database,
        ] {
            health.retry_at = None;
        }
    }

    /// The next action to perform now, if any (at most one per lane is in
    /// flight: call again until `None`).
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.give_up_at.is_some_and(|at| now >= at) {
            return None;
        }
        if self.spool_flight.is_none()
            && let Some(action) = self.next_spool_action(now)
        {
            return Some(action);
        }
        if self.db_flight.is_none() {
            return self.next_insert(now);
        }
        None
    }

    fn next_spool_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(source) = self.rejecting
            && ready(&mut self.spool_read, now)
        {
            let line = match source {
                DbFlight::Loaded(_) => self.loaded.front().map(|(l, _)| l.clone()),
                DbFlight::Direct(_) => self.unspooled.front().cloned(),
            };
            if let Some(line) = line {
                self.spool_flight = Some(SpoolFlight::Reject);
                return Some(Action::Reject { line });
            }
            self.rejecting = None;
        }
        let direct = match (self.db_flight, self.rejecting) {
            (Some(DbFlight::Direct(n)), _) => n,
            (_, Some(DbFlight::Direct(_))) => 1,
            _ => 0,
        };
        if self.unspooled.len() > direct && ready(&mut self.spool_write, now) {
            let (bytes, lines) = batch(self.unspooled.iter().skip(direct).map(String::as_str));
            // Records sent straight to the database wait for that to end:
            // the spool takes records in order.
            if direct == 0 {
                self.spool_flight = Some(SpoolFlight::Append(lines));
                return Some(Action::Append { bytes, lines });
            }
        }
        if !ready(&mut self.spool_read, now) {
            return None;
        }
        let drained = self.committed == self.write_at
            && self.write_at.offset >= TRIM_DRAINED
            && self.db_flight.is_none();
        if self.committed.segment > self.oldest_segment || drained {
            self.spool_flight = Some(SpoolFlight::Trim(self.committed));
            return Some(Action::Trim {
                committed: self.committed,
            });
        }
        if self.read_at < self.write_at && self.loaded.len() < self.window / 2 + 1 {
            self.spool_flight = Some(SpoolFlight::Load);
            return Some(Action::Load {
                from: self.read_at,
                max_lines: self.window - self.loaded.len(),
            });
        }
        None
    }

    fn next_insert(&mut self, now: Instant) -> Option<Action> {
        if self.rejecting.is_some() || !ready(&mut self.database, now) {
            return None;
        }
        let max = if self.one_by_one > 0 { 1 } else { BATCH_ROWS };
        if !self.loaded.is_empty() {
            let (json, rows) = json_array(self.loaded.iter().map(|(l, _)| l.as_str()), max);
            self.db_flight = Some(DbFlight::Loaded(rows));
            return Some(Action::Insert { json, rows });
        }
        // Straight from memory only while the spool refuses records and
        // holds none older.
        let spool_refuses = self.spool_write.failing_since.is_some()
            && !matches!(self.spool_flight, Some(SpoolFlight::Append(_)));
        if spool_refuses && self.read_at == self.write_at && !self.unspooled.is_empty() {
            let (json, rows) = json_array(self.unspooled.iter().map(String::as_str), max);
            self.db_flight = Some(DbFlight::Direct(rows));
            return Some(Action::Insert { json, rows });
        }
        None
    }

    /// How an action went.
    pub fn handle_outcome(&mut self, now: Instant, outcome: Outcome) {
        match outcome {
            Outcome::Appended {
                segment,
                start,
                lines,
                error,
            } => {
                let Some(SpoolFlight::Append(asked)) = self.spool_flight.take() else {
                    debug_assert!(false, "an append outcome without an append");
                    return;
                };
                self.release_upto = self.release_upto.max(self.unspooled_seq + asked as u64);
                let all_loaded = self.read_at == self.write_at;
                let mut at = SpoolPos {
                    segment,
                    offset: start,
                };
                for line in self.unspooled.drain(..lines.min(asked)) {
                    at.offset += line.len() as u64 + 1;
                    self.unspooled_seq += 1;
                    self.spooled += 1;
                    if all_loaded && self.loaded.len() < self.window {
                        self.read_at = at;
                        self.loaded.push_back((line, at));
                    }
                }
                if lines > 0 {
                    if self.committed == self.write_at {
                        // Nothing uncommitted before this append: the commit
                        // point moves past the (possibly new) segment's start.
                        self.committed = SpoolPos {
                            segment,
                            offset: start,
                        };
                    }
                    self.write_at = at;
                }
                self.settle_op(now, Op::SpoolWrite, error);
                if self.spool_write.failing_since.is_some() {
                    self.release_upto = self.end_seq();
                }
            }
            Outcome::Loaded(result) => {
                if self.spool_flight.take() != Some(SpoolFlight::Load) {
                    debug_assert!(false, "a load outcome without a load");
                    return;
                }
                let error = match result {
                    Ok(loaded) => {
                        self.replaying = true;
                        let next = loaded.next;
                        self.loaded.extend(loaded.lines);
                        // A read that got nowhere (damage to the end) must
                        // not be asked again.
                        self.read_at = if next > self.read_at {
                            next.min(self.write_at)
                        } else {
                            self.write_at
                        };
                        None
                    }
                    Err(e) => Some(e),
                };
                self.settle_op(now, Op::SpoolRead, error);
            }
            Outcome::Trimmed(result) => {
                let Some(SpoolFlight::Trim(upto)) = self.spool_flight.take() else {
                    debug_assert!(false, "a trim outcome without a trim");
                    return;
                };
                let error = match result {
                    Ok(write_at) => {
                        self.oldest_segment = upto.segment;
                        if write_at != self.write_at && self.committed == self.write_at {
                            // The drained segment is gone: start afresh.
                            self.write_at = write_at;
                            self.read_at = write_at;
                            self.committed = write_at;
                            self.oldest_segment = write_at.segment;
                        }
                        None
                    }
                    Err(e) => Some(e),
                };
                self.settle_op(now, Op::SpoolRead, error);
            }
            Outcome::Rejected(result) => self.handle_rejected(now, result),
            Outcome::Inserted(result) => {
                let Some(flight) = self.db_flight.take() else {
                    debug_assert!(false, "an insert outcome without an insert");
                    return;
                };
                let error = match result {
                    Ok(new) => {
                        let rows = match flight {
                            DbFlight::Loaded(n) => {
                                for (_, end) in self.loaded.drain(..n) {
                                    self.committed = end;
                                }
                                self.spooled = self.spooled.saturating_sub(n as u64);
                                if self.spooled == 0 && self.read_at == self.write_at {
                                    self.committed = self.write_at;
                                    if std::mem::take(&mut self.replaying) {
                                        self.events.push_back(Event::SpoolDrained);
                                    }
                                }
                                n
                            }
                            DbFlight::Direct(n) => {
                                self.unspooled.drain(..n);
                                self.unspooled_seq += n as u64;
                                n
                            }
                        };
                        self.written += rows as u64;
                        self.one_by_one = self.one_by_one.saturating_sub(rows);
                        self.events.push_back(Event::Committed { rows, new });
                        None
                    }
                    Err(e) if e.refused => {
                        // Not the database's health: no wait before the
                        // next try, which goes one row at a time.
                        let rows = match flight {
                            DbFlight::Loaded(n) | DbFlight::Direct(n) => n,
                        };
                        if rows > 1 {
                            self.one_by_one = rows;
                        } else {
                            self.rejecting = Some(flight);
                        }
                        self.events.push_back(Event::Failed {
                            op: Op::Database,
                            error: e.message,
                        });
                        return;
                    }
                    Err(e) => Some(e.message),
                };
                self.settle_op(now, Op::Database, error);
            }
        }
    }

    fn handle_rejected(&mut self, now: Instant, result: Result<(), String>) {
        if self.spool_flight.take() != Some(SpoolFlight::Reject) {
            debug_assert!(false, "a reject outcome without a reject");
            return;
        }
        let error = match (result, self.rejecting.take()) {
            (Ok(()), Some(DbFlight::Loaded(_))) => {
                if let Some((line, end)) = self.loaded.pop_front() {
                    self.committed = end;
                    self.spooled = self.spooled.saturating_sub(1);
                    self.events.push_back(Event::Rejected { line });
                }
                None
            }
            (Ok(()), Some(DbFlight::Direct(_))) => {
                if let Some(line) = self.unspooled.pop_front() {
                    self.unspooled_seq += 1;
                    self.events.push_back(Event::Rejected { line });
                }
                None
            }
            (Ok(()), None) => None,
            (Err(e), source) => {
                self.rejecting = source;
                Some(e)
            }
        };
        if error.is_none() {
            self.rejected += 1;
            self.one_by_one = self.one_by_one.saturating_sub(1);
        }
        self.settle_op(now, Op::SpoolRead, error);
    }

    /// Records an operation's result in the health of its kind.
    fn settle_op(&mut self, now: Instant, op: Op, error: Option<String>) {
        let closing = self.give_up_at.is_some();
        let health = match op {
            Op::SpoolWrite => &mut self.spool_write,
            Op::SpoolRead => &mut self.spool_read,
            Op::Database => &mut self.database,
        };
        settle(health, &mut self.events, now, closing, op, error);
    }

    /// Records the database refused, set aside since start.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The next thing worth knowing, to log and count.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many more of the records given (oldest first) may now go on to
    /// the CDR file: their append to the spool was tried.
    pub fn poll_released(&mut self) -> usize {
        let n = self.release_upto - self.released;
        self.released = self.release_upto;
        n as usize
    }

    /// When to call [`DbQueue::poll_action`] again if nothing else happens.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.give_up_at.is_some() {
            return None;
        }
        [
            self.spool_write.retry_at,
            self.spool_read.retry_at,
            self.database.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True while an action is in flight (after [`DbQueue::poll_action`]
    /// returned `None`: when it is false too, nothing more will happen
    /// without an input or a timeout).
    pub fn in_flight(&self) -> bool {
        self.spool_flight.is_some() || self.db_flight.is_some()
    }

    /// Records in memory only (in no file, nor the database).
    pub fn pending(&self) -> usize {
        self.unspooled.len()
    }

    /// Records in the spool not yet in the database: its depth.
    pub fn spooled(&self) -> u64 {
        self.spooled
    }

    /// Records committed to the database since start.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Which operations are failing now.
    pub fn failing(&self) -> Vec<Op> {
        [
            (Op::SpoolWrite, &self.spool_write),
            (Op::SpoolRead, &self.spool_read),
            (Op::Database, &self.database),
        ]
        .into_iter()
        .filter(|(_, h)| h.failing_since.is_some())
        .map(|(op, _)| op)
        .collect()
    }

    /// What is left once [`DbQueue::poll_action`] has nothing more to do
    /// after [`DbQueue::handle_close`].
    pub fn into_remaining(self) -> Remaining {
        Remaining {
            held: self.unspooled.into(),
            spooled: self.spooled,
        }
    }

    fn end_seq(&self) -> u64 {
        self.unspooled_seq + self.unspooled.len() as u64
    }
}

/// Records an operation's result in its health, with the matching event.
fn settle(
    health: &mut Health,
    events: &mut VecDeque<Event>,
    now: Instant,
    closing: bool,
    op: Op,
    error: Option<String>,
) {
    match health.settle(now, RETRY, closing, error) {
        Some(Settled::Failed(error)) => events.push_back(Event::Failed { op, error }),
        Some(Settled::Recovered(after)) => events.push_back(Event::Recovered { op, after }),
        None => {}
    }
}

/// Whether an operation may start now (its retry time, if it has come, is
/// cleared).
fn ready(health: &mut Health, now: Instant) -> bool {
    health.expire(now);
    health.ready()
}

/// The first lines of a queue as spool bytes (each with its newline).
fn batch<'a>(lines: impl Iterator<Item = &'a str>) -> (Vec<u8>, usize) {
    join_lines(lines, BATCH_ROWS, BATCH_BYTES, b"", b"\n")
}

/// The first lines of a queue as one JSON array (each line is an object).
fn json_array<'a>(lines: impl Iterator<Item = &'a str>, max: usize) -> (String, usize) {
    let (joined, count) = join_lines(lines, max, BATCH_BYTES, b",", b"");
    // Whole lines of UTF-8 joined with commas are UTF-8: nothing is
    // replaced (and never a row dropped, as an empty array would).
    let body = String::from_utf8_lossy(&joined);
    (format!("[{body}]"), count)
}

#[cfg(test)]
mod tests;
