//! The lease that makes one of several nodes on one Redis the active one
//! (`state: { redis: … }`).
//!
//! A node starts as a standby: before it binds any address it waits until
//! it can take the lease (the key `vigil:lease`, with a TTL of [`TTL`]).
//! The active node renews it every [`RENEW_EVERY`]; when it dies, the lease
//! lapses and a standby takes it within [`TTL`] plus one [`POLL`], then
//! starts as any node does: it binds the service addresses (free once the
//! dead process is gone), loads the calls from Redis and resumes them.
//!
//! Fencing: a node that finds the lease held by another node stops at once
//! (the process exits with [`EXIT_FENCED`]), so two nodes never refresh or
//! BYE the same call. A node that cannot reach Redis keeps its calls going
//! and says so loudly: a standby cannot take the lease from a Redis that
//! is down either; when Redis is back, whichever node holds the lease goes
//! on and the other stops.

use std::time::Duration;

use tokio::sync::watch;

use crate::ratelimit::RateLimit;
use crate::state::shared::{Lease, Redis, Renewal, SharedError};

/// How long the lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(2);
/// How often the active node renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a standby tries to take it.
pub const POLL: Duration = Duration::from_millis(200);
/// `vigil run`'s exit code when another node took the lease.
pub const EXIT_FENCED: u8 = 4;

/// Waits (as a standby) until this node holds the lease. `reach` says,
/// after each try, why Redis could not be asked (`None`: it answered).
pub async fn acquire(
    url: &str,
    reach: &watch::Sender<Option<String>>,
) -> Result<Lease, SharedError> {
    let node = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut lease = Lease::new(Redis::new(url)?, node, TTL);
    let mut said_standby = false;
    let mut errors = RateLimit::new(1, Duration::from_secs(10));
    loop {
        let tried = lease.try_acquire().await;
        reach.send_replace(tried.as_ref().err().map(ToString::to_string));
        match tried {
            Ok(true) => {
                tracing::info!(
                    node = lease.node(),
                    redis = url,
                    "lease taken: this node is active"
                );
                return Ok(lease);
            }
            Ok(false) => {
                if !said_standby {
                    tracing::info!(
                        node = lease.node(),
                        redis = url,
                        "standby: another node holds the lease; waiting to take over"
                    );
                    said_standby = true;
                }
            }
            Err(e) => {
                if let Some(suppressed) = errors.allow(std::time::Instant::now()) {
                    tracing::error!(error = %e, suppressed, "standby: cannot reach Redis to take the lease; trying again");
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Renews the lease every [`RENEW_EVERY`] for as long as the process runs;
/// exits the process at once if another node holds it.
pub async fn keep(mut lease: Lease) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    let mut errors = RateLimit::new(1, Duration::from_secs(10));
    loop {
        tick.tick().await;
        match lease.renew().await {
            Ok(Renewal::Held) => {}
            Ok(Renewal::Retaken) => tracing::warn!(
                node = lease.node(),
                redis = lease.url(),
                "the lease had lapsed (Redis restarted or unreachable) and nobody took it: this node holds it again"
            ),
            Ok(Renewal::Lost) => {
                tracing::error!(
                    node = lease.node(),
                    redis = lease.url(),
                    "another node holds the lease: this node stops at once so that one node only serves the calls"
                );
                std::process::exit(i32::from(EXIT_FENCED));
            }
            Err(e) => {
                if let Some(suppressed) = errors.allow(std::time::Instant::now()) {
                    tracing::error!(
                        error = %e,
                        suppressed,
                        "cannot renew the lease: calls go on; if Redis comes back with another node holding it, this one stops"
                    );
                }
            }
        }
    }
}
