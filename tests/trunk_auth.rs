//! A carrier that challenges Vigil's requests (issue 18): a sipp callee
//! answers the B-leg INVITE or the BYE with 401, and checks the credentials
//! of the request sent again with sipp's `verifyauth`; the trunk's `auth`
//! makes them right, and the caller never sees the challenge.

mod support;

use std::time::Duration;

use support::{Net, Vigil, callee, caller, scenario, scenario_expecting};

const AUTH: &str = "    auth: { user: vigil, password: s3cret }\n";

/// The standard config with `auth` on the carrier trunk.
fn start(net: Net, password: &str) -> Vigil {
    let dir = tempfile::tempdir().expect("dir");
    let text = net.config(&dir.path().join("cdr.jsonl"), "").replace(
        &format!("    outbound: {{ to: \"{}:5080\" }}\n", net.callee),
        &format!(
            "    outbound: {{ to: \"{}:5080\" }}\n{}",
            net.callee,
            AUTH.replace("s3cret", password)
        ),
    );
    assert!(text.contains("auth:"), "{text}");
    Vigil::start_with(net, dir, &text)
}

#[test]
fn a_challenged_bye_is_sent_again_with_the_trunks_credentials() {
    let net = Net::new(220);
    let vigil = start(net, "s3cret");
    let carrier = callee(net, Some(&scenario("uas_challenge_bye.xml")), &["-m", "1"]);
    caller(net, net.caller, None, "4930", &["-m", "1", "-d", "300"])
        .expect_success(Duration::from_secs(30));
    carrier.expect_success(Duration::from_secs(30));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1);
    assert_eq!(stopped.cdrs[0]["end_reason"], "caller-bye");
}

#[test]
fn wrong_credentials_are_refused_by_the_carrier() {
    let net = Net::new(221);
    let _vigil = start(net, "wrong");
    let carrier = callee(net, Some(&scenario("uas_challenge_bye.xml")), &["-m", "1"]);
    caller(net, net.caller, None, "4930", &["-m", "1", "-d", "300"])
        .expect_success(Duration::from_secs(30));
    let r = carrier.wait(Duration::from_secs(30));
    assert!(
        !r.status.success(),
        "sipp's verifyauth refused them: {}",
        r.output
    );
}

#[test]
fn a_challenged_invite_is_sent_again_and_the_caller_sees_a_normal_call() {
    let net = Net::new(222);
    let vigil = start(net, "s3cret");
    let carrier = callee(
        net,
        Some(&scenario("uas_challenge_invite.xml")),
        &["-m", "1"],
    );
    let call = caller(
        net,
        net.caller,
        None,
        "4930",
        &["-m", "1", "-d", "300", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(30));
    assert!(
        !call.messages.contains("SIP/2.0 401") && !call.messages.contains("WWW-Authenticate"),
        "the carrier's challenge reached the caller:\n{}",
        call.messages
    );
    carrier.expect_success(Duration::from_secs(30));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye");
    let gateway = format!("{}:5080", net.callee);
    assert_eq!(cdr["gateway"], gateway.as_str());
    // The challenge is part of the one attempt: one gateway, answered.
    assert_eq!(
        cdr["attempts"],
        serde_json::json!([{ "trunk": "carrier", "gateway": gateway, "outcome": "200" }]),
        "{cdr}"
    );
}

#[test]
fn a_refused_invite_challenge_gives_the_caller_403_never_the_challenge() {
    let net = Net::new(223);
    let vigil = start(net, "wrong");
    let carrier = callee(
        net,
        Some(&scenario("uas_challenge_invite.xml")),
        &["-m", "1"],
    );
    let expects_403 = scenario_expecting(vigil.dir.path(), "uac_rejected.xml", 403);
    let call = caller(
        net,
        net.caller,
        Some(&expects_403),
        "4930",
        &["-m", "1", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(30));
    assert!(
        !call.messages.contains("SIP/2.0 401") && !call.messages.contains("WWW-Authenticate"),
        "the carrier's challenge reached the caller:\n{}",
        call.messages
    );
    let r = carrier.wait(Duration::from_secs(30));
    assert!(
        !r.status.success(),
        "sipp's verifyauth refused the credentials: {}",
        r.output
    );
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["sip_code"], 403);
    assert_eq!(cdr["gateway"], serde_json::Value::Null);
    assert_eq!(cdr["attempts"][0]["outcome"], "403", "{cdr}");
}
