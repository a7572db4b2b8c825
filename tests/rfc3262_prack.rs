//! Reliable provisional responses (RFC 3262) end to end, hop by hop, with
//! sipp on both sides: each leg does 100rel or not on its own, and the CDR
//! is the same as without PRACK in the flow.

mod support;

use std::time::Duration;

use support::{Net, SippResult, Vigil, callee, caller, scenario};

/// One call from a caller scenario to a callee scenario; both must succeed.
/// Returns what each sipp saw and the call's CDR.
fn one_call(
    net: Net,
    extra: &str,
    uac: &str,
    uas: &str,
) -> (SippResult, SippResult, serde_json::Value) {
    let vigil = Vigil::start(net, extra);
    let uas = callee(net, Some(&scenario(uas)), &["-m", "1", "-trace_msg"]);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario(uac)),
        "0049301234",
        &["-m", "1", "-d", "200", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(30));
    let uas = uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    (uac, uas, stopped.cdrs[0].clone())
}

fn answered_by_caller_bye(cdr: &serde_json::Value) {
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    assert!(cdr["answer"].is_string(), "{cdr}");
    assert!(cdr["sip_code"].is_null(), "{cdr}");
}

/// The messages sipp received (its `-trace_msg` log marks each one), each
/// up to the dashed line that starts the next entry of the log.
fn received(r: &SippResult) -> Vec<&str> {
    r.messages
        .split("message received")
        .skip(1)
        .map(|m| m.split("\n-----").next().unwrap_or(m))
        .collect()
}

fn count_received(r: &SippResult, start_line: &str) -> usize {
    received(r)
        .iter()
        .filter(|m| m.lines().any(|l| l.trim_start().starts_with(start_line)))
        .count()
}

#[test]
fn a_caller_requiring_100rel_calls_a_callee_without_it() {
    let net = Net::new(231);
    let (uac, uas, cdr) = one_call(net, "", "uac_prack.xml", "uas_plain_early.xml");
    answered_by_caller_bye(&cdr);
    // The callee saw no PRACK (it sent nothing reliably), and was offered 100rel.
    assert_eq!(count_received(&uas, "PRACK "), 0, "{}", uas.messages);
    // The caller's 180 and 183 both came reliably (its scenario checks RSeq).
    assert_eq!(count_received(&uac, "RSeq:"), 2, "{}", uac.messages);
}

#[test]
fn a_callee_requiring_100rel_is_pracked_for_a_caller_without_it() {
    let net = Net::new(232);
    let (uac, uas, cdr) = one_call(net, "", "uac_early.xml", "uas_100rel.xml");
    answered_by_caller_bye(&cdr);
    assert_eq!(count_received(&uas, "PRACK "), 1, "{}", uas.messages);
    assert_eq!(count_received(&uac, "RSeq:"), 0, "{}", uac.messages);
}

#[test]
fn both_sides_with_100rel_get_early_media_reliably() {
    let net = Net::new(233);
    let (uac, uas, cdr) = one_call(net, "", "uac_prack_183.xml", "uas_100rel.xml");
    answered_by_caller_bye(&cdr);
    assert_eq!(count_received(&uas, "PRACK "), 1, "{}", uas.messages);
    let early = received(&uac)
        .into_iter()
        .find(|m| m.contains("SIP/2.0 183"))
        .expect("a 183");
    assert!(
        early.contains("RSeq:") && early.contains("m=audio"),
        "{early}"
    );
}

#[test]
fn a_lost_prack_has_the_183_retransmitted_then_the_call_goes_on() {
    let net = Net::new(234);
    let (uac, _uas, cdr) = one_call(net, "", "uac_prack_lost.xml", "uas_plain_early.xml");
    answered_by_caller_bye(&cdr);
    let copies = count_received(&uac, "SIP/2.0 183");
    assert!(copies >= 2, "the reliable 183 came again: {copies}");
}

#[test]
fn a_lost_reliable_provisional_is_pracked_once_it_arrives_in_order() {
    let net = Net::new(235);
    let (uac, uas, cdr) = one_call(net, "", "uac_prack_183.xml", "uas_100rel_gap.xml");
    answered_by_caller_bye(&cdr);
    // PRACKs for RSeq 1, 2, 3 (the callee's scenario checks each RAck and
    // that none came for 3 before 2).
    assert_eq!(count_received(&uas, "PRACK "), 3, "{}", uas.messages);
    assert_eq!(count_received(&uac, "SIP/2.0 180"), 2, "{}", uac.messages);
}

#[test]
fn a_cancel_during_reliable_early_media_ends_both_legs_with_487() {
    let net = Net::new(236);
    let (_uac, uas, cdr) = one_call(net, "", "uac_prack_cancel.xml", "uas_100rel_cancel.xml");
    assert_eq!(cdr["end_reason"], "cancelled", "{cdr}");
    assert_eq!(cdr["sip_code"], 487, "{cdr}");
    assert!(cdr["answer"].is_null(), "{cdr}");
    assert_eq!(count_received(&uas, "CANCEL "), 1, "{}", uas.messages);
}

#[test]
fn a_late_offer_in_a_reliable_183_is_answered_in_the_pracks() {
    let net = Net::new(237);
    let (_uac, uas, cdr) = one_call(net, "", "uac_prack_late.xml", "uas_100rel_offer.xml");
    answered_by_caller_bye(&cdr);
    let prack = received(&uas)
        .into_iter()
        .find(|m| m.contains("PRACK sip:"))
        .expect("a PRACK");
    assert!(prack.contains("m=audio"), "the caller's answer: {prack}");
}

/// RFC 3311: the caller changes codecs with an UPDATE in the early dialog;
/// it crosses to the callee's early dialog and the answer comes back, all
/// before the 2xx.
#[test]
fn an_update_in_the_early_dialog_changes_codecs_before_the_answer() {
    let net = Net::new(239);
    let (uac, uas, cdr) = one_call(net, "", "uac_prack_update.xml", "uas_100rel_update.xml");
    answered_by_caller_bye(&cdr);
    let update = received(&uas)
        .into_iter()
        .find(|m| m.contains("UPDATE sip:"))
        .expect("the UPDATE reached the callee");
    assert!(
        !update.contains("Session-Expires"),
        "no session refresh before the answer: {update}"
    );
    // Its answer (a retransmission of it may come too): PCMU, as the callee said.
    let answers: Vec<&str> = received(&uac)
        .into_iter()
        .filter(|m| m.contains("SIP/2.0 200") && m.contains("CSeq: 3 UPDATE"))
        .collect();
    assert!(!answers.is_empty(), "{}", uac.messages);
    assert!(
        answers.iter().all(|m| m.contains("RTP/AVP 0")),
        "{answers:?}"
    );
}

/// The SDP lines of a message sipp received (`c=` and `m=`).
fn media_lines(message: &str) -> Vec<String> {
    message
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("c=") || l.starts_with("m="))
        .map(str::to_string)
        .collect()
}

/// The port of the `m=audio` line of an SDP.
fn audio_port(media: &[String]) -> u16 {
    media
        .iter()
        .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse().ok())
        .expect("a media port")
}

/// One call as [`one_call`], through a Vigil whose carrier trunk is
/// `media: relay`, with its own rtpengine (ng on `ng_port`, media in
/// `ports`). Returns the sipps' results, the CDR and rtpengine's ports.
fn one_relayed_call(
    net: Net,
    ng_port: u16,
    ports: std::ops::RangeInclusive<u16>,
    uac: &str,
    uas: &str,
) -> (SippResult, SippResult, serde_json::Value) {
    use support::rtpengine::Rtpengine;
    let engine_dir = tempfile::tempdir().expect("rtpengine dir");
    let engine = Rtpengine::start(engine_dir.path(), 1, ng_port, ports);
    let metrics = std::net::SocketAddr::new(net.vigil, 9090);
    let dir = tempfile::tempdir().expect("vigil dir");
    let extra = format!(
        "metrics: {{ listen: \"{metrics}\" }}\nmedia:\n  rtpengines: [\"udp:{}\"]\n  ping_interval: 1\n",
        engine.ng
    );
    let carrier = format!(
        "outbound: {{ to: \"{}:{}\" }}",
        net.callee,
        support::CALLEE_PORT
    );
    let config = net
        .config(&dir.path().join("cdr.jsonl"), &extra)
        .replace(&carrier, &format!("{carrier}\n    media: relay"));
    let vigil = Vigil::start_with(net, dir, &config);
    let up = format!("vigil_rtpengine_up{{engine=\"{}\"}}", engine.ng);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while support::series(&support::scrape(metrics), &up) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "rtpengine not seen up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let uas = callee(net, Some(&scenario(uas)), &["-m", "1", "-trace_msg"]);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario(uac)),
        "0049301234",
        &["-m", "1", "-d", "200", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(30));
    let uas = uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    assert!(engine.calls().is_empty(), "rtpengine still holds the call");
    (uac, uas, stopped.cdrs[0].clone())
}

/// With media relay on, the early media in a reliable 183 is anchored on
/// rtpengine like any answer, and the 2xx repeating it brings the caller
/// the same SDP (no new offer/answer).
#[test]
fn relayed_reliable_early_media_is_anchored_and_the_2xx_repeats_it() {
    let ports = 32238..=32287;
    let (uac, uas, cdr) = one_relayed_call(
        Net::new(238),
        23238,
        ports.clone(),
        "uac_prack_183.xml",
        "uas_100rel.xml",
    );
    answered_by_caller_bye(&cdr);
    assert_eq!(count_received(&uas, "PRACK "), 1, "{}", uas.messages);
    let seen = received(&uac);
    let early = seen
        .iter()
        .find(|m| m.contains("SIP/2.0 183"))
        .expect("a 183");
    let ok = seen
        .iter()
        .find(|m| m.contains("SIP/2.0 200") && m.contains("CSeq: 1 INVITE"))
        .expect("a 200 to the INVITE");
    let early_media = media_lines(early);
    assert!(
        early_media.contains(&"c=IN IP4 127.0.0.1".to_string()),
        "rtpengine's address, not the callee's: {early}"
    );
    assert!(ports.contains(&audio_port(&early_media)), "{early}");
    assert_eq!(
        media_lines(ok),
        early_media,
        "the 2xx repeats the early answer"
    );
}

/// A relayed late-offer call: the callee's offer in a reliable 183 and the
/// caller's answer in its PRACK both go through rtpengine, so each side
/// sees rtpengine's address and ports, never the other's.
#[test]
fn a_relayed_late_offer_answered_in_the_pracks_is_anchored_both_ways() {
    let ports = 32290..=32339;
    let (uac, uas, cdr) = one_relayed_call(
        Net::new(240),
        23240,
        ports.clone(),
        "uac_prack_late.xml",
        "uas_100rel_offer.xml",
    );
    answered_by_caller_bye(&cdr);
    let offer = received(&uac)
        .into_iter()
        .find(|m| m.contains("SIP/2.0 183"))
        .expect("a 183");
    let prack = received(&uas)
        .into_iter()
        .find(|m| m.contains("PRACK sip:"))
        .expect("a PRACK");
    for (what, message) in [("offer", offer), ("answer", prack)] {
        let media = media_lines(message);
        assert!(
            media.contains(&"c=IN IP4 127.0.0.1".to_string()),
            "the {what} names rtpengine: {message}"
        );
        assert!(ports.contains(&audio_port(&media)), "the {what}: {message}");
    }
}

/// A relayed call whose caller changes codecs with an UPDATE in the early
/// dialog: the UPDATE's offer and the callee's answer both go through
/// rtpengine, so the callee sees rtpengine's address in the UPDATE and the
/// caller sees it in the answer, never each other's.
#[test]
fn a_relayed_early_update_is_anchored_both_ways() {
    let ports = 32340..=32389;
    let (uac, uas, cdr) = one_relayed_call(
        Net::new(245),
        23245,
        ports.clone(),
        "uac_prack_update.xml",
        "uas_100rel_update.xml",
    );
    answered_by_caller_bye(&cdr);
    let update = received(&uas)
        .into_iter()
        .find(|m| m.contains("UPDATE sip:"))
        .expect("the UPDATE reached the callee");
    let answer = received(&uac)
        .into_iter()
        .find(|m| m.contains("SIP/2.0 200") && m.contains("CSeq: 3 UPDATE"))
        .expect("the UPDATE's answer reached the caller");
    for (what, message) in [("offer", update), ("answer", answer)] {
        let media = media_lines(message);
        assert!(
            media.contains(&"c=IN IP4 127.0.0.1".to_string()),
            "the early UPDATE's {what} names rtpengine: {message}"
        );
        assert!(ports.contains(&audio_port(&media)), "the {what}: {message}");
    }
}
