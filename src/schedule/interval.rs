//! Interval schedules (`every`), aligned to the Unix epoch.
//!
//! `every = "5m"` fires at :00, :05, … UTC, shifted by `offset`. Aligning to the epoch rather
//! than to the daemon's start makes fire times a pure function of the config: the same after a
//! restart and on every replica, which is what missed-run handling and deduplication rely on.
//! Intervals are elapsed time and never look at time zones or DST.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    every_ms: i64,
    offset_ms: i64,
}

impl Interval {
    /// `every` must be at least 1 ms and `offset` smaller than `every`; config validation
    /// enforces the user-facing limits (at least 1 s).
    pub fn new(every: Duration, offset: Duration) -> Option<Self> {
        let every_ms = i64::try_from(every.as_millis()).ok()?;
        let offset_ms = i64::try_from(offset.as_millis()).ok()?;
        (every_ms > 0 && offset_ms < every_ms).then_some(Interval { every_ms, offset_ms })
    }

    pub fn every(&self) -> Duration {
        Duration::from_millis(self.every_ms as u64)
    }

    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms as u64)
    }

    /// The first slot strictly after `after`.
    #[inline]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ms = after.timestamp_millis();
        let n = (ms - self.offset_ms).div_euclid(self.every_ms) + 1;
        DateTime::from_timestamp_millis(n.checked_mul(self.every_ms)?.checked_add(self.offset_ms)?)
    }

    /// The last slot at or before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ms = at.timestamp_millis();
        let n = (ms - self.offset_ms).div_euclid(self.every_ms);
        DateTime::from_timestamp_millis(n.checked_mul(self.every_ms)?.checked_add(self.offset_ms)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    #[test]
    fn aligned_to_the_epoch_with_offset() {
        let every5 = Interval::new(Duration::from_secs(300), Duration::ZERO).expect("valid");
        assert_eq!(every5.next_after(at("2026-01-01T10:02:17Z")), Some(at("2026-01-01T10:05:00Z")));
        assert_eq!(every5.next_after(at("2026-01-01T10:05:00Z")), Some(at("2026-01-01T10:10:00Z")));
        let shifted = Interval::new(Duration::from_secs(300), Duration::from_secs(90)).expect("valid");
        assert_eq!(shifted.next_after(at("2026-01-01T10:02:17Z")), Some(at("2026-01-01T10:06:30Z")));
        assert_eq!(shifted.latest_at_or_before(at("2026-01-01T10:06:30Z")), Some(at("2026-01-01T10:06:30Z")));
        assert_eq!(shifted.latest_at_or_before(at("2026-01-01T10:06:29Z")), Some(at("2026-01-01T10:01:30Z")));
        assert!(Interval::new(Duration::from_secs(60), Duration::from_secs(60)).is_none());
    }

    #[test]
    fn never_looks_at_dst() {
        // Across the New York spring-forward instant: plain elapsed time.
        let hourly = Interval::new(Duration::from_secs(3600), Duration::ZERO).expect("valid");
        assert_eq!(hourly.next_after(at("2026-03-08T06:30:00Z")), Some(at("2026-03-08T07:00:00Z")));
        assert_eq!(hourly.next_after(at("2026-03-08T07:00:00Z")), Some(at("2026-03-08T08:00:00Z")));
    }
}
