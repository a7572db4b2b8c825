//! What Vigil reads in a session description (RFC 4566, RFC 3264): where each
//! media stream goes (for `vigil ctl calls`) and whether the session is on
//! hold (`sendonly`, `recvonly` or `inactive`, RFC 3264 §8.4), which gives a
//! relayed call `media.hold_timeout` instead of `media.timeout`.
//!
//! Vigil never rewrites an SDP itself: rtpengine does. This module only
//! reads, line by line, and tolerates what it does not understand.

use std::fmt;

/// A stream's direction (RFC 3264 §5.1; `sendrecv` when none is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attribute: &str) -> Option<Direction> {
        match attribute.trim() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One `m=` line and where it goes (`vigil ctl calls` shows it as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stream {
    /// `audio`, `video`, …
    pub kind: String,
    /// The connection address (`c=`, the stream's own or the session's).
    pub address: Option<String>,
    pub port: u16,
    pub direction: Direction,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = self.address.as_deref().unwrap_or("-");
        if address.contains(':') {
            write!(f, "{} [{address}]:{}", self.kind, self.port)
        } else {
            write!(f, "{} {address}:{}", self.kind, self.port)
        }
    }
}

/// The streams of a session description, in order. A body that is not an
/// SDP (or has no `m=` line) has none.
pub fn streams(body: &[u8]) -> Vec<Stream> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut session_address = None;
    let mut session_direction = Direction::SendRecv;
    let mut streams: Vec<Stream> = Vec::new();
    for line in text.lines() {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match (kind, streams.last_mut()) {
            ("m", _) => {
                let mut parts = value.split_whitespace();
                let media = parts.next().unwrap_or_default().to_string();
                let port = parts.next().and_then(|p| p.split('/').next()?.parse().ok());
                streams.push(Stream {
                    kind: media,
                    address: session_address.clone(),
                    port: port.unwrap_or(0),
                    direction: session_direction,
                });
            }
            ("c", current) => {
                // c=IN IP4 127.0.0.1 (a multicast TTL after a `/` is dropped).
                let address = value
                    .split_whitespace()
                    .nth(2)
                    .map(|a| a.split('/').next().unwrap_or(a).to_string());
                match current {
                    Some(stream) => stream.address = address,
                    None => session_address = address,
                }
            }
            ("a", current) => {
                if let Some(direction) = Direction::parse(value) {
                    match current {
                        Some(stream) => stream.direction = direction,
                        None => session_direction = direction,
                    }
                }
            }
            _ => {}
        }
    }
    streams
}

/// Whether a session description puts the call on hold: every stream that
/// carries media (a port other than 0) is `sendonly`, `recvonly` or
/// `inactive`, or its address is the RFC 2543 hold address `0.0.0.0`.
pub fn is_hold(body: &[u8]) -> bool {
    let active: Vec<Stream> = streams(body).into_iter().filter(|s| s.port != 0).collect();
    !active.is_empty()
        && active
            .iter()
            .all(|s| s.direction != Direction::SendRecv || s.address.as_deref() == Some("0.0.0.0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\nm=video 0 RTP/AVP 96\r\n";

    #[test]
    fn streams_take_the_session_address_unless_they_have_their_own() {
        let s = streams(CALL.as_bytes());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].to_string(), "audio 127.0.0.2:4000");
        assert_eq!(s[0].direction, Direction::SendRecv);
        assert_eq!(s[1].port, 0);
        let own = CALL.replace("m=video 0", "m=video 5000").replace(
            "m=video 5000 RTP/AVP 96\r\n",
            "m=video 5000 RTP/AVP 96\r\nc=IN IP6 ::1\r\n",
        );
        assert_eq!(streams(own.as_bytes())[1].to_string(), "video [::1]:5000");
        assert!(streams(b"not an sdp").is_empty());
        assert!(streams(&[0xff, 0xfe]).is_empty());
    }

    #[test]
    fn hold_is_every_live_stream_not_sending_both_ways() {
        assert!(!is_hold(CALL.as_bytes()));
        let held = CALL.replace("a=rtpmap:0 PCMU/8000", "a=sendonly");
        assert!(is_hold(held.as_bytes()), "the one live stream is sendonly");
        let session_level = CALL.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert!(is_hold(session_level.as_bytes()));
        let rfc2543 = CALL.replace("c=IN IP4 127.0.0.2", "c=IN IP4 0.0.0.0");
        assert!(is_hold(rfc2543.as_bytes()));
        let resumed = session_level.replace("a=rtpmap:0 PCMU/8000", "a=sendrecv");
        assert!(
            !is_hold(resumed.as_bytes()),
            "a stream's own attribute wins"
        );
        assert!(!is_hold(b""), "no SDP, no hold");
    }
}
