//! Gateway names and how they are kept resolved (RFC 3263 §4.2, RFC 2782),
//! without doing any I/O: what a configured address asks DNS for
//! ([`Gateway`], [`GatewayName`]), how found records become ordered targets
//! ([`Answer`]), when each name is looked up again and what a failure does
//! ([`Refresher`], [`DnsEvent`]), and the `dns:` section ([`DnsFile`]).
//!
//! It sits beside the config at the bottom of the layers, so the config can
//! hold these types; the lookups themselves are the daemon's (`daemon::dns`,
//! with hickory-resolver), and the engine only ever sees published
//! [`DnsEvent`]s: a call never waits on DNS.

mod answer;
mod name;
mod refresh;
mod settings;

pub use answer::{Addresses, Answer, LookupError, SrvRecord, Target};
pub use name::{Gateway, GatewayName, NameError, transport_of};
pub use refresh::{DnsEvent, Refresher, Resolution};
pub use settings::{DnsFile, DnsSettings, MAX_TTL_CEILING, MIN_TTL_FLOOR, TtlBounds};
