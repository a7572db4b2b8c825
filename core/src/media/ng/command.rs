//! The ng commands Vigil sends, as typed values, and their bencoding.
//!
//! Only what a B2BUA with one media interface needs: `ping`, `offer`,
//! `answer`, `delete` and `query`, with the options that make rtpengine the
//! media anchor of a call between SIP phones and trunks.

use std::collections::BTreeMap;

use bt_bencode::{ByteString, Value};

/// A request to rtpengine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A health check: rtpengine answers `pong`.
    Ping,
    /// A new SDP offer (the INVITE's, or a re-INVITE's): rtpengine allocates
    /// ports and answers the SDP to send on.
    Offer(Offer),
    /// The SDP answer to an offer.
    Answer(Answer),
    /// Ends the call (or one branch of it); the reply carries its statistics.
    Delete(Delete),
    /// The call's statistics so far.
    Query(Query),
}

/// How rtpengine rewrites an SDP and treats its media: the options of
/// `offer` and `answer`. [`SdpOptions::default`] is what a B2BUA anchoring
/// every call wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOptions {
    /// `replace: [origin]`: rtpengine's address in the `o=` line, so the SDP
    /// shows nothing of the other side.
    pub replace_origin: bool,
    /// `replace: [session-connection]`: rtpengine's address in a
    /// session-level `c=` line too (10.5 needs it; rtpengine from 12.5 always
    /// does it and ignores the flag).
    pub replace_session_connection: bool,
    /// `ICE: remove`: strip ICE attributes (rtpengine is the only
    /// candidate); in an offer also `flags: [reject ICE]`, or rtpengine (10.5)
    /// still runs ICE with an offerer whose SDP had it, sending it STUN
    /// checks though the answer it gets has no ICE.
    pub ice_remove: bool,
    /// Symmetric RTP (rtpengine's default): it sends to where a party's media
    /// comes from, which is what gets media through a phone's NAT. When
    /// false, `flags: [asymmetric]`: it sends only where the SDP says. The
    /// `symmetric` flag itself is never sent: 10.5 logs it as unknown.
    pub symmetric: bool,
    /// `record call: yes`, or `no` (the default).
    pub record_call: bool,
    /// `label`: a name for this side (`caller`, `callee`) that `query` and
    /// `delete` report with its tag.
    pub label: Option<String>,
}

impl Default for SdpOptions {
    fn default() -> Self {
        SdpOptions {
            replace_origin: true,
            replace_session_connection: true,
            ice_remove: true,
            symmetric: true,
            record_call: false,
            label: None,
        }
    }
}

/// `offer`: the call (Call-ID), the offering side (its tag) and its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub call_id: String,
    pub from_tag: String,
    pub sdp: Vec<u8>,
    pub options: SdpOptions,
}

/// `answer`: the offer's call and tag, the answering side's tag and its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub sdp: Vec<u8>,
    pub options: SdpOptions,
}

/// `delete`, always with the `fatal` flag: an unknown call is then an error
/// reply ([`super::NgError::Rejected`]) rather than `ok` with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub call_id: String,
    pub from_tag: String,
    /// Only this dialogue of the call (a fork's branch), not all of it.
    pub to_tag: Option<String>,
    /// `delete delay` in seconds: rtpengine's default (its `delete-delay`,
    /// 30 s) keeps the call queryable for a while; 0 forgets it at once.
    pub delay: Option<u32>,
}

/// `query`: the call's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub call_id: String,
}

impl Command {
    /// The `command` value.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer(_) => "offer",
            Command::Answer(_) => "answer",
            Command::Delete(_) => "delete",
            Command::Query(_) => "query",
        }
    }

    /// The command as a bencode dictionary.
    pub fn to_value(&self) -> Value {
        let mut d = Dict::default();
        d.text("command", self.name());
        match self {
            Command::Ping => {}
            Command::Offer(o) => {
                d.text("call-id", &o.call_id);
                d.text("from-tag", &o.from_tag);
                d.bytes("sdp", &o.sdp);
                d.sdp_options(&o.options, true);
            }
            Command::Answer(a) => {
                d.text("call-id", &a.call_id);
                d.text("from-tag", &a.from_tag);
                d.text("to-tag", &a.to_tag);
                d.bytes("sdp", &a.sdp);
                d.sdp_options(&a.options, false);
            }
            Command::Delete(del) => {
                d.text("call-id", &del.call_id);
                d.text("from-tag", &del.from_tag);
                if let Some(to_tag) = &del.to_tag {
                    d.text("to-tag", to_tag);
                }
                if let Some(delay) = del.delay {
                    d.0.insert("delete delay".into(), Value::Int(u64::from(delay).into()));
                }
                d.list("flags", &["fatal"]);
            }
            Command::Query(q) => d.text("call-id", &q.call_id),
        }
        Value::Dict(d.0)
    }

    /// The datagram: `cookie`, a space, the bencoded dictionary. Fails only
    /// if the bencode crate cannot encode its own dictionary type.
    pub fn encode(&self, cookie: &str) -> Result<Vec<u8>, bt_bencode::Error> {
        let dict = bt_bencode::to_vec(&self.to_value())?;
        let mut out = Vec::with_capacity(cookie.len() + 1 + dict.len());
        out.extend_from_slice(cookie.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&dict);
        Ok(out)
    }
}

/// A dictionary being built (bencode sorts its keys; rtpengine does not care).
#[derive(Default)]
struct Dict(BTreeMap<ByteString, Value>);

impl Dict {
    fn bytes(&mut self, key: &str, value: &[u8]) {
        self.0
            .insert(key.into(), Value::ByteStr(ByteString::from(value)));
    }

    fn text(&mut self, key: &str, value: &str) {
        self.bytes(key, value.as_bytes());
    }

    fn list(&mut self, key: &str, items: &[&str]) {
        let items = items
            .iter()
            .map(|s| Value::ByteStr(ByteString::from(*s)))
            .collect();
        self.0.insert(key.into(), Value::List(items));
    }

    fn sdp_options(&mut self, o: &SdpOptions, offer: bool) {
        let mut replace = Vec::new();
        if o.replace_origin {
            replace.push("origin");
        }
        if o.replace_session_connection {
            replace.push("session-connection");
        }
        if !replace.is_empty() {
            self.list("replace", &replace);
        }
        let mut flags = Vec::new();
        if o.ice_remove {
            self.text("ICE", "remove");
            if offer {
                flags.push("reject ICE");
            }
        }
        if !o.symmetric {
            flags.push("asymmetric");
        }
        if !flags.is_empty() {
            self.list("flags", &flags);
        }
        self.text("record call", if o.record_call { "yes" } else { "no" });
        if let Some(label) = &o.label {
            self.text("label", label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(command: &Command) -> String {
        let bytes = command.encode("5323_1").expect("encode");
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn ping_is_the_protocol_documents_example() {
        // ng_control_protocol.md: `5323_1 d7:command4:pinge`.
        assert_eq!(text(&Command::Ping), "5323_1 d7:command4:pinge");
    }

    #[test]
    fn an_offer_carries_the_b2bua_options() {
        let offer = Command::Offer(Offer {
            call_id: "c1".into(),
            from_tag: "f1".into(),
            sdp: b"v=0\r\n".to_vec(),
            options: SdpOptions::default(),
        });
        assert_eq!(
            text(&offer),
            "5323_1 d3:ICE6:remove7:call-id2:c17:command5:offer5:flagsl10:reject ICEe\
8:from-tag2:f111:record call2:no7:replacel6:origin18:session-connectione3:sdp5:v=0\r\ne"
        );
    }

    #[test]
    fn an_answer_rejects_no_ice_and_may_be_asymmetric_with_a_label() {
        let answer = Command::Answer(Answer {
            call_id: "c1".into(),
            from_tag: "f1".into(),
            to_tag: "t1".into(),
            sdp: b"v=0\r\n".to_vec(),
            options: SdpOptions {
                replace_origin: false,
                replace_session_connection: false,
                ice_remove: true,
                symmetric: false,
                record_call: true,
                label: Some("callee".into()),
            },
        });
        assert_eq!(
            text(&answer),
            "5323_1 d3:ICE6:remove7:call-id2:c17:command6:answer5:flagsl10:asymmetrice\
8:from-tag2:f15:label6:callee11:record call3:yes3:sdp5:v=0\r\n6:to-tag2:t1e"
        );
    }

    #[test]
    fn delete_is_fatal_and_query_names_the_call() {
        let delete = Command::Delete(Delete {
            call_id: "c1".into(),
            from_tag: "f1".into(),
            to_tag: Some("t1".into()),
            delay: Some(0),
        });
        assert_eq!(
            text(&delete),
            "5323_1 d7:call-id2:c17:command6:delete12:delete delayi0e5:flagsl5:fatale\
8:from-tag2:f16:to-tag2:t1e"
        );
        let query = Command::Query(Query {
            call_id: "c1".into(),
        });
        assert_eq!(text(&query), "5323_1 d7:call-id2:c17:command5:querye");
    }
}
