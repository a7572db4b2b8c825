//! What the CDR writer owes the CDR file, as a state machine without I/O: which
//! records are pending and where they wait, what to write next, what to
//! spill, when to retry after an error, and when to check that the open file
//! is still the one the configured path names.
//!
//! A record is never dropped while the process lives. Records wait in this
//! order, oldest first:
//!
//! 1. `head`: in memory, next to be written to the CDR file (at most
//!    `cdr.max_pending` of them);
//! 2. the spill file: records that came while `head` was full (and, at start,
//!    whatever an earlier run left there);
//! 3. `tail`: in memory, newer than everything in the spill, waiting to be
//!    appended to it.
//!
//! Once records go to the spill, every later record follows them there until
//! the spill has been replayed into the CDR file and removed, so the CDR file
//! receives records in the order calls ended. If the spill cannot be written
//! either, `tail` keeps growing in memory: holding a record costs memory,
//! dropping it costs money.
//!
//! A failed write, spill, replay or reopen is reported as an [`Event`] and
//! retried after [`RETRY`]. Before every write, and every [`IDENTITY_CHECK`]
//! when idle, the open file's device and inode are compared with what the path
//! names now; a file deleted or moved away is reopened by its path, so no
//! record vanishes into an unlinked inode.
//!
//! The contract, as for the engine: after each input (`handle_*`), drain
//! [`Delivery::poll_action`], performing each action and feeding its
//! [`Outcome`] back through [`Delivery::handle_outcome`], until it returns
//! `None`; then read [`Delivery::poll_event`] and sleep until
//! [`Delivery::poll_timeout`]. One action is in flight at a time. Time never
//! goes back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::append::join_lines;
use super::retry::{Health, Settled};

/// How long a failed write, spill, replay or reopen waits before its retry.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often, when nothing is written, the open CDR file is compared with
/// the path (logrotate-aware daemons check this often or more).
pub const IDENTITY_CHECK: Duration = Duration::from_secs(1);
/// At most this many records per write (and per replayed chunk)...
pub const BATCH_LINES: usize = 1024;
/// ... and about this many bytes (at least one record, whatever its size).
pub const BATCH_BYTES: usize = 1 << 20;

mod protocol;

pub use protocol::{
    Action, AtPath, Batch, CdrIoError, Event, FileId, Loaded, Outcome, Remaining, Reopen,
    SpillLeft, Target,
};

/// A record waiting for the CDR file.
#[derive(Debug)]
struct Held {
    line: String,
    /// For a record read back from the spill: the spill offset past it.
    spill_end: Option<u64>,
}

/// The spill file's bookkeeping.
#[derive(Debug, Default)]
struct Spill {
    /// The file exists (with records, or drained but not yet removed).
    present: bool,
    /// Records in it not yet in the CDR file.
    lines: u64,
    /// Where the next read starts.
    offset: u64,
    /// Everything before this offset is in the CDR file.
    replayed_to: u64,
    /// A read reached its end, and nothing was appended since.
    drained: bool,
    /// Records written from it to the CDR file, for the log.
    replayed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Open,
    Reopen(Reopen),
}

/// The action awaiting its outcome.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    Write(usize),
    Spill(usize),
    Load,
    Remove,
    Check,
    Reopen(Reopen),
}

/// The CDR writer's state. See the module documentation for the contract.
#[derive(Debug)]
pub struct Delivery {
    max_pending: usize,
    head: VecDeque<Held>,
    /// Records in `head` read back from the spill (they are still in it).
    head_from_spill: usize,
    tail: VecDeque<String>,
    spill: Spill,
    /// Writes to the CDR file, and reopening it.
    cdr: Health,
    /// Appends to the spill.
    spilling: Health,
    /// Reading the spill back, and removing it.
    replay: Health,
    file: FileState,
    /// The open file was found to be the path's since the last write (every
    /// write is preceded by a check: two `stat`s against a lost record).
    verified: bool,
    next_check: Instant,
    in_flight: Option<InFlight>,
    /// Shutting down: when to stop trying.
    give_up_at: Option<Instant>,
    events: VecDeque<Event>,
    written: u64,
    /// The ids of the records written since [`Delivery::take_written_ids`]
    /// (`None`: nobody asks; with a state store, it learns from them which
    /// calls are billed).
    written_ids: Option<Vec<String>>,
}

impl Delivery {
    /// A writer whose CDR file was just opened; `spill_lines` is `Some` when a
    /// spill file was found (left by an earlier run), with its record count.
    pub fn new(now: Instant, max_pending: usize, spill_lines: Option<u64>) -> Delivery {
        let spill = match spill_lines {
            Some(lines) => Spill {
                present: true,
                lines,
                ..Spill::default()
            },
            None => Spill::default(),
        };
        Delivery {
            max_pending: max_pending.max(1),
            head: VecDeque::new(),
            head_from_spill: 0,
            tail: VecDeque::new(),
            spill,
            cdr: Health::default(),
            spilling: Health::default(),
            replay: Health::default(),
            file: FileState::Open,
            verified: false,
            next_check: now + IDENTITY_CHECK,
            in_flight: None,
            give_up_at: None,
            events: VecDeque::new(),
            written: 0,
            written_ids: None,
        }
    }

    /// From now on, note the id of every record written.
    pub fn track_written_ids(&mut self) {
        self.written_ids.get_or_insert_with(Vec::new);
    }

    /// The ids of the records written to the CDR file since the last call.
    pub fn take_written_ids(&mut self) -> Vec<String> {
        self.written_ids
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// New records (JSON lines without their newline), in the order their
    /// calls ended.
    pub fn handle_records(&mut self, _now: Instant, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            if self.spill.present || !self.tail.is_empty() || self.head.len() >= self.max_pending {
                self.tail.push_back(line);
            } else {
                self.head.push_back(Held {
                    line,
                    spill_end: None,
                });
            }
        }
    }

    /// A reload: reopen the file by its path, and retry whatever failed now
    /// rather than at its next retry (the operator may just have made room).
    pub fn handle_reload(&mut self, _now: Instant) {
        if self.file == FileState::Open {
            self.file = FileState::Reopen(Reopen::Reload);
        }
        for health in [&mut self.cdr, &mut self.spilling, &mut self.replay] {
            health.retry_at = None;
        }
    }

    /// No more records will come. Each kind of operation gets one more
    /// attempt now, whatever its retry time, and none after a failure or
    /// after `give_up_at`; then [`Delivery::poll_action`] returns `None` for
    /// good and [`Delivery::into_remaining`] says what is left.
    pub fn handle_close(&mut self, _now: Instant, give_up_at: Instant) {
        self.give_up_at = Some(give_up_at);
        for health in [&mut self.cdr, &mut self.spilling, &mut self.replay] {
            health.retry_at = None;
        }
    }

    /// The next thing to do now, if any.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.in_flight.is_some() || self.give_up_at.is_some_and(|at| now >= at) {
            return None;
        }
        for health in [&mut self.cdr, &mut self.spilling, &mut self.replay] {
            health.expire(now);
        }
        self.merge_tail();
        match self.file {
            FileState::Reopen(why) if self.cdr.ready() => {
                return Some(self.start(InFlight::Reopen(why), Action::Reopen(why)));
            }
            FileState::Reopen(_) => {}
            FileState::Open if self.cdr.ready() => {
                if !self.head.is_empty() {
                    if !self.verified {
                        return Some(self.start(InFlight::Check, Action::CheckIdentity));
                    }
                    let batch = batch(self.head.iter().map(|h| h.line.as_str()));
                    return Some(self.start(InFlight::Write(batch.lines), Action::Write(batch)));
                }
                if self.spill.present && self.replay.ready() {
                    return Some(if self.spill.drained {
                        self.start(InFlight::Remove, Action::RemoveSpill)
                    } else {
                        let load = Action::LoadSpill {
                            offset: self.spill.offset,
                            max_lines: BATCH_LINES,
                        };
                        self.start(InFlight::Load, load)
                    });
                }
            }
            FileState::Open => {}
        }
        if !self.tail.is_empty() && self.spilling.ready() {
            let batch = batch(self.tail.iter().map(String::as_str));
            return Some(self.start(InFlight::Spill(batch.lines), Action::Spill(batch)));
        }
        if self.give_up_at.is_none() && self.file == FileState::Open && now >= self.next_check {
            return Some(self.start(InFlight::Check, Action::CheckIdentity));
        }
        None
    }

    /// How the action [`Delivery::poll_action`] gave went.
    pub fn handle_outcome(&mut self, now: Instant, outcome: Outcome) {
        let Some(flight) = self.in_flight.take() else {
            debug_assert!(false, "an outcome with no action in flight: {outcome:?}");
            return;
        };
        let closing = self.give_up_at.is_some();
        match (flight, outcome) {
            (InFlight::Write(asked), Outcome::Written { lines, error }) => {
                for held in self.head.drain(..lines.min(asked)) {
                    if let Some(end) = held.spill_end {
                        self.head_from_spill = self.head_from_spill.saturating_sub(1);
                        self.spill.lines = self.spill.lines.saturating_sub(1);
                        self.spill.replayed_to = end;
                        self.spill.replayed += 1;
                    }
                    if let Some(ids) = self.written_ids.as_mut()
                        && let Some(id) = super::line_id(&held.line)
                    {
                        ids.push(id.to_string());
                    }
                    self.written += 1;
                }
                self.verified = false;
                settle(
                    &mut self.cdr,
                    &mut self.events,
                    now,
                    closing,
                    Target::Cdr,
                    error,
                );
            }
            (InFlight::Spill(asked), Outcome::Spilled { lines, error }) => {
                let n = lines.min(asked);
                if n > 0 {
                    if !self.spill.present {
                        self.spill = Spill {
                            present: true,
                            ..Spill::default()
                        };
                        self.events.push_back(Event::SpillStarted);
                    }
                    self.tail.drain(..n);
                    self.spill.lines += n as u64;
                    self.spill.drained = false;
                }
                let spilling = &mut self.spilling;
                settle(
                    spilling,
                    &mut self.events,
                    now,
                    closing,
                    Target::Spill,
                    error,
                );
            }
            (InFlight::Load, Outcome::Loaded(result)) => {
                let error = match result {
                    Ok(loaded) => {
                        self.spill.offset = loaded.offset;
                        self.spill.drained = loaded.eof;
                        self.head_from_spill += loaded.lines.len();
                        self.head
                            .extend(loaded.lines.into_iter().map(|(line, end)| Held {
                                line,
                                spill_end: Some(end),
                            }));
                        None
                    }
                    Err(e) => Some(e),
                };
                let replay = &mut self.replay;
                settle(replay, &mut self.events, now, closing, Target::Spill, error);
            }
            (InFlight::Remove, Outcome::SpillRemoved(result)) => {
                let error = result.err();
                if error.is_none() {
                    let lines = self.spill.replayed;
                    self.spill = Spill::default();
                    self.events.push_back(Event::SpillDrained { lines });
                }
                let replay = &mut self.replay;
                settle(replay, &mut self.events, now, closing, Target::Spill, error);
            }
            (InFlight::Check, Outcome::Identity { open, at_path }) => {
                self.next_check = now + IDENTITY_CHECK;
                let reopen = match (open, at_path) {
                    (None, _) => Some(Reopen::Unreadable),
                    (_, AtPath::Missing) => Some(Reopen::Missing),
                    (Some(open), AtPath::File(there)) if open != there => Some(Reopen::Replaced),
                    _ => None,
                };
                match reopen {
                    Some(why) => {
                        self.file = FileState::Reopen(why);
                        self.verified = false;
                    }
                    None => self.verified = true,
                }
            }
            (InFlight::Reopen(why), Outcome::Reopened(result)) => {
                if result.is_ok() {
                    self.file = FileState::Open;
                    self.next_check = now + IDENTITY_CHECK;
                    self.events.push_back(Event::Reopened(why));
                    // A fresh file may take what the old one refused: try now.
                    self.cdr.retry_at = None;
                } else {
                    let error = result.err();
                    settle(
                        &mut self.cdr,
                        &mut self.events,
                        now,
                        closing,
                        Target::Cdr,
                        error,
                    );
                }
            }
            (flight, outcome) => {
                debug_assert!(false, "outcome {outcome:?} does not answer {flight:?}");
            }
        }
    }

    /// The next thing worth knowing, to log and count.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Delivery::poll_action`] again if nothing else happens
    /// (call it after `poll_action` returned `None`). `None` when shutting
    /// down: every attempt left is made at once.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.give_up_at.is_some() || self.in_flight.is_some() {
            return None;
        }
        let check = (self.file == FileState::Open).then_some(self.next_check);
        [
            check,
            self.cdr.retry_at,
            self.spilling.retry_at,
            self.replay.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Records held in memory that are in no file.
    pub fn pending(&self) -> usize {
        self.head.len().saturating_sub(self.head_from_spill) + self.tail.len()
    }

    /// Records in the spill file that are not in the CDR file yet.
    pub fn spilled(&self) -> u64 {
        self.spill.lines
    }

    /// Records written to the CDR file since start.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// True while a write, spill, replay or reopen is failing.
    pub fn is_failing(&self) -> bool {
        [&self.cdr, &self.spilling, &self.replay]
            .iter()
            .any(|h| h.failing_since.is_some())
    }

    /// What was not written, once [`Delivery::poll_action`] has nothing
    /// more to do after [`Delivery::handle_close`].
    pub fn into_remaining(self) -> Remaining {
        let held = self
            .head
            .into_iter()
            .filter(|h| h.spill_end.is_none())
            .map(|h| h.line)
            .chain(self.tail)
            .collect();
        let spill = self.spill.present.then_some(SpillLeft {
            lines: self.spill.lines,
            replayed_to: self.spill.replayed_to,
        });
        Remaining { held, spill }
    }

    fn start(&mut self, flight: InFlight, action: Action) -> Action {
        self.in_flight = Some(flight);
        action
    }

    /// Without a spill, `tail` is just the overflow of `head`: move records
    /// back as room frees up (order is kept: `tail` is newer than `head`).
    fn merge_tail(&mut self) {
        if self.spill.present {
            return;
        }
        while self.head.len() < self.max_pending {
            let Some(line) = self.tail.pop_front() else {
                break;
            };
            self.head.push_back(Held {
                line,
                spill_end: None,
            });
        }
    }
}

/// Records an operation's result in its health, with the matching event.
fn settle(
    health: &mut Health,
    events: &mut VecDeque<Event>,
    now: Instant,
    closing: bool,
    target: Target,
    error: Option<CdrIoError>,
) {
    match health.settle(now, RETRY, closing, error) {
        Some(Settled::Failed(error)) => events.push_back(Event::Failed { target, error }),
        Some(Settled::Recovered(after)) => events.push_back(Event::Recovered { target, after }),
        None => {}
    }
}

/// The first records of a queue, as one batch.
fn batch<'a>(lines: impl Iterator<Item = &'a str>) -> Batch {
    let (bytes, lines) = join_lines(lines, BATCH_LINES, BATCH_BYTES, b"", b"\n");
    Batch { bytes, lines }
}

#[cfg(test)]
mod tests;
