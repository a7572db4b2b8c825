//! `Config::parse` end to end: a good file's lookups, and bad files' problems,
//! each rendered as `vigil check` prints it (file:line: key: message).

use super::*;

const GOOD: &str = r#"
listen: ["udp:127.0.0.1:5060", { addr: "udp:[::1]:5060", advertise: "::1" }]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.1/32", "10.0.0.0/8"] }
    route_to: carrier
  - name: carrier
    inbound: { from: ["192.0.2.10"] }
    outbound: { to: "127.0.0.1:5080" }
  - name: premium
    outbound: { to: "[::1]:5090" }
routes: [ { prefix: "00", trunk: carrier }, { prefix: "0090", trunk: premium } ]
cdr: { path: "cdr.jsonl" }
log: { level: info, format: json }
"#;

fn problems(text: &str) -> Vec<ConfigProblem> {
    match Config::parse(text, Path::new("vigil.yaml")) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn names(c: &Config, trunks: Vec<usize>) -> Vec<&str> {
    trunks.into_iter().map(|t| &*c.trunks[t].name).collect()
}

#[test]
fn a_good_config_routes_by_longest_prefix() {
    let c = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.sip.force_rport);
    let pbx = c
        .inbound_trunk("10.1.2.3".parse().expect("ip"))
        .expect("pbx");
    assert_eq!(&*c.trunks[pbx].name, "pbx");
    assert_eq!(names(&c, c.route(pbx, "0090123")), ["premium"]);
    assert_eq!(names(&c, c.route(pbx, "0049123")), ["carrier"]);
    assert_eq!(names(&c, c.route(pbx, "555")), ["carrier"]);
    let carrier = c
        .inbound_trunk("192.0.2.10".parse().expect("ip"))
        .expect("carrier");
    assert!(c.route(carrier, "555").is_empty());
    assert!(c.admits("::ffff:127.0.0.1".parse().expect("ip")));
    assert!(
        c.admits("::1".parse().expect("ip")),
        "outbound peers may send in-dialog requests"
    );
    assert!(!c.admits("203.0.113.1".parse().expect("ip")));
}

#[test]
fn unknown_keys_name_the_line_and_key() {
    let p = problems(&GOOD.replace(
        "inbound: { from: [\"192.0.2.10\"] }",
        "inbound: { frm: [\"192.0.2.10\"] }",
    ));
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered[0],
        "vigil.yaml:8: trunks[1].inbound.frm: unknown key, expected `from`"
    );
    assert!(
        rendered[1].contains("missing field `from`"),
        "the unread key leaves a required one missing: {rendered:#?}"
    );
}

#[test]
fn every_unknown_key_is_reported_with_the_other_problems() {
    let text = GOOD
        .replace("route_to: carrier", "route_to: carrier\n    rout_to: x")
        .replace(
            "  - name: premium\n",
            "  - name: premium\n    colour: blue\n",
        )
        .replace(
            "{ prefix: \"00\", trunk: carrier }",
            "{ prefix: \"00\", trunk: nowhere }",
        )
        .replace(
            "\"udp:127.0.0.1:5060\", {",
            "\"udp:127.0.0.1:5060\", { adress: x,",
        )
        + "sesion_timer: { ttl: 90 }\nsession_timer: { tll: 90 }\n";
    let rendered: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "vigil.yaml:2: listen[1].adress: unknown key, expected one of `addr`, `advertise`",
            "vigil.yaml:7: trunks[0].rout_to: unknown key, expected one of `name`, `inbound`, `outbound`, `route_to`, `session_timer`, `policy`, `media`, `auth`, `register`, `tls_verify`, `transport`, `prack`",
            "vigil.yaml:12: trunks[2].colour: unknown key, expected one of `name`, `inbound`, `outbound`, `route_to`, `session_timer`, `policy`, `media`, `auth`, `register`, `tls_verify`, `transport`, `prack`",
            "vigil.yaml:17: sesion_timer: unknown key, expected one of `listen`, `trunks`, `routes`, `cdr`, `log`, `sip`, `session_timer`, `registrar`, `users`, `nat_keepalive`, `policy`, `control`, `metrics`, `trace`, `limits`, `media`, `dns`, `tls`, `state`",
            "vigil.yaml:18: session_timer.tll: unknown key, expected one of `ttl`, `update_segment`, `early_hangup`, `no_timer_max_duration`, `min_se`, `refresh_method`, `prefer_refresher`, `refresh_non_timer_peers`, `allow_short_intervals`",
            "vigil.yaml:14: routes[0].trunk: no trunk named \"nowhere\"",
        ]
    );
}

#[test]
fn cross_key_problems_are_all_reported_with_lines() {
    let text = GOOD
        .replace("route_to: carrier", "route_to: nowhere")
        .replace("trunk: premium", "trunk: pbx")
        .replace("10.0.0.0/8", "10.0.0.0/33");
    let p = problems(&text);
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 3, "{rendered:#?}");
    assert!(
        rendered
            .iter()
            .any(|r| r.starts_with("vigil.yaml:5: trunks[0].inbound.from[1]")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.starts_with("vigil.yaml:6: trunks[0].route_to: no trunk named \"nowhere\"")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("routes[1].trunk: trunk \"pbx\" has no `outbound`")),
        "{rendered:#?}"
    );
}

#[test]
fn session_timer_values_out_of_range_name_their_key() {
    let text = format!("{GOOD}session_timer: {{ ttl: 30, update_segment: 2 }}\n").replace(
        "  - name: premium\n",
        "  - name: premium\n    session_timer: { update_segment: 12 }\n",
    );
    let p = problems(&text);
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("session_timer.ttl: 30 is below min_se (90)")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("trunks[2].session_timer.update_segment: 12 is not in 2..10")),
        "{rendered:#?}"
    );
    let lab =
        format!("{GOOD}session_timer: {{ ttl: 4, min_se: 2, allow_short_intervals: true }}\n");
    let c = Config::parse(&lab, Path::new("vigil.yaml")).expect("lab values allowed by the switch");
    assert_eq!(c.trunks[0].session_timer.ttl, 4);
    assert_eq!(c.session_timer.min_se, 2);
}

#[test]
fn users_and_keepalive() {
    let text = format!(
        "{GOOD}registrar: {{ domain: vigil.local }}\nnat_keepalive: {{ period: 20 }}\nusers:\n  - {{ user: \"1001\", password: s1 }}\n  - {{ user: \"1002\", password: s2, route_to: carrier, nat_keepalive: {{ message: \"\" }} }}\n"
    );
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    let u = c.user("1002").expect("user");
    assert_eq!(u.keepalive.period, 20, "global override inherited");
    assert!(!u.keepalive.enabled(), "per-user override");
    assert_eq!(u.route_to.map(|t| &*c.trunks[t].name), Some("carrier"));
    assert_eq!(c.registrar.as_ref().map(|r| r.min_expires), Some(60));
    let bad = format!(
        "{GOOD}nat_keepalive: {{ period: 5 }}\nusers:\n  - {{ user: \"1001\", password: \"\" }}\n  - {{ user: \"1001\", password: x }}\n"
    );
    let rendered: Vec<String> = problems(&bad).iter().map(ToString::to_string).collect();
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("users: users need a `registrar` section")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("nat_keepalive.period: 5 is not in 10..86400")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("users[0].password: must not be empty")),
        "{rendered:#?}"
    );
    assert!(
        rendered
            .iter()
            .any(|r| r.contains("users[1].user: user \"1001\" is defined twice")),
        "{rendered:#?}"
    );
}

#[test]
fn digest_algorithms_default_to_md5_and_a_user_may_have_its_own() {
    let users = "users:\n  - { user: \"1001\", password: s1 }\n  - { user: \"1002\", password: s2, digest_algorithms: [SHA-256] }\n";
    let c = Config::parse(
        &format!("{GOOD}registrar: {{ domain: vigil.local }}\n{users}"),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    let algorithms = |c: &Config, u| c.user(u).expect("user").digest_algorithms.clone();
    assert_eq!(algorithms(&c, "1001"), [DigestAlgorithm::Md5]);
    assert_eq!(algorithms(&c, "1002"), [DigestAlgorithm::Sha256]);
    // A config written for the old default stays valid and means what it said.
    let old = format!(
        "{GOOD}registrar: {{ domain: vigil.local, digest_algorithms: [SHA-256, md5] }}\n{users}"
    );
    let c = Config::parse(&old, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(
        algorithms(&c, "1001"),
        [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
    );
    let bad = format!(
        "{GOOD}registrar: {{ domain: vigil.local, digest_algorithms: [] }}\nusers:\n  - {{ user: \"1001\", password: s1, digest_algorithms: [SHA-512] }}\n"
    );
    let rendered: Vec<String> = problems(&bad).iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "vigil.yaml:15: registrar.digest_algorithms: needs at least one of MD5, SHA-256",
            "vigil.yaml:17: users[0].digest_algorithms: \"SHA-512\" is not MD5 or SHA-256"
        ]
    );
}

#[test]
fn metrics_listen_is_an_optional_socket_address() {
    let c = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.metrics_listen, None, "absent: no endpoint");
    let text = format!("{GOOD}metrics: {{ listen: \"127.0.0.1:9060\" }}\n");
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.metrics_listen, "127.0.0.1:9060".parse().ok());
    let bad = format!("{GOOD}metrics:\n  listen: \"localhost:9060\"\n");
    let p = problems(&bad);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].to_string()
            .starts_with("vigil.yaml:16: metrics.listen: \"localhost:9060\" is not ip:port"),
        "{}",
        p[0]
    );
    let p = problems(&format!("{GOOD}metrics: {{ listen: \"127.0.0.1:0\" }}\n"));
    assert!(
        p[0].to_string()
            .contains("metrics.listen: 127.0.0.1:0 needs a port"),
        "{}",
        p[0]
    );
    let p = problems(&format!("{GOOD}metrics: {{ port: 9060 }}\n"));
    assert_eq!(
        p[0].to_string(),
        "vigil.yaml:15: metrics.port: unknown key, expected `listen`"
    );
}

#[test]
fn a_postgres_cdr_sink_is_a_url_and_a_plain_table_name() {
    let cdr = "cdr: { path: \"cdr.jsonl\" }";
    let c = Config::parse(
        &GOOD.replace(
            cdr,
            "cdr: { path: /var/lib/vigil/cdr.jsonl, postgres: \"postgresql://vigil:secret@127.0.0.1:5432/billing\", spool: /srv/spool }",
        ),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    let sink = c.cdr.postgres.as_ref().expect("postgres");
    assert_eq!(sink.table, "vigil_cdr", "the default table");
    assert_eq!(
        sink.shown_url(),
        "postgresql://vigil@127.0.0.1:5432/billing"
    );
    assert_eq!(
        c.cdr.db_spool_dir(),
        Some(PathBuf::from("/srv/spool/vigil_cdr.spool"))
    );
    let c = Config::parse(
        &GOOD.replace(
            cdr,
            "cdr: { path: /var/lib/vigil/cdr.jsonl, postgres: \"postgresql://u@h/db\", table: calls_2027 }",
        ),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    assert_eq!(
        c.cdr.db_spool_dir(),
        Some(PathBuf::from("/var/lib/vigil/calls_2027.spool")),
        "beside the CDR file without a spool"
    );
    let p = problems(&GOOD.replace(
        cdr,
        "cdr: { path: cdr.jsonl, postgres: \"mysql://u@h/db\", table: \"Bad-Name\" }",
    ));
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 2, "{rendered:#?}");
    assert!(
        rendered[0].contains("cdr.postgres: must be a URL"),
        "{rendered:#?}"
    );
    assert!(
        rendered[1].contains("cdr.table: \"Bad-Name\" is not a plain table name"),
        "{rendered:#?}"
    );
    let p = problems(&GOOD.replace(cdr, "cdr: { path: cdr.jsonl, table: calls }"));
    assert_eq!(p.len(), 1);
    assert!(p[0].to_string().contains("cdr.table: needs cdr.postgres"));
    let p = problems(&GOOD.replace(
        cdr,
        "cdr: { path: cdr.jsonl, postgres: \"postgresql://u@h:notaport/db\" }",
    ));
    assert_eq!(p.len(), 1);
    assert!(
        p[0].to_string()
            .contains("cdr.postgres: not a PostgreSQL URL")
    );
}

#[test]
fn cdr_limits_and_spool_have_defaults_and_bounds() {
    let c = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.cdr.max_pending, CdrConfig::DEFAULT_MAX_PENDING);
    assert_eq!(c.cdr.spool, None);
    assert_eq!(c.cdr.spill_path(), PathBuf::from("cdr.jsonl.spill"));
    let text = GOOD.replace(
        "cdr: { path: \"cdr.jsonl\" }",
        "cdr: { path: /var/lib/vigil/cdr.jsonl, max_pending: 50, spool: /srv/spool }",
    );
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.cdr.max_pending, 50);
    assert_eq!(
        c.cdr.spill_path(),
        PathBuf::from("/srv/spool/cdr.jsonl.spill")
    );
    let c = Config::parse(
        &GOOD.replace("\"cdr.jsonl\"", "/var/lib/vigil/cdr.jsonl"),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    assert_eq!(
        c.cdr.spill_path(),
        PathBuf::from("/var/lib/vigil/cdr.jsonl.spill")
    );
    let p = problems(&GOOD.replace(
        "cdr: { path: \"cdr.jsonl\" }",
        "cdr: { path: \"/var/lib/vigil/..\", max_pending: 0, spool: \"\" }",
    ));
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 3, "{rendered:#?}");
    assert!(
        rendered[0].starts_with("vigil.yaml:13: cdr.path: /var/lib/vigil/.. names no file"),
        "{rendered:#?}"
    );
    assert!(
        rendered[1].contains("cdr.max_pending: 0 is not in 1..=10000000"),
        "{rendered:#?}"
    );
    assert!(
        rendered[2].contains("cdr.spool: must not be empty"),
        "{rendered:#?}"
    );
}

#[test]
fn syntax_errors_carry_a_line() {
    let p = problems("listen: [\"udp:127.0.0.1:5060\"\ncdr: { path: x }\n");
    assert!(p[0].line.is_some(), "{}", p[0]);
    let p = problems("listen: [\"sctp:127.0.0.1:5060\"]\ncdr: { path: x }\n");
    assert!(
        p[0].to_string()
            .contains("listen[0]: transport \"sctp\" is not supported"),
        "{}",
        p[0]
    );
    let p =
        problems("listen: [\"udp:127.0.0.1:5060\"]\ncdr: { path: x }\nlog: { level: \"[bad\" }\n");
    assert_eq!(p[0].key, "log.level");
}

#[test]
fn media_relay_needs_rtpengines_and_is_per_trunk_and_user() {
    let with_engines = format!(
        "{GOOD}media: {{ rtpengines: [\"udp:127.0.0.1:2223\"], timeout: 30, timeout_mode: either }}\n"
    )
    .replace(
        "outbound: { to: \"127.0.0.1:5080\" }",
        "outbound: { to: \"127.0.0.1:5080\" }\n    media: relay",
    );
    let config = Config::parse(&with_engines, Path::new("vigil.yaml")).expect("valid");
    let media = config.media.as_ref().expect("media configured");
    assert_eq!(media.timeout, std::time::Duration::from_secs(30));
    assert_eq!(media.timeout_mode, TimeoutMode::Either);
    let modes: Vec<MediaMode> = config.trunks.iter().map(|t| t.media).collect();
    assert_eq!(
        modes,
        [
            MediaMode::Passthrough,
            MediaMode::Relay,
            MediaMode::Passthrough
        ]
    );
    // Relay without an rtpengine to relay through is refused where it is asked.
    let without = with_engines.replace(
        "media: { rtpengines: [\"udp:127.0.0.1:2223\"], timeout: 30, timeout_mode: either }\n",
        "",
    );
    let p = problems(&without);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "trunks[1].media");
    assert_eq!(p[0].line, Some(10));
    assert!(
        p[0].message.contains("media.rtpengines"),
        "{}",
        p[0].message
    );
    let p = problems(&format!(
        "{GOOD}media: {{ rtpengines: [\"127.0.0.1:2223\"] }}\n"
    ));
    assert_eq!(p[0].key, "media.rtpengines[0]");
}

const GATEWAYS: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.2"] }
  - name: carrier
    outbound:
      gateways:
        - { to: "127.0.0.3:5080", priority: 1, weight: 70 }
        - { to: "127.0.0.4:5080", priority: 1, weight: 30 }
        - { to: "127.0.0.5:5080", priority: 2 }
      invite_timeout: 3
      failover_codes: [503, 408]
      probe: { interval: 10, failures: 2 }
  - name: backup
    outbound: { to: "127.0.0.9:5060" }
routes: [ { prefix: "00", trunks: [carrier, backup] } ]
sip: { max_attempts: 4 }
cdr: { path: "cdr.jsonl" }
"#;

#[test]
fn gateways_failover_and_probes_are_read_with_their_defaults() {
    let c = Config::parse(GATEWAYS, Path::new("vigil.yaml")).expect("valid");
    let pbx = c
        .inbound_trunk("127.0.0.2".parse().expect("ip"))
        .expect("pbx");
    assert_eq!(names(&c, c.route(pbx, "0049")), ["carrier", "backup"]);
    let carrier = c.trunks[1].outbound.as_ref().expect("outbound");
    assert_eq!(carrier.gateways.len(), 3);
    assert_eq!(carrier.gateways[1].weight, 30);
    assert_eq!(carrier.gateways[2].weight, 1, "weight defaults to 1");
    assert_eq!(carrier.invite_timeout, std::time::Duration::from_secs(3));
    assert!(carrier.fails_over_on(503) && !carrier.fails_over_on(480));
    let probe = carrier.probe.as_ref().expect("probe");
    assert_eq!((probe.failures, probe.successes), (2, 2));
    assert!(probe.is_ok(404), "any final answer proves it alive");
    let backup = c.trunks[2].outbound.as_ref().expect("outbound");
    assert_eq!(backup.failover_codes, DEFAULT_FAILOVER_CODES);
    assert_eq!(backup.invite_timeout, std::time::Duration::from_secs(5));
    assert!(backup.probe.is_none(), "no probes unless asked for");
    assert_eq!(c.sip.max_attempts, 4);
    assert!(
        c.admits("127.0.0.4".parse().expect("ip")),
        "a gateway may send BYE"
    );
}

const UPLINK: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: carrier
    outbound: { to: "127.0.0.1:5080" }
    auth: { user: vigil, password: s3cret }
    register: { user: "4930", password: s3cret, registrar: "127.0.0.20:5070", expires: 600 }
  - name: other
    register:
      user: acct
      password: pw
      registrar: "[::1]:5071"
      domain: carrier.example
      contact_user: inbound
cdr: { path: "cdr.jsonl" }
"#;

/// A trunk's `auth` and `register`: defaults, and the registrar admitted
/// as the trunk for calls to the registered contact.
#[test]
fn trunks_may_authenticate_and_register_with_their_carrier() {
    let c = Config::parse(UPLINK, Path::new("vigil.yaml")).expect("valid");
    let auth = c.trunks[0].auth.as_deref().expect("auth");
    assert_eq!(
        (auth.user.as_str(), auth.password.as_str()),
        ("vigil", "s3cret")
    );
    let reg = c.trunks[0].register.as_deref().expect("register");
    assert_eq!(reg.registrar, "127.0.0.20:5070".parse().expect("addr"));
    assert_eq!(
        (reg.domain.as_str(), reg.contact_user.as_str(), reg.expires),
        ("127.0.0.20", "4930", 600)
    );
    let other = c.trunks[1].register.as_deref().expect("register");
    assert_eq!(
        (
            other.domain.as_str(),
            other.contact_user.as_str(),
            other.expires
        ),
        ("carrier.example", "inbound", 3600)
    );
    assert_eq!(c.trunks[1].auth, None);
    let registrar: std::net::IpAddr = "127.0.0.20".parse().expect("ip");
    assert!(c.admits(registrar));
    assert_eq!(c.registered_trunk(registrar, "4930"), Some(0));
    assert_eq!(c.registered_trunk(registrar, "4931"), None);
    assert_eq!(
        c.registered_trunk("::1".parse().expect("ip"), "inbound"),
        Some(1)
    );
    assert_eq!(reg.transport, crate::sip::Protocol::Udp);

    let over_tls = UPLINK.replace(
        "registrar: \"[::1]:5071\"",
        "registrar: \"sips:[::1]:5071\"",
    ) + "tls: { certificate: /etc/vigil/chain.pem, key: /etc/vigil/key.pem }\n";
    let c = Config::parse(&over_tls, Path::new("vigil.yaml")).expect("valid");
    let without_tls = over_tls.replace("tls: {", "metrics: {").replace(
        "certificate: /etc/vigil/chain.pem, key: /etc/vigil/key.pem",
        "listen: \"127.0.0.1:9090\"",
    );
    let p: Vec<String> = problems(&without_tls)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        p.iter().any(|p| p.contains("trunks[1].register: tls")),
        "{p:#?}"
    );
    let other = c.trunks[1].register.as_deref().expect("register");
    assert_eq!(other.registrar, "[::1]:5071".parse().expect("addr"));
    assert_eq!(other.transport, crate::sip::Protocol::Tls);
    let conflict = UPLINK
        .replace(
            "registrar: \"[::1]:5071\"",
            "registrar: \"sip:[::1]:5071;transport=tls\"",
        )
        .replace("  - name: other\n", "  - name: other\n    transport: tcp\n");
    let p: Vec<String> = problems(&conflict)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        p.iter()
            .any(|p| p.contains("trunks[1].register.registrar") && p.contains("asks for TLS")),
        "{p:#?}"
    );
}

#[test]
fn bad_gateways_and_routes_are_each_reported_at_their_line() {
    let bad = GATEWAYS
        .replace(
            "invite_timeout: 3",
            "invite_timeout: 60\n      to: \"127.0.0.8:5060\"",
        )
        .replace("failover_codes: [503, 408]", "failover_codes: [503, 200]")
        .replace(
            "probe: { interval: 10, failures: 2 }",
            "probe: { interval: 1, failures: 0, oops: 1 }",
        )
        .replace(
            "{ to: \"127.0.0.5:5080\", priority: 2 }",
            "{ to: \"127.0.0.3:5080\", priority: 2 }",
        )
        .replace(
            "trunks: [carrier, backup]",
            "trunks: [backup, nowhere, backup]",
        )
        .replace("max_attempts: 4", "max_attempts: 0");
    let text: Vec<String> = problems(&bad).iter().map(ToString::to_string).collect();
    let expect = [
        "trunks[1].outbound: give either `to` (one gateway) or `gateways`, not both",
        "trunks[1].outbound.invite_timeout: 60 s is outside 2..=30",
        "trunks[1].outbound.failover_codes[1]: 200 is not a final failure status",
        "trunks[1].outbound.probe.interval: 1 s is outside 5..=3600",
        "trunks[1].outbound.probe.failures: 0 is outside 1..=100",
        "trunks[1].outbound.probe.oops: unknown key",
        "routes[0].trunks[1]: no trunk named \"nowhere\"",
        "routes[0].trunks[2]: trunk \"backup\" is named twice",
        "sip.max_attempts: must be 1..=32",
    ];
    for e in expect {
        assert!(
            text.iter().any(|t| t.contains(e)),
            "missing {e:?} in {text:#?}"
        );
    }
    assert!(
        text.iter().all(|t| t.starts_with("vigil.yaml:")),
        "{text:#?}"
    );
}

#[test]
fn bad_auth_and_register_keys_are_placed() {
    let text = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: carrier
    outbound: { to: "127.0.0.1:5080" }
    auth: { user: "a b", password: "" }
    register:
      user: "x@y"
      password: pw
      registrar: "127.0.0.20"
      expires: 5
      domain: "not a domain"
      contact_user: "c:d"
      expire: 3
cdr: { path: "cdr.jsonl" }
"#;
    let rendered: Vec<String> = problems(text).iter().map(ToString::to_string).collect();
    for want in [
        "vigil.yaml:6: trunks[0].auth.user: \"a b\" is not a SIP user name",
        "vigil.yaml:6: trunks[0].auth.password: must not be empty",
        "vigil.yaml:8: trunks[0].register.user: \"x@y\" is not a SIP user name",
        "vigil.yaml:10: trunks[0].register.registrar: \"127.0.0.20\" needs a port",
        "vigil.yaml:11: trunks[0].register.expires: 5 is not in 60..=86400 seconds",
        "vigil.yaml:12: trunks[0].register.domain: \"not a domain\" is not a SIP domain",
        "vigil.yaml:13: trunks[0].register.contact_user: \"c:d\" is not a SIP user name",
        "vigil.yaml:14: trunks[0].register.expire: unknown key",
    ] {
        assert!(
            rendered.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in {rendered:#?}"
        );
    }
}

#[test]
fn gateways_named_by_host_are_left_to_dns_and_bad_names_refused() {
    let c = Config::parse(
        &GATEWAYS
            .replace("127.0.0.4:5080", "gw.carrier.example:5080")
            .replace("127.0.0.5:5080", "carrier.example"),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    let names: Vec<String> = c.gateway_names().iter().map(ToString::to_string).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!c.admits("127.0.0.4".parse().expect("ip")));
    let text: Vec<String> = problems(&GATEWAYS.replace("127.0.0.4:5080", "bad_name!:5080"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("vigil.yaml:10: trunks[1].outbound.gateways[1].to:")),
        "{text:#?}"
    );
}

#[test]
fn tls_is_optional_and_trunks_may_turn_verification_off() {
    let c = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.tls, None);
    assert!(c.trunks.iter().all(|t| t.tls_verify));
    let text = format!(
        "{GOOD}tls:\n  certificate: /etc/vigil/chain.pem\n  key: /etc/vigil/key.pem\n  \
         require_client_certificate: true\n"
    )
    .replace(
        "    outbound: { to: \"[::1]:5090\" }\n",
        "    outbound: { to: \"[::1]:5090\" }\n    tls_verify: false\n",
    );
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    let tls = c.tls.as_ref().expect("tls section");
    assert_eq!(tls.certificate, Path::new("/etc/vigil/chain.pem"));
    assert_eq!(tls.ca, None, "the host's trust store");
    assert!(tls.require_client_certificate);
    assert!(tls.verify_server);
    let verify: Vec<bool> = c.trunks.iter().map(|t| t.tls_verify).collect();
    assert_eq!(verify, [true, true, false]);
    let off = text.replace(
        "  require_client_certificate: true\n",
        "  verify_server: false\n",
    );
    let c = Config::parse(&off, Path::new("vigil.yaml")).expect("valid");
    assert!(c.trunks.iter().all(|t| !t.tls_verify));
}

#[test]
fn bad_tls_keys_are_placed_without_reading_the_files() {
    let text = format!(
        "{GOOD}tls:\n  certificate: \"\"\n  key: /nonexistent/key.pem\n  ca: /etc/ssl/\n  \
         verfy_server: false\n"
    );
    let p: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        p,
        [
            "vigil.yaml:19: tls.verfy_server: unknown key, expected one of `certificate`, \
             `key`, `ca`, `require_client_certificate`, `verify_server`",
            "vigil.yaml:16: tls.certificate: must not be empty",
            "vigil.yaml:18: tls.ca: /etc/ssl/ names no file (leave it out for the host's \
             trust store)",
        ]
    );
    let p = problems(&GOOD.replace(
        "    outbound: { to: \"[::1]:5090\" }\n",
        "    outbound: { to: \"[::1]:5090\" }\n    tls_verify: false\n",
    ));
    assert_eq!(
        p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "vigil.yaml:12: trunks[2].tls_verify: needs a `tls:` section (the certificate \
          Vigil presents over TLS)"
        ]
    );
}

#[test]
fn tcp_and_tls_listeners_are_read_and_tls_needs_its_section() {
    let text = GOOD.replace(
        "listen: [\"udp:127.0.0.1:5060\", { addr: \"udp:[::1]:5060\", advertise: \"::1\" }]",
        "listen: [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]",
    );
    let rendered: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
    assert!(
        rendered
            .iter()
            .any(|p| p.contains("listen[2]: a tls: listener needs a `tls:` section")),
        "{rendered:#?}"
    );
    let c = Config::parse(
        &text.replace("\"tls:127.0.0.1:5061\"", "\"tcp:[::1]:5060\""),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    let protos: Vec<crate::sip::Protocol> = c.listen.iter().map(|l| l.proto).collect();
    use crate::sip::Protocol::{Tcp, Udp};
    assert_eq!(protos, [Udp, Tcp, Tcp]);
    assert!(
        !problems(&text.replace("\"tls:127.0.0.1:5061\"", "\"tcp:127.0.0.1:5060\"")).is_empty(),
        "listed twice"
    );
}

#[test]
fn prack_is_global_with_per_trunk_overrides() {
    let c = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.sip.prack, PrackMode::Supported, "the default");
    assert!(c.trunks.iter().all(|t| t.prack == PrackMode::Supported));
    let text = GOOD.replace(
        "    route_to: carrier\n",
        "    route_to: carrier\n    prack: required\n",
    ) + "sip: { prack: disabled }\n";
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    assert_eq!(c.sip.prack, PrackMode::Disabled);
    assert_eq!(c.trunks[0].prack, PrackMode::Required);
    assert_eq!(c.trunks[1].prack, PrackMode::Disabled, "inherits sip.prack");
}

#[test]
fn a_bad_prack_value_names_its_line_and_the_choices() {
    let text = GOOD.replace(
        "    route_to: carrier\n",
        "    route_to: carrier\n    prack: sometimes\n",
    );
    let p = problems(&text);
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 1, "{rendered:?}");
    assert!(rendered[0].starts_with("vigil.yaml:7:"), "{rendered:?}");
    assert!(
        rendered[0].contains("sometimes")
            && rendered[0].contains("supported")
            && rendered[0].contains("required")
            && rendered[0].contains("disabled"),
        "{rendered:?}"
    );
}

#[test]
fn a_gateway_uri_chooses_its_transport_and_tls_needs_its_section() {
    use crate::sip::Protocol::{Tcp, Tls, Udp};
    let tls = "tls: { certificate: /etc/vigil/chain.pem, key: /etc/vigil/key.pem }\n";
    let text = format!("{GOOD}{tls}")
        .replace(
            "to: \"127.0.0.1:5080\"",
            "to: \"sip:127.0.0.1:5080;transport=tcp\"",
        )
        .replace("to: \"[::1]:5090\"", "to: \"sips:[::1]\"");
    let c = Config::parse(&text, Path::new("vigil.yaml")).expect("valid");
    let gateways: Vec<_> = c
        .trunks
        .iter()
        .flat_map(|t| t.outbound.iter().flat_map(|o| o.gateways.iter()))
        .map(|g| (g.addr(), g.transport))
        .collect();
    assert_eq!(
        gateways,
        [
            (Some("127.0.0.1:5080".parse().unwrap()), Tcp),
            (Some("[::1]:5061".parse().unwrap()), Tls),
        ]
    );
    let plain = Config::parse(GOOD, Path::new("vigil.yaml")).expect("valid");
    assert!(
        plain
            .trunks
            .iter()
            .flat_map(|t| t.outbound.iter().flat_map(|o| o.gateways.iter()))
            .all(|g| g.transport == Udp)
    );

    let without_tls = text.replace(tls, "");
    let p: Vec<String> = problems(&without_tls)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        p,
        [
            "vigil.yaml:11: trunks[2].outbound: tls (a sips: URI or transport: tls) needs \
          a `tls:` section (the certificate Vigil presents)"
        ]
    );
    let conflict = text.replace(
        "    outbound: { to: \"sips:[::1]\" }\n",
        "    outbound: { to: \"sips:[::1]\" }\n    transport: tcp\n",
    );
    let p: Vec<String> = problems(&conflict)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        p.iter().any(|p| p.contains(
            "trunks[2].outbound.to: \"sips:[::1]\" asks for TLS but the trunk's transport is TCP"
        )),
        "{p:#?}"
    );
}

#[test]
fn state_keeps_calls_in_a_file_of_its_own() {
    let c = Config::parse(
        &format!("{GOOD}state: {{ path: calls.db }}\n"),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    assert_eq!(
        c.state,
        Some(StateConfig::File {
            path: "calls.db".into()
        })
    );
    let default =
        Config::parse(&format!("{GOOD}state: {{}}\n"), Path::new("vigil.yaml")).expect("valid");
    assert_eq!(
        default.state,
        Some(StateConfig::File {
            path: "calls.db".into()
        })
    );
    assert!(
        Config::parse(GOOD, Path::new("vigil.yaml"))
            .expect("valid")
            .state
            .is_none(),
        "no state section, no store"
    );
    let shared = problems(&format!("{GOOD}state: {{ path: cdr.jsonl }}\n"));
    assert_eq!(
        shared.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["vigil.yaml:15: state.path: is cdr.path too: each needs a file of its own"]
    );
    let redis = Config::parse(
        &format!("{GOOD}state: {{ redis: \"redis://127.0.0.1:6379\" }}\n"),
        Path::new("vigil.yaml"),
    )
    .expect("valid");
    assert_eq!(
        redis.state,
        Some(StateConfig::Redis {
            url: "redis://127.0.0.1:6379".into()
        })
    );
    for (bad, message) in [
        (
            "{ redis: \"127.0.0.1:6379\" }",
            "state.redis: \"127.0.0.1:6379\" is not a redis:// URL",
        ),
        (
            "{ path: calls.db, redis: \"redis://127.0.0.1\" }",
            "state.redis: give either path (a local file) or redis, not both",
        ),
    ] {
        let p = problems(&format!("{GOOD}state: {bad}\n"));
        assert!(p[0].to_string().ends_with(message), "{p:?}");
    }
    let unknown = problems(&format!("{GOOD}state: {{ pth: calls.db }}\n"));
    assert!(
        unknown[0].to_string().contains("state.pth: unknown key"),
        "{unknown:?}"
    );
}
