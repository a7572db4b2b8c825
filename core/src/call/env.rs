//! What a call needs from its worker to act, and the tags it puts on the
//! transactions it starts so that their answers find their way back to it.

use std::collections::VecDeque;
use std::time::Duration;

use super::media::MediaRelay;
use crate::cdr::CdrRecord;
use crate::ids::IdGen;
use crate::metrics::Metrics;
use crate::policy::{Leg, Policies};
use crate::transaction::{TimerValues, TransactionLayer};
use crate::transport::LocalSocket;

/// A call's handle inside its worker.
pub type CallKey = u64;

/// Why a client transaction exists, reported back with its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The B-leg INVITE.
    BInvite,
    /// A request relayed from one leg to the other.
    Relay(u32),
    /// Vigil's session refresh (UPDATE or re-INVITE) on a leg.
    Refresh(Leg),
    /// Vigil's PRACK for a reliable provisional of the callee (RFC 3262):
    /// its answer changes nothing (a lost one is the transaction's business).
    Prack,
    /// A request Vigil sends on its own (BYE, CANCEL): its answer changes nothing.
    Teardown,
    /// Not a call's: a REGISTER of the worker's trunk registrations
    /// (`uplink::registration`), by its id. The engine routes its answers.
    Register(u32),
}

/// The owner tag on every transaction a call starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOwner {
    pub call: CallKey,
    pub purpose: Purpose,
}

/// What a call needs from its worker to act.
pub struct Env<'a> {
    pub tx: &'a mut TransactionLayer<TxOwner>,
    pub ids: &'a mut IdGen,
    pub cdrs: &'a mut VecDeque<CdrRecord>,
    pub settings: &'a CallSettings,
    /// The worker's policies; a call asks those of its trunks.
    pub policies: &'a Policies,
    pub metrics: &'a Metrics,
    /// rtpengine, when `media:` names one.
    pub media: Option<&'a mut MediaRelay>,
    /// The sockets new requests may go from (a B leg failing over picks
    /// the one that reaches its next gateway).
    pub sockets: &'a [LocalSocket],
}

/// Per-call knobs from the config snapshot the call started under.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub user_agent: String,
    pub max_ring_time: Duration,
    pub timers: TimerValues,
    /// `sip.failover_after_early_media`.
    pub failover_after_early_media: bool,
}
