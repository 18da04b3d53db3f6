//! The outbox: messages a broker could not take, kept in the state folder until it can.
//!
//! Its own SQLite file (`outbox.sqlite3`), so an outage's writes never wait behind the run
//! history's. Messages are stored fully built (the envelope with its task id), so one that
//! outlives its job's config, or beatd itself, is still delivered as it was meant. They leave in
//! slot order (per key: a queue's messages are never reordered). The outbox is bounded: past
//! `max_outbox` messages the oldest are dropped, and the caller logs and counts each.

use std::path::Path;

use chrono::DateTime;
use rusqlite::{Connection, params};

use super::{QueueMessage, Side};
use crate::state::StateError;

pub const FILE: &str = "outbox.sqlite3";

/// Schema versions this beatd knows for the outbox.
pub const VERSIONS: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        broker TEXT NOT NULL,
        job TEXT NOT NULL,
        fire_id TEXT NOT NULL,
        slot INTEGER NOT NULL,           -- unix milliseconds
        key TEXT NOT NULL,               -- the Redis list
        side TEXT NOT NULL,              -- lpush | rpush
        payload TEXT NOT NULL,
        envelope INTEGER NOT NULL,       -- 1: payload is a kombu envelope
        expires_at INTEGER               -- unix milliseconds; dropped when still here after it
    );
    CREATE INDEX outbox_order ON outbox (broker, slot, id);
    CREATE INDEX outbox_fires ON outbox (job, slot);",
    // 2: a queue held back alone (no binding on RabbitMQ) is read and counted by key.
    "CREATE INDEX outbox_keys ON outbox (broker, key, slot, id);",
];

const COLUMNS: &str = "id, job, fire_id, slot, key, side, payload, expires_at, envelope";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, QueueMessage)> {
    let ms = |i| -> rusqlite::Result<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(r.get::<_, Option<i64>>(i)?.and_then(DateTime::from_timestamp_millis))
    };
    Ok((
        r.get(0)?,
        QueueMessage {
            job: r.get(1)?,
            fire_id: r.get(2)?,
            slot: ms(3)?.unwrap_or_default(),
            key: r.get(4)?,
            side: Side::parse(&r.get::<_, String>(5)?),
            payload: r.get(6)?,
            expires_at: ms(7)?,
            envelope: r.get(8)?,
        },
    ))
}

#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    pub fn open(state_dir: &Path) -> Result<Outbox, StateError> {
        Ok(Outbox { conn: crate::state::open_file(state_dir, FILE, MIGRATIONS)? })
    }

    pub fn push(&mut self, broker: &str, messages: &[QueueMessage]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO outbox (broker, job, fire_id, slot, key, side, payload, expires_at, envelope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for m in messages {
                stmt.execute(params![
                    broker,
                    m.job,
                    m.fire_id,
                    m.slot.timestamp_millis(),
                    m.key,
                    m.side.as_str(),
                    m.payload,
                    m.expires_at.map(|t| t.timestamp_millis()),
                    m.envelope,
                ])?;
            }
        }
        tx.commit()
    }

    /// Messages waiting for `broker`, or for any broker.
    pub fn len(&self, broker: Option<&str>) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM outbox WHERE ?1 IS NULL OR broker = ?1", [broker], |r| r.get::<_, i64>(0))
            .map(|n| n.unsigned_abs())
    }

    /// The oldest `n` messages of `broker` whose key is not in `except`, in slot order, with
    /// their row ids.
    pub fn oldest(&self, broker: &str, n: usize, except: &[String]) -> rusqlite::Result<Vec<(i64, QueueMessage)>> {
        let except = serde_json::to_string(except).unwrap_or_else(|_| "[]".into());
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox
             WHERE broker = ?1 AND key NOT IN (SELECT value FROM json_each(?3))
             ORDER BY slot, id LIMIT ?2"
        ))?;
        stmt.query_map(params![broker, n as i64, except], row)?.collect()
    }

    /// The oldest `n` messages of `broker` for `key`, in slot order.
    pub fn oldest_of_key(&self, broker: &str, key: &str, n: usize) -> rusqlite::Result<Vec<(i64, QueueMessage)>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE broker = ?1 AND key = ?2 ORDER BY slot, id LIMIT ?3"
        ))?;
        stmt.query_map(params![broker, key, n as i64], row)?.collect()
    }

    /// How many messages of `broker` wait, by key.
    pub fn counts(&self, broker: &str) -> rusqlite::Result<std::collections::HashMap<String, u64>> {
        let mut stmt = self.conn.prepare_cached("SELECT key, count(*) FROM outbox WHERE broker = ?1 GROUP BY key")?;
        stmt.query_map([broker], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.unsigned_abs())))?.collect()
    }

    pub fn remove(&mut self, ids: &[i64]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()
    }

    /// Drops the oldest messages (of any broker) beyond `max`; returns them.
    pub fn trim(&mut self, max: u64) -> rusqlite::Result<Vec<(String, QueueMessage)>> {
        let excess = self.len(None)?.saturating_sub(max);
        if excess == 0 {
            return Ok(Vec::new());
        }
        let tx = self.conn.transaction()?;
        let dropped = {
            let mut stmt = tx.prepare(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY slot, id LIMIT ?1)
                 RETURNING broker, job, fire_id, slot, key, side, payload, expires_at, envelope",
            )?;
            let rows = stmt.query_map([excess as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    QueueMessage {
                        job: r.get(1)?,
                        fire_id: r.get(2)?,
                        slot: DateTime::from_timestamp_millis(r.get(3)?).unwrap_or_default(),
                        key: r.get(4)?,
                        side: Side::parse(&r.get::<_, String>(5)?),
                        payload: r.get(6)?,
                        expires_at: r.get::<_, Option<i64>>(7)?.and_then(DateTime::from_timestamp_millis),
                        envelope: r.get(8)?,
                    },
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        let mut dropped = dropped;
        dropped.sort_by_key(|(_, m)| m.slot);
        Ok(dropped)
    }

    /// Whether `job`'s `slot` is waiting here.
    pub fn contains(&self, job: &str, slot: chrono::DateTime<chrono::Utc>) -> rusqlite::Result<bool> {
        self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE job = ?1 AND slot = ?2)",
            params![job, slot.timestamp_millis()],
            |r| r.get(0),
        )
    }
}

/// Builds a queue job's message for a slot: `None` for other jobs.
pub type Requeue<'a> = dyn Fn(&str, chrono::DateTime<chrono::Utc>) -> Option<(String, QueueMessage)> + 'a;

/// Puts the messages of queue jobs' `fires` that a crash left unsent back in the outbox
/// (unless one is waiting there already), with their task ids: delivery is at-least-once.
/// Returns the fires that are not queue jobs'.
pub fn requeue(
    state_dir: &Path,
    fires: Vec<crate::state::Fired>,
    message: &Requeue<'_>,
) -> Result<Vec<crate::state::Fired>, StateError> {
    let mut outbox = Outbox::open(state_dir)?;
    let err = |source| StateError::Sqlite { path: state_dir.join(FILE), source };
    let mut rest = Vec::new();
    for (job, slot) in fires {
        match message(&job, slot) {
            Some((broker, m)) => {
                if !outbox.contains(&job, slot).map_err(err)? {
                    tracing::warn!(job = %job, %slot, "message possibly not sent before beatd stopped: queued again (same task id)");
                    outbox.push(&broker, &[m]).map_err(err)?;
                }
            }
            None => rest.push((job, slot)),
        }
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(job: &str, s: i64) -> QueueMessage {
        QueueMessage {
            job: job.into(),
            fire_id: format!("{job}-{s}"),
            slot: DateTime::from_timestamp(s, 0).expect("valid"),
            key: "q".into(),
            side: Side::Left,
            payload: format!("{{\"s\":{s}}}"),
            expires_at: None,
            envelope: false,
        }
    }

    #[test]
    fn messages_leave_in_slot_order_and_the_oldest_are_trimmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut o = Outbox::open(dir.path()).expect("open");
        o.push("r", &[msg("a", 30), msg("b", 10)]).expect("push");
        o.push("r", &[msg("a", 20)]).expect("push");
        o.push("other", &[msg("c", 5)]).expect("push");
        let got: Vec<i64> = o.oldest("r", 10, &[]).expect("oldest").iter().map(|(_, m)| m.slot.timestamp()).collect();
        assert_eq!(got, [10, 20, 30]);
        assert!(o.contains("a", DateTime::from_timestamp(20, 0).expect("valid")).expect("query"));
        let dropped = o.trim(2).expect("trim");
        let dropped: Vec<(&str, i64)> = dropped.iter().map(|(b, m)| (b.as_str(), m.slot.timestamp())).collect();
        assert_eq!(dropped, [("other", 5), ("r", 10)]);
        drop(o);
        let mut o = Outbox::open(dir.path()).expect("reopen");
        let rows = o.oldest("r", 10, &[]).expect("oldest");
        assert_eq!(rows.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), [msg("a", 20), msg("a", 30)]);
        o.remove(&[rows[0].0]).expect("remove");
        assert_eq!(o.len(None).expect("len"), 1);
    }

    #[test]
    fn a_held_key_is_read_on_its_own_and_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut o = Outbox::open(dir.path()).expect("open");
        let mut held = msg("a", 10);
        held.key = "orphan".into();
        let mut held2 = msg("a", 11);
        held2.key = "orphan".into();
        o.push("r", &[held.clone(), msg("b", 12), held2, msg("b", 13)]).expect("push");
        let others: Vec<i64> =
            o.oldest("r", 10, &["orphan".into()]).expect("oldest").iter().map(|(_, m)| m.slot.timestamp()).collect();
        assert_eq!(others, [12, 13]);
        let first = o.oldest_of_key("r", "orphan", 1).expect("probe");
        assert_eq!(first.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), [held]);
        let counts = o.counts("r").expect("counts");
        assert_eq!((counts["orphan"], counts["q"]), (2, 2));
    }
}
