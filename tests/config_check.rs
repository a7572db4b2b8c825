//! `vigil check` and `vigil run` on good and broken configs: a bad file is
//! refused with its file, line and key, every problem of it at once (issue 23:
//! only the first unknown key was reported), and the daemon never starts on it.

use std::process::Command;

fn vigil(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/vigil.yaml");
    let (ok, stdout, stderr) = vigil(&["check", "--config", example]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("OK (1 listen, 2 trunks, 1 routes)"),
        "{stdout}"
    );
}

#[test]
fn broken_configs_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            "unknown-key.yaml",
            "listen: [\"udp:127.0.0.1:5060\"]\ntrunks:\n  - name: a\n    inbound: { form: [\"10.0.0.0/8\"] }\ncdr: { path: x }\n",
            ":4: trunks[0].inbound.form: unknown key, expected `from`",
        ),
        (
            "dangling-route.yaml",
            "listen: [\"udp:127.0.0.1:5060\"]\ntrunks:\n  - name: a\n    inbound: { from: [\"10.0.0.0/8\"] }\nroutes:\n  - { prefix: \"00\", trunk: nowhere }\ncdr: { path: x }\n",
            ":6: routes[0].trunk: no trunk named \"nowhere\"",
        ),
        (
            "register-expires.yaml",
            "listen: [\"udp:127.0.0.1:5060\"]\ntrunks:\n  - name: a\n    register:\n      user: u\n      password: p\n      registrar: \"127.0.0.20:5070\"\n      expires: 10\ncdr: { path: x }\n",
            ":8: trunks[0].register.expires: 10 is not in 60..=86400 seconds",
        ),
        (
            "auth-password.yaml",
            "listen: [\"udp:127.0.0.1:5060\"]\ntrunks:\n  - name: a\n    outbound: { to: \"127.0.0.1:5080\" }\n    auth: { user: u, password: \"\" }\ncdr: { path: x }\n",
            ":5: trunks[0].auth.password: must not be empty",
        ),
        (
            "syntax.yaml",
            "listen: [\"udp:127.0.0.1:5060\"\ncdr: { path: x }\n",
            ".yaml:",
        ),
        ("missing.yaml", "", "cannot read"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        if !text.is_empty() {
            std::fs::write(&path, text).expect("write");
        }
        let path = path.display().to_string();
        let (ok, _, stderr) = vigil(&["check", "--config", &path]);
        assert!(!ok, "{name} must be refused");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: the file is named: {stderr}");
        let (ok, _, stderr) = vigil(&["run", "--config", &path]);
        assert!(!ok, "vigil run must refuse {name}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

#[test]
fn check_lists_every_unknown_key_with_the_other_problems() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("typos.yaml");
    std::fs::write(
        &path,
        r#"listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: pbx
    inbound: { from: ["10.0.0.0/8"] }
    route_too: carrier
  - name: carrier
    outbound: { to: "127.0.0.3:5080" }
routes:
  - { prefix: "00", trunk: nowhere }
cdr: { path: x }
session_timer: { tll: 1800 }
nat_keepalive:
  period: 5
  mesage: PING
"#,
    )
    .expect("write");
    let file = path.display().to_string();
    let (ok, stdout, stderr) = vigil(&["check", "--config", &file]);
    assert!(!ok, "refused: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    for expected in [
        ":5: trunks[0].route_too: unknown key, expected one of `name`, `inbound`, `outbound`, `route_to`",
        ":11: session_timer.tll: unknown key, expected one of `ttl`,",
        ":14: nat_keepalive.mesage: unknown key, expected one of `message`,",
        ":9: routes[0].trunk: no trunk named \"nowhere\"",
        ":13: nat_keepalive.period: 5 is not in 10..86400 s",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{file}{expected}"))),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), 5, "one line per problem:\n{stderr}");
}

#[test]
fn every_subcommand_says_what_its_config_option_is() {
    for command in ["run", "check", "reload", "ctl"] {
        let (ok, stdout, stderr) = vigil(&[command, "--help"]);
        assert!(ok, "{command} --help: {stderr}");
        let option = stdout
            .lines()
            .find(|l| l.contains("--config <CONFIG>") && !l.starts_with("Usage"))
            .unwrap_or_else(|| panic!("{command} --help lists --config:\n{stdout}"));
        assert!(
            option.contains("YAML config file"),
            "{command} --help describes --config: {option:?}"
        );
    }
}

/// `vigil check` reads the `tls:` files that parsing leaves alone: a key
/// that is not the certificate's and a missing CA bundle are problems at
/// their keys' lines; an expired certificate is a warning that passes.
#[test]
fn check_reads_the_tls_files() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let issue = |name: &str, expired: bool| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let cert = params.self_signed(&key).expect("certificate");
        (
            write(&format!("{name}.pem"), cert.pem()),
            write(&format!("{name}.key"), key.serialize_pem()),
        )
    };
    let (cert, _) = issue("server", false);
    let (_, other_key) = issue("other", false);
    let (expired, expired_key) = issue("expired", true);
    let missing_ca = dir.path().join("missing-ca.pem").display().to_string();

    let config = write(
        "mismatch.yaml",
        format!(
            "listen: [\"udp:127.0.0.1:5060\"]\ncdr: {{ path: {cdr} }}\ntls:\n  \
             certificate: {cert}\n  key: {other_key}\n  ca: {missing_ca}\n",
            cdr = dir.path().join("cdr.jsonl").display()
        ),
    );
    let (ok, stdout, stderr) = vigil(&["check", "--config", &config]);
    assert!(!ok, "refused: {stdout}");
    assert!(
        stderr.contains(&format!(
            "{config}:5: tls.key: {other_key}: the private key does not match the certificate in {cert}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{config}:6: tls.ca: {missing_ca}: cannot read")),
        "{stderr}"
    );

    let config = write(
        "expired.yaml",
        format!(
            "listen: [\"udp:127.0.0.1:5060\"]\ncdr: {{ path: {cdr} }}\ntls:\n  \
             certificate: {expired}\n  key: {expired_key}\n  verify_server: false\n",
            cdr = dir.path().join("cdr.jsonl").display()
        ),
    );
    let (ok, stdout, stderr) = vigil(&["check", "--config", &config]);
    assert!(ok, "a warning passes: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{config}:4: tls.certificate: warning: {expired}: certificate 1 (CN=rcgen self signed cert) expired on 2002-01-01"
        )),
        "{stderr}"
    );
}
