//! CDRs into a real PostgreSQL (issue 22): every call is exactly one row,
//! with the fields of its line in the CDR file, through thousands of sipp
//! calls, through a database stopped mid-run for 20 s, and through a Vigil
//! `kill -9`ed mid-run (with the database down, so the restart must replay
//! the spool). A database that refuses Vigil, or lacks the table, is named
//! by `vigil check` and stops `vigil run` at start.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::tmpfs::Tmpfs;
use support::{Net, Vigil, callee, caller, read_cdrs, scrape, series};

/// The load tests run one at a time: each wants the machine's two cores.
static LOAD: Mutex<()> = Mutex::new(());

fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// The standard config with the CDR file and the database beside it.
fn config(net: Net, dir: &std::path::Path, pg: &Postgres) -> String {
    let cdr = dir.join("cdr.jsonl");
    let extra = format!(
        "limits: {{ max_calls: 20000 }}\nmetrics: {{ listen: \"{}\" }}\n",
        metrics_at(net)
    );
    net.config(&cdr, &extra).replace(
        &format!("cdr: {{ path: \"{}\" }}", cdr.display()),
        &format!(
            "cdr: {{ path: \"{}\", postgres: \"{}\", spool: \"{}\" }}",
            cdr.display(),
            pg.url(),
            dir.join("spool").display()
        ),
    )
}

fn init_db(config: &std::path::Path) {
    let out = Command::new(vigil_bin())
        .args(["cdr", "init-db", "--config"])
        .arg(config)
        .output()
        .expect("vigil cdr init-db");
    assert!(
        out.status.success(),
        "init-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_at(net: Net) -> std::net::SocketAddr {
    std::net::SocketAddr::new(net.vigil, 9090)
}

/// A Vigil on the database, its table created with `vigil cdr init-db`.
fn start(net: Net, pg: &Postgres) -> Vigil {
    start_with_spool(net, pg, None)
}

/// The same with the spool in `spool` (else in the test's directory).
fn start_with_spool(net: Net, pg: &Postgres, spool: Option<&std::path::Path>) -> Vigil {
    let dir = tempfile::tempdir().expect("dir");
    let mut text = config(net, dir.path(), pg);
    if let Some(spool) = spool {
        text = text.replace(
            &format!("spool: \"{}\"", dir.path().join("spool").display()),
            &format!("spool: \"{}\"", spool.display()),
        );
    }
    let path = dir.path().join("vigil.yaml");
    std::fs::write(&path, &text).expect("config");
    init_db(&path);
    Vigil::start_with(net, dir, &text)
}

/// `vigil ctl status`'s `cdr_database` object.
fn db_status(vigil: &Vigil) -> serde_json::Value {
    let (ok, out, err) = vigil.ctl(&["status"]);
    assert!(ok, "ctl status: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    status["cdr_database"].clone()
}

/// Waits until the database has everything Vigil holds.
fn wait_drained(vigil: &Vigil, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let status = db_status(vigil);
        if status["spooled"] == 0 && status["pending"] == 0 && status["state"] == "ok" {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the database did not catch up within {limit:?}: {status}\n{}",
            support::tail(&vigil.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every CDR line is exactly one row, equal field by field, and no row is
/// without its line.
fn assert_rows_are_the_cdr_lines(pg: &Postgres, lines: &[serde_json::Value]) {
    let extra = rows_beyond_the_cdr_lines(pg, lines);
    assert!(
        extra.is_empty(),
        "{} rows without their CDR line, e.g. {}",
        extra.len(),
        extra[0]
    );
}

/// Every CDR line is exactly one row, equal field by field; returns the
/// rows that have no line.
fn rows_beyond_the_cdr_lines(pg: &Postgres, lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let ids: HashSet<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(ids.len(), lines.len(), "each CDR line has an id of its own");
    let rows = pg.cdr_rows("vigil_cdr");
    let by_id: HashMap<String, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["id"].as_str().expect("id").to_string(), r))
        .collect();
    assert_eq!(by_id.len(), rows.len(), "no id twice in the table");
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !by_id.contains_key(**id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} CDRs have no row, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for line in lines {
        let row = by_id[line["id"].as_str().expect("id")];
        assert_eq!(row, line, "the row differs from its CDR line");
    }
    rows.iter()
        .filter(|r| !ids.contains(r["id"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

#[test]
fn ten_thousand_calls_are_ten_thousand_rows_equal_to_their_cdr_lines() {
    let _one = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pg = Postgres::start(25431);
    let net = Net::new(230);
    let vigil = start(net, &pg);
    let uas = callee(net, None, &[]);
    let started = Instant::now();
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "10000", "-r", "200", "-l", "2000", "-d", "10"],
    )
    .expect_success(Duration::from_secs(120));
    let took = started.elapsed();
    uas.stop();
    let status = wait_drained(&vigil, Duration::from_secs(30));
    assert_eq!(status["db_errors"], 0, "{status}");
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 10_000, "one CDR line per call");
    assert_rows_are_the_cdr_lines(&pg, &stopped.cdrs);
    eprintln!("10,000 calls in {took:?}, each a row");
}

#[test]
fn a_database_stopped_for_20_s_mid_run_gets_every_row_when_it_is_back() {
    let _one = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pg = Postgres::start(25432);
    let net = Net::new(231);
    let vigil = start(net, &pg);
    let uas = callee(net, None, &[]);
    // 40 s of calls at 150 a second; the database goes away for 20 s of them.
    let calls = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "6000", "-r", "150", "-l", "2000", "-d", "10"],
    );
    std::thread::sleep(Duration::from_secs(4));
    pg.stop();
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let down = db_status(&vigil);
    assert_eq!(down["state"], "failing", "{down}");
    assert_eq!(down["failing"], serde_json::json!(["database"]), "{down}");
    assert!(
        down["spooled"].as_u64() > Some(500),
        "CDRs wait in the spool: {down}"
    );
    assert!(down["db_errors"].as_u64() >= Some(5), "{down}");
    let metrics_like = vigil.cdrs().len();
    assert!(
        metrics_like > 1000,
        "the CDR file did not wait: {metrics_like}"
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stopped_at.elapsed()));
    pg.start_again();
    calls.expect_success(Duration::from_secs(90));
    uas.stop();
    let status = wait_drained(&vigil, Duration::from_secs(60));
    assert!(status["written"].as_u64() >= Some(6000), "{status}");
    let metrics = scrape(metrics_at(net));
    assert_eq!(series(&metrics, "vigil_cdr_spool_depth"), 0);
    assert!(series(&metrics, "vigil_cdr_db_written_total") >= 6000);
    assert!(series(&metrics, "vigil_cdr_db_batch_seconds_count") > 0);
    let segments = std::fs::read_dir(vigil.dir.path().join("spool/vigil_cdr.spool"))
        .expect("spool")
        .count();
    assert!(
        segments <= 1,
        "committed segments are deleted: {segments} left"
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 6000);
    assert!(
        stopped.log.contains("CDR database sink works again"),
        "{}",
        support::tail(&stopped.log, 20)
    );
    assert_rows_are_the_cdr_lines(&pg, &stopped.cdrs);
}

#[test]
fn vigil_killed_mid_run_with_the_database_down_replays_its_spool_after_restart() {
    let _one = LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pg = Postgres::start(25433);
    let net = Net::new(232);
    let vigil = start(net, &pg);
    let uas = callee(net, None, &["-default_behaviors", "all,-abortunexp"]);
    let calls = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "3000", "-r", "150", "-l", "1000", "-d", "10"],
    );
    std::thread::sleep(Duration::from_secs(3));
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    let before = db_status(&vigil);
    assert!(before["spooled"].as_u64() > Some(100), "{before}");
    // kill -9: nothing is flushed, nothing is said.
    let dir = vigil.kill_hard();
    let killed_at = std::time::SystemTime::now();
    let killed_lines = read_cdrs(&dir.path().join("cdr.jsonl")).len();
    std::thread::sleep(Duration::from_millis(500));
    // Back while the database is still down: it starts, and waits.
    let vigil = Vigil::restart(net, dir);
    let restarted = db_status(&vigil);
    assert!(
        restarted["spooled"].as_u64() >= before["spooled"].as_u64(),
        "the spool survived the kill: {restarted} (before: {before})"
    );
    assert!(
        vigil.log().contains("CDR database down at start"),
        "{}",
        vigil.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    pg.start_again();
    let _ = calls.wait(Duration::from_secs(90));
    uas.stop();
    wait_drained(&vigil, Duration::from_secs(60));
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert!(
        stopped.cdrs.len() > killed_lines + 1000,
        "calls went on after the restart: {} lines, {killed_lines} at the kill",
        stopped.cdrs.len()
    );
    // The kill can catch a CDR that the spool has (fsynced: the database
    // gets it) while the CDR file writer had not written it yet: the file
    // loses it, the database does not. Such rows are the calls that ended
    // in the last moment before the kill, and few.
    let extra = rows_beyond_the_cdr_lines(&pg, &stopped.cdrs);
    assert!(extra.len() <= 20, "{} rows without a line", extra.len());
    let killed_ms = killed_at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    for row in &extra {
        let end = row["end"].as_str().expect("end");
        let end_ms = humantime::parse_rfc3339(end)
            .expect("rfc 3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        assert!(
            end_ms <= killed_ms && killed_ms - end_ms < 2000,
            "a row without its line ended {end}, not just before the kill: {row}"
        );
    }
}

/// `vigil check` and `vigil run` on a config, without a daemon left running.
fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(vigil_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("vigil check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_refused(config: &std::path::Path) -> String {
    let mut child = Command::new(vigil_bin())
        .args(["run", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("vigil run");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(1), "refused at start");
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil run started on a database that refuses it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_database_that_refuses_vigil_or_lacks_the_table_is_named_at_start_and_by_check() {
    let pg = Postgres::start(25434);
    let net = Net::new(233);
    let dir = tempfile::tempdir().expect("dir");
    let good = config(net, dir.path(), &pg);
    let path = dir.path().join("vigil.yaml");

    // No table yet.
    std::fs::write(&path, &good).expect("config");
    let (ok, err) = check(&path);
    assert!(!ok);
    assert!(
        err.contains("cdr.postgres")
            && err.contains("has no table vigil_cdr")
            && err.contains("vigil cdr init-db"),
        "{err}"
    );
    let err = run_refused(&path);
    assert!(err.contains("has no table vigil_cdr"), "{err}");

    // Wrong credentials.
    let bad_user = dir.path().join("bad-user.yaml");
    std::fs::write(&bad_user, good.replace("vigil@", "mallory@")).expect("config");
    let (ok, err) = check(&bad_user);
    assert!(!ok);
    assert!(
        err.contains("refuses Vigil") && err.contains("role \"mallory\" does not exist"),
        "{err}"
    );
    let err = run_refused(&bad_user);
    assert!(err.contains("refuses Vigil"), "{err}");
    // A database that does not exist.
    let no_db = dir.path().join("no-db.yaml");
    std::fs::write(&no_db, good.replace("/billing", "/accounts")).expect("config");
    let (ok, err) = check(&no_db);
    assert!(!ok);
    assert!(
        err.contains("database \"accounts\" does not exist"),
        "{err}"
    );

    // The SQL is printed without touching the database, then applied.
    let out = Command::new(vigil_bin())
        .args(["cdr", "init-db", "--print", "--config"])
        .arg(&path)
        .output()
        .expect("init-db --print");
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("CREATE TABLE vigil_cdr ("), "{sql}");
    assert_eq!(
        pg.sql("billing", "SELECT to_regclass('vigil_cdr') IS NULL"),
        "t\n",
        "--print touches nothing"
    );
    init_db(&path);
    let (ok, err) = check(&path);
    assert!(ok, "{err}");
    // Run twice: nothing to do.
    let out = Command::new(vigil_bin())
        .args(["cdr", "init-db", "--config"])
        .arg(&path)
        .output()
        .expect("init-db");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    // An older Vigil's table, as far as this one can tell.
    pg.sql("billing", "UPDATE vigil_schema SET version = 0");
    let (ok, err) = check(&path);
    assert!(!ok);
    assert!(
        err.contains("schema version 0") && err.contains("migrate"),
        "{err}"
    );
}

#[test]
fn a_cdr_the_database_refuses_is_set_aside_and_the_calls_after_it_get_their_rows() {
    let pg = Postgres::start(25435);
    let net = Net::new(234);
    let vigil = start(net, &pg);
    // A DBA's rule the CDR breaks: every batch holding it is refused
    // (SQLSTATE 23514), forever.
    pg.sql(
        "billing",
        "ALTER TABLE vigil_cdr ADD CONSTRAINT no_test_numbers CHECK (callee <> '0099')",
    );
    let uas = callee(net, None, &[]);
    for (number, calls) in [("0049301234", "20"), ("0099", "1"), ("0049301234", "20")] {
        caller(
            net,
            net.caller,
            None,
            number,
            &["-m", calls, "-r", "50", "-d", "10"],
        )
        .expect_success(Duration::from_secs(30));
    }
    uas.stop();
    let status = wait_drained(&vigil, Duration::from_secs(20));
    assert_eq!(status["rejected"], 1, "{status}");
    let rejected =
        std::fs::read_to_string(vigil.dir.path().join("spool/vigil_cdr.spool/rejected.cdrs"))
            .expect("rejected.cdrs");
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 41);
    let (refused, kept): (Vec<_>, Vec<_>) = stopped
        .cdrs
        .into_iter()
        .partition(|c| c["callee"] == "0099");
    assert_eq!(refused.len(), 1);
    let set_aside: serde_json::Value =
        serde_json::from_str(rejected.trim()).expect("one JSON line");
    assert_eq!(set_aside, refused[0], "the refused CDR, whole");
    assert!(
        stopped.log.contains("the database refuses this CDR"),
        "{}",
        support::tail(&stopped.log, 20)
    );
    assert_rows_are_the_cdr_lines(&pg, &kept);
}

#[test]
fn a_full_spool_disk_is_loud_and_calls_and_rows_go_on() {
    let disk = Tmpfs::mount("1m");
    let pg = Postgres::start(25436);
    let net = Net::new(235);
    let vigil = start_with_spool(net, &pg, Some(disk.path()));
    let filler = disk.fill_leaving(0);
    let uas = callee(net, None, &[]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "50", "-r", "50", "-d", "10"],
    )
    .expect_success(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    let full = loop {
        let status = db_status(&vigil);
        if status["written"] == 50 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(full["state"], "failing", "{full}");
    assert_eq!(
        full["failing"],
        serde_json::json!(["spool write"]),
        "{full}"
    );
    assert!(full["spool_errors"].as_u64() >= Some(1), "{full}");
    assert_eq!(full["written"], 50, "straight into the database: {full}");
    assert!(
        full["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{full}"
    );
    assert!(
        vigil.log().contains("the CDR spool cannot be written"),
        "{}",
        vigil.log()
    );
    // Room again: the spool takes CDRs again.
    std::fs::remove_file(filler).expect("free the disk");
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "20", "-r", "50", "-d", "10"],
    )
    .expect_success(Duration::from_secs(30));
    uas.stop();
    let status = wait_drained(&vigil, Duration::from_secs(20));
    assert!(
        status["failing"].as_array().is_some_and(Vec::is_empty),
        "{status}"
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 70);
    assert_rows_are_the_cdr_lines(&pg, &stopped.cdrs);
}

/// `vigil ARGS --config CONFIG` with `SSL_CERT_FILE` (the trust store
/// rustls-native-certs reads) set or not: (exit ok, stdout and stderr).
fn vigil_with_roots(
    args: &[&str],
    config: &std::path::Path,
    roots: Option<&std::path::Path>,
) -> (bool, String) {
    let mut command = Command::new(vigil_bin());
    command.args(args).arg("--config").arg(config);
    if let Some(roots) = roots {
        command.env("SSL_CERT_FILE", roots);
    }
    let out = command.output().expect("vigil");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn sslmode_require_talks_tls_and_checks_the_database_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut pg = Postgres::start(25437);
    let dir = tempfile::tempdir().expect("dir");
    // A CA of the test's own, and the server's certificate for 127.0.0.1.
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA cert").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server cert");
    pg.require_tls(&server.pem(), &key.serialize_pem());
    let roots = dir.path().join("ca.pem");
    std::fs::write(&roots, ca_pem).expect("ca");

    let net = Net::new(236);
    let plain = config(net, dir.path(), &pg);
    let tls = plain.replace("/billing\"", "/billing?sslmode=require\"");
    let (plain_path, tls_path) = (dir.path().join("plain.yaml"), dir.path().join("tls.yaml"));
    std::fs::write(&plain_path, &plain).expect("config");
    std::fs::write(&tls_path, &tls).expect("config");

    // Over TLS, with the CA trusted: the table is made, the check passes.
    let (ok, out) = vigil_with_roots(&["cdr", "init-db"], &tls_path, Some(&roots));
    assert!(ok, "{out}");
    let (ok, out) = vigil_with_roots(&["check"], &tls_path, Some(&roots));
    assert!(ok, "{out}");
    // Without TLS, this server refuses Vigil.
    let (ok, out) = vigil_with_roots(&["check"], &plain_path, Some(&roots));
    assert!(!ok);
    assert!(
        out.contains("refuses Vigil") && out.contains("no encryption"),
        "{out}"
    );
    // A certificate from a CA the host does not trust: no connection.
    let other_key = KeyPair::generate().expect("key");
    let other_ca = CertificateParams::new(Vec::<String>::new())
        .expect("CA")
        .self_signed(&other_key)
        .expect("other CA");
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca.pem()).expect("other ca");
    let (ok, out) = vigil_with_roots(&["check"], &tls_path, Some(&other));
    assert!(!ok);
    assert!(
        out.contains("cdr.postgres") && out.contains("certificate"),
        "{out}"
    );
}
