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
}

pub const FILE: &str = "journal.sqlite3";

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
];

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
        Ok(Known { handled_until, schedules })
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

    /// Records that every fire due at or before `until` is handled. Never moves backwards.
    pub fn handled_until(&mut self, until: DateTime<Utc>) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO journal (id, handled_until) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET handled_until = max(handled_until, excluded.handled_until)",
            )?
            .execute([until.timestamp_millis()])?;
        Ok(())
    }
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
        j.handled_until(t(100)).expect("mark");
        j.handled_until(t(50)).expect("an earlier mark is ignored");
        j.set_jobs([("a", "every 2s UTC")], t(20)).expect("jobs");
        drop(j);
        let j = Journal::open(dir.path()).expect("reopen");
        let known = j.load().expect("load");
        assert_eq!(known.handled_until, Some(t(100)));
        assert_eq!(known.schedules, HashMap::from([("a".to_string(), "every 2s UTC".to_string())]));
    }
}
