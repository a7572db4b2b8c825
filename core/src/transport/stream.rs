//! Stream framing of SIP messages: where one message ends and the next begins
//! on a TCP or TLS connection (RFC 3261 §18.3, §7.5), and the CRLF keep-alives
//! that flow between messages (RFC 5626 §3.5.1, §4.4.1). UDP needs none of
//! this, since a datagram is a message.
//!
//! Sans-IO: a [`StreamFramer`] owns one connection's receive buffer and is fed
//! bytes and the time; it reads no socket and no clock. Each framed message is
//! handed to the same decoder as a datagram ([`crate::sip::decode`]), so the
//! framer only finds the boundaries: the empty line that ends the header block,
//! then exactly `Content-Length` body bytes. It looks at no header but
//! `Content-Length`; everything else is the decoder's to judge.

use std::time::{Duration, Instant};

use crate::sip::MAX_DATAGRAM;

/// RFC 5626 §4.4.1: the keep-alive a client sends on a flow (a double CRLF).
pub const PING: &[u8] = b"\r\n\r\n";
/// RFC 5626 §4.4.1: the answer to a [`PING`] (a single CRLF).
pub const PONG: &[u8] = b"\r\n";

/// A lone CRLF this soon after another one that ended the buffer is taken as
/// the second half of a double CRLF split across two reads, not as a second
/// pong. Both halves of a 4-byte write arrive together in practice; a peer
/// sends two pongs this close only if it was pinged twice this close.
const SPLIT_PING_WINDOW: Duration = Duration::from_secs(1);

/// An empty buffer keeps at most this much capacity: a typical message fits,
/// and thousands of idle keep-alive connections do not each hold the capacity
/// of the largest INVITE they ever carried.
const KEEP_CAPACITY: usize = 2048;

/// How much a connection may send before it must have sent a whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Largest message (header block, empty line and body). Also bounds the
    /// header block: one that has not ended within this many bytes cannot
    /// start a message that fits. More than [`MAX_DATAGRAM`] gains nothing,
    /// as the decoder refuses larger messages.
    pub max_message: usize,
    /// Longest a header block may take to arrive, from its first byte to its
    /// empty line: the slow-loris guard. A body that trickles in is not timed
    /// here; the connection's idle timeout is what ends a peer that stops
    /// sending altogether.
    pub header_timeout: Duration,
}

impl Default for FramingLimits {
    /// The decoder's own limit, and a header time that a real header block (a
    /// round trip or two of data) never approaches even on a slow mobile link.
    fn default() -> Self {
        FramingLimits {
            max_message: MAX_DATAGRAM,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// What a connection received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message: its header block, the empty line and exactly
    /// `Content-Length` body bytes, for [`crate::sip::decode`]. Any CRLFs
    /// that preceded it are not included.
    Message(Vec<u8>),
    /// A double CRLF between messages: the peer checks that the flow is alive
    /// and expects a [`PONG`] (see [`Frame::answer`]).
    Ping,
    /// A single CRLF between messages: the answer to a ping this side sent (or
    /// a stray CRLF before a message, which RFC 3261 §7.5 says to ignore and
    /// which is harmless to count as a sign of life).
    Pong,
}

impl Frame {
    /// What the connection sends back straight away: a pong for a ping.
    pub fn answer(&self) -> Option<&'static [u8]> {
        match self {
            Frame::Ping => Some(PONG),
            Frame::Message(_) | Frame::Pong => None,
        }
    }
}

/// Why a connection's byte stream cannot be framed. Each one ends the
/// connection: once a boundary is lost, nothing after it can be trusted to be
/// the start of a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header block longer than {limit} bytes without an empty line")]
    HeadersTooLong { limit: usize },
    #[error("header block not complete {timeout:?} after its first byte (slow sender)")]
    HeadersTimeout { timeout: Duration },
    #[error("message without Content-Length: required on a stream (RFC 3261 §18.3)")]
    MissingContentLength,
    #[error("invalid Content-Length {value:?}")]
    BadContentLength { value: String },
    #[error("message of {size} bytes is larger than the limit of {limit}")]
    TooLarge { size: u64, limit: usize },
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between messages: CRLFs here are keep-alives.
    Between,
    /// Inside a header block whose first byte was seen at `since`; the first
    /// `scanned` bytes hold no complete empty line.
    Head { since: Instant, scanned: usize },
    /// The header block is complete; the message is `total` bytes long.
    Body { total: usize },
    /// Framing failed; the connection must close.
    Failed,
}

/// Frames one connection's received bytes into SIP messages and keep-alives.
///
/// Contract: after each [`push`](Self::push), call [`next`](Self::next) until
/// it returns `None`, then wake up at [`poll_timeout`](Self::poll_timeout) (if
/// any) to call [`handle_timeout`](Self::handle_timeout). Draining after each
/// push is also what bounds the buffer: it then holds at most one incomplete
/// message (under [`FramingLimits::max_message`]) and the last push.
///
/// After an error (from `next` or `handle_timeout`) the framer is dead: it
/// drops its buffer, ignores further bytes, yields nothing more, and the
/// connection must be closed. Time must not go back between calls.
#[derive(Debug)]
pub struct StreamFramer {
    limits: FramingLimits,
    /// Received bytes; those before `start` have been framed already. The
    /// consumed prefix is dropped lazily (see [`StreamFramer::push`]), so a
    /// message read in many small pieces is not copied once per piece.
    buf: Vec<u8>,
    start: usize,
    state: State,
    /// When a pong was reported for a CRLF that was the last byte received:
    /// it may have been the first half of a split ping.
    lone_crlf_at: Option<Instant>,
}

impl StreamFramer {
    pub fn new(limits: FramingLimits) -> StreamFramer {
        StreamFramer {
            limits,
            buf: Vec::new(),
            start: 0,
            state: State::Between,
            lone_crlf_at: None,
        }
    }

    /// Appends bytes read from the connection. Ignored once framing failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.state == State::Failed || bytes.is_empty() {
            return;
        }
        // Dropping the consumed prefix moves the unconsumed rest to the front;
        // doing so only once the prefix is at least as long as the rest keeps
        // the copying proportional to the bytes received.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes received so far hold one; `now`
    /// is when they were received (it starts a header block's clock).
    pub fn next(&mut self, now: Instant) -> Option<Result<Frame, FramingError>> {
        loop {
            match self.state {
                State::Failed => return None,
                State::Between => match self.between(now) {
                    Gap::Wait => return None,
                    Gap::Skip => self.consume(1),
                    Gap::Crlfs(n, frame) => {
                        self.consume(n);
                        return Some(Ok(frame));
                    }
                    Gap::MessageStarts => {
                        self.lone_crlf_at = None;
                        self.state = State::Head {
                            since: now,
                            scanned: 0,
                        };
                    }
                },
                State::Head { since, scanned } => match self.head(since, scanned, now) {
                    Ok(Head::Complete { total }) => self.state = State::Body { total },
                    Ok(Head::Incomplete { scanned }) => {
                        self.state = State::Head { since, scanned };
                        return None;
                    }
                    Err(e) => return Some(Err(self.fail(e))),
                },
                State::Body { total } => {
                    if self.buf.len() - self.start < total {
                        return None;
                    }
                    self.state = State::Between;
                    return Some(Ok(Frame::Message(self.take(total))));
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called: the
    /// header deadline of a message whose header block is incomplete.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Head { since, .. } => since.checked_add(self.limits.header_timeout),
            State::Between | State::Body { .. } | State::Failed => None,
        }
    }

    /// Fails the framer if a header block has been arriving since its
    /// deadline ([`poll_timeout`](Self::poll_timeout)) or longer.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FramingError> {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            return Err(self.fail(FramingError::HeadersTimeout {
                timeout: self.limits.header_timeout,
            }));
        }
        Ok(())
    }

    /// Bytes received and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// What the bytes between messages say (RFC 5626 §4.4.1 for CRLFs, RFC
    /// 3261 §7.5 for anything else that is not a start line).
    fn between(&mut self, now: Instant) -> Gap {
        let data = &self.buf[self.start..];
        match data {
            [] => Gap::Wait,
            [b'\r', b'\n', b'\r', b'\n', ..] => {
                self.lone_crlf_at = None;
                Gap::Crlfs(4, Frame::Ping)
            }
            // Maybe a ping whose last bytes are on their way.
            [b'\r'] | [b'\r', b'\n', b'\r'] => Gap::Wait,
            [b'\r', b'\n', rest @ ..] => {
                let completes_ping = self
                    .lone_crlf_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= SPLIT_PING_WINDOW);
                self.lone_crlf_at = (rest.is_empty() && !completes_ping).then_some(now);
                let frame = if completes_ping {
                    Frame::Ping
                } else {
                    Frame::Pong
                };
                Gap::Crlfs(2, frame)
            }
            [b'\r' | b'\n', ..] => {
                self.lone_crlf_at = None;
                Gap::Skip
            }
            _ => Gap::MessageStarts,
        }
    }

    /// Looks for the end of the header block, which started arriving at `since`.
    fn head(&self, since: Instant, scanned: usize, now: Instant) -> Result<Head, FramingError> {
        let limit = self.limits.max_message;
        let data = &self.buf[self.start..];
        // Bytes past the limit (and its empty line) cannot make a message that fits.
        let window = &data[..data.len().min(limit.saturating_add(4))];
        // An empty line straddling the previous scan's end is found again.
        let Some((head_end, body_start)) = find_head_end(window, scanned.saturating_sub(3)) else {
            if data.len() > limit {
                return Err(FramingError::HeadersTooLong { limit });
            }
            if since
                .checked_add(self.limits.header_timeout)
                .is_some_and(|deadline| now >= deadline)
            {
                return Err(FramingError::HeadersTimeout {
                    timeout: self.limits.header_timeout,
                });
            }
            return Ok(Head::Incomplete {
                scanned: data.len(),
            });
        };
        let body = content_length(&data[..head_end])?;
        let size = (body_start as u64).saturating_add(body);
        match usize::try_from(size) {
            Ok(total) if total <= limit => Ok(Head::Complete { total }),
            _ => Err(FramingError::TooLarge { size, limit }),
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.release();
        }
    }

    /// Takes the next `n` bytes, which are all there.
    fn take(&mut self, n: usize) -> Vec<u8> {
        if self.start == 0 && n == self.buf.len() {
            // The usual case on a quiet connection: the buffer is the message.
            return std::mem::take(&mut self.buf);
        }
        let bytes = self.buf[self.start..self.start + n].to_vec();
        self.consume(n);
        bytes
    }

    /// Empties the buffer, giving back capacity an idle connection does not need.
    fn release(&mut self) {
        self.start = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    fn fail(&mut self, error: FramingError) -> FramingError {
        self.state = State::Failed;
        self.buf = Vec::new();
        self.start = 0;
        self.lone_crlf_at = None;
        error
    }
}

/// What [`StreamFramer::between`] found at the front of the buffer, in the
/// gap between two messages.
enum Gap {
    Wait,
    /// A byte RFC 3261 §7.5 says to ignore before a start line.
    Skip,
    /// This many CRLF bytes made this keep-alive.
    Crlfs(usize, Frame),
    MessageStarts,
}

/// What [`StreamFramer::head`] found.
enum Head {
    /// The header block ended; the whole message is `total` bytes.
    Complete { total: usize },
    /// No empty line in the first `scanned` bytes yet.
    Incomplete { scanned: usize },
}

/// The end of the header block in `data`, searching from `from`: where the
/// head ends and where the body starts. Like the decoder (which the framed
/// bytes go to), the first `CRLF CRLF` or bare `LF LF` ends it, so both agree
/// on where the body begins.
fn find_head_end(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut at = from;
    while let Some(offset) = data.get(at..)?.iter().position(|&b| b == b'\n') {
        let lf = at + offset;
        match data.get(lf + 1..) {
            Some([b'\n', ..]) => return Some((lf, lf + 2)),
            Some([b'\r', b'\n', ..]) if lf > 0 && data[lf - 1] == b'\r' => {
                return Some((lf - 1, lf + 3));
            }
            _ => at = lf + 1,
        }
    }
    None
}

/// The `Content-Length` (compact form `l`) of a complete header block, which
/// starts with the start line. Folded values (RFC 3261 §7.3.1) are unfolded.
/// Repeated headers that disagree make the length ambiguous, an error here;
/// repeated ones that agree frame the message, and the decoder refuses it.
fn content_length(head: &[u8]) -> Result<u64, FramingError> {
    let mut found: Option<u64> = None;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .skip(1)
        .peekable();
    while let Some(line) = lines.next() {
        if line.first().is_some_and(|&b| is_wsp(b)) {
            continue; // continues a header that is not Content-Length
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim_wsp(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = trim_wsp(&line[colon + 1..]);
        let mut pieces = usize::from(!value.is_empty());
        while let Some(cont) = lines.next_if(|l| l.first().is_some_and(|&b| is_wsp(b))) {
            let cont = trim_wsp(cont);
            if !cont.is_empty() {
                value = cont;
                pieces += 1;
            }
        }
        let len = (pieces == 1)
            .then(|| parse_length(value))
            .flatten()
            .ok_or_else(|| bad_length(value))?;
        if found.is_some_and(|earlier| earlier != len) {
            return Err(bad_length(value));
        }
        found = Some(len);
    }
    found.ok_or(FramingError::MissingContentLength)
}

/// `1*DIGIT`; a number too large for `u64` saturates (and is then too large).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn bad_length(value: &[u8]) -> FramingError {
    FramingError::BadContentLength {
        value: String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned(),
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_wsp(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_wsp(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_wsp(b)).map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests;
