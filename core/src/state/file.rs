//! The embedded state store: one SQLite file (rusqlite with SQLite built in,
//! as the registrar's location store), no server to run. WAL mode, one
//! transaction per batch; `synchronous = NORMAL` keeps every committed batch
//! through a crash of the process (a power cut may lose the last ones, as it
//! may the CDR file's last round). An operator can read it with `sqlite3`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::pending::{Batch, Op};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// One call's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub id: String,
    /// The call's saved state (JSON), if it was ever saved.
    pub call: Option<String>,
    /// Its CDR line, once it ended.
    pub cdr: Option<String>,
}

pub struct FileStore {
    path: PathBuf,
    conn: Connection,
}

impl FileStore {
    pub fn open(path: &Path) -> Result<FileStore, StateError> {
        let err = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS calls (
                 id   TEXT PRIMARY KEY,
                 call TEXT,
                 cdr  TEXT
             );",
        )
        .map_err(err)?;
        Ok(FileStore {
            path: path.to_path_buf(),
            conn,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every row.
    pub fn load(&self) -> Result<Vec<StoredRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, call, cdr FROM calls")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |row| {
                Ok(StoredRow {
                    id: row.get(0)?,
                    call: row.get(1)?,
                    cdr: row.get(2)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Writes a batch in one transaction: all of it or none.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut save = tx
                .prepare_cached(
                    "INSERT INTO calls (id, call) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET call = excluded.call",
                )
                .map_err(err)?;
            let mut end = tx
                .prepare_cached(
                    "INSERT INTO calls (id, cdr) VALUES (?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET cdr = excluded.cdr",
                )
                .map_err(err)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM calls WHERE id = ?1")
                .map_err(err)?;
            for (id, op) in &batch.ops {
                match op {
                    Op::Save(json) => save.execute(params![id, json]),
                    Op::End(line) => end.execute(params![id, line]),
                    Op::Delete => delete.execute(params![id]),
                }
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Pending;
    use std::time::Instant;

    #[test]
    fn rows_survive_reopening_and_a_billed_call_is_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("calls.db");
        let now = Instant::now();
        let mut store = FileStore::open(&path).expect("open");
        let mut p = Pending::default();
        p.save(now, "live".into(), "{\"x\":1}".into());
        p.save(now, "ended".into(), "{\"x\":2}".into());
        p.save(now, "billed".into(), "{\"x\":3}".into());
        store.apply(&p.take()).expect("write");
        p.end(now, "ended".into(), "cdr-line".into());
        p.end(now, "billed".into(), "cdr-billed".into());
        store.apply(&p.take()).expect("write");
        p.cdr_written(now, "billed");
        store.apply(&p.take()).expect("write");
        drop(store);
        let mut rows = FileStore::open(&path)
            .expect("reopen")
            .load()
            .expect("load");
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            rows,
            vec![
                StoredRow {
                    id: "ended".into(),
                    call: Some("{\"x\":2}".into()),
                    cdr: Some("cdr-line".into())
                },
                StoredRow {
                    id: "live".into(),
                    call: Some("{\"x\":1}".into()),
                    cdr: None
                },
            ]
        );
    }

    #[test]
    fn a_store_that_cannot_be_opened_says_where() {
        let dir = tempfile::tempdir().expect("dir");
        let e = FileStore::open(&dir.path().join("no/such/dir/calls.db"))
            .err()
            .expect("fails");
        assert!(e.to_string().contains("no/such/dir/calls.db"), "{e}");
    }
}
