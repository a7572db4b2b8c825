//! The database's spool on disk: a folder of append-only segment files
//! (`00000000000000000001.cdrs`, numbered in write order), one CDR line per
//! line, each append fsynced before it is reported. The I/O that
//! [`DbQueue`](super::queue::DbQueue) asks for, done with plain blocking
//! calls (the daemon runs them on tokio's blocking pool).
//!
//! Appends land whole lines only ([`LineAppender`]): a full disk leaves no
//! half record. A start never appends to a segment an earlier run left (it
//! may end with a record cut off by a crash): it opens a new one. A line read
//! back that is not a JSON object with an `id` (a record cut off by a crash)
//! is logged with its text and skipped. Segments are deleted whole, once
//! every record in them has committed.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::queue::{Action, InsertError, Loaded, Outcome, SEGMENT_BYTES, SpoolFound, SpoolPos};
use crate::cdr::append::LineAppender;

const SUFFIX: &str = ".cdrs";
/// Where records the database refuses are set aside (its name is no
/// segment's: it is never replayed).
pub const REJECTED: &str = "rejected.cdrs";
/// Bytes of a damaged line quoted in the log.
const QUOTED: usize = 300;

/// A spool operation that failed, with the file it was on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct SpoolError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn failed<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The spool folder and its open segment.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Segments on disk (the current one once it has been created).
    segments: BTreeSet<u64>,
    current: u64,
    open: Option<(File, LineAppender)>,
    /// The current segment's length.
    len: u64,
}

impl Spool {
    /// Opens the spool folder (creating it), counts the records earlier runs
    /// left, and picks a new segment for this run's appends.
    pub fn open(dir: &Path) -> Result<(Spool, SpoolFound), SpoolError> {
        fs::create_dir_all(dir).map_err(failed("create", dir))?;
        let mut segments = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(failed("list", dir))? {
            let entry = entry.map_err(failed("list", dir))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            {
                segments.insert(id);
            }
        }
        let mut lines = 0;
        for &id in &segments {
            let path = segment_path(dir, id);
            let file = File::open(&path).map_err(failed("read", &path))?;
            lines += count_lines(file).map_err(failed("read", &path))?;
        }
        let current = segments.last().map_or(1, |last| last + 1);
        let found = SpoolFound {
            first: segments
                .first()
                .map(|&segment| SpoolPos { segment, offset: 0 }),
            write_at: SpoolPos {
                segment: current,
                offset: 0,
            },
            lines,
        };
        let spool = Spool {
            dir: dir.to_path_buf(),
            segments,
            current,
            open: None,
            len: 0,
        };
        Ok((spool, found))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the spool's segments (for `vigil ctl status`).
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|&id| fs::metadata(segment_path(&self.dir, id)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Does a spool action ([`Action::Insert`] is the database's).
    pub fn perform(&mut self, action: Action) -> Outcome {
        match action {
            Action::Append { bytes, lines } => self.append(&bytes, lines),
            Action::Load { from, max_lines } => {
                Outcome::Loaded(self.load(from, max_lines).map_err(|e| e.to_string()))
            }
            Action::Trim { committed } => {
                Outcome::Trimmed(self.trim(committed).map_err(|e| e.to_string()))
            }
            Action::Reject { line } => {
                Outcome::Rejected(self.reject(&line).map_err(|e| e.to_string()))
            }
            Action::Insert { .. } => {
                debug_assert!(false, "an insert is not spool I/O");
                Outcome::Inserted(Err(InsertError::transient("an insert given to the spool")))
            }
        }
    }

    fn append(&mut self, bytes: &[u8], asked: usize) -> Outcome {
        let fail = |segment, error: SpoolError| Outcome::Appended {
            segment,
            start: 0,
            lines: 0,
            error: Some(error.to_string()),
        };
        if self.len >= SEGMENT_BYTES {
            self.open = None;
            self.current += 1;
            self.len = 0;
        }
        let path = segment_path(&self.dir, self.current);
        if self.open.is_none() {
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(failed("create", &path));
            match opened {
                Ok(file) => {
                    // The new name must survive a crash as well as the data.
                    if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                        return fail(self.current, failed("sync", &self.dir)(e));
                    }
                    self.segments.insert(self.current);
                    self.open = Some((file, LineAppender::default()));
                }
                Err(e) => return fail(self.current, e),
            }
        }
        let Some((file, appender)) = &mut self.open else {
            return fail(
                self.current,
                failed("open", &path)(io::ErrorKind::NotFound.into()),
            );
        };
        let appended = appender.append(file, bytes);
        let written: usize = bytes
            .split_inclusive(|&b| b == b'\n')
            .take(appended.lines)
            .map(<[u8]>::len)
            .sum();
        let end = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return fail(self.current, failed("examine", &path)(e)),
        };
        let start = end.saturating_sub(written as u64);
        let mut error = appended
            .error
            .map(|e| failed("write", &path)(e).to_string());
        let mut lines = appended.lines.min(asked);
        if lines > 0
            && let Err(e) = file.sync_data()
        {
            // Not on disk for sure: undone, and tried again.
            let _ = file.set_len(start);
            error = Some(failed("sync", &path)(e).to_string());
            lines = 0;
        }
        self.len = if lines > 0 { end } else { start.max(self.len) };
        Outcome::Appended {
            segment: self.current,
            start,
            lines,
            error,
        }
    }

    fn load(&mut self, from: SpoolPos, max_lines: usize) -> Result<Loaded, SpoolError> {
        let mut loaded = Loaded {
            lines: Vec::new(),
            next: from,
        };
        let ids: Vec<u64> = self.segments.range(from.segment..).copied().collect();
        for id in ids {
            if loaded.lines.len() >= max_lines {
                break;
            }
            let path = segment_path(&self.dir, id);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                // Gone (deleted by hand): nothing to read there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed("read", &path)(e)),
            };
            let mut offset = if id == from.segment { from.offset } else { 0 };
            file.seek(SeekFrom::Start(offset))
                .map_err(failed("read", &path))?;
            let mut reader = BufReader::with_capacity(256 * 1024, file);
            let mut line = Vec::new();
            while loaded.lines.len() < max_lines {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(failed("read", &path))?;
                if n == 0 {
                    break;
                }
                let whole = line.ends_with(b"\n");
                if !whole && id == self.current {
                    // Being written (cannot happen: appends are whole).
                    break;
                }
                offset += n as u64;
                let end = SpoolPos {
                    segment: id,
                    offset,
                };
                loaded.next = end;
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                match record_line(text) {
                    Some(record) => loaded.lines.push((record, end)),
                    None => tracing::warn!(
                        spool = %path.display(),
                        offset,
                        line = %String::from_utf8_lossy(&text[..text.len().min(QUOTED)]),
                        "a line in the CDR spool is no CDR (cut off by a crash?): skipped"
                    ),
                }
            }
            if loaded.lines.len() < max_lines {
                loaded.next = SpoolPos {
                    segment: id,
                    offset,
                };
            }
        }
        Ok(loaded)
    }

    /// Appends a record the database refuses to `rejected.cdrs` (kept for an
    /// operator; never read back), fsynced.
    fn reject(&mut self, line: &str) -> Result<(), SpoolError> {
        use std::io::Write;
        let path = self.dir.join(REJECTED);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(failed("open", &path))?;
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        file.write_all(&bytes).map_err(failed("write", &path))?;
        file.sync_data().map_err(failed("sync", &path))
    }

    fn trim(&mut self, committed: SpoolPos) -> Result<SpoolPos, SpoolError> {
        let done: Vec<u64> = self.segments.range(..committed.segment).copied().collect();
        for id in done {
            self.remove(id)?;
        }
        if committed.segment == self.current && committed.offset == self.len && self.len > 0 {
            self.open = None;
            self.remove(self.current)?;
            self.current += 1;
            self.len = 0;
        }
        Ok(SpoolPos {
            segment: self.current,
            offset: self.len,
        })
    }

    fn remove(&mut self, id: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed("remove", &path)(e)),
        }
        self.segments.remove(&id);
        Ok(())
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// A spool line as a record: a JSON object with an `id`, else `None`.
fn record_line(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Keyed<'a> {
        #[serde(borrow)]
        id: &'a str,
    }
    let text = std::str::from_utf8(text).ok()?;
    let keyed: Keyed<'_> = serde_json::from_str(text).ok()?;
    (!keyed.id.is_empty()).then(|| text.to_string())
}

fn count_lines(file: File) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut lines = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(lines);
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u32) -> String {
        format!("{{\"id\":\"00000000-0000-4000-8000-{i:012}\"}}")
    }

    fn append(spool: &mut Spool, ids: std::ops::RangeInclusive<u32>) -> Outcome {
        let lines: Vec<String> = ids.map(line).collect();
        let mut bytes = lines.join("\n").into_bytes();
        bytes.push(b'\n');
        spool.perform(Action::Append {
            bytes,
            lines: lines.len(),
        })
    }

    #[test]
    fn a_cdr_spool_keeps_its_records_across_a_restart_and_skips_a_cut_off_line() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut spool, found) = Spool::open(dir.path()).expect("open");
        assert_eq!(found.lines, 0);
        assert_eq!(found.first, None);
        let Outcome::Appended {
            segment,
            start,
            lines,
            error,
        } = append(&mut spool, 1..=3)
        else {
            panic!("not an append outcome");
        };
        assert_eq!((segment, start, lines, error), (1, 0, 3, None));
        // A crash cuts the next record off halfway.
        let path = segment_path(dir.path(), 1);
        let mut text = fs::read_to_string(&path).expect("segment");
        text.push_str("{\"id\":\"00000000-00");
        fs::write(&path, text).expect("cut");
        drop(spool);
        let (mut spool, found) = Spool::open(dir.path()).expect("reopen");
        assert_eq!(found.lines, 3);
        assert_eq!(
            found.first,
            Some(SpoolPos {
                segment: 1,
                offset: 0
            })
        );
        assert_eq!(found.write_at.segment, 2, "a segment of its own");
        let Outcome::Appended { segment, start, .. } = append(&mut spool, 4..=4) else {
            panic!("not an append outcome");
        };
        assert_eq!((segment, start), (2, 0));
        let Outcome::Loaded(Ok(loaded)) = spool.perform(Action::Load {
            from: SpoolPos::default(),
            max_lines: 100,
        }) else {
            panic!("not loaded");
        };
        let got: Vec<&str> = loaded.lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(got, [line(1), line(2), line(3), line(4)]);
        assert_eq!(
            loaded.next,
            SpoolPos {
                segment: 2,
                offset: line(4).len() as u64 + 1
            }
        );
        // Everything committed: both segments go.
        let Outcome::Trimmed(Ok(write_at)) = spool.perform(Action::Trim {
            committed: loaded.next,
        }) else {
            panic!("not trimmed");
        };
        assert_eq!(
            write_at,
            SpoolPos {
                segment: 3,
                offset: 0
            }
        );
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_cdr_spool_load_stops_at_max_lines_and_resumes_there() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut spool, _) = Spool::open(dir.path()).expect("open");
        append(&mut spool, 1..=10);
        let Outcome::Loaded(Ok(first)) = spool.perform(Action::Load {
            from: SpoolPos {
                segment: 1,
                offset: 0,
            },
            max_lines: 4,
        }) else {
            panic!("not loaded");
        };
        assert_eq!(first.lines.len(), 4);
        let Outcome::Loaded(Ok(rest)) = spool.perform(Action::Load {
            from: first.next,
            max_lines: 100,
        }) else {
            panic!("not loaded");
        };
        assert_eq!(rest.lines.first().map(|l| l.0.clone()), Some(line(5)));
        assert_eq!(rest.lines.len(), 6);
    }
}
