//! CDRs into a PostgreSQL database, beside the CDR file: one row per call,
//! never lost and never twice, whatever the database does.
//!
//! Split by concern: [`schema`] is the shipped, versioned SQL (tables,
//! indexes, the insert); [`queue`] decides, without I/O, what waits where
//! and what to do next; [`spool`] is the durable queue on disk (append-only
//! segment files, fsynced). The daemon's `cdr_database` task runs them with
//! `tokio-postgres`.

pub mod queue;
pub mod schema;
pub mod spool;
