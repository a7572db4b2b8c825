//! SIP trace, like VOS3000's debug trace: every SIP message sent to or received
//! from a traced trunk or user is logged with its addresses — at debug level,
//! target `vigil::sip_trace`, and appended to `trace.file` when one is set.
//!
//! It sits in the transport because that is where every datagram passes, both
//! ways, exactly as it is on the wire. With nothing traced (the normal case)
//! the cost is one atomic load per datagram.
//!
//! A trunk is matched by address: its `inbound.from` networks and its
//! `outbound.to` address. A user is matched by its name in a SIP URI of the
//! message (`sip:1001@`), since a registered phone's address is not known in
//! advance and may change.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use ipnet::IpNet;

use crate::config::Config;

/// What is traced now, and where it is written.
#[derive(Default)]
pub struct SipTrace {
    /// Something is traced: the one thing read per datagram otherwise.
    active: AtomicBool,
    state: RwLock<TraceState>,
    file: Mutex<Option<File>>,
}

#[derive(Default)]
struct TraceState {
    /// Traced trunks: name, networks, outbound address.
    trunks: Vec<(String, Vec<IpNet>, Vec<SocketAddr>)>,
    /// Traced users, as `sip:NAME@` (what their messages carry).
    users: Vec<(String, Vec<u8>)>,
    /// Every trunk the config knows, to switch one on by name.
    known_trunks: Vec<(String, Vec<IpNet>, Vec<SocketAddr>)>,
    known_users: BTreeSet<String>,
}

/// Which way a message went.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Received,
    Sent,
}

impl SipTrace {
    /// Applies a config: what it traces replaces what was traced (a reload
    /// resets run-time switches to the config's list), and its file is opened.
    pub fn configure(&self, config: &Config) {
        let known_trunks: Vec<_> = config
            .trunks
            .iter()
            .map(|t| {
                let gateways = t.outbound.iter().flat_map(|o| &o.gateways);
                (
                    t.name.to_string(),
                    t.inbound_from.clone(),
                    gateways.filter_map(|g| g.addr()).collect(),
                )
            })
            .collect();
        let known_users: BTreeSet<String> =
            config.users.iter().map(|u| u.name.to_string()).collect();
        let mut state = TraceState {
            trunks: Vec::new(),
            users: Vec::new(),
            known_trunks,
            known_users,
        };
        for name in &config.trace.trunks {
            let _ = state.switch_on(name);
        }
        for name in &config.trace.users {
            let _ = state.switch_on(&format!("user:{name}"));
        }
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) =
            config.trace.file.as_deref().and_then(open_trace_file);
        self.publish(state);
    }

    /// Starts tracing a trunk (`NAME`) or a user (`user:NAME`).
    pub fn switch_on(&self, name: &str) -> Result<(), String> {
        let mut state = self.write();
        state.switch_on(name)?;
        self.active.store(state.is_active(), Ordering::Relaxed);
        Ok(())
    }

    /// Stops tracing a trunk or user.
    pub fn switch_off(&self, name: &str) -> Result<(), String> {
        let mut state = self.write();
        let before = state.trunks.len() + state.users.len();
        match name.strip_prefix("user:") {
            Some(user) => state.users.retain(|(n, _)| n != user),
            None => state.trunks.retain(|(n, _, _)| n != name),
        }
        if state.trunks.len() + state.users.len() == before {
            return Err(format!("{name:?} is not being traced"));
        }
        self.active.store(state.is_active(), Ordering::Relaxed);
        Ok(())
    }

    /// What is traced: trunk names, and users as `user:NAME`.
    pub fn traced(&self) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .trunks
            .iter()
            .map(|(n, _, _)| n.clone())
            .chain(state.users.iter().map(|(n, _)| format!("user:{n}")))
            .collect()
    }

    /// Traces one datagram if it concerns a traced trunk or user.
    pub fn datagram(
        &self,
        direction: Direction,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let Some(whom) = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .matches(remote, bytes)
        else {
            return;
        };
        let text = String::from_utf8_lossy(bytes);
        let (arrow, from, to) = match direction {
            Direction::Received => ("received", remote, local),
            Direction::Sent => ("sent", local, remote),
        };
        tracing::debug!(target: "vigil::sip_trace", traced = %whom, %from, %to, "{arrow}:\n{text}");
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = file.as_mut() {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            // A full disk must not stop the switch: the line is lost, not the call.
            let _ = write!(
                f,
                "{now} {arrow} {from} -> {to} [{whom}] {} bytes\n{text}\n\n",
                bytes.len()
            );
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TraceState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: TraceState) {
        let active = state.is_active();
        *self.write() = state;
        self.active.store(active, Ordering::Relaxed);
    }
}

impl TraceState {
    fn is_active(&self) -> bool {
        !self.trunks.is_empty() || !self.users.is_empty()
    }

    fn switch_on(&mut self, name: &str) -> Result<(), String> {
        if let Some(user) = name.strip_prefix("user:") {
            if !self.known_users.contains(user) {
                return Err(format!("no user named {user:?}"));
            }
            if !self.users.iter().any(|(n, _)| n == user) {
                self.users
                    .push((user.to_string(), format!("sip:{user}@").into_bytes()));
            }
            return Ok(());
        }
        let Some(trunk) = self.known_trunks.iter().find(|(n, _, _)| n == name) else {
            return Err(format!("no trunk named {name:?} (users are user:NAME)"));
        };
        if !self.trunks.iter().any(|(n, _, _)| n == name) {
            self.trunks.push(trunk.clone());
        }
        Ok(())
    }

    /// The traced trunk or user a datagram concerns, if any.
    fn matches(&self, remote: SocketAddr, bytes: &[u8]) -> Option<String> {
        let ip = crate::config::canonical_ip(remote.ip());
        for (name, networks, outbound) in &self.trunks {
            if outbound.contains(&remote) || networks.iter().any(|n| n.contains(&ip)) {
                return Some(name.clone());
            }
        }
        self.users
            .iter()
            .find(|(_, needle)| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|(name, _)| format!("user:{name}"))
    }
}

fn open_trace_file(path: &Path) -> Option<File> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot open the SIP trace file: tracing to the log only");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trace: &str) -> Config {
        let text = format!(
            "listen: [\"udp:127.0.0.1:5060\"]\n\
             trunks:\n  - name: pbx\n    inbound: {{ from: [\"10.0.0.0/8\"] }}\n    route_to: carrier\n\
             \x20 - name: carrier\n    outbound: {{ to: \"192.0.2.1:5060\" }}\n\
             registrar: {{ domain: vigil.local }}\n\
             users:\n  - {{ user: \"1001\", password: secret }}\n\
             cdr: {{ path: cdr.jsonl }}\n{trace}"
        );
        Config::parse(&text, Path::new("vigil.yaml")).expect("config")
    }

    const LOCAL: &str = "127.0.0.1:5060";
    const INVITE: &[u8] =
        b"INVITE sip:0049301234@192.0.2.1 SIP/2.0\r\nFrom: <sip:1001@vigil.local>;tag=a\r\n\r\n";
    const OTHER: &[u8] =
        b"INVITE sip:0049301234@192.0.2.1 SIP/2.0\r\nFrom: <sip:1002@vigil.local>;tag=a\r\n\r\n";

    fn traced(trace: &SipTrace, remote: &str, bytes: &[u8]) -> Option<String> {
        trace
            .state
            .read()
            .expect("lock")
            .matches(remote.parse().expect("addr"), bytes)
    }

    #[test]
    fn trunks_match_by_address_and_users_by_uri() {
        let trace = SipTrace::default();
        trace.configure(&config("trace: { trunks: [pbx], users: [\"1001\"] }\n"));
        assert!(trace.active.load(Ordering::Relaxed));
        assert_eq!(
            traced(&trace, "10.1.2.3:5060", OTHER).as_deref(),
            Some("pbx")
        );
        assert_eq!(
            traced(&trace, "192.0.2.1:5060", OTHER),
            None,
            "carrier is not traced"
        );
        assert_eq!(
            traced(&trace, "198.51.100.9:5062", INVITE).as_deref(),
            Some("user:1001")
        );
        assert_eq!(trace.traced(), ["pbx", "user:1001"]);
    }

    #[test]
    fn run_time_switches_and_a_reload_resets_them() {
        let trace = SipTrace::default();
        let config = config("");
        trace.configure(&config);
        assert!(!trace.active.load(Ordering::Relaxed));
        trace.switch_on("carrier").expect("on");
        assert_eq!(
            traced(&trace, "192.0.2.1:5060", OTHER).as_deref(),
            Some("carrier")
        );
        assert_eq!(
            traced(&trace, "192.0.2.1:5099", OTHER),
            None,
            "another port is not the trunk"
        );
        assert!(trace.switch_on("nowhere").is_err());
        assert!(trace.switch_on("user:9999").is_err());
        trace.switch_off("carrier").expect("off");
        assert!(trace.switch_off("carrier").is_err());
        assert!(!trace.active.load(Ordering::Relaxed));
        trace.switch_on("pbx").expect("on");
        trace.configure(&config);
        assert!(trace.traced().is_empty());
    }

    #[test]
    fn a_traced_datagram_is_appended_to_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("trace.log");
        let trace = SipTrace::default();
        trace.configure(&config(&format!(
            "trace: {{ trunks: [carrier], file: \"{}\" }}\n",
            file.display()
        )));
        let local: SocketAddr = LOCAL.parse().expect("addr");
        trace.datagram(
            Direction::Sent,
            local,
            "192.0.2.1:5060".parse().expect("addr"),
            INVITE,
        );
        trace.datagram(
            Direction::Received,
            local,
            "10.0.0.1:5060".parse().expect("addr"),
            OTHER,
        );
        let text = std::fs::read_to_string(&file).expect("trace file");
        assert!(
            text.contains("sent 127.0.0.1:5060 -> 192.0.2.1:5060 [carrier]"),
            "{text}"
        );
        assert!(
            text.contains("INVITE sip:0049301234@192.0.2.1 SIP/2.0"),
            "{text}"
        );
        assert!(!text.contains("received"), "pbx is not traced: {text}");
    }
}
