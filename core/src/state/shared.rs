//! The shared state store: Redis, for several Vigil nodes (one active, the
//! others on standby). A call's state is a field of the hash `vigil:calls`
//! (its id → the saved call, JSON), the CDR of a call that ended a field of
//! `vigil:ended`; each batch goes in one MULTI/EXEC. The lease that says
//! which node is active is [`Lease`].
//!
//! Every request has a deadline ([`IO_TIMEOUT`]): a Redis that hangs is a
//! failed batch, retried, never a stuck task. A broken connection is dropped
//! and made again at the next request.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::StoredRow;
use super::pending::{Batch, Op};
use crate::registrar::StoredBinding;
use crate::registrar::location::Change;
use crate::registrar::store::{ContactRow, unix_secs};

/// Calls' saved state, by id.
pub const CALLS: &str = "vigil:calls";
/// Ended calls' CDR lines, by id, until the CDR is durable.
pub const ENDED: &str = "vigil:ended";
/// The active node's lease.
pub const LEASE: &str = "vigil:lease";
/// Registered contacts: `AOR\nURI` → [`ContactRow`] (JSON).
pub const CONTACTS: &str = "vigil:contacts";
/// How long one request to Redis may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis {url}: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis {url}: no answer within {IO_TIMEOUT:?}")]
    Timeout { url: String },
}

/// A hash's fields and values.
type Fields = Vec<(String, String)>;

/// A connection to the Redis server `url`, made when first needed.
pub struct Redis {
    url: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl Redis {
    pub fn new(url: &str) -> Result<Redis, SharedError> {
        let client = redis::Client::open(url).map_err(|source| SharedError::Redis {
            url: url.to_string(),
            source,
        })?;
        Ok(Redis {
            url: url.to_string(),
            client,
            conn: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `cmd` (a command or a pipeline) with a deadline; a failure drops
    /// the connection.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: impl FnOnce(&mut MultiplexedConnection) -> redis::RedisFuture<'_, T>,
    ) -> Result<T, SharedError> {
        let url = self.url.clone();
        let fail = |source| SharedError::Redis {
            url: url.clone(),
            source,
        };
        let timeout = || SharedError::Timeout { url: url.clone() };
        if self.conn.is_none() {
            let conn =
                tokio::time::timeout(IO_TIMEOUT, self.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| timeout())?
                    .map_err(fail)?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(timeout());
        };
        let result = match tokio::time::timeout(IO_TIMEOUT, cmd(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(fail(e)),
            Err(_) => Err(timeout()),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Every call the store holds.
    pub async fn load(&mut self) -> Result<Vec<StoredRow>, SharedError> {
        let (calls, ended): (Fields, Fields) = self
            .query(|c| {
                Box::pin(async move {
                    redis::pipe()
                        .hgetall(CALLS)
                        .hgetall(ENDED)
                        .query_async(c)
                        .await
                })
            })
            .await?;
        let mut rows: std::collections::HashMap<String, StoredRow> = calls
            .into_iter()
            .map(|(id, call)| {
                let row = StoredRow {
                    id: id.clone(),
                    call: Some(call),
                    cdr: None,
                };
                (id, row)
            })
            .collect();
        for (id, cdr) in ended {
            rows.entry(id.clone())
                .or_insert(StoredRow {
                    id,
                    call: None,
                    cdr: None,
                })
                .cdr = Some(cdr);
        }
        Ok(rows.into_values().collect())
    }

    /// Writes a batch atomically (MULTI/EXEC).
    pub async fn apply(&mut self, batch: &Batch) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, op) in &batch.ops {
            match op {
                Op::Save(json) => pipe.hset(CALLS, id, json).ignore(),
                Op::End(line) => pipe.hset(ENDED, id, line).ignore(),
                Op::Delete => pipe.hdel(CALLS, id).ignore().hdel(ENDED, id).ignore(),
            };
        }
        self.query(|c| Box::pin(async move { pipe.query_async::<()>(c).await }))
            .await
    }
}

impl Redis {
    /// Every registered contact not yet expired at `wall` (the registrar's
    /// location store, shared by the nodes).
    pub async fn load_contacts(
        &mut self,
        wall: std::time::SystemTime,
    ) -> Result<Vec<StoredBinding>, SharedError> {
        let fields: Fields = self
            .query(|c| {
                Box::pin(async move { redis::cmd("HGETALL").arg(CONTACTS).query_async(c).await })
            })
            .await?;
        let now = unix_secs(wall);
        Ok(fields
            .into_iter()
            .filter_map(|(key, json)| {
                let (aor, uri) = key.split_once('\n')?;
                let row: ContactRow = serde_json::from_str(&json).ok()?;
                (row.expires > now)
                    .then(|| row.binding(aor.to_string(), uri.to_string(), now))
                    .flatten()
            })
            .collect())
    }

    /// Writes one registration change.
    pub async fn apply_contact(
        &mut self,
        change: &Change,
        now: std::time::Instant,
        wall: std::time::SystemTime,
    ) -> Result<(), SharedError> {
        let cmd = match change {
            Change::Upsert(b) => {
                let json = serde_json::to_string(&ContactRow::of(b, now, wall)).unwrap_or_default();
                let mut cmd = redis::cmd("HSET");
                cmd.arg(CONTACTS)
                    .arg(format!("{}\n{}", b.aor, b.contact.uri))
                    .arg(json);
                cmd
            }
            Change::Remove { aor, uri } => {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(CONTACTS).arg(format!("{aor}\n{uri}"));
                cmd
            }
        };
        self.query(|c| Box::pin(async move { cmd.query_async::<()>(c).await }))
            .await
    }
}

/// What renewing the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still this node's.
    Held,
    /// It had lapsed and nobody took it: this node's again.
    Retaken,
    /// Another node holds it: this one must stop at once.
    Lost,
}

/// The lease that makes one node the active one: the key [`LEASE`] holding
/// the node's id, with a TTL each renewal pushes back.
pub struct Lease {
    redis: Redis,
    node: String,
    ttl: Duration,
}

/// Renews the lease if it is ours, takes it if nobody has it: 1 held, 2
/// retaken, 0 someone else's.
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

impl Lease {
    pub fn new(redis: Redis, node: String, ttl: Duration) -> Lease {
        Lease { redis, node, ttl }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn url(&self) -> &str {
        self.redis.url()
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Takes the lease if nobody holds it.
    pub async fn try_acquire(&mut self) -> Result<bool, SharedError> {
        let (node, ttl) = (self.node.clone(), self.ttl_ms());
        let set: Option<String> = self
            .redis
            .query(|c| {
                Box::pin(async move {
                    redis::cmd("SET")
                        .arg(LEASE)
                        .arg(node)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async(c)
                        .await
                })
            })
            .await?;
        Ok(set.is_some())
    }

    pub async fn renew(&mut self) -> Result<Renewal, SharedError> {
        let (node, ttl) = (self.node.clone(), self.ttl_ms());
        let answer: i64 = self
            .redis
            .query(|c| {
                Box::pin(async move {
                    redis::Script::new(RENEW)
                        .key(LEASE)
                        .arg(node)
                        .arg(ttl)
                        .invoke_async(c)
                        .await
                })
            })
            .await?;
        Ok(match answer {
            1 => Renewal::Held,
            2 => Renewal::Retaken,
            _ => Renewal::Lost,
        })
    }
}
