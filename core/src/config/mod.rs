//! The YAML configuration and the validated [`Config`] the switch runs on.
//!
//! Every error names the file, the line and the key, because an operator editing a
//! live switch's config at 3 a.m. should not have to guess. Loading is all-or-
//! nothing: a [`Config`] only exists if every check passed, which is what lets a
//! reload swap it in atomically.
//!
//! This module holds the validated types, the entry points ([`Config::load`],
//! [`Config::parse`], [`control_socket_for`]) and the errors. The rest, by concern:
//! - `schema`: the file as written, its serde types and their defaults;
//! - `unknown`: every key nothing reads, reported with the keys expected there;
//! - `check`: the checks that build a [`Config`] from the file as written, each
//!   problem placed at its line (`locate` finds the line of a key path);
//! - `routing`: the run-time lookups on a built [`Config`] (admission, routes,
//!   users);
//! - `gateways`: a trunk's `outbound:` (its gateways, failover, probes);
//! - `uplink`: a trunk's `auth` and `register` (Vigil as the carrier's client);
//! - `prack`: `sip.prack` and a trunk's `prack` (RFC 3262's 100rel);
//! - `session_timer`, `registrar`, `policy`, `tls`: one section each, as written,
//!   as in force, and the ranges its values must lie in.

mod check;
mod gateways;
mod locate;
mod media;
mod policy;
mod prack;
mod registrar;
mod routing;
mod schema;
mod session_timer;
mod state;
mod tls;
mod unknown;
mod uplink;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::DigestAlgorithm;
pub use gateways::{
    DEFAULT_FAILOVER_CODES, GatewayConfig, MAX_GATEWAYS, ProbeConfig, TrunkOutbound,
};
pub use media::{MediaConfig, MediaMode, OnFailure, TimeoutMode};
pub use policy::{
    DEFAULT_LUA_INSTRUCTION_LIMIT, DEFAULT_LUA_MEMORY_LIMIT_MB, PolicyConfig, PolicySources,
};
pub use prack::PrackMode;
pub use registrar::{
    KeepaliveConfig, KeepaliveFile, KeepaliveMode, RegistrarConfig, UserFile,
    parse_digest_algorithms,
};
pub use routing::canonical_ip;
pub use schema::{LimitsConfig, LogConfig, LogFormat, SipConfig, TraceConfig};
pub use session_timer::{
    PreferRefresher, RFC_MIN_SE, RefreshMethod, SessionTimerConfig, SessionTimerFile,
};
pub use state::StateConfig;
pub use tls::{TlsConfig, TlsFile};
pub use uplink::{REGISTER_EXPIRES, TrunkAuth, TrunkRegistration};

/// A config that failed to load: every problem found, each with its place.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The key path in serde_yaml's notation, e.g. `trunks[1].route_to`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file.display())?,
            None => write!(f, "{}: ", self.file.display())?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

// ---------------------------------------------------------------------------
// The validated config.

/// A validated configuration. Cheap to share (`Arc`), never mutated: a reload
/// builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listen: Vec<Listener>,
    pub trunks: Vec<Trunk>,
    pub routes: Vec<Route>,
    pub cdr: CdrConfig,
    pub log: LogConfig,
    pub sip: SipConfig,
    /// The global `session_timer:` section (each trunk has its merged copy).
    pub session_timer: SessionTimerConfig,
    /// The registrar, if users may register.
    pub registrar: Option<RegistrarConfig>,
    /// The global `nat_keepalive:` section (each user has its merged copy; the
    /// batching keys apply to the whole registry).
    pub nat_keepalive: KeepaliveConfig,
    pub users: Vec<User>,
    /// User name → index into `users`.
    user_index: HashMap<Arc<str>, usize>,
    /// The default policy sources and Lua's bounds.
    pub policy: PolicyConfig,
    /// The control socket (`vigil reload`), see [`control_socket_for`].
    pub control_socket: PathBuf,
    /// Where `/metrics` is served over HTTP (`metrics.listen`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Trunks and users whose SIP messages are traced at start.
    pub trace: TraceConfig,
    pub limits: LimitsConfig,
    /// `media:` with at least one rtpengine; `None`: no call is relayed.
    pub media: Option<MediaConfig>,
    /// How gateway names are resolved (`dns:`; the system's resolver
    /// without servers).
    pub dns: crate::dns::DnsSettings,
    /// `tls:` — the certificate and trust for TLS; `None`: no TLS at all.
    pub tls: Option<TlsConfig>,
    /// `state:` — the store that keeps established calls across restarts;
    /// `None`: calls live only in the process.
    pub state: Option<StateConfig>,
}

/// The control socket a config names: `control.socket`, else the config file's
/// path with the extension `.sock` (`/etc/vigil/vigil.yaml` →
/// `/etc/vigil/vigil.sock`), so two daemons on two configs never collide.
///
/// Read leniently, so that `vigil reload` still finds a running daemon when the
/// file it is asked to reload is broken.
pub fn control_socket_for(config_file: &Path) -> PathBuf {
    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default)]
        control: Option<LenientControl>,
    }
    #[derive(Deserialize)]
    struct LenientControl {
        #[serde(default)]
        socket: Option<PathBuf>,
    }
    std::fs::read_to_string(config_file)
        .ok()
        .and_then(|text| serde_yaml::from_str::<Lenient>(&text).ok())
        .and_then(|l| l.control)
        .and_then(|c| c.socket)
        .unwrap_or_else(|| config_file.with_extension("sock"))
}

/// A user that may register, and call with digest credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: Arc<str>,
    pub password: String,
    /// Index into [`Config::trunks`] for this user's calls with no prefix route.
    pub route_to: Option<usize>,
    /// Keep-alive for this user's contacts (global, then overrides).
    pub keepalive: KeepaliveConfig,
    /// The digest algorithms this user is challenged with and may answer
    /// with, in order: its own `digest_algorithms`, else the registrar's.
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// Its own `media:`; `None`: relayed when it is behind a NAT.
    pub media: Option<MediaMode>,
}

/// A UDP socket or a TCP listener to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub bind: SocketAddr,
    /// The IP written into Via and Contact; defaults to the bound IP, or for a
    /// wildcard bind to the host's primary address (found at startup).
    pub advertise: Option<IpAddr>,
    pub proto: crate::sip::Protocol,
}

/// A trunk: a peer that may send calls (`inbound`), receive them (`outbound`), or
/// both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: Arc<str>,
    /// Source networks whose INVITEs this trunk admits.
    pub inbound_from: Vec<IpNet>,
    /// Where calls routed to this trunk are sent: its gateways, and when a
    /// call moves from one to the next.
    pub outbound: Option<TrunkOutbound>,
    /// Index into [`Config::trunks`] of the default outbound trunk.
    pub route_to: Option<usize>,
    /// Session-timer settings for this trunk's legs (global, then overrides).
    pub session_timer: SessionTimerConfig,
    /// This trunk's own policy sources; `None` uses the global `policy:`.
    pub policy: Option<PolicySources>,
    /// Whether its legs' media is anchored on rtpengine.
    pub media: MediaMode,
    /// Credentials for the carrier's challenges to requests sent on this trunk.
    pub auth: Option<Arc<TrunkAuth>>,
    /// The registration Vigil keeps with the carrier.
    pub register: Option<Arc<TrunkRegistration>>,
    /// Whether a TLS connection to this trunk checks the server's certificate
    /// against the trunk's host name: its `tls_verify`, else
    /// `tls.verify_server`, else `true`.
    pub tls_verify: bool,
    /// Reliable provisionals on its legs: its `prack`, else `sip.prack`.
    pub prack: PrackMode,
}

/// A prefix route to outbound trunks, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    /// Indices into [`Config::trunks`], never empty.
    pub trunks: Vec<usize>,
}

/// `cdr:` — where call detail records go, and where they wait while that
/// file cannot be written (a full disk, a deleted directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrConfig {
    /// The CDR file, appended to.
    pub path: PathBuf,
    /// Records held in memory while the file cannot be written; later ones go
    /// to the spill file (in order), so a long outage cannot eat the heap.
    pub max_pending: usize,
    /// A directory for the spill file, ideally on another disk than `path`
    /// (a disk that is full for the CDR file is full for a spill beside it),
    /// and for the database's spool.
    pub spool: Option<PathBuf>,
    /// `cdr.postgres` and `cdr.table`: CDRs go to this database too.
    pub postgres: Option<PostgresSink>,
}

/// `cdr.postgres`: a PostgreSQL database that gets one row per call, beside
/// the CDR file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSink {
    /// The connection URL as written (it may hold a password: never logged).
    pub url: String,
    /// The table (a plain SQL identifier, checked).
    pub table: String,
}

impl PostgresSink {
    pub const DEFAULT_TABLE: &'static str = "vigil_cdr";

    /// The URL without its password, for logs and `vigil ctl status`.
    pub fn shown_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => self.url.clone(),
        }
    }
}

/// Whether `name` can be a table's name as Vigil writes it in SQL unquoted:
/// lower-case letters, digits and `_`, not starting with a digit, at most 63
/// bytes (PostgreSQL's limit).
pub fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl CdrConfig {
    /// About 5 MB of CDR lines: minutes of a busy switch's calls.
    pub const DEFAULT_MAX_PENDING: usize = 10_000;
    /// The most `max_pending` may be (about 5 GB of lines).
    pub const MAX_MAX_PENDING: usize = 10_000_000;

    /// A config writing to `path` with the default limits and no spool.
    pub fn at(path: impl Into<PathBuf>) -> CdrConfig {
        CdrConfig {
            path: path.into(),
            max_pending: CdrConfig::DEFAULT_MAX_PENDING,
            spool: None,
            postgres: None,
        }
    }

    /// Where CDRs wait for the database: the folder `<table>.spool` in
    /// `cdr.spool`, or beside the CDR file without one.
    pub fn db_spool_dir(&self) -> Option<PathBuf> {
        let sink = self.postgres.as_ref()?;
        let name = format!("{}.spool", sink.table);
        Some(match &self.spool {
            Some(dir) => dir.join(name),
            None => self.path.with_file_name(name),
        })
    }

    /// Where records that overflow memory wait: `<spool>/<file name>.spill`,
    /// or `<path>.spill` beside the CDR file without a spool.
    pub fn spill_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_else(|| "cdr".into());
        name.push(".spill");
        match &self.spool {
            Some(dir) => dir.join(name),
            None => self.path.with_file_name(name),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        check::validate(text, file).map_err(ConfigError::Invalid)
    }

    /// Worker count: configured, else one per CPU.
    pub fn workers(&self) -> usize {
        self.sip.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

#[cfg(test)]
mod tests;
