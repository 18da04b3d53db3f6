//! The fire journal: which fires have been handled, in the state database.
//!
//! The timer loop handles fires in time order: once a tick at instant T is done, every fire of
//! every job due at or before T has been run (or let pass, for a paused job). So one number, the
//! *watermark* `handled_until`, says what has been handled for all jobs at once; the loop writes
//! it in one small transaction per tick, *before* dispatching that tick's fires. After a crash
//! at any moment, a fire at or before the watermark never runs again, and the fires after it
//! are exactly the missed ones. (A row per job per tick would say the same at 10 000 times the
//! cost: 15 ms of every tick at 10 000 jobs a second.)
//!
//! `journal_jobs` keeps the schedule each job had, written at start: a job that is new, or
//! whose schedule changed, starts from now instead of catching up.
//!
//! The same transaction stores which fires the tick dispatches, as one small blob (a job id
//! and a slot each), so that the run history can hold every fire exactly once whatever the
//! crash timing: runs are recorded when they end, by the history writer, and a crash between
//! the tick and that record would otherwise leave the slot handled but in no history. At
//! start, [`Known::fired`] lists the fires of the last ticks; those the history lacks are
//! recorded as interrupted. Rows are dropped once every run of their tick has been recorded
//! (see [`Journal::forget_fired_before`]).
//!
//! The journal has its own database file: SQLite lets one connection write at a time, and the
//! loop must never wait behind the history writer's large transactions.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StateError;

#[derive(Debug)]
pub struct Journal {
    conn: Connection,
}

/// What the journal knew at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Every fire due at or before this was handled; `None` on a first start.
    pub handled_until: Option<DateTime<Utc>>,
    /// Each job's schedule (text and zone) when last started.
    pub schedules: HashMap<String, String>,
    /// Fires dispatched by recent ticks: (job, slot). Their runs may not all be recorded.
    pub fired: Vec<(String, DateTime<Utc>)>,
}

pub const FILE: &str = "journal.sqlite3";

/// Schema versions this beatd knows for the journal.
pub const VERSIONS: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    // 1: every fire due up to `handled_until` has been handled, and the schedule each job had.
    "CREATE TABLE journal (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        handled_until INTEGER NOT NULL   -- unix milliseconds; only ever grows
    );
    CREATE TABLE journal_jobs (
        job TEXT PRIMARY KEY,
        schedule TEXT NOT NULL,          -- schedule text and zone: a change starts afresh
        since INTEGER NOT NULL           -- unix milliseconds: scheduled with it since then
    );",
    // 2: the fires each recent tick dispatched, for an exactly-once history after a crash.
    "CREATE TABLE journal_ids (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so old ticks stay readable
        job TEXT NOT NULL UNIQUE
    );
    CREATE TABLE fired (
        id INTEGER PRIMARY KEY,
        tick INTEGER NOT NULL,           -- unix milliseconds: the watermark written with it
        fires BLOB NOT NULL              -- per fire: varints of the job id and the slot (ms),
                                         -- each as the difference from the fire before
    );
    CREATE INDEX fired_by_tick ON fired (tick);",
    // 3: jobs paused through the API: needed to schedule, so here and not in the history.
    "CREATE TABLE paused (
        job TEXT PRIMARY KEY,
        since INTEGER NOT NULL           -- unix milliseconds
    );",
];

/// A connection to the journal file, for the paused set (the API writes it while the loop
/// holds its own connection).
pub fn connection(state_dir: &Path) -> Result<rusqlite::Connection, StateError> {
    super::open_file(state_dir, FILE, MIGRATIONS)
}

impl Journal {
    pub fn open(state_dir: &Path) -> Result<Journal, StateError> {
        Ok(Journal { conn: super::open_file(state_dir, FILE, MIGRATIONS)? })
    }

    pub fn load(&self) -> rusqlite::Result<Known> {
        let handled_until = self
            .conn
            .query_row("SELECT handled_until FROM journal WHERE id = 1", [], |r| r.get::<_, i64>(0))
            .optional()?
            .and_then(DateTime::from_timestamp_millis);
        let mut stmt = self.conn.prepare("SELECT job, schedule FROM journal_jobs")?;
        let schedules = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare("SELECT id, job FROM journal_ids")?;
        let names: HashMap<u32, String> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut fired = Vec::new();
        let mut stmt = self.conn.prepare("SELECT tick, fires FROM fired ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let tick: i64 = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            for (id, ms) in decode_fires(tick, &blob) {
                if let (Some(job), Some(slot)) = (names.get(&id), DateTime::from_timestamp_millis(ms)) {
                    fired.push((job.clone(), slot));
                }
            }
        }
        Ok(Known { handled_until, schedules, fired })
    }

    /// Each job's stable id for `fired` blobs, assigned on first sight and never reused.
    pub fn ids<'a>(&mut self, jobs: impl IntoIterator<Item = &'a str>) -> rusqlite::Result<Vec<u32>> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::new();
        {
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO journal_ids (job) VALUES (?1)")?;
            let mut select = tx.prepare_cached("SELECT id FROM journal_ids WHERE job = ?1")?;
            for job in jobs {
                insert.execute([job])?;
                ids.push(select.query_row([job], |r| r.get(0))?);
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Forgets the fires recorded at start (once the history has them).
    pub fn clear_fired(&mut self) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM fired", []).map(drop)
    }

    /// Drops the fires of ticks before `tick`: every run they started has been recorded.
    pub fn forget_fired_before(&mut self, tick: DateTime<Utc>) -> rusqlite::Result<()> {
        self.conn.prepare_cached("DELETE FROM fired WHERE tick < ?1")?.execute([tick.timestamp_millis()]).map(drop)
    }

    /// Replaces the set of scheduled jobs: `jobs` is (name, schedule); a job whose schedule is
    /// unchanged keeps its row, others get `since = now`, and jobs not listed are forgotten.
    pub fn set_jobs<'a>(
        &mut self,
        jobs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("CREATE TEMP TABLE IF NOT EXISTS current_jobs (job TEXT PRIMARY KEY)", [])?;
        tx.execute("DELETE FROM current_jobs", [])?;
        {
            let mut keep = tx.prepare("INSERT OR IGNORE INTO current_jobs (job) VALUES (?1)")?;
            let mut upsert = tx.prepare(
                "INSERT INTO journal_jobs (job, schedule, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job) DO UPDATE SET schedule = excluded.schedule, since = excluded.since
                 WHERE journal_jobs.schedule != excluded.schedule",
            )?;
            for (job, schedule) in jobs {
                keep.execute([job])?;
                upsert.execute(params![job, schedule, now.timestamp_millis()])?;
            }
        }
        tx.execute("DELETE FROM journal_jobs WHERE job NOT IN (SELECT job FROM current_jobs)", [])?;
        tx.commit()
    }

    /// Applies a reload's changes to the set of scheduled jobs: `upsert` is (name, schedule) of
    /// jobs new to the set or whose schedule changed, `remove` the names that left it. What
    /// [`Journal::set_jobs`] does for the whole set, for the difference only: a reload that
    /// changes one job of 100 000 writes one row.
    pub fn update_jobs<'a>(
        &mut self,
        upsert: impl IntoIterator<Item = (&'a str, &'a str)>,
        remove: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert_stmt = tx.prepare_cached(
                "INSERT INTO journal_jobs (job, schedule, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job) DO UPDATE SET schedule = excluded.schedule, since = excluded.since
                 WHERE journal_jobs.schedule != excluded.schedule",
            )?;
            for (job, schedule) in upsert {
                upsert_stmt.execute(params![job, schedule, now.timestamp_millis()])?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM journal_jobs WHERE job = ?1")?;
            for job in remove {
                delete.execute([job])?;
            }
        }
        tx.commit()
    }

    /// Records that every fire due at or before `until` is handled (the watermark never moves
    /// backwards), and that this tick dispatches `fires`, (job id, slot) each, in one
    /// transaction.
    pub fn handled_until(
        &mut self,
        until: DateTime<Utc>,
        fires: impl ExactSizeIterator<Item = (u32, DateTime<Utc>)>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO journal (id, handled_until) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET handled_until = max(handled_until, excluded.handled_until)",
        )?
        .execute([until.timestamp_millis()])?;
        if fires.len() > 0 {
            let tick = until.timestamp_millis();
            let blob = encode_fires(tick, fires);
            tx.prepare_cached("INSERT INTO fired (tick, fires) VALUES (?1, ?2)")?.execute(params![tick, blob])?;
        }
        tx.commit()
    }
}

/// A tick's fires as varints, each the difference from the fire before (the first from job 0
/// and the tick itself). Fires leave the heap in (time, job) order and ids follow job order, so
/// a burst of 10 000 jobs due at the tick is two bytes a fire, not twelve.
fn encode_fires(tick: i64, fires: impl Iterator<Item = (u32, DateTime<Utc>)>) -> Vec<u8> {
    use integer_encoding::VarInt;
    let mut blob = Vec::new();
    let (mut id, mut ms) = (0i64, tick);
    let mut buf = [0u8; 10];
    for (next_id, slot) in fires {
        let next_ms = slot.timestamp_millis();
        for delta in [i64::from(next_id) - id, next_ms - ms] {
            let n = delta.encode_var(&mut buf);
            blob.extend_from_slice(&buf[..n]);
        }
        (id, ms) = (i64::from(next_id), next_ms);
    }
    blob
}

/// The (job id, slot ms) pairs of a blob written by [`encode_fires`] for `tick`.
fn decode_fires(tick: i64, mut blob: &[u8]) -> Vec<(u32, i64)> {
    use integer_encoding::VarInt;
    let mut out = Vec::new();
    let (mut id, mut ms) = (0i64, tick);
    while let Some((d_id, a)) = i64::decode_var(blob) {
        let Some((d_ms, b)) = i64::decode_var(&blob[a..]) else { break };
        blob = &blob[a + b..];
        (id, ms) = (id + d_id, ms + d_ms);
        if let Ok(job) = u32::try_from(id) {
            out.push((job, ms));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_only_grows_and_jobs_track_their_schedule() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = |s| DateTime::from_timestamp(s, 0).expect("valid");
        let mut j = Journal::open(dir.path()).expect("open");
        assert_eq!(j.load().expect("load"), Known::default());
        j.set_jobs([("a", "every 1s UTC"), ("b", "0 * * * * UTC")], t(10)).expect("jobs");
        let ids = j.ids(["a", "b"]).expect("ids");
        j.handled_until(t(100), [(ids[0], t(99)), (ids[1], t(60))].into_iter()).expect("mark");
        j.handled_until(t(50), std::iter::empty()).expect("an earlier mark is ignored");
        j.handled_until(t(101), [(ids[0], t(100))].into_iter()).expect("mark");
        j.set_jobs([("a", "every 2s UTC")], t(20)).expect("jobs");
        drop(j);
        let mut j = Journal::open(dir.path()).expect("reopen");
        let known = j.load().expect("load");
        assert_eq!(known.handled_until, Some(t(101)));
        assert_eq!(known.schedules, HashMap::from([("a".to_string(), "every 2s UTC".to_string())]));
        // "b" left the schedule, but its fire stays readable: ids are never reused.
        let name = |s: &str| s.to_string();
        assert_eq!(known.fired, [(name("a"), t(99)), (name("b"), t(60)), (name("a"), t(100))]);
        assert_eq!(j.ids(["c", "a"]).expect("ids"), [3, ids[0]]);
        j.forget_fired_before(t(101)).expect("forget");
        assert_eq!(j.load().expect("load").fired, [(name("a"), t(100))]);
        j.clear_fired().expect("clear");
        assert!(j.load().expect("load").fired.is_empty());
    }
}
