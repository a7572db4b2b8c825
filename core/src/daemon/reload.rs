//! Hot reload: builds the whole new state from the config file — the parsed and
//! validated YAML, every Lua script compiled for every worker, every plugin
//! loaded and ABI-checked — and only when all of it succeeded hands it to the
//! receive loops, the workers and the registrar. A reload that fails changes
//! nothing: the running state stays and the error (file, line, key) is logged,
//! counted and returned to whoever asked.
//!
//! What a reload changes, and when: new calls use the new config at once; calls
//! in progress keep the session timers they negotiated (their peers agreed to
//! them) and their next hook call goes to the new scripts and plugins; keep-alive
//! settings apply from the next tick. A removed trunk takes no new calls; its
//! calls go on until they end (their in-dialog requests match their dialogs).
//! A new `listen` address is bound before anything is swapped (a bind that
//! fails refuses the reload); a removed one takes no new calls at once and is
//! closed once the transactions in flight on it are over ([`LISTEN_GRACE`]).
//! Settings bound at start (`sip.workers`, `cdr`, `log`, `registrar` on or off,
//! its `db`, a listener's `advertise`) need a restart, and a reload that changes
//! them says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::gateway_book::SharedBook;
use super::registrar::RegistrarInput;
use super::watch::FileWatcher;
use super::worker::{Reload, WorkerInput};
use crate::config::{Config, ConfigError, Listener};
use crate::ingress::overload::Overload;
use crate::metrics::Metrics;
use crate::policy::{PolicyLoadError, PolicyLoader};
use crate::sip::Protocol;
use crate::transaction::TxBudget;
use crate::transport::LocalSocket;
use crate::transport::{BoundSocket, Transport, TransportError};

/// How long a removed `listen` address keeps receiving: a transaction's
/// longest life on UDP (64 × T1, RFC 3261 Timers B, F and H).
pub const LISTEN_GRACE: Duration = Duration::from_secs(32);

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<PolicyLoadError>),
    #[error("{}: listen: {source}", file.display())]
    Listen {
        file: PathBuf,
        source: TransportError,
    },
    /// The `tls:` files cannot be used: the running certificate stays.
    #[error("{}: tls: {source}", file.display())]
    Tls {
        file: PathBuf,
        source: crate::transport::tls::TlsSetupError,
    },
    /// The daemon is shutting down: a worker no longer takes input.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// Where a reload's new state goes.
pub struct Targets {
    /// The receive loops' view of the config (admission, sharding).
    pub ingress: watch::Sender<Arc<Config>>,
    pub workers: Vec<mpsc::Sender<WorkerInput>>,
    pub registrar: Option<mpsc::Sender<RegistrarInput>>,
    pub listening: Listening,
    /// Bumped on every reload, applied or refused: the CDR writer reopens its
    /// file (log rotation: move the file, then reload).
    pub cdr_reopen: watch::Sender<u64>,
    /// The overload limits the receive loops apply (replaced when `limits`
    /// changes; unchanged limits keep their rate state).
    pub overload: watch::Sender<Arc<Overload>>,
    /// The workers' live-transaction budget (its limits change in place).
    pub budget: Arc<TxBudget>,
    /// The gateways' table and its DNS: rebuilt for the new trunks
    /// (gateways that remain keep their health and addresses).
    pub gateways: SharedBook,
}

/// Starts the receive loop of a socket.
pub type SpawnReceiver = Arc<dyn Fn(BoundSocket) -> JoinHandle<()> + Send + Sync>;

/// The sockets and their receive loops, which a reload may add to or close.
#[derive(Clone)]
pub struct Listening {
    pub transport: Arc<Transport>,
    pub spawn: SpawnReceiver,
    /// Each socket's receive loop, by bound address.
    pub receivers: Arc<Mutex<HashMap<SocketAddr, JoinHandle<()>>>>,
}

impl Listening {
    /// Binds `listener` and starts receiving on it.
    pub fn open(&self, listener: &Listener) -> Result<LocalSocket, TransportError> {
        let bound = self.transport.add(listener)?;
        let local = bound.0;
        let task = (self.spawn)(bound);
        self.lock().insert(local.bind, task);
        Ok(local)
    }

    /// Stops receiving on `bind` and closes it.
    pub fn close(&self, bind: SocketAddr) {
        if let Some(task) = self.lock().remove(&bind) {
            task.abort();
        }
        self.transport.remove(bind);
    }

    /// Stops every receive loop (shutdown).
    pub fn stop_all(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, JoinHandle<()>>> {
        self.receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running config and what was loaded for it; reloads replace both.
pub struct Reloader {
    path: PathBuf,
    current: Arc<Config>,
    loader: PolicyLoader,
    targets: Targets,
    metrics: Arc<Metrics>,
    status: watch::Sender<ReloadStatus>,
}

/// The running config's version, for `vigil ctl status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadStatus {
    pub config: PathBuf,
    /// 1 for the config the daemon started with, one more per applied reload.
    pub generation: u64,
    /// When the running config was loaded (RFC 3339).
    pub loaded_at: String,
    /// The last refused reload's error and when it happened, if the last
    /// reload was refused.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Reloader {
    pub fn new(
        current: Arc<Config>,
        loader: PolicyLoader,
        targets: Targets,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        let status = ReloadStatus {
            config: current.file.clone(),
            generation: 1,
            loaded_at: timestamp(),
            last_error: None,
            last_error_at: None,
        };
        Reloader {
            path: current.file.clone(),
            current,
            loader,
            targets,
            metrics,
            status: watch::Sender::new(status),
        }
    }

    /// Follows the running config's version.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Reloads the config file; the text says what changed or why nothing did.
    /// Every outcome is logged and counted.
    pub async fn reload(&mut self) -> Result<String, ReloadError> {
        let result = self.try_reload().await;
        self.targets.cdr_reopen.send_modify(|n| *n += 1);
        match &result {
            Ok(summary) => {
                self.status.send_modify(|s| {
                    s.generation += 1;
                    s.loaded_at = timestamp();
                    s.last_error = None;
                    s.last_error_at = None;
                });
                Metrics::count(&self.metrics.config_reloads);
                tracing::info!(file = %self.path.display(), %summary, "config reloaded");
            }
            Err(e) => {
                self.status.send_modify(|s| {
                    s.last_error = Some(e.to_string());
                    s.last_error_at = Some(timestamp());
                });
                Metrics::count(&self.metrics.config_reload_failures);
                tracing::error!(file = %self.path.display(), error = %e, "config reload refused, the running config stays");
            }
        }
        result
    }

    async fn try_reload(&mut self) -> Result<String, ReloadError> {
        let config = Config::load(&self.path)?;
        let (loader, mut errors) = self.loader.reload(&config);
        // Each worker (and the registrar) gets its own Lua states, compiled
        // now: a script that fails to compile fails the reload, never a worker.
        let mut worker_policies = Vec::with_capacity(self.targets.workers.len());
        for _ in 0..self.targets.workers.len() + 1 {
            let (policies, failed) = loader.policies(&config);
            for e in failed {
                if !errors
                    .iter()
                    .any(|known| known.to_string() == e.to_string())
                {
                    errors.push(e);
                }
            }
            worker_policies.push(policies);
        }
        if !errors.is_empty() {
            return Err(ReloadError::Policy(errors));
        }
        let registrar_policy = worker_policies
            .pop()
            .map(|p| p.default_policy())
            .ok_or(ReloadError::ShuttingDown)?;
        // The certificates are read again: a bad one refuses the reload
        // before anything changed.
        let tls_server = match &config.tls {
            Some(tls) => Some(super::tls_setup(tls).map_err(|source| ReloadError::Tls {
                file: self.path.clone(),
                source,
            })?),
            None => None,
        };
        let (added, removed) = listen_changes(&self.current.listen, &config.listen);
        let listening = &self.targets.listening;
        let mut opened = Vec::new();
        for listener in added {
            match listening.open(listener) {
                Ok(local) => opened.push(local.bind),
                Err(e) => {
                    for bind in opened {
                        listening.close(bind);
                    }
                    return Err(ReloadError::Listen {
                        file: self.path.clone(),
                        source: e,
                    });
                }
            }
        }
        // New calls stop using a removed address at once; it keeps receiving
        // until the transactions in flight on it are over.
        let sockets: Arc<[LocalSocket]> = listening
            .transport
            .local_sockets()
            .iter()
            .filter(|s| !removed.contains(&s.bind))
            .copied()
            .collect();
        for bind in &removed {
            let (listening, bind) = (listening.clone(), *bind);
            tokio::spawn(async move {
                tokio::time::sleep(LISTEN_GRACE).await;
                listening.close(bind);
            });
        }

        let config = Arc::new(config);
        let summary = summarise(&self.current, &config);
        if config.limits != self.current.limits {
            listening.transport.connections().set_limits(
                crate::transport::connections::StreamLimits::from_config(&config.limits),
            );
            let overload = Overload::new(&config.limits, self.metrics.clone());
            self.targets.overload.send_replace(Arc::new(overload));
            self.targets.budget.set_limits(&config.limits);
        }
        if let Some(setup) = tls_server {
            setup.apply(listening.transport.connections());
        }
        self.targets.ingress.send_replace(config.clone());
        listening.transport.trace().configure(&config);
        let gateways = self
            .targets
            .gateways
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_config(config.clone());
        for (worker, policies) in self.targets.workers.iter().zip(worker_policies) {
            let reload = Reload {
                config: config.clone(),
                policies,
                sockets: sockets.clone(),
                gateways: gateways.clone(),
            };
            worker
                .send(WorkerInput::Reload(Box::new(reload)))
                .await
                .map_err(|_| ReloadError::ShuttingDown)?;
        }
        if let Some(registrar) = &self.targets.registrar {
            let input = RegistrarInput::Reload {
                config: config.clone(),
                policy: registrar_policy,
                sockets,
            };
            registrar
                .send(input)
                .await
                .map_err(|_| ReloadError::ShuttingDown)?;
        }
        self.loader = loader;
        self.current = config;
        Ok(summary)
    }
}

/// One line on what the reload changed, and what it cannot change live.
fn summarise(old: &Config, new: &Config) -> String {
    let mut parts = vec![format!(
        "{} trunks, {} routes, {} users",
        new.trunks.len(),
        new.routes.len(),
        new.users.len()
    )];
    let names =
        |c: &Config| -> Vec<String> { c.trunks.iter().map(|t| t.name.to_string()).collect() };
    let (old_names, new_names) = (names(old), names(new));
    let added: Vec<&String> = new_names
        .iter()
        .filter(|n| !old_names.contains(n))
        .collect();
    let removed: Vec<&String> = old_names
        .iter()
        .filter(|n| !new_names.contains(n))
        .collect();
    if !added.is_empty() {
        parts.push(format!("trunks added: {added:?}"));
    }
    if !removed.is_empty() {
        parts.push(format!(
            "trunks removed (their calls go on, no new ones): {removed:?}"
        ));
    }
    let (added, removed) = listen_changes(&old.listen, &new.listen);
    if !added.is_empty() {
        let binds: Vec<String> = added.iter().map(|l| l.bind.to_string()).collect();
        parts.push(format!("listening on {binds:?}"));
    }
    if !removed.is_empty() {
        parts.push(format!(
            "closing {removed:?} in {} s",
            LISTEN_GRACE.as_secs()
        ));
    }
    let restart = needs_restart(old, new);
    if !restart.is_empty() {
        parts.push(format!(
            "not applied until a restart: {}",
            restart.join(", ")
        ));
    }
    parts.join("; ")
}

/// Settings bound at start that a reload cannot change.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let advertise_changed = new.listen.iter().any(|l| {
        old.listen
            .iter()
            .any(|o| o.bind == l.bind && o.advertise != l.advertise)
    });
    if advertise_changed {
        keys.push("listen[].advertise");
    }
    let streams = |c: &Config| -> Vec<Listener> {
        c.listen
            .iter()
            .filter(|l| l.proto != Protocol::Udp)
            .cloned()
            .collect()
    };
    if streams(old) != streams(new) {
        keys.push("listen (tcp)");
    }
    if old.workers() != new.workers() {
        keys.push("sip.workers");
    }
    if old.cdr.path != new.cdr.path {
        keys.push("cdr.path");
    }
    if old.cdr.max_pending != new.cdr.max_pending {
        keys.push("cdr.max_pending");
    }
    if old.cdr.spool != new.cdr.spool {
        keys.push("cdr.spool");
    }
    if old.metrics_listen != new.metrics_listen {
        keys.push("metrics.listen");
    }
    if old.log != new.log {
        keys.push("log");
    }
    match (&old.registrar, &new.registrar) {
        (Some(a), Some(b)) if a.db != b.db || a.domain != b.domain => {
            keys.push("registrar.db/domain")
        }
        (Some(_), None) | (None, Some(_)) => keys.push("registrar"),
        _ => {}
    }
    if old.state != new.state {
        keys.push("state");
    }
    keys
}

/// The listeners to bind (in `new` only) and the addresses to close (in `old`
/// only), by bound address.
fn listen_changes<'a>(
    old: &[Listener],
    new: &'a [Listener],
) -> (Vec<&'a Listener>, Vec<SocketAddr>) {
    // Stream listeners are bound at start only (see `needs_restart`).
    let udp = |l: &&Listener| l.proto == Protocol::Udp;
    let added = new
        .iter()
        .filter(udp)
        .filter(|l| !old.iter().filter(udp).any(|o| o.bind == l.bind))
        .collect();
    let removed = old
        .iter()
        .filter(udp)
        .filter(|o| !new.iter().filter(udp).any(|l| l.bind == o.bind))
        .map(|o| o.bind)
        .collect();
    (added, removed)
}

/// What asks for a reload, and where its answer goes (if anyone waits).
pub struct ReloadRequest {
    /// For the log: `SIGHUP`, `file change`, `vigil reload`.
    pub cause: &'static str,
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// Serves reload requests one at a time, in order, until every sender is gone.
/// Requests that queued up while a reload ran are served by one reload (they
/// all asked for the file as it is now), and each asker gets its answer.
pub async fn serve_reloads(mut reloader: Reloader, mut requests: mpsc::Receiver<ReloadRequest>) {
    let mut batch = Vec::new();
    while requests.recv_many(&mut batch, 64).await > 0 {
        let causes: Vec<&str> = batch.iter().map(|r| r.cause).collect();
        tracing::info!(cause = ?causes, "reloading the config");
        let outcome = reloader.reload().await.map_err(|e| e.to_string());
        for request in batch.drain(..) {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

/// Bursts of file events closer than this are one change (an editor's save is
/// several writes, or a write and a rename).
const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

/// What a config depends on: the file itself and each plugin (watched as
/// files), and each Lua script's directory (watched as a tree, for the
/// modules a script `require`s; only `.lua` files there count).
fn watched_paths(config: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = vec![config.file.clone()];
    let mut trees: Vec<PathBuf> = Vec::new();
    let sources = std::iter::once(&config.policy.default)
        .chain(config.trunks.iter().filter_map(|t| t.policy.as_ref()));
    for sources in sources {
        if let Some(plugin) = &sources.plugin
            && !files.contains(plugin)
        {
            files.push(plugin.clone());
        }
        if let Some(script) = &sources.lua {
            let dir = match script.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !trees.contains(&dir) {
                trees.push(dir);
            }
        }
    }
    (files, trees)
}

/// Watches the files the running config depends on and asks for a reload when
/// one changes; after each reload it watches the new config's files. Ends when
/// the reloader is gone.
pub async fn watch_files(
    mut configs: watch::Receiver<Arc<Config>>,
    reloads: mpsc::Sender<ReloadRequest>,
) {
    loop {
        let config = configs.borrow_and_update().clone();
        let (files, trees) = watched_paths(&config);
        let (changed_tx, mut changed) = mpsc::channel(1);
        let watcher = match FileWatcher::start(
            &files,
            &trees,
            Some("lua"),
            WATCH_DEBOUNCE,
            changed_tx,
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "not watching the config's files: reload with SIGHUP or `vigil reload`");
                None
            }
        };
        loop {
            tokio::select! {
                Some(()) = changed.recv(), if watcher.is_some() => {
                    let request = ReloadRequest { cause: "file change", reply: None };
                    // A full queue already holds a reload that will read the files.
                    let _ = reloads.try_send(request);
                }
                next = configs.changed() => {
                    if next.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "listen: [\"udp:127.0.0.1:5060\"]\n\
             trunks:\n  - name: pbx\n    inbound: {{ from: [\"10.0.0.0/8\"] }}\n    route_to: carrier\n\
             \x20 - name: carrier\n    outbound: {{ to: \"192.0.2.1:5060\" }}\n\
             cdr: {{ path: cdr.jsonl }}\n{extra}"
        );
        Config::parse(&text, Path::new("/etc/vigil/vigil.yaml")).expect("config")
    }

    #[test]
    fn listen_changes_are_found_by_bound_address() {
        let old = config("");
        let mut new = old.clone();
        new.listen.insert(
            0,
            Listener {
                bind: "127.0.0.2:5060".parse().expect("addr"),
                advertise: None,
                proto: Protocol::Udp,
            },
        );
        let (added, removed) = listen_changes(&old.listen, &new.listen);
        assert_eq!(added, vec![&new.listen[0]]);
        assert!(removed.is_empty());
        let (added, removed) = listen_changes(&new.listen, &old.listen);
        assert!(added.is_empty());
        assert_eq!(removed, vec![new.listen[0].bind]);
    }

    #[test]
    fn the_summary_names_trunk_changes_and_what_needs_a_restart() {
        let old = config("");
        let mut new = config("sip: { workers: 7 }\n");
        new.trunks.pop();
        new.cdr.path = "other.jsonl".into();
        new.cdr.spool = Some("/var/spool/vigil".into());
        new.state = Some(crate::config::StateConfig::File {
            path: "calls.db".into(),
        });
        let summary = summarise(&old, &new);
        assert!(
            summary.starts_with("1 trunks, 0 routes, 0 users"),
            "{summary}"
        );
        assert!(
            summary.contains("trunks removed (their calls go on, no new ones): [\"carrier\"]"),
            "{summary}"
        );
        assert!(
            summary
                .contains("not applied until a restart: sip.workers, cdr.path, cdr.spool, state"),
            "{summary}"
        );
        assert_eq!(summarise(&old, &old), "2 trunks, 0 routes, 0 users");
    }

    #[test]
    fn the_watched_paths_are_the_config_the_plugins_and_the_script_directories() {
        let mut config =
            config("policy: { lua: scripts/default.lua, plugin: /usr/lib/vigil/libvendor.so }\n");
        config.trunks[1].policy = Some(crate::config::PolicySources {
            lua: Some("/srv/carrier/rules.lua".into()),
            plugin: Some("/usr/lib/vigil/libvendor.so".into()),
        });
        let (files, trees) = watched_paths(&config);
        assert_eq!(
            files,
            vec![
                PathBuf::from("/etc/vigil/vigil.yaml"),
                PathBuf::from("/usr/lib/vigil/libvendor.so"),
            ]
        );
        assert_eq!(
            trees,
            vec![PathBuf::from("scripts"), PathBuf::from("/srv/carrier")]
        );
    }
}
