//! The DNS task: keeps gateway names resolved with hickory-resolver, off the
//! hot path (RFC 3263 §4.2). It is the thin tokio shell around
//! [`crate::dns::Refresher`]: it sleeps until a name is due, looks the due
//! names up concurrently, feeds each result back, and hands every
//! [`DnsEvent`] to the daemon's callback, which publishes it to the engine.
//! Nothing here is ever awaited by a call.
//!
//! The resolver's own cache is off: the refresher already asks again exactly
//! when a TTL runs out, and a cached answer would only hide a change.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dns::{
    Addresses, Answer, DnsEvent, DnsSettings, GatewayName, LookupError, Refresher, SrvRecord,
};

/// Why the DNS task could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("cannot read the system's resolver configuration (give `dns.servers`): {0}")]
    SystemConfig(NetError),
    #[error("cannot build the DNS resolver: {0}")]
    Resolver(NetError),
}

/// Keeps the DNS task running: dropping it stops the task (lookups in flight
/// are abandoned). Through it the daemon changes the set of names on reload.
#[derive(Debug)]
pub struct DnsHandle {
    /// The names to keep resolved; the task ends when this sender is dropped.
    names: watch::Sender<Arc<BTreeSet<GatewayName>>>,
}

impl DnsHandle {
    /// The names to keep resolved from now on (a reload): new names are
    /// looked up at once, names that remain keep their targets and schedule.
    pub fn set_names(&self, names: impl IntoIterator<Item = GatewayName>) {
        self.names
            .send_replace(Arc::new(names.into_iter().collect()));
    }
}

/// Starts the DNS task on the current tokio runtime: it looks up every name
/// at once, then each again when its TTL (clamped to `settings.ttl`) runs out,
/// and calls `publish` with each [`DnsEvent`]. `publish` runs on the task and
/// must not block (send to a channel, swap an `ArcSwap`).
pub fn spawn_resolver<F>(
    settings: &DnsSettings,
    names: impl IntoIterator<Item = GatewayName>,
    publish: F,
) -> Result<DnsHandle, DnsSetupError>
where
    F: FnMut(DnsEvent) + Send + 'static,
{
    let resolver = build_resolver(settings)?;
    let (names_tx, names_rx) = watch::channel(Arc::new(names.into_iter().collect()));
    let refresher = Refresher::new(settings.ttl);
    tokio::spawn(run(resolver, refresher, names_rx, publish));
    Ok(DnsHandle { names: names_tx })
}

/// hickory's resolver for these settings: only the given servers (no
/// resolv.conf, no hosts file) when there are some, the system's otherwise.
fn build_resolver(settings: &DnsSettings) -> Result<TokioResolver, DnsSetupError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder(provider).map_err(DnsSetupError::SystemConfig)?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            provider,
        );
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = settings.timeout;
    options.attempts = usize::try_from(settings.attempts).unwrap_or(1);
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(DnsSetupError::Resolver)
}

/// The task: the refresher decides, this loop does the lookups.
async fn run<F>(
    resolver: TokioResolver,
    mut refresher: Refresher,
    mut names: watch::Receiver<Arc<BTreeSet<GatewayName>>>,
    mut publish: F,
) where
    F: FnMut(DnsEvent),
{
    let mut lookups = JoinSet::new();
    let current = Arc::clone(&names.borrow_and_update());
    refresher.set_names(Instant::now().into_std(), current.iter().cloned());
    loop {
        let now = Instant::now().into_std();
        while let Some(name) = refresher.poll_lookup(now) {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let result = resolve(&resolver, &name).await;
                (name, result)
            });
        }
        let deadline = refresher.poll_timeout().map(Instant::from_std);
        tokio::select! {
            changed = names.changed() => {
                if changed.is_err() {
                    tracing::debug!("DNS task stops: its handle was dropped");
                    return;
                }
                let current = Arc::clone(&names.borrow_and_update());
                refresher.set_names(Instant::now().into_std(), current.iter().cloned());
            }
            Some(done) = lookups.join_next(), if !lookups.is_empty() => {
                let Ok((name, result)) = done else { continue };
                if let Some(event) = refresher.handle_answer(Instant::now().into_std(), &name, result) {
                    publish(event);
                }
            }
            () = sleep_until(deadline) => {}
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One name's lookup as RFC 3263 §4.2 orders it.
async fn resolve(resolver: &TokioResolver, name: &GatewayName) -> Result<Answer, LookupError> {
    match name {
        GatewayName::HostPort { host, port } => Ok(Answer::from_addresses(
            &addresses(resolver, host).await?,
            *port,
        )),
        GatewayName::Host { host, .. } => match srv(resolver, name).await {
            Err(LookupError::NoSuchName { .. } | LookupError::NoRecords { .. }) => Ok(
                Answer::from_addresses(&addresses(resolver, host).await?, name.fallback_port()),
            ),
            found => found,
        },
    }
}

/// The SRV records of `name` and their targets' addresses.
async fn srv(resolver: &TokioResolver, name: &GatewayName) -> Result<Answer, LookupError> {
    let Some(owner) = name.srv_query() else {
        return Err(LookupError::Other(format!(
            "{name} is not looked up by SRV"
        )));
    };
    let lookup = resolver
        .lookup(format!("{owner}."), RecordType::SRV)
        .await
        .map_err(|e| lookup_error(&owner, "SRV", &e))?;
    let records: Vec<SrvRecord> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv
                    .target
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                ttl: record.ttl,
            }),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return Err(LookupError::NoRecords {
            name: owner,
            kind: "SRV",
        });
    }
    let mut found = Vec::with_capacity(records.len());
    for record in records {
        let addresses = if record.target.is_empty() {
            Ok(Addresses {
                ips: Vec::new(),
                ttl: record.ttl,
            })
        } else {
            addresses(resolver, &record.target).await
        };
        found.push((record, addresses));
    }
    Answer::from_srv(&owner, found)
}

/// A host's A and AAAA records.
async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Addresses, LookupError> {
    let lookup = resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|e| lookup_error(host, "A/AAAA", &e))?;
    let records = lookup.as_lookup().answers();
    let ips: Vec<IpAddr> = lookup.iter().collect();
    if ips.is_empty() {
        return Err(LookupError::NoRecords {
            name: host.into(),
            kind: "A/AAAA",
        });
    }
    let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
    Ok(Addresses { ips, ttl })
}

/// hickory's error as a plain [`LookupError`] an event can carry.
fn lookup_error(name: &str, kind: &'static str, error: &NetError) -> LookupError {
    match error {
        NetError::Timeout => LookupError::Timeout,
        e if e.is_nx_domain() => LookupError::NoSuchName { name: name.into() },
        e if e.is_no_records_found() => LookupError::NoRecords {
            name: name.into(),
            kind,
        },
        NetError::Dns(DnsError::ResponseCode(code)) if *code != ResponseCode::NoError => {
            LookupError::Server(code.to_string())
        }
        other => LookupError::Other(other.to_string()),
    }
}
