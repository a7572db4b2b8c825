//! RFC 4028 session timers, per call leg, with VOS3000's parameters: negotiation
//! as UAS and UAC ([`negotiate`]) and the live timer of an established leg
//! ([`SessionLeg`]). Sans-IO: the call feeds it `now` and the messages that prove
//! the peer alive, and asks it what is due.

pub mod leg;
pub mod negotiate;

pub use leg::{LegEvent, RefreshKind, SavedSession, SessionLeg};
pub use negotiate::{Agreed, UasOutcome};
/// Who refreshes a leg's session: the policy API's type, which hooks see as is.
pub use vigil_plugin_api::Refresher;
