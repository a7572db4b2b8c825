//! Deadlines for sans-IO state machines.
//!
//! Each state machine keeps its timers as a small table indexed by an enum
//! ([`timer_table!`]), so `poll_timeout()` is just the earliest entry and every
//! deadline carries its reason. Many machines share one [`TimerQueue`], a binary
//! heap with lazy deletion: an entry only says "look at machine X at time T"; the
//! machine itself decides what (if anything) is due, so re-arming never needs to
//! find and remove an old entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Declares a timer enum and its table. The table's size is derived from the enum,
/// so the two cannot drift apart.
///
/// ```ignore
/// timer_table!(ClientTimers: ClientTimer { A, B, D });
/// ```
#[macro_export]
macro_rules! timer_table {
    ($(#[$meta:meta])* $table:ident : $kind:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind { $($variant),+ }

        impl $kind {
            pub const ALL: &'static [$kind] = &[$($kind::$variant),+];
        }

        /// The deadlines of one state machine, one slot per timer.
        #[derive(Debug, Clone, Default)]
        pub struct $table {
            deadlines: [Option<std::time::Instant>; $kind::ALL.len()],
        }

        #[allow(dead_code)]
        impl $table {
            pub fn set(&mut self, timer: $kind, at: std::time::Instant) {
                self.deadlines[timer as usize] = Some(at);
            }

            pub fn clear(&mut self, timer: $kind) {
                self.deadlines[timer as usize] = None;
            }

            pub fn clear_all(&mut self) {
                self.deadlines = Default::default();
            }

            pub fn get(&self, timer: $kind) -> Option<std::time::Instant> {
                self.deadlines[timer as usize]
            }

            /// The earliest armed deadline and its reason.
            pub fn next(&self) -> Option<(std::time::Instant, $kind)> {
                $kind::ALL
                    .iter()
                    .filter_map(|&k| self.deadlines[k as usize].map(|at| (at, k)))
                    .min_by_key(|&(at, _)| at)
            }

            /// Disarms and returns the earliest timer due at `now`, if any.
            pub fn pop_due(&mut self, now: std::time::Instant) -> Option<$kind> {
                let (at, kind) = self.next()?;
                if at <= now {
                    self.deadlines[kind as usize] = None;
                    Some(kind)
                } else {
                    None
                }
            }
        }
    };
}

/// Many machines' next deadlines, earliest first, with lazy deletion: stale
/// entries are skipped by comparing against what each machine last scheduled.
#[derive(Debug)]
pub struct TimerQueue<Id: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, Id)>>,
}

impl<Id: Ord + Copy> Default for TimerQueue<Id> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<Id: Ord + Copy> TimerQueue<Id> {
    pub fn schedule(&mut self, at: Instant, id: Id) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry's time (possibly stale: waking early is harmless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns an entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Id)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Shrinks the heap's allocation when it is mostly empty after a burst.
    pub fn compact(&mut self) {
        if self.heap.capacity() > 1024 && self.heap.len() * 4 < self.heap.capacity() {
            self.heap.shrink_to(self.heap.len() * 2);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops the stale entries (those `live` says no machine waits for) once
    /// they outnumber the `machines` alive: a machine that ends leaves its
    /// entry behind until that deadline, which for a call can be hours away,
    /// so under a steady call rate lazy deletion alone would hold millions.
    /// Rebuilding only past twice the live count keeps the cost amortised.
    pub fn purge_stale(&mut self, machines: usize, mut live: impl FnMut(Instant, Id) -> bool) {
        if self.heap.len() > 2 * machines + PURGE_SLACK {
            self.purge(&mut live);
        }
    }

    /// Drops every stale entry now (for an exact count).
    pub fn purge(&mut self, mut live: impl FnMut(Instant, Id) -> bool) {
        self.heap.retain(|Reverse((at, id))| live(*at, *id));
        self.compact();
    }
}

/// Stale entries tolerated beyond twice the live machines before a purge.
const PURGE_SLACK: usize = 1024;

/// Tracks the deadline a machine last put in the queue, so the owner only pushes
/// a new entry when the deadline moved earlier or was not queued, and ignores
/// stale pops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduled(Option<Instant>);

impl Scheduled {
    /// Call after the machine changed; returns the deadline to push, if any.
    pub fn update(&mut self, next: Option<Instant>) -> Option<Instant> {
        match (self.0, next) {
            (_, None) => {
                self.0 = None;
                None
            }
            (Some(queued), Some(n)) if queued <= n => {
                // An entry at or before `n` is queued already; when it pops early
                // the owner re-checks and re-queues.
                None
            }
            (_, Some(n)) => {
                self.0 = Some(n);
                Some(n)
            }
        }
    }

    /// Whether the entry at `at` is the one this machine waits for.
    pub fn is(&self, at: Instant) -> bool {
        self.0 == Some(at)
    }

    /// Call when an entry for this machine pops: true if it is the live one.
    pub fn take_if(&mut self, popped: Instant) -> bool {
        if self.0 == Some(popped) {
            self.0 = None;
            true
        } else {
            false
        }
    }
}

/// Instants written down as signed milliseconds from a moment whose wall-clock
/// time is known, and read back in another process.
///
/// A saved call's deadlines (a session timer's refresh and expiry, the
/// call's start and answer) are monotonic instants, which mean nothing in the
/// next process. Saving measures each from the moment of saving (`offset`);
/// the shell notes the wall clock at that moment. Restoring shifts every
/// offset by how far the wall clock moved meanwhile (`instant`), so a
/// deadline that fell while Vigil was down comes out in the past: due now.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    origin: Instant,
    /// Wall-clock milliseconds of the saving minus those of `origin`.
    shift_ms: i64,
}

impl Timeline {
    /// Offsets from `now`, the moment a state is saved.
    pub fn saving(now: Instant) -> Timeline {
        Timeline {
            origin: now,
            shift_ms: 0,
        }
    }

    /// Reads back offsets saved when the wall clock read `saved_ms`, at the
    /// instant `now` when it reads `now_ms` (both milliseconds since the Unix
    /// epoch).
    pub fn restoring(now: Instant, now_ms: u64, saved_ms: u64) -> Timeline {
        let signed = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
        Timeline {
            origin: now,
            shift_ms: signed(saved_ms).saturating_sub(signed(now_ms)),
        }
    }

    /// `at` as milliseconds from the saving (negative: before it).
    pub fn offset(&self, at: Instant) -> i64 {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let from_origin = if at >= self.origin {
            ms(at - self.origin)
        } else {
            -ms(self.origin - at)
        };
        from_origin.saturating_sub(self.shift_ms)
    }

    /// The instant of an offset. One before the machine's boot (which the
    /// monotonic clock cannot name) comes out as early as it can.
    pub fn instant(&self, offset: i64) -> Instant {
        let from_origin = offset.saturating_add(self.shift_ms);
        let d = std::time::Duration::from_millis(from_origin.unsigned_abs());
        if from_origin >= 0 {
            self.origin + d
        } else {
            let mut back = d;
            loop {
                if let Some(at) = self.origin.checked_sub(back) {
                    return at;
                }
                back /= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    timer_table!(TestTimers: TestTimer { First, Second, Third });

    #[test]
    fn table_reports_earliest_with_reason() {
        let t0 = Instant::now();
        let mut t = TestTimers::default();
        assert_eq!(t.next(), None);
        t.set(TestTimer::Second, t0 + Duration::from_secs(2));
        t.set(TestTimer::Third, t0 + Duration::from_secs(1));
        assert_eq!(
            t.next(),
            Some((t0 + Duration::from_secs(1), TestTimer::Third))
        );
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(5)),
            Some(TestTimer::Third)
        );
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(5)),
            Some(TestTimer::Second)
        );
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), None);
        assert_eq!(TestTimer::ALL.len(), 3);
    }

    #[test]
    fn queue_with_lazy_deletion() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let mut s = Scheduled::default();
        let later = t0 + Duration::from_secs(10);
        let sooner = t0 + Duration::from_secs(5);
        if let Some(at) = s.update(Some(later)) {
            q.schedule(at, 7u64);
        }
        // Moving later queues nothing; moving earlier queues a new entry.
        assert_eq!(s.update(Some(later + Duration::from_secs(1))), None);
        if let Some(at) = s.update(Some(sooner)) {
            q.schedule(at, 7u64);
        }
        assert_eq!(q.len(), 2);
        let (at, id) = q.pop_due(t0 + Duration::from_secs(6)).expect("due");
        assert_eq!((at, id), (sooner, 7));
        assert!(s.take_if(at));
        let (stale, _) = q.pop_due(t0 + Duration::from_secs(60)).expect("due");
        assert!(!s.take_if(stale), "the old entry is stale");
    }

    #[test]
    fn stale_entries_of_ended_machines_are_purged_past_twice_the_live_ones() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let hour = t0 + Duration::from_secs(3600);
        // 10,000 machines each queued an hour-away deadline; all but 10 ended.
        for id in 0..10_000u32 {
            q.schedule(hour, id);
        }
        let alive = |_: Instant, id: u32| id < 10;
        q.purge_stale(10, alive);
        assert_eq!(q.len(), 10, "only the live machines' entries stay");
        // Below the threshold nothing is rebuilt.
        for id in 10..100u32 {
            q.schedule(hour, id);
        }
        q.purge_stale(10, alive);
        assert_eq!(q.len(), 100);
    }

    #[test]
    fn a_timeline_reads_back_deadlines_shifted_by_the_time_spent_down() {
        use std::time::Duration;
        let t0 = Instant::now() + Duration::from_secs(3600);
        let saving = Timeline::saving(t0);
        let due = t0 + Duration::from_secs(45);
        assert_eq!(saving.offset(due), 45_000);
        assert_eq!(saving.offset(t0 - Duration::from_secs(10)), -10_000);
        // Read back 50 s of wall clock later, at another instant.
        let t1 = t0 + Duration::from_secs(7);
        let back = Timeline::restoring(t1, 1_000_050_000, 1_000_000_000);
        assert_eq!(
            back.instant(45_000),
            t1 - Duration::from_secs(5),
            "due 5 s ago"
        );
        assert_eq!(back.instant(-10_000), t1 - Duration::from_secs(60));
        assert_eq!(back.offset(back.instant(1234)), 1234);
    }
}
