//! The leader's lease and the cluster's watermark, in Redis.
//!
//! Redis is the coordination engine, not a protocol of ours: one key holds the lease (`SET NX
//! PX` with a value no other node can have), renewed and released by compare-and-set scripts,
//! so a node can only ever extend or drop its own lease. Expiry is Redis's: a node that stops
//! renewing loses the lease after `lease` on Redis's clock, whatever its own clock says.
//!
//! The lease alone does not stop a leader that froze (SIGSTOP, a VM pause) from waking up and
//! firing after another node took over: it cannot know it lost the lease until it asks. So
//! every tick asks, atomically with the act that makes the tick's fires its own: [`Lease::fence`]
//! checks the lease value and advances the cluster's watermark of handled slots in one script.
//! A node dispatches a tick only after that script said yes; a frozen leader's first call
//! after waking says no. Two nodes can therefore never both dispatch the same slot.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionLike;

/// Renews the lease if it is still ours: `KEYS[1]` lease, `ARGV[1]` our value, `ARGV[2]` ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Drops the lease if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The tick's fence: if the lease is still ours, advances the watermark (`KEYS[2]`, ms since
/// the epoch) to `ARGV[2]` unless it is already past it, and answers the watermark as it was
/// (-1 for none). Answers -2 when the lease is not ours.
const FENCE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -2
end
local before = tonumber(redis.call('GET', KEYS[2]) or '-1')
local now = tonumber(ARGV[2])
if now > before then
  redis.call('SET', KEYS[2], ARGV[2])
end
return before";

/// One node's handle on the cluster's lease and watermark.
#[derive(Debug, Clone)]
pub struct Lease {
    lease_key: String,
    watermark_key: String,
    /// What this node writes in the lease: its name and a random token, so a restarted node
    /// of the same name is a different holder.
    value: String,
    ttl: Duration,
}

/// What the fence answered for a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// The lease is ours and the watermark now covers the tick; `before` is where it was.
    Ours { before: Option<DateTime<Utc>> },
    /// Another node holds the lease, or none does: dispatch nothing.
    NotOurs,
}

impl Lease {
    /// The lease of cluster `name` for `node`, held for `ttl` at each renewal.
    pub fn new(name: &str, node: &str, ttl: Duration) -> Lease {
        Lease {
            lease_key: format!("beatd:{name}:lease"),
            watermark_key: format!("beatd:{name}:handled_until"),
            value: format!("{node} {}", uuid::Uuid::new_v4().simple()),
            ttl,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Takes the lease if no node holds it; whether this node now does.
    pub async fn acquire(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.lease_key)
            .arg(&self.value)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(conn)
            .await?;
        Ok(set.is_some())
    }

    /// Extends the lease by its full length if it is still ours; whether it was.
    pub async fn renew(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<bool> {
        let renewed: i64 =
            Script::new(RENEW).key(&self.lease_key).arg(&self.value).arg(self.ttl_ms()).invoke_async(conn).await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if it is still ours (a clean stop: another node takes over at once).
    pub async fn release(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<bool> {
        let released: i64 = Script::new(RELEASE).key(&self.lease_key).arg(&self.value).invoke_async(conn).await?;
        Ok(released == 1)
    }

    /// Makes a tick at `now` this node's, if the lease is still ours: see the module doc.
    pub async fn fence(&self, conn: &mut impl ConnectionLike, now: DateTime<Utc>) -> redis::RedisResult<Fenced> {
        let before: i64 = Script::new(FENCE)
            .key(&self.lease_key)
            .key(&self.watermark_key)
            .arg(&self.value)
            .arg(now.timestamp_millis())
            .invoke_async(conn)
            .await?;
        Ok(match before {
            -2 => Fenced::NotOurs,
            ms => Fenced::Ours { before: DateTime::from_timestamp_millis(ms).filter(|_| ms >= 0) },
        })
    }

    /// The node that holds the lease now, if any.
    pub async fn holder(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Option<String>> {
        let value: Option<String> = redis::cmd("GET").arg(&self.lease_key).query_async(conn).await?;
        Ok(value.and_then(|v| v.rsplit_once(' ').map(|(node, _)| node.to_string())))
    }

    /// The cluster's watermark: every slot at or before it has been handled by some leader.
    pub async fn watermark(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> = redis::cmd("GET").arg(&self.watermark_key).query_async(conn).await?;
        Ok(ms.and_then(DateTime::from_timestamp_millis))
    }
}
