//! The CDR file and its spill file on disk: the I/O that [`Delivery`] asks
//! for, done with plain blocking calls (the writer runs them on tokio's
//! blocking pool), and the check `vigil check` makes of `cdr.path`.
//!
//! Both files are opened `O_APPEND` and written whole lines at a time
//! ([`LineAppender`]). The spill is read back with positioned reads from the
//! offset the state machine keeps; a line in it that is not JSON (the end of
//! a record cut off by a crash) is logged with its text and skipped, never
//! written to the CDR file.
//!
//! [`Delivery`]: super::delivery::Delivery

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::append::{Appended, LineAppender};
use super::delivery::{Action, AtPath, CdrIoError, FileId, Loaded, Outcome};

/// Bytes read from the spill at a time (grown for a longer record).
const READ_CHUNK: usize = 256 * 1024;
/// A spill "line" longer than this is no record Vigil wrote (a CDR line is a
/// few hundred bytes, a few KiB with policy fields): damage, skipped, so
/// that a corrupted spill cannot make the writer read it all into memory.
const MAX_LINE: usize = 16 << 20;
/// Bytes of a damaged line quoted in the log.
const QUOTED: usize = 1000;

/// The open CDR file and, while there is one, the spill file.
#[derive(Debug)]
pub struct CdrFiles {
    path: PathBuf,
    spill_path: PathBuf,
    cdr: File,
    cdr_appender: LineAppender,
    spill: Option<(File, LineAppender)>,
}

/// A spill file found at start (left by a crash, or by a shutdown while the
/// disk was full).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FoundSpill {
    /// Records in it.
    pub lines: u64,
    /// Lines that are not JSON (a record cut off by a crash): skipped (and
    /// quoted in the log) when the spill is replayed.
    pub damaged: u64,
}

impl CdrFiles {
    /// Opens (creating it and its directory if needed) the CDR file, and the
    /// spill file if an earlier run left one.
    pub fn open(
        path: &Path,
        spill_path: &Path,
    ) -> Result<(CdrFiles, Option<FoundSpill>), CdrIoError> {
        let (cdr, cdr_appender) = open_append(path, false)?;
        let mut files = CdrFiles {
            path: path.to_path_buf(),
            spill_path: spill_path.to_path_buf(),
            cdr,
            cdr_appender,
            spill: None,
        };
        let found = match fs::metadata(spill_path) {
            Ok(_) => {
                let (file, appender) = open_append(spill_path, true)?;
                let found = scan_spill(&file).map_err(|source| CdrIoError {
                    op: "read",
                    path: spill_path.to_path_buf(),
                    source,
                })?;
                files.spill = Some((file, appender));
                Some(found)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(CdrIoError {
                    op: "examine",
                    path: spill_path.to_path_buf(),
                    source,
                });
            }
        };
        Ok((files, found))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spill_path(&self) -> &Path {
        &self.spill_path
    }

    /// Does what the state machine asked and says how it went.
    pub fn perform(&mut self, action: Action) -> Outcome {
        match action {
            Action::Write(batch) => {
                let appended = self.cdr_appender.append(&mut self.cdr, &batch.bytes);
                let (lines, error) = self.settle_append(appended, Which::Cdr);
                Outcome::Written { lines, error }
            }
            Action::Spill(batch) => {
                let appended = match self.spill_file() {
                    Ok((file, appender)) => appender.append(file, &batch.bytes),
                    Err(error) => {
                        return Outcome::Spilled {
                            lines: 0,
                            error: Some(error),
                        };
                    }
                };
                let (lines, error) = self.settle_append(appended, Which::Spill);
                Outcome::Spilled { lines, error }
            }
            Action::LoadSpill { offset, max_lines } => {
                Outcome::Loaded(self.load_spill(offset, max_lines))
            }
            Action::RemoveSpill => Outcome::SpillRemoved(self.remove_spill()),
            Action::CheckIdentity => {
                let open = self.cdr.metadata().ok().map(|m| file_id(&m));
                let at_path = match fs::metadata(&self.path) {
                    Ok(m) => AtPath::File(file_id(&m)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        ) =>
                    {
                        AtPath::Missing
                    }
                    Err(_) => AtPath::Unknown,
                };
                Outcome::Identity { open, at_path }
            }
            Action::Reopen(_) => Outcome::Reopened(self.reopen()),
        }
    }

    /// Makes both files durable (shutdown).
    pub fn sync(&self) -> Result<(), CdrIoError> {
        self.cdr
            .sync_all()
            .map_err(|source| self.error("sync", &self.path, source))?;
        if let Some((spill, _)) = &self.spill {
            spill
                .sync_all()
                .map_err(|source| self.error("sync", &self.spill_path, source))?;
        }
        Ok(())
    }

    /// Cuts the spill's first `from` bytes (records already in the CDR file)
    /// so the next start does not write them twice: the rest is copied to a
    /// new file that replaces it.
    pub fn compact_spill(&mut self, from: u64) -> Result<(), CdrIoError> {
        let mut temp_name = self.spill_path.as_os_str().to_os_string();
        temp_name.push(".tmp");
        let temp = PathBuf::from(temp_name);
        let copied = (|| {
            let mut source = File::open(&self.spill_path)?;
            source.seek(SeekFrom::Start(from))?;
            let mut target = File::create(&temp)?;
            io::copy(&mut source, &mut target)?;
            target.sync_all()?;
            fs::rename(&temp, &self.spill_path)
        })();
        if let Err(source) = copied {
            let _ = fs::remove_file(&temp);
            return Err(self.error("rewrite", &self.spill_path, source));
        }
        self.spill = None;
        Ok(())
    }

    fn error(&self, op: &'static str, path: &Path, source: io::Error) -> CdrIoError {
        CdrIoError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An append's result as the state machine takes it; a line left cut
    /// off is worth a log line of its own.
    fn settle_append(&self, appended: Appended, which: Which) -> (usize, Option<CdrIoError>) {
        let path = match which {
            Which::Cdr => &self.path,
            Which::Spill => &self.spill_path,
        };
        if let Some(e) = &appended.cut_failed {
            tracing::error!(
                file = %path.display(),
                error = %e,
                "a CDR line was cut off and could not be removed: the next record starts on a new line"
            );
        }
        let error = appended
            .error
            .map(|source| self.error("write", path, source));
        (appended.lines, error)
    }

    fn spill_file(&mut self) -> Result<&mut (File, LineAppender), CdrIoError> {
        let open = match self.spill.take() {
            Some(open) => open,
            None => open_append(&self.spill_path, true)?,
        };
        Ok(self.spill.insert(open))
    }

    /// Up to `max_lines` records from `offset` on.
    fn load_spill(&mut self, offset: u64, max_lines: usize) -> Result<Loaded, CdrIoError> {
        let mut loaded = Loaded {
            offset,
            ..Loaded::default()
        };
        let Some((file, _)) = &self.spill else {
            loaded.eof = true;
            return Ok(loaded);
        };
        let mut buf = vec![0u8; READ_CHUNK];
        while loaded.lines.len() < max_lines {
            let n = read_at_most(file, &mut buf, loaded.offset)
                .map_err(|source| self.error("read", &self.spill_path, source))?;
            if n == 0 {
                loaded.eof = true;
                break;
            }
            let chunk = &buf[..n];
            let mut start = 0;
            while loaded.lines.len() < max_lines {
                let Some(len) = chunk[start..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &chunk[start..start + len];
                start += len + 1;
                let end = loaded.offset + start as u64;
                match record(line) {
                    Some(text) => loaded.lines.push((text, end)),
                    None if line.is_empty() => {}
                    None => damaged(&self.spill_path, line),
                }
            }
            if start == 0 {
                if n < buf.len() {
                    // The end of the file, in the middle of a record that
                    // never got its newline: a crash cut it off.
                    damaged(&self.spill_path, chunk);
                    loaded.offset += n as u64;
                    loaded.eof = true;
                    break;
                }
                if buf.len() >= MAX_LINE {
                    damaged(&self.spill_path, chunk);
                    loaded.offset = skip_line(file, loaded.offset + n as u64)
                        .map_err(|source| self.error("read", &self.spill_path, source))?;
                    continue;
                }
                // A record longer than the buffer.
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            loaded.offset += start as u64;
        }
        Ok(loaded)
    }

    /// The spill's records are all in the CDR file: make that durable, then
    /// remove the spill (or, failing that, empty it).
    fn remove_spill(&mut self) -> Result<(), CdrIoError> {
        self.cdr
            .sync_data()
            .map_err(|source| self.error("sync", &self.path, source))?;
        match fs::remove_file(&self.spill_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(removing) => {
                let emptied = self.spill.as_ref().map(|(f, _)| f.set_len(0));
                if !matches!(emptied, Some(Ok(()))) {
                    return Err(self.error("remove", &self.spill_path, removing));
                }
            }
        }
        self.spill = None;
        Ok(())
    }

    /// A fresh handle on the path (the old file was moved away, deleted or
    /// replaced); the old one is synced first, for what was written to it.
    fn reopen(&mut self) -> Result<(), CdrIoError> {
        if let Err(e) = self.cdr.sync_all() {
            tracing::warn!(file = %self.path.display(), error = %e, "CDR file sync before reopen failed");
        }
        let (file, appender) = open_append(&self.path, false)?;
        self.cdr = file;
        self.cdr_appender = appender;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Cdr,
    Spill,
}

fn file_id(m: &fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Opens `path` for appending, and for reading if `read` (the spill, which is
/// read back), creating it and its directory; notes whether it ends mid-line.
fn open_append(path: &Path, read: bool) -> Result<(File, LineAppender), CdrIoError> {
    let error = |op, source| CdrIoError {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| error("create the directory of", e))?;
    }
    let file = OpenOptions::new()
        .read(read)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| error("open", e))?;
    let len = file.metadata().map_err(|e| error("examine", e))?.len();
    // Read through a handle of its own: the CDR file's handle is write-only
    // (and the file may be, to Vigil's user).
    let ends_mid_line = len > 0
        && File::open(path).is_ok_and(|f| {
            let mut last = [0u8];
            f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
        });
    Ok((file, LineAppender::new(ends_mid_line)))
}

/// Fills `buf` from `offset` as far as the file goes.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A spill line as a record, if it is one (UTF-8 JSON).
fn record(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(text.to_string())
}

/// The offset just past the next newline at or after `from` (or the end).
fn skip_line(file: &File, mut from: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_at_most(file, &mut buf, from)?;
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        from += n as u64;
        if n < buf.len() {
            return Ok(from);
        }
    }
}

fn damaged(path: &Path, line: &[u8]) {
    tracing::error!(
        file = %path.display(),
        bytes = line.len(),
        line = %String::from_utf8_lossy(&line[..line.len().min(QUOTED)]),
        "a line of the CDR spill file is not a whole record (cut off by a crash?): skipped, quoted here"
    );
}

/// Counts the records of a spill found at start, and its damaged lines.
fn scan_spill(file: &File) -> io::Result<FoundSpill> {
    let mut found = FoundSpill::default();
    let mut reader = BufReader::new(file.try_clone()?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(found);
        }
        if n == MAX_LINE && !line.ends_with(b"\n") {
            reader.skip_until(b'\n')?;
            found.damaged += 1;
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        if record(text).is_some() {
            found.lines += 1;
        } else {
            found.damaged += 1;
        }
    }
}

/// Why `cdr.path` (or the spill in `cdr.spool`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CdrPathError {
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot create the directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("{} is a directory, not a file", .0.display())]
    IsADirectory(PathBuf),
    #[error("cannot open {} for appending: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
}

/// How much of the CDR file's end [`billed_ids`] reads: the CDRs written in
/// the last moments before a crash, many times over (about 80,000 lines).
pub const BILLED_TAIL: u64 = 16 << 20;

/// Which of `wanted` (CDR ids) the CDR file's last [`BILLED_TAIL`] bytes or
/// the spill file carry: calls already billed. Missing files carry none.
pub fn billed_ids(
    cdr: &Path,
    spill: &Path,
    wanted: &std::collections::HashSet<String>,
) -> std::io::Result<std::collections::HashSet<String>> {
    use std::io::{BufRead, Seek, SeekFrom};
    let mut found = std::collections::HashSet::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    for (path, tail) in [(cdr, Some(BILLED_TAIL)), (spill, None)] {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let start = tail.map_or(0, |t| len.saturating_sub(t));
        file.seek(SeekFrom::Start(start))?;
        let mut reader = std::io::BufReader::new(file);
        if start > 0 {
            // The first line read is cut: skip it.
            reader.read_until(b'\n', &mut Vec::new())?;
        }
        for line in reader.split(b'\n') {
            let line = line?;
            if let Some(id) = std::str::from_utf8(&line).ok().and_then(super::line_id)
                && wanted.contains(id)
            {
                found.insert(id.to_string());
            }
        }
    }
    Ok(found)
}

/// Finds out whether `path` can be opened for appending the way the writer
/// will (its directory created if missing), and leaves nothing behind that
/// was not there before: directories and a file it had to create for the
/// test are removed again.
pub fn check_path(path: &Path) -> Result<(), CdrPathError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let created = create_missing_dirs(dir)?;
    let result = probe_file(path);
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
    result
}

fn probe_file(path: &Path) -> Result<(), CdrPathError> {
    let open_error = |source| CdrPathError::Open {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(CdrPathError::IsADirectory(path.to_path_buf())),
        Ok(_) => OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(open_error),
        Err(_) => {
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(path)
                .map_err(open_error)?;
            let _ = fs::remove_file(path);
            Ok(())
        }
    }
}

/// Creates the missing directories of `dir`, outermost first, and returns
/// them (to remove again).
fn create_missing_dirs(dir: &Path) -> Result<Vec<PathBuf>, CdrPathError> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(CdrPathError::NotADirectory(at.to_path_buf())),
            Err(_) => missing.push(at.to_path_buf()),
        }
        match at.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        if let Err(source) = fs::create_dir(&dir) {
            for made in created.iter().rev() {
                let _ = fs::remove_dir(made);
            }
            return Err(CdrPathError::CreateDir { dir, source });
        }
        created.push(dir);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::delivery::Batch;

    fn batch(lines: &[&str]) -> Batch {
        let bytes = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        Batch {
            bytes: bytes.into_bytes(),
            lines: lines.len(),
        }
    }

    #[test]
    fn a_cdr_spill_is_read_back_in_chunks_skipping_damaged_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, spill) = (dir.path().join("cdr.jsonl"), dir.path().join("cdr.spill"));
        std::fs::write(&spill, "{\"n\":1}\n{\"n\":2\n{\"n\":3}\n{\"n\":4}\n{\"cut").expect("spill");
        let (mut files, found) = CdrFiles::open(&path, &spill).expect("open");
        assert_eq!(
            found,
            Some(FoundSpill {
                lines: 3,
                damaged: 2
            })
        );
        let Outcome::Loaded(Ok(first)) = files.perform(Action::LoadSpill {
            offset: 0,
            max_lines: 2,
        }) else {
            panic!("loaded")
        };
        let texts: Vec<&str> = first.lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(texts, ["{\"n\":1}", "{\"n\":3}"]);
        assert_eq!(first.lines[0].1, 8);
        assert!(!first.eof);
        let Outcome::Loaded(Ok(rest)) = files.perform(Action::LoadSpill {
            offset: first.offset,
            max_lines: 10,
        }) else {
            panic!("loaded")
        };
        let texts: Vec<&str> = rest.lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(texts, ["{\"n\":4}"]);
        assert!(rest.eof);
        assert_eq!(rest.offset, std::fs::metadata(&spill).expect("spill").len());
        // A new record after the cut-off one starts on a line of its own.
        let Outcome::Spilled {
            lines: 1,
            error: None,
        } = files.perform(Action::Spill(batch(&["{\"n\":5}"])))
        else {
            panic!("spilled")
        };
        let Outcome::Loaded(Ok(last)) = files.perform(Action::LoadSpill {
            offset: rest.offset,
            max_lines: 10,
        }) else {
            panic!("loaded")
        };
        assert_eq!(last.lines.len(), 1);
        assert_eq!(last.lines[0].0, "{\"n\":5}");
        let Outcome::SpillRemoved(Ok(())) = files.perform(Action::RemoveSpill) else {
            panic!("removed")
        };
        assert!(!spill.exists());
    }

    #[test]
    fn a_cdr_spill_with_a_huge_damaged_line_is_skipped_not_read_into_memory() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, spill) = (dir.path().join("cdr.jsonl"), dir.path().join("cdr.spill"));
        let mut text = b"{\"n\":1}\n".to_vec();
        text.resize(text.len() + MAX_LINE + 10, b'x');
        text.extend_from_slice(b"\n{\"n\":2}\n");
        std::fs::write(&spill, &text).expect("spill");
        let (mut files, found) = CdrFiles::open(&path, &spill).expect("open");
        assert_eq!(
            found,
            Some(FoundSpill {
                lines: 2,
                damaged: 1
            })
        );
        let Outcome::Loaded(Ok(loaded)) = files.perform(Action::LoadSpill {
            offset: 0,
            max_lines: 10,
        }) else {
            panic!("loaded")
        };
        let texts: Vec<&str> = loaded.lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(texts, ["{\"n\":1}", "{\"n\":2}"]);
        assert!(loaded.eof);
    }

    #[test]
    fn a_partly_replayed_cdr_spill_is_cut_to_what_is_left() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, spill) = (dir.path().join("cdr.jsonl"), dir.path().join("cdr.spill"));
        std::fs::write(&spill, "{\"n\":1}\n{\"n\":2}\n").expect("spill");
        let (mut files, _) = CdrFiles::open(&path, &spill).expect("open");
        files.compact_spill(8).expect("compact");
        assert_eq!(
            std::fs::read_to_string(&spill).expect("spill"),
            "{\"n\":2}\n"
        );
    }

    #[test]
    fn a_cdr_file_replaced_at_its_path_is_told_apart_and_reopened() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, spill) = (dir.path().join("cdr.jsonl"), dir.path().join("cdr.spill"));
        let (mut files, _) = CdrFiles::open(&path, &spill).expect("open");
        let Outcome::Identity {
            open: Some(open),
            at_path: AtPath::File(there),
        } = files.perform(Action::CheckIdentity)
        else {
            panic!("identity")
        };
        assert_eq!(open, there);
        std::fs::remove_file(&path).expect("delete");
        let Outcome::Identity {
            at_path: AtPath::Missing,
            ..
        } = files.perform(Action::CheckIdentity)
        else {
            panic!("missing")
        };
        let Outcome::Reopened(Ok(())) =
            files.perform(Action::Reopen(super::super::delivery::Reopen::Missing))
        else {
            panic!("reopened")
        };
        files.perform(Action::Write(batch(&["{\"n\":1}"])));
        assert_eq!(std::fs::read_to_string(&path).expect("cdr"), "{\"n\":1}\n");
    }

    #[test]
    fn check_path_creates_nothing_that_stays_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().expect("dir");
        let fresh = dir.path().join("a/b/cdr.jsonl");
        check_path(&fresh).expect("writable");
        assert!(!dir.path().join("a").exists(), "no directory left behind");
        let existing = dir.path().join("cdr.jsonl");
        std::fs::write(&existing, "{}\n").expect("write");
        check_path(&existing).expect("writable");
        assert_eq!(std::fs::read_to_string(&existing).expect("read"), "{}\n");
        let under_a_file = existing.join("cdr.jsonl");
        let e = check_path(&under_a_file).expect_err("under a file");
        assert!(matches!(e, CdrPathError::NotADirectory(_)), "{e}");
        let e = check_path(dir.path()).expect_err("a directory");
        assert!(matches!(e, CdrPathError::IsADirectory(_)), "{e}");
    }

    #[test]
    fn billed_ids_are_read_from_the_cdr_file_tail_and_the_spill() {
        let dir = tempfile::tempdir().expect("dir");
        let (cdr, spill) = (dir.path().join("cdr.jsonl"), dir.path().join("cdr.spill"));
        std::fs::write(&cdr, "{\"id\":\"a1\",\"x\":1}\nnot json\n{\"id\":\"b2\"}\n").expect("cdr");
        std::fs::write(&spill, "{\"id\":\"c3\"}\n").expect("spill");
        let wanted: std::collections::HashSet<String> = ["a1", "c3", "d4"].map(String::from).into();
        let found = billed_ids(&cdr, &spill, &wanted).expect("read");
        assert_eq!(found, ["a1", "c3"].map(String::from).into());
        let none = billed_ids(&dir.path().join("none"), &dir.path().join("none2"), &wanted)
            .expect("missing files carry none");
        assert!(none.is_empty());
    }
}
