//! The location store on disk: SQLite (rusqlite, with SQLite built in so no
//! system library is needed), so registrations survive a restart — even a
//! SIGKILL — and an operator can read them with the `sqlite3` tool.
//!
//! Each binding is written, in WAL mode, before the 200 OK to its REGISTER is
//! sent. Expiry and registration times are stored as wall-clock Unix seconds
//! (monotonic instants do not survive a restart), so `vigil ctl registrations`
//! counts `registered_ago` from the REGISTER, not from the last start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use super::StoredBinding;
use super::location::Change;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("location store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
}

/// One binding as a store keeps it: addresses as text, times as Unix
/// seconds (the SQLite row's columns; the Redis field's JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContactRow {
    pub received: String,
    pub local: String,
    pub expires: i64,
    pub call_id: String,
    pub cseq: u32,
    pub q: u16,
    pub registered: Option<i64>,
}

impl ContactRow {
    /// `b` at `now`, when the wall clock reads `wall`.
    pub fn of(b: &super::location::Binding, now: Instant, wall: SystemTime) -> ContactRow {
        ContactRow {
            received: b.contact.received.to_string(),
            local: b.contact.local.to_string(),
            expires: unix(wall) + b.expires.saturating_duration_since(now).as_secs() as i64,
            call_id: b.call_id.to_string(),
            cseq: b.cseq,
            q: b.contact.q,
            registered: Some(
                unix(wall) - now.saturating_duration_since(b.contact.updated).as_secs() as i64,
            ),
        }
    }

    /// The binding of `aor` to `uri` this row says, at `now` (Unix
    /// seconds); `None` for a row a human edited into nonsense.
    pub fn binding(self, aor: String, uri: String, now: i64) -> Option<StoredBinding> {
        let (Ok(received), Ok(local)) = (
            self.received.parse::<SocketAddr>(),
            self.local.parse::<SocketAddr>(),
        ) else {
            return None;
        };
        Some(StoredBinding {
            aor,
            uri,
            received,
            local,
            expires_in: Duration::from_secs(u64::try_from(self.expires - now).unwrap_or(0)),
            call_id: self.call_id,
            cseq: self.cseq,
            q: self.q,
            registered_ago: self
                .registered
                .map(|at| Duration::from_secs(u64::try_from(now - at).unwrap_or(0))),
        })
    }
}

/// Unix seconds of `wall`.
pub fn unix_secs(wall: SystemTime) -> i64 {
    unix(wall)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS contacts (
                 aor      TEXT NOT NULL,
                 uri      TEXT NOT NULL,
                 received TEXT NOT NULL,
                 local    TEXT NOT NULL,
                 expires  INTEGER NOT NULL,
                 call_id  TEXT NOT NULL,
                 cseq     INTEGER NOT NULL,
                 q        INTEGER NOT NULL,
                 registered INTEGER,
                 PRIMARY KEY (aor, uri)
             );",
        )
        .map_err(err)?;
        // A store written before `registered` existed gains the column; its
        // rows' registration time is unknown (NULL) until they re-register.
        let has_registered: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('contacts') WHERE name = 'registered'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_registered {
            conn.execute_batch("ALTER TABLE contacts ADD COLUMN registered INTEGER;")
                .map_err(err)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every binding not yet expired at `wall`; expired rows are deleted.
    pub fn load(&self, wall: SystemTime) -> Result<Vec<StoredBinding>, StoreError> {
        let now = unix(wall);
        self.conn
            .execute("DELETE FROM contacts WHERE expires <= ?1", params![now])
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT aor, uri, received, local, expires, call_id, cseq, q, registered
                 FROM contacts",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, i64>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (aor, uri, received, local, expires, call_id, cseq, q, registered) =
                row.map_err(|e| self.err(e))?;
            let row = ContactRow {
                received,
                local,
                expires,
                call_id,
                cseq: u32::try_from(cseq).unwrap_or(0),
                q: u16::try_from(q).unwrap_or(1000),
                registered,
            };
            // A row a human edited into nonsense is skipped, not fatal.
            out.extend(row.binding(aor, uri, now));
        }
        Ok(out)
    }

    /// Writes one change; `now`/`wall` convert the binding's expiry to Unix time.
    pub fn apply(&self, change: &Change, now: Instant, wall: SystemTime) -> Result<(), StoreError> {
        match change {
            Change::Upsert(b) => {
                let row = ContactRow::of(b, now, wall);
                self.conn
                    .execute(
                        "INSERT INTO contacts
                             (aor, uri, received, local, expires, call_id, cseq, q, registered)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (aor, uri) DO UPDATE SET received = ?3, local = ?4,
                             expires = ?5, call_id = ?6, cseq = ?7, q = ?8, registered = ?9",
                        params![
                            &*b.aor,
                            &*b.contact.uri,
                            row.received,
                            row.local,
                            row.expires,
                            row.call_id,
                            i64::from(row.cseq),
                            i64::from(row.q),
                            row.registered
                        ],
                    )
                    .map_err(|e| self.err(e))?;
            }
            Change::Remove { aor, uri } => {
                self.conn
                    .execute(
                        "DELETE FROM contacts WHERE aor = ?1 AND uri = ?2",
                        params![&**aor, uri],
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::location::{Binding, Target};
    use crate::sip::Uri;

    #[test]
    fn bindings_survive_reopening_and_expired_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("vigil-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("registrar.db");
        let _ = std::fs::remove_file(&path);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let binding = |uri: &str, secs: u64| Binding {
            id: 1,
            aor: "1001".into(),
            contact: std::sync::Arc::new(Target::new(
                &Uri::parse(uri).expect("uri"),
                crate::transaction::Path::udp(
                    "192.0.2.1:5060".parse().expect("addr"),
                    "203.0.113.5:40000".parse().expect("addr"),
                ),
                1000,
                t0,
            )),
            expires: t0 + Duration::from_secs(secs),
            call_id: "c1".into(),
            cseq: 7,
        };
        {
            let store = Store::open(&path).expect("open");
            store
                .apply(
                    &Change::Upsert(Box::new(binding("sip:a@10.0.0.5", 600))),
                    t0,
                    wall,
                )
                .expect("write");
            store
                .apply(
                    &Change::Upsert(Box::new(binding("sip:b@10.0.0.6", 1))),
                    t0,
                    wall,
                )
                .expect("write");
            store
                .apply(
                    &Change::Upsert(Box::new(binding("sip:c@10.0.0.7", 600))),
                    t0,
                    wall,
                )
                .expect("write");
            store
                .apply(
                    &Change::Remove {
                        aor: "1001".into(),
                        uri: "sip:c@10.0.0.7".into(),
                    },
                    t0,
                    wall,
                )
                .expect("delete");
        }
        let store = Store::open(&path).expect("reopen");
        let loaded = store.load(wall + Duration::from_secs(10)).expect("load");
        assert_eq!(loaded.len(), 1, "{loaded:?}");
        assert_eq!(loaded[0].uri, "sip:a@10.0.0.5");
        assert_eq!(loaded[0].expires_in, Duration::from_secs(590));
        assert_eq!(loaded[0].cseq, 7);
        // Registered at t0 (wall), loaded 10 s later: 10 s ago, not "just now".
        assert_eq!(loaded[0].registered_ago, Some(Duration::from_secs(10)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
