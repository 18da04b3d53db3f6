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
use crate::job::{Details, HistoryMode, Retention, RunOutcome};
use std::collections::HashMap;
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
    /// Which runs each job keeps: sent at start and at each reload.
    Retentions(Arc<Retentions>),
}

/// Which runs each job keeps: the retention most jobs share (normally `[scheduler]`'s) and
/// the jobs that differ from it. A map of every job cost 5.4 MB at 100 000 jobs under
/// `history = "off"`; now a schedule under one setting costs nothing here. A job that is not
/// in the config (a run that ends after a reload dropped its job) keeps the default.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Retentions {
    default: Retention,
    except: HashMap<Arc<str>, Retention>,
    /// The jobs that keep the default, only when the default needs them by name (`failures`
    /// learns each one's last outcome, a cap deletes per job).
    by_default: Box<[Arc<str>]>,
}

impl Retentions {
    /// The retentions of named jobs; the one most of them have becomes the default.
    pub fn new(jobs: impl IntoIterator<Item = (Arc<str>, Retention)>) -> Retentions {
        let jobs: Vec<(Arc<str>, Retention)> = jobs.into_iter().collect();
        // Few distinct values (one per setting written): count them in a short list.
        let mut counts: Vec<(Retention, usize)> = Vec::new();
        for (_, r) in &jobs {
            match counts.iter_mut().find(|(c, _)| c == r) {
                Some((_, n)) => *n += 1,
                None => counts.push((*r, 1)),
            }
        }
        // On a tie, every run (as a job not named kept before there was a default).
        let default = counts
            .iter()
            .max_by_key(|(r, n)| (*n, *r == Retention::default()))
            .map_or_else(Retention::default, |(r, _)| *r);
        let named = default.mode == HistoryMode::Failures || default.max_runs.is_some();
        let (mut except, mut by_default) = (HashMap::new(), Vec::new());
        for (job, r) in jobs {
            if r != default {
                except.insert(job, r);
            } else if named {
                by_default.push(job);
            }
        }
        Retentions { default, except, by_default: by_default.into_boxed_slice() }
    }

    pub fn get(&self, job: &str) -> Retention {
        self.except.get(job).copied().unwrap_or(self.default)
    }

    /// Whether every job keeps every run.
    fn keeps_all(&self) -> bool {
        self.default == Retention::default() && self.except.is_empty()
    }

    /// The jobs named with their retention (those that differ, and the default's when it
    /// needs them).
    fn named(&self) -> impl Iterator<Item = (&Arc<str>, Retention)> {
        self.except.iter().map(|(j, r)| (j, *r)).chain(self.by_default.iter().map(|j| (j, self.default)))
    }
}

impl Pending {
    /// The retentions of `jobs`, as the writer takes them.
    pub fn retentions<'a>(jobs: impl IntoIterator<Item = &'a crate::job::Job>) -> Pending {
        Pending::Retentions(Arc::new(Retentions::new(jobs.into_iter().map(|j| (j.name.clone(), j.history)))))
    }

    fn into_records(self, out: &mut Vec<RunRecord>) {
        match self {
            Pending::Retentions(_) => {}
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
    /// Its result: whether every run sent to it was written (or counted, or left out by its
    /// job's retention).
    thread: Option<std::thread::JoinHandle<bool>>,
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
    /// Returns whether all of it was.
    pub fn finish(mut self) -> bool {
        self.thread.take().is_some_and(|t| t.join().unwrap_or(false))
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
) -> bool {
    // The history can wait; the timer loop cannot. On a small machine this thread's inserts
    // would otherwise take the loop's core just when a burst of fires is due.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!("cannot lower the history writer's priority: {e}");
    }
    let mut batch = Vec::with_capacity(1024);
    let mut keeper = Keeper::default();
    let mut last_prune: Option<Instant> = None;
    let mut dropped = 0usize;
    let mut retrying = false;
    loop {
        // Runs that could not be written wait in `batch`: take more without blocking, and try
        // again after a pause; otherwise wait for the next run.
        if batch.is_empty() && keeper.counted.is_empty() {
            match rx.blocking_recv() {
                Some(first) => keeper.take(first, &mut batch, &conn),
                None => return dropped == 0,
            }
        }
        let mut closed = false;
        // While retrying, everything queued joins the waiting runs (trimmed below).
        while batch.len() < MAX_BATCH || retrying {
            match rx.try_recv() {
                Ok(e) => keeper.take(e, &mut batch, &conn),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        match write(&mut conn, &batch, &keeper.counted) {
            Ok(()) => {
                alarm.recovered(super::alarm::Part::History, &format!("{} waiting run(s) written", batch.len()));
                batch.clear();
                keeper.counted.clear();
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
                    return false;
                }
                retrying = true;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        if closed || last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let cutoff = clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            match conn.execute("DELETE FROM runs WHERE finished_at < ?1", [cutoff.timestamp_millis()]) {
                Ok(0) => {}
                Ok(n) => tracing::debug!("pruned {n} run(s) older than {}", humantime::format_duration(keep)),
                Err(e) => tracing::warn!("cannot prune run history: {e}"),
            }
            let hour = cutoff.timestamp().div_euclid(3600);
            if let Err(e) = conn.execute("DELETE FROM unwritten_successes WHERE hour < ?1", [hour]) {
                tracing::warn!("cannot prune success counts: {e}");
            }
            if let Err(e) = keep_runs(&conn, &keeper.retention) {
                tracing::warn!("cannot prune run history to history_keep_runs: {e}");
            }
        }
        if closed {
            return dropped == 0;
        }
    }
}

/// What the writer keeps of the runs it gets, job by job (`history`, `history_keep_runs`).
#[derive(Debug, Default)]
struct Keeper {
    retention: Arc<Retentions>,
    /// Whether each job's last run was a success, for `failures`: a success after anything
    /// else (or the first after a start) is written.
    last_ok: HashMap<String, bool>,
    /// Successes left out, by job and hour: written with the next batch.
    counted: HashMap<String, HashMap<i64, u64>>,
}

impl Keeper {
    /// Adds to `batch` the runs of `entry` that their job's retention writes.
    fn take(&mut self, entry: Pending, batch: &mut Vec<RunRecord>, conn: &Connection) {
        match entry {
            Pending::Retentions(r) => {
                self.retention = r;
                self.learn(conn);
            }
            Pending::Batch(entries) if !self.retention.keeps_all() => {
                for e in entries {
                    self.take(e, batch, conn);
                }
            }
            // An instant success that is only counted costs no row to build.
            Pending::Instant { job, at, .. } if self.counts_instant(&job, at) => {}
            entry => self.take_records(entry, batch),
        }
    }

    /// For jobs that newly keep only failures: whether their last written run was a success.
    /// A job with no run written counts as succeeding: its first success after a start is not
    /// a change, while one after a failure (before the restart too) is.
    fn learn(&mut self, conn: &Connection) {
        let Ok(mut stmt) =
            conn.prepare_cached("SELECT outcome FROM runs WHERE job = ?1 ORDER BY scheduled_at DESC LIMIT 1")
        else {
            return;
        };
        for (job, r) in self.retention.named() {
            if r.mode != HistoryMode::Failures || self.last_ok.contains_key(&**job) {
                continue;
            }
            let last: Option<String> = stmt.query_row([&**job], |row| row.get(0)).ok();
            self.last_ok.insert(job.to_string(), last.is_none_or(|o| o == RunOutcome::Success.as_str()));
        }
    }

    /// For an instant job's success: counts it and returns true if its retention leaves it
    /// out of the history.
    fn counts_instant(&mut self, job: &str, at: DateTime<Utc>) -> bool {
        match self.retention.get(job).mode {
            HistoryMode::All => false,
            HistoryMode::Off => true,
            HistoryMode::Failures => {
                let counted = self.last_ok.get(job) == Some(&true);
                if counted {
                    self.count(job, at);
                }
                counted
            }
        }
    }

    fn take_records(&mut self, entry: Pending, batch: &mut Vec<RunRecord>) {
        let start = batch.len();
        entry.into_records(batch);
        if self.retention.keeps_all() {
            return;
        }
        let mut kept = start;
        for i in start..batch.len() {
            if self.keeps(&batch[i]) {
                batch.swap(kept, i);
                kept += 1;
            }
        }
        batch.truncate(kept);
    }

    /// Counts a success of `job` left out of the history (no allocation once the job has one).
    fn count(&mut self, job: &str, at: DateTime<Utc>) {
        let hours = match self.counted.get_mut(job) {
            Some(hours) => hours,
            None => self.counted.entry(job.to_string()).or_default(),
        };
        *hours.entry(at.timestamp().div_euclid(3600)).or_default() += 1;
    }

    fn keeps(&mut self, r: &RunRecord) -> bool {
        let mode = self.retention.get(r.job.as_str()).mode;
        match mode {
            HistoryMode::All => true,
            HistoryMode::Off => false,
            HistoryMode::Failures => {
                let ok = r.outcome == RunOutcome::Success;
                let was_ok = match self.last_ok.get_mut(&r.job) {
                    Some(last) => Some(std::mem::replace(last, ok)),
                    None => self.last_ok.insert(r.job.clone(), ok),
                };
                let plain = ok && r.attempt <= 1 && was_ok == Some(true) && !manual(r);
                if plain {
                    self.count(&r.job, r.finished_at);
                }
                !plain
            }
        }
    }
}

/// Whether `r` is a run someone asked for (its id is not the one its slot derives): those are
/// always written.
fn manual(r: &RunRecord) -> bool {
    !r.fire_id.is_empty() && r.fire_id != crate::job::fire_id(&r.job, r.scheduled_at).to_string()
}

/// Deletes each capped job's runs beyond its newest `history_keep_runs`.
fn keep_runs(conn: &Connection, retention: &Retentions) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM runs WHERE job = ?1 AND id <= (SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?;
    for (job, r) in retention.named() {
        if let Some(max) = r.max_runs {
            stmt.execute(params![&**job, i64::try_from(max.get()).unwrap_or(i64::MAX)])?;
        }
    }
    Ok(())
}

/// Writes `batch` and the success counts in one transaction.
fn write(
    conn: &mut Connection,
    batch: &[RunRecord],
    counted: &HashMap<String, HashMap<i64, u64>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    insert_rows(&tx, batch)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO unwritten_successes (job, hour, n) VALUES (?1, ?2, ?3)
             ON CONFLICT (job, hour) DO UPDATE SET n = n + excluded.n",
        )?;
        for (job, hours) in counted {
            for (hour, n) in hours {
                stmt.execute(params![job, hour, i64::try_from(*n).unwrap_or(i64::MAX)])?;
            }
        }
    }
    tx.commit()
}

/// Successes left out of the history (`history = "failures"`) per job, in the hours that
/// overlap `since..`.
pub fn unwritten_successes(conn: &Connection, since: DateTime<Utc>) -> rusqlite::Result<HashMap<String, u64>> {
    let mut stmt = conn.prepare_cached("SELECT job, sum(n) FROM unwritten_successes WHERE hour >= ?1 GROUP BY job")?;
    let rows = stmt.query_map([since.timestamp().div_euclid(3600)], |r| {
        Ok((r.get::<_, String>(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
    })?;
    rows.collect()
}

pub fn insert(conn: &mut Connection, batch: &[RunRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    insert_rows(&tx, batch)?;
    tx.commit()
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, batch: &[RunRecord]) -> rusqlite::Result<()> {
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
    Ok(())
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
    let rows = stmt.query_map(params![job, since, limit], read_row)?;
    rows.collect()
}

/// The last attempt of the run with this fire id, if the history has it.
pub fn by_fire_id(conn: &Connection, fire_id: &str) -> rusqlite::Result<Option<RunRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job, fire_id, scheduled_at, started_at, finished_at, outcome, attempt, exit_code, error, details
         FROM runs WHERE fire_id = ?1 ORDER BY attempt DESC, id DESC LIMIT 1",
    )?;
    let mut rows = stmt.query_map(params![fire_id], read_row)?;
    rows.next().transpose()
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU64;

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
    fn retention_failures_off_and_a_cap_per_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let forever = Duration::from_secs(365 * 86_400 * 100);
        let (history, writer) =
            Writer::start(dir.path(), forever, crate::clock::Clock::System, Default::default()).expect("start");
        let keep = |mode, max_runs| Retention { mode, max_runs };
        let retentions = Retentions::new([
            ("f".into(), keep(HistoryMode::Failures, None)),
            ("o".into(), keep(HistoryMode::Off, None)),
            ("capped".into(), keep(HistoryMode::All, NonZeroU64::new(5))),
            ("a".into(), keep(HistoryMode::All, None)),
        ]);
        history.send(Pending::Retentions(Arc::new(retentions)));
        // Scheduled runs carry no id (the writer derives it); the last one is a retry.
        let scheduled = |job: &str, ms: i64, outcome, attempt| RunRecord {
            fire_id: String::new(),
            attempt,
            ..record(job, ms, outcome)
        };
        use RunOutcome::{Failure, Success, Timeout};
        let f = [Success, Success, Failure, Success, Success, Success, Timeout, Success, Success];
        for (i, outcome) in f.into_iter().enumerate() {
            let attempt = if i == 8 { 2 } else { 1 };
            history.record(scheduled("f", 1_000_000 + i as i64 * 1000, outcome, attempt));
        }
        // Asked for by hand (an id that is not the slot's): written whatever came before.
        history.record(RunRecord {
            fire_id: "4a1c2b7e-0000-4000-8000-000000000000".into(),
            ..record("f", 2_000_000, Success)
        });
        for i in 0..10 {
            history.record(scheduled("o", 1_000_000 + i, if i == 5 { Failure } else { Success }, 1));
        }
        for i in 0..12 {
            history.record(scheduled("capped", 1_000_000 + i * 1000, Success, 1));
            history.record(scheduled("a", 1_000_000 + i * 1000, Success, 1));
        }
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        let outcomes = |job| -> Vec<(RunOutcome, u32)> {
            let mut runs = query(&conn, Some(job), None, None).expect("query");
            runs.reverse();
            runs.iter().map(|r| (r.outcome, r.attempt)).collect()
        };
        // The failure, the recovery, the timeout, the recovery, the retried success, the manual
        // run; the plain successes (the first ones included: no run before) are counted.
        assert_eq!(outcomes("f"), [(Failure, 1), (Success, 1), (Timeout, 1), (Success, 1), (Success, 2), (Success, 1)]);
        let epoch = DateTime::from_timestamp(0, 0).expect("valid");
        let counted = unwritten_successes(&conn, epoch).expect("counts");
        assert_eq!(counted, [("f".to_string(), 4)].into());
        assert!(outcomes("o").is_empty());
        assert_eq!(outcomes("capped").len(), 5);
        let capped = query(&conn, Some("capped"), None, None).expect("query");
        assert_eq!(capped.last().map(|r| r.scheduled_at.timestamp_millis()), Some(1_007_000), "the newest five");
        assert_eq!(outcomes("a").len(), 12);
        drop(conn);

        // Across a restart: a failure last written makes the next success a recovery.
        let retentions = Retentions::new([("f".into(), keep(HistoryMode::Failures, None))]);
        let (history, writer) =
            Writer::start(dir.path(), forever, crate::clock::Clock::System, Default::default()).expect("start");
        history.send(Pending::Retentions(Arc::new(retentions.clone())));
        history.record(scheduled("f", 3_000_000, Failure, 1));
        drop(history);
        writer.finish();
        let (history, writer) =
            Writer::start(dir.path(), forever, crate::clock::Clock::System, Default::default()).expect("start");
        history.send(Pending::Retentions(Arc::new(retentions)));
        history.record(scheduled("f", 3_001_000, Success, 1));
        history.record(scheduled("f", 3_002_000, Success, 1));
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        let last: Vec<i64> = query(&conn, Some("f"), None, Some(2))
            .expect("query")
            .iter()
            .map(|r| r.scheduled_at.timestamp_millis())
            .collect();
        assert_eq!(last, [3_001_000, 3_000_000], "the recovery after the restart is written, the next success counted");
    }

    /// `[scheduler] history = "off"` for 100 000 jobs and one job that keeps its runs: one
    /// default and one exception, not a map of every job; and the default still applies.
    #[test]
    fn the_setting_most_jobs_share_is_the_default_and_only_the_others_are_named() {
        let keep = |mode, max_runs| Retention { mode, max_runs };
        let off = keep(HistoryMode::Off, None);
        let mut jobs: Vec<(Arc<str>, Retention)> = (0..1000).map(|i| (format!("j{i}").into(), off)).collect();
        jobs.push(("keep".into(), Retention::default()));
        jobs.push(("few".into(), keep(HistoryMode::Failures, NonZeroU64::new(2))));
        let r = Retentions::new(jobs);
        assert_eq!((r.default, r.except.len(), r.by_default.len()), (off, 2, 0));
        assert_eq!(r.get("j7"), off);
        assert_eq!(r.get("keep"), Retention::default());
        assert_eq!(r.get("gone-since-a-reload"), off);
        assert!(Retentions::new([("a".into(), Retention::default())]).keeps_all());
        assert!(Retentions::new([]).keeps_all());

        let dir = tempfile::tempdir().expect("temp dir");
        let forever = Duration::from_secs(365 * 86_400 * 100);
        let (history, writer) =
            Writer::start(dir.path(), forever, crate::clock::Clock::System, Default::default()).expect("start");
        history.send(Pending::Retentions(Arc::new(r)));
        // A cap shared by every job: each is capped by name.
        for i in 0..4 {
            history.record(record("j1", 1_000_000 + i * 1000, RunOutcome::Failure));
            history.record(record("keep", 1_000_000 + i * 1000, RunOutcome::Success));
            history.record(record("gone-since-a-reload", 1_000_000 + i * 1000, RunOutcome::Failure));
        }
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        let count = |job| query(&conn, Some(job), None, None).expect("query").len();
        assert_eq!((count("j1"), count("keep"), count("gone-since-a-reload")), (0, 4, 0));
        drop(conn);

        let capped = Retentions::new(["a", "b", "c"].map(|j| (j.into(), keep(HistoryMode::All, NonZeroU64::new(2)))));
        assert_eq!(capped.by_default.len(), 3, "a cap deletes by name");
        let (history, writer) =
            Writer::start(dir.path(), forever, crate::clock::Clock::System, Default::default()).expect("start");
        history.send(Pending::Retentions(Arc::new(capped)));
        for i in 0..5 {
            for job in ["a", "b", "c"] {
                history.record(record(job, 2_000_000 + i * 1000, RunOutcome::Success));
            }
        }
        drop(history);
        writer.finish();
        let conn = super::super::open_read_only(dir.path()).expect("open");
        let count = |job| query(&conn, Some(job), None, None).expect("query").len();
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
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
