//! The registrar task: owns the [`Registrar`] and the location store, writes each
//! change to the store before sending what follows it (the 200 OK to a REGISTER),
//! and sends the NAT keep-alives.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::ratelimit::RateLimit;
use crate::registrar::store::Store;
use crate::registrar::{Output, Registrar};
use crate::sip::Message;
use crate::transaction::Path;
use crate::transport::Transport;

/// What the receive loops send the registrar.
pub struct RegistrarInput {
    pub message: Box<Message>,
    pub path: Path,
}

pub async fn run_registrar(
    mut registrar: Registrar,
    store: Store,
    mut inputs: mpsc::Receiver<RegistrarInput>,
    transport: Arc<Transport>,
) {
    let mut store_errors = RateLimit::new(5, Duration::from_secs(60));
    loop {
        let wake = registrar
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            input = inputs.recv() => match input {
                Some(RegistrarInput { message, path }) => registrar.handle_message(Instant::now(), *message, path),
                None => break,
            },
            _ = sleep_until(wake.into()) => registrar.handle_timeout(Instant::now()),
        }
        while let Some(output) = registrar.poll_output() {
            match output {
                Output::Persist(change) => {
                    // SQLite in WAL mode takes tens of microseconds per write; the
                    // 200 must not go out before it is done.
                    let result = tokio::task::block_in_place(|| {
                        store.apply(&change, Instant::now(), SystemTime::now())
                    });
                    if let Err(e) = result
                        && let Some(suppressed) = store_errors.allow(Instant::now())
                    {
                        tracing::error!(error = %e, suppressed, "cannot persist a registration");
                    }
                }
                Output::Transmit(t) => transport.send(&t).await,
            }
        }
    }
}
