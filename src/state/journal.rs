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
    // 4: fire lists in runs: each entry also counts the fires that follow it with the next
    // job ids and the same slot (a burst of 10 000 jobs is a few bytes, not 20 000).
    "ALTER TABLE fired ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;  -- 1: `fires` holds runs",
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
        Ok(Known { handled_until, schedules: self.schedules()? })
    }

    /// Each job's schedule (text and zone) as last recorded.
    fn schedules(&self) -> rusqlite::Result<HashMap<String, String>> {
        let mut stmt = self.conn.prepare("SELECT job, schedule FROM journal_jobs")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
    }

    /// Fires dispatched by recent ticks, (job, slot): their runs may not all be recorded.
    /// Empty after a clean stop; the job names are read only when there are fires.
    pub fn fired(&self) -> rusqlite::Result<Vec<(String, DateTime<Utc>)>> {
        let mut lists = Vec::new();
        let mut stmt = self.conn.prepare("SELECT tick, fires, runs FROM fired ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (tick, blob, runs): (i64, Vec<u8>, bool) = (row.get(0)?, row.get(1)?, row.get(2)?);
            lists.push(decode_fires(tick, &blob, runs));
        }
        if lists.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare("SELECT id, job FROM journal_ids")?;
        let names: HashMap<u32, String> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let fired = lists
            .into_iter()
            .flatten()
            .filter_map(|(id, ms)| Some((names.get(&id)?.clone(), DateTime::from_timestamp_millis(ms)?)));
        Ok(fired.collect())
    }

    /// Each job's stable id for `fired` blobs, assigned on first sight and never reused.
    ///
    /// The known ids are read in one pass and only new jobs are inserted: two statements per
    /// job took 0.2 s of every start at 100 000 jobs. New jobs take the next ids in the order
    /// given (the loop's order, so a burst's fire list is a few runs of consecutive ids), and
    /// their rows go in sorted by name: appending to the name index instead of splitting its
    /// pages at random took a first start's 100 000 inserts from 204 to ~40 ms.
    pub fn ids<'a>(&mut self, jobs: impl IntoIterator<Item = &'a str>) -> rusqlite::Result<Vec<u32>> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::new();
        {
            let mut all = tx.prepare_cached("SELECT job, id FROM journal_ids")?;
            let known: HashMap<String, u32> =
                all.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            // AUTOINCREMENT's high-water mark: ids of jobs since forgotten stay taken.
            let last: u32 = tx
                .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'journal_ids'", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0)
                .max(known.values().copied().max().unwrap_or(0));
            let mut new = Vec::new();
            for job in jobs {
                let id = match known.get(job) {
                    Some(&id) => id,
                    None => {
                        let id = last + 1 + new.len() as u32;
                        new.push((job, id));
                        id
                    }
                };
                ids.push(id);
            }
            new.sort_unstable();
            let mut insert = tx.prepare_cached("INSERT INTO journal_ids (id, job) VALUES (?1, ?2)")?;
            for (job, id) in new {
                insert.execute(params![id, job])?;
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
    /// `stored` is what [`Journal::load`] gave, when the caller has it (else it is read).
    pub fn set_jobs<'a, S: AsRef<str>>(
        &mut self,
        jobs: impl IntoIterator<Item = (&'a str, S)>,
        stored: Option<HashMap<String, String>>,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        // The rows are compared here; only those that differ are written (a restart with an
        // unchanged config writes none).
        let mut stored = match stored {
            Some(s) => s,
            None => self.schedules()?,
        };
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare(
                "INSERT INTO journal_jobs (job, schedule, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job) DO UPDATE SET schedule = excluded.schedule, since = excluded.since",
            )?;
            // In name order, as [`Journal::ids`] inserts: 93 -> 40 ms for a first start's rows.
            let mut changed: Vec<(&str, S)> = jobs
                .into_iter()
                .filter(|(job, schedule)| stored.remove(*job).is_none_or(|s| s != schedule.as_ref()))
                .collect();
            changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (job, schedule) in changed {
                upsert.execute(params![job, schedule.as_ref(), now.timestamp_millis()])?;
            }
            let mut delete = tx.prepare("DELETE FROM journal_jobs WHERE job = ?1")?;
            for job in stored.keys() {
                delete.execute([job])?;
            }
        }
        tx.commit()?;
        // The names of a large schedule filled the page caches (4 MB at 100 000 jobs); a
        // tick's writes need a few pages. Give the rest back.
        self.conn.execute_batch("PRAGMA shrink_memory")
    }

    /// Applies a reload's changes to the set of scheduled jobs: `upsert` is (name, schedule) of
    /// jobs new to the set or whose schedule changed, `remove` the names that left it. What
    /// [`Journal::set_jobs`] does for the whole set, for the difference only: a reload that
    /// changes one job of 100 000 writes one row.
    pub fn update_jobs<'a, S: AsRef<str>>(
        &mut self,
        upsert: impl IntoIterator<Item = (&'a str, S)>,
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
                upsert_stmt.execute(params![job, schedule.as_ref(), now.timestamp_millis()])?;
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
            tx.prepare_cached("INSERT INTO fired (tick, fires, runs) VALUES (?1, ?2, 1)")?
                .execute(params![tick, blob])?;
        }
        tx.commit()
    }
}

/// A tick's fires as runs of varints: the first fire of a run as the difference from the fire
/// before (the first from job 0 and the tick itself), then how many fires follow it with the
/// next job ids and the same slot. Fires leave the timers in (time, job) order and ids follow
/// job order, so a burst of 10 000 jobs due at the tick is a few bytes: writing 20 KB of
/// pairs took 0.2 ms of the tick, before any of its fires ran.
fn encode_fires(tick: i64, fires: impl Iterator<Item = (u32, DateTime<Utc>)>) -> Vec<u8> {
    use integer_encoding::VarInt;
    let mut blob = Vec::new();
    let mut buf = [0u8; 10];
    let mut put = |blob: &mut Vec<u8>, v: i64| {
        let n = v.encode_var(&mut buf);
        blob.extend_from_slice(&buf[..n]);
    };
    // The run being built: its first fire (as written), and how many follow it.
    let (mut id, mut ms) = (0i64, tick);
    let mut run: Option<(i64, i64, i64)> = None;
    for (next_id, slot) in fires {
        let (next_id, next_ms) = (i64::from(next_id), slot.timestamp_millis());
        match &mut run {
            Some((first, at, follow)) if next_ms == *at && next_id == *first + *follow + 1 => *follow += 1,
            _ => {
                if let Some((first, at, follow)) = run.take() {
                    put(&mut blob, first - id);
                    put(&mut blob, at - ms);
                    put(&mut blob, follow);
                    (id, ms) = (first + follow, at);
                }
                run = Some((next_id, next_ms, 0));
            }
        }
    }
    if let Some((first, at, follow)) = run {
        put(&mut blob, first - id);
        put(&mut blob, at - ms);
        put(&mut blob, follow);
    }
    blob
}

/// The (job id, slot ms) pairs of a blob written for `tick`: by [`encode_fires`] (`runs`), or
/// as plain pairs of differences (lists written before schema version 4).
fn decode_fires(tick: i64, mut blob: &[u8], runs: bool) -> Vec<(u32, i64)> {
    use integer_encoding::VarInt;
    let mut out = Vec::new();
    let (mut id, mut ms) = (0i64, tick);
    let next = |blob: &mut &[u8]| {
        let (v, n) = i64::decode_var(blob)?;
        *blob = &blob[n..];
        Some(v)
    };
    while let Some(d_id) = next(&mut blob) {
        let Some(d_ms) = next(&mut blob) else { break };
        let follow = if runs { next(&mut blob).unwrap_or(0) } else { 0 };
        (id, ms) = (id + d_id, ms + d_ms);
        for k in 0..=follow.max(0) {
            if let Ok(job) = u32::try_from(id + k) {
                out.push((job, ms));
            }
        }
        id += follow.max(0);
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
        j.set_jobs([("a", "every 1s UTC"), ("b", "0 * * * * UTC")], None, t(10)).expect("jobs");
        let ids = j.ids(["a", "b"]).expect("ids");
        j.handled_until(t(100), [(ids[0], t(99)), (ids[1], t(60))].into_iter()).expect("mark");
        j.handled_until(t(50), std::iter::empty()).expect("an earlier mark is ignored");
        j.handled_until(t(101), [(ids[0], t(100))].into_iter()).expect("mark");
        j.set_jobs([("a", "every 2s UTC")], None, t(20)).expect("jobs");
        drop(j);
        let mut j = Journal::open(dir.path()).expect("reopen");
        let known = j.load().expect("load");
        assert_eq!(known.handled_until, Some(t(101)));
        assert_eq!(known.schedules, HashMap::from([("a".to_string(), "every 2s UTC".to_string())]));
        // "b" left the schedule, but its fire stays readable: ids are never reused.
        let name = |s: &str| s.to_string();
        assert_eq!(j.fired().expect("fired"), [(name("a"), t(99)), (name("b"), t(60)), (name("a"), t(100))]);
        assert_eq!(j.ids(["c", "a"]).expect("ids"), [3, ids[0]]);
        j.forget_fired_before(t(101)).expect("forget");
        assert_eq!(j.fired().expect("fired"), [(name("a"), t(100))]);
        j.clear_fired().expect("clear");
        assert!(j.fired().expect("fired").is_empty());
    }

    #[test]
    fn fire_lists_are_runs_and_the_older_pairs_still_read() {
        let t = |ms| DateTime::from_timestamp_millis(ms).expect("valid");
        let tick = 1_800_000_000_000;
        // A burst of consecutive jobs, a gap, a job at another slot, jobs going backwards.
        let mut fires: Vec<(u32, DateTime<Utc>)> = (0..10_000).map(|i| (i, t(tick))).collect();
        fires.extend([(20_000, t(tick)), (20_001, t(tick - 500)), (7, t(tick - 500)), (8, t(tick - 500))]);
        fires.extend((30_000..30_005).map(|i| (i, t(tick - 1000))));
        let blob = encode_fires(tick, fires.iter().copied());
        assert!(blob.len() < 40, "{} bytes", blob.len());
        let want: Vec<(u32, i64)> = fires.iter().map(|(i, s)| (*i, s.timestamp_millis())).collect();
        assert_eq!(decode_fires(tick, &blob, true), want);
        assert!(decode_fires(tick, &encode_fires(tick, std::iter::empty()), true).is_empty());
        // Lists written before runs: plain pairs of differences.
        use integer_encoding::VarInt;
        let mut pairs = Vec::new();
        for d in [5i64, -1000, 1, 0] {
            pairs.extend_from_slice(&d.encode_var_vec());
        }
        assert_eq!(decode_fires(tick, &pairs, false), [(5, tick - 1000), (6, tick - 1000)]);
    }
}
