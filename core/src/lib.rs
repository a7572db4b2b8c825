//! Vigil: a SIP B2BUA softswitch that keeps calls honest.
//!
//! Layers only look down: [`sip`] (codec) → `transaction` → `dialog`/`call` →
//! session timers → policy. The protocol logic is sans-IO; the `daemon` module is
//! the thin tokio shell that feeds it datagrams and timeouts.

pub mod call;
pub mod cdr;
pub mod config;
pub mod daemon;
pub mod dialog;
pub mod engine;
pub mod ids;
pub mod ingress;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod registrar;
pub mod session_timer;
pub mod shrink;
pub mod sip;
pub mod timer;
pub mod transaction;
pub mod transport;
