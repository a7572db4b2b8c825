//! The delivery state machine's vocabulary with its shell: the [`Action`]s
//! it asks for (write, spill, replay, reopen, check), the [`Outcome`]s the
//! shell reports back, the [`Event`]s an operator hears of, and what is left
//! when it stops.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A file's identity: what `stat` says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// What the CDR file's path names now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtPath {
    File(FileId),
    /// Nothing: the file was deleted or moved away.
    Missing,
    /// The path could not be examined (a directory without permission):
    /// no reason to leave the open file.
    Unknown,
}

/// Which file an action or an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cdr,
    Spill,
}

/// Why the CDR file is opened again by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// A reload asked for it (log rotation: move the file, then reload).
    Reload,
    /// The path names nothing: the file was deleted or moved away.
    Missing,
    /// The path names another file than the one open.
    Replaced,
    /// The open file could not be examined.
    Unreadable,
}

impl Reopen {
    pub fn as_str(self) -> &'static str {
        match self {
            Reopen::Reload => "a reload asked for it",
            Reopen::Missing => "the file was deleted or moved away",
            Reopen::Replaced => "the path names another file",
            Reopen::Unreadable => "the open file cannot be examined",
        }
    }
}

/// A failed file operation, with the file it concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct CdrIoError {
    /// What was being done: `write`, `open`, `read`, `remove`.
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Records to append, one JSON object per line, each line ending in `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub lines: usize,
}

/// What the shell is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Append to the CDR file, whole lines only: answer [`Outcome::Written`].
    Write(Batch),
    /// Append to the spill file (creating it): answer [`Outcome::Spilled`].
    Spill(Batch),
    /// Read up to `max_lines` whole records from the spill file from byte
    /// `offset`: answer [`Outcome::Loaded`].
    LoadSpill { offset: u64, max_lines: usize },
    /// Every record of the spill is in the CDR file: make that durable (sync)
    /// and remove the spill. Answer [`Outcome::SpillRemoved`].
    RemoveSpill,
    /// Compare the open CDR file with its path: answer [`Outcome::Identity`].
    CheckIdentity,
    /// Open the CDR file by its path (creating it), replacing the open one:
    /// answer [`Outcome::Reopened`].
    Reopen(Reopen),
}

/// How an [`Action`] went.
#[derive(Debug)]
pub enum Outcome {
    /// Whole lines now in the CDR file, from the front of the batch, and why
    /// not all of them were.
    Written {
        lines: usize,
        error: Option<CdrIoError>,
    },
    Spilled {
        lines: usize,
        error: Option<CdrIoError>,
    },
    Loaded(Result<Loaded, CdrIoError>),
    SpillRemoved(Result<(), CdrIoError>),
    Identity {
        /// The open file's identity; `None` if `fstat` failed.
        open: Option<FileId>,
        at_path: AtPath,
    },
    Reopened(Result<(), CdrIoError>),
}

/// Records read back from the spill.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Each record (without its newline) with the spill offset just past it.
    pub lines: Vec<(String, u64)>,
    /// Where the next read starts (past lines skipped as damaged too).
    pub offset: u64,
    /// The read reached the end of the spill.
    pub eof: bool,
}

/// What the shell should know, to log and count.
#[derive(Debug)]
pub enum Event {
    /// An operation failed; it is retried after [`RETRY`].
    Failed {
        target: Target,
        error: CdrIoError,
    },
    /// A file that was failing took records again.
    Recovered {
        target: Target,
        after: Duration,
    },
    /// Memory is full: records go to a new spill file from now on.
    SpillStarted,
    /// The spill was replayed into the CDR file (`lines` records) and removed.
    SpillDrained {
        lines: u64,
    },
    Reopened(Reopen),
}

/// What is left when the writer stops.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Records held in memory only, oldest first.
    pub held: Vec<String>,
    pub spill: Option<SpillLeft>,
}

/// A spill file left for the next start.
#[derive(Debug, PartialEq, Eq)]
pub struct SpillLeft {
    /// Records in it that are not in the CDR file.
    pub lines: u64,
    /// Its first bytes, up to here, are in the CDR file already: the shell
    /// cuts them off so the next start does not write them twice.
    pub replayed_to: u64,
}
