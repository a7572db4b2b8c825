//! rtpengine's ng control protocol, as rtpengine 10.5 speaks it over UDP.
//!
//! Every message is one datagram: a cookie, one space, and a bencoded
//! dictionary (`5323_1 d7:command4:pinge`). The request's dictionary names its
//! `command`; the reply's carries a `result` (`ok`, `error` with an
//! `error-reason`, or `pong`) and repeats the request's cookie, which is how a
//! reply finds its request. rtpengine caches each reply under its cookie for
//! a while and answers a retransmission from that cache, so a request may be
//! sent again safely, and a cookie must never be reused.
//!
//! [`command`] builds requests, [`reply`] reads replies (liberally: a missing
//! key is normal; strictly: one datagram at most, bounded nesting), and
//! [`client`] is the sans-IO client that sends them.

mod client;
mod command;
mod reply;

pub use client::{EngineId, NgClient, NgEvent, NgSettings, NoEngineUp, RequestId};
pub use command::{Answer, Command, Delete, Offer, Query, SdpOptions};
pub use reply::{CallStats, Counts, NgError, Outcome, PartyStats, Reply, StreamStats, Totals};

/// The largest UDP payload over IPv4. A reply is one datagram: anything
/// larger is not an ng reply (the socket's receive buffer should be one byte
/// larger, so that such a datagram is seen as oversized, not cut).
pub const MAX_DATAGRAM: usize = 65_507;

/// The longest cookie accepted in a reply (Vigil's are 30 characters).
const MAX_COOKIE: usize = 64;

/// Replies nesting deeper than this are refused before they are decoded. A
/// `query` reply nests eight deep (reply, `tags`, a tag, `medias`, a media,
/// `streams`, a stream, `stats`); the decoder recurses once per level, so
/// 60,000 `l`s in one datagram would otherwise overflow a worker's stack.
const MAX_DEPTH: usize = 16;

/// Splits a datagram into its cookie and the bencoded dictionary after the
/// space; `None` without a space or with an empty or overlong cookie.
fn split_cookie(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = datagram.iter().position(|&b| b == b' ')?;
    let (cookie, rest) = datagram.split_at(space);
    if cookie.is_empty() || cookie.len() > MAX_COOKIE {
        return None;
    }
    Some((cookie, &rest[1..]))
}

/// Whether `bytes` lexes as bencode nesting at most [`MAX_DEPTH`] deep. A
/// scan without recursion: it only follows the structure (strings are
/// skipped by their length, integers to their `e`), and leaves checking
/// everything else to the decoder, which then never recurses deeper than
/// this scan saw.
fn within_depth(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'd' | b'l' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
                i += 1;
            }
            b'e' => {
                let Some(d) = depth.checked_sub(1) else {
                    return false;
                };
                depth = d;
                i += 1;
            }
            b'i' => {
                let Some(end) = bytes[i..].iter().position(|&b| b == b'e') else {
                    return false;
                };
                i += end + 1;
            }
            b'0'..=b'9' => {
                let Some(colon) = bytes[i..].iter().position(|&b| b == b':') else {
                    return false;
                };
                let digits = &bytes[i..i + colon];
                let len = digits.iter().try_fold(0usize, |n, &d| {
                    d.is_ascii_digit()
                        .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
                        .flatten()
                });
                let Some(next) = len.and_then(|len| (i + colon + 1).checked_add(len)) else {
                    return false;
                };
                if next > bytes.len() {
                    return false;
                }
                i = next;
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
