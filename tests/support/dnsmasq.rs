//! A real DNS server (Debian's `dnsmasq-base`, which tests/run.sh installs
//! when missing) for the tests that resolve gateway names: on a loopback
//! address and port of the test's own, answering only from the records the
//! test gives it (`--no-resolv --no-hosts`, names under `--local` domains
//! are NXDOMAIN when unknown), with a short TTL (`--local-ttl`; without it
//! dnsmasq answers TTL 0). Stopped by its PID when killed or dropped.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dnsmasq binary (`/usr/sbin` is not on every PATH).
pub fn dnsmasq_bin() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join("dnsmasq"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "dnsmasq is not installed: run tests/run.sh (it installs it), \
or apt-get install dnsmasq-base"
            )
        })
}

/// A free UDP port on `ip` (a loopback address of the test's own), for a
/// dnsmasq started, stopped and started again there.
pub fn free_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free UDP port on {ip}: {e}"))
}

/// One dnsmasq process.
pub struct Dnsmasq {
    child: Option<Child>,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr` in `dir` (its pid file and log, named after
    /// `run`), authoritative for `local_domain`, with `records` as dnsmasq
    /// options (`--srv-host=…`, `--host-record=…`), every answer's TTL `ttl`
    /// seconds; waits until it answers a query.
    pub fn start(
        dir: &Path,
        run: u32,
        addr: SocketAddr,
        local_domain: &str,
        ttl: u32,
        records: &[String],
    ) -> Dnsmasq {
        let log = dir.join(format!("dnsmasq-{run}.log"));
        let child = Command::new(dnsmasq_bin())
            .args([
                "--keep-in-foreground".to_string(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                "--bind-interfaces".into(),
                format!("--listen-address={}", addr.ip()),
                format!("--port={}", addr.port()),
                format!("--local=/{local_domain}/"),
                format!("--local-ttl={ttl}"),
                format!(
                    "--pid-file={}",
                    dir.join(format!("dnsmasq-{run}.pid")).display()
                ),
                format!("--log-facility={}", log.display()),
                "--log-queries".into(),
            ])
            .args(records)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let server = Dnsmasq {
            child: Some(child),
            addr,
            log,
        };
        server.wait_ready();
        server
    }

    /// Asks for `local_domain`'s A record until dnsmasq answers anything (at
    /// most 10 s).
    fn wait_ready(&self) {
        let socket = UdpSocket::bind((self.addr.ip(), 0)).expect("bind a DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        // A query for `ready.` type A: id 0x5eed, recursion desired, one question.
        let query = [
            0x5e, 0xed, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'r', b'e', b'a', b'd', b'y', 0, 0,
            1, 0, 1,
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = socket.send_to(&query, self.addr);
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && n >= 2
                && buf[..2] == [0x5e, 0xed]
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not answer within 10 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL by its PID): a DNS server gone, as the
    /// resolver sees it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}
