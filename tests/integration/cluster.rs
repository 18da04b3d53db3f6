//! The cluster's lease and fence against a real `redis-server` of the test's own: one holder
//! at a time, only the holder renews or releases, and a holder whose lease expired (a frozen
//! leader waking up) is refused by the fence, so it can dispatch nothing.

use std::time::Duration;

use beatd::cluster::lease::{Fenced, Lease};
use chrono::{DateTime, Utc};

use crate::util::RedisServer;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid")
}

async fn connect(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("url");
    client.get_multiplexed_async_connection().await.expect("redis answers")
}

#[tokio::test]
async fn one_holder_at_a_time_and_the_fence_refuses_a_lease_that_expired() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_millis(300);
    let (a, b) = (Lease::new("prod", "beat-a", ttl), Lease::new("prod", "beat-b", ttl));
    let other_cluster = Lease::new("staging", "beat-b", ttl);

    assert!(a.acquire(&mut conn).await.expect("acquire"));
    assert!(!b.acquire(&mut conn).await.expect("acquire"), "the lease is held");
    assert!(other_cluster.acquire(&mut conn).await.expect("acquire"), "clusters share a Redis by name");
    assert_eq!(b.holder(&mut conn).await.expect("holder").as_deref(), Some("beat-a"));
    assert!(!b.renew(&mut conn).await.expect("renew"), "only the holder renews");
    assert!(!b.release(&mut conn).await.expect("release"), "only the holder releases");
    assert_eq!(b.fence(&mut conn, at(0)).await.expect("fence"), Fenced::NotOurs);
    assert_eq!(b.watermark(&mut conn).await.expect("watermark"), None, "a refused fence writes nothing");

    // The holder's ticks advance the watermark, which never goes back.
    assert_eq!(a.fence(&mut conn, at(1000)).await.expect("fence"), Fenced::Ours { before: None });
    assert_eq!(a.fence(&mut conn, at(2000)).await.expect("fence"), Fenced::Ours { before: Some(at(1000)) });
    assert_eq!(a.fence(&mut conn, at(1500)).await.expect("fence"), Fenced::Ours { before: Some(at(2000)) });
    assert_eq!(a.watermark(&mut conn).await.expect("watermark"), Some(at(2000)));

    // `a` freezes past its lease; `b` takes over and reads where `a` stopped.
    assert!(a.renew(&mut conn).await.expect("renew"));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(a.holder(&mut conn).await.expect("holder"), None, "Redis expired the lease");
    assert!(b.acquire(&mut conn).await.expect("acquire"));
    assert_eq!(b.fence(&mut conn, at(3000)).await.expect("fence"), Fenced::Ours { before: Some(at(2000)) });
    // `a` wakes up: it cannot renew, and its next tick is refused.
    assert!(!a.renew(&mut conn).await.expect("renew"));
    assert_eq!(a.fence(&mut conn, at(2500)).await.expect("fence"), Fenced::NotOurs);
    assert_eq!(b.watermark(&mut conn).await.expect("watermark"), Some(at(3000)));

    // A clean stop hands over at once.
    assert!(b.release(&mut conn).await.expect("release"));
    assert!(a.acquire(&mut conn).await.expect("acquire"));
}

#[tokio::test]
async fn a_restarted_node_of_the_same_name_is_another_holder() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_secs(5);
    let before = Lease::new("prod", "beat-a", ttl);
    let after = Lease::new("prod", "beat-a", ttl);
    assert!(before.acquire(&mut conn).await.expect("acquire"));
    assert!(!after.renew(&mut conn).await.expect("renew"), "a new process does not inherit the old one's lease");
    assert_eq!(after.fence(&mut conn, at(0)).await.expect("fence"), Fenced::NotOurs);
}
