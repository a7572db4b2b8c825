use std::path::Path;
use std::time::{Duration, Instant};

use super::probe::{ProbeEvent, Prober};
use super::*;
use crate::config::Config;
use crate::sip::{Message, Method, Response, decode};

fn config(outbound: &str) -> Config {
    let text = format!(
        "listen: [\"udp:127.0.0.1:5060\"]\n\
         cdr: {{ path: /tmp/cdr.jsonl }}\n\
         trunks:\n\
         \x20 - name: carrier\n    outbound:\n{outbound}\n\
         \x20 - name: backup\n    outbound: {{ to: \"127.0.0.9:5060\" }}\n"
    );
    Config::parse(&text, Path::new("vigil.yaml")).expect("valid config")
}

const THREE: &str = "      gateways:\n\
    \x20       - { to: \"127.0.0.1:5071\", priority: 1 }\n\
    \x20       - { to: \"127.0.0.1:5072\", priority: 2 }\n\
    \x20       - { to: \"127.0.0.1:5073\", priority: 3 }\n\
    \x20     allow_short_intervals: true\n\
    \x20     probe: { interval: 1, failures: 2, successes: 1 }";

fn ports(plan: &[Arc<Gateway>]) -> Vec<u16> {
    plan.iter().map(|g| g.addr.port()).collect()
}

#[test]
fn a_plan_follows_priority_then_the_next_trunk() {
    let c = config(THREE);
    let now = Instant::now();
    let table = Gateways::build(&c, None, now, &Resolved::new());
    let mut ids = IdGen::seeded(0, 1);
    let plan = table.plan(&[0, 1], &mut ids, |_| false);
    assert_eq!(ports(&plan), [5071, 5072, 5073, 5060]);
    assert_eq!(&*plan[3].trunk, "backup");
    let plan = table.plan(&[0], &mut ids, |a| a.port() == 5071);
    assert_eq!(
        ports(&plan),
        [5072, 5073],
        "Vigil's own address is never tried"
    );
}

#[test]
fn equal_priorities_share_calls_by_weight() {
    let c = config(
        "      gateways:\n\
         \x20       - { to: \"127.0.0.1:5071\", weight: 90 }\n\
         \x20       - { to: \"127.0.0.1:5072\", weight: 10 }\n\
         \x20       - { to: \"127.0.0.1:5073\", weight: 0 }",
    );
    let now = Instant::now();
    let table = Gateways::build(&c, None, now, &Resolved::new());
    let mut ids = IdGen::seeded(0, 7);
    let mut first = [0u32; 3];
    for _ in 0..2000 {
        let plan = table.plan(&[0], &mut ids, |_| false);
        assert_eq!(plan.len(), 3, "every gateway stays in the plan");
        assert_eq!(plan[2].addr.port(), 5073, "weight 0 goes last");
        first[usize::from(plan[0].addr.port() - 5071)] += 1;
    }
    assert!((1700..=1900).contains(&first[0]), "90 % first: {first:?}");
    assert!((100..=300).contains(&first[1]), "10 % first: {first:?}");
    assert_eq!(first[2], 0);
}

fn tried(table: &Gateways, now: Instant, max: u32) -> Vec<u16> {
    let mut ids = IdGen::seeded(0, 1);
    let plan = table.plan(&[0], &mut ids, |_| false);
    let Some((first, mut rest)) = Attempts::start(plan, now, max) else {
        return Vec::new();
    };
    let mut ports = vec![first.addr.port()];
    while let Some(g) = rest.next(now) {
        ports.push(g.addr.port());
    }
    ports
}

#[test]
fn a_resting_gateway_is_skipped_until_its_retry_after_passes() {
    let c = config(THREE);
    let now = Instant::now();
    let table = Gateways::build(&c, None, now, &Resolved::new());
    assert_eq!(tried(&table, now, 10), [5071, 5072, 5073]);
    assert_eq!(tried(&table, now, 2), [5071, 5072], "max_attempts");
    table.of_trunk(0)[0].rest(now, 30);
    assert_eq!(tried(&table, now, 10), [5072, 5073]);
    assert_eq!(
        tried(&table, now + Duration::from_secs(29), 10),
        [5072, 5073]
    );
    assert_eq!(
        tried(&table, now + Duration::from_secs(30), 10),
        [5071, 5072, 5073]
    );
    // All resting: the call still tries them (better than refusing it).
    for g in table.of_trunk(0) {
        g.rest(now, 60);
    }
    assert_eq!(tried(&table, now, 10), [5071, 5072, 5073]);
}

fn answer(request: &crate::sip::Request, status: u16) -> Response {
    let text = String::from_utf8(request.response(status).encode()).expect("utf-8");
    match decode(text.as_bytes()) {
        Ok(Message::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn probes_take_a_silent_gateway_down_and_an_answering_one_up() {
    let c = config(THREE);
    let t0 = Instant::now();
    let table = Gateways::build(&c, None, t0, &Resolved::new());
    let mut prober = Prober::default();
    prober.follow(&table, t0);
    let mut ids = IdGen::seeded(0, 3);
    let mut events: Vec<ProbeEvent> = Vec::new();
    let via = |_| Some("127.0.0.1:5060".parse().expect("addr"));
    let sent = prober.handle_timeout(t0, &table, &mut ids, via, &mut events);
    assert_eq!(sent.len(), 3, "every probed gateway at once");
    assert!(sent.iter().all(|p| p.request.method == Method::Options));
    // 5071 and 5072 answer (404 counts: no ok_codes), 5073 stays silent.
    for p in &sent {
        if p.to.port() != 5073 {
            let status = if p.to.port() == 5071 { 200 } else { 404 };
            assert!(prober.on_response(t0, &answer(&p.request, status), &table, &mut events));
        }
    }
    let mut now = t0;
    for _ in 0..2 {
        now += Duration::from_secs(1);
        for p in prober.handle_timeout(now, &table, &mut ids, via, &mut events) {
            if p.to.port() != 5073 {
                prober.on_response(now, &answer(&p.request, 200), &table, &mut events);
            }
        }
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].gateway.addr.port(), 5073);
    assert_eq!(events[0].change, HealthChange::WentDown);
    assert_eq!(
        tried(&table, now, 10),
        [5071, 5072],
        "a down gateway is skipped"
    );
    let snapshot = table.snapshot(now);
    assert_eq!(snapshot[2].state, "down");
    assert_eq!(snapshot[2].last_probe_status, None);
    assert_eq!(snapshot[1].last_probe_status, Some(200));
    // It answers again: up after `successes` (1) answers.
    events.clear();
    now += Duration::from_secs(1);
    for p in prober.handle_timeout(now, &table, &mut ids, via, &mut events) {
        prober.on_response(now, &answer(&p.request, 200), &table, &mut events);
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].change, HealthChange::CameUp);
    // A rebuilt table keeps the health of the gateways that remain.
    for p in prober.handle_timeout(
        now + Duration::from_secs(1),
        &table,
        &mut ids,
        via,
        &mut events,
    ) {
        let _ = p;
    }
    let rebuilt = Gateways::build(&c, Some(&table), now, &Resolved::new());
    let failures = |t: &Gateways| t.snapshot(now)[2].probe_failures_in_row;
    assert_eq!(failures(&rebuilt), failures(&table));
    assert_eq!(rebuilt.snapshot(now)[1].last_probe_status, Some(200));
}

#[test]
fn a_trunk_without_probe_is_never_probed() {
    let c = config("      to: \"127.0.0.1:5071\"");
    let now = Instant::now();
    let table = Gateways::build(&c, None, now, &Resolved::new());
    let mut prober = Prober::default();
    prober.follow(&table, now);
    assert_eq!(prober.poll_timeout(), None);
}

#[test]
fn a_gateway_named_by_domain_becomes_what_dns_gave_it() {
    use crate::dns::{Gateway as DnsGateway, Target};
    let c = config(
        "      gateways:\n\
         \x20       - { to: \"carrier.example\", priority: 1 }\n\
         \x20       - { to: \"127.0.0.1:5079\", priority: 2 }",
    );
    let now = Instant::now();
    let empty = Gateways::build(&c, None, now, &Resolved::new());
    let mut ids = IdGen::seeded(0, 1);
    assert_eq!(
        ports(&empty.plan(&[0], &mut ids, |_| false)),
        [5079],
        "nothing to try at a name DNS has not answered"
    );
    let DnsGateway::Name(name) =
        &c.trunks[0].outbound.as_ref().expect("outbound").gateways[0].target
    else {
        panic!("a name");
    };
    let target = |port, priority, weight| Target {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        priority,
        weight,
    };
    let mut resolved = Resolved::new();
    resolved.insert(
        name.clone(),
        vec![
            target(5071, 10, 100),
            target(5072, 10, 0),
            target(5073, 20, 5),
        ],
    );
    let table = Gateways::build(&c, Some(&empty), now, &resolved);
    assert_eq!(table.generation, empty.generation + 1);
    for _ in 0..20 {
        let plan = ports(&table.plan(&[0], &mut ids, |_| false));
        assert_eq!(
            plan,
            [5071, 5072, 5073, 5079],
            "SRV priority, then weight, inside the config's priority"
        );
    }
}
