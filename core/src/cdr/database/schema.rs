//! The CDR table as shipped: versioned migrations, the insert, and the
//! checks the daemon and `vigil check` make. Plain SQL text for a table name
//! the config checked to be a plain identifier; no I/O here.
//!
//! One row per call; every CDR field is a typed column (times as
//! `timestamptz(3)`: milliseconds, as in the CDR file; `extra`, `attempts`
//! and `media` as `jsonb`). The primary key is the CDR's `id`, made when the
//! call was: a batch sent again (after a timeout, a restart, a `kill -9`)
//! inserts nothing twice (`ON CONFLICT DO NOTHING`). Indexes serve what
//! billing asks: calls by end time, and by trunk (in or out) and end time.
//!
//! Versions are recorded in `vigil_schema` (one row per table), so `vigil cdr
//! init-db` applies only what a database lacks, and the daemon refuses a
//! table older than it writes.

/// The version this Vigil writes; [`migrations`] reach it.
pub const VERSION: i32 = 1;

/// The table recording each Vigil table's schema version.
pub const VERSIONS_TABLE: &str = "vigil_schema";

/// Each migration's version and SQL, in order, for `table`.
pub fn migrations(table: &str) -> Vec<(i32, String)> {
    vec![(
        1,
        format!(
            "CREATE TABLE {table} (
    id              uuid PRIMARY KEY,
    call_id         text NOT NULL,
    b_call_id       text,
    caller          text NOT NULL,
    callee          text NOT NULL,
    trunk_in        text NOT NULL,
    trunk_out       text,
    start_time      timestamptz(3) NOT NULL,
    answer_time     timestamptz(3),
    end_time        timestamptz(3) NOT NULL,
    duration_ms     bigint NOT NULL,
    end_reason      text NOT NULL,
    ended_by        text NOT NULL,
    sip_code        integer,
    refresh_failure text,
    gateway         text,
    extra           jsonb NOT NULL DEFAULT '{{}}',
    attempts        jsonb NOT NULL DEFAULT '[]',
    media           jsonb,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {table}_end_time ON {table} (end_time);
CREATE INDEX {table}_trunk_in_end_time ON {table} (trunk_in, end_time);
CREATE INDEX {table}_trunk_out_end_time ON {table} (trunk_out, end_time);
"
        ),
    )]
}

/// The table of versions (created first, by any version).
pub fn versions_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
    name       text PRIMARY KEY,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"
    )
}

/// Records that `table` is at `version` (after its migration, in the same
/// transaction).
pub fn record_version(table: &str, version: i32) -> String {
    format!(
        "INSERT INTO {VERSIONS_TABLE} (name, version) VALUES ('{table}', {version})
    ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, applied_at = now();
"
    )
}

/// The version `table` is at: one row, one `integer` column, or none.
pub fn version_query() -> String {
    format!("SELECT version FROM {VERSIONS_TABLE} WHERE name = $1")
}

/// Everything `vigil cdr init-db --print` shows: the whole schema from an
/// empty database, in one transaction.
pub fn full_script(table: &str) -> String {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(&versions_table());
    for (version, migration) in migrations(table) {
        sql.push_str(&format!("-- version {version}\n"));
        sql.push_str(&migration);
        sql.push_str(&record_version(table, version));
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// The insert of a batch: `$1` is a JSON array of CDR lines as the CDR file
/// has them (the same text, so the row and the line cannot differ), turned
/// into rows by the server.
pub fn insert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (id, call_id, b_call_id, caller, callee, trunk_in, trunk_out,
    start_time, answer_time, end_time, duration_ms, end_reason, ended_by, sip_code,
    refresh_failure, gateway, extra, attempts, media)
SELECT r.id, r.call_id, r.b_call_id, r.caller, r.callee, r.trunk_in, r.trunk_out,
    r.start, r.answer, r.\"end\", r.duration_ms, r.end_reason, r.ended_by, r.sip_code,
    r.refresh_failure, r.gateway, COALESCE(r.extra, '{{}}'), COALESCE(r.attempts, '[]'), r.media
FROM jsonb_to_recordset($1::text::jsonb) AS r(id uuid, call_id text, b_call_id text,
    caller text, callee text, trunk_in text, trunk_out text, start timestamptz,
    answer timestamptz, \"end\" timestamptz, duration_ms bigint, end_reason text,
    ended_by text, sip_code integer, refresh_failure text, gateway text, extra jsonb,
    attempts jsonb, media jsonb)
ON CONFLICT (id) DO NOTHING"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cdr_schema_names_the_configured_table_everywhere() {
        let sql = full_script("calls_2027");
        assert!(sql.starts_with("BEGIN;\n") && sql.ends_with("COMMIT;\n"));
        assert!(sql.contains("CREATE TABLE calls_2027 ("));
        assert!(sql.contains("id              uuid PRIMARY KEY"));
        assert!(sql.contains("ON calls_2027 (end_time)"));
        assert!(sql.contains("ON calls_2027 (trunk_in, end_time)"));
        assert!(sql.contains("VALUES ('calls_2027', 1)"));
        assert!(!sql.contains("vigil_cdr"));
        assert_eq!(migrations("t").last().map(|m| m.0), Some(VERSION));
        let insert = insert("calls_2027");
        assert!(insert.starts_with("INSERT INTO calls_2027 ("));
        assert!(insert.ends_with("ON CONFLICT (id) DO NOTHING"));
    }
}
