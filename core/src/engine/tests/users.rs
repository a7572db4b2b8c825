//! Calls from and to registered users: digest on the caller's INVITE (407),
//! routing to a user's registered contact at its NAT address, and a user who is
//! not registered (480).

use super::*;
use crate::registrar::digest::DigestAuth;
use crate::registrar::location::{Binding, Location, LocationView, Target};
use crate::sip::digest_response;
use crate::sip::{DigestAlgorithm, DigestCredentials, Uri};

const USERS: &str = "registrar: { domain: vigil.local }\nusers:\n  - { user: \"1001\", password: secret1001, route_to: carrier }\n  - { user: \"1002\", password: secret1002 }\n";
const PHONE: &str = "198.51.100.7:33000";

fn harness() -> (Harness, Location) {
    let view = Arc::new(LocationView::default());
    let auth = DigestAuth::new(
        "vigil.local",
        b"k",
        Instant::now(),
        Duration::from_secs(300),
    );
    let h = Harness::with_deps(&format!("{CONFIG}{USERS}"), |deps| {
        deps.users = Some(Users {
            location: view.clone(),
            auth,
        })
    });
    (h, Location::new(view))
}

fn user_invite(call_id: &str, callee: &str, proxy_authorization: Option<&str>) -> String {
    let auth =
        proxy_authorization.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
    invite(call_id, callee, SDP)
        .replace("127.0.0.2:5061", "198.51.100.7:33000")
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{auth}"),
        )
}

#[test]
fn a_user_calls_after_a_407_challenge() {
    let (mut h, _) = harness();
    h.receive_from(PHONE, &user_invite("u-1", "0049301234", None), false);
    let r = h.finals(PHONE);
    assert_eq!(
        (r[0].status, r[0].reason.as_str()),
        (407, "Proxy Authentication Required")
    );
    let challenges: Vec<&str> = r[0]
        .headers
        .get_all(&HeaderName::ProxyAuthenticate)
        .collect();
    assert_eq!(challenges.len(), 1, "MD5 only, by default");
    assert!(challenges[0].contains("algorithm=MD5"));
    let nonce = challenges[0]
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce");
    let mut creds = DigestCredentials {
        username: "1001".into(),
        realm: "vigil.local".into(),
        nonce: nonce.into(),
        uri: "sip:0049301234@127.0.0.1:5060".into(),
        response: String::new(),
        algorithm: Some("MD5".into()),
        cnonce: Some("cn".into()),
        qop: Some("auth".into()),
        nc: Some("00000001".into()),
        opaque: None,
    };
    creds.response = digest_response(DigestAlgorithm::Md5, &creds, "secret1001", "INVITE");
    let header = format!(
        "Digest username=\"1001\", realm=\"vigil.local\", nonce=\"{nonce}\", uri=\"{}\", response=\"{}\", algorithm=MD5, cnonce=\"cn\", qop=auth, nc=00000001",
        creds.uri, creds.response
    );
    h.receive_from(
        PHONE,
        &user_invite("u-2", "0049301234", Some(&header)),
        false,
    );
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(
        b.uri.to_string(),
        "sip:0049301234@127.0.0.3:5080",
        "the user's route_to"
    );
    // The same credentials again are a replay.
    h.receive_from(
        PHONE,
        &user_invite("u-3", "0049301234", Some(&header)),
        false,
    );
    assert_eq!(
        h.finals(PHONE).iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![407]
    );
}

#[test]
fn a_stranger_with_an_unknown_from_user_gets_403() {
    let (mut h, _) = harness();
    h.receive_from(
        PHONE,
        &user_invite("u-4", "0049301234", None).replace("sip:1001@", "sip:6666@"),
        false,
    );
    assert_eq!(h.finals(PHONE)[0].status, 403);
}

#[test]
fn a_call_to_a_registered_user_goes_to_its_contact_behind_the_nat() {
    let (mut h, mut location) = harness();
    location.insert(Binding {
        id: 0,
        aor: "1002".into(),
        contact: Arc::new(Target::new(
            &Uri::parse("sip:1002@192.168.1.20:5060").expect("uri"),
            Path::udp(addr(LOCAL), addr(PHONE)),
            1000,
            h.now,
        )),
        expires: h.now + Duration::from_secs(3600),
        call_id: "r".into(),
        cseq: 1,
    });
    h.caller_sends(&invite("u-5", "1002", SDP));
    let b = h.take_one_request(PHONE, Method::Invite);
    assert_eq!(
        b.uri.to_string(),
        "sip:1002@192.168.1.20:5060",
        "the registered contact"
    );
    assert_eq!(
        b.to.uri.to_string(),
        "sip:1002@vigil.local",
        "the address-of-record"
    );
    h.callee_sends(&answer(&b, 486, "t", "").replace("127.0.0.3:5080", PHONE));
    let _ = h.take(PHONE);
    assert_eq!(h.cdrs[0].trunk_out.as_deref(), Some("user:1002"));
}

#[test]
fn a_user_who_is_not_registered_is_480() {
    let (mut h, _) = harness();
    h.caller_sends(&invite("u-6", "1002", SDP));
    assert_eq!(h.finals(CALLER)[0].status, 480);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.cdrs[0].sip_code, Some(480));
}
