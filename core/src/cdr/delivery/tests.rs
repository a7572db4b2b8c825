//! The delivery state machine against a fake disk that fills up, frees up,
//! loses its file or refuses a reopen on demand, with a clock that jumps.

use std::io;
use std::path::PathBuf;

use super::*;
use crate::cdr::append::{FakeFile, LineAppender};

/// A CDR file, its spill, and what happens to them.
struct Disk {
    cdr: FakeFile,
    cdr_appender: LineAppender,
    cdr_id: FileId,
    at_path: AtPath,
    /// Files the CDR file was before each reopen.
    old: Vec<FakeFile>,
    spill: Option<FakeFile>,
    spill_appender: LineAppender,
    /// Room a new spill file gets; `None`: unlimited.
    spill_room: Option<usize>,
    reopen_fails: bool,
    next_ino: u64,
    /// Every action performed, by name.
    performed: Vec<&'static str>,
}

impl Disk {
    fn new() -> Disk {
        Disk {
            cdr: FakeFile::default(),
            cdr_appender: LineAppender::default(),
            cdr_id: FileId { dev: 1, ino: 1 },
            at_path: AtPath::File(FileId { dev: 1, ino: 1 }),
            old: Vec::new(),
            spill: None,
            spill_appender: LineAppender::default(),
            spill_room: None,
            reopen_fails: false,
            next_ino: 2,
            performed: Vec::new(),
        }
    }

    /// A disk with no room left for the CDR file.
    fn full() -> Disk {
        let mut disk = Disk::new();
        disk.cdr.room = Some(0);
        disk
    }

    fn count(&self, action: &str) -> usize {
        self.performed.iter().filter(|&&a| a == action).count()
    }

    fn perform(&mut self, action: Action) -> Outcome {
        let failure = |op, e| CdrIoError {
            op,
            path: PathBuf::from("/var/lib/vigil/cdr.jsonl"),
            source: e,
        };
        match action {
            Action::Write(batch) => {
                self.performed.push("write");
                let a = self.cdr_appender.append(&mut self.cdr, &batch.bytes);
                Outcome::Written {
                    lines: a.lines,
                    error: a.error.map(|e| failure("write", e)),
                }
            }
            Action::Spill(batch) => {
                self.performed.push("spill");
                let room = self.spill_room;
                let spill = self.spill.get_or_insert_with(|| FakeFile {
                    room,
                    ..FakeFile::default()
                });
                let a = self.spill_appender.append(spill, &batch.bytes);
                Outcome::Spilled {
                    lines: a.lines,
                    error: a.error.map(|e| failure("write", e)),
                }
            }
            Action::LoadSpill { offset, max_lines } => {
                self.performed.push("load");
                let bytes = self
                    .spill
                    .as_ref()
                    .map(|s| s.bytes.clone())
                    .unwrap_or_default();
                let mut loaded = Loaded {
                    offset,
                    ..Loaded::default()
                };
                let mut at = usize::try_from(offset).expect("offset");
                while loaded.lines.len() < max_lines {
                    let Some(len) = bytes[at..].iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    let line = String::from_utf8(bytes[at..at + len].to_vec()).expect("utf-8");
                    at += len + 1;
                    loaded.lines.push((line, at as u64));
                }
                loaded.offset = at as u64;
                loaded.eof = at == bytes.len();
                Outcome::Loaded(Ok(loaded))
            }
            Action::RemoveSpill => {
                self.performed.push("remove");
                self.spill = None;
                Outcome::SpillRemoved(Ok(()))
            }
            Action::CheckIdentity => {
                self.performed.push("check");
                Outcome::Identity {
                    open: Some(self.cdr_id),
                    at_path: self.at_path,
                }
            }
            Action::Reopen(_) => {
                self.performed.push("reopen");
                if self.reopen_fails {
                    let e = io::Error::from_raw_os_error(13);
                    return Outcome::Reopened(Err(failure("open", e)));
                }
                self.cdr_id = match self.at_path {
                    AtPath::File(id) => id,
                    AtPath::Missing | AtPath::Unknown => {
                        self.next_ino += 1;
                        FileId {
                            dev: 1,
                            ino: self.next_ino,
                        }
                    }
                };
                self.at_path = AtPath::File(self.cdr_id);
                let fresh = FakeFile {
                    room: self.cdr.room,
                    ..FakeFile::default()
                };
                self.old.push(std::mem::replace(&mut self.cdr, fresh));
                self.cdr_appender = LineAppender::default();
                Outcome::Reopened(Ok(()))
            }
        }
    }
}

/// Does everything due at `now`, as the shell would; returns the events.
fn drive(delivery: &mut Delivery, disk: &mut Disk, now: Instant) -> Vec<Event> {
    while let Some(action) = delivery.poll_action(now) {
        let outcome = disk.perform(action);
        delivery.handle_outcome(now, outcome);
    }
    std::iter::from_fn(|| delivery.poll_event()).collect()
}

fn records(ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|i| format!("{{\"call_id\":\"call-{i:04}\",\"end_reason\":\"caller-bye\"}}"))
        .collect()
}

/// The call numbers in a file, in file order (every line must be JSON).
fn calls(file: &FakeFile) -> Vec<u32> {
    file.json_lines()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let id = v["call_id"].as_str().expect("call_id");
            id.trim_start_matches("call-").parse().expect("number")
        })
        .collect()
}

fn failures(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .count()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn cdrs_keep_their_order_from_memory_through_the_spill_and_back() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    let mut d = Delivery::new(t0, 3, None);
    d.handle_records(t0, records(1..=10));
    let events = drive(&mut d, &mut disk, t0);
    assert_eq!(failures(&events), 1, "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::SpillStarted)));
    assert_eq!((d.pending(), d.spilled()), (3, 7), "3 in memory, 7 spilled");
    assert!(d.is_failing());
    // Once records went to the spill, later ones follow them there.
    d.handle_records(t0, records(11..=12));
    drive(&mut d, &mut disk, t0);
    assert_eq!((d.pending(), d.spilled()), (3, 9));
    assert!(calls(&disk.cdr).is_empty());

    // Room again: the retry a second later writes everything, in order.
    disk.cdr.room = None;
    let events = drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(calls(&disk.cdr), (1..=12).collect::<Vec<_>>());
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Recovered { target: Target::Cdr, after } if *after == SECOND)
        ),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SpillDrained { lines: 9 })),
        "{events:?}"
    );
    assert!(disk.spill.is_none(), "the drained spill is removed");
    assert_eq!((d.pending(), d.spilled(), d.written()), (0, 0, 12));
    assert!(!d.is_failing());

    // Back to normal: the next record goes straight to the file.
    d.handle_records(t0 + SECOND, records(13..=13));
    drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(calls(&disk.cdr).last(), Some(&13));
    assert!(disk.spill.is_none());
}

#[test]
fn a_short_cdr_write_leaves_whole_lines_and_the_rest_follows_on_retry() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let line = records(1..=1)[0].len() + 1;
    disk.cdr.room = Some(2 * line + line / 2);
    let mut d = Delivery::new(t0, 100, None);
    d.handle_records(t0, records(1..=5));
    let events = drive(&mut d, &mut disk, t0);
    assert_eq!(failures(&events), 1);
    assert_eq!(calls(&disk.cdr), [1, 2], "no half line is left behind");
    assert_eq!(d.pending(), 3);
    disk.cdr.room = None;
    drive(&mut d, &mut disk, t0 + SECOND / 2);
    assert_eq!(calls(&disk.cdr), [1, 2], "not before the retry is due");
    drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(calls(&disk.cdr), [1, 2, 3, 4, 5]);
    assert_eq!(d.pending(), 0);
}

#[test]
fn a_failing_cdr_file_is_retried_once_a_second_and_no_more_often() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    let mut d = Delivery::new(t0, 1000, None);
    d.handle_records(t0, records(1..=1));
    assert_eq!(failures(&drive(&mut d, &mut disk, t0)), 1);
    assert_eq!(d.poll_timeout(), Some(t0 + RETRY));
    // New records while failing wait for the retry; they do not trigger one.
    let mut failed = 1;
    for ms in (100..=10_000).step_by(100) {
        let now = t0 + Duration::from_millis(ms);
        d.handle_records(now, records(2..=2));
        failed += failures(&drive(&mut d, &mut disk, now));
        assert!(
            d.poll_timeout().is_some_and(|t| t > now),
            "a deadline ahead"
        );
    }
    assert_eq!(failed, 11, "the first attempt and one per second for 10 s");
    assert_eq!(disk.count("write"), 11);
    assert_eq!(d.pending(), 101, "nothing is dropped");
}

#[test]
fn a_deleted_cdr_file_is_noticed_when_idle_and_reopened_by_its_path() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let mut d = Delivery::new(t0, 100, None);
    d.handle_records(t0, records(1..=2));
    drive(&mut d, &mut disk, t0);
    assert_eq!(d.poll_timeout(), Some(t0 + IDENTITY_CHECK));
    // Deleted: nothing is written, and yet within a second it is noticed.
    disk.at_path = AtPath::Missing;
    let events = drive(&mut d, &mut disk, t0 + IDENTITY_CHECK);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Reopened(Reopen::Missing))),
        "{events:?}"
    );
    assert_eq!(disk.old.len(), 1);
    assert_eq!(calls(&disk.old[0]), [1, 2]);
    d.handle_records(t0 + IDENTITY_CHECK, records(3..=3));
    drive(&mut d, &mut disk, t0 + IDENTITY_CHECK);
    assert_eq!(calls(&disk.cdr), [3], "the new file at the path");
    // Unchanged, the periodic check reopens nothing.
    drive(&mut d, &mut disk, t0 + 3 * IDENTITY_CHECK);
    assert_eq!(disk.count("reopen"), 1);
}

#[test]
fn every_cdr_write_checks_first_that_the_path_still_names_the_open_file() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let mut d = Delivery::new(t0, 100, None);
    d.handle_records(t0, records(1..=1));
    drive(&mut d, &mut disk, t0);
    // Rotated: another file is at the path, well before the periodic check.
    disk.at_path = AtPath::File(FileId { dev: 1, ino: 99 });
    let now = t0 + Duration::from_millis(10);
    d.handle_records(now, records(2..=2));
    let events = drive(&mut d, &mut disk, now);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Reopened(Reopen::Replaced))),
        "{events:?}"
    );
    assert_eq!(calls(&disk.old[0]), [1]);
    assert_eq!(calls(&disk.cdr), [2]);
    assert_eq!(
        disk.performed,
        ["check", "write", "check", "reopen", "check", "write"]
    );
}

#[test]
fn a_cdr_file_that_cannot_be_reopened_holds_records_and_retries() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    disk.reopen_fails = true;
    disk.at_path = AtPath::Missing;
    let mut d = Delivery::new(t0, 100, None);
    d.handle_records(t0 + SECOND, records(1..=3));
    let events = drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(failures(&events), 1, "{events:?}");
    assert_eq!(d.pending(), 3);
    assert!(calls(&disk.cdr).is_empty(), "nothing into the deleted file");
    disk.reopen_fails = false;
    drive(&mut d, &mut disk, t0 + 2 * SECOND);
    assert_eq!(calls(&disk.cdr), [1, 2, 3]);
}

#[test]
fn a_reload_reopens_the_file_and_retries_at_once() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    let mut d = Delivery::new(t0, 100, None);
    d.handle_records(t0, records(1..=2));
    drive(&mut d, &mut disk, t0);
    // The operator makes room and reloads, well before the next retry.
    disk.cdr.room = None;
    let now = t0 + Duration::from_millis(200);
    d.handle_reload(now);
    let events = drive(&mut d, &mut disk, now);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Reopened(Reopen::Reload)))
    );
    assert_eq!(calls(&disk.cdr), [1, 2]);
}

#[test]
fn a_spill_left_by_an_earlier_run_is_written_before_new_records() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let mut left = FakeFile::default();
    LineAppender::default().append(&mut left, records(1..=3).join("\n").as_bytes());
    left.bytes.push(b'\n');
    disk.spill = Some(left);
    let mut d = Delivery::new(t0, 100, Some(3));
    assert_eq!(d.spilled(), 3);
    d.handle_records(t0, records(4..=5));
    let events = drive(&mut d, &mut disk, t0);
    assert_eq!(calls(&disk.cdr), [1, 2, 3, 4, 5]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SpillDrained { lines: 3 })),
        "{events:?}"
    );
    assert!(disk.spill.is_none());
    assert_eq!(
        disk.count("spill"),
        0,
        "the spill was drained before the new records needed it"
    );
}

#[test]
fn when_the_spill_fails_too_records_stay_in_memory_past_max_pending() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    disk.spill_room = Some(0);
    let mut d = Delivery::new(t0, 2, None);
    d.handle_records(t0, records(1..=10));
    let events = drive(&mut d, &mut disk, t0);
    assert_eq!(failures(&events), 2, "the file and the spill: {events:?}");
    assert_eq!((d.pending(), d.spilled()), (10, 0), "nothing dropped");
    disk.cdr.room = None;
    drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(calls(&disk.cdr), (1..=10).collect::<Vec<_>>());
    assert!(disk.spill.as_ref().is_none_or(|s| s.bytes.is_empty()));
}

#[test]
fn a_shutdown_makes_one_last_attempt_and_hands_back_what_is_held() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    let mut d = Delivery::new(t0, 2, None);
    d.handle_records(t0, records(1..=5));
    drive(&mut d, &mut disk, t0);
    let writes = disk.count("write");
    let now = t0 + Duration::from_millis(300);
    d.handle_close(now, now + Duration::from_millis(1500));
    let events = drive(&mut d, &mut disk, now);
    assert_eq!(disk.count("write"), writes + 1, "one last try, at once");
    assert_eq!(failures(&events), 1);
    assert_eq!(d.poll_timeout(), None, "nothing more to wait for");
    assert_eq!(
        d.poll_action(now + RETRY),
        None,
        "no retry after the last try"
    );
    assert_eq!(
        d.into_remaining(),
        Remaining {
            held: records(1..=2),
            spill: Some(SpillLeft {
                lines: 3,
                replayed_to: 0
            }),
        }
    );
}

#[test]
fn a_shutdown_with_room_writes_everything_and_leaves_nothing() {
    let t0 = Instant::now();
    let mut disk = Disk::full();
    let mut d = Delivery::new(t0, 2, None);
    d.handle_records(t0, records(1..=5));
    drive(&mut d, &mut disk, t0);
    disk.cdr.room = None;
    let now = t0 + Duration::from_millis(300);
    d.handle_close(now, now + Duration::from_millis(1500));
    drive(&mut d, &mut disk, now);
    assert_eq!(calls(&disk.cdr), [1, 2, 3, 4, 5]);
    assert_eq!(d.into_remaining(), Remaining::default());
}

#[test]
fn a_spill_replayed_in_part_says_how_far_it_got() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let mut d = Delivery::new(t0, 2, None);
    disk.cdr.room = Some(0);
    d.handle_records(t0, records(1..=6));
    drive(&mut d, &mut disk, t0);
    assert_eq!((d.pending(), d.spilled()), (2, 4));
    // Room for the two in memory and one of the spilled.
    let line = records(1..=1)[0].len() + 1;
    disk.cdr.room = Some(3 * line + 5);
    drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(calls(&disk.cdr), [1, 2, 3]);
    assert_eq!(
        (d.pending(), d.spilled()),
        (0, 3),
        "read back, still spilled"
    );
    d.handle_close(t0 + SECOND, t0 + 2 * SECOND);
    drive(&mut d, &mut disk, t0 + SECOND);
    assert_eq!(
        d.into_remaining(),
        Remaining {
            held: Vec::new(),
            spill: Some(SpillLeft {
                lines: 3,
                replayed_to: line as u64
            }),
        },
        "the spill's first record is in the CDR file; the held ones are in the spill"
    );
}

#[test]
fn a_burst_is_written_in_bounded_batches_in_order() {
    let t0 = Instant::now();
    let mut disk = Disk::new();
    let mut d = Delivery::new(t0, 10_000, None);
    d.handle_records(t0, records(1..=3000));
    drive(&mut d, &mut disk, t0);
    assert_eq!(disk.count("write"), 3);
    assert_eq!(calls(&disk.cdr), (1..=3000).collect::<Vec<_>>());
}
