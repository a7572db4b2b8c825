//! What a start does with the calls the store holds: resume the live ones,
//! write the CDR of those that ended but whose CDR never reached the CDR file,
//! and forget those already billed. "Billed" is decided by the CDR file
//! itself (the ids its last lines and the spill file carry): the store's
//! delete may lag the CDR by one batch, and a crash in between must not
//! resume a call whose CDR is written, nor bill it twice.

use std::collections::HashSet;

use super::StoredRow;
use crate::call::SavedCall;

/// What to do with the store's rows at start.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Calls to resume.
    pub resume: Vec<SavedCall>,
    /// CDR lines of calls that ended without their CDR in the CDR file:
    /// written now (their rows go once they are).
    pub rebill: Vec<String>,
    /// Rows to delete now: billed already, empty, or unreadable.
    pub forget: Vec<String>,
    /// Rows whose call could not be read, with why (reported loudly).
    pub damaged: Vec<(String, String)>,
}

impl Recovery {
    /// The calls whose rows stay until their CDR is written.
    pub fn kept_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.resume.iter().map(|c| c.id.clone()).chain(
            self.rebill
                .iter()
                .filter_map(|l| crate::cdr::line_id(l).map(str::to_string)),
        )
    }
}

/// Sorts `rows`; `billed` are the ids found in the CDR file.
pub fn recover(rows: Vec<StoredRow>, billed: &HashSet<String>) -> Recovery {
    let mut r = Recovery::default();
    for row in rows {
        if billed.contains(&row.id) {
            r.forget.push(row.id);
            continue;
        }
        match (row.cdr, row.call) {
            (Some(line), _) => r.rebill.push(line),
            (None, Some(json)) => match serde_json::from_str::<SavedCall>(&json) {
                Ok(call) if call.id == row.id => r.resume.push(call),
                Ok(call) => {
                    r.damaged
                        .push((row.id.clone(), format!("holds call {}", call.id)));
                    r.forget.push(row.id);
                }
                Err(e) => {
                    r.damaged.push((row.id.clone(), e.to_string()));
                    r.forget.push(row.id);
                }
            },
            (None, None) => r.forget.push(row.id),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, call: Option<&str>, cdr: Option<&str>) -> StoredRow {
        StoredRow {
            id: id.into(),
            call: call.map(str::to_string),
            cdr: cdr.map(str::to_string),
        }
    }

    #[test]
    fn billed_calls_are_forgotten_ended_ones_billed_and_damaged_ones_reported() {
        let rows = vec![
            row("billed", Some("{}"), None),
            row("ended", Some("{}"), Some("{\"id\":\"ended\",\"x\":1}")),
            row("ended-billed", None, Some("{\"id\":\"ended-billed\"}")),
            row("damaged", Some("not json"), None),
            row("empty", None, None),
        ];
        let billed = HashSet::from(["billed".to_string(), "ended-billed".to_string()]);
        let r = recover(rows, &billed);
        assert!(r.resume.is_empty());
        assert_eq!(r.rebill, vec!["{\"id\":\"ended\",\"x\":1}".to_string()]);
        assert_eq!(r.kept_ids().collect::<Vec<_>>(), vec!["ended".to_string()]);
        assert_eq!(r.forget, vec!["billed", "ended-billed", "damaged", "empty"]);
        assert_eq!(r.damaged.len(), 1);
    }
}
