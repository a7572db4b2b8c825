//! UDP transport (RFC 3261 §18): binds the SIP `listen` sockets, works out the
//! address each one advertises in Via and Contact ([`LocalSocket`]), and sends
//! the engine's and the registrar's transmits. The daemon's receive loops read
//! from these sockets and hand what arrives to the ingress; the control socket
//! and the metrics endpoint are the daemon's own, not SIP's. A reload may bind
//! more sockets and close some: the set is behind a lock that sends only read.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

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
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on udp:{addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
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
}

impl Transport {
    /// Binds every listener. Must run inside a tokio runtime.
    pub fn bind(listeners: &[Listener]) -> Result<Transport, TransportError> {
        let mut sockets = Vec::with_capacity(listeners.len());
        for l in listeners {
            sockets.push(bind_listener(l)?);
        }
        Ok(Transport {
            sockets: RwLock::new(sockets),
            orphan_log: Mutex::new(RateLimit::new(5, Duration::from_secs(60))),
            trace: trace::SipTrace::default(),
        })
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

    pub fn local_sockets(&self) -> Arc<[LocalSocket]> {
        self.read().iter().map(|(l, _)| *l).collect()
    }

    pub fn sockets(&self) -> Vec<BoundSocket> {
        self.read().clone()
    }

    /// Sends a datagram from the socket bound to `local`. Errors are logged, not
    /// returned: a lost datagram is what UDP and the transaction timers are for.
    pub async fn send(&self, transmit: &Transmit) {
        self.trace.datagram(
            trace::Direction::Sent,
            transmit.local,
            transmit.remote,
            &transmit.bytes,
        );
        // The usual send completes under the read lock; only a full socket
        // buffer takes the socket out of it (a shared count, touched by every
        // worker, would otherwise move on each datagram) to wait for room.
        let attempt = {
            let sockets = self.read();
            let Some((_, socket)) = sockets.iter().find(|(l, _)| l.bind == transmit.local) else {
                drop(sockets);
                self.orphan(transmit);
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
    };
    tracing::info!(bind = %local.bind, advertised = %local.advertised, "listening on udp");
    Ok((local, Arc::new(socket)))
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
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
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
