//! The timer heap: which job fires next.
//!
//! A min-heap of (next fire instant, job index). The loop peeks at the earliest entry to know
//! how long to sleep, and pops every entry that is due. Entries are small and `Copy`, so a
//! burst of thousands of jobs due at the same instant costs one heap operation each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};

/// One armed timer: a job's next slot, and when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When the fire runs: its slot, plus the job's jitter.
    pub at: DateTime<Utc>,
    pub job: u32,
    /// The slot the schedule asked for.
    pub slot: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub fn with_capacity(n: usize) -> Self {
        Timers { heap: BinaryHeap::with_capacity(n) }
    }

    pub fn push(&mut self, at: DateTime<Utc>, job: u32) {
        self.push_slot(at, at, job);
    }

    /// Queues `slot` of `job` to run at `at` (later than the slot when the job has jitter).
    pub fn push_slot(&mut self, slot: DateTime<Utc>, at: DateTime<Utc>, job: u32) {
        self.heap.push(Reverse(Timer { at, job, slot }));
    }

    /// The earliest entry.
    pub fn peek(&self) -> Option<Timer> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// The earliest entry's instant.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    #[inline]
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Drops every entry of `job`; returns its instant, if it had one.
    pub fn remove(&mut self, job: u32) -> Option<DateTime<Utc>> {
        let mut found = None;
        self.heap.retain(|Reverse(e)| {
            let keep = e.job != job;
            if !keep {
                found = Some(e.at);
            }
            keep
        });
        found
    }

    /// Takes every entry out (a reload rebuilds the heap).
    pub fn drain(&mut self) -> Vec<Timer> {
        std::mem::take(&mut self.heap).into_iter().map(|Reverse(e)| e).collect()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_entries_in_time_order() {
        let t = |s| DateTime::from_timestamp(s, 0).expect("valid");
        let mut timers = Timers::default();
        timers.push(t(30), 0);
        timers.push(t(10), 1);
        timers.push(t(20), 2);
        assert_eq!(timers.next_at(), Some(t(10)));
        assert_eq!(timers.pop_due(t(5)), None);
        assert_eq!(timers.pop_due(t(25)).map(|e| e.job), Some(1));
        assert_eq!(timers.pop_due(t(25)).map(|e| e.job), Some(2));
        assert_eq!(timers.pop_due(t(25)), None);
        assert_eq!(timers.remove(0), Some(t(30)));
        assert!(timers.is_empty());
    }
}
