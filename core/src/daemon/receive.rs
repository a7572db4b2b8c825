//! The receive loops: one per SIP socket, reading datagrams with the time
//! each waited in the kernel's buffer, judging them in the ingress and
//! handing them to the worker (or the registrar) that owns them — and
//! shedding new calls when the loop falls behind.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::watch as latest;

use super::WORKER_QUEUE;
use super::registrar::RegistrarInput;
use super::worker::WorkerInput;
use crate::config::Config;
use crate::ingress::overload::{Overload, Shed};
use crate::ingress::{Ingress, Verdict};
use crate::metrics::{CallShed, DatagramDrop};
use crate::ratelimit::RateLimit;
use crate::sip::{MAX_DATAGRAM, Message};
use crate::transaction::{Path, Transmit};
use crate::transport::connections::Flow;
use crate::transport::stream::{Frame, FramingLimits, StreamFramer};
use crate::transport::trace::Direction;
use crate::transport::{LocalSocket, Received, Receiver, Transport};

/// Where the receive loops hand messages on.
#[derive(Clone)]
pub(super) struct Inputs {
    pub(super) workers: Vec<mpsc::Sender<WorkerInput>>,
    pub(super) registrar: Option<mpsc::Sender<RegistrarInput>>,
    /// The overload limits in force (a reload may replace them).
    pub(super) overloads: latest::Receiver<Arc<Overload>>,
}

/// Whether a receive loop keeps up with its socket, judged by how long the
/// datagrams it reads waited in the kernel's buffer (each one's
/// `SO_TIMESTAMPNS` stamp against the clock when it is read). A loop that is
/// merely busy reads datagrams a millisecond old. One that has fallen behind
/// reads datagrams that waited [`Backlog::STALE`] or more, and only such, for
/// [`Backlog::SUSTAINED`], without catching up: they wait longer and longer
/// (or as long as a full buffer holds) until callers retransmit (T1 =
/// 500 ms), which only adds load. New calls are then shed (a 503 costs a
/// tenth of a call) until the loop catches up.
///
/// Catching up is reading faster than datagrams arrive: the waits fall. A
/// loop whose process was frozen (a loaded machine, a page-in) reads what
/// piled up meanwhile, old datagrams first, and each one read has waited
/// less than the one before; while the waits fall by half the time spent
/// reading them or more (the loop reads 1.5 times as fast as datagrams
/// come), it sheds nothing, however long the freeze was. Stamps are on the
/// real-time clock: only the datagrams queued when the clock is stepped are
/// misjudged, and one stamped after its reading time (the clock stepped
/// back) counts as not having waited.
#[derive(Debug, Default)]
struct Backlog {
    /// The stretch of stale datagrams the loop is reading; `None` after a
    /// fresh one.
    stale: Option<StaleStretch>,
}

/// Since when a receive loop has read only stale datagrams, and how long the
/// first and the latest of them waited.
#[derive(Debug, Clone, Copy)]
struct StaleStretch {
    since: Instant,
    first_wait: Duration,
    last_wait: Duration,
}

impl Backlog {
    /// A datagram that waited this long in the kernel is stale: well inside
    /// T1 (500 ms), when callers start retransmitting.
    const STALE: Duration = Duration::from_millis(200);
    /// Reading only stale datagrams for this long, without catching up, is
    /// falling behind: shedding starts with datagrams about 300 ms old, still
    /// inside T1.
    const SUSTAINED: Duration = Duration::from_millis(100);

    /// How long a datagram stamped `arrived` by the kernel waited until
    /// `read_at`; `None` without a stamp.
    fn waited(arrived: Option<SystemTime>, read_at: SystemTime) -> Option<Duration> {
        arrived.map(|at| read_at.duration_since(at).unwrap_or(Duration::ZERO))
    }

    /// The loop read, at `now`, a datagram that had waited `waited` (`None`:
    /// not known, which changes nothing).
    fn read(&mut self, now: Instant, waited: Option<Duration>) {
        let Some(waited) = waited else {
            return;
        };
        if waited < Self::STALE {
            self.stale = None;
            return;
        }
        match &mut self.stale {
            Some(stretch) => stretch.last_wait = waited,
            None => {
                self.stale = Some(StaleStretch {
                    since: now,
                    first_wait: waited,
                    last_wait: waited,
                });
            }
        }
    }

    /// Behind: only stale datagrams read for [`Backlog::SUSTAINED`], and
    /// their waits fell by less than half the time spent reading them.
    fn is_behind(&self, now: Instant) -> bool {
        let Some(stretch) = self.stale else {
            return false;
        };
        let reading = now.saturating_duration_since(stretch.since);
        let caught_up = stretch.first_wait.saturating_sub(stretch.last_wait);
        reading >= Self::SUSTAINED && caught_up < reading / 2
    }
}

/// Why new calls are shed now, if they are: the worker's queue is half full,
/// or this receive loop is behind ([`Backlog`]).
fn falling_behind(
    worker: &mpsc::Sender<WorkerInput>,
    backlog: &Backlog,
    now: Instant,
) -> Option<CallShed> {
    if worker.capacity() < WORKER_QUEUE / 2 {
        Some(CallShed::Overload)
    } else {
        backlog.is_behind(now).then_some(CallShed::Backlog)
    }
}

/// What judges a received message and hands it on: the ingress, the config
/// and overload limits in force, the workers and the registrar. One per
/// receive loop and per connection (an ingress keeps per-loop counts).
pub(super) struct Handoff {
    ingress: Ingress,
    configs: latest::Receiver<Arc<Config>>,
    config: Arc<Config>,
    inputs: Inputs,
    transport: Arc<Transport>,
    overload_log: RateLimit,
}

impl Handoff {
    pub(super) fn new(
        mut ingress: Ingress,
        mut configs: latest::Receiver<Arc<Config>>,
        mut inputs: Inputs,
        transport: Arc<Transport>,
    ) -> Handoff {
        let config = configs.borrow_and_update().clone();
        ingress.set_overload(inputs.overloads.borrow_and_update().clone());
        Handoff {
            ingress,
            configs,
            config,
            inputs,
            transport,
            overload_log: RateLimit::new(5, Duration::from_secs(10)),
        }
    }

    /// Judges one message that arrived on `path` and hands it to the worker
    /// or the registrar that owns it (or answers or drops it); `backlog` says
    /// whether the reader has fallen behind.
    async fn hand_on(&mut self, now: Instant, bytes: &[u8], path: Path, backlog: &Backlog) {
        self.transport
            .trace()
            .datagram(Direction::Received, path.local, path.remote, bytes);
        // An atomic load per message; a reload swaps the snapshot.
        if self.configs.has_changed().unwrap_or(false) {
            self.config = self.configs.borrow_and_update().clone();
        }
        if self.inputs.overloads.has_changed().unwrap_or(false) {
            self.ingress
                .set_overload(self.inputs.overloads.borrow_and_update().clone());
        }
        let (ingress, inputs, config) = (&mut self.ingress, &self.inputs, &self.config);
        match ingress.classify(now, config, bytes, path) {
            Verdict::Dispatch {
                worker,
                message,
                admitted,
                fresh_call,
            } => {
                // Falling behind — a worker's queue half full, or this loop
                // reading only datagrams that waited long in the kernel —
                // sheds new calls first, long before the queues are full of
                // what calls in progress need.
                if fresh_call
                    && let Some(reason) = falling_behind(&inputs.workers[worker], backlog, now)
                    && let Message::Request(request) = message.as_ref()
                {
                    let why = Shed {
                        reason,
                        retry_after: 2,
                    };
                    if let Verdict::Reply { bytes, to } =
                        ingress.shed(now, request, path, config, why)
                    {
                        self.transport.send(Transmit::new(path.to(to), bytes)).await;
                    }
                    return;
                }
                let input = WorkerInput::Message {
                    message,
                    path,
                    admitted,
                };
                if inputs.workers[worker].try_send(input).is_err() {
                    ingress.dropped(DatagramDrop::Overload);
                    if let Some(suppressed) = self.overload_log.allow(now) {
                        tracing::warn!(worker, suppressed, "worker queue full: datagram dropped");
                    }
                }
            }
            Verdict::Registrar(message) => {
                let full = inputs.registrar.as_ref().is_some_and(|r| {
                    r.try_send(RegistrarInput::Message { message, path })
                        .is_err()
                });
                if full {
                    ingress.dropped(DatagramDrop::Overload);
                    if let Some(suppressed) = self.overload_log.allow(now) {
                        tracing::warn!(suppressed, "registrar queue full: datagram dropped");
                    }
                }
            }
            Verdict::Reply { bytes, to } => {
                self.transport.send(Transmit::new(path.to(to), bytes)).await;
            }
            Verdict::Drop(_) => {}
        }
    }
}

/// Reads datagrams from one socket, judges them and hands them on.
pub(super) async fn receive_loop(socket: Arc<UdpSocket>, local: LocalSocket, mut handoff: Handoff) {
    // One byte more than the largest datagram, to notice an oversized one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut errors_log = RateLimit::new(5, Duration::from_secs(10));
    let mut backlog = Backlog::default();
    let mut receiver = Receiver::default();
    loop {
        let received = receiver.recv(&socket, &mut buf).await;
        let (wall, now) = (SystemTime::now(), Instant::now());
        let Received {
            len,
            remote,
            arrived,
        } = match received {
            Ok(r) => r,
            Err(e) => {
                if let Some(suppressed) = errors_log.allow(now) {
                    tracing::warn!(error = %e, suppressed, "receive failed");
                }
                continue;
            }
        };
        let waited = Backlog::waited(arrived, wall);
        if let Some(waited) = waited {
            handoff.ingress.waited(waited);
        }
        backlog.read(now, waited);
        if len > MAX_DATAGRAM {
            handoff.ingress.dropped(DatagramDrop::Oversized);
            if let Some(suppressed) = errors_log.allow(now) {
                tracing::warn!(source = %remote, suppressed, "datagram over 64 KiB dropped");
            }
            continue;
        }
        let path = Path::udp(local.bind, remote);
        handoff.hand_on(now, &buf[..len], path, &backlog).await;
    }
}

/// Reads one TCP connection (RFC 3261 §18.3): frames its byte stream into
/// messages by Content-Length and hands each on like a datagram; answers a
/// CRLF keep-alive ping with a pong (RFC 5626 §3.5.1). The connection
/// closes on end of stream, a framing error (a message without
/// Content-Length, headers that never end or come too slowly, a message
/// too large), or `idle_timeout` without a byte.
pub(super) async fn stream_loop(flow: Flow, mut handoff: Handoff) {
    use tokio::io::AsyncReadExt;
    let Flow {
        mut read,
        path,
        idle_timeout,
        ..
    } = flow;
    let mut framer = StreamFramer::new(FramingLimits::default());
    // Small: an idle connection holds it for its whole life (a message
    // larger than this arrives in several reads).
    let mut buf = vec![0u8; 4 * 1024];
    // A connection has no kernel stamps: only full worker queues shed.
    let backlog = Backlog::default();
    let why = loop {
        let idle = Instant::now() + idle_timeout;
        let wake = framer.poll_timeout().map_or(idle, |at| at.min(idle));
        let read_result = tokio::select! {
            r = read.read(&mut buf) => r,
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let Err(e) = framer.handle_timeout(now) {
                    break e.to_string();
                }
                if now >= idle {
                    break "idle".to_string();
                }
                continue;
            }
        };
        let n = match read_result {
            Ok(0) => break "closed by the peer".to_string(),
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        framer.push(&buf[..n]);
        let now = Instant::now();
        let mut failed = None;
        while let Some(frame) = framer.next(now) {
            match frame {
                Ok(Frame::Message(bytes)) => handoff.hand_on(now, &bytes, path, &backlog).await,
                Ok(frame) => {
                    if let Some(answer) = frame.answer() {
                        handoff
                            .transport
                            .send(Transmit::new(path, answer.to_vec()))
                            .await;
                    }
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break e;
        }
    };
    tracing::debug!(peer = %path.remote, proto = %path.proto, reason = %why, "connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_loop_reading_fresh_datagrams_is_never_behind() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        assert!(!backlog.is_behind(t0), "nothing read yet");
        // Ten seconds of datagrams read 5 ms after they arrived, without a
        // pause: busy, not behind.
        for i in 0..10_000 {
            let now = t0 + i * MS;
            backlog.read(now, Some(5 * MS));
            assert!(!backlog.is_behind(now));
        }
    }

    #[test]
    fn a_freeze_leaves_stale_datagrams_that_shed_nothing_once_read() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        backlog.read(t0, Some(MS));
        // The process was frozen 400 ms; the loop reads what piled up, each
        // younger than the last, and is through it in about 35 ms.
        for i in 0..60u32 {
            let now = t0 + 400 * MS + i * MS;
            backlog.read(now, Some((400 - 6 * i) * MS));
            assert!(!backlog.is_behind(now), "{i} ms into the pile");
        }
        assert!(!backlog.is_behind(t0 + 1000 * MS));
    }

    #[test]
    fn a_long_freeze_caught_up_at_one_and_a_half_times_the_arrival_rate_sheds_nothing() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        // Frozen 2 s on a loaded machine, then reading 1.5 times as fast as
        // datagrams arrive: the waits fall 0.5 ms per ms, for 3.6 s of stale
        // datagrams.
        for i in 0..3_600u32 {
            let now = t0 + i * MS;
            backlog.read(now, Some(2_000 * MS - i * MS / 2));
            assert!(!backlog.is_behind(now), "{i} ms into the pile");
        }
    }

    #[test]
    fn reading_stale_datagrams_for_100_ms_without_catching_up_is_behind_until_a_fresh_one() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        backlog.read(t0, Some(199 * MS));
        assert!(!backlog.is_behind(t0 + 500 * MS), "199 ms is not stale");
        // Waits that grow: datagrams arrive faster than the loop reads them.
        backlog.read(t0, Some(200 * MS));
        assert!(!backlog.is_behind(t0 + 99 * MS));
        // A datagram without a stamp tells nothing either way.
        backlog.read(t0 + 50 * MS, None);
        backlog.read(t0 + 100 * MS, Some(250 * MS));
        assert!(backlog.is_behind(t0 + 100 * MS));
        // Waits that stay put: a full buffer, the kernel dropping the rest.
        for i in 0..1_000u32 {
            let now = t0 + 100 * MS + i * MS;
            backlog.read(now, Some((250 + i % 7) * MS));
            assert!(backlog.is_behind(now), "{i} ms into a full buffer");
        }
        // One fresh datagram: it caught up, and it takes another 100 ms of
        // stale ones to be behind again.
        let t1 = t0 + 10_000 * MS;
        backlog.read(t1, Some(20 * MS));
        assert!(!backlog.is_behind(t1));
        backlog.read(t1 + MS, Some(300 * MS));
        backlog.read(t1 + 100 * MS, Some(300 * MS));
        assert!(!backlog.is_behind(t1 + 100 * MS));
        backlog.read(t1 + 101 * MS, Some(300 * MS));
        assert!(backlog.is_behind(t1 + 101 * MS));
    }

    #[test]
    fn catching_up_slower_than_half_a_second_per_second_is_behind() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        // Reading only 1.2 times as fast as datagrams come: the waits fall
        // 0.2 ms per ms, from 800 ms.
        backlog.read(t0, Some(800 * MS));
        let now = t0 + 150 * MS;
        backlog.read(now, Some(770 * MS));
        assert!(backlog.is_behind(now), "shedding speeds the catching up");
        // Faster: 0.6 ms per ms over the stretch.
        backlog.read(t0 + 500 * MS, Some(500 * MS));
        assert!(!backlog.is_behind(t0 + 500 * MS));
    }

    #[test]
    fn the_wait_is_the_kernel_stamp_to_the_reading_and_never_negative() {
        let read_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            Backlog::waited(Some(read_at - 250 * MS), read_at),
            Some(250 * MS)
        );
        // The real-time clock stepped back between the stamp and the read.
        assert_eq!(
            Backlog::waited(Some(read_at + 3_600_000 * MS), read_at),
            Some(Duration::ZERO)
        );
        assert_eq!(Backlog::waited(None, read_at), None);
    }
}
