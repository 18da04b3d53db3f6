//! Schedules: when a job fires.
//!
//! A schedule is pure: [`Schedule::next_after`] maps an instant to the next fire strictly after
//! it and never reads the clock. The daemon's timer loop, `beatd next` and the tests all call
//! the same function, so what `next` prints is what the daemon does.

pub mod cron;
pub mod interval;
pub mod zone;

use chrono::{DateTime, Utc};

pub use self::cron::{CronError, CronExpr, CronSchedule};
pub use self::interval::Interval;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Shared by the jobs of a config with the same expression and zone.
    Cron(std::sync::Arc<CronSchedule>),
    Every(Interval),
    /// `@reboot`: once when the daemon starts, never from `next_after`.
    Reboot,
}

impl Schedule {
    /// The first fire strictly after `after`, or `None` when there is none.
    #[inline]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.next_after(after),
            Schedule::Every(i) => i.next_after(after),
            Schedule::Reboot => None,
        }
    }

    /// The latest fire in `(after, until]`, and how many fires that range holds.
    ///
    /// Used when several slots have passed at once (a wall-clock step, a suspended machine):
    /// those slots run once, for the latest, rather than as a burst.
    pub fn latest_in(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<(DateTime<Utc>, u64)> {
        match self {
            Schedule::Every(i) => {
                let first = i.next_after(after)?;
                if first > until {
                    return None;
                }
                let last = i.latest_at_or_before(until)?;
                let every = i.every().as_millis() as i64;
                let count = (last - first).num_milliseconds() / every + 1;
                Some((last, count as u64))
            }
            _ => {
                let mut last = None;
                let mut count = 0;
                let mut t = after;
                while let Some(next) = self.next_after(t).filter(|n| *n <= until) {
                    last = Some(next);
                    count += 1;
                    t = next;
                }
                last.map(|l| (l, count))
            }
        }
    }
}
