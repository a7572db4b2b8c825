//! The daemon's keeper of the gateway table: it rebuilds the table when DNS
//! changes what a gateway name resolves to, or a reload changes the trunks
//! (the health of gateways that remain is carried over), publishes it for
//! `vigil ctl gateways`, and hands each new table to the workers. The DNS
//! lookups themselves run on their own task (`dns`); a call never waits on
//! them, it only ever sees the last table.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::dns::{DnsHandle, spawn_resolver};
use super::worker::WorkerInput;
use crate::config::Config;
use crate::dns::{DnsEvent, DnsSettings, GatewayName};
use crate::gateway::{Gateways, Resolved};
use crate::sip::Protocol;
use crate::transport::connections::{Connections, TlsPeer};

/// What the table is built from, and the resolver that feeds it.
pub struct GatewayBook {
    config: Arc<Config>,
    resolved: Resolved,
    /// The current table (what `vigil ctl gateways` reads).
    table: Arc<ArcSwap<Gateways>>,
    /// The DNS task and the settings it runs with; `None` without names.
    resolver: Option<(DnsHandle, DnsSettings)>,
    /// Where the resolver's events go (to [`follow_dns`]).
    events: mpsc::UnboundedSender<DnsEvent>,
    /// The connections TLS gateways are reached on: told each one's name.
    connections: Arc<Connections>,
}

/// The book, shared by the DNS follower and the reloader.
pub type SharedBook = Arc<Mutex<GatewayBook>>;

impl GatewayBook {
    /// The book for the config at start, its table, and the receiver of DNS
    /// events for [`follow_dns`]. Starts the resolver if a trunk names a
    /// gateway by host (in the tokio runtime).
    pub fn start(
        config: Arc<Config>,
        connections: Arc<Connections>,
    ) -> (SharedBook, mpsc::UnboundedReceiver<DnsEvent>) {
        let table = Gateways::build(&config, None, Instant::now(), &Resolved::new());
        connections.set_tls_peers(tls_peers(&table));
        let (events, receiver) = mpsc::unbounded_channel();
        let mut book = GatewayBook {
            config: config.clone(),
            resolved: Resolved::new(),
            table: Arc::new(ArcSwap::from_pointee(table)),
            resolver: None,
            events,
            connections,
        };
        book.follow_names(&config);
        (Arc::new(Mutex::new(book)), receiver)
    }

    pub fn table(&self) -> Arc<ArcSwap<Gateways>> {
        self.table.clone()
    }

    /// A reloaded config: the resolver follows its names (restarted if
    /// `dns:` changed) and the table its trunks. Names that remain keep
    /// their addresses until DNS says otherwise.
    pub fn on_config(&mut self, config: Arc<Config>) -> Arc<Gateways> {
        self.follow_names(&config);
        let names = config.gateway_names();
        self.resolved.retain(|name, _| names.contains(name));
        self.config = config;
        self.rebuild()
    }

    /// A DNS event: a new table when a name's addresses changed.
    pub fn on_dns(&mut self, event: DnsEvent) -> Option<Arc<Gateways>> {
        match event {
            DnsEvent::Resolved { name, resolution } => {
                let addresses: Vec<String> = resolution
                    .targets
                    .iter()
                    .map(|t| t.addr.to_string())
                    .collect();
                tracing::info!(%name, addresses = %addresses.join(", "), ttl_s = resolution.ttl.as_secs(), "gateway name resolved");
                if self.resolved.get(&name) == Some(&resolution.targets) {
                    return None;
                }
                self.resolved.insert(name, resolution.targets);
                Some(self.rebuild())
            }
            // The resolver logs failures (rate-limited) and keeps the last
            // good addresses, which the table still has.
            DnsEvent::Failed { .. } => None,
        }
    }

    fn rebuild(&mut self) -> Arc<Gateways> {
        let table = Arc::new(Gateways::build(
            &self.config,
            Some(&self.table.load()),
            Instant::now(),
            &self.resolved,
        ));
        self.connections.set_tls_peers(tls_peers(&table));
        self.table.store(table.clone());
        table
    }

    /// Starts, restarts or retargets the resolver for `config`'s names.
    fn follow_names(&mut self, config: &Config) {
        let names: BTreeSet<GatewayName> = config.gateway_names();
        if names.is_empty() {
            self.resolver = None;
            return;
        }
        if let Some((handle, settings)) = &self.resolver
            && *settings == config.dns
        {
            handle.set_names(names);
            return;
        }
        let events = self.events.clone();
        let publish = move |event| {
            // The follower goes away only when the daemon stops.
            let _ = events.send(event);
        };
        match spawn_resolver(&config.dns, names, publish) {
            Ok(handle) => self.resolver = Some((handle, config.dns.clone())),
            Err(e) => {
                tracing::error!(error = %e, "cannot resolve gateway names: gateways named by host get no calls");
                self.resolver = None;
            }
        }
    }
}

/// Applies the resolver's events to the book and sends each new table to
/// every worker, until the daemon stops.
pub async fn follow_dns(
    book: SharedBook,
    mut events: mpsc::UnboundedReceiver<DnsEvent>,
    workers: Vec<mpsc::Sender<WorkerInput>>,
) {
    while let Some(event) = events.recv().await {
        let changed = book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_dns(event);
        if let Some(table) = changed {
            for worker in &workers {
                let _ = worker.send(WorkerInput::Gateways(table.clone())).await;
            }
        }
    }
}

/// The TLS gateways' addresses and the names their certificates must carry.
fn tls_peers(table: &Gateways) -> HashMap<SocketAddr, TlsPeer> {
    table
        .all()
        .filter(|g| g.proto == Protocol::Tls)
        .map(|g| {
            let peer = TlsPeer {
                name: g.tls_name.clone(),
                verify: g.tls_verify,
            };
            (g.addr, peer)
        })
        .collect()
}
