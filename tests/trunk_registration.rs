//! Vigil as a carrier's client (issue 18): Kamailio (`auth` + `registrar`
//! modules, a plain-text password) as the carrier; Vigil registers with it
//! answering its digest challenge, a call Kamailio sends to the registered
//! contact is admitted as that trunk's and reaches a sipp callee, and a
//! shutdown unregisters Vigil; the same over TCP (issue 19), the registrar
//! named by a `;transport=tcp` URI. Everything on 127.0.218.0/24 to
//! 127.0.220.0/24.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::kamailio::Kamailio;
use support::{Net, Sipp, Vigil, callee, exchange, options_request, status_of};

const NET: u8 = 218;

fn carrier_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, NET, 20))
}

fn config(net: Net, dir: &std::path::Path, password: &str) -> String {
    format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: office
  - name: carrier
    register:
      user: "4930"
      password: "{password}"
      registrar: "{carrier}:5070"
      expires: 60
    route_to: office
  - name: office
    outbound: {{ to: "{callee}:5080" }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "info", format: json }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        callee = net.callee,
        carrier = carrier_ip(),
        cdr = dir.join("cdr.jsonl").display(),
    )
}

/// Polls `vigil ctl registrations trunks` until the carrier's registration
/// is in `state`; returns it.
fn wait_state(vigil: &Vigil, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out, err) = vigil.ctl(&["registrations", "trunks"]);
        assert!(ok, "vigil ctl registrations trunks: {err}");
        let all: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        if let Some(reg) = all
            .as_array()
            .and_then(|a| a.iter().find(|r| r["trunk"] == "carrier"))
            && reg["state"] == state
        {
            return reg.clone();
        }
        last = out;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the registration never became {state}: {last}\n{}",
        vigil.log()
    );
}

/// A caller of the carrier's (sipp at `ip`) dialling the AOR through
/// `carrier`: one call, hung up after half a second.
fn carrier_caller(name: &str, ip: String, carrier: SocketAddr) -> Sipp {
    Sipp::spawn(
        name,
        &[
            "-sn",
            "uac",
            "-i",
            &ip,
            "-p",
            "5062",
            "-s",
            "4930",
            "-m",
            "1",
            "-d",
            "500",
            "-timeout",
            "30s",
            "-timeout_error",
            &carrier.to_string(),
        ]
        .map(String::from),
    )
}

/// What the carrier answers a request for the AOR: relayed to the registered
/// contact (Vigil answers OPTIONS 200), or 404 with no one registered.
fn carrier_reaches_vigil() -> Option<u16> {
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, NET, 6)), 0);
    let probe = String::from_utf8(options_request(from.ip(), "aor-probe"))
        .expect("utf8")
        .replacen(
            "OPTIONS sip:vigil@127.0.0.1",
            &format!("OPTIONS sip:4930@{}:5070", carrier_ip()),
            1,
        );
    exchange(
        from,
        SocketAddr::new(carrier_ip(), 5070),
        probe.as_bytes(),
        Duration::from_millis(500),
    )
    .iter()
    .filter_map(|r| status_of(r))
    .find(|s| *s >= 200)
}

#[test]
fn vigil_registers_with_kamailio_and_takes_the_calls_it_sends() {
    let net = Net::new(NET);
    let kamailio = Kamailio::start(SocketAddr::new(carrier_ip(), 5070), "s3cret");
    let dir = tempfile::tempdir().expect("dir");
    let text = config(net, dir.path(), "s3cret");
    let vigil = Vigil::start_with(net, dir, &text);

    let reg = wait_state(&vigil, "registered");
    assert_eq!(reg["last_status"], 200, "{reg}");
    assert_eq!(reg["aor"], format!("sip:4930@{}", carrier_ip()));
    assert!(
        reg["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 60),
        "{reg}"
    );
    assert_eq!(carrier_reaches_vigil(), Some(200), "Kamailio found Vigil");

    // A caller of the carrier's dials the AOR: Kamailio looks it up and
    // relays the call to Vigil, which routes it to the office's sipp.
    let office = callee(net, None, &[]);
    let caller = carrier_caller(
        "carrier-caller",
        format!("127.0.{NET}.5"),
        SocketAddr::new(carrier_ip(), 5070),
    );
    caller.expect_success(Duration::from_secs(30));
    office.stop();

    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let cdr = stopped
        .cdrs
        .iter()
        .find(|c| c["callee"] == "4930")
        .unwrap_or_else(|| panic!("a CDR for the call: {:?}", stopped.cdrs));
    assert_eq!(
        (cdr["trunk_in"].as_str(), cdr["trunk_out"].as_str()),
        (Some("carrier"), Some("office")),
        "{cdr}"
    );
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    // The shutdown unregistered Vigil: the carrier no longer finds it.
    assert_eq!(carrier_reaches_vigil(), Some(404), "{}", kamailio.log());
}

/// A wrong password: Kamailio challenges the answered REGISTER again, the
/// registration fails with 401, backs off, and the failure is counted.
#[test]
fn a_wrong_password_fails_and_backs_off() {
    let net = Net::new(NET + 1);
    let carrier = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, NET + 1, 20)), 5070);
    let _kamailio = Kamailio::start(carrier, "s3cret");
    let dir = tempfile::tempdir().expect("dir");
    let text = config(net, dir.path(), "wrong")
        .replace(&carrier_ip().to_string(), &carrier.ip().to_string());
    let vigil = Vigil::start_with(net, dir, &text);
    let reg = wait_state(&vigil, "failed");
    assert_eq!(reg["last_status"], 401, "{reg}");
    assert_eq!(reg["failures"], 1, "{reg}");
    assert!(
        reg["next_in"].as_u64().is_some_and(|s| s > 20 && s <= 30),
        "back-off: {reg}"
    );
}

/// Over TCP (issue 19): the registrar written as a `;transport=tcp` URI
/// gets its REGISTERs on a connection Vigil opens, with a Contact that asks
/// for TCP; Kamailio then sends the carrier's call to Vigil over TCP too.
#[test]
fn vigil_registers_over_tcp_and_takes_the_call_over_tcp() {
    let net = Net::new(NET + 2);
    let carrier = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, NET + 2, 20)), 5070);
    let kamailio = Kamailio::start(carrier, "s3cret");
    let dir = tempfile::tempdir().expect("dir");
    let text = config(net, dir.path(), "s3cret")
        .replace(
            &format!("registrar: \"{}:5070\"", carrier_ip()),
            &format!("registrar: \"sip:{}:5070;transport=tcp\"", carrier.ip()),
        )
        .replace(
            &format!("listen: [\"udp:{}:5060\"]", net.vigil),
            &format!(
                "listen: [\"udp:{v}:5060\", \"tcp:{v}:5060\"]",
                v = net.vigil
            ),
        );
    assert!(
        text.contains("transport=tcp") && text.contains("\"tcp:"),
        "{text}"
    );
    let vigil = Vigil::start_with(net, dir, &text);
    let reg = wait_state(&vigil, "registered");
    assert_eq!(reg["last_status"], 200, "{reg}");

    let (ok, status, err) = vigil.ctl(&["status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let tcp = status["connections"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["transport"] == "tcp"))
        .unwrap_or_else(|| panic!("TCP connections in {status}"));
    assert!(
        tcp["connected"].as_u64() >= Some(1),
        "Vigil connected: {status}"
    );

    let office = callee(net, None, &[]);
    let caller = carrier_caller(
        "carrier-caller-tcp",
        format!("127.0.{}.5", NET + 2),
        carrier,
    );
    caller.expect_success(Duration::from_secs(30));
    office.stop();
    // Kamailio reached the registered Contact (`;transport=tcp`) on a
    // connection of its own to Vigil's TCP listener.
    let (ok, status, err) = vigil.ctl(&["status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert!(
        status["connections"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["transport"] == "tcp"))
            .is_some_and(|tcp| tcp["accepted"].as_u64() >= Some(1)),
        "the call came over TCP: {status}\n{}",
        kamailio.log()
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let cdr = stopped
        .cdrs
        .iter()
        .find(|c| c["callee"] == "4930")
        .unwrap_or_else(|| panic!("a CDR for the call: {:?}\n{}", stopped.cdrs, kamailio.log()));
    assert_eq!(cdr["trunk_in"], "carrier", "{cdr}");
}
