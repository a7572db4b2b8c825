//! The mutation engine of the datagram flood: seed SIP messages (RFC 4475's
//! torture messages, and well-formed requests and responses with session-timer
//! headers built in here) are turned into mutants, one per datagram: truncated,
//! bit-flipped, oversized, with a lying Content-Length, absurd Session-Expires,
//! Min-SE and CSeq values, mandatory headers duplicated or removed, lines
//! inserted or deleted, CRLF and LF swapped, a To tag added — or left unchanged.
//!
//! Used by `core/examples/mutate_flood.rs` (the load tool behind
//! `tests/load/mutate.sh`) and by `tests/mutated_datagrams.rs`, which include
//! this file with `#[path]`; so it needs nothing but `std` and `rand`.
//!
//! Deterministic: datagram `i` under PRNG seed `s` is the same bytes on every
//! run (each datagram has its own PRNG, seeded from `s` and `i`), so a datagram
//! that hurt a switch can be regenerated from its index alone. Every datagram
//! gets a fresh Call-ID, Via branch and From tag first, so it never lands in a
//! real call by accident.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// The largest UDP payload over IPv4 (65,535 − 20 bytes of IP header − 8 of
/// UDP header): a bigger datagram cannot be sent at all.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

type Rng = Xoshiro256PlusPlus;

/// One way of damaging a message. A datagram carries zero to three of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// A To tag added (or replaced): the request looks like it is in a dialog.
    ToTag,
    /// Content-Length larger, smaller, negative, huge, non-numeric, doubled.
    ContentLength,
    /// Session-Expires 0, 1, 2^32, 20 digits, negative, garbage parameters.
    SessionExpires,
    /// Min-SE likewise.
    MinSe,
    /// CSeq 0, 2^32, 2^63, 30 digits, negative, with another method.
    CSeq,
    /// A mandatory header (Via, From, To, Call-ID, CSeq, …) twice.
    DuplicateHeader,
    /// A mandatory header removed.
    RemoveHeader,
    /// A strange header line inserted (no colon, folded, binary, …).
    InsertLine,
    /// A line deleted (the start line, or the blank line before the body).
    DeleteLine,
    /// Padded towards the largest UDP payload (body, one header, many headers).
    Oversize,
    /// CRLF turned into LF, CR or CRCRLF, everywhere or here and there.
    LineEndings,
    /// Random bits flipped.
    BitFlip,
    /// Cut short at a random point.
    Truncate,
}

impl Mutation {
    /// Every kind, in the order they are applied: header surgery first, then
    /// line endings, then bits, and the cut last.
    pub const ALL: [Mutation; 13] = [
        Mutation::ToTag,
        Mutation::ContentLength,
        Mutation::SessionExpires,
        Mutation::MinSe,
        Mutation::CSeq,
        Mutation::DuplicateHeader,
        Mutation::RemoveHeader,
        Mutation::InsertLine,
        Mutation::DeleteLine,
        Mutation::Oversize,
        Mutation::LineEndings,
        Mutation::BitFlip,
        Mutation::Truncate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutation::ToTag => "to-tag",
            Mutation::ContentLength => "content-length",
            Mutation::SessionExpires => "session-expires",
            Mutation::MinSe => "min-se",
            Mutation::CSeq => "cseq",
            Mutation::DuplicateHeader => "duplicate-header",
            Mutation::RemoveHeader => "remove-header",
            Mutation::InsertLine => "insert-line",
            Mutation::DeleteLine => "delete-line",
            Mutation::Oversize => "oversize",
            Mutation::LineEndings => "line-endings",
            Mutation::BitFlip => "bit-flip",
            Mutation::Truncate => "truncate",
        }
    }

    /// How often it is chosen, relative to the others. Oversize is rarer: each
    /// one moves up to 64 KiB.
    fn weight(self) -> u32 {
        match self {
            Mutation::ToTag => 4,
            Mutation::ContentLength => 10,
            Mutation::SessionExpires => 10,
            Mutation::MinSe => 7,
            Mutation::CSeq => 9,
            Mutation::DuplicateHeader => 7,
            Mutation::RemoveHeader => 7,
            Mutation::InsertLine => 8,
            Mutation::DeleteLine => 6,
            Mutation::Oversize => 4,
            Mutation::LineEndings => 6,
            Mutation::BitFlip => 14,
            Mutation::Truncate => 12,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// ---------------------------------------------------------------------------
// Seeds

/// A message mutants are made from.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    /// One of [`builtin_seeds`] (else read from a file).
    pub builtin: bool,
}

/// Every file of `dir` but `*.md`, sorted by name (RFC 4475's `.dat` files are
/// the exact bytes of its torture messages).
pub fn load_seeds(dir: &Path) -> std::io::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() || path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        seeds.push(Seed {
            name,
            bytes: std::fs::read(&path)?,
            builtin: false,
        });
    }
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seeds)
}

const SDP: &str = "v=0\r\no=fuzz 1 1 IN IP{ipv} {ip}\r\ns=-\r\nc=IN IP{ipv} {ip}\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// Well-formed messages from `me` to `target`, INVITEs dialling `number`:
/// new and in-dialog requests with session-timer headers, and responses.
/// `{len}` is filled with the body's length.
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "invite-timer",
        "INVITE sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: \"fuzz\" <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@{me}>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, UPDATE, OPTIONS, INFO\r\nSupported: timer\r\n\
Session-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\nContent-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n",
        SDP,
    ),
    (
        "invite-compact-require-timer",
        "INVITE sip:{number}@{target};user=phone SIP/2.0\r\nv: SIP/2.0/UDP {me};branch=z9hG4bK-seed\r\n\
Max-Forwards: 70\r\nf: <sip:1002@{host}>;tag=seed\r\nt: <sip:{number}@{target}>\r\ni: seed@fuzz\r\n\
CSeq: 1 INVITE\r\nm: <sip:1002@{me}>\r\nk: timer\r\nRequire: timer\r\nx: 90;refresher=uas\r\n\
Min-SE: 90\r\nc: application/sdp\r\nl: {len}\r\n\r\n",
        SDP,
    ),
    (
        "reinvite-in-dialog",
        "INVITE sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 2 INVITE\r\nContact: <sip:1001@{me}>\r\nSupported: timer\r\n\
Session-Expires: 600;refresher=uac\r\nMin-SE: 90\r\nContent-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n",
        SDP,
    ),
    (
        "update-refresh",
        "UPDATE sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 3 UPDATE\r\nContact: <sip:1001@{me}>\r\nSupported: timer\r\n\
Session-Expires: 90;refresher=uac\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "update-with-sdp",
        "UPDATE sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 4 UPDATE\r\nContact: <sip:1001@{me}>\r\nSupported: timer\r\n\
Session-Expires: 120\r\nMin-SE: 90\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n",
        SDP,
    ),
    (
        "bye-in-dialog",
        "BYE sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "ack-in-dialog",
        "ACK sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "info-in-dialog",
        "INFO sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 6 INFO\r\nContent-Type: application/dtmf-relay\r\n\
Content-Length: {len}\r\n\r\n",
        "Signal=5\r\nDuration=160\r\n",
    ),
    (
        "cancel",
        "CANCEL sip:{number}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{host}>;tag=seed\r\nTo: <sip:{number}@{target}>\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "options",
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=seed\r\nTo: <sip:{target}>\r\nCall-ID: seed@fuzz\r\n\
CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "register",
        "REGISTER sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-seed;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{target}>;tag=seed\r\nTo: <sip:1001@{target}>\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@{me}>;expires=3600\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n",
        "",
    ),
    (
        "response-180",
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {target};branch=z9hG4bK-seed\r\n\
From: <sip:1001@{target}>;tag=seed\r\nTo: <sip:{number}@{host}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 INVITE\r\nContact: <sip:{number}@{me}>\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "response-200-invite-timer",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {target};branch=z9hG4bK-seed\r\n\
From: <sip:1001@{target}>;tag=seed\r\nTo: <sip:{number}@{host}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 INVITE\r\nContact: <sip:{number}@{me}>\r\nSupported: timer\r\n\
Require: timer\r\nSession-Expires: 90;refresher=uac\r\nContent-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n",
        SDP,
    ),
    (
        "response-422-min-se",
        "SIP/2.0 422 Session Interval Too Small\r\nVia: SIP/2.0/UDP {target};branch=z9hG4bK-seed\r\n\
From: <sip:1001@{target}>;tag=seed\r\nTo: <sip:{number}@{host}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 1 INVITE\r\nMin-SE: 1800\r\nContent-Length: 0\r\n\r\n",
        "",
    ),
    (
        "response-200-update",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {target};branch=z9hG4bK-seed\r\n\
From: <sip:1001@{target}>;tag=seed\r\nTo: <sip:{number}@{host}>;tag=callee-seed\r\n\
Call-ID: seed@fuzz\r\nCSeq: 7 UPDATE\r\nSupported: timer\r\nSession-Expires: 90;refresher=uas\r\n\
Content-Length: 0\r\n\r\n",
        "",
    ),
];

/// The built-in seeds, addressed from `me` to `target`; INVITEs dial `number`.
pub fn builtin_seeds(me: SocketAddr, target: SocketAddr, number: &str) -> Vec<Seed> {
    let ip = me.ip();
    let ipv = if ip.is_ipv4() { "4" } else { "6" };
    let host = if ip.is_ipv4() {
        ip.to_string()
    } else {
        format!("[{ip}]")
    };
    let fill = |text: &str| {
        text.replace("{number}", number)
            .replace("{target}", &target.to_string())
            .replace("{me}", &me.to_string())
            .replace("{host}", &host)
            .replace("{ipv}", ipv)
            .replace("{ip}", &ip.to_string())
    };
    BUILTIN
        .iter()
        .map(|(name, head, body)| {
            let body = fill(body);
            let head = fill(head).replace("{len}", &body.len().to_string());
            Seed {
                name: (*name).to_string(),
                bytes: format!("{head}{body}").into_bytes(),
                builtin: true,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A message as lines, for header surgery

/// A SIP message split into its head lines and body. Torture messages may be
/// anything, so nothing here assumes well-formedness.
#[derive(Debug, Clone)]
struct Sip {
    /// The start line and header lines, without their line ends.
    head: Vec<Vec<u8>>,
    body: Vec<u8>,
    /// Whether an empty line ends the head (false for a message without one).
    terminated: bool,
}

const CALL_ID: &[&str] = &["call-id", "i"];
const VIA: &[&str] = &["via", "v"];
const FROM: &[&str] = &["from", "f"];
const TO: &[&str] = &["to", "t"];
const CSEQ: &[&str] = &["cseq"];
const MAX_FORWARDS: &[&str] = &["max-forwards"];
const CONTACT: &[&str] = &["contact", "m"];
const CONTENT_LENGTH: &[&str] = &["content-length", "l"];
const SESSION_EXPIRES: &[&str] = &["session-expires", "x"];
const MIN_SE: &[&str] = &["min-se"];

/// The headers RFC 3261 §8.1.1 requires, plus the length and the timers.
const MANDATORY: &[&[&str]] = &[
    VIA,
    FROM,
    TO,
    CALL_ID,
    CSEQ,
    MAX_FORWARDS,
    CONTACT,
    CONTENT_LENGTH,
    SESSION_EXPIRES,
    MIN_SE,
];

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A header line's name, or None for a continuation line or one without colon.
fn header_name(line: &[u8]) -> Option<&[u8]> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return None;
    }
    let colon = line.iter().position(|b| *b == b':')?;
    Some(trim(&line[..colon]))
}

impl Sip {
    fn parse(bytes: &[u8]) -> Sip {
        let crlf = find_bytes(bytes, b"\r\n\r\n").map(|p| (p, 4));
        let lf = find_bytes(bytes, b"\n\n").map(|p| (p, 2));
        let split = match (crlf, lf) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let (head, body, terminated) = match split {
            Some((at, len)) => (&bytes[..at], bytes[at + len..].to_vec(), true),
            None => (bytes, Vec::new(), false),
        };
        let mut lines: Vec<Vec<u8>> = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect();
        if !terminated && lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        Sip {
            head: lines,
            body,
            terminated,
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.iter().map(|l| l.len() + 2).sum::<usize>()
            + if self.terminated { 2 } else { 0 }
            + self.body.len()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for line in &self.head {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if self.terminated {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn is_request(&self) -> bool {
        self.head.first().is_some_and(|l| !l.starts_with(b"SIP/"))
    }

    /// The request's method (the start line's first word), else `INVITE`.
    fn method(&self) -> String {
        self.head
            .first()
            .filter(|_| self.is_request())
            .and_then(|l| l.split(|b| *b == b' ').next())
            .filter(|m| !m.is_empty())
            .map_or_else(
                || "INVITE".to_string(),
                |m| String::from_utf8_lossy(m).into_owned(),
            )
    }

    /// The indexes of the header lines called by one of `names` (any case).
    fn find(&self, names: &[&str]) -> Vec<usize> {
        (1..self.head.len())
            .filter(|&i| {
                header_name(&self.head[i]).is_some_and(|n| {
                    names
                        .iter()
                        .any(|want| n.eq_ignore_ascii_case(want.as_bytes()))
                })
            })
            .collect()
    }

    /// Replaces the value of header line `i`, keeping its name.
    fn set_value(&mut self, i: usize, value: &[u8]) {
        let line = &mut self.head[i];
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .map_or(line.len(), |c| c + 1);
        line.truncate(colon);
        if colon == 0 {
            line.extend_from_slice(b"X-Fuzz:");
        }
        line.push(b' ');
        line.extend_from_slice(value);
    }

    /// Inserts a header line after the start line, at a random place.
    fn insert_header(&mut self, rng: &mut Rng, line: Vec<u8>) {
        let at = if self.head.is_empty() {
            0
        } else {
            rng.random_range(1..=self.head.len())
        };
        self.head.insert(at, line);
    }

    /// Replaces the value of the first header called `names[..]`, or inserts
    /// `name: value` if there is none.
    fn set_or_insert(&mut self, rng: &mut Rng, names: &[&str], name: &str, value: &[u8]) {
        match self.find(names).first() {
            Some(&i) => self.set_value(i, value),
            None => {
                let mut line = format!("{name}: ").into_bytes();
                line.extend_from_slice(value);
                self.insert_header(rng, line);
            }
        }
    }
}

/// `value` with parameter `param`'s value (after `param=`) replaced by `new`;
/// None if it has no such parameter.
fn replace_param(value: &[u8], param: &str, new: &[u8]) -> Option<Vec<u8>> {
    let key = format!(";{param}=");
    let lower = value.to_ascii_lowercase();
    let start = find_bytes(&lower, key.as_bytes())? + key.len();
    let end = value[start..]
        .iter()
        .position(|b| matches!(b, b';' | b',' | b' ' | b'\t' | b'>' | b'\r' | b'\n'))
        .map_or(value.len(), |p| start + p);
    let mut out = value[..start].to_vec();
    out.extend_from_slice(new);
    out.extend_from_slice(&value[end..]);
    Some(out)
}

/// Applies `f` to the whole of line `i` (name and value).
fn edit_line(sip: &mut Sip, i: usize, f: impl FnOnce(&[u8]) -> Option<Vec<u8>>) {
    if let Some(new) = f(&sip.head[i]) {
        sip.head[i] = new;
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    // Callers pass constant, non-empty tables.
    items[rng.random_range(0..items.len())]
}

// ---------------------------------------------------------------------------
// The mutator

/// One datagram: the bytes, the seed it came from and what was done to it
/// (empty: the seed unchanged, but for fresh identifiers).
#[derive(Debug, Clone)]
pub struct Mutant {
    pub index: u64,
    pub seed: usize,
    pub applied: Vec<Mutation>,
    pub bytes: Vec<u8>,
}

impl Mutant {
    /// `seedname+kind+kind`, for file names and logs.
    pub fn label(&self, seeds: &[Seed]) -> String {
        let mut label = seeds
            .get(self.seed)
            .map_or_else(|| "?".to_string(), |s| s.name.clone());
        if self.applied.is_empty() {
            label.push_str("+unchanged");
        }
        for m in &self.applied {
            label.push('+');
            label.push_str(m.name());
        }
        label
    }
}

/// Makes datagram `i` of a run from its seeds and the run's PRNG seed.
pub struct Mutator {
    seeds: Vec<Seed>,
    /// Indexes into `seeds`: the built-in ones and the files. Each group is
    /// picked half of the time, so the 15 session-timer seeds are not drowned
    /// by RFC 4475's 49.
    builtin: Vec<usize>,
    files: Vec<usize>,
    prng_seed: u64,
}

impl Mutator {
    pub fn new(seeds: Vec<Seed>, prng_seed: u64) -> Mutator {
        let (builtin, files) = (0..seeds.len()).partition(|&i| seeds[i].builtin);
        Mutator {
            seeds,
            builtin,
            files,
            prng_seed,
        }
    }

    pub fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    /// Datagram `index`: always the same bytes for the same seeds, PRNG seed
    /// and index.
    pub fn mutant(&self, index: u64) -> Mutant {
        // seed_from_u64 scrambles its input, so neighbouring indexes give
        // unrelated streams.
        let mut rng =
            Rng::seed_from_u64(self.prng_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if self.seeds.is_empty() {
            return Mutant {
                index,
                seed: 0,
                applied: Vec::new(),
                bytes: Vec::new(),
            };
        }
        let group = if self.files.is_empty() || (!self.builtin.is_empty() && rng.random_bool(0.5)) {
            &self.builtin
        } else {
            &self.files
        };
        let seed = group[rng.random_range(0..group.len())];
        let mut sip = Sip::parse(&self.seeds[seed].bytes);
        freshen(&mut sip, &mut rng, index);

        let how_many = match rng.random_range(0..100) {
            0..6 => 0,
            6..75 => 1,
            75..93 => 2,
            _ => 3,
        };
        let mut applied: Vec<Mutation> = Vec::with_capacity(how_many);
        for _ in 0..how_many {
            let m = choose_mutation(&mut rng);
            if !applied.contains(&m) {
                applied.push(m);
            }
        }
        applied.sort();

        for &m in &applied {
            match m {
                Mutation::ToTag => to_tag(&mut sip, &mut rng),
                Mutation::ContentLength => content_length(&mut sip, &mut rng),
                Mutation::SessionExpires => session_expires(&mut sip, &mut rng),
                Mutation::MinSe => min_se(&mut sip, &mut rng),
                Mutation::CSeq => cseq(&mut sip, &mut rng),
                Mutation::DuplicateHeader => duplicate_header(&mut sip, &mut rng),
                Mutation::RemoveHeader => remove_header(&mut sip, &mut rng),
                Mutation::InsertLine => insert_line(&mut sip, &mut rng),
                Mutation::DeleteLine => delete_line(&mut sip, &mut rng),
                Mutation::Oversize => oversize(&mut sip, &mut rng),
                _ => {}
            }
        }
        let mut bytes = sip.encode();
        for &m in &applied {
            match m {
                Mutation::LineEndings => line_endings(&mut bytes, &mut rng),
                Mutation::BitFlip => bit_flip(&mut bytes, &mut rng),
                Mutation::Truncate => truncate(&mut bytes, &mut rng),
                _ => {}
            }
        }
        bytes.truncate(MAX_UDP_PAYLOAD);
        Mutant {
            index,
            seed,
            applied,
            bytes,
        }
    }
}

fn choose_mutation(rng: &mut Rng) -> Mutation {
    let total: u32 = Mutation::ALL.iter().map(|m| m.weight()).sum();
    let mut x = rng.random_range(0..total);
    for m in Mutation::ALL {
        if x < m.weight() {
            return m;
        }
        x -= m.weight();
    }
    Mutation::BitFlip
}

fn fresh_token(rng: &mut Rng, index: u64) -> String {
    format!("mf{index:x}-{:012x}", rng.random::<u64>() >> 16)
}

/// A fresh Call-ID, Via branch and From tag: the datagram matches no call.
fn freshen(sip: &mut Sip, rng: &mut Rng, index: u64) {
    for i in sip.find(CALL_ID) {
        let id = format!("{}@fuzz", fresh_token(rng, index));
        sip.set_value(i, id.as_bytes());
    }
    for i in sip.find(VIA) {
        let branch = format!("z9hG4bK-{}", fresh_token(rng, index));
        edit_line(sip, i, |l| replace_param(l, "branch", branch.as_bytes()));
    }
    for i in sip.find(FROM) {
        let tag = fresh_token(rng, index);
        edit_line(sip, i, |l| replace_param(l, "tag", tag.as_bytes()));
    }
}

fn to_tag(sip: &mut Sip, rng: &mut Rng) {
    let tag = format!("mf-{:x}", rng.random::<u32>());
    match sip.find(TO).first() {
        Some(&i) => edit_line(sip, i, |l| {
            replace_param(l, "tag", tag.as_bytes()).or_else(|| {
                let mut l = l.to_vec();
                l.extend_from_slice(format!(";tag={tag}").as_bytes());
                Some(l)
            })
        }),
        None => sip.insert_header(
            rng,
            format!("To: <sip:fuzz@invalid>;tag={tag}").into_bytes(),
        ),
    }
}

fn content_length(sip: &mut Sip, rng: &mut Rng) {
    let b = sip.body.len() as u64;
    let value = match rng.random_range(0..22) {
        0 => (b + 1).to_string(),
        1 => (b + rng.random_range(2..5_000)).to_string(),
        2 => (b * 2 + 7).to_string(),
        3 => b.saturating_sub(1).to_string(),
        4 => "0".to_string(),
        5 => rng.random_range(0..=b).to_string(),
        6 => "-1".to_string(),
        7 => format!("-{b}"),
        8 => "4294967295".to_string(),
        9 => "4294967296".to_string(),
        10 => "18446744073709551615".to_string(),
        11 => "18446744073709551616".to_string(),
        12 => "99999999999999999999999999999".to_string(),
        13 => "abc".to_string(),
        14 => String::new(),
        15 => format!("{b}abc"),
        16 => "0x10".to_string(),
        17 => "1e3".to_string(),
        18 => format!("+{b}"),
        19 => format!("{b} {b}"),
        20 => format!("{b:0>40}"),
        _ => format!("{b}, {b}"),
    };
    let existing = sip.find(CONTENT_LENGTH);
    match (existing.first(), rng.random_range(0..4)) {
        (Some(&i), 0 | 1) => sip.set_value(i, value.as_bytes()),
        // A second Content-Length that disagrees with the first.
        (Some(&i), 2) => sip
            .head
            .insert(i + 1, format!("Content-Length: {value}").into_bytes()),
        _ => {
            let name = if rng.random_bool(0.3) {
                "l"
            } else {
                "Content-Length"
            };
            for i in existing.into_iter().rev() {
                sip.head.remove(i);
            }
            sip.insert_header(rng, format!("{name}: {value}").into_bytes());
        }
    }
}

/// Absurd numbers for Session-Expires and Min-SE (delta-seconds = 1*DIGIT).
const TIMER_VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "89",
    "90",
    "1800",
    "86400",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "-5",
    "-0",
    "",
    "  ",
    "abc",
    "1e3",
    "0x5A",
    "+90",
    "90.5",
    "090",
    "00000000000000000000000000000090",
    "\u{0}90",
];

const SE_PARAMS: &[&str] = &[
    "",
    ";refresher=uac",
    ";refresher=uas",
    ";refresher=",
    ";refresher",
    ";refresher=bogus",
    ";refresher=uac;refresher=uas",
    ";;;",
    ";=",
    ";refresher=UAC",
    " ; refresher = uas",
    ";x=\"unterminated",
    ",90",
    ",120;refresher=uas",
];

fn timer_value(rng: &mut Rng, params: bool) -> String {
    let mut v = pick(rng, TIMER_VALUES).to_string();
    if params && rng.random_bool(0.6) {
        v.push_str(pick(rng, SE_PARAMS));
    }
    if rng.random_bool(0.05) {
        for i in 0..rng.random_range(10..400) {
            v.push_str(&format!(";p{i}=v{i}"));
        }
    }
    v
}

/// Sets (or adds) an absurd timer header, sometimes twice, sometimes with the
/// `timer` option announced or required.
fn timer_header(sip: &mut Sip, rng: &mut Rng, names: &[&str], spellings: &[&str], params: bool) {
    let value = timer_value(rng, params);
    let name = pick(rng, spellings);
    if rng.random_bool(0.7) {
        sip.set_or_insert(rng, names, name, value.as_bytes());
    } else {
        sip.insert_header(rng, format!("{name}: {value}").into_bytes());
    }
    if rng.random_bool(0.25) {
        let second = timer_value(rng, params);
        sip.insert_header(rng, format!("{name}: {second}").into_bytes());
    }
    if rng.random_bool(0.3) {
        sip.insert_header(rng, b"Supported: timer".to_vec());
    }
    if rng.random_bool(0.15) {
        sip.insert_header(rng, b"Require: timer".to_vec());
    }
}

fn session_expires(sip: &mut Sip, rng: &mut Rng) {
    timer_header(
        sip,
        rng,
        SESSION_EXPIRES,
        &["Session-Expires", "x", "session-expires", "SESSION-EXPIRES"],
        true,
    );
}

fn min_se(sip: &mut Sip, rng: &mut Rng) {
    timer_header(sip, rng, MIN_SE, &["Min-SE", "min-se", "MIN-SE"], false);
}

fn cseq(sip: &mut Sip, rng: &mut Rng) {
    let m = sip.method();
    let other = pick(
        rng,
        &[
            "INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "OPTIONS", "REGISTER", "PRACK", "FOO",
            "invite", "",
        ],
    );
    let value = match rng.random_range(0..20) {
        0 => format!("0 {m}"),
        1 => format!("4294967295 {m}"),
        2 => format!("4294967296 {m}"),
        3 => format!("2147483648 {m}"),
        4 => format!("9223372036854775807 {m}"),
        5 => format!("9223372036854775808 {m}"),
        6 => format!("18446744073709551616 {m}"),
        7 => format!("99999999999999999999999999999 {m}"),
        8 => format!("-1 {m}"),
        9 | 10 => format!("1 {other}"),
        11 => "1".to_string(),
        12 => m.clone(),
        13 => String::new(),
        14 => format!("1\t \t{m}"),
        15 => format!("1 {m} extra"),
        16 => format!("one {m}"),
        17 => format!("1 {}", m.to_ascii_lowercase()),
        18 => format!("0x10 {m}"),
        _ => format!("+1 {m}"),
    };
    sip.set_or_insert(rng, CSEQ, "CSeq", value.as_bytes());
}

fn duplicate_header(sip: &mut Sip, rng: &mut Rng) {
    let present: Vec<usize> = MANDATORY.iter().flat_map(|names| sip.find(names)).collect();
    let Some(&i) = present.get(rng.random_range(0..present.len().max(1))) else {
        sip.insert_header(rng, b"Call-ID: duplicate-of-nothing@fuzz".to_vec());
        return;
    };
    let mut copy = sip.head[i].clone();
    if rng.random_bool(0.5) {
        // The same header with another value: which one wins?
        let name = header_name(&copy)
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_default();
        let value = match name.as_slice() {
            b"call-id" | b"i" => format!("other-{:x}@fuzz", rng.random::<u64>()),
            b"cseq" => format!("{} BYE", rng.random_range(0..100_000u32)),
            b"content-length" | b"l" => rng.random_range(0..2_000u32).to_string(),
            b"max-forwards" => rng.random_range(0..300u32).to_string(),
            b"contact" | b"m" => "*".to_string(),
            b"via" | b"v" => format!(
                "SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bK-dup",
                rng.random_range(1..255u32)
            ),
            b"to" | b"t" | b"from" | b"f" => {
                format!("<sip:other@invalid>;tag=dup{:x}", rng.random::<u16>())
            }
            _ => timer_value(rng, true),
        };
        let colon = copy.iter().position(|b| *b == b':').map_or(0, |c| c + 1);
        copy.truncate(colon);
        copy.push(b' ');
        copy.extend_from_slice(value.as_bytes());
    }
    if rng.random_bool(0.5) {
        sip.head.insert(i + 1, copy);
    } else {
        sip.insert_header(rng, copy);
    }
}

fn remove_header(sip: &mut Sip, rng: &mut Rng) {
    let groups: Vec<Vec<usize>> = MANDATORY
        .iter()
        .map(|names| sip.find(names))
        .filter(|found| !found.is_empty())
        .collect();
    let Some(found) = groups.get(rng.random_range(0..groups.len().max(1))) else {
        return;
    };
    if rng.random_bool(0.7) {
        for &i in found.iter().rev() {
            sip.head.remove(i);
        }
    } else {
        sip.head.remove(found[rng.random_range(0..found.len())]);
    }
}

fn insert_line(sip: &mut Sip, rng: &mut Rng) {
    let line: Vec<u8> = match rng.random_range(0..26) {
        0 => format!("X-Fuzz-{}: {}", rng.random::<u16>(), rng.random::<u64>()).into_bytes(),
        1 => b"NoColonHere".to_vec(),
        2 => b": empty-name".to_vec(),
        3 => b"Name With Spaces: value".to_vec(),
        4 => {
            let mut l = b"X-Binary: ".to_vec();
            for _ in 0..rng.random_range(1..64) {
                l.push(rng.random::<u8>());
            }
            l
        }
        5 => b" folded continuation of nothing".to_vec(),
        6 => b"\t".to_vec(),
        7 => Vec::new(),
        8 => b"Via: SIP/2.0/UDP".to_vec(),
        9 => b"Via: garbage;;;branch=".to_vec(),
        10 => b"Content-Type: multipart/mixed;boundary=\"\"".to_vec(),
        11 => b"Contact: *".to_vec(),
        12 => b"Contact: <sip:@>".to_vec(),
        13 => b"To: <>".to_vec(),
        14 => b"From: ".to_vec(),
        15 => b"Max-Forwards: -1".to_vec(),
        16 => b"Max-Forwards: 99999999999999999999".to_vec(),
        17 => b"Expires: 4294967296".to_vec(),
        18 => b"Require: timer, 100rel, x-unknown-ext".to_vec(),
        19 => b"Route: <sip:192.0.2.1;lr>".to_vec(),
        20 => b"Record-Route: <sip:evil.invalid;lr>".to_vec(),
        21 => b"Retry-After: 99999999999999999999".to_vec(),
        22 => b"Reason: SIP;cause=99999999999;text=\"x".to_vec(),
        23 => b"RSeq: 4294967296".to_vec(),
        24 => b"X-Nul: a\0b".to_vec(),
        _ => {
            let mut l = vec![b'X'; rng.random_range(100..4_000)];
            l.extend_from_slice(b": long name");
            l
        }
    };
    if sip.head.is_empty() || rng.random_bool(0.05) {
        sip.head.insert(0, line); // before the start line
    } else {
        sip.insert_header(rng, line);
    }
}

fn delete_line(sip: &mut Sip, rng: &mut Rng) {
    if sip.terminated && rng.random_bool(0.15) {
        // The blank line goes: the body becomes more header lines.
        let body = std::mem::take(&mut sip.body);
        sip.head.extend(
            body.split(|b| *b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec()),
        );
        sip.terminated = false;
    } else if !sip.head.is_empty() {
        let i = rng.random_range(0..sip.head.len());
        sip.head.remove(i);
    }
}

fn oversize(sip: &mut Sip, rng: &mut Rng) {
    let target = if rng.random_bool(0.3) {
        rng.random_range(65_000..=MAX_UDP_PAYLOAD)
    } else {
        rng.random_range(1_500..=MAX_UDP_PAYLOAD)
    };
    let fill = target.saturating_sub(sip.encoded_len() + 40);
    match rng.random_range(0..6) {
        0 | 1 => {
            // A body padded with SDP attribute lines; the length honest (0)
            // or left as it was (1: the header now says too little).
            let mut n = 0;
            while sip.body.len() < fill {
                sip.body
                    .extend_from_slice(format!("a=x-fuzz-pad:{n:08}\r\n").as_bytes());
                n += 1;
            }
            sip.terminated = true;
            if rng.random_bool(0.5) {
                let len = sip.body.len().to_string();
                sip.set_or_insert(rng, CONTENT_LENGTH, "Content-Length", len.as_bytes());
            }
        }
        2 => {
            let mut line = b"X-Fuzz-Pad: ".to_vec();
            line.resize(line.len() + fill, b'A');
            sip.insert_header(rng, line);
        }
        3 => {
            let mut i = 0usize;
            let mut added = 0;
            while added < fill {
                let line = format!("X-P{i}: {i}").into_bytes();
                added += line.len() + 2;
                sip.insert_header(rng, line);
                i += 1;
            }
        }
        4 => {
            let mut i = 0usize;
            let mut added = 0;
            while added < fill {
                let line = format!(
                    "Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bK-pad{i}",
                    i % 254 + 1
                )
                .into_bytes();
                added += line.len() + 2;
                sip.head.insert(1.min(sip.head.len()), line);
                i += 1;
            }
        }
        _ => {
            // A huge Request-URI user part, or a huge reason phrase.
            if let Some(start) = sip.head.first_mut() {
                match find_bytes(start, b"sip:") {
                    Some(at) => {
                        let pad = vec![b'9'; fill];
                        start.splice(at + 4..at + 4, pad);
                    }
                    None => start.resize(start.len() + fill, b'x'),
                }
            }
        }
    }
}

fn line_endings(bytes: &mut Vec<u8>, rng: &mut Rng) {
    fn replace_all(
        bytes: &[u8],
        from: &[u8],
        to: &[u8],
        mut keep: impl FnMut() -> bool,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(from) && !keep() {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }
    *bytes = match rng.random_range(0..6) {
        0 => replace_all(bytes, b"\r\n", b"\n", || false),
        1 => replace_all(bytes, b"\r\n", b"\r", || false),
        2 => replace_all(bytes, b"\r\n", b"\n", || rng.random_bool(0.7)),
        3 => {
            let to: &[u8] = pick(
                rng,
                &[&b"\n\n"[..], b"\r\n\n", b"\n\r\n", b"\r\r", b"\r\n \r\n"],
            );
            match find_bytes(bytes, b"\r\n\r\n") {
                Some(at) => {
                    let mut out = bytes[..at].to_vec();
                    out.extend_from_slice(to);
                    out.extend_from_slice(&bytes[at + 4..]);
                    out
                }
                None => bytes.clone(),
            }
        }
        4 => replace_all(
            bytes,
            b"\r\n",
            pick(rng, &[&b"\r\r\n"[..], b"\n\r"]),
            || false,
        ),
        _ => {
            // LF in the head only; the body keeps CRLF.
            match find_bytes(bytes, b"\r\n\r\n") {
                Some(at) => {
                    let mut out = replace_all(&bytes[..at], b"\r\n", b"\n", || false);
                    out.extend_from_slice(b"\n\n");
                    out.extend_from_slice(&bytes[at + 4..]);
                    out
                }
                None => replace_all(bytes, b"\r\n", b"\n", || false),
            }
        }
    };
}

fn bit_flip(bytes: &mut [u8], rng: &mut Rng) {
    if bytes.is_empty() {
        return;
    }
    let flips = if rng.random_bool(0.9) {
        rng.random_range(1..=8)
    } else {
        rng.random_range(1..=(bytes.len() / 50).max(1))
    };
    for _ in 0..flips {
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= 1 << rng.random_range(0..8u32);
    }
}

fn truncate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if bytes.is_empty() {
        return;
    }
    let head_end = find_bytes(bytes, b"\r\n\r\n").map_or(bytes.len(), |p| p + 4);
    let cut = match rng.random_range(0..4) {
        0 => rng.random_range(0..head_end),
        // Just around the end of the head.
        1 => (head_end + rng.random_range(0..8))
            .saturating_sub(4)
            .min(bytes.len() - 1),
        _ => rng.random_range(0..bytes.len()),
    };
    bytes.truncate(cut);
}

// ---------------------------------------------------------------------------
// Sending

/// A token bucket: `rate` datagrams per second, bursts of 5 ms worth.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            burst: (rate / 200.0).max(1.0),
            tokens: 1.0,
            last: Instant::now(),
        }
    }

    /// Takes a token and returns zero, or returns how long until there is one.
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// What came back to the flooding socket.
#[derive(Debug, Default, Clone)]
pub struct Replies {
    /// Responses by class: `[1]` is 1xx … `[6]` is 6xx; `[0]` other codes.
    pub by_class: [u64; 7],
    /// Requests (the switch sending something to the fuzz source).
    pub requests: u64,
    /// Datagrams that are neither.
    pub other: u64,
    /// ACKs sent for non-2xx final answers to INVITEs.
    pub acks_sent: u64,
    pub receive_errors: u64,
}

impl Replies {
    pub fn responses(&self) -> u64 {
        self.by_class.iter().sum()
    }

    fn note(&mut self, datagram: &[u8]) {
        if let Some(rest) = datagram.strip_prefix(b"SIP/2.0 ") {
            let class = match rest.first() {
                Some(d @ b'1'..=b'6') => usize::from(d - b'0'),
                _ => 0,
            };
            self.by_class[class] += 1;
        } else if datagram.windows(8).take(200).any(|w| w == b" SIP/2.0") {
            self.requests += 1;
        } else {
            self.other += 1;
        }
    }
}

/// The ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3),
/// so the switch stops retransmitting it; None for anything else.
pub fn ack_for(response: &[u8], target: SocketAddr) -> Option<Vec<u8>> {
    let head_end = find_bytes(response, b"\r\n\r\n").unwrap_or(response.len());
    let head = std::str::from_utf8(&response[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()?
        .strip_prefix("SIP/2.0 ")?
        .get(..3)?
        .parse()
        .ok()?;
    if status < 300 {
        return None;
    }
    let (mut via, mut from, mut to, mut call_id, mut cseq) = (None, None, None, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" if via.is_none() => via = Some(value),
            "from" | "f" => from = Some(value),
            "to" | "t" => to = Some(value),
            "call-id" | "i" => call_id = Some(value),
            "cseq" => cseq = Some(value),
            _ => {}
        }
    }
    let (number, method) = cseq?.split_once(' ')?;
    if !method.trim().eq_ignore_ascii_case("INVITE") {
        return None;
    }
    Some(
        format!(
            "ACK sip:{target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            via?,
            from?,
            to?,
            call_id?,
            number.trim()
        )
        .into_bytes(),
    )
}

/// Whether process `pid` is alive (a zombie is not).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// A flood: how many datagrams, where, how fast.
#[derive(Debug, Clone)]
pub struct Flood {
    pub target: SocketAddr,
    /// Datagrams to send.
    pub count: u64,
    /// The first datagram's index (to resume or replay a slice of a run).
    pub first: u64,
    /// Datagrams per second; None: as fast as the socket takes them.
    pub rate: Option<f64>,
    /// ACK non-2xx final answers to INVITEs (else the switch retransmits them
    /// for 32 s).
    pub ack: bool,
    /// How long to keep listening for answers after the last datagram.
    pub linger: Duration,
    /// Stop early when this process dies (the switch under test).
    pub watch_pid: Option<u32>,
    /// Keep the last this many datagrams (with their index) in the report.
    pub keep_last: usize,
}

impl Flood {
    pub fn new(target: SocketAddr, count: u64) -> Flood {
        Flood {
            target,
            count,
            first: 0,
            rate: None,
            ack: true,
            linger: Duration::from_millis(500),
            watch_pid: None,
            keep_last: 0,
        }
    }
}

/// What a flood did.
#[derive(Debug, Clone)]
pub struct Report {
    pub sent: u64,
    pub bytes: u64,
    pub largest: usize,
    /// Datagrams sent as their seed was (fresh identifiers only).
    pub unchanged: u64,
    /// How many datagrams each mutation was applied to (index: `Mutation as usize`).
    pub applied: [u64; Mutation::ALL.len()],
    /// Datagrams the socket refused (they are not in `sent`).
    pub send_errors: u64,
    pub first_send_error: Option<String>,
    /// Times the socket's buffer was full and the send was retried.
    pub send_retries: u64,
    pub replies: Replies,
    /// From the first send to the last (without the linger).
    pub sending: Duration,
    /// Why the flood stopped before `count`, if it did.
    pub stopped_early: Option<String>,
    /// The last `keep_last` datagrams.
    pub last: std::collections::VecDeque<Mutant>,
}

impl Report {
    fn new() -> Report {
        Report {
            sent: 0,
            bytes: 0,
            largest: 0,
            unchanged: 0,
            applied: [0; Mutation::ALL.len()],
            send_errors: 0,
            first_send_error: None,
            send_retries: 0,
            replies: Replies::default(),
            sending: Duration::ZERO,
            stopped_early: None,
            last: std::collections::VecDeque::new(),
        }
    }

    /// Each mutation kind with the number of datagrams it was applied to.
    pub fn kinds(&self) -> impl Iterator<Item = (Mutation, u64)> + '_ {
        Mutation::ALL.iter().map(|&m| (m, self.applied[m.index()]))
    }

    pub fn rate(&self) -> f64 {
        let secs = self.sending.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }
}

/// Consecutive send failures (other than a full buffer) after which the flood
/// gives up: the network is gone, not just one datagram refused.
const MAX_CONSECUTIVE_ERRORS: u32 = 1_000;

impl Flood {
    /// Sends the flood from `socket` (made non-blocking), reading what comes
    /// back between sends; `progress` is called about once a second with the
    /// report so far.
    pub fn run(
        &self,
        socket: &UdpSocket,
        mutator: &Mutator,
        mut progress: impl FnMut(&Report),
    ) -> std::io::Result<Report> {
        socket.set_nonblocking(true)?;
        let mut report = Report::new();
        let mut pacer = self.rate.filter(|r| *r > 0.0).map(Pacer::new);
        let mut buf = vec![0u8; 65_536];
        let mut consecutive_errors = 0u32;
        let started = Instant::now();
        let mut next_progress = started + Duration::from_secs(1);

        for index in self.first..self.first.saturating_add(self.count) {
            if let Some(pacer) = pacer.as_mut() {
                loop {
                    let wait = pacer.take(Instant::now());
                    if wait.is_zero() {
                        break;
                    }
                    self.drain(socket, &mut buf, &mut report.replies);
                    if wait > Duration::from_micros(200) {
                        std::thread::sleep(wait.min(Duration::from_millis(2)));
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            let mutant = mutator.mutant(index);
            match self.send(socket, &mutant.bytes, &mut report) {
                Ok(()) => {
                    consecutive_errors = 0;
                    report.sent += 1;
                    report.bytes += mutant.bytes.len() as u64;
                    report.largest = report.largest.max(mutant.bytes.len());
                    if mutant.applied.is_empty() {
                        report.unchanged += 1;
                    }
                    for m in &mutant.applied {
                        report.applied[m.index()] += 1;
                    }
                }
                Err(e) => {
                    report.send_errors += 1;
                    consecutive_errors += 1;
                    if report.first_send_error.is_none() {
                        report.first_send_error = Some(format!(
                            "datagram {index} ({} bytes): {e}",
                            mutant.bytes.len()
                        ));
                    }
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                        report.stopped_early = Some(format!(
                            "{consecutive_errors} sends failed in a row, the last: {e}"
                        ));
                        break;
                    }
                }
            }
            if self.keep_last > 0 {
                if report.last.len() == self.keep_last {
                    report.last.pop_front();
                }
                report.last.push_back(mutant);
            }
            if index % 64 == 0 {
                self.drain(socket, &mut buf, &mut report.replies);
            }
            if index % 1_024 == 0 {
                if let Some(pid) = self.watch_pid
                    && !process_alive(pid)
                {
                    report.stopped_early = Some(format!(
                        "process {pid} died; the last datagram sent was {index}"
                    ));
                    break;
                }
                let now = Instant::now();
                if now >= next_progress {
                    next_progress = now + Duration::from_secs(1);
                    report.sending = now - started;
                    progress(&report);
                }
            }
        }
        report.sending = started.elapsed();
        if report.stopped_early.is_none()
            && let Some(pid) = self.watch_pid
            && !process_alive(pid)
        {
            report.stopped_early = Some(format!("process {pid} died during the flood"));
        }
        let linger_end = Instant::now() + self.linger;
        while Instant::now() < linger_end {
            self.drain(socket, &mut buf, &mut report.replies);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(report)
    }

    /// Sends one datagram, waiting while the socket's buffer is full.
    fn send(&self, socket: &UdpSocket, bytes: &[u8], report: &mut Report) -> std::io::Result<()> {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            match socket.send_to(bytes, self.target) {
                Ok(_) => return Ok(()),
                Err(e) if is_full(&e) && Instant::now() < give_up => {
                    report.send_retries += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads every datagram waiting on the socket, ACKing refused INVITEs.
    fn drain(&self, socket: &UdpSocket, buf: &mut [u8], replies: &mut Replies) {
        loop {
            match socket.recv_from(buf) {
                Ok((n, _)) => {
                    let datagram = &buf[..n];
                    replies.note(datagram);
                    if self.ack
                        && let Some(ack) = ack_for(datagram, self.target)
                        && socket.send_to(&ack, self.target).is_ok()
                    {
                        replies.acks_sent += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // An ICMP error reported on the socket: counted, not fatal.
                    replies.receive_errors += 1;
                    return;
                }
            }
        }
    }
}

/// A send refused because the socket's (or the interface's) buffer is full.
fn is_full(e: &std::io::Error) -> bool {
    // ENOBUFS (105 on Linux) is how a full transmit queue shows on loopback.
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(105)
}
