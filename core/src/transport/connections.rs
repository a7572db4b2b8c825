//! SIP over TCP and TLS (RFC 3261 §18, §26.2): the stream listeners and
//! every connection, accepted or made, by the peer it reaches. A TLS
//! listener hands each accepted connection through rustls first, with the
//! server config in force (a reload swaps it; connections already up keep
//! theirs). A message for a peer goes on
//! the connection open with it — the one it made to Vigil if it did, which
//! is the only way to reach a phone behind NAT (RFC 5923's idea) — and a
//! message for a peer without one opens it. Each connection has a writer
//! task fed by a bounded queue (a peer that stops reading loses its
//! messages, not Vigil's memory) and a reader the daemon runs (it frames
//! and dispatches what arrives, see `daemon::receive`); the connection
//! leaves the table when its reader ends.
//!
//! Limits: connections in all and from one source address, the time to
//! connect; each refusal is counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

use super::LocalSocket;
use crate::ratelimit::RateLimit;
use crate::sip::Protocol;
use crate::transaction::{Path, Transmit};

/// What connections may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connections open in all (accepted and made).
    pub max_connections: usize,
    /// Connections accepted from one IP address.
    pub per_source: usize,
    /// A connection that carries nothing this long is closed (keep-alive
    /// pings count).
    pub idle_timeout: Duration,
    /// How long Vigil waits for a connection it opens.
    pub connect_timeout: Duration,
    /// Messages waiting to be written on one connection.
    pub queue: usize,
}

impl StreamLimits {
    /// The limits `limits:` sets (the rest are fixed).
    pub fn from_config(limits: &crate::config::LimitsConfig) -> StreamLimits {
        StreamLimits {
            max_connections: limits.max_connections as usize,
            per_source: limits.max_connections_per_source as usize,
            idle_timeout: Duration::from_secs(u64::from(limits.connection_idle_timeout)),
            ..StreamLimits::default()
        }
    }
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 50_000,
            per_source: 1_000,
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            // A trunk's one connection carries a busy switch's every
            // message (12,000 a second at 3,000 calls/s): room for more
            // than half a second of them while the peer is slow to read.
            queue: 8_192,
        }
    }
}

/// Connection counts of one transport, for metrics and `vigil ctl status`.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub accepted: AtomicU64,
    pub connected: AtomicU64,
    /// Refused at accept (limits), or a connect that failed.
    pub refused: AtomicU64,
    pub closed: AtomicU64,
    /// Messages dropped because a connection's queue was full or it was
    /// gone before they could be written.
    pub dropped: AtomicU64,
    /// TLS handshakes that failed or took too long.
    pub tls_failures: AtomicU64,
}

/// One transport's connections as a scrape or `vigil ctl status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionSnapshot {
    pub transport: Protocol,
    pub open: u64,
    pub accepted: u64,
    pub connected: u64,
    pub refused: u64,
    pub closed: u64,
    pub dropped: u64,
    pub tls_failures: u64,
}

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The reading half of a connection, TCP or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// A connection's reading half and its flow, for the daemon to read; the
/// connection leaves the table when this is dropped.
pub struct Flow {
    pub read: ReadHalf,
    pub path: Path,
    pub idle_timeout: Duration,
    _entry: EntryGuard,
}

/// The client configs for TLS trunks: one that checks the server's
/// certificate, one that does not (a trunk with `tls_verify: false`).
pub struct TlsClients {
    /// `None` when no trust anchors could be loaded (no `tls.ca` and no
    /// system store): a trunk that verifies then cannot connect, and says why.
    pub verifying: Option<Arc<rustls::ClientConfig>>,
    pub trusting: Arc<rustls::ClientConfig>,
}

/// A TLS peer Vigil connects to: the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    pub name: String,
    pub verify: bool,
}

/// Runs a connection's reader (the daemon's framing and dispatch).
pub type ReaderSpawner = Arc<dyn Fn(Flow) + Send + Sync>;

type Key = (Protocol, SocketAddr);

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<Key, Entry>,
    /// Connections open per peer IP: the per-source limit is checked on
    /// every accept, without walking the table.
    per_ip: HashMap<std::net::IpAddr, usize>,
    /// Messages for peers being connected to, in order.
    connecting: HashMap<Key, Vec<Vec<u8>>>,
}

#[derive(Clone)]
struct Entry {
    id: u64,
    out: mpsc::Sender<Vec<u8>>,
}

/// Every stream connection, by peer.
pub struct Connections {
    table: Mutex<Table>,
    /// Replaced when a reload changes `limits:` (connections open stay).
    limits: arc_swap::ArcSwap<StreamLimits>,
    /// The server side of TLS listeners (set at start and on reload).
    tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// The client side, for connections Vigil opens to TLS trunks.
    tls_client: arc_swap::ArcSwapOption<TlsClients>,
    /// What each TLS peer's certificate must name, and whether it is checked.
    tls_peers: Mutex<HashMap<SocketAddr, TlsPeer>>,
    reader: OnceLock<ReaderSpawner>,
    /// Told of every connection that closes (the registrar forgets the
    /// contacts registered on it).
    on_close: OnceLock<Arc<dyn Fn(Path) + Send + Sync>>,
    /// TCP's and TLS's counts.
    counters: [ConnectionCounters; 2],
    log: Mutex<RateLimit>,
}

impl Connections {
    pub fn new(limits: StreamLimits) -> Arc<Connections> {
        Arc::new(Connections {
            table: Mutex::default(),
            limits: arc_swap::ArcSwap::from_pointee(limits),
            tls: arc_swap::ArcSwapOption::empty(),
            tls_client: arc_swap::ArcSwapOption::empty(),
            tls_peers: Mutex::default(),
            reader: OnceLock::new(),
            on_close: OnceLock::new(),
            counters: Default::default(),
            log: Mutex::new(RateLimit::new(5, Duration::from_secs(10))),
        })
    }

    /// The limits from now on (a reload).
    pub fn set_limits(&self, limits: StreamLimits) {
        self.limits.store(Arc::new(limits));
    }

    /// The certificate and key TLS listeners present from now on.
    pub fn set_tls(&self, config: Arc<rustls::ServerConfig>) {
        self.tls
            .store(Some(Arc::new(tokio_rustls::TlsAcceptor::from(config))));
    }

    /// The client configs for TLS connections Vigil opens from now on.
    pub fn set_tls_client(&self, clients: TlsClients) {
        self.tls_client.store(Some(Arc::new(clients)));
    }

    /// The TLS peers Vigil may connect to, by address (the gateway table's).
    pub fn set_tls_peers(&self, peers: HashMap<SocketAddr, TlsPeer>) {
        *self
            .tls_peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = peers;
    }

    /// Who hears of a closed connection (set once, by the daemon).
    pub fn set_on_close(&self, on_close: Arc<dyn Fn(Path) + Send + Sync>) {
        let _ = self.on_close.set(on_close);
    }

    /// Who reads connections (set once, by the daemon, before any opens).
    pub fn set_reader(&self, spawner: ReaderSpawner) {
        let _ = self.reader.set(spawner);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// The counts of `proto`'s connections (TCP's for UDP, which has none).
    pub fn counters(&self, proto: Protocol) -> &ConnectionCounters {
        &self.counters[usize::from(proto == Protocol::Tls)]
    }

    /// TCP's and TLS's counts now.
    pub fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        [Protocol::Tcp, Protocol::Tls]
            .into_iter()
            .map(|transport| {
                let c = self.counters(transport);
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                ConnectionSnapshot {
                    transport,
                    open: self.open_over(transport) as u64,
                    accepted: load(&c.accepted),
                    connected: load(&c.connected),
                    refused: load(&c.refused),
                    closed: load(&c.closed),
                    dropped: load(&c.dropped),
                    tls_failures: load(&c.tls_failures),
                }
            })
            .collect()
    }

    /// Connections of `proto` open now.
    pub fn open_over(&self, proto: Protocol) -> usize {
        self.lock().open.keys().filter(|(p, _)| *p == proto).count()
    }

    fn warn(&self, message: &str, peer: SocketAddr, error: &dyn std::fmt::Display) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(suppressed) = log.allow(Instant::now()) {
            tracing::warn!(%peer, error = %error, suppressed, "{message}");
        }
    }

    /// Accepts connections on `listener` until the task is aborted.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, local: LocalSocket) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.warn("accept failed", local.bind, &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(why) = self.admit(peer) {
                self.counters(local.proto)
                    .refused
                    .fetch_add(1, Ordering::Relaxed);
                self.warn("connection refused", peer, &why);
                drop(stream);
                continue;
            }
            self.counters(local.proto)
                .accepted
                .fetch_add(1, Ordering::Relaxed);
            let path = Path {
                local: local.bind,
                remote: peer,
                proto: local.proto,
            };
            let _ = stream.set_nodelay(true);
            if local.proto != Protocol::Tls {
                self.register(stream, path);
                continue;
            }
            let Some(acceptor) = self.tls.load_full() else {
                self.handshake_failed(peer, &"no tls: configuration");
                continue;
            };
            let connections = self.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        connections.register(tls, path);
                    }
                    Ok(Err(e)) => connections.handshake_failed(peer, &e),
                    Err(_) => connections.handshake_failed(peer, &"timed out"),
                }
            });
        }
    }

    fn handshake_failed(&self, peer: SocketAddr, error: &dyn std::fmt::Display) {
        self.counters(Protocol::Tls)
            .tls_failures
            .fetch_add(1, Ordering::Relaxed);
        self.warn("TLS handshake failed", peer, error);
    }

    /// Whether one more connection from `peer` fits the limits.
    fn admit(&self, peer: SocketAddr) -> Result<(), &'static str> {
        let table = self.lock();
        if table.open.len() >= self.limits.load().max_connections {
            return Err("too many connections");
        }
        let from_source = table.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if from_source >= self.limits.load().per_source {
            return Err("too many connections from this address");
        }
        Ok(())
    }

    /// Puts an open connection in the table and starts its writer and reader.
    fn register<S>(self: &Arc<Self>, stream: S, path: Path) -> Entry
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let (out, queue) = mpsc::channel(self.limits.load().queue);
        let key = (path.proto, path.remote);
        let entry = {
            let mut table = self.lock();
            table.next_id += 1;
            let entry = Entry {
                id: table.next_id,
                out,
            };
            if let Some(replaced) = table.open.insert(key, entry.clone()) {
                // A second connection from the same peer address and port
                // (the first is closing): the newer one carries its traffic.
                drop(replaced);
            } else {
                *table.per_ip.entry(path.remote.ip()).or_default() += 1;
            }
            entry
        };
        tokio::spawn(write_loop(write, queue));
        let flow = Flow {
            read: Box::new(read),
            path,
            idle_timeout: self.limits.load().idle_timeout,
            _entry: EntryGuard {
                connections: self.clone(),
                path,
                id: entry.id,
            },
        };
        match self.reader.get() {
            Some(spawn) => spawn(flow),
            None => drop(flow),
        }
        entry
    }

    /// Sends `transmit` on the connection to its peer, opening one if there
    /// is none (a message to a peer that never connected, over TCP).
    pub fn send(self: &Arc<Self>, transmit: Transmit) {
        let key = (transmit.proto, transmit.remote);
        let path = transmit.path();
        let bytes = transmit.bytes;
        let mut table = self.lock();
        if let Some(entry) = table.open.get(&key) {
            if entry.out.try_send(bytes).is_err() {
                self.counters(path.proto)
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                drop(table);
                self.warn(
                    "message dropped: the connection's queue is full (the peer reads too slowly)",
                    path.remote,
                    &self.limits.load().queue,
                );
            }
            return;
        }
        if let Some(waiting) = table.connecting.get_mut(&key) {
            waiting.push(bytes);
            return;
        }
        table.connecting.insert(key, vec![bytes]);
        drop(table);
        tokio::spawn(self.clone().connect(path));
    }

    /// Opens a connection to `path.remote`; what waited for it goes first.
    async fn connect(self: Arc<Self>, path: Path) {
        let key = (path.proto, path.remote);
        let attempt = async {
            let socket = if path.remote.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // From the address Via names (a peer admits trunks by address),
            // on a port of the kernel's choosing.
            if !path.local.ip().is_unspecified() && path.local.is_ipv4() == path.remote.is_ipv4() {
                socket.bind(SocketAddr::new(path.local.ip(), 0))?;
            }
            socket.connect(path.remote).await
        };
        let result = tokio::time::timeout(self.limits.load().connect_timeout, attempt).await;
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.connect_failed(key, &e),
            Err(_) => return self.connect_failed(key, &"timed out"),
        };
        let _ = stream.set_nodelay(true);
        // The flow's local address is the listener Via named (where the
        // peer's answers would go if it had to connect back).
        let entry = if path.proto == Protocol::Tls {
            match self.tls_handshake(stream, path.remote).await {
                Ok(tls) => self.register(tls, path),
                Err(e) => {
                    self.counters(Protocol::Tls)
                        .tls_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return self.connect_failed(key, &e);
                }
            }
        } else {
            self.register(stream, path)
        };
        self.counters(path.proto)
            .connected
            .fetch_add(1, Ordering::Relaxed);
        let waiting = self.lock().connecting.remove(&key).unwrap_or_default();
        for bytes in waiting {
            if entry.out.try_send(bytes).is_err() {
                self.counters(path.proto)
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The client side of TLS on a connection Vigil opened to `peer`: its
    /// certificate is checked against the name the gateway table gives it
    /// (its IP without one) unless its trunk says not to.
    async fn tls_handshake(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let clients = self
            .tls_client
            .load_full()
            .ok_or("no tls: section to connect with")?;
        let known = self
            .tls_peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned();
        let TlsPeer { name, verify } = known.unwrap_or(TlsPeer {
            name: peer.ip().to_string(),
            verify: true,
        });
        let config = if verify {
            clients
                .verifying
                .clone()
                .ok_or("no trust anchors to verify the server with (give tls.ca)")?
        } else {
            clients.trusting.clone()
        };
        let name = super::tls::server_name(&name).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(config);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    fn connect_failed(&self, key: Key, error: &dyn std::fmt::Display) {
        let lost = self.lock().connecting.remove(&key).map_or(0, |w| w.len());
        let counters = self.counters(key.0);
        counters.refused.fetch_add(1, Ordering::Relaxed);
        counters.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        self.warn("cannot connect", key.1, error);
    }
}

/// Writes what is queued for one connection until the queue closes (the
/// connection left the table) or the peer stops taking it.
async fn write_loop<W: AsyncWrite + Unpin>(mut write: W, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queue.recv().await {
        if write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// Takes a connection out of the table when its reader is done with it.
struct EntryGuard {
    connections: Arc<Connections>,
    path: Path,
    id: u64,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        let key = (self.path.proto, self.path.remote);
        let mut table = self.connections.lock();
        if table.open.get(&key).is_some_and(|e| e.id == self.id) {
            table.open.remove(&key);
            let ip = self.path.remote.ip();
            if let Some(n) = table.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    table.per_ip.remove(&ip);
                }
            }
        }
        drop(table);
        if let Some(on_close) = self.connections.on_close.get() {
            on_close(self.path);
        }
        self.connections
            .counters(self.path.proto)
            .closed
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Binds a TCP listener for `local` (in the tokio runtime).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
