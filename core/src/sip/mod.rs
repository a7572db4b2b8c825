//! Vigil's SIP codec: decoding, validation, typed headers and encoding of SIP
//! messages (RFC 3261 §7, §19, §20, §25; RFC 4028 §4-5 for Session-Expires and
//! Min-SE). It knows nothing of sockets, transactions or calls.
//!
//! Every other module sees SIP only through the types exported here. The codec is
//! Vigil's own: `rsip` 0.4, which the project first meant to wrap, rewrites valid
//! URIs when it prints them (an escaped or `;`-carrying user part such as
//! `sip:+4930123;npdi@gw` loses its host), cannot parse IPv6 hosts, rejects folded
//! headers and extension methods, and parses header values lazily. A B2BUA that
//! relays carriers' numbers must reproduce them byte for byte, so this module keeps
//! each part as written and validates everything on the way in. The boundary stays
//! narrow so another codec could replace it.

mod auth;
mod decode;
mod header;
mod message;
mod reliable;
mod reply;
mod status;
mod text;
mod typed;
mod uri;

pub use auth::{
    ChallengeError, DigestAlgorithm, DigestChallenge, DigestCredentials, digest_response,
};
pub use decode::{DecodeError, MAX_DATAGRAM, MAX_HEADERS, ReplyContext, decode};
pub use header::{Header, HeaderName, Headers};
pub use message::{ALLOWED_METHODS, Message, Request, Response};
pub use reliable::{RAck, RSeq, TAG_100REL, requires_100rel, supports_100rel};
pub use reply::{Reply, local_response};
pub use status::reason_phrase;
pub use text::{Param, split_list};
pub use typed::{
    CSeq, MAGIC_COOKIE, MediaType, Method, MinSe, NameAddr, Protocol, Refresher, SessionExpires,
    ValueError, Via,
};
pub use uri::{Host, SipUri, Uri, UriError, escape_user, is_plain_user};
