//! The state store: where established calls are kept so that they outlive
//! the process (`state:`). A restart loads them and resumes them; a call's
//! CDR is billed once across restarts.
//!
//! The engine says what changed ([`crate::engine::StateChange`]); the
//! daemon's state task collects the changes in [`Pending`] (coalesced per
//! call, never on a worker's path), writes them in one transaction per
//! batch to the [`FileStore`], and deletes a call that ended once the CDR
//! writer reports its CDR written (durable against a crash of the process).
//! At start, [`recover`] sorts what the store holds: calls to resume, ended
//! calls whose CDR must still be written, and calls already billed. With
//! several nodes, the store is Redis ([`shared`]) and a lease there says
//! which node is active.

pub mod file;
pub mod pending;
pub mod recover;
pub mod shared;

pub use file::{FileStore, StateError, StoredRow};
pub use pending::{Op, Pending};
pub use recover::{Recovery, recover};
