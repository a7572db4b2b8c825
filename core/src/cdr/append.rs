//! Appending whole lines, and nothing but whole lines, to a file that may run
//! out of room at any byte.
//!
//! A billing system reads the CDR file line by line; one cut-off line (a write
//! that stopped at ENOSPC halfway through a record) makes every reader choke
//! or, worse, skip. So an append either lands whole lines or is undone back to
//! the last whole line it wrote: the length before the write is remembered
//! (the file is opened `O_APPEND`, so the write went to that offset) and the
//! file is truncated to it plus the whole lines that made it. If even the
//! truncation fails, the file is known to end mid-line and the next append
//! starts with a newline, so the lines after the damaged one are valid JSON.
//!
//! The logic runs on any [`LineSink`], so tests drive it with a fake disk
//! that fills up, or refuses to truncate, on demand.

use std::io;

/// What an append needs of a file.
pub trait LineSink {
    /// The file's length now (where an `O_APPEND` write lands).
    fn end(&mut self) -> io::Result<u64>;
    /// One `write(2)`: may write less than asked.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LineSink for std::fs::File {
    fn end(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        io::Write::write(self, bytes)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// How an append went.
#[derive(Debug)]
pub struct Appended {
    /// Whole lines now in the file, counted from the first one asked for.
    pub lines: usize,
    /// Why the rest were not written; `None` when every line was.
    pub error: Option<io::Error>,
    /// The truncation back to the last whole line failed too: the file ends
    /// mid-line (the next append starts on a new line).
    pub cut_failed: Option<io::Error>,
}

/// Appends whole lines to one file, remembering whether it ends mid-line.
#[derive(Debug, Default)]
pub struct LineAppender {
    ends_mid_line: bool,
}

impl LineAppender {
    /// For a file whose last byte is, or is not, a newline (a cut-off line
    /// left by a crash, or by an older Vigil).
    pub fn new(ends_mid_line: bool) -> LineAppender {
        LineAppender { ends_mid_line }
    }

    /// True if the file is known to end mid-line.
    pub fn ends_mid_line(&self) -> bool {
        self.ends_mid_line
    }

    /// Appends `lines` (each ending in `\n`) to `sink`. On a failed or short
    /// write the whole lines that made it stay and the rest is cut off.
    pub fn append(&mut self, sink: &mut impl LineSink, lines: &[u8]) -> Appended {
        let fail = |lines, error| Appended {
            lines,
            error: Some(error),
            cut_failed: None,
        };
        let total = count_lines(lines);
        if lines.is_empty() {
            return Appended {
                lines: 0,
                error: None,
                cut_failed: None,
            };
        }
        if self.ends_mid_line {
            // One byte lands whole or not at all: nothing to undo here.
            if let Err(e) = write_all(sink, b"\n").1 {
                return fail(0, e);
            }
            self.ends_mid_line = false;
        }
        let before = match sink.end() {
            Ok(len) => len,
            Err(e) => return fail(0, e),
        };
        let (written, result) = write_all(sink, lines);
        let Err(error) = result else {
            return Appended {
                lines: total,
                error: None,
                cut_failed: None,
            };
        };
        let keep = lines[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let mut cut_failed = None;
        if keep < written {
            if let Err(e) = sink.truncate(before + keep as u64) {
                self.ends_mid_line = true;
                cut_failed = Some(e);
            }
        }
        Appended {
            lines: count_lines(&lines[..keep]),
            error: Some(error),
            cut_failed,
        }
    }
}

/// The first of `lines` that make one batch, joined: at most `max_lines`,
/// and about `max_bytes` (at least one line, whatever its size), each
/// followed by `after` and separated by `between`. Returns the bytes and how
/// many lines they hold.
pub fn join_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    max_lines: usize,
    max_bytes: usize,
    between: &[u8],
    after: &[u8],
) -> (Vec<u8>, usize) {
    let mut bytes = Vec::new();
    let mut count = 0;
    for line in lines {
        if count == max_lines || (count > 0 && bytes.len() + line.len() >= max_bytes) {
            break;
        }
        if count > 0 {
            bytes.extend_from_slice(between);
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(after);
        count += 1;
    }
    (bytes, count)
}

/// Writes until everything is written or a write fails; returns how much was
/// written either way.
fn write_all(sink: &mut impl LineSink, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match sink.write(&bytes[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// A file in memory with a fixed room, for tests: writes past the room are
/// short and then fail with ENOSPC, like a full disk; truncation can be made
/// to fail too.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeFile {
    pub bytes: Vec<u8>,
    /// Bytes the file may still grow by; `None`: unlimited.
    pub room: Option<usize>,
    pub truncate_fails: bool,
}

#[cfg(test)]
impl FakeFile {
    /// The file's lines; panics on a line that is not JSON or a missing final
    /// newline, which no reader of a CDR file may ever see.
    pub fn json_lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.bytes.clone()).expect("utf-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "ends mid-line: {text:?}"
        );
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde::de::IgnoredAny>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
                l.to_string()
            })
            .collect()
    }
}

#[cfg(test)]
impl LineSink for FakeFile {
    fn end(&mut self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.room.map_or(bytes.len(), |room| room.min(bytes.len()));
        if n == 0 && !bytes.is_empty() {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.bytes.extend_from_slice(&bytes[..n]);
        if let Some(room) = &mut self.room {
            *room -= n;
        }
        Ok(n)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.truncate_fails {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if let Some(room) = &mut self.room {
            *room += self.bytes.len().saturating_sub(len);
        }
        self.bytes.truncate(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ids: std::ops::Range<u32>) -> Vec<u8> {
        ids.map(|i| format!("{{\"call_id\":\"call-{i:04}\"}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_cdr_append_that_fits_writes_every_line() {
        let mut file = FakeFile::default();
        let mut appender = LineAppender::default();
        let a = appender.append(&mut file, &lines(0..3));
        assert_eq!((a.lines, a.error.is_none()), (3, true));
        assert_eq!(file.json_lines().len(), 3);
    }

    #[test]
    fn a_short_cdr_write_keeps_the_whole_lines_and_cuts_the_rest() {
        // Room for two and a half lines of 22 bytes.
        let mut file = FakeFile {
            room: Some(55),
            ..FakeFile::default()
        };
        let mut appender = LineAppender::default();
        let a = appender.append(&mut file, &lines(0..5));
        assert_eq!(a.lines, 2);
        assert_eq!(a.error.map(|e| e.raw_os_error()), Some(Some(28)));
        assert!(a.cut_failed.is_none());
        assert_eq!(file.json_lines().len(), 2, "the half line is gone");
        assert!(!appender.ends_mid_line());
        // Room again: the rest follows, and the file stays line by line.
        file.room = None;
        let a = appender.append(&mut file, &lines(2..5));
        assert_eq!(a.lines, 3);
        let all = file.json_lines();
        assert_eq!(all.len(), 5);
        assert!(all[4].contains("call-0004"));
    }

    #[test]
    fn a_cdr_file_that_cannot_be_cut_back_gets_a_newline_before_the_next_line() {
        let mut file = FakeFile {
            room: Some(30),
            truncate_fails: true,
            ..FakeFile::default()
        };
        let mut appender = LineAppender::default();
        let a = appender.append(&mut file, &lines(0..2));
        assert_eq!(a.lines, 1);
        assert!(a.cut_failed.is_some());
        assert!(appender.ends_mid_line());
        file.room = None;
        let a = appender.append(&mut file, &lines(1..2));
        assert_eq!((a.lines, a.error.is_none()), (1, true));
        let text = String::from_utf8(file.bytes.clone()).expect("utf-8");
        let all: Vec<&str> = text.lines().collect();
        assert_eq!(all.len(), 3, "{text}");
        assert!(all[0].ends_with("0000\"}"));
        assert_eq!(all[1], "{\"call", "the damaged line stands alone");
        assert_eq!(all[2], "{\"call_id\":\"call-0001\"}");
    }

    #[test]
    fn a_cdr_file_left_mid_line_by_a_crash_is_continued_on_a_new_line() {
        let mut file = FakeFile {
            bytes: b"{\"call_id\":\"cut".to_vec(),
            ..FakeFile::default()
        };
        let mut appender = LineAppender::new(true);
        let a = appender.append(&mut file, &lines(0..1));
        assert_eq!(a.lines, 1);
        assert_eq!(
            file.bytes,
            b"{\"call_id\":\"cut\n{\"call_id\":\"call-0000\"}\n".to_vec()
        );
    }

    #[test]
    fn a_full_cdr_file_takes_nothing_and_is_left_as_it_was() {
        let mut file = FakeFile {
            room: Some(0),
            ..FakeFile::default()
        };
        let mut appender = LineAppender::default();
        let a = appender.append(&mut file, &lines(0..4));
        assert_eq!(a.lines, 0);
        assert!(a.error.is_some());
        assert!(file.bytes.is_empty());
    }
}
