//! The database queue driven against a spool and a database in memory that
//! fail on demand, with a clock the tests jump.

use std::collections::{BTreeMap, HashSet};

use super::*;

/// Spool segments in memory, with the real spool's rules: appends go to the
/// current segment, a new one once it is `SEGMENT_BYTES` long; a trim
/// deletes the segments before the commit point.
#[derive(Default)]
struct Spool {
    segments: BTreeMap<u64, Vec<u8>>,
    current: u64,
    /// Appends fail (a full disk).
    full: bool,
    segment_bytes: Option<u64>,
}

impl Spool {
    fn limit(&self) -> u64 {
        self.segment_bytes.unwrap_or(SEGMENT_BYTES)
    }

    fn found(&self) -> SpoolFound {
        let lines = self
            .segments
            .values()
            .map(|s| s.iter().filter(|&&b| b == b'\n').count() as u64)
            .sum();
        SpoolFound {
            first: self
                .segments
                .keys()
                .next()
                .map(|&segment| SpoolPos { segment, offset: 0 }),
            write_at: SpoolPos {
                segment: self.current + 1,
                offset: 0,
            },
            lines,
        }
    }

    /// As a restart finds it: appends go to a segment of their own.
    fn restarted(mut self) -> Spool {
        self.current += 1;
        self
    }
}

#[derive(Default)]
struct Db {
    down: bool,
    /// Records it refuses for their content (a `\u0000` in jsonb, say).
    poison: HashSet<String>,
    rows: Vec<String>,
    keys: HashSet<String>,
    statements: usize,
}

struct World {
    spool: Spool,
    rejected: Vec<String>,
    db: Db,
    /// What went on to the CDR file.
    file: Vec<String>,
    given: VecDeque<String>,
}

impl World {
    fn new() -> World {
        World {
            spool: Spool::default(),
            rejected: Vec::new(),
            db: Db::default(),
            file: Vec::new(),
            given: VecDeque::new(),
        }
    }

    fn perform(&mut self, action: Action) -> Outcome {
        match action {
            Action::Append { bytes, lines } => {
                if self.spool.full {
                    return Outcome::Appended {
                        segment: self.spool.current,
                        start: 0,
                        lines: 0,
                        error: Some("No space left on device".into()),
                    };
                }
                let limit = self.spool.limit();
                let len = self
                    .spool
                    .segments
                    .get(&self.spool.current)
                    .map_or(0, |s| s.len() as u64);
                if len >= limit {
                    self.spool.current += 1;
                }
                let segment = self.spool.segments.entry(self.spool.current).or_default();
                let start = segment.len() as u64;
                segment.extend_from_slice(&bytes);
                Outcome::Appended {
                    segment: self.spool.current,
                    start,
                    lines,
                    error: None,
                }
            }
            Action::Load { from, max_lines } => {
                let mut loaded = Loaded {
                    lines: Vec::new(),
                    next: from,
                };
                for (&id, bytes) in self.spool.segments.range(from.segment..) {
                    let mut at = if id == from.segment {
                        from.offset as usize
                    } else {
                        0
                    };
                    while loaded.lines.len() < max_lines {
                        let Some(len) = bytes[at..].iter().position(|&b| b == b'\n') else {
                            break;
                        };
                        let line = String::from_utf8(bytes[at..at + len].to_vec()).expect("utf8");
                        at += len + 1;
                        let end = SpoolPos {
                            segment: id,
                            offset: at as u64,
                        };
                        loaded.lines.push((line, end));
                        loaded.next = end;
                    }
                    if loaded.lines.len() == max_lines {
                        break;
                    }
                }
                Outcome::Loaded(Ok(loaded))
            }
            Action::Trim { committed } => {
                self.spool.segments.retain(|&id, _| id >= committed.segment);
                let current_len = self
                    .spool
                    .segments
                    .get(&self.spool.current)
                    .map_or(0, |s| s.len() as u64);
                if committed.segment == self.spool.current && committed.offset == current_len {
                    self.spool.segments.remove(&self.spool.current);
                    self.spool.current += 1;
                    return Outcome::Trimmed(Ok(SpoolPos {
                        segment: self.spool.current,
                        offset: 0,
                    }));
                }
                Outcome::Trimmed(Ok(SpoolPos {
                    segment: self.spool.current,
                    offset: current_len,
                }))
            }
            Action::Reject { line } => {
                self.rejected.push(line);
                Outcome::Rejected(Ok(()))
            }
            Action::Insert { json, rows } => {
                self.db.statements += 1;
                if self.db.down {
                    return Outcome::Inserted(Err(InsertError::transient("connection refused")));
                }
                let values: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
                assert_eq!(values.len(), rows);
                if values.iter().any(|v| {
                    self.db
                        .poison
                        .contains(v["id"].as_str().unwrap_or_default())
                }) {
                    // The whole statement fails: nothing of it commits.
                    return Outcome::Inserted(Err(InsertError {
                        message: "unsupported Unicode escape sequence (22P05)".into(),
                        refused: true,
                    }));
                }
                let mut new = 0;
                for v in values {
                    let id = v["id"].as_str().expect("id").to_string();
                    if self.db.keys.insert(id.clone()) {
                        self.db.rows.push(id);
                        new += 1;
                    }
                }
                Outcome::Inserted(Ok(new))
            }
        }
    }

    /// Does everything due at `now`, both lanes, as the shell would.
    fn drive(&mut self, q: &mut DbQueue, now: Instant) -> Vec<Event> {
        while let Some(action) = q.poll_action(now) {
            let outcome = self.perform(action);
            q.handle_outcome(now, outcome);
            let n = q.poll_released();
            self.file.extend(self.given.drain(..n));
        }
        let n = q.poll_released();
        self.file.extend(self.given.drain(..n));
        std::iter::from_fn(|| q.poll_event()).collect()
    }

    fn give(&mut self, q: &mut DbQueue, ids: std::ops::RangeInclusive<u32>) {
        let lines = records(ids);
        self.given.extend(lines.iter().cloned());
        q.handle_records(lines);
    }

    fn spool_lines(&self) -> usize {
        self.spool
            .segments
            .values()
            .map(|s| s.iter().filter(|&&b| b == b'\n').count())
            .sum()
    }
}

fn records(ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|i| format!("{{\"id\":\"call-{i:05}\",\"end_reason\":\"caller-bye\"}}"))
        .collect()
}

fn ids(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("call-{i:05}")).collect()
}

fn failures(events: &[Event], op: Op) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Failed { op: o, .. } if *o == op))
        .count()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn cdrs_reach_the_database_through_the_spool_in_order_and_each_once() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(100, w.spool.found());
    w.give(&mut q, 1..=2500);
    w.drive(&mut q, t0);
    assert_eq!(w.db.rows, ids(1..=2500));
    assert_eq!(w.file.len(), 2500, "each released to the CDR file once");
    assert_eq!((q.pending(), q.spooled(), q.written()), (0, 0, 2500));
    assert!(w.db.statements <= 30, "batched: {}", w.db.statements);
    assert!(q.failing().is_empty());
}

#[test]
fn a_record_goes_on_to_the_cdr_file_only_once_the_spool_has_it() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(100, w.spool.found());
    w.give(&mut q, 1..=3);
    assert_eq!(q.poll_released(), 0, "nothing before its append");
    let append = q.poll_action(t0).expect("append");
    assert!(matches!(append, Action::Append { lines: 3, .. }));
    assert_eq!(q.poll_released(), 0, "nor while it is in flight");
    let outcome = w.perform(append);
    q.handle_outcome(t0, outcome);
    assert_eq!(q.poll_released(), 3);
    assert_eq!(w.spool_lines(), 3);
}

#[test]
fn a_database_down_for_a_while_gets_every_record_in_order_when_back() {
    let t0 = Instant::now();
    let mut w = World::new();
    w.spool.segment_bytes = Some(2000);
    let mut q = DbQueue::new(50, w.spool.found());
    w.db.down = true;
    let mut failed = 0;
    // 20 s down, 100 calls a second, the retry once a second.
    for tick in 0..200u32 {
        let now = t0 + Duration::from_millis(100 * u64::from(tick));
        w.give(&mut q, tick * 10 + 1..=tick * 10 + 10);
        failed += failures(&w.drive(&mut q, now), Op::Database);
        assert!(q.poll_timeout().is_some_and(|t| t > now));
    }
    assert_eq!(failed, 20, "the first try and once a second");
    assert!(w.db.rows.is_empty());
    assert_eq!(q.spooled(), 2000, "all in the spool");
    assert_eq!(w.file.len(), 2000, "the CDR file did not wait");
    assert_eq!(q.pending(), 0);
    assert!(w.spool.segments.len() > 10, "{}", w.spool.segments.len());
    // Back: the spool is replayed in order, and trimmed as rows commit.
    w.db.down = false;
    let now = t0 + Duration::from_secs(21);
    w.give(&mut q, 2001..=2010);
    let events = w.drive(&mut q, now);
    assert!(
        events.iter().any(|e| matches!(e, Event::Recovered { op: Op::Database, after } if *after >= Duration::from_secs(19))),
        "{events:?}"
    );
    assert!(events.contains(&Event::SpoolDrained), "{events:?}");
    assert_eq!(w.db.rows, ids(1..=2010));
    assert_eq!(q.spooled(), 0);
    assert!(
        w.spool.segments.len() <= 1,
        "committed segments are deleted: {:?}",
        w.spool.segments.keys()
    );
}

#[test]
fn memory_holds_at_most_the_window_while_the_database_is_down() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(10, w.spool.found());
    w.db.down = true;
    w.give(&mut q, 1..=500);
    w.drive(&mut q, t0);
    assert!(q.loaded.len() <= 10, "{}", q.loaded.len());
    assert_eq!(q.spooled(), 500);
    w.db.down = false;
    w.drive(&mut q, t0 + SECOND);
    assert_eq!(w.db.rows, ids(1..=500));
}

#[test]
fn a_restart_sends_the_spool_again_and_the_database_keeps_one_row_each() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(100, w.spool.found());
    w.give(&mut q, 1..=300);
    w.drive(&mut q, t0);
    assert_eq!(w.db.rows.len(), 300);
    // The database goes away; more calls; then kill -9: memory is gone.
    w.db.down = true;
    w.give(&mut q, 301..=400);
    w.drive(&mut q, t0);
    drop(q);
    w.spool = std::mem::take(&mut w.spool).restarted();
    w.db.down = false;
    let found = w.spool.found();
    assert!(found.lines >= 100, "at least the unsent: {found:?}");
    let mut q = DbQueue::new(100, found);
    w.give(&mut q, 401..=450);
    w.drive(&mut q, t0 + SECOND);
    assert_eq!(w.db.rows, ids(1..=450), "every record once, in order");
    assert_eq!(q.spooled(), 0);
}

#[test]
fn a_full_spool_disk_sends_records_straight_from_memory_and_loses_none() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(100, w.spool.found());
    w.spool.full = true;
    w.give(&mut q, 1..=50);
    let events = w.drive(&mut q, t0);
    assert_eq!(failures(&events, Op::SpoolWrite), 1, "{events:?}");
    assert_eq!(w.file.len(), 50, "the CDR file does not wait for the spool");
    assert_eq!(w.db.rows, ids(1..=50), "straight to the database");
    assert_eq!(q.failing(), [Op::SpoolWrite]);
    // The database goes too: records wait in memory, none dropped.
    w.db.down = true;
    w.give(&mut q, 51..=80);
    w.drive(&mut q, t0 + SECOND);
    assert_eq!(q.pending(), 30);
    assert_eq!(w.file.len(), 80);
    // Room on the disk again: the held records go to the spool, then in.
    w.spool.full = false;
    w.drive(&mut q, t0 + 2 * SECOND);
    assert_eq!(q.pending(), 0);
    assert_eq!(q.spooled(), 30);
    w.db.down = false;
    w.drive(&mut q, t0 + 3 * SECOND);
    assert_eq!(w.db.rows, ids(1..=80));
    assert_eq!(w.file.len(), 80, "each line once in the file");
    assert!(q.failing().is_empty());
}

#[test]
fn shutdown_tries_once_more_and_says_what_is_left() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(100, w.spool.found());
    w.db.down = true;
    w.give(&mut q, 1..=20);
    w.drive(&mut q, t0);
    let statements = w.db.statements;
    q.handle_close(t0 + Duration::from_millis(300) + SECOND);
    w.drive(&mut q, t0 + Duration::from_millis(300));
    assert_eq!(w.db.statements, statements + 1, "one last try, at once");
    assert_eq!(q.poll_timeout(), None);
    assert!(!q.in_flight());
    assert_eq!(
        q.poll_action(t0 + 5 * SECOND),
        None,
        "no retry after the last try"
    );
    assert_eq!(
        q.into_remaining(),
        Remaining {
            held: Vec::new(),
            spooled: 20
        }
    );
}

#[test]
fn a_drained_spool_is_cut_off_once_it_has_grown() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(5000, w.spool.found());
    let line = records(1..=1)[0].len() as u64 + 1;
    let calls = (TRIM_DRAINED / line) as u32 + 10;
    for i in 1..=calls {
        w.give(&mut q, i..=i);
        w.drive(&mut q, t0);
    }
    assert_eq!(w.db.rows.len(), calls as usize);
    let left: u64 = w.spool.segments.values().map(|s| s.len() as u64).sum();
    assert!(left < TRIM_DRAINED, "{left} bytes left");
}

#[test]
fn a_row_the_database_refuses_is_set_aside_and_the_rows_behind_it_go_on() {
    let t0 = Instant::now();
    let mut w = World::new();
    let mut q = DbQueue::new(1000, w.spool.found());
    w.db.poison.insert("call-00042".into());
    w.give(&mut q, 1..=100);
    let events = w.drive(&mut q, t0);
    let mut expected = ids(1..=100);
    expected.retain(|id| id != "call-00042");
    assert_eq!(w.db.rows, expected, "every other row, in order, at once");
    assert_eq!(w.rejected.len(), 1);
    assert!(w.rejected[0].contains("call-00042"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Rejected { line } if line.contains("call-00042"))),
        "{events:?}"
    );
    assert_eq!((q.spooled(), q.rejected()), (0, 1));
    assert!(q.failing().is_empty(), "the database is not down");
    // Batches again after the refused one.
    let statements = w.db.statements;
    w.give(&mut q, 101..=600);
    w.drive(&mut q, t0);
    assert_eq!(w.db.statements, statements + 1);
}
