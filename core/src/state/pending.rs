//! What the state store has yet to be told, coalesced per call, without I/O:
//! a call saved ten times between two writes is written once, a call that
//! ended and was billed before its row was ever written is not written at
//! all.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What one call's row becomes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// The call's state (a [`crate::call::SavedCall`] as JSON).
    Save(String),
    /// The call ended with this CDR line: kept until the CDR is durable.
    End(String),
    /// The call's CDR is durable: its row goes.
    Delete,
}

/// The changes not yet written, and which calls have a row.
#[derive(Debug, Default)]
pub struct Pending {
    ops: HashMap<String, Op>,
    /// Calls with a row in the store, or one on its way there.
    stored: HashSet<String>,
    /// When the oldest change not yet written came.
    since: Option<Instant>,
}

impl Pending {
    /// Calls the store holds at start (and whose CDR it waits for).
    pub fn with_stored(ids: impl IntoIterator<Item = String>) -> Pending {
        Pending {
            stored: ids.into_iter().collect(),
            ..Pending::default()
        }
    }

    pub fn save(&mut self, now: Instant, id: String, json: String) {
        if matches!(self.ops.get(&id), Some(Op::End(_))) {
            // A save racing its call's end: the end stands.
            return;
        }
        self.stored.insert(id.clone());
        self.put(now, id, Op::Save(json));
    }

    pub fn end(&mut self, now: Instant, id: String, cdr_line: String) {
        self.stored.insert(id.clone());
        self.put(now, id, Op::End(cdr_line));
    }

    /// The CDR writer wrote the CDR with this id: a call with a row is
    /// forgotten; any other CDR is none of the store's business.
    pub fn cdr_written(&mut self, now: Instant, id: &str) {
        if self.stored.remove(id) {
            self.put(now, id.to_string(), Op::Delete);
        }
    }

    fn put(&mut self, now: Instant, id: String, op: Op) {
        self.ops.insert(id, op);
        self.since.get_or_insert(now);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Calls with a row (or one on its way).
    pub fn stored(&self) -> usize {
        self.stored.len()
    }

    /// How long the oldest change has waited.
    pub fn lag(&self, now: Instant) -> std::time::Duration {
        self.since.map_or(std::time::Duration::ZERO, |s| {
            now.saturating_duration_since(s)
        })
    }

    /// Everything to write now, as one batch.
    pub fn take(&mut self) -> Batch {
        Batch {
            ops: std::mem::take(&mut self.ops).into_iter().collect(),
            since: self.since.take(),
        }
    }

    /// A batch that could not be written goes back, behind anything newer.
    pub fn put_back(&mut self, batch: Batch) {
        for (id, op) in batch.ops {
            self.ops.entry(id).or_insert(op);
        }
        if let Some(since) = batch.since {
            self.since = Some(self.since.map_or(since, |s| s.min(since)));
        }
    }
}

/// Changes written together, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<(String, Op)>,
    since: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_coalesce_per_call_and_an_end_is_kept_until_billed() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.save(now, "a".into(), "{1}".into());
        p.save(now, "a".into(), "{2}".into());
        p.save(now, "b".into(), "{b}".into());
        p.end(now, "b".into(), "cdr-b".into());
        p.save(now, "b".into(), "{late}".into());
        let mut batch = p.take().ops;
        batch.sort();
        assert_eq!(
            batch,
            vec![
                ("a".to_string(), Op::Save("{2}".into())),
                ("b".to_string(), Op::End("cdr-b".into())),
            ]
        );
        p.cdr_written(now, "b");
        p.cdr_written(now, "never-saved");
        assert_eq!(p.take().ops, vec![("b".to_string(), Op::Delete)]);
        assert_eq!(p.stored(), 1, "a stays");
    }

    #[test]
    fn a_failed_batch_goes_back_behind_newer_changes() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.save(now, "a".into(), "{1}".into());
        p.save(now, "b".into(), "{1}".into());
        let failed = p.take();
        assert!(p.is_empty());
        p.save(now, "a".into(), "{2}".into());
        p.put_back(failed);
        let mut batch = p.take().ops;
        batch.sort();
        assert_eq!(
            batch,
            vec![
                ("a".to_string(), Op::Save("{2}".into())),
                ("b".to_string(), Op::Save("{1}".into())),
            ]
        );
    }
}
