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
    /// `redis://`, `rediss://` or `unix://`.
    pub redis: String,
    /// The key prefix: several clusters can share one Redis.
    pub name: String,
    /// Failover happens within this.
    pub lease: Duration,
    /// This node's name in the cluster; `None`: [`default_node`], decided at start.
    pub node: Option<String>,
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
