//! UDP transport (RFC 3261 §18): binds the SIP `listen` sockets, works out the
//! address each one advertises in Via and Contact ([`LocalSocket`]), and sends
//! the engine's and the registrar's transmits. Every socket asks the kernel to
//! stamp each datagram with its arrival time (`SO_TIMESTAMPNS`), so a receive
//! loop knows how long each one waited in the socket's buffer ([`Receiver`]).
//! The daemon's receive loops read through [`Receiver`] and hand what arrives
//! to the ingress; the control socket and the metrics endpoint are the
//! daemon's own, not SIP's. A reload may bind more sockets and close some:
//! the set is behind a lock that sends only read.

use std::io::{self, IoSliceMut};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket as StdUdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub mod connections;
pub mod stream;
pub mod tls;
pub mod trace;

use crate::config::Listener;
use crate::ratelimit::RateLimit;
use crate::transaction::Transmit;

/// Socket buffers big enough to ride out a burst of a few thousand calls per second
/// without the kernel dropping datagrams; the kernel may cap them (net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A socket Vigil listens on and the address it advertises for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSocket {
    pub bind: SocketAddr,
    /// What Via and Contact say (the bind address unless it is a wildcard or NAT).
    pub advertised: SocketAddr,
    /// UDP, or the TCP/TLS listener whose address Via names for requests
    /// Vigil sends over its connections.
    pub proto: crate::sip::Protocol,
}

impl LocalSocket {
    /// The UDP socket to reach `target` from (registered contacts are
    /// reached over UDP): see [`LocalSocket::for_target_over`].
    pub fn for_target(sockets: &[LocalSocket], target: SocketAddr) -> Option<LocalSocket> {
        LocalSocket::for_target_over(sockets, target, crate::sip::Protocol::Udp)
    }

    /// The socket whose address Via and Contact name for a message to
    /// `target` over `proto`: one of that transport and address family,
    /// preferring one bound to the same kind of address (loopback to
    /// loopback). Without a listener of that transport, a UDP socket's
    /// address serves (the peer answers on the connection Vigil opens).
    pub fn for_target_over(
        sockets: &[LocalSocket],
        target: SocketAddr,
        proto: crate::sip::Protocol,
    ) -> Option<LocalSocket> {
        LocalSocket::pick(sockets, target, proto)
            .or_else(|| LocalSocket::pick(sockets, target, crate::sip::Protocol::Udp))
            .map(|s| LocalSocket { proto, ..s })
    }

    fn pick(
        sockets: &[LocalSocket],
        target: SocketAddr,
        proto: crate::sip::Protocol,
    ) -> Option<LocalSocket> {
        let target_ip = crate::config::canonical_ip(target.ip());
        let same_family =
            |s: &&LocalSocket| s.proto == proto && s.bind.is_ipv4() == target.is_ipv4();
        sockets
            .iter()
            .filter(same_family)
            .find(|s| s.bind.ip().is_loopback() == target_ip.is_loopback())
            .or_else(|| sockets.iter().find(same_family))
            .copied()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on udp:{addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on tcp:{addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

/// A bound socket and what it advertises.
pub type BoundSocket = (LocalSocket, Arc<UdpSocket>);

/// The bound sockets.
pub struct Transport {
    sockets: RwLock<Vec<BoundSocket>>,
    /// Sends from a socket that was closed (a dialog set up on a removed
    /// `listen` address), logged at a bounded rate.
    orphan_log: Mutex<RateLimit>,
    /// Traced trunks and users (received datagrams are traced by the receive
    /// loops through [`Transport::trace`]).
    trace: trace::SipTrace,
    /// The stream listeners (bound at start; a reload cannot change them).
    streams: Vec<LocalSocket>,
    /// Their sockets, until the daemon takes them to accept on.
    stream_listeners: Mutex<Vec<(LocalSocket, tokio::net::TcpListener)>>,
    /// Every TCP connection, by peer.
    connections: Arc<connections::Connections>,
}

impl Transport {
    /// Binds every listener. Must run inside a tokio runtime.
    pub fn bind(
        listeners: &[Listener],
        limits: connections::StreamLimits,
    ) -> Result<Transport, TransportError> {
        let mut sockets = Vec::with_capacity(listeners.len());
        let mut streams = Vec::new();
        for l in listeners {
            match l.proto {
                crate::sip::Protocol::Udp => sockets.push(bind_listener(l)?),
                _ => streams.push(bind_stream_listener(l)?),
            }
        }
        Ok(Transport {
            sockets: RwLock::new(sockets),
            orphan_log: Mutex::new(RateLimit::new(5, Duration::from_secs(60))),
            trace: trace::SipTrace::default(),
            streams: streams.iter().map(|(l, _)| *l).collect(),
            stream_listeners: Mutex::new(streams),
            connections: connections::Connections::new(limits),
        })
    }

    /// The stream listeners, once: the daemon accepts on them.
    pub fn take_stream_listeners(&self) -> Vec<(LocalSocket, tokio::net::TcpListener)> {
        std::mem::take(
            &mut *self
                .stream_listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Every TCP connection.
    pub fn connections(&self) -> &Arc<connections::Connections> {
        &self.connections
    }

    /// The SIP trace: what is traced, switched by config and `vigil ctl`.
    pub fn trace(&self) -> &trace::SipTrace {
        &self.trace
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<BoundSocket>> {
        self.sockets.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds one more listener (a reload added it) and returns it.
    pub fn add(&self, listener: &Listener) -> Result<BoundSocket, TransportError> {
        let bound = bind_listener(listener)?;
        self.sockets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bound.clone());
        Ok(bound)
    }

    /// Closes the socket bound to `bind` (a reload removed it, and its grace
    /// time for in-flight transactions is over).
    pub fn remove(&self, bind: SocketAddr) {
        self.sockets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(l, _)| l.bind != bind);
        tracing::info!(bind = %bind, "stopped listening on udp");
    }

    /// The UDP sockets and the stream listeners: what Via and Contact may name.
    pub fn local_sockets(&self) -> Arc<[LocalSocket]> {
        self.read()
            .iter()
            .map(|(l, _)| *l)
            .chain(self.streams.iter().copied())
            .collect()
    }

    pub fn sockets(&self) -> Vec<BoundSocket> {
        self.read().clone()
    }

    /// Sends a datagram from the socket bound to `local`. Errors are logged, not
    /// returned: a lost datagram is what UDP and the transaction timers are for.
    pub async fn send(&self, transmit: Transmit) {
        self.trace.datagram(
            trace::Direction::Sent,
            transmit.local,
            transmit.remote,
            &transmit.bytes,
        );
        if transmit.proto.is_reliable() {
            // Moved, not copied: the connection's queue takes the bytes.
            return self.connections.send(transmit);
        }
        // The usual send completes under the read lock; only a full socket
        // buffer takes the socket out of it (a shared count, touched by every
        // worker, would otherwise move on each datagram) to wait for room.
        let attempt = {
            let sockets = self.read();
            let Some((_, socket)) = sockets.iter().find(|(l, _)| l.bind == transmit.local) else {
                drop(sockets);
                self.orphan(&transmit);
                return;
            };
            match socket.try_send_to(&transmit.bytes, transmit.remote) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(socket.clone()),
                other => Ok(other),
            }
        };
        let result = match attempt {
            Ok(result) => result,
            Err(socket) => socket.send_to(&transmit.bytes, transmit.remote).await,
        };
        if let Err(e) = result {
            tracing::debug!(to = %transmit.remote, error = %e, "send failed");
        }
    }
}

impl Transport {
    /// A transmit from a socket that was closed, logged at a bounded rate.
    fn orphan(&self, transmit: &Transmit) {
        let mut log = self
            .orphan_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(suppressed) = log.allow(Instant::now()) {
            tracing::warn!(local = %transmit.local, suppressed, "no socket for transmit (its listen address was removed)");
        }
    }
}

fn bind_listener(l: &Listener) -> Result<BoundSocket, TransportError> {
    let socket = bind_udp(l.bind).map_err(|source| TransportError::Bind {
        addr: l.bind,
        source,
    })?;
    let bound = socket.local_addr().map_err(|source| TransportError::Bind {
        addr: l.bind,
        source,
    })?;
    let advertised_ip = l.advertise.unwrap_or_else(|| advertised_ip(bound.ip()));
    let local = LocalSocket {
        bind: bound,
        advertised: SocketAddr::new(advertised_ip, bound.port()),
        proto: crate::sip::Protocol::Udp,
    };
    tracing::info!(bind = %local.bind, advertised = %local.advertised, "listening on udp");
    Ok((local, Arc::new(socket)))
}

fn bind_stream_listener(
    l: &Listener,
) -> Result<(LocalSocket, tokio::net::TcpListener), TransportError> {
    let listen = |source| TransportError::Listen {
        addr: l.bind,
        source,
    };
    let listener = connections::bind_tcp(l.bind).map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    let advertised_ip = l.advertise.unwrap_or_else(|| advertised_ip(bound.ip()));
    let local = LocalSocket {
        bind: bound,
        advertised: SocketAddr::new(advertised_ip, bound.port()),
        proto: l.proto,
    };
    tracing::info!(bind = %local.bind, advertised = %local.advertised, proto = %l.proto, "listening on a stream transport");
    Ok((local, listener))
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Lets "udp:[::]:5060" and "udp:0.0.0.0:5060" both be listed.
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    // Best effort too: without the stamps the receive loop cannot tell how
    // long datagrams wait, and sheds new calls only on full worker queues.
    if let Err(e) = setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
        tracing::warn!(%addr, error = %e, "no receive timestamps (SO_TIMESTAMPNS): overload is seen only in the worker queues");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

/// One datagram read by a [`Receiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read; the buffer's whole length when the datagram was larger
    /// (the rest was discarded).
    pub len: usize,
    pub remote: SocketAddr,
    /// When the kernel received it (`SO_TIMESTAMPNS`, the real-time clock);
    /// `None` when the socket gave no stamp. For a moment after the first
    /// socket asks for stamps the kernel stamps datagrams as they are read
    /// (it turns arrival stamps on by deferred work): they seem not to have
    /// waited.
    pub arrived: Option<SystemTime>,
}

/// Reads one socket's datagrams with their kernel receive time. It owns the
/// buffer for the control messages, so a read allocates nothing.
pub struct Receiver {
    control: Vec<u8>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            control: nix::cmsg_space!(TimeSpec),
        }
    }
}

impl Receiver {
    /// Waits for the next datagram on `socket` and reads it into `buf`.
    pub async fn recv(&mut self, socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
        let fd = socket.as_raw_fd();
        let control = &mut self.control;
        socket
            .async_io(Interest::READABLE, || recv_stamped(fd, buf, control))
            .await
    }
}

/// `recvmsg` with room for the timestamp; `WouldBlock` when nothing waits.
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(control), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let remote = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    // A truncated control buffer (`ENOBUFS`) only costs the stamp.
    let arrived = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => system_time(ts),
            _ => None,
        })
    });
    Ok(Received {
        len: msg.bytes,
        remote,
        arrived,
    })
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}

/// A kernel timestamp as a point of the real-time clock.
fn system_time(ts: TimeSpec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec())
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The address to advertise for a socket bound to `ip`: itself, unless it is a
/// wildcard; then the source address the host would use towards the Internet
/// (found by connecting a UDP socket, which sends nothing), else loopback.
fn advertised_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    let (probe_bind, probe_target): (SocketAddr, SocketAddr) = if ip.is_ipv4() {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        )
    } else {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            (
                "2001:db8::1"
                    .parse::<Ipv6Addr>()
                    .unwrap_or(Ipv6Addr::LOCALHOST),
                9,
            )
                .into(),
        )
    };
    let found = StdUdpSocket::bind(probe_bind)
        .and_then(|s| s.connect(probe_target).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    match found {
        Ok(ip) => {
            tracing::warn!(advertised = %ip, "wildcard listen address: advertising the primary address; set `advertise` to choose");
            ip
        }
        Err(_) => {
            let fallback = if ip.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            };
            tracing::warn!(advertised = %fallback, "wildcard listen address and no route: advertising loopback; set `advertise`");
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_comes_with_the_time_the_kernel_received_it() {
        let socket = bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = socket.local_addr().expect("addr");
        let sender = StdUdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let mut receiver = Receiver::default();
        let mut buf = [0u8; 16];
        // The kernel turns on arrival stamping for every socket a moment
        // after the first one asks for it (deferred work, later on a busy
        // machine); until then a datagram is stamped when it is read.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = SystemTime::now();
            sender.send_to(b"OPTIONS", to).expect("send");
            std::thread::sleep(Duration::from_millis(50));
            let got = receiver.recv(&socket, &mut buf).await.expect("recv");
            let read_at = SystemTime::now();
            assert_eq!(&buf[..got.len], b"OPTIONS");
            assert_eq!(got.remote, sender.local_addr().expect("addr"));
            let arrived = got.arrived.expect("SO_TIMESTAMPNS gave a stamp");
            assert!(before <= arrived && arrived <= read_at, "{arrived:?}");
            let waited = read_at.duration_since(arrived).expect("after");
            if waited >= Duration::from_millis(50) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "datagrams are still stamped when read, not when they arrive: waited {waited:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_datagram_larger_than_the_buffer_fills_it() {
        let socket = bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let sender = StdUdpSocket::bind("127.0.0.1:0").expect("bind sender");
        sender
            .send_to(&[b'x'; 100], socket.local_addr().expect("addr"))
            .expect("send");
        let mut buf = [0u8; 10];
        let got = Receiver::default()
            .recv(&socket, &mut buf)
            .await
            .expect("recv");
        assert_eq!(got.len, 10, "the caller sees a full buffer: oversized");
    }
}
