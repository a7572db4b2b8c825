//! The registrar thread: owns the [`Registrar`] and the location store, writes each
//! change to the store before sending what follows it (the 200 OK to a REGISTER),
//! and sends the NAT keep-alives.
//!
//! It runs on a thread of its own (a single-threaded runtime) rather than as a task
//! among the call workers: SQLite writes block, and on the shared runtime each one
//! would hand a worker's core to another thread (`block_in_place`), delaying calls
//! and scattering the registrar's long-lived allocations over many threads' heaps
//! (100,000 contacts cost 1.2 KiB of RSS each that way, against 0.5 KiB of heap).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use crate::config::Config;
use crate::policy::SessionPolicy;
use crate::ratelimit::RateLimit;
use crate::registrar::store::Store;
use crate::registrar::{Output, Registrar};
use crate::sip::Message;
use crate::transaction::Path;
use crate::transport::LocalSocket;
use crate::transport::Transport;

/// What the receive loops (and a reload) send the registrar.
pub enum RegistrarInput {
    Message {
        message: Box<Message>,
        path: Path,
    },
    /// A connection closed: the contacts registered on it go.
    FlowClosed(Path),
    /// A reloaded config and keep-alive policy: bindings stay; users,
    /// keep-alive settings and the policy apply from the next request or tick.
    Reload {
        config: Arc<Config>,
        policy: Arc<dyn SessionPolicy>,
        sockets: Arc<[LocalSocket]>,
    },
}

/// Where registrations are kept: the SQLite location store, or Redis
/// shared by the nodes (`state: { redis: … }`).
pub enum Contacts {
    File(Store),
    Redis(crate::state::shared::Redis),
}

impl Contacts {
    async fn apply(
        &mut self,
        change: &crate::registrar::location::Change,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), String> {
        match self {
            Contacts::File(store) => store.apply(change, now, wall).map_err(|e| e.to_string()),
            Contacts::Redis(redis) => redis
                .apply_contact(change, now, wall)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// The running registrar thread.
pub struct RegistrarThread {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl RegistrarThread {
    /// Starts the thread. The transport's sockets stay registered with the main
    /// runtime, whose reactor keeps serving them while it runs.
    pub fn spawn(
        registrar: Registrar,
        store: Contacts,
        inputs: mpsc::Receiver<RegistrarInput>,
        transport: Arc<Transport>,
    ) -> std::io::Result<RegistrarThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let (finished, done) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vigil-registrar".into())
            .spawn(move || {
                runtime.block_on(run_registrar(registrar, store, inputs, stopped, transport));
                drop(finished);
            })?;
        Ok(RegistrarThread { stop, done })
    }

    /// Stops it and waits (bounded) until the store is closed.
    pub async fn stop(self, wait: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(wait, self.done).await.is_err() {
            tracing::error!("registrar did not stop in time");
        }
    }
}

async fn run_registrar(
    mut registrar: Registrar,
    mut store: Contacts,
    mut inputs: mpsc::Receiver<RegistrarInput>,
    mut stop: oneshot::Receiver<()>,
    transport: Arc<Transport>,
) {
    let mut store_errors = RateLimit::new(5, Duration::from_secs(60));
    loop {
        let wake = registrar
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            input = inputs.recv() => match input {
                Some(RegistrarInput::Message { message, path }) => registrar.handle_message(Instant::now(), *message, path),
                Some(RegistrarInput::FlowClosed(path)) => registrar.on_flow_closed(path),
                Some(RegistrarInput::Reload { config, policy, sockets }) => {
                    registrar.set_config(config);
                    registrar.set_policy(policy);
                    registrar.set_sockets(sockets);
                }
                None => break,
            },
            _ = sleep_until(wake.into()) => registrar.handle_timeout(Instant::now()),
            _ = &mut stop => break,
        }
        while let Some(output) = registrar.poll_output() {
            match output {
                Output::Persist(change) => {
                    // SQLite in WAL mode takes tens of microseconds per write,
                    // Redis a round trip; the 200 must not go out before it is
                    // done.
                    let result = store
                        .apply(&change, Instant::now(), SystemTime::now())
                        .await;
                    if let Err(e) = result
                        && let Some(suppressed) = store_errors.allow(Instant::now())
                    {
                        tracing::error!(error = %e, suppressed, "cannot persist a registration");
                    }
                }
                Output::Transmit(t) => transport.send(t).await,
            }
        }
    }
}
