//! A real PostgreSQL server (Debian's `postgresql`, which tests/run.sh
//! installs when missing) for the tests of the CDR database: a cluster of its
//! own in a temporary directory, listening on 127.0.0.1 at the test's port,
//! with trust authentication for the `vigil` user. The server refuses to run
//! as root, and tests run as root: it runs as the `postgres` user the package
//! creates (the directory is handed to it). Stopped by `pg_ctl stop` when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The folder with `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`,
/// else the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
pub fn bindir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_initdb(d))
        .collect();
    versions.sort();
    if let Some(dir) = versions.pop() {
        return dir;
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .find(|d| has_initdb(d))
        .unwrap_or_else(|| {
            panic!("PostgreSQL is not installed: run tests/run.sh (it installs it), or apt-get install postgresql")
        })
}

/// One PostgreSQL server with a `billing` database.
pub struct Postgres {
    dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    running: bool,
    /// More `-c` settings for the server (TLS).
    options: String,
}

impl Postgres {
    /// A new cluster on 127.0.0.1:`port`, started, with a `billing`
    /// database; the superuser is `vigil` (trust: no password).
    pub fn start(port: u16) -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown to postgres failed");
        let bin = bindir();
        let mut pg = Postgres {
            dir,
            port,
            bin,
            running: false,
            options: String::new(),
        };
        let out = pg.as_postgres("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "vigil"]);
        assert!(out.status.success(), "initdb: {}", text(&out));
        pg.start_again();
        pg.sql("postgres", "CREATE DATABASE billing");
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("runuser {tool}: {e}"))
    }

    /// `postgresql://vigil@127.0.0.1:PORT/billing`.
    pub fn url(&self) -> String {
        format!("postgresql://vigil@127.0.0.1:{}/billing", self.port)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&mut self) {
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=on{}",
            self.dir.path().display(),
            self.port,
            self.options
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Restarts the server with TLS on this certificate and key (PEM), and
    /// refusing connections without TLS (`hostssl` only).
    pub fn require_tls(&mut self, cert_pem: &str, key_pem: &str) {
        let (cert, key) = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&cert, cert_pem).expect("cert");
        std::fs::write(&key, key_pem).expect("key");
        let hba = self.dir.path().join("data/pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .args([&cert, &key, &hba])
            .status()
            .expect("chown");
        assert!(status.success());
        let status = Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .expect("chmod");
        assert!(status.success());
        self.options = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        self.stop();
        self.start_again();
    }

    /// Stops the server (fast: connections are cut).
    pub fn stop(&mut self) {
        let out = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
        self.running = false;
    }

    /// Runs SQL as `vigil` in `database`; returns psql's unaligned output.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "vigil",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every row of a CDR table as the JSON object the CDR file has for it
    /// (times back in UTC with milliseconds).
    pub fn cdr_rows(&self, table: &str) -> Vec<serde_json::Value> {
        let time = |column: &str| {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
        };
        let sql = format!(
            "SELECT json_build_object('id', id, 'call_id', call_id, 'b_call_id', b_call_id,
                'caller', caller, 'callee', callee, 'trunk_in', trunk_in, 'trunk_out', trunk_out,
                'start', {start}, 'answer', {answer}, 'end', {end}, 'duration_ms', duration_ms,
                'end_reason', end_reason, 'ended_by', ended_by, 'sip_code', sip_code,
                'refresh_failure', refresh_failure, 'extra', extra, 'gateway', gateway,
                'attempts', attempts, 'media', media)
             FROM {table} ORDER BY end_time, id",
            start = time("start_time"),
            answer = time("answer_time"),
            end = time("end_time"),
        );
        self.sql("billing", &sql)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
