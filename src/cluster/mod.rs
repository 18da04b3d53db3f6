//! Several replicas on one Redis: one leader fires, the others stand by.
//!
//! The guarantee is "each slot fires exactly once across the cluster", and availability
//! yields to it: with Redis unreachable no node can hold the lease, so nothing fires until it
//! is back (and then catch-up runs). Two mechanisms give it:
//!
//! - **The lease** ([`lease::Lease`]): a Redis key with a TTL that one node holds and renews
//!   every `lease / 3`. A leader that cannot renew stops dispatching on its own, before the key
//!   can have expired on Redis's side ([`Term`]), counted on the monotonic clock from the last
//!   renewal that succeeded, so a stepped wall clock changes nothing.
//! - **The fence**: each tick is made the leader's by one atomic script that checks the lease
//!   and advances the cluster's watermark of handled slots. A leader that was frozen past its
//!   lease wakes up, asks, hears no, and fires nothing.
//!
//! This module holds those two pieces; the timer loop decides when to ask them.

pub mod lease;
pub mod member;

use std::time::Duration;

use tokio::time::Instant;

/// `[cluster]`: where the replicas meet and how long a lease lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://`, `rediss://`, `unix://` or `redis+sentinel://`, as written (for messages).
    pub redis: String,
    pub target: Target,
    /// The key prefix: several clusters can share one Redis.
    pub name: String,
    /// Failover happens within this.
    pub lease: Duration,
    /// This node's name in the cluster; `None`: [`default_node`], decided at start.
    pub node: Option<String>,
}

/// Where a node finds the cluster's Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://`, `rediss://`, `unix://`: one server.
    Direct(String),
    /// `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`: whichever server the
    /// Sentinels say is `SERVICE`'s master now, asked again at every reconnection.
    Sentinel { sentinels: Vec<String>, service: String, db: i64, password: Option<String> },
}

impl Target {
    /// Reads a `[cluster] redis` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, rest) = match rest.split_once('@') {
                Some((auth, rest)) if !auth.contains('/') => (Some(auth), rest),
                _ => (None, rest),
            };
            let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
            let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut parts = path.split('/').filter(|p| !p.is_empty());
            let service = parts.next().ok_or("a redis+sentinel:// URL names the master's service: …/mymaster")?;
            let db = match parts.next() {
                Some(db) => db.parse().map_err(|_| format!("\"{db}\" is not a database number"))?,
                None => 0,
            };
            let sentinels: Vec<String> =
                hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{h}")).collect();
            if sentinels.is_empty() {
                return Err("a redis+sentinel:// URL lists its Sentinels: redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster".into());
            }
            for s in &sentinels {
                redis::Client::open(s.as_str()).map_err(|e| format!("Sentinel address {s}: {e}"))?;
            }
            return Ok(Target::Sentinel { sentinels, service: service.to_string(), db, password });
        }
        if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| url.starts_with(p)) {
            return Err(format!("must be a redis://, rediss://, unix:// or redis+sentinel:// URL, not \"{url}\""));
        }
        redis::Client::open(url).map_err(|e| format!("invalid Redis URL \"{url}\": {e}"))?;
        Ok(Target::Direct(url.to_string()))
    }
}

/// The default lease: failover within 10 s, renewals every 3.3 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// `hostname-pid`: unique on a host, and readable in logs.
pub fn default_node() -> String {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    format!("{host}-{}", std::process::id())
}

/// How much of the lease a leader gives up at the end of its term as a margin for the clocks
/// of Redis and this node running at slightly different rates, and for the renewal's own
/// round trip: a tenth of the lease, at least 50 ms.
fn margin(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_millis(50))
}

/// A leader's term, on the monotonic clock: it may dispatch until its lease could have expired
/// on Redis's side, counting from when the last successful renewal was *sent* (Redis started
/// the new TTL no earlier than that).
#[derive(Debug, Clone, Copy)]
pub struct Term {
    lease: Duration,
    renewed_at: Instant,
}

impl Term {
    /// A term whose lease was taken or renewed by a request sent at `sent`.
    pub fn new(lease: Duration, sent: Instant) -> Term {
        Term { lease, renewed_at: sent }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.renewed_at = self.renewed_at.max(sent);
    }

    /// Until when this node may dispatch.
    pub fn ends(&self) -> Instant {
        self.renewed_at + self.lease.saturating_sub(margin(self.lease))
    }

    /// Whether this node may still dispatch at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.ends()
    }

    /// How often to renew: three times per lease, so two renewals can fail before the term ends.
    pub fn renew_every(lease: Duration) -> Duration {
        lease / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        assert_eq!(Target::parse("redis://10.0.0.5:6379/0"), Ok(Target::Direct("redis://10.0.0.5:6379/0".into())));
        assert_eq!(
            Target::parse("redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26379/mymaster/2"),
            Ok(Target::Sentinel {
                sentinels: vec!["redis://10.0.0.5:26379".into(), "redis://10.0.0.6:26379".into()],
                service: "mymaster".into(),
                db: 2,
                password: Some("s3cret".into()),
            })
        );
        assert!(Target::parse("redis+sentinel://10.0.0.5:26379").is_err_and(|e| e.contains("service")));
        assert!(Target::parse("redis+sentinel://10.0.0.5:26379/m/x").is_err_and(|e| e.contains("database number")));
        assert!(Target::parse("http://10.0.0.5").is_err_and(|e| e.starts_with("must be a redis://")));
    }

    #[test]
    fn a_term_ends_before_the_lease_could_have_expired() {
        let start = Instant::now();
        let lease = Duration::from_secs(10);
        let mut term = Term::new(lease, start);
        assert!(term.holds(start + Duration::from_secs(8)));
        assert!(!term.holds(start + Duration::from_secs(9)), "a tenth of the lease is the margin");
        assert!(!term.holds(start + lease));
        term.renewed(start + Duration::from_secs(3));
        assert!(term.holds(start + Duration::from_secs(11)));
        assert_eq!(term.ends(), start + Duration::from_secs(12));
        // A late answer to an older renewal never moves the term back.
        term.renewed(start + Duration::from_secs(1));
        assert_eq!(term.ends(), start + Duration::from_secs(12));
        // Short leases keep a margin of at least 50 ms.
        let short = Term::new(Duration::from_millis(200), start);
        assert_eq!(short.ends(), start + Duration::from_millis(150));
        assert_eq!(Term::renew_every(lease), Duration::from_millis(3333) + Duration::from_nanos(333_333));
    }
}
