//! A carrier that challenges Vigil's BYE (issue 18): a sipp callee answers
//! the BYE with 401 and checks the credentials of the BYE sent again with
//! sipp's `verifyauth`; the trunk's `auth` makes them right, and the caller
//! never sees the challenge. (The INVITE's own challenge is the B-leg INVITE
//! path's, wired separately.)

mod support;

use std::time::Duration;

use support::{Net, Vigil, callee, caller, scenario};

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
