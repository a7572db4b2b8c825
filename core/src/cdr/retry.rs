//! Whether a kind of CDR operation (a write, a spill, an insert…) may run
//! now: since when it has been failing, when its retry is due, and whether a
//! shutdown gave up on it. Shared by the CDR file's [`super::delivery`] and
//! the database's [`super::database::queue`], which turn what
//! [`Health::settle`] says into their own events.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Health {
    pub failing_since: Option<Instant>,
    pub retry_at: Option<Instant>,
    /// Shutting down, it failed its last attempt: no more tries.
    pub gave_up: bool,
}

/// What an operation's result changed.
#[derive(Debug)]
pub enum Settled<E> {
    /// It failed (again): its retry is due after the given delay, or never
    /// while closing.
    Failed(E),
    /// It works again after failing for this long.
    Recovered(Duration),
}

impl Health {
    pub fn ready(&self) -> bool {
        !self.gave_up && self.retry_at.is_none()
    }

    /// Clears a retry time that has come.
    pub fn expire(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
        }
    }

    /// Records an operation's result: a failure waits `retry` (or gives up
    /// while `closing`); a success after failures is a recovery.
    pub fn settle<E>(
        &mut self,
        now: Instant,
        retry: Duration,
        closing: bool,
        error: Option<E>,
    ) -> Option<Settled<E>> {
        match error {
            Some(error) => {
                self.failing_since.get_or_insert(now);
                if closing {
                    self.gave_up = true;
                } else {
                    self.retry_at = Some(now + retry);
                }
                Some(Settled::Failed(error))
            }
            None => {
                self.retry_at = None;
                let since = self.failing_since.take()?;
                Some(Settled::Recovered(now.saturating_duration_since(since)))
            }
        }
    }
}
