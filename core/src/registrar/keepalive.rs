//! NAT keep-alive scheduling (VOS3000's SS_SIP_NAT_KEEP_ALIVE_*): every contact is
//! due once per `period`; at most `batch_size` keep-alives go out per
//! `send_interval`, oldest first, so a large registry is spread out instead of
//! burst. Below that rate each keep-alive leaves exactly when it is due.
//!
//! Each contact keeps its own cadence (next = previous due + period), so its
//! interval stays `period` however many others come and go; when a period's
//! batches cannot all go out within the period, the backlog is sent as fast as
//! the batch limit allows, the schedule restarts from now, and a warning says so
//! once.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::location::ContactId;

/// One contact's keep-alive cadence.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    next: Instant,
    last: Option<Instant>,
    sent: u32,
}

/// A contact whose keep-alive is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub id: ContactId,
    /// When the previous keep-alive went (for the interval-deviation metric).
    pub previous: Option<Instant>,
    /// Keep-alives sent before this one.
    pub sent: u32,
}

/// The keep-alive schedule of every contact.
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeSet<(Instant, ContactId)>,
    next_of: HashMap<ContactId, Cadence>,
    /// The current `send_interval` window and how many were sent in it.
    window: Option<(Instant, usize)>,
    /// The window length and batch size, as last polled.
    limit: Option<(Duration, usize)>,
    overrun_warned: bool,
}

impl Schedule {
    /// Schedules `id`'s first keep-alive at `at` (or moves it there).
    pub fn add(&mut self, id: ContactId, at: Instant) {
        self.remove(id);
        self.due.insert((at, id));
        self.next_of.insert(
            id,
            Cadence {
                next: at,
                last: None,
                sent: 0,
            },
        );
    }

    pub fn remove(&mut self, id: ContactId) {
        if let Some(c) = self.next_of.remove(&id) {
            self.due.remove(&(c.next, id));
        }
    }

    pub fn len(&self) -> usize {
        self.next_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next_of.is_empty()
    }

    /// When `poll_batch` next has something to do: the first due contact, or
    /// the next window if this one's batch is full.
    pub fn next_deadline(&self) -> Option<Instant> {
        let first = self.due.first().map(|(at, _)| *at)?;
        Some(match (self.window, self.limit) {
            (Some((start, sent)), Some((interval, batch))) if sent >= batch => {
                first.max(start + interval)
            }
            _ => first,
        })
    }

    /// The contacts to send a keep-alive to now: at most `batch_size` due ones.
    /// `period_of` gives each contact's period (users may override it).
    /// Returns the batch and whether this is the first time the schedule overran.
    pub fn poll_batch(
        &mut self,
        now: Instant,
        batch_size: usize,
        send_interval: Duration,
        mut period_of: impl FnMut(ContactId) -> Option<Duration>,
    ) -> (Vec<Due>, bool) {
        self.limit = Some((send_interval, batch_size));
        let (start, sent) = match self.window {
            Some((start, sent)) if now < start + send_interval => (start, sent),
            _ => (now, 0),
        };
        let room = batch_size.saturating_sub(sent);
        let mut batch = Vec::new();
        let mut overran = false;
        while batch.len() < room {
            let Some(&(at, id)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.remove(&(at, id));
            let Some(period) = period_of(id) else {
                self.next_of.remove(&id);
                continue;
            };
            // Keep the contact's cadence; if it fell a whole period behind, the
            // batches overran the period: start again from now.
            let mut next = at + period;
            if next <= now {
                next = now + period;
                overran = true;
            }
            self.due.insert((next, id));
            let cadence = self.next_of.entry(id).or_insert(Cadence {
                next,
                last: None,
                sent: 0,
            });
            batch.push(Due {
                id,
                previous: cadence.last,
                sent: cadence.sent,
            });
            *cadence = Cadence {
                next,
                last: Some(now),
                sent: cadence.sent.saturating_add(1),
            };
        }
        self.window = Some((start, sent + batch.len()));
        let first_overrun = overran && !self.overrun_warned;
        self.overrun_warned |= overran;
        (batch, first_overrun)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The case: 7,000 contacts, batches of 3,000 every 500 ms → three
    /// batches at 0, 0.5 and 1.0 s of every period.
    #[test]
    fn seven_thousand_contacts_go_in_three_batches_each_period() {
        let t0 = Instant::now();
        let period = Duration::from_secs(30);
        let mut s = Schedule::default();
        for id in 0..7_000 {
            s.add(id, t0);
        }
        let mut sent_at: HashMap<ContactId, Vec<Instant>> = HashMap::new();
        let mut batches = Vec::new();
        while let Some(at) = s.next_deadline() {
            if at > t0 + Duration::from_secs(61) {
                break;
            }
            let (batch, overran) =
                s.poll_batch(at, 3_000, Duration::from_millis(500), |_| Some(period));
            assert!(!overran);
            if !batch.is_empty() {
                batches.push(((at - t0).as_millis(), batch.len()));
            }
            for due in batch {
                sent_at.entry(due.id).or_default().push(at);
            }
        }
        assert_eq!(
            batches,
            vec![
                (0, 3000),
                (500, 3000),
                (1000, 1000),
                (30_000, 3000),
                (30_500, 3000),
                (31_000, 1000),
                (60_000, 3000),
                (60_500, 3000),
                (61_000, 1000)
            ]
        );
        assert!(
            sent_at
                .values()
                .all(|times| times.windows(2).all(|w| w[1] - w[0] == period)),
            "every contact's interval is the period"
        );
    }

    #[test]
    fn an_overrun_is_reported_once_and_the_schedule_stays_sane() {
        let t0 = Instant::now();
        let period = Duration::from_secs(2);
        let mut s = Schedule::default();
        for id in 0..10 {
            s.add(id, t0);
        }
        // One per batch, one batch a second: 10 s of batches for a 2 s period.
        let mut first_overruns = 0;
        let mut now = t0;
        for _ in 0..30 {
            let Some(at) = s.next_deadline() else { break };
            now = now.max(at);
            let (_, overran) = s.poll_batch(now, 1, Duration::from_secs(1), |_| Some(period));
            first_overruns += usize::from(overran);
        }
        assert_eq!(first_overruns, 1);
        assert_eq!(s.len(), 10, "nobody lost");
        assert!(
            s.next_deadline()
                .is_some_and(|d| d <= now + period + Duration::from_secs(1))
        );
    }

    #[test]
    fn below_the_rate_limit_each_contact_goes_exactly_when_due() {
        let t0 = Instant::now();
        let period = Duration::from_secs(30);
        let mut s = Schedule::default();
        for (id, ms) in [(1, 0), (2, 100), (3, 450), (4, 900)] {
            s.add(id, t0 + Duration::from_millis(ms));
        }
        let mut sent = Vec::new();
        while let Some(at) = s.next_deadline() {
            if at > t0 + Duration::from_secs(31) {
                break;
            }
            let (batch, _) = s.poll_batch(at, 3_000, Duration::from_millis(500), |_| Some(period));
            sent.extend(batch.into_iter().map(|d| (d.id, (at - t0).as_millis())));
        }
        assert_eq!(
            sent,
            vec![
                (1, 0),
                (2, 100),
                (3, 450),
                (4, 900),
                (1, 30_000),
                (2, 30_100),
                (3, 30_450),
                (4, 30_900)
            ]
        );
    }

    #[test]
    fn removed_contacts_are_not_sent() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add(1, t0);
        s.add(2, t0);
        s.remove(1);
        let (batch, _) = s.poll_batch(t0, 10, Duration::from_millis(500), |_| {
            Some(Duration::from_secs(30))
        });
        assert_eq!(batch.iter().map(|d| d.id).collect::<Vec<_>>(), vec![2]);
        let (batch, _) = s.poll_batch(
            t0 + Duration::from_secs(30),
            10,
            Duration::from_millis(500),
            |id| (id != 2).then_some(Duration::from_secs(30)),
        );
        assert!(
            batch.is_empty(),
            "a contact without a period (gone) is dropped"
        );
        assert!(s.is_empty());
    }
}
