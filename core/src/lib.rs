//! Vigil: a SIP B2BUA softswitch that keeps calls honest.
//!
//! Layers only look down; from the bottom up:
//!
//! 1. [`sip`] (the codec, and [`sip::Reply`]: how any layer answers with a
//!    status), [`sdp`] (what Vigil reads in a session description), [`timer`],
//!    [`ratelimit`], [`shrink`], [`ids`], [`dns`] (gateway names and when
//!    they are looked up again), [`config`];
//! 2. [`transaction`] and [`dialog`] (RFC 3261 §17, §12), [`transport`] (the
//!    SIP sockets), [`session_timer`] (RFC 4028), [`metrics`], [`cdr`],
//!    [`media`] (rtpengine's ng protocol and its client: media anchoring),
//!    [`gateway`] (trunks' gateways: their health, probes, a call's order);
//!    [`uplink`] (Vigil as a carrier's client: digest answers, registration);
//! 3. [`policy`] (the decision points; their types are `vigil-plugin-api`'s);
//! 4. [`call`] (two legs and the rules between them), [`registrar`];
//! 5. [`engine`] (one worker's core) and [`ingress`] (the stateless front),
//!    [`state`] (the store that keeps established calls across restarts);
//! 6. [`daemon`], the tokio shell.
//!
//! Everything below the daemon is sans-IO: it takes `now` and returns what to
//! send and when to wake it. `core/tests/module_layers.rs` fails on an import
//! cycle between these modules.

pub mod call;
pub mod cdr;
pub mod config;
pub mod daemon;
pub mod dialog;
pub mod dns;
pub mod engine;
pub mod gateway;
pub mod ids;
pub mod ingress;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod registrar;
pub mod sdp;
pub mod session_timer;
pub mod shrink;
pub mod sip;
pub mod state;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uplink;
