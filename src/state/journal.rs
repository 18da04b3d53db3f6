//! The fire journal: for each job, the last slot handled, in the state database.
//!
//! The timer loop writes each tick's slots in one transaction *before* it dispatches them, so a
//! slot recorded here has been (or is being) run, and a slot not recorded has not started:
//! after a crash at any moment, no recorded slot runs again, and missed slots are known.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::StateError;

/// A slot the loop is about to dispatch (or let pass, for a paused job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub job: String,
    pub slot: DateTime<Utc>,
    /// The job's schedule, as written (with its zone): a different one next start means the job
    /// starts afresh instead of catching up.
    pub schedule: String,
}

#[derive(Debug)]
pub struct Journal {
    conn: Connection,
}

impl Journal {
    pub fn open(state_dir: &Path) -> Result<Journal, StateError> {
        Ok(Journal { conn: super::open(state_dir)? })
    }

    /// Every job's last handled slot and its schedule.
    pub fn load(&self) -> rusqlite::Result<HashMap<String, (DateTime<Utc>, String)>> {
        let mut stmt = self.conn.prepare("SELECT job, slot, schedule FROM last_fired")?;
        let rows = stmt.query_map([], |r| {
            let slot: i64 = r.get(1)?;
            Ok((r.get::<_, String>(0)?, (DateTime::from_timestamp_millis(slot).unwrap_or_default(), r.get(2)?)))
        })?;
        rows.collect()
    }

    /// Records a tick's slots, all in one transaction.
    pub fn record(&mut self, handled: &[Handled]) -> rusqlite::Result<()> {
        self.record_each(handled.iter().map(|h| (h.job.as_str(), h.slot, h.schedule.as_str())))
    }

    /// Like [`Journal::record`], from borrowed parts: the loop allocates nothing per fire.
    pub fn record_each<'a>(
        &mut self,
        handled: impl IntoIterator<Item = (&'a str, DateTime<Utc>, &'a str)>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO last_fired (job, slot, schedule) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job) DO UPDATE SET slot = excluded.slot, schedule = excluded.schedule
                 WHERE excluded.slot > last_fired.slot OR excluded.schedule != last_fired.schedule",
            )?;
            for (job, slot, schedule) in handled {
                stmt.execute(params![job, slot.timestamp_millis(), schedule])?;
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_latest_slot_per_job_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = |s| DateTime::from_timestamp(s, 0).expect("valid");
        let h = |job: &str, s, sched: &str| Handled { job: job.into(), slot: t(s), schedule: sched.into() };
        let mut j = Journal::open(dir.path()).expect("open");
        j.record(&[h("a", 100, "every 1s"), h("b", 100, "cron * * * * * UTC")]).expect("record");
        j.record(&[h("a", 101, "every 1s")]).expect("record");
        j.record(&[h("a", 50, "every 1s")]).expect("an older slot never wins");
        drop(j);
        let j = Journal::open(dir.path()).expect("reopen");
        let all = j.load().expect("load");
        assert_eq!(all["a"], (t(101), "every 1s".to_string()));
        assert_eq!(all["b"], (t(100), "cron * * * * * UTC".to_string()));
    }
}
