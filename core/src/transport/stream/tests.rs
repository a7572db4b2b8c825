use std::time::{Duration, Instant};

use super::*;
use crate::sip::{Message, Method, decode};

const OPTIONS: &str = "OPTIONS sip:vigil.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-o1\r\n\
From: <sip:probe@10.0.0.1>;tag=p1\r\n\
To: <sip:vigil.example>\r\n\
Call-ID: options-1@10.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\
\r\n";

/// A message whose body holds an empty line: only Content-Length can end it.
const MESSAGE: &str = "MESSAGE sip:bob@vigil.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-m1\r\n\
From: <sip:alice@10.0.0.1>;tag=a1\r\n\
To: <sip:bob@vigil.example>\r\n\
Call-ID: message-1@10.0.0.1\r\n\
CSeq: 1 MESSAGE\r\n\
Max-Forwards: 70\r\n\
Content-Type: text/plain\r\n\
Content-Length: 13\r\n\
\r\n\
hi\r\n\r\nthere\r\n";

fn invite_with_sdp() -> String {
    let sdp = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\n\
s=-\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";
    format!(
        "INVITE sip:0049301234@vigil.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-i1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@10.0.0.1>;tag=a1\r\n\
To: <sip:0049301234@vigil.example>\r\n\
Call-ID: call-1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.1:5060;transport=tcp>\r\n\
Supported: timer\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n\
{sdp}",
        sdp.len()
    )
}

fn framer() -> StreamFramer {
    StreamFramer::new(FramingLimits::default())
}

/// Every frame the framer yields at `now`, stopping after an error.
fn drain(framer: &mut StreamFramer, now: Instant) -> Vec<Result<Frame, FramingError>> {
    let mut frames = Vec::new();
    while let Some(frame) = framer.next(now) {
        let failed = frame.is_err();
        frames.push(frame);
        if failed {
            break;
        }
    }
    frames
}

fn message(text: &str) -> Result<Frame, FramingError> {
    Ok(Frame::Message(text.as_bytes().to_vec()))
}

/// Pushes `chunks` one after another, draining after each as a connection does.
fn frame_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    now: Instant,
) -> Vec<Result<Frame, FramingError>> {
    let mut framer = framer();
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        frames.extend(drain(&mut framer, now));
    }
    frames
}

#[test]
fn a_message_in_one_read_is_one_frame() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(OPTIONS.as_bytes());
    assert_eq!(drain(&mut framer, now), vec![message(OPTIONS)]);
    assert_eq!(framer.buffered(), 0);
    assert_eq!(framer.poll_timeout(), None);
}

#[test]
fn a_message_split_at_any_byte_is_framed_whole() {
    let now = Instant::now();
    for text in [OPTIONS, MESSAGE] {
        let bytes = text.as_bytes();
        for at in 1..bytes.len() {
            let frames = frame_chunks([&bytes[..at], &bytes[at..]], now);
            assert_eq!(frames, vec![message(text)], "split at {at}");
        }
        let frames = frame_chunks(bytes.chunks(1), now);
        assert_eq!(frames, vec![message(text)], "one byte at a time");
    }
}

#[test]
fn two_messages_in_one_read_are_two_frames() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(format!("{MESSAGE}{OPTIONS}").as_bytes());
    assert_eq!(
        drain(&mut framer, now),
        vec![message(MESSAGE), message(OPTIONS)]
    );
}

#[test]
fn content_length_not_an_empty_line_ends_a_body() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(MESSAGE.as_bytes());
    framer.push(b"OPTIONS sip:vigil.example SIP/2.0\r\n");
    let frames = drain(&mut framer, now);
    assert_eq!(frames, vec![message(MESSAGE)]);
    let Ok(Message::Request(request)) = decode(MESSAGE.as_bytes()) else {
        panic!("the framed MESSAGE decodes");
    };
    assert_eq!(request.body, b"hi\r\n\r\nthere\r\n");
}

#[test]
fn compact_and_folded_content_length_frame_the_body() {
    let now = Instant::now();
    for header in [
        "l: 3",
        "L:3",
        "content-LENGTH \t:  3  ",
        "Content-Length:\r\n   3",
    ] {
        let text = OPTIONS.replace("Content-Length: 0", header) + "abc";
        let mut framer = framer();
        framer.push(format!("{text}OPTIONS").as_bytes());
        assert_eq!(drain(&mut framer, now), vec![message(&text)], "{header:?}");
        assert_eq!(framer.buffered(), "OPTIONS".len());
    }
}

#[test]
fn a_message_without_content_length_closes_the_connection() {
    let now = Instant::now();
    let mut framer = framer();
    let text = OPTIONS.replace("Content-Length: 0\r\n", "");
    framer.push(format!("{OPTIONS}{text}").as_bytes());
    assert_eq!(
        drain(&mut framer, now),
        vec![message(OPTIONS), Err(FramingError::MissingContentLength)]
    );
    // Dead: nothing more is framed, and nothing is kept.
    framer.push(OPTIONS.as_bytes());
    assert_eq!(framer.next(now), None);
    assert_eq!(framer.buffered(), 0);
    assert_eq!(framer.poll_timeout(), None);
}

#[test]
fn an_invalid_or_ambiguous_content_length_closes_the_connection() {
    let now = Instant::now();
    for (header, value) in [
        ("Content-Length: abc", "abc"),
        ("Content-Length: -1", "-1"),
        ("Content-Length: 1 2", "1 2"),
        ("Content-Length:", ""),
        ("Content-Length: 0\r\nl: 5", "5"),
    ] {
        let mut framer = framer();
        framer.push(OPTIONS.replace("Content-Length: 0", header).as_bytes());
        assert_eq!(
            drain(&mut framer, now),
            vec![Err(FramingError::BadContentLength {
                value: value.into()
            })],
            "{header:?}"
        );
    }
    // Two that agree frame the message; the decoder then refuses the duplicate.
    let twice = OPTIONS.replace("Content-Length: 0", "Content-Length: 0\r\nl: 00");
    let mut framer = framer();
    framer.push(twice.as_bytes());
    assert_eq!(drain(&mut framer, now), vec![message(&twice)]);
}

#[test]
fn a_content_length_beyond_the_limit_closes_the_connection() {
    let now = Instant::now();
    let mut framer = framer();
    let header = "Content-Length: 99999999999999999999999999";
    framer.push(OPTIONS.replace("Content-Length: 0", header).as_bytes());
    assert!(matches!(
        drain(&mut framer, now).as_slice(),
        [Err(FramingError::TooLarge {
            size: u64::MAX,
            limit: MAX_DATAGRAM
        })]
    ));

    // Exactly the limit passes; one byte more does not.
    let fits = OPTIONS.replace("Content-Length: 0", "Content-Length: 10") + "0123456789";
    let over = OPTIONS.replace("Content-Length: 0", "Content-Length: 11");
    let limits = FramingLimits {
        max_message: fits.len(),
        ..FramingLimits::default()
    };
    let mut framer = StreamFramer::new(limits);
    framer.push(format!("{fits}{over}").as_bytes());
    assert_eq!(
        drain(&mut framer, now),
        vec![
            message(&fits),
            Err(FramingError::TooLarge {
                size: fits.len() as u64 + 1,
                limit: fits.len()
            })
        ]
    );
}

#[test]
fn a_header_block_that_never_ends_is_refused_at_the_limit() {
    let now = Instant::now();
    let limits = FramingLimits {
        max_message: 1000,
        ..FramingLimits::default()
    };
    let mut framer = StreamFramer::new(limits);
    let garbage = b"GET / HTTP/1.1\r\nX: ".repeat(10);
    let mut sent = 0;
    while sent <= 1000 {
        framer.push(&garbage);
        sent += garbage.len();
        let frames = drain(&mut framer, now);
        if sent <= 1000 {
            assert_eq!(frames, vec![], "{sent} bytes are still allowed");
        } else {
            assert_eq!(
                frames,
                vec![Err(FramingError::HeadersTooLong { limit: 1000 })]
            );
        }
    }
    assert_eq!(framer.buffered(), 0, "a failed framer keeps nothing");
}

#[test]
fn a_header_block_that_trickles_in_times_out() {
    let start = Instant::now();
    let limits = FramingLimits::default();
    let mut framer = framer();
    framer.push(b"INVITE sip:x@vigil.example SIP/2.0\r\nVia: SIP/2.0/TCP");
    assert_eq!(drain(&mut framer, start), vec![]);
    let deadline = start + limits.header_timeout;
    assert_eq!(framer.poll_timeout(), Some(deadline));
    // Each byte is progress, but not enough: the clock runs from the first.
    framer.push(b" 10.0.0.1");
    assert_eq!(drain(&mut framer, start + Duration::from_secs(5)), vec![]);
    assert_eq!(framer.poll_timeout(), Some(deadline));
    assert_eq!(
        framer.handle_timeout(deadline - Duration::from_millis(1)),
        Ok(())
    );
    let timeout = FramingError::HeadersTimeout {
        timeout: limits.header_timeout,
    };
    assert_eq!(framer.handle_timeout(deadline), Err(timeout.clone()));
    assert_eq!(framer.next(deadline), None);
    assert_eq!(framer.poll_timeout(), None);

    // A byte that arrives after the deadline, before the timer fired, fails too.
    let mut framer = StreamFramer::new(limits);
    framer.push(b"INVITE sip:x@vigil.example SIP/2.0\r\n");
    assert_eq!(drain(&mut framer, start), vec![]);
    framer.push(b"Via");
    assert_eq!(drain(&mut framer, deadline), vec![Err(timeout)]);
}

#[test]
fn a_body_slower_than_the_header_timeout_is_left_to_the_idle_timeout() {
    let start = Instant::now();
    let limits = FramingLimits::default();
    let text = invite_with_sdp();
    let (head, body) = text.split_at(text.find("\r\n\r\n").expect("empty line") + 4);
    let mut framer = framer();
    framer.push(head.as_bytes());
    framer.push(&body.as_bytes()[..10]);
    assert_eq!(drain(&mut framer, start), vec![]);
    // The header block is complete: its clock has stopped.
    assert_eq!(framer.poll_timeout(), None);
    let late = start + limits.header_timeout * 3;
    assert_eq!(framer.handle_timeout(late), Ok(()));
    framer.push(&body.as_bytes()[10..]);
    assert_eq!(drain(&mut framer, late), vec![message(&text)]);
}

#[test]
fn a_message_whose_body_is_still_arriving_waits_for_it() {
    let now = Instant::now();
    let mut framer = framer();
    let text = OPTIONS.replace("Content-Length: 0", "Content-Length: 100") + "short";
    framer.push(text.as_bytes());
    assert_eq!(drain(&mut framer, now), vec![]);
    assert_eq!(framer.buffered(), text.len());
}

#[test]
fn crlfs_between_messages_are_pings_and_pongs() {
    let now = Instant::now();
    let stream = format!("\r\n\r\n{OPTIONS}\r\n\r\n\r\n{OPTIONS}\r\n");
    let mut framer = framer();
    framer.push(stream.as_bytes());
    let frames = drain(&mut framer, now);
    assert_eq!(
        frames,
        vec![
            Ok(Frame::Ping),
            message(OPTIONS),
            Ok(Frame::Ping),
            Ok(Frame::Pong),
            message(OPTIONS),
            Ok(Frame::Pong),
        ]
    );
    assert_eq!(Frame::Ping.answer(), Some(PONG));
    assert_eq!(Frame::Pong.answer(), None);
    assert_eq!(PING, b"\r\n\r\n");
    assert_eq!(PONG, b"\r\n");
}

#[test]
fn a_ping_split_across_reads_is_still_answered() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(b"\r\n");
    assert_eq!(drain(&mut framer, now), vec![Ok(Frame::Pong)]);
    framer.push(b"\r\n");
    assert_eq!(drain(&mut framer, now), vec![Ok(Frame::Ping)]);
    // Pongs to pings sent a keep-alive period apart stay pongs.
    framer.push(b"\r\n");
    assert_eq!(drain(&mut framer, now), vec![Ok(Frame::Pong)]);
    framer.push(b"\r\n");
    let later = now + Duration::from_secs(30);
    assert_eq!(drain(&mut framer, later), vec![Ok(Frame::Pong)]);
    // Three bytes of a ping wait for the fourth.
    framer.push(b"\r\n\r");
    assert_eq!(drain(&mut framer, later), vec![]);
    framer.push(b"\n");
    assert_eq!(drain(&mut framer, later), vec![Ok(Frame::Ping)]);
}

#[test]
fn stray_line_ends_before_a_start_line_are_ignored() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(format!("\n\r{OPTIONS}").as_bytes());
    assert_eq!(drain(&mut framer, now), vec![message(OPTIONS)]);
}

#[test]
fn bare_lf_line_ends_are_framed_where_the_decoder_splits() {
    let now = Instant::now();
    let text = OPTIONS
        .replace("\r\n", "\n")
        .replace("Content-Length: 0", "l: 2")
        + "ok";
    let mut framer = framer();
    framer.push(format!("{text}{OPTIONS}").as_bytes());
    assert_eq!(
        drain(&mut framer, now),
        vec![message(&text), message(OPTIONS)]
    );
    assert!(decode(text.as_bytes()).is_ok());
}

#[test]
fn a_framed_invite_with_sdp_decodes() {
    let now = Instant::now();
    let text = invite_with_sdp();
    let mut framer = framer();
    framer.push(format!("\r\n\r\n{text}").as_bytes());
    let frames = drain(&mut framer, now);
    let [Ok(Frame::Ping), Ok(Frame::Message(bytes))] = frames.as_slice() else {
        panic!("a ping, then the INVITE: {frames:?}");
    };
    let Ok(Message::Request(invite)) = decode(bytes) else {
        panic!("the framed INVITE decodes");
    };
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.call_id, "call-1@10.0.0.1");
    assert!(invite.body.starts_with(b"v=0\r\n"));
    assert!(invite.body.ends_with(b"a=sendrecv\r\n"));
}

#[test]
fn any_split_of_a_busy_stream_gives_the_same_frames() {
    let now = Instant::now();
    let invite = invite_with_sdp();
    let stream = format!("{invite}\r\n\r\n{MESSAGE}{OPTIONS}\r\n\r\n{invite}");
    let expected = vec![
        message(&invite),
        Ok(Frame::Ping),
        message(MESSAGE),
        message(OPTIONS),
        Ok(Frame::Ping),
        message(&invite),
    ];
    let bytes = stream.as_bytes();
    // A fixed-seed generator: the same splits on every run.
    let mut seed: u64 = 0x5eed;
    for _ in 0..500 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = 1 + (seed >> 33) as usize % 300;
            let end = (at + len).min(bytes.len());
            chunks.push(&bytes[at..end]);
            at = end;
        }
        // A ping split in two reads as a pong and a ping: still answered.
        let frames: Vec<_> = frame_chunks(chunks.iter().copied(), now)
            .into_iter()
            .filter(|f| *f != Ok(Frame::Pong))
            .collect();
        assert_eq!(
            frames,
            expected,
            "chunks of {:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_body_in_many_small_reads_is_not_copied_per_read() {
    let now = Instant::now();
    let body = "x".repeat(30_000);
    let text = OPTIONS.replace("Content-Length: 0", "Content-Length: 30000") + &body;
    let mut framer = framer();
    let mut frames = Vec::new();
    for chunk in text.as_bytes().chunks(7) {
        framer.push(chunk);
        frames.extend(drain(&mut framer, now));
        // Amortised growth: the buffer never holds more than twice the message.
        assert!(framer.buf.capacity() <= 2 * text.len());
    }
    assert_eq!(frames, vec![message(&text)]);
    // An idle connection does not keep the large message's capacity.
    assert!(framer.buf.capacity() <= KEEP_CAPACITY);
}

#[test]
fn the_consumed_prefix_is_dropped_once_it_outweighs_the_rest() {
    let now = Instant::now();
    let mut framer = framer();
    framer.push(format!("{OPTIONS}OPT").as_bytes());
    assert_eq!(drain(&mut framer, now), vec![message(OPTIONS)]);
    assert_eq!(framer.start, OPTIONS.len());
    framer.push(b"IONS");
    assert_eq!(framer.start, 0, "compacted before appending");
    assert_eq!(&framer.buf, b"OPTIONS");
}

#[test]
fn a_framer_stays_small() {
    // 20,000 idle TLS connections each hold one (issue 19's benchmark).
    let size = std::mem::size_of::<StreamFramer>();
    assert!(size <= 128, "size_of::<StreamFramer>() = {size} bytes");
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_within_the_limit() {
    let now = Instant::now();
    let limits = FramingLimits {
        max_message: 200,
        ..FramingLimits::default()
    };
    // Pieces that make framing interesting: line ends, start lines, lengths.
    let pieces: [&[u8]; 12] = [
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b"\r",
        b"OPTIONS sip:a SIP/2.0\r\n",
        b"l: 5\r\n",
        b"Content-Length:\r\n 12\r\n",
        b"content-length: 99999\r\n",
        b"l: x\r\n",
        b"Via: a\r\n",
        b" \t",
        b"0123456789",
    ];
    let mut seed: u64 = 0xf022;
    let mut random = move |below: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize % below
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2_000 {
        let mut framer = StreamFramer::new(limits);
        for _ in 0..20 {
            let chunk: Vec<u8> = (0..1 + random(6))
                .flat_map(|_| pieces[random(pieces.len())].iter().copied())
                .collect();
            framer.push(&chunk);
            let frames = drain(&mut framer, now);
            for frame in &frames {
                if let Ok(Frame::Message(bytes)) = frame {
                    assert!(bytes.len() <= limits.max_message);
                }
                seen.insert(match frame {
                    Ok(Frame::Message(_)) => "message",
                    Ok(Frame::Ping) => "ping",
                    Ok(Frame::Pong) => "pong",
                    Err(FramingError::HeadersTooLong { .. }) => "headers too long",
                    Err(FramingError::HeadersTimeout { .. }) => "headers timeout",
                    Err(FramingError::MissingContentLength) => "no length",
                    Err(FramingError::BadContentLength { .. }) => "bad length",
                    Err(FramingError::TooLarge { .. }) => "too large",
                });
            }
            // Drained after each read: one incomplete message and that read at most.
            assert!(framer.buffered() <= limits.max_message + chunk.len());
            if matches!(frames.last(), Some(Err(_))) {
                assert_eq!(framer.buffered(), 0);
                break;
            }
        }
    }
    // The pieces reach every outcome but the timeout (the clock stands still).
    assert_eq!(seen.len(), 7, "{seen:?}");
}
