//! What beatd does when it cannot write its state (a full disk, a read-only file system).
//!
//! The rule: **no fire runs unless the journal has recorded it first.** A tick whose journal
//! write fails is held, with its fires, and retried with backoff; the held fires run, late,
//! once the write succeeds. Firing anyway would give up exactly-once: a restart would read the
//! old watermark and run those slots again. Held fires are the price, and they are loud.
//!
//! Run history that cannot be written is kept in memory and written when space returns.
//!
//! Either way the operator sees it at once and is not flooded: `/healthz` says `degraded`,
//! `beatd_state_write_errors_total` counts every failed write, and the log gets one line a
//! minute for each file that fails, not one per fire.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// How often a failure that goes on is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The state file a write failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The fire journal: fires are held.
    Journal,
    /// The run history: runs wait in memory.
    History,
}

impl Part {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Part::Journal => "fire journal",
            Part::History => "run history",
        }
    }
}

/// Failing state writes: the metric, the health flag and the rate-limited log line.
#[derive(Debug)]
pub struct StateAlarm {
    errors: Counter,
    failing: [AtomicBool; 2],
    /// Each part's last error, with what beatd does about it.
    last_error: [Mutex<Option<String>>; 2],
    /// Per part: when its failure was last logged, and how many failed writes since.
    last_log: [Mutex<Option<Instant>>; 2],
    since_log: [AtomicU64; 2],
}

impl StateAlarm {
    pub fn new(errors: Counter) -> StateAlarm {
        StateAlarm {
            errors,
            failing: Default::default(),
            last_error: Default::default(),
            last_log: Default::default(),
            since_log: Default::default(),
        }
    }

    /// A write to `part` failed; `consequence` says what beatd does about it.
    pub fn failed(&self, part: Part, error: &dyn std::fmt::Display, consequence: &str) {
        self.errors.inc();
        self.failing[part.index()].store(true, Ordering::Relaxed);
        let message = format!("cannot write the {}: {error}", part.name());
        *self.last_error[part.index()].lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{message}; {consequence}"));
        let mut last = self.last_log[part.index()].lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.since_log[part.index()].fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let more = self.since_log[part.index()].swap(0, Ordering::Relaxed);
        let more = if more > 0 { format!(" ({more} more failed writes in the last minute)") } else { String::new() };
        tracing::error!("{message}; {consequence}{more}");
    }

    /// A write to `part` succeeded again after failures; `what` says what followed.
    pub fn recovered(&self, part: Part, what: &str) {
        if self.failing[part.index()].swap(false, Ordering::Relaxed) {
            tracing::warn!("the {} is written again: {what}", part.name());
            *self.last_log[part.index()].lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.since_log[part.index()].store(0, Ordering::Relaxed);
        }
    }

    pub fn is_failing(&self) -> bool {
        self.failing.iter().any(|f| f.load(Ordering::Relaxed))
    }

    /// Why `/healthz` says degraded, while writes fail: the journal's failure first (fires are
    /// held), else the history's.
    pub fn reason(&self) -> Option<String> {
        [Part::Journal, Part::History]
            .into_iter()
            .filter(|p| self.failing[p.index()].load(Ordering::Relaxed))
            .find_map(|p| self.last_error[p.index()].lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Default for StateAlarm {
    fn default() -> Self {
        StateAlarm::new(Counter::default())
    }
}
