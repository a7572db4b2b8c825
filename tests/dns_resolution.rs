//! Gateway names resolved by DNS (issue 18, RFC 3263 §4.2) against a real
//! dnsmasq on loopback, never the machine's resolver: the resolver task is
//! given `dns.servers` and nothing else.
//!
//! First, each kind of name asks for what RFC 3263 says: an SRV domain gives
//! its targets by priority with their weights, A and AAAA merged; a host
//! with a port ignores the SRV records it has; a host without a port takes
//! its SRV records when it has some and port 5060 on its A record when it
//! has none; a missing name is a failure that keeps nothing; the transport
//! a gateway URI asks for picks its records (`sip:…;transport=tcp` the
//! `_sip._tcp` ones, `sips:` the `_sips._tcp` ones, and port 5061 without
//! any, issue 19).
//!
//! Then a carrier's story: its SRV name resolves; the carrier's DNS is
//! restarted with the gateway moved, and the task publishes the new target
//! once the 1 s TTL runs out; the DNS server goes away, and the task reports
//! the failure while the last good targets stay; dropping the handle stops
//! the task.
//!
//! Everything stays on 127.0.180.0/24 (this file's own) and `::1`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use vigil::daemon::dns::{DnsHandle, spawn_resolver};
use vigil::dns::{DnsEvent, DnsFile, Gateway, GatewayName, LookupError, Target};

use support::dnsmasq::{Dnsmasq, free_port};

/// How long a test waits for an event it expects: the TTL (1 s), a
/// lookup's timeout (1 s) and slack for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

fn name(text: &str) -> GatewayName {
    match Gateway::parse(text, None) {
        Ok((Gateway::Name(name), _)) => name,
        other => panic!("{text}: {other:?}"),
    }
}

fn target(addr: &str, priority: u16, weight: u16) -> Target {
    Target {
        addr: addr.parse().expect("a test address"),
        priority,
        weight,
    }
}

/// The resolver task on `server` only, with lab bounds (1 s TTL floor, 1 s
/// timeout, one attempt), publishing into a channel.
fn resolver(
    server: SocketAddr,
    names: Vec<GatewayName>,
) -> (DnsHandle, mpsc::UnboundedReceiver<DnsEvent>) {
    let file = DnsFile {
        servers: vec![server.to_string()],
        timeout: 1,
        attempts: 1,
        min_ttl: 1,
        allow_short_intervals: true,
        ..DnsFile::default()
    };
    let (settings, problems) = file.check();
    assert!(problems.is_empty(), "{problems:?}");
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = spawn_resolver(&settings, names, move |event| {
        let _ = tx.send(event);
    })
    .expect("the resolver starts");
    (handle, rx)
}

/// The next event for which `wanted` gives a value, within [`WAIT`];
/// other events are skipped.
async fn wait_for<T>(
    events: &mut mpsc::UnboundedReceiver<DnsEvent>,
    what: &str,
    mut wanted: impl FnMut(&DnsEvent) -> Option<T>,
) -> T {
    let found = timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Some(value) = wanted(&event) {
                return Some(value);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(value)) => value,
        Ok(None) => panic!("the resolver stopped before {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}"),
    }
}

/// The targets published for `gateway`.
fn resolved(gateway: &GatewayName) -> impl FnMut(&DnsEvent) -> Option<Vec<Target>> + '_ {
    move |event| match event {
        DnsEvent::Resolved { name, resolution } if name == gateway => {
            Some(resolution.targets.clone())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_name_asks_for_what_rfc3263_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = SocketAddr::new("127.0.180.53".parse().unwrap(), free_port("127.0.180.53"));
    let _dns = Dnsmasq::start(
        dir.path(),
        1,
        addr,
        "carrier.test",
        1,
        &[
            "--srv-host=_sip._udp.carrier.test,gw1.carrier.test,5071,10,60".into(),
            "--srv-host=_sip._udp.carrier.test,gw2.carrier.test,5072,20,0".into(),
            "--srv-host=_sip._udp.gw2.carrier.test,gw2.carrier.test,5999,0,0".into(),
            "--host-record=gw1.carrier.test,127.0.180.21,::1".into(),
            "--host-record=gw2.carrier.test,127.0.180.22".into(),
            "--host-record=gw3.carrier.test,127.0.180.23".into(),
            "--srv-host=_sip._tcp.carrier.test,gw2.carrier.test,5073,10,0".into(),
            "--srv-host=_sips._tcp.carrier.test,gw3.carrier.test,5074,10,0".into(),
        ],
    );
    let srv = name("carrier.test");
    let host_port = name("gw2.carrier.test:5090");
    let host_with_srv = name("gw2.carrier.test");
    let host_without_srv = name("gw3.carrier.test");
    let missing = name("missing.carrier.test");
    let over_tcp = name("sip:carrier.test;transport=tcp");
    let over_tls = name("sips:carrier.test");
    let tls_without_srv = name("sips:gw3.carrier.test");
    let names = vec![
        srv.clone(),
        host_port.clone(),
        host_with_srv.clone(),
        host_without_srv.clone(),
        missing.clone(),
        over_tcp.clone(),
        over_tls.clone(),
        tls_without_srv.clone(),
    ];
    let (_handle, mut events) = resolver(addr, names.clone());

    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < names.len() {
        let (name, outcome) = wait_for(&mut events, "an event for every name", |event| {
            Some(match event {
                DnsEvent::Resolved { name, resolution } => {
                    (name.clone(), Ok(resolution.targets.clone()))
                }
                DnsEvent::Failed {
                    name, error, kept, ..
                } => {
                    assert_eq!(*kept, None, "{name} never resolved");
                    (name.clone(), Err(error.clone()))
                }
            })
        })
        .await;
        seen.entry(name).or_insert(outcome);
    }

    assert_eq!(
        seen[&srv],
        Ok(vec![
            target("127.0.180.21:5071", 10, 60),
            target("[::1]:5071", 10, 60),
            target("127.0.180.22:5072", 20, 0),
        ]),
        "SRV by priority, weights kept, A and AAAA merged"
    );
    assert_eq!(
        seen[&host_port],
        Ok(vec![target("127.0.180.22:5090", 0, 0)]),
        "a port rules SRV out"
    );
    assert_eq!(
        seen[&host_with_srv],
        Ok(vec![target("127.0.180.22:5999", 0, 0)]),
        "a host without a port takes its SRV records"
    );
    assert_eq!(
        seen[&host_without_srv],
        Ok(vec![target("127.0.180.23:5060", 0, 0)]),
        "no SRV records: the A record on 5060"
    );
    assert_eq!(
        seen[&over_tcp],
        Ok(vec![target("127.0.180.22:5073", 10, 0)]),
        "transport=tcp asks for _sip._tcp"
    );
    assert_eq!(
        seen[&over_tls],
        Ok(vec![target("127.0.180.23:5074", 10, 0)]),
        "sips: asks for _sips._tcp"
    );
    assert_eq!(
        seen[&tls_without_srv],
        Ok(vec![target("127.0.180.23:5061", 0, 0)]),
        "sips: without SRV records: the A record on 5061"
    );
    assert_eq!(
        seen[&missing],
        Err(LookupError::NoSuchName {
            name: "missing.carrier.test".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_s_records_are_followed_and_kept_when_its_dns_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = SocketAddr::new("127.0.180.54".parse().unwrap(), free_port("127.0.180.54"));
    let records = |host: &str, port: u16| {
        vec![
            format!("--srv-host=_sip._udp.carrier.test,gw.carrier.test,{port},10,50"),
            format!("--host-record=gw.carrier.test,{host}"),
        ]
    };
    let mut dns = Dnsmasq::start(
        dir.path(),
        1,
        addr,
        "carrier.test",
        1,
        &records("127.0.180.31", 5071),
    );
    let carrier = name("carrier.test");
    let (handle, mut events) = resolver(addr, vec![carrier.clone()]);
    let first = wait_for(&mut events, "the first resolution", resolved(&carrier)).await;
    assert_eq!(first, [target("127.0.180.31:5071", 10, 50)]);

    // The carrier moves its gateway: same DNS server address, new records.
    dns.kill();
    let _dns = Dnsmasq::start(
        dir.path(),
        2,
        addr,
        "carrier.test",
        1,
        &records("127.0.180.32", 5072),
    );
    let moved = wait_for(
        &mut events,
        "the moved gateway after the TTL",
        |event| match event {
            DnsEvent::Resolved { resolution, .. }
                if resolution.targets != [target("127.0.180.31:5071", 10, 50)] =>
            {
                Some(resolution.targets.clone())
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(moved, [target("127.0.180.32:5072", 10, 50)]);

    // The carrier's DNS goes away: the last good targets stay.
    drop(_dns);
    let (error, kept) = wait_for(&mut events, "a failure report", |event| match event {
        DnsEvent::Failed { error, kept, .. } => Some((error.clone(), kept.clone())),
        DnsEvent::Resolved { .. } => None,
    })
    .await;
    let kept = kept.unwrap_or_else(|| panic!("{error}: the last good targets are kept"));
    assert_eq!(kept.targets, moved, "after {error}");

    // Dropping the handle stops the task, which drops its publisher.
    drop(handle);
    let rest = timeout(WAIT, async { while events.recv().await.is_some() {} }).await;
    assert!(rest.is_ok(), "the task stopped when its handle was dropped");
}
