//! Carrier routing end to end (issue 18): sipp plays three gateways of one
//! trunk — one that never answers, one out of capacity (503 with
//! Retry-After), one that answers — and a caller. Every call reaches the
//! third with the caller seeing one call; the CDR lists each attempt; the
//! 503's gateway is skipped until its Retry-After passes. Health probes
//! take a gateway that does not answer OPTIONS down and bring it back up
//! when it does, as `vigil ctl gateways` shows.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::dnsmasq::{Dnsmasq, free_port};
use support::{Net, Sipp, Vigil, callee_at, caller, scenario};

/// Vigil's config: `pbx` (the caller) routes to `carrier`, whose
/// `outbound:` is `outbound`; CDRs in `dir`.
fn config(net: Net, dir: &Path, outbound: &str) -> String {
    format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: carrier
  - name: carrier
    outbound:
{outbound}
cdr: {{ path: "{cdr}" }}
log: {{ level: "info", format: json }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        cdr = dir.join("cdr.jsonl").display(),
    )
}

fn attempts(cdr: &serde_json::Value) -> Vec<(String, String)> {
    cdr["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let gw = x["gateway"].as_str().unwrap_or_default();
                    let port = gw.rsplit(':').next().unwrap_or_default().to_string();
                    (port, x["outcome"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn calls_fail_over_past_a_silent_and_a_503_gateway_and_the_cdr_lists_each_attempt() {
    let net = Net::new(180);
    let dir = tempfile::tempdir().expect("temp dir");
    let outbound = format!(
        "      gateways:\n\
        \x20       - {{ to: \"{c}:5071\", priority: 1 }}\n\
        \x20       - {{ to: \"{c}:5072\", priority: 2 }}\n\
        \x20       - {{ to: \"{c}:5073\", priority: 3 }}\n\
        \x20     invite_timeout: 2",
        c = net.callee
    );
    let metrics_at = std::net::SocketAddr::new(net.vigil, 9180);
    let text = format!(
        "{}metrics: {{ listen: \"{metrics_at}\" }}\n",
        config(net, dir.path(), &outbound)
    );
    let vigil = Vigil::start_with(net, dir, &text);
    let silent = callee_at(net, 5071, Some(&scenario("uas_silent.xml")), &[]);
    let busy = callee_at(net, 5072, Some(&scenario("uas_503_retry_after.xml")), &[]);
    let answering = callee_at(net, 5073, None, &[]);
    let call = || {
        caller(net, net.caller, None, "0049301234", &["-m", "1"])
            .expect_success(Duration::from_secs(30))
    };
    // 1: silent (2 s) → 503 (rests it 4 s) → answered.
    let started = Instant::now();
    let result = call();
    assert!(
        !result.output.contains("503"),
        "the caller never sees the carrier's 503"
    );
    // 2: the 503's gateway is resting: silent → answered.
    call();
    // 3: after its Retry-After it is tried again.
    let rest_over = started + Duration::from_secs(7);
    std::thread::sleep(rest_over.saturating_duration_since(Instant::now()));
    call();
    let (ok, gateways, err) = vigil.ctl(&["gateways"]);
    assert!(ok, "{err}");
    let gateways: serde_json::Value = serde_json::from_str(&gateways).expect("json");
    assert_eq!(gateways[0]["attempts"], 3, "{gateways}");
    assert_eq!(gateways[0]["failures"], 3);
    assert_eq!(
        gateways[1]["attempts"], 2,
        "skipped while resting: {gateways}"
    );
    assert_eq!(gateways[2]["attempts"], 3);
    let metrics = support::scrape(metrics_at);
    let series = |name: &str, port: u16| {
        support::series(
            &metrics,
            &format!(
                "{name}{{trunk=\"carrier\",gateway=\"{}:{port}\"}}",
                net.callee
            ),
        )
    };
    assert_eq!(series("vigil_gateway_attempts_total", 5071), 3, "{metrics}");
    assert_eq!(series("vigil_gateway_failures_total", 5072), 2);
    assert_eq!(series("vigil_gateway_up", 5073), 1);
    let stopped = vigil.stop();
    silent.stop();
    busy.stop();
    answering.stop();
    let cdrs = stopped.cdrs;
    assert_eq!(cdrs.len(), 3, "{}", stopped.log);
    assert_eq!(
        attempts(&cdrs[0]),
        pairs(&[("5071", "no-response"), ("5072", "503"), ("5073", "200")])
    );
    assert_eq!(
        attempts(&cdrs[1]),
        pairs(&[("5071", "no-response"), ("5073", "200")])
    );
    assert_eq!(
        attempts(&cdrs[2]),
        pairs(&[("5071", "no-response"), ("5072", "503"), ("5073", "200")])
    );
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
        assert_eq!(cdr["gateway"], format!("{}:5073", net.callee));
        assert_eq!(cdr["trunk_out"], "carrier");
    }
    assert!(
        stopped.log.contains("gateway asks for a rest"),
        "{}",
        stopped.log
    );
}

/// The state `vigil ctl gateways` gives the gateway on `port`.
fn state_of(vigil: &Vigil, port: u16) -> String {
    let (ok, out, err) = vigil.ctl(&["gateways"]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).expect("json");
    all.as_array()
        .into_iter()
        .flatten()
        .find(|g| {
            g["address"]
                .as_str()
                .is_some_and(|a| a.ends_with(&format!(":{port}")))
        })
        .and_then(|g| g["state"].as_str())
        .unwrap_or("missing")
        .to_string()
}

fn wait_for_state(vigil: &Vigil, port: u16, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if state_of(vigil, port) == state {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "gateway :{port} is {} after {limit:?}, not {state}:\n{}",
        state_of(vigil, port),
        vigil.log()
    );
}

#[test]
fn probes_take_a_silent_gateway_down_and_bring_it_back_when_it_answers() {
    let net = Net::new(181);
    let dir = tempfile::tempdir().expect("temp dir");
    let outbound = format!(
        "      gateways:\n\
        \x20       - {{ to: \"{c}:5071\" }}\n\
        \x20       - {{ to: \"{c}:5072\" }}\n\
        \x20     allow_short_intervals: true\n\
        \x20     probe: {{ interval: 1, failures: 2, successes: 2 }}",
        c = net.callee
    );
    let text = config(net, dir.path(), &outbound);
    // :5072 answers its probes; nothing listens on :5071 yet.
    let answering = callee_at(net, 5072, Some(&scenario("uas_options.xml")), &[]);
    let vigil = Vigil::start_with(net, dir, &text);
    wait_for_state(&vigil, 5071, "down", Duration::from_secs(10));
    assert_eq!(state_of(&vigil, 5072), "up");
    assert!(vigil.log().contains("gateway down"), "{}", vigil.log());
    let back = callee_at(net, 5071, Some(&scenario("uas_options.xml")), &[]);
    wait_for_state(&vigil, 5071, "up", Duration::from_secs(10));
    assert!(vigil.log().contains("gateway up"), "{}", vigil.log());
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    back.stop();
    answering.stop();
}

/// The address `vigil ctl gateways` gives the trunk's only gateway.
fn addresses(vigil: &Vigil) -> Vec<String> {
    let (ok, out, err) = vigil.ctl(&["gateways"]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).expect("json");
    all.as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_trunk_named_by_domain_follows_its_srv_records() {
    let net = Net::new(182);
    let dir = tempfile::tempdir().expect("temp dir");
    let dns_ip = "127.0.182.53";
    let dns_addr = std::net::SocketAddr::new(dns_ip.parse().expect("ip"), free_port(dns_ip));
    let records = |host: &str, port: u16| {
        vec![
            format!("--srv-host=_sip._udp.carrier.test,gw.carrier.test,{port},10,50"),
            format!("--host-record=gw.carrier.test,{host}"),
        ]
    };
    let mut dns = Dnsmasq::start(
        dir.path(),
        1,
        dns_addr,
        "carrier.test",
        1,
        &records("127.0.182.3", 5071),
    );
    let outbound = "      gateways: [ { to: \"carrier.test\" } ]";
    let text = format!(
        "{}dns: {{ servers: [\"{dns_addr}\"], min_ttl: 1, allow_short_intervals: true }}\n",
        config(net, dir.path(), outbound)
    );
    let first = callee_at(net, 5071, None, &[]);
    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while addresses(&vigil) != ["127.0.182.3:5071"] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(addresses(&vigil), ["127.0.182.3:5071"], "{}", vigil.log());
    caller(net, net.caller, None, "0049301234", &["-m", "1"])
        .expect_success(Duration::from_secs(20));

    // The carrier moves its gateway: new records on the same DNS server.
    dns.kill();
    let _dns = Dnsmasq::start(
        dir.path(),
        2,
        dns_addr,
        "carrier.test",
        1,
        &records("127.0.182.4", 5072),
    );
    let moved = Sipp::spawn(
        "gateway:moved",
        &[
            "-sn".into(),
            "uas".into(),
            "-i".into(),
            "127.0.182.4".into(),
            "-p".into(),
            "5072".into(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while addresses(&vigil) != ["127.0.182.4:5072"] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(addresses(&vigil), ["127.0.182.4:5072"], "{}", vigil.log());
    caller(net, net.caller, None, "0049301234", &["-m", "1"])
        .expect_success(Duration::from_secs(20));
    let stopped = vigil.stop();
    first.stop();
    moved.stop();
    let cdrs = support::read_cdrs(&dir.path().join("cdr.jsonl"));
    let gateways: Vec<&str> = cdrs.iter().filter_map(|c| c["gateway"].as_str()).collect();
    assert_eq!(
        gateways,
        ["127.0.182.3:5071", "127.0.182.4:5072"],
        "{}",
        stopped.log
    );
}

/// The UTC hour now, as the script's `os.date('!%H')` sees it.
fn utc_hour() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    secs / 3600 % 24
}

#[test]
fn a_route_script_picks_trunks_by_prefix_and_time_of_day_and_a_broken_one_leaves_the_routes() {
    let net = Net::new(183);
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("route.lua");
    std::fs::write(
        &script,
        "function route(call)\n\
           if call.callee == '666' then error('a bug in the script') end\n\
           if call.callee == '777' then while true do end end\n\
           if call.callee:sub(1, 2) == '00' then return { trunks = { 'premium' } } end\n\
           local hour = tonumber(os.date('!%H'))\n\
           if hour % 2 == 0 then return { trunks = { 'even' } } end\n\
           return { trunks = { 'odd' } }\n\
         end\n",
    )
    .expect("script");
    let text = format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: odd
    policy: {{ lua: "{script}" }}
  - name: premium
    outbound: {{ to: "127.0.183.3:5081" }}
  - name: even
    outbound: {{ to: "127.0.183.3:5082" }}
  - name: odd
    outbound: {{ to: "127.0.183.3:5083" }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "info", format: json }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        script = script.display(),
        cdr = dir.path().join("cdr.jsonl").display(),
    );
    let uas: Vec<Sipp> = [5081, 5082, 5083]
        .iter()
        .map(|&port| callee_at(net, port, None, &[]))
        .collect();
    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &text);
    let before = utc_hour();
    for number in ["0044123", "555", "666", "777"] {
        caller(net, net.caller, None, number, &["-m", "1"]).expect_success(Duration::from_secs(30));
    }
    let after = utc_hour();
    let stopped = vigil.stop();
    for u in uas {
        u.stop();
    }
    let cdrs = support::read_cdrs(&dir.path().join("cdr.jsonl"));
    let trunks: Vec<&str> = cdrs
        .iter()
        .filter_map(|c| c["trunk_out"].as_str())
        .collect();
    assert_eq!(trunks[0], "premium", "by prefix: {cdrs:?}");
    if before == after {
        let by_time = if before % 2 == 0 { "even" } else { "odd" };
        assert_eq!(trunks[1], by_time, "by the hour ({before} UTC)");
    }
    assert_eq!(
        &trunks[2..],
        ["odd", "odd"],
        "the pbx's route_to when the script fails"
    );
    assert!(
        stopped.log.contains("a bug in the script"),
        "{}",
        stopped.log
    );
}
