//! RFC 4475's 49 torture messages sent to the running daemon: each valid request
//! gets the answer RFC 3261 gives it, each invalid one is rejected (400/505) or
//! dropped, responses to nothing are dropped, and afterwards the switch still
//! answers OPTIONS and completes calls.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use support::{CALLEE_PORT, Net, Vigil, callee, caller, collect, status_of};

/// Each message and the final status Vigil must answer it with (`None`: no reply).
const EXPECTED: &[(&str, Option<u16>)] = &[
    // 3.1.1 valid but tricky
    ("wsinv", Some(481)),   // INVITE with a To tag: no such dialog
    ("intmeth", Some(501)), // extension method
    ("esc01", Some(404)),   // INVITE, no route for this number
    ("escnull", Some(405)), // REGISTER: Vigil is no registrar (yet)
    ("esc02", Some(501)),   // "RE%47IST%45R" is an extension method
    ("lwsdisp", Some(200)), // OPTIONS
    ("longreq", Some(404)),
    ("dblreq", Some(405)), // the REGISTER only; the INVITE after it is not part of it
    ("semiuri", Some(200)),
    ("transports", Some(200)),
    ("mpart01", Some(405)), // MESSAGE outside a dialog
    ("unreason", None),     // a response to nothing
    ("noreason", None),
    // 3.1.2 invalid
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(400)),
    ("baddate", Some(400)),
    ("regbadct", Some(400)),
    ("badaspec", Some(400)),
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(400)),
    ("bigcode", None),
    // 3.2 transaction layer
    ("badbranch", Some(200)),
    // 3.3 application layer
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(405)),
    ("bext01", Some(420)),
    ("invut", Some(415)),
    ("regaut01", Some(405)),
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None),
    ("zeromf", Some(200)),
    ("cparam01", Some(405)),
    ("cparam02", Some(405)),
    ("regescrt", Some(405)),
    ("sdp01", Some(406)),
    // 3.4 RFC 2543
    ("inv2543", Some(404)),
];

fn torture_config(net: Net, cdr: &Path) -> String {
    // The torture messages come from a trunk with no route: their INVITEs are
    // answered, never forwarded. Calls from the caller still go to the callee.
    format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: torture
    inbound: {{ from: ["{stranger}/32"] }}
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: carrier
  - name: carrier
    outbound: {{ to: "{callee}:{CALLEE_PORT}" }}
cdr: {{ path: "{cdr}" }}
log: {{ level: info, format: json }}
"#,
        vigil = net.vigil,
        stranger = net.stranger,
        caller = net.caller,
        callee = net.callee,
        cdr = cdr.display()
    )
}

#[test]
fn every_torture_message_is_handled_as_rfc_4475_says_and_the_switch_keeps_serving() {
    assert_eq!(EXPECTED.len(), 49, "all 49 messages");
    let net = Net::new(20);
    let dir = tempfile::tempdir().expect("dir");
    let config = torture_config(net, &dir.path().join("cdr.jsonl"));
    let mut vigil = Vigil::start_with(net, dir, &config);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rfc4475");

    // One socket per message, all sent at once, then every reply collected.
    let sockets: Vec<(&str, Option<u16>, UdpSocket)> = EXPECTED
        .iter()
        .map(|&(name, expected)| {
            let bytes = std::fs::read(data.join(format!("{name}.dat"))).expect("message");
            let socket = UdpSocket::bind(SocketAddr::new(net.stranger, 0)).expect("bind");
            socket.send_to(&bytes, net.vigil_addr()).expect("send");
            (name, expected, socket)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut mismatches = Vec::new();
    for (name, expected, socket) in &sockets {
        let replies = collect(socket, Duration::from_millis(20));
        let finals: Vec<u16> = replies
            .iter()
            .filter_map(|r| status_of(r))
            .filter(|&s| s >= 200)
            .collect();
        let got = finals.first().copied();
        if got != *expected {
            mismatches.push(format!(
                "{name}: expected {expected:?}, got {got:?} (replies: {:?})",
                replies
                    .iter()
                    .map(|r| r.lines().next().unwrap_or_default())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(
        vigil.is_running(),
        "the torture did not take the switch down"
    );

    // Still serving: OPTIONS and real calls.
    let uas = callee(net, None, &["-m", "5"]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "5", "-r", "10"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert!(stopped.status.success());
    let completed = stopped
        .cdrs
        .iter()
        .filter(|c| c["end_reason"] == "caller-bye")
        .count();
    assert_eq!(completed, 5);
    let no_route = stopped
        .cdrs
        .iter()
        .filter(|c| c["end_reason"] == "no-route")
        .count();
    assert_eq!(
        no_route, 3,
        "esc01, longreq and inv2543 were INVITEs with no route"
    );
}
