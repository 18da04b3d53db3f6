//! Execution policy: what happens around a job's action, whatever the action is.
//!
//! - `timeout`: the attempt is stopped (a command's process group gets SIGTERM, then SIGKILL
//!   after `kill_grace`) and recorded as a timeout.
//! - `overlap`: what a new slot does while the previous run is still going.
//! - `retries`, `retry_delay`: failed attempts are retried with exponential backoff, capped at
//!   `retry_max_delay`.
//! - `jitter`: a delay in `[0, jitter)` added to each fire to spread load. It is derived from the
//!   fire id (a UUIDv5 of job and slot), so `beatd next` shows it and every replica and every
//!   version of beatd agrees on it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::fire_id;

/// What a job does, at start, about slots missed while beatd was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CatchUp {
    /// None of them run.
    Skip,
    /// One run, for the latest missed slot.
    #[default]
    Latest,
    /// Each missed slot in order, at most `catch_up_limit` (the latest ones).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overlap {
    /// The new slot is skipped (logged and recorded).
    #[default]
    Skip,
    /// The new slot runs right after the current run; at most one waits.
    Queue,
    /// Runs overlap.
    Allow,
    /// The current run is stopped and the new one starts.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub overlap: Overlap,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_max_delay: Duration,
    pub jitter: Option<Duration>,
    pub catch_up: CatchUp,
    pub catch_up_limit: usize,
    /// Missed slots older than this are ignored; `None`: no limit.
    pub catch_up_window: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: None,
            overlap: Overlap::Skip,
            retries: 0,
            retry_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(600),
            jitter: None,
            catch_up: CatchUp::Latest,
            catch_up_limit: 100,
            catch_up_window: None,
        }
    }
}

impl Policy {
    /// The wait before attempt `attempt + 1`, after `attempt` failed: doubling from
    /// `retry_delay`, capped at `retry_max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_delay.saturating_mul(factor).min(self.retry_max_delay)
    }

    /// The jitter of `job`'s `slot`: the same everywhere, always below `jitter`.
    pub fn jitter_for(&self, job: &str, slot: DateTime<Utc>) -> Duration {
        match self.jitter {
            Some(j) => {
                let id = fire_id(job, slot);
                let bytes: [u8; 8] = id.as_bytes()[..8].try_into().unwrap_or_default();
                let ms = j.as_millis().min(u128::from(u64::MAX)) as u64;
                Duration::from_millis(u64::from_be_bytes(bytes) % ms.max(1))
            }
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Policy {
            retry_delay: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(30),
            ..Policy::default()
        };
        let waits: Vec<u64> = (1..=6).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(200), Duration::from_secs(30));
    }

    const PINNED_JITTER_MS: u64 = 16_680;

    #[test]
    fn jitter_is_within_bounds_and_stable() {
        let p = Policy { jitter: Some(Duration::from_secs(30)), ..Policy::default() };
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let mut distinct = std::collections::HashSet::new();
        for i in 0..2000 {
            let slot = start + chrono::Duration::minutes(i);
            let j = p.jitter_for("report", slot);
            assert!(j < Duration::from_secs(30));
            assert_eq!(j, p.jitter_for("report", slot), "stable");
            distinct.insert(j.as_millis());
        }
        // Spread over the window, not stuck on a few values.
        assert!(distinct.len() > 1900);
        // Pinned: replicas and later versions must agree on it.
        assert_eq!(p.jitter_for("report", start), Duration::from_millis(PINNED_JITTER_MS));
        assert_eq!(Policy::default().jitter_for("report", start), Duration::ZERO);
    }
}
