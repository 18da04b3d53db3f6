//! Run history: every run, skip and retry of every job, in the state database.
//!
//! The timer loop must not wait for the disk, so runs are sent over a channel to one writer
//! thread, which commits whatever has queued up in a single transaction. At 10 000 fires a
//! second that is a handful of commits a second, not ten thousand. The writer also prunes
//! records older than `history_keep`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::sync::mpsc;

use super::StateError;
use crate::job::{Details, RunOutcome};
use std::sync::Arc;

/// One row of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub job: String,
    pub fire_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub details: Details,
}

impl RunRecord {
    pub fn duration(&self) -> Option<Duration> {
        self.started_at.and_then(|s| (self.finished_at - s).to_std().ok())
    }
}

/// A run waiting to be written: what travels to the writer thread.
#[derive(Debug)]
pub enum Pending {
    /// Boxed: instant fires are buffered by the ten thousand per tick, so an entry stays small.
    Run(Box<RunRecord>),
    /// A fire of an instant action (`noop`) that succeeded at once: the job's shared name and
    /// two instants, so recording one costs the loop next to nothing. The writer builds the row.
    Instant { job: Arc<str>, slot: DateTime<Utc>, at: DateTime<Utc> },
    /// Many entries from one tick, sent at once.
    Batch(Vec<Pending>),
}

impl Pending {
    fn into_records(self, out: &mut Vec<RunRecord>) {
        match self {
            Pending::Run(r) => out.push(*r),
            Pending::Instant { job, slot, at } => out.push(RunRecord {
                job: job.to_string(),
                fire_id: String::new(),
                scheduled_at: slot,
                started_at: Some(at),
                finished_at: at,
                outcome: RunOutcome::Success,
                attempt: 1,
                exit_code: None,
                error: None,
                details: Details::default(),
            }),
            Pending::Batch(entries) => {
                for e in entries {
                    e.into_records(out);
                }
            }
        }
    }
}

/// Where the daemon sends runs. Cloning is cheap; sending never blocks.
#[derive(Debug, Clone)]
pub struct History {
    tx: Option<Sender>,
}

#[derive(Debug, Clone)]
enum Sender {
    Writer(mpsc::UnboundedSender<Pending>),
    Collect(mpsc::UnboundedSender<RunRecord>),
}

impl History {
    /// A history that keeps nothing (tests and benchmarks of other parts).
    pub fn disabled() -> Self {
        History { tx: None }
    }

    /// A history whose records arrive on a channel, for tests that watch runs as they end.
    pub fn collect() -> (Self, mpsc::UnboundedReceiver<RunRecord>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (History { tx: Some(Sender::Collect(tx)) }, rx)
    }

    /// Whether anything is kept (so callers can skip building entries).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn record(&self, record: RunRecord) {
        self.send(Pending::Run(Box::new(record)));
    }

    pub fn send(&self, entry: Pending) {
        let sent = match &self.tx {
            None => true,
            Some(Sender::Writer(tx)) => tx.send(entry).is_ok(),
            Some(Sender::Collect(tx)) => {
                let mut records = Vec::new();
                entry.into_records(&mut records);
                records.into_iter().all(|r| tx.send(r).is_ok())
            }
        };
        if !sent {
            tracing::error!("run history writer has stopped; a run was not recorded");
        }
    }
}

/// The writer thread; dropping every [`History`] clone and then joining flushes it.
#[derive(Debug)]
pub struct Writer {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Opens the database and starts the writer thread.
    pub fn start(
        state_dir: &Path,
        keep: Duration,
        clock: crate::clock::Clock,
        alarm: std::sync::Arc<super::alarm::StateAlarm>,
    ) -> Result<(History, Writer), StateError> {
        let conn = super::open(state_dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let path = state_dir.join(super::DB_FILE);
        let thread = std::thread::Builder::new()
            .name("beatd-history".into())
            .spawn(move || write_loop(conn, rx, keep, path, clock, alarm))
            .map_err(|source| StateError::CreateDir { path: state_dir.to_path_buf(), source })?;
        Ok((History { tx: Some(Sender::Writer(tx)) }, Writer { thread: Some(thread) }))
    }

    /// Waits until everything sent so far is written (all senders must be dropped first).
    pub fn finish(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const PRUNE_EVERY: Duration = Duration::from_secs(600);
const MAX_BATCH: usize = 20_000;

/// Runs kept in memory while the history cannot be written, at most: beyond, the oldest are
/// dropped (and counted in the log line).
const MAX_UNWRITTEN: usize = 1_000_000;

fn write_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    keep: Duration,
    path: PathBuf,
    clock: crate::clock::Clock,
    alarm: std::sync::Arc<super::alarm::StateAlarm>,
) {
    // The history can wait; the timer loop cannot. On a small machine this thread's inserts
    // would otherwise take the loop's core just when a burst of fires is due.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!("cannot lower the history writer's priority: {e}");
    }
    let mut batch = Vec::with_capacity(1024);
    let mut last_prune: Option<Instant> = None;
    let mut dropped = 0usize;
    let mut retrying = false;
    loop {
        // Runs that could not be written wait in `batch`: take more without blocking, and try
        // again after a pause; otherwise wait for the next run.
        if batch.is_empty() {
            match rx.blocking_recv() {
                Some(first) => first.into_records(&mut batch),
                None => return,
            }
        }
        let mut closed = false;
        // While retrying, everything queued joins the waiting runs (trimmed below).
        while batch.len() < MAX_BATCH || retrying {
            match rx.try_recv() {
                Ok(e) => e.into_records(&mut batch),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        match insert(&mut conn, &batch) {
            Ok(()) => {
                alarm.recovered(super::alarm::Part::History, &format!("{} waiting run(s) written", batch.len()));
                batch.clear();
                retrying = false;
            }
            Err(e) => {
                if batch.len() > MAX_UNWRITTEN {
                    let over = batch.len() - MAX_UNWRITTEN;
                    batch.drain(..over);
                    dropped += over;
                }
                let lost = if dropped > 0 { format!(" ({dropped} oldest dropped)") } else { String::new() };
                alarm.failed(
                    super::alarm::Part::History,
                    &format!("{}: {e}", path.display()),
                    &format!("{} run(s) wait in memory{lost}", batch.len()),
                );
                if closed {
                    tracing::error!("stopping with {} run(s) that could not be written to the history", batch.len());
                    return;
                }
                retrying = true;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let cutoff = clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            match conn.execute("DELETE FROM runs WHERE finished_at < ?1", [cutoff.timestamp_millis()]) {
                Ok(0) => {}
                Ok(n) => tracing::debug!("pruned {n} run(s) older than {}", humantime::format_duration(keep)),
                Err(e) => tracing::warn!("cannot prune run history: {e}"),
            }
        }
        if closed {
            return;
        }
    }
}

pub fn insert(conn: &mut Connection, batch: &[RunRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO runs (job, fire_id, scheduled_at, started_at, finished_at, outcome, attempt, exit_code, error, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for r in batch {
            // The runner leaves the id empty so the loop never pays for hashing it.
            let derived;
            let fire_id = if r.fire_id.is_empty() {
                derived = crate::job::fire_id(&r.job, r.scheduled_at).to_string();
                &derived
            } else {
                &r.fire_id
            };
            let details = if r.details.is_empty() { None } else { serde_json::to_string(&r.details).ok() };
            stmt.execute(params![
                r.job,
                fire_id,
                r.scheduled_at.timestamp_millis(),
                r.started_at.map(|t| t.timestamp_millis()),
                r.finished_at.timestamp_millis(),
                r.outcome.as_str(),
                r.attempt,
                r.exit_code,
                r.error,
                details,
            ])?;
        }
    }
    tx.commit()
}

/// Runs, newest first: of `job` (or every job), finished at or after `since`, at most `limit`.
pub fn query(
    conn: &Connection,
    job: Option<&str>,
    since: Option<DateTime<Utc>>,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job, fire_id, scheduled_at, started_at, finished_at, outcome, attempt, exit_code, error, details
         FROM runs
         WHERE (?1 IS NULL OR job = ?1) AND finished_at >= ?2
         ORDER BY finished_at DESC, id DESC
         LIMIT ?3",
    )?;
    let since = since.map_or(i64::MIN, |s| s.timestamp_millis());
    let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let rows = stmt.query_map(params![job, since, limit], |row| {
        let ms = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
            Ok(row.get::<_, Option<i64>>(i)?.and_then(DateTime::from_timestamp_millis))
        };
        let details: Option<String> = row.get(9)?;
        Ok(RunRecord {
            job: row.get(0)?,
            fire_id: row.get(1)?,
            scheduled_at: ms(2)?.unwrap_or_default(),
            started_at: ms(3)?,
            finished_at: ms(4)?.unwrap_or_default(),
            outcome: RunOutcome::parse(&row.get::<_, String>(5)?),
            attempt: row.get(6)?,
            exit_code: row.get(7)?,
            error: row.get(8)?,
            details: details.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default(),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, ms: i64, outcome: RunOutcome) -> RunRecord {
        let t = DateTime::from_timestamp_millis(ms).expect("valid");
        RunRecord {
            job: job.into(),
            fire_id: format!("{job}-{ms}"),
            scheduled_at: t,
            started_at: Some(t),
            finished_at: t + chrono::Duration::milliseconds(250),
            outcome,
            attempt: 1,
            exit_code: Some(0),
            error: None,
            details: Details { latency_ms: Some(1.5), ..Details::default() },
        }
    }

    #[test]
    fn the_writer_batches_and_queries_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (history, writer) = Writer::start(
            dir.path(),
            Duration::from_secs(365 * 86_400 * 100),
            crate::clock::Clock::System,
            Default::default(),
        )
        .expect("start");
        for i in 0..1000 {
            history.record(record(if i % 2 == 0 { "a" } else { "b" }, 1_000_000 + i, RunOutcome::Success));
        }
        history.record(record("a", 2_000_000, RunOutcome::Timeout));
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        let a = query(&conn, Some("a"), None, Some(3)).expect("query");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].outcome, RunOutcome::Timeout);
        assert_eq!(a[0].details.latency_ms, Some(1.5));
        assert_eq!(a[0].duration(), Some(Duration::from_millis(250)));
        assert_eq!(query(&conn, None, None, None).expect("all").len(), 1001);
        let since = DateTime::from_timestamp_millis(1_000_900).expect("valid");
        // Finished 250 ms after the slot: odd i from 651 to 999.
        assert_eq!(query(&conn, Some("b"), Some(since), None).expect("since").len(), 175);
    }

    #[test]
    fn old_runs_are_pruned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (history, writer) =
            Writer::start(dir.path(), Duration::from_secs(86_400), crate::clock::Clock::System, Default::default())
                .expect("start");
        let now = Utc::now().timestamp_millis();
        history.record(record("old", now - 2 * 86_400_000, RunOutcome::Success));
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        assert!(query(&conn, None, None, None).expect("query").is_empty());
    }
}
