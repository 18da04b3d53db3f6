//! The job model: what the config describes, with no TOML in it.
//!
//! A [`Job`] is built by [`crate::config`] and used by everything that schedules, runs,
//! records or reports: the loop, the runner, the brokers, the history, the metrics. Keeping it
//! here, below the parser, is what lets those parts not know the config file exists. Beside
//! it: how a run ended ([`RunOutcome`]), the figures an action reports ([`Details`]), and the
//! deterministic id of a job's slot ([`fire_id`]).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use uuid::Uuid;

use crate::jobs::Action;
use crate::policy::Policy;
use crate::schedule::Schedule;

#[derive(Debug, Clone)]
pub struct Job {
    /// Shared, so the records and messages of a burst of fires copy a pointer, not the name.
    pub name: Arc<str>,
    pub schedule: Schedule,
    /// The schedule as written: `cron 30 2 * * *` or `every 5m` (shared by the jobs that
    /// write the same, as the policy and the notifier's name are).
    pub schedule_text: Arc<str>,
    /// The zone the job's times are evaluated (cron) and shown in.
    pub timezone: Tz,
    pub enabled: bool,
    pub action: Action,
    pub policy: Arc<Policy>,
    /// The notifier told about failures and recoveries (and, for reports, the summary).
    pub notify: Option<Arc<str>>,
    pub notify_on: NotifyOn,
    /// Which of its runs the history keeps.
    pub history: Retention,
    /// A digest (UUIDv5, SHA-1) of the job's table as written, keys sorted and layout ignored,
    /// with the zone and folder it is read in: a reload compares jobs by it. A digest rather
    /// than the text: at 100 000 jobs the text alone was 19 MB held for the daemon's life.
    pub definition: Uuid,
}

/// Which runs of a job the run history writes (`history`), and how many it keeps
/// (`history_keep_runs`): set for all jobs in `[scheduler]`, or per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub mode: HistoryMode,
    /// The newest this many runs of the job are kept; `None`: no cap beside `history_keep`.
    /// At least 1 (the config refuses 0), so `None` costs no extra word: `Retention` is in
    /// every job.
    pub max_runs: Option<std::num::NonZeroU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryMode {
    /// Every run.
    #[default]
    All,
    /// Failures, timeouts, skips, interruptions, retried runs, and a success that follows
    /// anything else (a recovery). The successes left out are counted per job and hour, so
    /// reports keep their totals and rates.
    Failures,
    /// No run at all.
    Off,
}

/// Which changes of a job's state are notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyOn {
    pub failure: bool,
    pub recovery: bool,
}

impl Default for NotifyOn {
    fn default() -> Self {
        NotifyOn { failure: true, recovery: true }
    }
}

impl Job {
    /// The first slot after `after`, and when it runs: the slot plus the job's jitter.
    #[inline]
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let slot = self.schedule.next_after(after)?;
        Some((slot, self.run_at(slot)))
    }

    /// When `slot` runs: the slot itself, or later by the job's jitter.
    #[inline]
    pub fn run_at(&self, slot: DateTime<Utc>) -> DateTime<Utc> {
        if self.policy.jitter.is_none() {
            return slot;
        }
        slot + chrono::Duration::from_std(self.policy.jitter_for(&self.name, slot)).unwrap_or_default()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Success,
    Failure,
    Timeout,
    Skipped,
    /// Stopped by an operator (`POST /api/runs/{id}/cancel`, `beatd cancel`): not retried.
    Cancelled,
    /// beatd stopped (a crash, a kill) after dispatching the fire and before its end was
    /// recorded: the run may or may not have happened. Recorded at the next start.
    Interrupted,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 6] = [
        RunOutcome::Success,
        RunOutcome::Failure,
        RunOutcome::Timeout,
        RunOutcome::Skipped,
        RunOutcome::Cancelled,
        RunOutcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Failure => "failure",
            RunOutcome::Timeout => "timeout",
            RunOutcome::Skipped => "skipped",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> RunOutcome {
        match s {
            "success" => RunOutcome::Success,
            "timeout" => RunOutcome::Timeout,
            "skipped" => RunOutcome::Skipped,
            "cancelled" => RunOutcome::Cancelled,
            "interrupted" => RunOutcome::Interrupted,
            _ => RunOutcome::Failure,
        }
    }
}

/// Figures specific to an action, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_deleted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// `sql`: rows affected and duration, per statement that completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<Vec<crate::databases::StatementRun>>,
    /// `sql_check`: the value the query returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Details {
    pub fn is_empty(&self) -> bool {
        *self == Details::default()
    }
}

/// Namespace for fire ids: UUIDv5 of the job name and the slot, so that the same slot of the
/// same job always gets the same id (on a retry, after a restart, on another replica).
pub(crate) const FIRE_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3b1c_5e3d_4f4e_9b7a_2c0d_be47_d000);

pub fn fire_id(job: &str, slot: DateTime<Utc>) -> Uuid {
    let key = format!("{job}\n{}", slot.to_rfc3339_opts(SecondsFormat::Millis, true));
    Uuid::new_v5(&FIRE_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_ids_are_deterministic_per_job_and_slot() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        assert_eq!(fire_id("a", t), fire_id("a", t));
        assert_ne!(fire_id("a", t), fire_id("b", t));
        assert_ne!(fire_id("a", t), fire_id("a", t + chrono::Duration::seconds(1)));
        assert_eq!(fire_id("a", t).get_version_num(), 5);
    }
}
