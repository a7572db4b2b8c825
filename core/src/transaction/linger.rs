//! The layer's bookkeeping of transactions between their last message and
//! their end: each one's next deadline in the shared timer queue, and the
//! removal of a terminated one with its key.

use std::collections::HashMap;
use std::time::Instant;

use super::client::{ClientState, ClientTx};
use super::server::{ServerState, ServerTx};
use super::{ClientTxId, ServerTxId, TxRef};
use crate::timer::{Scheduled, TimerQueue};

/// Whether a timer-queue entry is the one its transaction waits for.
pub(super) fn is_awaited<O>(
    clients: &HashMap<ClientTxId, Box<ClientTx<O>>>,
    servers: &HashMap<ServerTxId, Box<ServerTx<O>>>,
    at: Instant,
    target: TxRef,
) -> bool {
    match target {
        TxRef::Client(id) => clients.get(&id).is_some_and(|t| t.scheduled.is(at)),
        TxRef::Server(id) => servers.get(&id).is_some_and(|t| t.scheduled.is(at)),
    }
}

/// What the layer's bookkeeping needs from either kind of transaction.
pub(super) trait Lingering {
    fn is_terminated(&self) -> bool;
    fn key(&self) -> &str;
    fn next_deadline(&self) -> Option<Instant>;
    fn scheduled(&mut self) -> &mut Scheduled;
}

impl<O> Lingering for ClientTx<O> {
    fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }
    fn scheduled(&mut self) -> &mut Scheduled {
        &mut self.scheduled
    }
}

impl<O> Lingering for ServerTx<O> {
    fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }
    fn scheduled(&mut self) -> &mut Scheduled {
        &mut self.scheduled
    }
}

/// Removes a terminated transaction (and its key, unless reused) and returns
/// it, or queues its next deadline.
pub(super) fn reschedule_in<Id: Copy + Eq + std::hash::Hash, T: Lingering>(
    txs: &mut HashMap<Id, Box<T>>,
    keys: &mut HashMap<String, Id>,
    queue: &mut TimerQueue<TxRef>,
    id: Id,
    target: TxRef,
) -> Option<Box<T>> {
    let tx = txs.get_mut(&id)?;
    if tx.is_terminated() {
        if keys.get(tx.key()) == Some(&id) {
            keys.remove(tx.key());
        }
        return txs.remove(&id);
    }
    let next = tx.next_deadline();
    if let Some(at) = tx.scheduled().update(next) {
        queue.schedule(at, target);
    }
    None
}
