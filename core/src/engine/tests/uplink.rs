//! The trunks' registrations run through the engine (issue 18): the REGISTER
//! leaves from the worker's socket with its address as Contact, the
//! registrar's answer comes back through the transaction layer, silence backs
//! off, and a call the carrier sends to the registered contact is admitted as
//! the trunk's.

use super::*;
use crate::uplink::registration::RegState;

const REGISTRAR: &str = "127.0.0.20:5070";

const UPLINK_CONFIG: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: carrier
    register: { user: "4930", password: s3cret, registrar: "127.0.0.20:5070", expires: 300 }
    route_to: callee
  - name: callee
    outbound: { to: "127.0.0.3:5080" }
cdr: { path: "cdr.jsonl" }
"#;

fn uplink_harness() -> Harness {
    let mut h = Harness::with_deps(UPLINK_CONFIG, |d| d.uplink = true);
    let now = h.now;
    h.engine.start_registrations(now);
    h.collect();
    h
}

#[test]
fn vigil_registers_and_the_carriers_calls_to_its_contact_are_the_trunks() {
    let mut h = uplink_harness();
    let register = h.take_one_request(REGISTRAR, Method::Register);
    assert_eq!(
        register.headers.get(&HeaderName::Contact),
        Some("<sip:4930@127.0.0.1:5060>")
    );
    h.receive_from(REGISTRAR, &answer(&register, 200, "reg", ""), true);
    let regs = h.engine.registrations(h.now);
    assert_eq!(regs[0].state, RegState::Registered);
    assert_eq!(regs[0].expires_in, Some(300));

    // The carrier calls the registered contact from the registrar.
    let call = invite("from-carrier", "4930", SDP).replace("127.0.0.2:5061", REGISTRAR);
    h.receive_from(REGISTRAR, &call, true);
    assert_eq!(h.statuses(REGISTRAR), vec![100]);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(b.uri.to_string(), "sip:4930@127.0.0.3:5080");
    // Another user at the registrar's address is no registration of Vigil's.
    let stranger = invite("stranger", "4931", SDP).replace("127.0.0.2:5061", REGISTRAR);
    h.receive_from(REGISTRAR, &stranger, true);
    assert_eq!(h.statuses(REGISTRAR), vec![100, 403]);

    // Refreshed a minute before expiry.
    h.advance(Duration::from_secs(240));
    let refresh = h.take_one_request(REGISTRAR, Method::Register);
    assert_eq!(refresh.call_id, register.call_id);
}

#[test]
fn an_unanswered_register_backs_off_and_counts_a_failure() {
    let mut h = uplink_harness();
    h.take(REGISTRAR);
    h.advance(Duration::from_secs(33));
    let regs = h.engine.registrations(h.now);
    assert_eq!((regs[0].state, regs[0].failures), (RegState::BackingOff, 1));
    assert_eq!(
        h.engine
            .metrics
            .trunk_registration_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    h.take(REGISTRAR);
    h.advance(Duration::from_secs(30));
    let again = h.take_one_request(REGISTRAR, Method::Register);
    assert_eq!(again.cseq.seq, 2);
}

#[test]
fn a_shutdown_unregisters() {
    let mut h = uplink_harness();
    let register = h.take_one_request(REGISTRAR, Method::Register);
    h.receive_from(REGISTRAR, &answer(&register, 200, "reg", ""), true);
    let now = h.now;
    h.engine.begin_shutdown(now);
    h.collect();
    let bye = h.take_one_request(REGISTRAR, Method::Register);
    assert_eq!(bye.headers.get(&HeaderName::Expires), Some("0"));
    assert_eq!(h.engine.requests_in_flight(), 1, "the drain waits for it");
}
