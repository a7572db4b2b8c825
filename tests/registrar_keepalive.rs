//! The registrar and NAT keep-alive end to end: sipp registers with digest (and
//! fails with a wrong password); test sockets registered as phones count the
//! keep-alives they get, check period and payload, see them stop when the
//! binding goes; an OPTIONS contact that never answers is dropped; a call
//! reaches a registered phone; registrations survive SIGKILL.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::phone::Phone;
use support::{Net, Sipp, Vigil, callee, caller, scenario};

/// Lab settings: keep-alive every 2 s, registrations from 1 s, MD5 first for sipp.
fn registrar(extra: &str) -> String {
    format!(
        "registrar: {{ domain: vigil.local, db: \"{{dir}}/registrar.db\", min_expires: 1, digest_algorithms: [MD5, SHA-256] }}\n\
users:\n  - {{ user: \"1001\", password: secret1001 }}\n  - {{ user: \"1002\", password: secret1002 }}\n  - {{ user: \"1003\", password: secret1003 }}\n\
nat_keepalive: {{ period: 2, allow_short_intervals: true{extra} }}\n"
    )
}

#[test]
fn sipp_registers_with_digest_and_a_wrong_password_is_refused() {
    let net = Net::new(40);
    let vigil = Vigil::start(net, &registrar(""));
    let args = |password: &str| {
        [
            "-sf",
            &scenario("register.xml").display().to_string(),
            "-au",
            "1001",
            "-ap",
            password,
            "-set",
            "expires",
            "300",
            "-s",
            "1001",
            "-i",
            &net.caller.to_string(),
            "-p",
            "5065",
            "-m",
            "1",
            "-timeout",
            "10s",
            "-timeout_error",
            &net.vigil_addr().to_string(),
        ]
        .map(String::from)
    };
    Sipp::spawn("register", &args("secret1001")).expect_success(Duration::from_secs(15));
    let wrong = Sipp::spawn("wrong password", &args("wrong")).wait(Duration::from_secs(15));
    assert!(
        !wrong.status.success(),
        "a wrong password must not get a 200"
    );
    let stopped = vigil.stop();
    assert!(stopped.log.contains("registered"), "{}", stopped.log);
    assert!(stopped.log.contains("REGISTER refused"), "{}", stopped.log);
}

#[test]
fn registered_contacts_get_hello_every_period_at_their_source_address() {
    let net = Net::new(41);
    let vigil = Vigil::start(net, &registrar(""));
    let mut phones: Vec<Phone> = [
        ("1001", "secret1001"),
        ("1002", "secret1002"),
        ("1003", "secret1003"),
    ]
    .into_iter()
    .map(|(u, p)| Phone::new(net.caller, u, p))
    .collect();
    for phone in &mut phones {
        assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    }
    let heard: Vec<Vec<(Duration, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = phones
            .iter()
            .map(|p| s.spawn(|| p.keepalives(Duration::from_millis(6_500))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("listener"))
            .collect()
    });
    for got in &heard {
        assert_eq!(got.len(), 3, "one every 2 s for 6.5 s: {got:?}");
        assert!(got.iter().all(|(_, payload)| payload == b"HELLO"));
        for pair in got.windows(2) {
            let interval = pair[1].0 - pair[0].0;
            assert!(
                interval > Duration::from_millis(1_700) && interval < Duration::from_millis(2_300),
                "interval {interval:?}"
            );
        }
    }
    vigil.stop();
}

#[test]
fn an_empty_message_sends_no_keepalive() {
    let net = Net::new(42);
    let vigil = Vigil::start(net, &registrar(", message: \"\""));
    let mut phone = Phone::new(net.caller, "1001", "secret1001");
    assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    assert!(phone.keepalives(Duration::from_secs(5)).is_empty());
    vigil.stop();
}

#[test]
fn unregistered_and_expired_contacts_stop_getting_keepalives() {
    let net = Net::new(43);
    let vigil = Vigil::start(net, &registrar(""));
    let mut leaving = Phone::new(net.caller, "1001", "secret1001");
    let mut expiring = Phone::new(net.caller, "1002", "secret1002");
    assert_eq!(leaving.register(net.vigil_addr(), 300), 200);
    assert_eq!(expiring.register(net.vigil_addr(), 5), 200);
    assert_eq!(leaving.register(net.vigil_addr(), 0), 200, "unregister");
    let (left, expired) = std::thread::scope(|s| {
        let a = s.spawn(|| leaving.keepalives(Duration::from_secs(9)));
        let b = s.spawn(|| expiring.keepalives(Duration::from_secs(9)));
        (a.join().expect("a"), b.join().expect("b"))
    });
    assert!(left.is_empty(), "unregistered: {left:?}");
    assert_eq!(
        expired.len(),
        2,
        "at 2 and 4 s, then the 5 s registration expires: {expired:?}"
    );
    assert!(expired.iter().all(|(at, _)| *at < Duration::from_secs(5)));
    vigil.stop();
}

#[test]
fn an_options_contact_that_never_answers_is_dropped() {
    let net = Net::new(44);
    let vigil = Vigil::start(net, &registrar(", mode: options, options_failures: 2"));
    let mut phone = Phone::new(net.caller, "1001", "secret1001");
    assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    let pings = phone.keepalives(Duration::from_secs(9));
    let options: Vec<&(Duration, Vec<u8>)> = pings
        .iter()
        .filter(|(_, p)| p.starts_with(b"OPTIONS "))
        .collect();
    assert_eq!(
        options.len(),
        2,
        "two unanswered pings, then the contact is gone: {}",
        options.len()
    );
    let stopped = vigil.stop();
    assert!(
        stopped.log.contains("does not answer OPTIONS keep-alives"),
        "{}",
        stopped.log
    );
}

#[test]
fn a_call_reaches_a_registered_phone() {
    let net = Net::new(45);
    let vigil = Vigil::start(net, &registrar(""));
    let phone_ip = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 45, 5));
    let register = [
        "-sf",
        &scenario("register.xml").display().to_string(),
        "-au",
        "1002",
        "-ap",
        "secret1002",
        "-set",
        "expires",
        "300",
        "-s",
        "1002",
        "-i",
        &phone_ip.to_string(),
        "-p",
        "5090",
        "-m",
        "1",
        "-timeout",
        "10s",
        "-timeout_error",
        &net.vigil_addr().to_string(),
    ]
    .map(String::from);
    Sipp::spawn("register 1002", &register).expect_success(Duration::from_secs(15));
    // The phone answers calls on the socket it registered from.
    let phone = Sipp::spawn(
        "phone 1002",
        &[
            "-sn",
            "uas",
            "-i",
            &phone_ip.to_string(),
            "-p",
            "5090",
            "-m",
            "1",
            "-aa",
        ]
        .map(String::from),
    );
    std::thread::sleep(Duration::from_millis(300));
    caller(net, net.caller, None, "1002", &["-m", "1", "-d", "500"])
        .expect_success(Duration::from_secs(20));
    phone.expect_success(Duration::from_secs(10));
    let cdrs = vigil.stop().cdrs;
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0]["trunk_out"], "user:1002", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["end_reason"], "caller-bye", "{}", cdrs[0]);
    let _ = callee; // the trunk callee is not involved
}

#[test]
fn registrations_survive_sigkill_and_keepalives_resume_at_once() {
    let net = Net::new(46);
    let vigil = Vigil::start(net, &registrar(""));
    let mut phone = Phone::new(net.caller, "1001", "secret1001");
    assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    std::thread::sleep(Duration::from_secs(2));
    let dir = vigil.kill_hard();
    let vigil = Vigil::restart(net, dir);
    // `registered_ago` counts from the REGISTER, not from the restart.
    let (ok, listed, stderr) = vigil.ctl(&["registrations"]);
    assert!(ok, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let ago = listed[0]["registered_ago"].as_f64().unwrap_or(0.0);
    assert!(ago >= 2.0, "registered 2 s before the restart: {listed}");
    // The first keep-alive goes at load, the next one a period later: both
    // within 3.5 s, without the phone registering again.
    let got = phone.keepalives(Duration::from_millis(3_500));
    assert!(got.len() >= 2, "keep-alives resumed: {got:?}");
    assert!(got.iter().all(|(_, p)| p == b"HELLO"));
    vigil.stop();
}

#[test]
fn a_keepalive_tick_script_skips_one_contact_and_sends_its_own_payload_to_another() {
    let net = Net::new(55);
    let scripts = tempfile::tempdir().expect("dir");
    let script = scripts.path().join("keepalive.lua");
    std::fs::write(
        &script,
        r#"
        function keepalive_tick(contact)
          if contact.user == "1002" then return "skip" end
          if contact.user == "1003" then return { payload = "PING " .. contact.sent } end
        end
        "#,
    )
    .expect("write script");
    let vigil = Vigil::start(
        net,
        &format!(
            "{}policy: {{ lua: \"{}\" }}\n",
            registrar(""),
            script.display()
        ),
    );
    let mut phones: Vec<Phone> = [
        ("1001", "secret1001"),
        ("1002", "secret1002"),
        ("1003", "secret1003"),
    ]
    .into_iter()
    .map(|(u, p)| Phone::new(net.caller, u, p))
    .collect();
    for phone in &mut phones {
        assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    }
    let heard: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = phones
            .iter()
            .map(|p| s.spawn(|| p.keepalives(Duration::from_millis(4_500))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("listener")
                    .into_iter()
                    .map(|(_, payload)| payload)
                    .collect()
            })
            .collect()
    });
    assert_eq!(heard[0], vec![b"HELLO".to_vec(); 2], "the default for 1001");
    assert!(heard[1].is_empty(), "1002 is skipped: {:?}", heard[1]);
    assert_eq!(heard[2].len(), 2, "{:?}", heard[2]);
    assert!(
        heard[2]
            .iter()
            .all(|p| p.starts_with(b"PING ") && p.len() > 5),
        "1003 gets the script's payload: {:?}",
        heard[2]
    );
    vigil.stop();
}
