//! The checks that turn the file as written into a [`Config`]: each value on
//! its own, then the keys that name each other (a route's trunk, a user's
//! `route_to`, the traced names), with every problem collected, not just the
//! first, and placed at its file, line and key (`file:line: key: message`, as
//! `vigil check` prints it).
//!
//! serde_yaml knows the line of a syntax or type error; the cross-key checks
//! run after deserialisation, when positions are gone, so they look the line
//! up by key path in a `LineIndex` of the same text. The checks touch no file
//! (a reload runs them too): whether the CDR paths can be written is for
//! `vigil check` to find out, and [`Config::problem`] places what it finds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::gateways::check_outbound;
use super::locate::LineIndex;
use super::media::MediaMode;
use super::schema::{
    FileCdr, FileConfig, FileRoute, FileTrunk, ListenEntry, MetricsFile, SipConfig,
};
use super::uplink::{self, AuthFile, RegisterFile};
use super::{
    CdrConfig, Config, ConfigProblem, KeepaliveConfig, Listener, PostgresSink, REGISTER_EXPIRES,
    Route, SessionTimerConfig, Trunk, TrunkAuth, TrunkRegistration, User, is_sql_identifier,
    parse_digest_algorithms, unknown,
};
use crate::sip::{DigestAlgorithm, Protocol};

/// Validates config text; `file` is only used in problems.
pub(super) fn validate(text: &str, file: &Path) -> Result<Config, Vec<ConfigProblem>> {
    let (raw, unknown) = unknown::parse_yaml(text);
    let mut checker = Checker {
        file: file.to_path_buf(),
        lines: LineIndex::build(text),
        problems: Vec::new(),
    };
    for key in unknown {
        checker.problem(key.path, key.message);
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            checker.problems.push(ConfigProblem {
                file: file.to_path_buf(),
                line: e.location().map(|l| l.line()),
                key: String::new(),
                message: strip_location(&e.to_string()),
            });
            return Err(checker.problems);
        }
    };
    let config = checker.check(raw);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(checker.problems)
    }
}

impl Config {
    /// A problem with `key` found after loading (`vigil check` trying the
    /// CDR paths), placed at the key's line like the parser's own.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> ConfigProblem {
        let line = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|text| LineIndex::build(&text).line_of(key));
        ConfigProblem {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// serde_yaml appends " at line L column C"; the line is reported separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Collects problems while turning the file format into a [`Config`].
struct Checker {
    file: PathBuf,
    lines: LineIndex,
    problems: Vec<ConfigProblem>,
}

impl Checker {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.problems.push(ConfigProblem {
            file: self.file.clone(),
            line: self.lines.line_of(&key),
            key,
            message: message.into(),
        });
    }

    fn check(&mut self, raw: FileConfig) -> Config {
        let listen = self.check_listen(&raw.listen);
        let session_timer = SessionTimerConfig::default().merged(&raw.session_timer);
        self.check_session_timer("session_timer", &session_timer);
        let verify_server = raw.tls.as_ref().is_none_or(|t| t.verify_server);
        let trunks = self.check_trunks(&raw.trunks, &session_timer, &raw.sip, verify_server);
        let routes = self.check_routes(&raw.routes, &trunks);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            self.problem(
                "log.level",
                format!("invalid log level {:?}: {e}", raw.log.level),
            );
        }
        if raw.sip.workers == Some(0) {
            self.problem("sip.workers", "must be at least 1");
        }
        if !(1..=32).contains(&raw.sip.max_attempts) {
            self.problem("sip.max_attempts", "must be 1..=32");
        }
        if !(2..=30).contains(&raw.sip.invite_timeout) {
            self.problem(
                "sip.invite_timeout",
                "must be 2..=30 seconds (Timer B ends an INVITE at 32 s; a trunk's \
                 outbound.invite_timeout may go to 1 with allow_short_intervals)",
            );
        }
        if raw.sip.max_ring_time == 0 {
            self.problem("sip.max_ring_time", "must be at least 1 second");
        }
        self.check_cdr(&raw.cdr);
        if let Some(registrar) = &raw.registrar {
            for (field, message) in registrar.problems() {
                self.problem(format!("registrar.{field}"), message);
            }
        }
        let keepalive = KeepaliveConfig::default().merged(&raw.nat_keepalive);
        for (field, message) in keepalive.problems("nat_keepalive") {
            self.problem(format!("nat_keepalive.{field}"), message);
        }
        let (users, user_index) = self.check_users(&raw, &trunks, &keepalive);
        for (i, name) in raw.trace.trunks.iter().enumerate() {
            if !trunks.iter().any(|t| &*t.name == name) {
                self.problem(
                    format!("trace.trunks[{i}]"),
                    format!("no trunk named {name:?}"),
                );
            }
        }
        for (i, name) in raw.trace.users.iter().enumerate() {
            if !users.iter().any(|u| &*u.name == name) {
                self.problem(
                    format!("trace.users[{i}]"),
                    format!("no user named {name:?}"),
                );
            }
        }
        let metrics_listen = raw.metrics.as_ref().and_then(|m| self.check_metrics(m));
        for (key, value) in [
            ("max_calls", raw.limits.max_calls),
            ("max_cps", raw.limits.max_cps),
            ("per_source_rps", raw.limits.per_source_rps),
            ("max_transactions", raw.limits.max_transactions),
            (
                "max_transactions_per_source",
                raw.limits.max_transactions_per_source,
            ),
            ("max_registrations", raw.limits.max_registrations),
        ] {
            if value == Some(0) {
                self.problem(
                    format!("limits.{key}"),
                    "must be at least 1 (leave it out for no limit)",
                );
            }
        }
        for (key, value) in [
            ("max_connections", raw.limits.max_connections),
            (
                "max_connections_per_source",
                raw.limits.max_connections_per_source,
            ),
        ] {
            if value == 0 {
                self.problem(format!("limits.{key}"), "must be at least 1");
            }
        }
        if !(10..=86_400).contains(&raw.limits.connection_idle_timeout) {
            self.problem(
                "limits.connection_idle_timeout",
                "must be 10..=86400 seconds (RFC 5626 clients ping every 2 minutes or so)",
            );
        }
        if !(1..=3600).contains(&raw.limits.per_source_cooldown) {
            self.problem("limits.per_source_cooldown", "must be 1..=3600 seconds");
        }
        let (policy, problems) = raw.policy.validated();
        for (field, message) in problems {
            self.problem(format!("policy.{field}"), message);
        }
        let (dns, problems) = raw.dns.check();
        for (field, message) in problems {
            self.problem(format!("dns.{field}"), message);
        }
        let tls = raw.tls.as_ref().map(|file| {
            let (tls, problems) = file.check();
            for (field, message) in problems {
                self.problem(format!("tls.{field}"), message);
            }
            tls
        });
        for (i, l) in listen.iter().enumerate() {
            if l.proto == Protocol::Tls && tls.is_none() {
                self.problem(
                    format!("listen[{i}]"),
                    "a tls: listener needs a `tls:` section (its certificate and key)",
                );
            }
        }
        for (i, t) in raw.trunks.iter().enumerate() {
            let built = trunks.get(i);
            let gateway_over_tls = built
                .and_then(|t| t.outbound.as_ref())
                .is_some_and(|ob| ob.gateways.iter().any(|g| g.transport == Protocol::Tls));
            let register_over_tls = built
                .and_then(|t| t.register.as_ref())
                .is_some_and(|r| r.transport == Protocol::Tls);
            let key = if t.transport == Some(Protocol::Tls) {
                Some(format!("trunks[{i}].transport"))
            } else if gateway_over_tls {
                Some(format!("trunks[{i}].outbound"))
            } else if register_over_tls {
                Some(format!("trunks[{i}].register"))
            } else {
                None
            };
            if let (Some(key), None) = (key, &tls) {
                self.problem(
                    key,
                    "tls (a sips: URI or transport: tls) needs a `tls:` section (the certificate Vigil presents)",
                );
            }
            if t.tls_verify.is_some() && tls.is_none() {
                self.problem(
                    format!("trunks[{i}].tls_verify"),
                    "needs a `tls:` section (the certificate Vigil presents over TLS)",
                );
            }
        }
        let (media, problems) = raw.media.check();
        for (field, message) in problems {
            self.problem(format!("media.{field}"), message);
        }
        if media.is_none() {
            let relayed = trunks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.media == MediaMode::Relay)
                .map(|(i, _)| format!("trunks[{i}].media"))
                .chain(
                    users
                        .iter()
                        .enumerate()
                        .filter(|(_, u)| u.media == Some(MediaMode::Relay))
                        .map(|(i, _)| format!("users[{i}].media")),
                )
                .collect::<Vec<_>>();
            for key in relayed {
                self.problem(key, "relay needs media.rtpengines");
            }
        }
        let state = raw.state.and_then(|file| match file.check() {
            Ok(state) => Some(state),
            Err((key, message)) => {
                self.problem(key, message);
                None
            }
        });
        if let Some(state_path) = state.as_ref().and_then(|s| s.path()) {
            let taken = [
                Some(("cdr.path", &raw.cdr.path)),
                raw.registrar.as_ref().map(|r| ("registrar.db", &r.db)),
            ];
            for (key, path) in taken.into_iter().flatten() {
                if path == state_path {
                    self.problem(
                        "state.path",
                        format!("is {key} too: each needs a file of its own"),
                    );
                }
            }
        }
        Config {
            file: self.file.clone(),
            listen,
            trunks,
            routes,
            cdr: CdrConfig {
                path: raw.cdr.path,
                max_pending: raw.cdr.max_pending,
                spool: raw.cdr.spool,
                postgres: raw.cdr.postgres.map(|url| PostgresSink {
                    url,
                    table: raw
                        .cdr
                        .table
                        .unwrap_or_else(|| PostgresSink::DEFAULT_TABLE.into()),
                }),
            },
            log: raw.log,
            sip: raw.sip,
            session_timer,
            registrar: raw.registrar,
            nat_keepalive: keepalive,
            users,
            user_index,
            policy,
            control_socket: raw
                .control
                .socket
                .unwrap_or_else(|| self.file.with_extension("sock")),
            metrics_listen,
            trace: raw.trace,
            limits: raw.limits,
            media,
            dns,
            tls,
            state,
        }
    }

    fn check_users(
        &mut self,
        raw: &FileConfig,
        trunks: &[Trunk],
        keepalive: &KeepaliveConfig,
    ) -> (Vec<User>, HashMap<Arc<str>, usize>) {
        if !raw.users.is_empty() && raw.registrar.is_none() {
            self.problem(
                "users",
                "users need a `registrar` section (at least `domain`)",
            );
        }
        // A bad global list is reported as `registrar.digest_algorithms`.
        let default_algorithms = raw
            .registrar
            .as_ref()
            .and_then(|r| parse_digest_algorithms(&r.digest_algorithms).ok())
            .unwrap_or_else(|| vec![DigestAlgorithm::Md5]);
        let mut users = Vec::with_capacity(raw.users.len());
        let mut index: HashMap<Arc<str>, usize> = HashMap::with_capacity(raw.users.len());
        for (i, u) in raw.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.user.trim().is_empty() || u.user.contains(['@', ':', ';', ' ']) {
                self.problem(
                    format!("{key}.user"),
                    format!("{:?} is not a SIP user name", u.user),
                );
            }
            if u.password.is_empty() {
                self.problem(format!("{key}.password"), "must not be empty");
            }
            let route_to = u.route_to.as_ref().and_then(|target| {
                match trunks.iter().position(|t| &*t.name == target) {
                    Some(j) if trunks[j].outbound.is_some() => Some(j),
                    Some(_) => {
                        self.problem(
                            format!("{key}.route_to"),
                            format!("trunk {target:?} has no `outbound` to route to"),
                        );
                        None
                    }
                    None => {
                        self.problem(
                            format!("{key}.route_to"),
                            format!("no trunk named {target:?}"),
                        );
                        None
                    }
                }
            });
            let user_keepalive = match &u.nat_keepalive {
                Some(over) => {
                    let merged = keepalive.merged(over);
                    let section = format!("{key}.nat_keepalive");
                    for (field, message) in merged.problems(&section) {
                        self.problem(format!("{section}.{field}"), message);
                    }
                    merged
                }
                None => keepalive.clone(),
            };
            let digest_algorithms = match &u.digest_algorithms {
                Some(names) => parse_digest_algorithms(names).unwrap_or_else(|message| {
                    self.problem(format!("{key}.digest_algorithms"), message);
                    Vec::new()
                }),
                None => default_algorithms.clone(),
            };
            let name: Arc<str> = u.user.as_str().into();
            if index.insert(name.clone(), users.len()).is_some() {
                self.problem(
                    format!("{key}.user"),
                    format!("user {:?} is defined twice", u.user),
                );
            }
            users.push(User {
                name,
                password: u.password.clone(),
                route_to,
                keepalive: user_keepalive,
                digest_algorithms,
                media: u.media,
            });
        }
        (users, index)
    }

    /// `cdr:` as written. Whether its paths can be written is for `vigil check`
    /// to find out: the parser touches no file (a reload parses too).
    fn check_cdr(&mut self, cdr: &FileCdr) {
        if cdr.path.as_os_str().is_empty() {
            self.problem("cdr.path", "must not be empty");
        } else if cdr.path.file_name().is_none() {
            self.problem("cdr.path", format!("{} names no file", cdr.path.display()));
        }
        if !(1..=CdrConfig::MAX_MAX_PENDING).contains(&cdr.max_pending) {
            self.problem(
                "cdr.max_pending",
                format!(
                    "{} is not in 1..={} (records held in memory)",
                    cdr.max_pending,
                    CdrConfig::MAX_MAX_PENDING
                ),
            );
        }
        if cdr
            .spool
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            self.problem("cdr.spool", "must not be empty (leave it out for none)");
        }
        self.check_postgres(cdr);
    }

    /// `cdr.postgres` and `cdr.table` as written; whether the database
    /// answers is for `vigil check` (and the daemon's start) to find out.
    fn check_postgres(&mut self, cdr: &FileCdr) {
        if let Some(url) = &cdr.postgres {
            if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                self.problem(
                    "cdr.postgres",
                    "must be a URL: postgresql://user[:password]@host[:port]/database",
                );
            } else if let Err(e) = url.parse::<tokio_postgres::Config>() {
                self.problem("cdr.postgres", format!("not a PostgreSQL URL: {e}"));
            }
        }
        if let Some(table) = &cdr.table {
            if cdr.postgres.is_none() {
                self.problem("cdr.table", "needs cdr.postgres (the database it is in)");
            } else if !is_sql_identifier(table) {
                self.problem(
                    "cdr.table",
                    format!(
                        "{table:?} is not a plain table name (lower-case letters, digits and _, at most 63)"
                    ),
                );
            }
        }
    }

    /// `metrics.listen`: a literal `ip:port` (no name: it is bound at start).
    fn check_metrics(&mut self, metrics: &MetricsFile) -> Option<SocketAddr> {
        match metrics.listen.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.problem("metrics.listen", format!("{addr} needs a port, e.g. 9060"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    "metrics.listen",
                    format!(
                        "{:?} is not ip:port (IPv6 as [addr]:port), e.g. \"127.0.0.1:9060\"",
                        metrics.listen
                    ),
                );
                None
            }
        }
    }

    fn check_session_timer(&mut self, key: &str, config: &SessionTimerConfig) {
        for (field, message) in config.problems(key) {
            self.problem(format!("{key}.{field}"), message);
        }
    }

    fn check_listen(&mut self, entries: &[ListenEntry]) -> Vec<Listener> {
        if entries.is_empty() {
            self.problem(
                "listen",
                "needs at least one address, e.g. \"udp:0.0.0.0:5060\"",
            );
        }
        let mut listeners: Vec<Listener> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let key = format!("listen[{i}]");
            let (addr, advertise) = match entry {
                ListenEntry::Plain(a) => (a.as_str(), None),
                ListenEntry::Detailed(d) => (d.addr.as_str(), d.advertise),
            };
            let Some((transport, socket)) = addr.split_once(':') else {
                self.problem(key, format!("{addr:?} is not transport:ip:port"));
                continue;
            };
            let proto = match Protocol::from_token(transport) {
                Some(p) => p,
                None => {
                    self.problem(
                        key,
                        format!("transport {transport:?} is not supported (udp, tcp or tls)"),
                    );
                    continue;
                }
            };
            match socket.parse::<SocketAddr>() {
                Ok(bind) if listeners.iter().any(|l| l.bind == bind && l.proto == proto) => {
                    self.problem(key, format!("{proto}:{bind} is listed twice"));
                }
                Ok(bind) => listeners.push(Listener {
                    bind,
                    advertise,
                    proto,
                }),
                Err(_) => self.problem(
                    key,
                    format!("{socket:?} is not ip:port (IPv6 as [addr]:port)"),
                ),
            }
        }
        listeners
    }

    fn check_trunks(
        &mut self,
        raw: &[FileTrunk],
        session_timer: &SessionTimerConfig,
        sip: &SipConfig,
        verify_server: bool,
    ) -> Vec<Trunk> {
        let mut trunks: Vec<Trunk> = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let key = format!("trunks[{i}]");
            if t.name.trim().is_empty() {
                self.problem(format!("{key}.name"), "must not be empty");
            } else if raw[..i].iter().any(|o| o.name == t.name) {
                self.problem(
                    format!("{key}.name"),
                    format!("trunk {:?} is defined twice", t.name),
                );
            }
            if t.inbound.is_none() && t.outbound.is_none() && t.register.is_none() {
                self.problem(
                    &key,
                    "needs `inbound`, `outbound`, `register`, or some of them",
                );
            }
            let mut inbound_from = Vec::new();
            for (j, net) in t.inbound.iter().flat_map(|ib| ib.from.iter()).enumerate() {
                match parse_net(net) {
                    Some(n) => inbound_from.push(n),
                    None => self.problem(
                        format!("{key}.inbound.from[{j}]"),
                        format!("{net:?} is not an IP address or network (CIDR)"),
                    ),
                }
            }
            let outbound = t.outbound.as_ref().and_then(|ob| {
                let (outbound, problems) = check_outbound(ob, sip.invite_timeout, t.transport);
                for (suffix, message) in problems {
                    self.problem(format!("{key}.outbound{suffix}"), message);
                }
                outbound
            });
            let trunk_timer = match &t.session_timer {
                Some(over) => {
                    let merged = session_timer.merged(over);
                    self.check_session_timer(&format!("{key}.session_timer"), &merged);
                    merged
                }
                None => *session_timer,
            };
            trunks.push(Trunk {
                name: t.name.as_str().into(),
                inbound_from,
                outbound,
                route_to: None,
                session_timer: trunk_timer,
                policy: t.policy.clone().filter(|p| !p.is_empty()),
                media: t.media.unwrap_or(MediaMode::Passthrough),
                auth: t.auth.as_ref().and_then(|a| self.check_auth(&key, a)),
                register: t
                    .register
                    .as_ref()
                    .and_then(|r| self.check_register(&key, r, t.transport)),
                tls_verify: t.tls_verify.unwrap_or(verify_server),
                prack: t.prack.unwrap_or(sip.prack),
            });
        }
        for (i, t) in raw.iter().enumerate() {
            if let Some(target) = &t.route_to {
                let key = format!("trunks[{i}].route_to");
                match trunks.iter().position(|o| &*o.name == target) {
                    Some(j) if trunks[j].outbound.is_some() => trunks[i].route_to = Some(j),
                    Some(_) => self.problem(
                        key,
                        format!("trunk {target:?} has no `outbound` to route to"),
                    ),
                    None => self.problem(key, format!("no trunk named {target:?}")),
                }
            }
        }
        trunks
    }

    /// `trunks[i].auth`: a user and a password, both non-empty.
    fn check_auth(&mut self, trunk: &str, auth: &AuthFile) -> Option<Arc<TrunkAuth>> {
        let before = self.problems.len();
        if !uplink::is_sip_user(&auth.user) {
            self.problem(
                format!("{trunk}.auth.user"),
                format!("{:?} is not a SIP user name", auth.user),
            );
        }
        if auth.password.is_empty() {
            self.problem(format!("{trunk}.auth.password"), "must not be empty");
        }
        (self.problems.len() == before).then(|| {
            Arc::new(TrunkAuth {
                user: auth.user.clone(),
                password: auth.password.clone(),
            })
        })
    }

    /// `trunks[i].register`: credentials, a registrar to resolve, names that
    /// fit in a SIP URI, and an interval in [`REGISTER_EXPIRES`].
    fn check_register(
        &mut self,
        trunk: &str,
        register: &RegisterFile,
        trunk_transport: Option<Protocol>,
    ) -> Option<Arc<TrunkRegistration>> {
        let key = format!("{trunk}.register");
        let before = self.problems.len();
        if !uplink::is_sip_user(&register.user) {
            self.problem(
                format!("{key}.user"),
                format!("{:?} is not a SIP user name", register.user),
            );
        }
        if register.password.is_empty() {
            self.problem(format!("{key}.password"), "must not be empty");
        }
        let (hostport, transport) =
            match crate::dns::transport_of(&register.registrar, trunk_transport) {
                Ok(found) => found,
                Err(e) => {
                    self.problem(format!("{key}.registrar"), e.to_string());
                    (register.registrar.as_str(), Protocol::Udp)
                }
            };
        let registrar = match resolve(hostport) {
            Ok(addr) => Some(addr),
            Err(msg) => {
                self.problem(format!("{key}.registrar"), msg);
                None
            }
        };
        let domain = register
            .domain
            .clone()
            .unwrap_or_else(|| uplink::host_of(hostport).to_string());
        if crate::sip::Host::parse(&domain).is_err() {
            self.problem(
                format!("{key}.domain"),
                format!("{domain:?} is not a SIP domain"),
            );
        }
        let contact_user = register
            .contact_user
            .clone()
            .unwrap_or_else(|| register.user.clone());
        if register.contact_user.is_some() && !uplink::is_sip_user(&contact_user) {
            self.problem(
                format!("{key}.contact_user"),
                format!("{contact_user:?} is not a SIP user name"),
            );
        }
        if !REGISTER_EXPIRES.contains(&register.expires) {
            self.problem(
                format!("{key}.expires"),
                format!(
                    "{} is not in {}..={} seconds",
                    register.expires,
                    REGISTER_EXPIRES.start(),
                    REGISTER_EXPIRES.end()
                ),
            );
        }
        let registrar = registrar.filter(|_| self.problems.len() == before)?;
        Some(Arc::new(TrunkRegistration {
            auth: TrunkAuth {
                user: register.user.clone(),
                password: register.password.clone(),
            },
            registrar,
            transport,
            domain,
            contact_user,
            expires: register.expires,
        }))
    }

    fn check_routes(&mut self, raw: &[FileRoute], trunks: &[Trunk]) -> Vec<Route> {
        let mut routes = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("routes[{i}]");
            if raw[..i].iter().any(|o| o.prefix == r.prefix) {
                self.problem(
                    format!("{key}.prefix"),
                    format!("prefix {:?} is routed twice", r.prefix),
                );
            }
            let named: Vec<(String, &String)> = match (&r.trunk, r.trunks.is_empty()) {
                (Some(t), true) => vec![(format!("{key}.trunk"), t)],
                (None, false) => r
                    .trunks
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (format!("{key}.trunks[{j}]"), t))
                    .collect(),
                (Some(_), false) => {
                    self.problem(&key, "give either `trunk` or `trunks`, not both");
                    continue;
                }
                (None, true) => {
                    self.problem(&key, "needs `trunk` or `trunks`");
                    continue;
                }
            };
            let mut route = Route {
                prefix: r.prefix.clone(),
                trunks: Vec::with_capacity(named.len()),
            };
            for (key, name) in named {
                match trunks.iter().position(|t| *t.name == **name) {
                    Some(j) if route.trunks.contains(&j) => {
                        self.problem(key, format!("trunk {name:?} is named twice"))
                    }
                    Some(j) if trunks[j].outbound.is_some() => route.trunks.push(j),
                    Some(_) => {
                        self.problem(key, format!("trunk {name:?} has no `outbound` to route to"))
                    }
                    None => self.problem(key, format!("no trunk named {name:?}")),
                }
            }
            if !route.trunks.is_empty() {
                routes.push(route);
            }
        }
        routes
    }
}

/// `10.0.0.0/8`, or a bare address meaning just that host.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// `ip:port`, `[v6]:port` or `host:port` (resolved once, now).
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!("{s:?} needs a port, e.g. \"{s}:5060\""));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}
