//! A real Kamailio (Debian's `kamailio` 5.6, which tests/run.sh installs when
//! missing) as a carrier: `registrar` + `usrloc` in memory, digest `auth`
//! against one plain-text password (`pv_auth_check`, no database), and every
//! other request sent to the registered contact (`lookup("location")`).
//! Foreground (`-DD -E`), on a loopback address and port of the test's own,
//! in its own directory; stopped by its PID when dropped (SIGTERM, then
//! SIGKILL after 3 s).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The kamailio binary.
pub fn kamailio_bin() -> PathBuf {
    ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join("kamailio"))
        .chain(
            std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .map(|dir| Path::new(dir).join("kamailio")),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("kamailio is not installed: run tests/run.sh (it installs it), or apt-get install kamailio")
        })
}

/// The carrier's script: REGISTER must authenticate as the From user with
/// `password` in realm `$fd` (the From domain, as Vigil's AOR writes it);
/// anything else goes to whoever registered the Request-URI's user.
fn script(listen: SocketAddr, password: &str) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:{listen}
listen=tcp:{listen}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)

request_route {{
    if (is_method("REGISTER")) {{
        if (!pv_auth_check("$fd", "{password}", "0", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Registered");
        exit;
    }}
    t_relay();
}}
"#
    )
}

/// A running Kamailio.
pub struct Kamailio {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Kamailio {
    /// Starts Kamailio on `addr` accepting REGISTERs with `password`; waits
    /// until its socket is bound.
    pub fn start(addr: SocketAddr, password: &str) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, script(addr, password)).expect("write kamailio.cfg");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
        let child = Command::new(kamailio_bin())
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-Y"])
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: Kamailio forks its workers, and they
            // must go with it (see `Drop`).
            .process_group(0)
            .spawn()
            .expect("start kamailio");
        let mut k = Kamailio {
            child: Some(child),
            addr,
            dir,
        };
        k.wait_ready();
        k
    }

    /// Ready when it answers an OPTIONS (with 404: nobody registered it).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("kamailio exited at start ({status}):\n{}", self.log());
            }
            {
                let probe = std::net::UdpSocket::bind((self.addr.ip(), 0)).expect("bind probe");
                let _ = probe.set_read_timeout(Some(Duration::from_millis(300)));
                let options = format!(
                    "OPTIONS sip:probe@{a} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{p};branch=z9hG4bKprobe{p}\r\nFrom: <sip:probe@{ip}>;tag=p\r\nTo: <sip:probe@{a}>\r\nCall-ID: probe-{p}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    a = self.addr,
                    ip = self.addr.ip(),
                    p = probe.local_addr().map(|l| l.port()).unwrap_or(0),
                );
                let _ = probe.send_to(options.as_bytes(), self.addr);
                let mut buf = [0u8; 2048];
                if probe.recv_from(&mut buf).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kamailio did not answer within 10 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    /// Stops Kamailio's whole process group: SIGTERM, then SIGKILL for
    /// whatever is left after 3 s. Its main process alone is not enough: a
    /// Kamailio whose shutdown hung (seen in CI) left its forked workers
    /// holding the test's address, failing the next run that needs it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }
}
