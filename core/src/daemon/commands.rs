//! What the control socket's commands do: it asks the workers about their
//! calls (each worker owns its calls, so the question goes to every worker and
//! the answers are merged), hangs a call up where it lives, reads the location
//! view for registrations, and hands reloads to the reloader. Query answers
//! are JSON, for people (`vigil ctl`) and scripts alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::cdr_database::CdrDbStatus;
use super::cdr_writer::CdrStatus;
use super::control::{Command, Reply};
use super::reload::{ReloadRequest, ReloadStatus};
use super::state_writer::StateStatus;
use super::worker::WorkerInput;
use crate::call::CallSnapshot;
use crate::engine::EngineResources;
use crate::gateway::Gateways;
use crate::registrar::location::LocationView;
use crate::transaction::TxBudget;
use crate::transport::Transport;

/// How long a worker may take to answer a query before it is left out.
const WORKER_ANSWER: Duration = Duration::from_secs(5);

/// What the commands reach.
#[derive(Clone)]
pub struct Operator {
    pub workers: Vec<mpsc::Sender<WorkerInput>>,
    pub location: Option<Arc<LocationView>>,
    pub reloads: mpsc::Sender<ReloadRequest>,
    pub status: watch::Receiver<ReloadStatus>,
    pub transport: Arc<Transport>,
    pub budget: Arc<TxBudget>,
    /// The CDR writer's state: pending and spilled records, errors.
    pub cdr: watch::Receiver<CdrStatus>,
    /// The database sink's state (`cdr.postgres`): written rows, the spool's
    /// depth, errors.
    pub cdr_database: Option<watch::Receiver<CdrDbStatus>>,
    /// The state store's: backend, role, lag, errors (`None`: no `state:`).
    pub state: Option<watch::Receiver<StateStatus>>,
    /// Every trunk's gateways and their health.
    pub gateways: Arc<ArcSwap<Gateways>>,
}

/// Serves commands until the control server is gone; each runs on its own
/// task, so a slow reload does not hold up a `calls`.
pub async fn serve_commands(
    operator: Operator,
    mut commands: mpsc::Receiver<(Command, oneshot::Sender<Reply>)>,
) {
    while let Some((command, reply)) = commands.recv().await {
        let operator = operator.clone();
        tokio::spawn(async move {
            let answer = operator.answer(command).await;
            let _ = reply.send(answer);
        });
    }
}

/// Answers commands while this node is a standby (with Redis, before it
/// holds the lease): `status` says so and whether Redis answers (`reach`:
/// why not); anything else is for the active node, which has the calls.
pub async fn serve_standby(
    url: String,
    reach: watch::Receiver<Option<String>>,
    mut commands: mpsc::Receiver<(Command, oneshot::Sender<Reply>)>,
) {
    #[derive(Serialize)]
    struct Standby<'a> {
        backend: &'static str,
        location: &'a str,
        role: &'static str,
        /// `ok` while Redis answers, `failing` while it does not.
        state: &'static str,
        last_error: Option<String>,
    }
    while let Some((command, reply)) = commands.recv().await {
        let answer = match command {
            Command::Status => {
                let last_error = reach.borrow().clone();
                json(&serde_json::json!({
                    "state": Standby {
                        backend: "redis",
                        location: &url,
                        role: "standby",
                        state: if last_error.is_some() { "failing" } else { "ok" },
                        last_error,
                    }
                }))
            }
            other => Reply::error(format!(
                "this node is a standby: another node holds the lease and serves the calls; \
                 ask it for `{}`",
                other.word()
            )),
        };
        let _ = reply.send(answer);
    }
}

impl Operator {
    async fn answer(&self, command: Command) -> Reply {
        match command {
            Command::Reload => self.reload().await,
            Command::Status => {
                #[derive(Serialize)]
                struct Status {
                    #[serde(flatten)]
                    reload: ReloadStatus,
                    calls: usize,
                    resources: Resources,
                    cdr: CdrStatus,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    cdr_database: Option<CdrDbStatus>,
                    state: Option<StateStatus>,
                    connections: Vec<crate::transport::connections::ConnectionSnapshot>,
                }
                let reload = self.status.borrow().clone();
                let calls = self.calls().await.len();
                let resources = self.resources().await;
                let cdr = self.cdr.borrow().clone();
                json(&Status {
                    reload,
                    calls,
                    resources,
                    cdr,
                    cdr_database: self.cdr_database.as_ref().map(|s| s.borrow().clone()),
                    state: self.state.as_ref().map(|s| s.borrow().clone()),
                    connections: self.transport.connections().snapshot(),
                })
            }
            Command::Calls => json(&self.calls().await),
            Command::Call(id) => match self
                .calls()
                .await
                .into_iter()
                .find(|c| c.call_id == id || c.b_call_id == id)
            {
                Some(call) => json(&call),
                None => Reply::error(format!("no call with Call-ID {id:?}")),
            },
            Command::Hangup(id) => self.hang_up(&id).await,
            Command::Registrations => match &self.location {
                Some(view) => json(&view.snapshot(Instant::now())),
                None => Reply::error("no registrar is configured"),
            },
            Command::Gateways => json(&self.gateways.load().snapshot(Instant::now())),
            Command::TrunkRegistrations => {
                let all: Vec<_> = self
                    .ask_workers(WorkerInput::Registrations)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                json(&all)
            }
            Command::Trace => json(&self.transport.trace().traced()),
            Command::TraceOn(name) => match self.transport.trace().switch_on(&name) {
                Ok(()) => json(&self.transport.trace().traced()),
                Err(e) => Reply::error(e),
            },
            Command::TraceOff(name) => match self.transport.trace().switch_off(&name) {
                Ok(()) => json(&self.transport.trace().traced()),
                Err(e) => Reply::error(e),
            },
        }
    }

    async fn reload(&self) -> Reply {
        let (outcome_tx, outcome) = oneshot::channel();
        let request = ReloadRequest {
            cause: "vigil reload",
            reply: Some(outcome_tx),
        };
        if self.reloads.send(request).await.is_err() {
            return Reply::error("the daemon is shutting down");
        }
        match outcome.await {
            Ok(Ok(summary)) => Reply::ok(summary),
            Ok(Err(error)) => Reply::error(error),
            Err(_) => Reply::error("the daemon is shutting down"),
        }
    }

    /// What the switch holds: the workers' state, and the process's tasks and
    /// file descriptors (what a leak would grow).
    async fn resources(&self) -> Resources {
        let workers = self
            .ask_workers(WorkerInput::Resources)
            .await
            .into_iter()
            .fold(EngineResources::default(), |sum, r| sum + r);
        Resources {
            workers,
            transactions_counted: self.budget.live(),
            transaction_sources: self.budget.sources(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            open_fds: open_fds(),
        }
    }

    /// Every worker's calls, oldest first.
    async fn calls(&self) -> Vec<CallSnapshot> {
        let mut calls: Vec<CallSnapshot> = self
            .ask_workers(WorkerInput::Calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        calls.sort_by(|a, b| b.age.total_cmp(&a.age));
        calls
    }

    async fn hang_up(&self, id: &str) -> Reply {
        let ended = self
            .ask_workers(|reply| WorkerInput::HangUp(id.to_string(), reply))
            .await
            .into_iter()
            .flatten()
            .next();
        match ended {
            Some(call) => {
                tracing::info!(call_id = %call.call_id, "call hung up by the operator");
                json(&call)
            }
            None => Reply::error(format!("no call with Call-ID {id:?}")),
        }
    }

    /// Sends every worker a question and collects the answers that come in
    /// time (a worker that is gone or stuck is left out).
    async fn ask_workers<T>(&self, question: impl Fn(oneshot::Sender<T>) -> WorkerInput) -> Vec<T> {
        let mut pending = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (tx, rx) = oneshot::channel();
            if worker.send(question(tx)).await.is_ok() {
                pending.push(rx);
            }
        }
        let mut answers = Vec::with_capacity(pending.len());
        for rx in pending {
            if let Ok(Ok(answer)) = tokio::time::timeout(WORKER_ANSWER, rx).await {
                answers.push(answer);
            }
        }
        answers
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(text) => Reply::ok(text),
        Err(e) => Reply::error(format!("cannot encode the answer: {e}")),
    }
}

/// `vigil ctl status`'s `resources`.
#[derive(Debug, Serialize)]
struct Resources {
    #[serde(flatten)]
    workers: EngineResources,
    /// Live transactions as the shared budget counts them (equal to
    /// `transactions` when the books balance).
    transactions_counted: usize,
    /// Source addresses with a server transaction alive.
    transaction_sources: usize,
    /// Tokio tasks alive.
    tasks: usize,
    /// Open file descriptors (`None` where `/proc/self/fd` is not readable).
    open_fds: Option<usize>,
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}
