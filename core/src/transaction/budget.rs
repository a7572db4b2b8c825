//! The live-transaction budget every worker's layer draws from:
//! `limits.max_transactions` in all and `limits.max_transactions_per_source`
//! per source address.
//!
//! A transaction holds a message to retransmit and timers for up to 32 s, so
//! the number alive is what memory under a storm depends on. Only requests that
//! would open something new are refused; a request inside a dialog (a refresh,
//! a BYE) or a CANCEL always gets its transaction, so calls already up are never
//! shed. The counts live here, not in the limits, so a reload that changes the
//! limits keeps them exact.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::config::LimitsConfig;

/// Per-source counts are split over this many locks, so workers rarely meet.
const SHARDS: usize = 16;

/// Why a new transaction was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxShed {
    /// `limits.max_transactions` are alive.
    MaxTransactions,
    /// The source has `limits.max_transactions_per_source` alive.
    SourceTransactions,
}

/// Counts of live transactions, shared by every worker; see the module doc.
pub struct TxBudget {
    /// `usize::MAX` when unlimited.
    max_total: AtomicUsize,
    /// `u32::MAX` when unlimited.
    max_per_source: AtomicU32,
    total: AtomicUsize,
    per_source: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    hasher: RandomState,
}

impl Default for TxBudget {
    fn default() -> Self {
        TxBudget {
            max_total: AtomicUsize::new(usize::MAX),
            max_per_source: AtomicU32::new(u32::MAX),
            total: AtomicUsize::new(0),
            per_source: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
        }
    }
}

impl TxBudget {
    pub fn new(limits: &LimitsConfig) -> TxBudget {
        let budget = TxBudget::default();
        budget.set_limits(limits);
        budget
    }

    /// Applies reloaded limits; the transactions alive keep counting.
    pub fn set_limits(&self, limits: &LimitsConfig) {
        let total = limits.max_transactions.map_or(usize::MAX, |n| n as usize);
        let per_source = limits.max_transactions_per_source.unwrap_or(u32::MAX);
        self.max_total.store(total, Ordering::Relaxed);
        self.max_per_source.store(per_source, Ordering::Relaxed);
    }

    /// Live transactions of every worker.
    pub fn live(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Sources with a server transaction alive (for leak checks).
    pub fn sources(&self) -> usize {
        self.per_source.iter().map(|s| lock(s).len()).sum()
    }

    /// Takes a slot for a server transaction from `source`. `essential` ones
    /// (in-dialog requests, CANCEL) are counted but never refused.
    pub fn acquire_server(&self, source: IpAddr, essential: bool) -> Result<(), TxShed> {
        let max_total = self.max_total.load(Ordering::Relaxed);
        if !essential && self.live() >= max_total {
            return Err(TxShed::MaxTransactions);
        }
        let max_per_source = self.max_per_source.load(Ordering::Relaxed);
        let mut counts = lock(self.shard(source));
        let count = counts.entry(source).or_insert(0);
        if !essential && *count >= max_per_source {
            if *count == 0 {
                counts.remove(&source);
            }
            return Err(TxShed::SourceTransactions);
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back a server transaction's slot.
    pub fn release_server(&self, source: IpAddr) {
        let mut counts = lock(self.shard(source));
        if let Some(count) = counts.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&source);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a client transaction (Vigil's own requests are never refused:
    /// they serve calls already admitted).
    pub fn acquire_client(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn release_client(&self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    fn shard(&self, source: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let index = self.hasher.hash_one(source) as usize % SHARDS;
        &self.per_source[index]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: Option<u32>, per_source: Option<u32>) -> LimitsConfig {
        LimitsConfig {
            max_transactions: total,
            max_transactions_per_source: per_source,
            ..LimitsConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn past_the_total_new_transactions_are_refused_but_essential_ones_count() {
        let budget = TxBudget::new(&limits(Some(2), None));
        assert_eq!(budget.acquire_server(ip(1), false), Ok(()));
        assert_eq!(budget.acquire_server(ip(2), false), Ok(()));
        assert_eq!(
            budget.acquire_server(ip(3), false),
            Err(TxShed::MaxTransactions)
        );
        assert_eq!(budget.acquire_server(ip(3), true), Ok(()));
        budget.acquire_client();
        assert_eq!(budget.live(), 4);
        budget.release_server(ip(1));
        budget.release_server(ip(3));
        budget.release_client();
        assert_eq!(budget.live(), 1);
        assert_eq!(budget.acquire_server(ip(4), false), Ok(()));
    }

    #[test]
    fn one_source_cannot_take_the_whole_budget() {
        let budget = TxBudget::new(&limits(None, Some(3)));
        for _ in 0..3 {
            assert_eq!(budget.acquire_server(ip(1), false), Ok(()));
        }
        assert_eq!(
            budget.acquire_server(ip(1), false),
            Err(TxShed::SourceTransactions)
        );
        assert_eq!(budget.acquire_server(ip(2), false), Ok(()));
        budget.release_server(ip(1));
        assert_eq!(budget.acquire_server(ip(1), false), Ok(()));
    }

    #[test]
    fn counts_go_back_to_zero_and_forget_the_sources() {
        let budget = TxBudget::new(&limits(Some(100), Some(10)));
        for last in 0..50 {
            budget
                .acquire_server(ip(last), false)
                .expect("within limits");
        }
        assert_eq!(budget.sources(), 50);
        for last in 0..50 {
            budget.release_server(ip(last));
        }
        assert_eq!((budget.live(), budget.sources()), (0, 0));
        // A release without a slot (never happens in the layer) changes nothing.
        budget.release_server(ip(1));
        assert_eq!(budget.live(), 0);
    }

    #[test]
    fn a_reload_changes_the_limits_and_keeps_the_counts() {
        let budget = TxBudget::new(&limits(Some(1), None));
        budget.acquire_server(ip(1), false).expect("first");
        assert!(budget.acquire_server(ip(1), false).is_err());
        budget.set_limits(&limits(Some(5), None));
        assert_eq!(budget.acquire_server(ip(1), false), Ok(()));
        assert_eq!(budget.live(), 2);
        budget.set_limits(&LimitsConfig::default());
        for _ in 0..100 {
            budget.acquire_server(ip(1), false).expect("unlimited");
        }
        assert_eq!(budget.live(), 102);
    }
}
