//! Media anchoring through rtpengine (issue 17): Vigil puts rtpengine in the
//! media path of a call and asks it how the media flows.
//!
//! This module owns the conversation with rtpengine over its ng control
//! protocol ([`ng`]): the typed commands Vigil sends (`ping`, `offer`,
//! `answer`, `delete`, `query`), the typed replies and the statistics a CDR
//! and a media timeout need, and [`NgClient`], a sans-IO client that spreads
//! new calls over several rtpengines in turn, keeps each call on the engine
//! that holds its state, retransmits, times out and checks each engine's
//! health with pings. Like the transaction layer, it owns no socket and reads
//! no clock: a round trip to rtpengine is an event, like a SIP response, and
//! no worker ever waits on it.
//!
//! What a call does with it (when to offer, what to do when no engine is up,
//! when media counts as dead) belongs to the layers above.

pub mod ng;

pub use ng::{
    Answer, CallStats, Command, Counts, Delete, EngineId, MAX_DATAGRAM, NgClient, NgError, NgEvent,
    NgSettings, NoEngineUp, Offer, Outcome, PartyStats, Query, Reply, RequestId, SdpOptions,
    StreamStats, Totals,
};
