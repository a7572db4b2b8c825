//! Media anchoring through rtpengine (issue 17): Vigil puts rtpengine in the
//! media path of a call and asks it how the media flows.
//!
//! This module owns the conversation with rtpengine over its ng control
//! protocol ([`ng`]): the typed commands Vigil sends (`ping`, `offer`,
//! `answer`, `delete`, `query`), and the typed replies with the statistics a
//! CDR and a media timeout need. Like the transaction layer, it owns no
//! socket and reads no clock.
//!
//! What a call does with it (when to offer, what to do when no engine is up,
//! when media counts as dead) belongs to the layers above.

pub mod ng;

pub use ng::{
    Answer, CallStats, Command, Counts, Delete, MAX_DATAGRAM, NgError, Offer, Outcome, PartyStats,
    Query, Reply, SdpOptions, StreamStats, Totals,
};
