//! rtpengine's replies, read into Vigil's own small types.
//!
//! Liberal in what is accepted: any key may be missing (rtpengine's versions
//! differ, and an error reply has no others), unknown keys are ignored, and
//! a number or string of the wrong type counts as missing. Strict about what
//! is decoded at all: one datagram at most, nesting bounded (see
//! [`super::within_depth`]).
//!
//! The statistics of `query` and `delete` are kept per party (per SIP tag):
//! rtpengine counts, on the ports it opened for a party, what arrives from
//! that party. So a party's counts are the media it sent, and its last packet
//! time says when it last sent any: a CDR's packets and bytes per direction,
//! and a media timeout's per-direction silence.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bt_bencode::{ByteString, Value};

use super::within_depth;

/// What became of a request, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    /// No reply after every retransmission.
    #[error("rtpengine did not answer")]
    Timeout,
    /// `result: error`, with rtpengine's `error-reason` (empty if it gave none).
    #[error("rtpengine refused: {0}")]
    Rejected(String),
    /// A reply with the request's cookie that is not a valid ng reply.
    #[error("rtpengine's reply did not decode")]
    Malformed,
    /// Never sent: no rtpengine was up ([`super::NoEngineUp`]), so the
    /// request failed at once.
    #[error("no rtpengine is up")]
    NoEngineUp,
}

/// A successful `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The answer to `ping`.
    Pong,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub outcome: Outcome,
    /// A non-fatal problem rtpengine reports with `ok`.
    pub warning: Option<String>,
    /// The rewritten SDP (`offer`, `answer`).
    pub sdp: Option<Vec<u8>>,
    /// The call's statistics (`query`, and `delete` without the `fast` flag).
    pub stats: Option<CallStats>,
}

/// A call's statistics, as `query` and `delete` report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// When rtpengine created the call.
    pub created: Option<SystemTime>,
    /// The last offer, answer or other signalling for it.
    pub last_signal: Option<SystemTime>,
    /// One entry per SIP tag rtpengine knows, in tag order. A side that has
    /// not signalled its tag yet has the empty tag.
    pub parties: Vec<PartyStats>,
    /// Everything rtpengine received for the call.
    pub totals: Totals,
}

impl CallStats {
    /// The party with this SIP tag.
    pub fn party(&self, tag: &str) -> Option<&PartyStats> {
        self.parties.iter().find(|p| p.tag == tag)
    }
}

/// One party of a call (one SIP tag): what it sent, and when it last did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartyStats {
    pub tag: String,
    /// The `label` given in its `offer` or `answer`.
    pub label: Option<String>,
    /// The tag of the party it is in a dialogue with, if rtpengine says.
    pub peer: Option<String>,
    /// RTP it sent (as received by rtpengine), over all its media.
    pub rtp: Counts,
    /// RTCP it sent (on separate RTCP ports; muxed RTCP counts as RTP).
    pub rtcp: Counts,
    /// When the last packet (RTP or RTCP) came from it; `None` if none ever did.
    pub last_packet: Option<SystemTime>,
    /// Its streams: usually an RTP and an RTCP one per media.
    pub streams: Vec<StreamStats>,
}

/// One stream of a party: a port of rtpengine's and what arrived on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// The SDP media it belongs to (`m=` line, from 1).
    pub media: u32,
    pub rtcp: bool,
    /// rtpengine's port the party sends to (the one in the SDP it was given).
    pub local_port: Option<u16>,
    /// Where rtpengine sends this party's media (learned from its packets
    /// with symmetric RTP, else from its SDP).
    pub endpoint: Option<SocketAddr>,
    pub counts: Counts,
    /// `None` while nothing arrived (rtpengine reports the stream's creation
    /// time then, which is no packet's).
    pub last_packet: Option<SystemTime>,
}

/// Packets, bytes and errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.errors = self.errors.saturating_add(other.errors);
    }
}

/// A call's totals, as rtpengine sums them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub rtp: Counts,
    pub rtcp: Counts,
}

type Dict = BTreeMap<ByteString, Value>;

impl Reply {
    /// Reads a reply's dictionary (the datagram after the cookie and its
    /// space). Never panics, whatever the bytes.
    pub fn decode(body: &[u8]) -> Result<Reply, NgError> {
        decode(body)
    }
}

fn decode(body: &[u8]) -> Result<Reply, NgError> {
    if !within_depth(body) {
        return Err(NgError::Malformed);
    }
    let value: Value = bt_bencode::from_slice(body).map_err(|_| NgError::Malformed)?;
    let reply = value.as_dict().ok_or(NgError::Malformed)?;
    let outcome = match get(reply, "result").and_then(Value::as_byte_str) {
        Some(r) if r.as_slice() == b"ok" => Outcome::Ok,
        Some(r) if r.as_slice() == b"pong" => Outcome::Pong,
        Some(r) if r.as_slice() == b"error" => {
            let reason = get(reply, "error-reason")
                .and_then(text)
                .unwrap_or_default();
            return Err(NgError::Rejected(reason));
        }
        _ => return Err(NgError::Malformed),
    };
    let has_stats = get(reply, "tags").is_some() || get(reply, "totals").is_some();
    Ok(Reply {
        outcome,
        warning: get(reply, "warning").and_then(text),
        sdp: get(reply, "sdp")
            .and_then(Value::as_byte_str)
            .map(|s| s.to_vec()),
        stats: has_stats.then(|| call_stats(reply)),
    })
}

fn call_stats(reply: &Dict) -> CallStats {
    let parties = get(reply, "tags")
        .and_then(Value::as_dict)
        .map(|tags| {
            tags.iter()
                .filter_map(|(key, party)| Some(party_stats(key, party.as_dict()?)))
                .collect()
        })
        .unwrap_or_default();
    let totals = get(reply, "totals").and_then(Value::as_dict);
    CallStats {
        created: get(reply, "created").and_then(unix_time),
        last_signal: get(reply, "last signal").and_then(unix_time),
        parties,
        totals: Totals {
            rtp: counts(totals.and_then(|t| get(t, "RTP"))),
            rtcp: counts(totals.and_then(|t| get(t, "RTCP"))),
        },
    }
}

fn party_stats(key: &ByteString, party: &Dict) -> PartyStats {
    // The `tag` value: the key of an untagged side is `<untagged N>`.
    let tag = get(party, "tag")
        .and_then(text)
        .unwrap_or_else(|| String::from_utf8_lossy(key).into_owned());
    // 10.5 lists the other side under `subscriptions`; older and newer
    // versions say `in dialogue with`.
    let peer = get(party, "in dialogue with").and_then(text).or_else(|| {
        let first = get(party, "subscriptions")?.as_list()?.first()?.as_dict()?;
        get(first, "tag").and_then(text)
    });
    let mut stats = PartyStats {
        tag,
        label: get(party, "label").and_then(text),
        peer,
        ..PartyStats::default()
    };
    let medias = get(party, "medias").and_then(Value::as_list);
    for media in medias.into_iter().flatten().filter_map(Value::as_dict) {
        let index = get(media, "index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0);
        let streams = get(media, "streams").and_then(Value::as_list);
        for stream in streams.into_iter().flatten().filter_map(Value::as_dict) {
            let s = stream_stats(index, stream);
            if s.rtcp {
                stats.rtcp.add(s.counts);
            } else {
                stats.rtp.add(s.counts);
            }
            stats.last_packet = stats.last_packet.max(s.last_packet);
            stats.streams.push(s);
        }
    }
    stats
}

fn stream_stats(media: u32, stream: &Dict) -> StreamStats {
    // As rtpengine sums its totals: a stream not flagged RTP is RTCP.
    let flags = get(stream, "flags").and_then(Value::as_list);
    let rtp = flags
        .into_iter()
        .flatten()
        .any(|f| f.as_byte_str().is_some_and(|f| f.as_slice() == b"RTP"));
    let counts = counts(get(stream, "stats"));
    StreamStats {
        media,
        rtcp: !rtp,
        local_port: get(stream, "local port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok()),
        endpoint: get(stream, "endpoint")
            .and_then(Value::as_dict)
            .and_then(endpoint),
        counts,
        last_packet: if counts.packets > 0 {
            get(stream, "last packet").and_then(unix_time)
        } else {
            None
        },
    }
}

fn endpoint(d: &Dict) -> Option<SocketAddr> {
    let ip: IpAddr = get(d, "address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(get(d, "port")?.as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn counts(stats: Option<&Value>) -> Counts {
    let stats = stats.and_then(Value::as_dict);
    let n = |key| {
        stats
            .and_then(|s| get(s, key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Counts {
        packets: n("packets"),
        bytes: n("bytes"),
        errors: n("errors"),
    }
}

fn get<'a>(d: &'a Dict, key: &str) -> Option<&'a Value> {
    d.get(key.as_bytes())
}

fn text(v: &Value) -> Option<String> {
    v.as_byte_str()
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

/// A UNIX timestamp in seconds (what 10.5 sends; newer versions too); 0,
/// negative and out-of-range ones are none.
fn unix_time(v: &Value) -> Option<SystemTime> {
    let secs = v.as_u64().filter(|&s| s > 0)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn pong_ok_and_error_replies() {
        // The protocol document's `5323_1 d6:result4:ponge`, without the cookie.
        let pong = decode(b"d6:result4:ponge").expect("pong");
        assert_eq!(pong.outcome, Outcome::Pong);
        assert_eq!((pong.sdp, pong.stats, pong.warning), (None, None, None));
        let ok = decode(b"d3:sdp5:v=0\r\n6:result2:ok7:warning4:hmm.e").expect("ok");
        assert_eq!(ok.outcome, Outcome::Ok);
        assert_eq!(ok.sdp.as_deref(), Some(&b"v=0\r\n"[..]));
        assert_eq!(ok.warning.as_deref(), Some("hmm."));
        assert_eq!(
            decode(b"d12:error-reason15:Unknown call-id6:result5:errore"),
            Err(NgError::Rejected("Unknown call-id".into()))
        );
        assert_eq!(
            decode(b"d6:result5:errore"),
            Err(NgError::Rejected(String::new())),
            "an error without its reason is still an error"
        );
    }

    #[test]
    fn what_is_not_a_reply_is_malformed() {
        for junk in [
            &b""[..],
            b"le",
            b"d6:resulti1ee",
            b"d6:result5:maybee",
            b"d7:warning2:hie",
            b"d6:result2:ok",
            b"d6:result2:okee",
            b"d6:result99:oke",
            b"{\"result\":\"ok\"}",
        ] {
            assert_eq!(
                decode(junk),
                Err(NgError::Malformed),
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
    }

    #[test]
    fn nesting_past_the_limit_is_refused_without_recursing() {
        // 60,000 levels would overflow the stack of a recursive decoder; run
        // on a small stack to prove the scan never recurses.
        let mut deep = b"d6:result2:ok4:deep".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 60_000));
        deep.extend(std::iter::repeat_n(b'e', 60_001));
        let result = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || decode(&deep))
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(result, Err(NgError::Malformed));
        let mut shallow = b"d6:result2:ok4:deep".to_vec();
        shallow.extend(std::iter::repeat_n(b'l', 15));
        shallow.extend(std::iter::repeat_n(b'e', 16));
        assert!(decode(&shallow).is_ok(), "16 levels are fine");
    }

    /// A `query` reply as rtpengine 10.5 sends it (keys in its own order),
    /// for a call whose caller sent 10 RTP packets and whose callee sent 4;
    /// unknown keys (`SSRC`, `subscribers`, `codec`, ...) included.
    const QUERY_10_5: &str = "d7:createdi1796602332e10:created_usi943014e11:last signali1796602333e4:SSRCde4:tagsd4:ftag\
d3:tag4:ftag5:label6:caller7:createdi1796602332e13:subscriptionsld3:tag4:ttag4:type12:offe\
r/answeree11:subscribersld3:tag4:ttag4:type12:offer/answeree6:mediasld5:indexi1e4:type5:au\
dio8:protocol7:RTP/AVP5:codec9:PCMU/80007:streamsld10:local porti31170e13:local address9:1\
27.0.0.16:family4:IPv48:endpointd6:family4:IPv47:address9:127.0.0.24:porti40000ee19:advert\
ised endpointd6:family4:IPv47:address9:127.0.0.24:porti40000ee11:last packeti1796602340e5:\
flagsl3:RTP6:filled9:confirmede4:SSRCi4660e5:statsd7:packetsi10e5:bytesi1720e6:errorsi0eee\
d10:local porti31171e13:local address9:127.0.0.16:family4:IPv48:endpointd6:family4:IPv47:a\
ddress9:127.0.0.24:porti40001ee19:advertised endpointd6:family4:IPv47:address9:127.0.0.24:\
porti40001ee11:last packeti1796602332e5:flagsl4:RTCP6:fillede5:statsd7:packetsi0e5:bytesi0\
e6:errorsi0eeee5:flagsl11:initialized4:send4:recveeee4:ttagd3:tag4:ttag5:label6:callee7:cr\
eatedi1796602332e13:subscriptionsld3:tag4:ftag4:type12:offer/answeree11:subscribersld3:tag\
4:ftag4:type12:offer/answeree6:mediasld5:indexi1e4:type5:audio8:protocol7:RTP/AVP5:codec9:\
PCMU/80007:streamsld10:local porti31150e13:local address9:127.0.0.16:family4:IPv48:endpoin\
td6:family4:IPv47:address9:127.0.0.34:porti40002ee19:advertised endpointd6:family4:IPv47:a\
ddress9:127.0.0.34:porti40002ee11:last packeti1796602339e5:flagsl3:RTP6:filled9:confirmede\
4:SSRCi4660e5:statsd7:packetsi4e5:bytesi688e6:errorsi0eeed10:local porti31151e13:local add\
ress9:127.0.0.16:family4:IPv48:endpointd6:family4:IPv47:address9:127.0.0.34:porti40003ee19\
:advertised endpointd6:family4:IPv47:address9:127.0.0.34:porti40003ee11:last packeti179660\
2332e5:flagsl4:RTCP6:fillede5:statsd7:packetsi1e5:bytesi80e6:errorsi0eeee5:flagsl11:initia\
lized4:send4:recveeeee6:totalsd3:RTPd7:packetsi14e5:bytesi2408e6:errorsi0ee4:RTCPd7:packet\
si1e5:bytesi80e6:errorsi0eee6:result2:oke";

    #[test]
    fn a_query_reply_gives_each_party_its_counts_and_last_packet() {
        let reply = decode(QUERY_10_5.as_bytes()).expect("query reply");
        let stats = reply.stats.expect("stats");
        assert_eq!(stats.created, at(1796602332));
        assert_eq!(stats.last_signal, at(1796602333));
        assert_eq!(stats.parties.len(), 2);
        let caller = stats.party("ftag").expect("caller");
        assert_eq!(caller.label.as_deref(), Some("caller"));
        assert_eq!(caller.peer.as_deref(), Some("ttag"));
        assert_eq!(
            caller.rtp,
            Counts {
                packets: 10,
                bytes: 1720,
                errors: 0
            }
        );
        assert_eq!(caller.rtcp, Counts::default());
        assert_eq!(caller.last_packet, at(1796602340));
        assert_eq!(caller.streams.len(), 2);
        let rtp = &caller.streams[0];
        assert_eq!(
            (rtp.media, rtp.rtcp, rtp.local_port),
            (1, false, Some(31170))
        );
        assert_eq!(rtp.endpoint, "127.0.0.2:40000".parse().ok());
        assert_eq!(
            caller.streams[1].last_packet, None,
            "an RTCP port nothing reached has no last packet (rtpengine says its creation time)"
        );
        let callee = stats.party("ttag").expect("callee");
        assert_eq!((callee.rtp.packets, callee.rtp.bytes), (4, 688));
        assert_eq!((callee.rtcp.packets, callee.rtcp.bytes), (1, 80));
        assert_eq!(
            callee.last_packet,
            at(1796602339),
            "the latest of its streams with packets"
        );
        assert_eq!(stats.totals.rtp.packets, 14);
        assert_eq!(stats.totals.rtcp.bytes, 80);
    }

    #[test]
    fn missing_keys_and_wrong_types_count_as_absent() {
        let reply = decode(
            b"d6:result2:ok6:totalsd3:RTP5:wrong4:RTCPd7:packetsi-3eee\
4:tagsd12:<untagged 1>d6:mediasld7:streamsld5:statsi5eeeeee3:badi1eee",
        )
        .expect("a reply");
        let stats = reply.stats.expect("stats");
        assert_eq!(stats.created, None);
        assert_eq!(stats.totals, Totals::default());
        assert_eq!(
            stats.parties.len(),
            1,
            "a tag that is not a dictionary is skipped"
        );
        let untagged = &stats.parties[0];
        assert_eq!(untagged.tag, "<untagged 1>");
        assert_eq!(untagged.streams.len(), 1);
        assert_eq!(untagged.streams[0].media, 0);
        assert!(untagged.streams[0].rtcp, "not flagged RTP");
        assert_eq!(untagged.last_packet, None);
    }
}
