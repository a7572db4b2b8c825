//! Issue 15: the CDR writer died on the first write error and every later
//! CDR was lost, silently (a full disk kept 32 of 100 and one cut-off line;
//! a deleted CDR file swallowed CDRs until the next reload; `vigil check`
//! passed a path `vigil run` could not open).
//!
//! These tests put the CDR file on a real filesystem that fills up (a 256 KiB
//! tmpfs, which needs root: CI runs as root), delete it under the running
//! daemon, stop the daemon with the disk still full, and check `vigil check`
//! on paths that cannot be written. Every call must end as exactly one valid
//! JSON line somewhere an operator is told about, and the daemon must say
//! what happened while it happened.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use support::tmpfs::Tmpfs;
use support::{Net, Vigil, callee, caller};

/// A config for `net` with the CDR file at `cdr` and `cdr_extra` inside
/// the `cdr:` section, plus `extra` YAML.
fn config(net: Net, cdr: &Path, cdr_extra: &str, extra: &str) -> String {
    let plain = format!("cdr: {{ path: \"{}\" }}", cdr.display());
    let text = net.config(cdr, extra);
    assert!(text.contains(&plain));
    text.replace(
        &plain,
        &format!("cdr: {{ path: \"{}\"{cdr_extra} }}", cdr.display()),
    )
}

fn status(vigil: &Vigil) -> serde_json::Value {
    let (ok, stdout, stderr) = vigil.ctl(&["status"]);
    assert!(ok, "vigil ctl status failed: {stderr}");
    serde_json::from_str(&stdout).expect("status is JSON")
}

/// Polls `vigil ctl status` until `done` holds of its `cdr` part.
fn wait_for_cdr_status(
    vigil: &Vigil,
    what: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let now = status(vigil);
        if done(&now["cdr"]) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}; status: {now:#}\nlog:\n{}",
            vigil.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_log(vigil: &Vigil, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !vigil.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within {limit:?}:\n{}",
            vigil.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics` on `addr`: each series with its value.
fn scrape(addr: SocketAddr) -> Vec<(String, f64)> {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: vigil\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn series(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics
        .iter()
        .find(|(s, _)| s == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no series {name} in {metrics:?}"))
}

/// Every line of a CDR file (or spill), each of which must be a whole JSON
/// object: no cut-off line, no empty line, a final newline.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line: {:?}",
        path.display(),
        &text[text.len().saturating_sub(200)..]
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line of {} is not JSON ({e}): {l:?}", path.display()))
        })
        .collect()
}

/// The CDRs among the daemon's stderr lines (its own log lines are JSON too,
/// some with a `call_id`, but every one has a `level`, which no CDR has).
fn cdrs_on_stderr(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("level").is_none() && v.get("end_reason").is_some())
        .collect()
}

fn call_ids<'a>(cdrs: impl IntoIterator<Item = &'a serde_json::Value>) -> Vec<String> {
    cdrs.into_iter()
        .map(|c| c["call_id"].as_str().expect("call_id").to_string())
        .collect()
}

/// Asserts that `ids` holds `count` distinct Call-IDs: each call once.
fn assert_each_call_once(ids: &[String], count: usize, log: &str) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a call has two CDRs:\n{log}");
    assert_eq!(ids.len(), count, "one CDR per call:\n{log}");
}

#[test]
fn a_full_disk_holds_cdrs_and_writes_every_one_once_there_is_room() {
    let net = Net::new(100);
    let fs = Tmpfs::mount("256k");
    let cdr = fs.path().join("cdr.jsonl");
    // Room for a few dozen CDR lines (they are about 400 bytes).
    let filler = fs.fill_leaving(16 * 1024);
    let metrics = SocketAddr::new(net.vigil, 9060);
    let dir = tempfile::tempdir().expect("dir");
    let text = config(
        net,
        &cdr,
        "",
        &format!("metrics: {{ listen: \"{metrics}\" }}\n"),
    );
    let vigil = Vigil::start_with(net, dir, &text);
    let uas = callee(net, None, &["-m", "100"]);
    let uac = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "100", "-r", "8", "-d", "200"],
    );

    // The disk fills: the writer says so, holds what it cannot write, and
    // keeps retrying (once a second) while CDRs pile up.
    let full = wait_for_cdr_status(&vigil, "write errors", Duration::from_secs(60), |cdr| {
        cdr["write_errors"].as_u64() >= Some(3) && cdr["pending"].as_u64() >= Some(5)
    });
    let cdr_status = &full["cdr"];
    assert_eq!(cdr_status["state"], "failing", "{full:#}");
    assert!(
        cdr_status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device") && e.contains("cdr.jsonl")),
        "{full:#}"
    );
    assert!(cdr_status["last_error_at"].is_string(), "{full:#}");
    assert_eq!(cdr_status["path"], cdr.display().to_string());
    let scraped = scrape(metrics);
    assert!(series(&scraped, "vigil_cdr_write_errors_total") >= 1.0);
    assert!(series(&scraped, "vigil_cdrs_pending") >= 1.0);
    assert!(
        vigil.log().contains("CDRs cannot be written"),
        "the error is logged at once:\n{}",
        vigil.log()
    );

    // Room again, while calls go on.
    std::fs::remove_file(&filler).expect("free the space");
    let freed = SystemTime::now();
    uac.expect_success(Duration::from_secs(120));
    uas.expect_success(Duration::from_secs(30));

    // Without a restart or a reload, every held CDR reaches the file.
    wait_for_cdr_status(&vigil, "recovery", Duration::from_secs(30), |cdr| {
        cdr["pending"] == 0 && cdr["spilled"] == 0 && cdr["state"] == "ok"
    });
    assert_eq!(
        series(&scrape(metrics), "vigil_cdrs_pending"),
        0.0,
        "the gauge follows"
    );
    let stopped = vigil.stop();
    assert!(
        stopped.status.success(),
        "a normal stop exits 0: {}\n{}",
        stopped.status,
        stopped.log
    );
    assert!(
        stopped.log.contains("CDR writing works again"),
        "{}",
        stopped.log
    );

    let cdrs = json_lines(&cdr);
    assert_each_call_once(&call_ids(&cdrs), 100, &stopped.log);
    let freed = humantime::format_rfc3339_millis(freed).to_string();
    assert!(
        cdrs.iter()
            .any(|c| c["end"].as_str().is_some_and(|end| end > freed.as_str())),
        "calls went on after the space was freed"
    );
    assert!(
        !std::fs::exists(fs.path().join("cdr.jsonl.spill")).unwrap_or(true),
        "no spill left behind"
    );
}

#[test]
fn a_shutdown_on_a_full_disk_exits_non_zero_and_loses_nothing_and_the_next_start_replays_the_spill()
{
    let net = Net::new(101);
    let fs = Tmpfs::mount("256k");
    let spool = tempfile::tempdir().expect("spool");
    let cdr = fs.path().join("cdr.jsonl");
    let filler = fs.fill_leaving(8 * 1024);
    let text = config(
        net,
        &cdr,
        &format!(", max_pending: 5, spool: \"{}\"", spool.path().display()),
        "",
    );
    let spill = spool.path().join("cdr.jsonl.spill");
    const CALLS: usize = 40;

    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &text);
    let uas = callee(net, None, &["-m", "40"]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "40", "-r", "20", "-d", "100"],
    )
    .expect_success(Duration::from_secs(120));
    uas.expect_success(Duration::from_secs(30));
    // Every CDR reached the writer: some in the file, at most 5 in memory,
    // the rest spilled to the spool.
    let status = wait_for_cdr_status(&vigil, "all CDRs accounted", Duration::from_secs(30), |c| {
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        n("written") + n("pending") + n("spilled") == CALLS as u64
    });
    let cdr_status = &status["cdr"];
    // Up to max_pending in memory (a short line may still squeeze into the
    // file's last page on a retry).
    let held = cdr_status["pending"].as_u64().unwrap_or(0);
    assert!((1..=5).contains(&held), "{status:#}");
    assert!(cdr_status["spilled"].as_u64() > Some(0), "{status:#}");
    assert_eq!(cdr_status["spill_path"], spill.display().to_string());
    assert!(
        vigil.log().contains("later ones go to the spill file"),
        "{}",
        vigil.log()
    );

    // Stopped with the disk still full.
    let stopped = vigil.stop();
    assert_eq!(
        stopped.status.code(),
        Some(3),
        "CDRs not in the CDR file: a supervisor must see it:\n{}",
        stopped.log
    );
    assert!(
        stopped
            .log
            .contains("they follow on stderr, one JSON line each"),
        "{}",
        stopped.log
    );
    assert!(
        stopped
            .log
            .contains("CDRs stay in the spill file: the next start writes them"),
        "{}",
        stopped.log
    );
    let in_file = json_lines(&cdr);
    let on_stderr = cdrs_on_stderr(&stopped.log);
    let spilled = json_lines(&spill);
    assert!(
        (1..=5).contains(&on_stderr.len()),
        "the held ones: {}",
        stopped.log
    );
    let everywhere: Vec<String> = call_ids(in_file.iter().chain(&on_stderr).chain(&spilled));
    assert_each_call_once(&everywhere, CALLS, &stopped.log);

    // Room again: the next start writes the spill into the file first.
    std::fs::remove_file(&filler).expect("free the space");
    let vigil = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &text);
    wait_for_log(
        &vigil,
        "spill file replayed into the CDR file and removed",
        Duration::from_secs(10),
    );
    assert!(
        vigil.log().contains("a spill file left by an earlier run"),
        "{}",
        vigil.log()
    );
    assert!(!spill.exists(), "the replayed spill is removed");
    let stopped = vigil.stop();
    assert!(
        stopped.status.success(),
        "{}\n{}",
        stopped.status,
        stopped.log
    );
    let after = json_lines(&cdr);
    assert_eq!(after.len(), in_file.len() + spilled.len());
    assert_eq!(
        call_ids(&after[in_file.len()..]),
        call_ids(&spilled),
        "replayed in order, after what was there"
    );
    let everywhere: Vec<String> = call_ids(after.iter().chain(&on_stderr));
    assert_each_call_once(&everywhere, CALLS, &stopped.log);
}

#[test]
fn a_deleted_cdr_file_is_reopened_by_its_path_without_a_reload() {
    let net = Net::new(102);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "20"]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "10", "-r", "20"],
    )
    .expect_success(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while vigil.cdrs().len() < 10 {
        assert!(Instant::now() < deadline, "10 CDRs:\n{}", vigil.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = call_ids(&vigil.cdrs());

    std::fs::remove_file(vigil.cdr_path()).expect("delete the CDR file");
    // Noticed with no call ending: the daemon checks the path by itself.
    wait_for_log(
        &vigil,
        "CDR file reopened by its path",
        Duration::from_secs(10),
    );
    assert!(vigil.cdr_path().exists(), "a new file at the path");

    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "10", "-r", "20", "-p", "5062"],
    )
    .expect_success(Duration::from_secs(60));
    uas.expect_success(Duration::from_secs(30));
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert!(
        !stopped.log.contains("reloading the config"),
        "no reload was needed:\n{}",
        stopped.log
    );
    let after = call_ids(&stopped.cdrs);
    assert_each_call_once(&after, 10, &stopped.log);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "the later calls, in the new file"
    );
    let reopened = stopped
        .log
        .lines()
        .find(|l| l.contains("CDR file reopened by its path"))
        .unwrap_or_default();
    assert!(reopened.contains("\"WARN\""), "logged at warn: {reopened}");
    assert!(reopened.contains("deleted or moved away"), "{reopened}");
}

#[test]
fn vigil_check_tries_the_cdr_path_and_leaves_nothing_behind() {
    let net = Net::new(103);
    let dir = tempfile::tempdir().expect("dir");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run vigil check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A directory that cannot be created: it would be under a regular file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").expect("file");
    let (ok, _, stderr) = check(
        "under-a-file.yaml",
        &config(net, &file.join("cdr/cdr.jsonl"), "", ""),
    );
    assert!(!ok, "a CDR path vigil run cannot open must fail the check");
    assert!(
        stderr.contains("under-a-file.yaml:8: cdr.path: ")
            && stderr.contains("not-a-dir is not a directory"),
        "{stderr}"
    );
    // The same for the spill in cdr.spool.
    let (ok, _, stderr) = check(
        "bad-spool.yaml",
        &config(
            net,
            &dir.path().join("cdr.jsonl"),
            &format!(", spool: \"{}\"", file.join("spool").display()),
            "",
        ),
    );
    assert!(!ok);
    assert!(stderr.contains("bad-spool.yaml:8: cdr.spool: "), "{stderr}");

    // A writable path whose directories do not exist yet: fine, and after
    // the check neither the file nor its directories are there.
    let fresh = dir.path().join("var/lib/vigil/cdr.jsonl");
    let (ok, stdout, stderr) = check("fresh.yaml", &config(net, &fresh, "", ""));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(!dir.path().join("var").exists(), "nothing left behind");
    // An existing file is opened for appending, not changed.
    std::fs::create_dir_all(fresh.parent().expect("dir")).expect("dirs");
    std::fs::write(&fresh, "{\"call_id\":\"kept\"}\n").expect("cdr");
    let (ok, _, stderr) = check("existing.yaml", &config(net, &fresh, "", ""));
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&fresh).expect("cdr"),
        "{\"call_id\":\"kept\"}\n"
    );
}
