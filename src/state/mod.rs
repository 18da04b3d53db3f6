//! The embedded state: one SQLite database under `[scheduler] state_dir`.
//!
//! SQLite (bundled, so no system library is needed) in WAL mode: the daemon writes while
//! `beatd history` and reports read, without blocking each other. The schema is versioned with
//! `PRAGMA user_version` and migrated forward on open.
//!
//! The run history holds commands' errors and output figures, so the folder is beatd's
//! user's alone: created `0700` (an older, wider one is narrowed), its files `0600` (SQLite
//! gives its WAL and shared-memory files the database's mode). A folder owned by another user
//! is refused: whoever owns it could plant links under the state's names.

pub mod alarm;
pub mod damage;
pub mod history;
pub mod journal;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub const DB_FILE: &str = "beatd.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("state database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("no state database at {0} (has beatd run with this config?)")]
    Missing(PathBuf),
    #[error("state folder {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error(transparent)]
    Damaged(#[from] damage::Damaged),
}

/// Schema versions this beatd knows for the history.
pub const VERSIONS: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    // 1: run history.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        fire_id TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,   -- unix milliseconds
        started_at INTEGER,              -- unix milliseconds; NULL when skipped
        finished_at INTEGER NOT NULL,    -- unix milliseconds
        outcome TEXT NOT NULL,           -- success | failure | timeout | skipped
        attempt INTEGER NOT NULL,
        exit_code INTEGER,
        error TEXT,
        details TEXT                     -- JSON: figures specific to the action
    );
    CREATE INDEX runs_by_job ON runs (job, scheduled_at);
    CREATE INDEX runs_by_time ON runs (finished_at);",
    // 2: paused jobs survive restarts and reloads.
    "CREATE TABLE paused (
        job TEXT PRIMARY KEY,
        since INTEGER NOT NULL           -- unix milliseconds
    );",
    // 3: successes a job with `history = "failures"` did not write, per hour, for reports.
    "CREATE TABLE unwritten_successes (
        job TEXT NOT NULL,
        hour INTEGER NOT NULL,           -- unix seconds / 3600
        n INTEGER NOT NULL,
        PRIMARY KEY (job, hour)
    ) WITHOUT ROWID;",
    // 4: `GET /api/runs/{fire_id}` finds a run that is no longer in memory.
    "CREATE INDEX runs_by_fire ON runs (fire_id);",
];

/// Jobs paused through the API.
pub fn paused_jobs(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT job FROM paused ORDER BY job")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Jobs paused through the API, from the journal (where they moved from the history file of
/// older versions: see [`move_paused_to_journal`]).
pub fn paused(state_dir: &Path) -> Result<Vec<String>, StateError> {
    if !state_dir.join(journal::FILE).exists() {
        return Err(StateError::Missing(state_dir.join(journal::FILE)));
    }
    let conn = journal::connection(state_dir)?;
    paused_jobs(&conn).map_err(|source| StateError::Sqlite { path: state_dir.join(journal::FILE), source })
}

/// Moves the paused set of an older beatd from the history file into the journal, once: the
/// schedule must not depend on the history, which may be moved aside when damaged.
pub fn move_paused_to_journal(state_dir: &Path) -> Result<(), StateError> {
    let history = state_dir.join(DB_FILE);
    if !history.exists() {
        return Ok(());
    }
    let sqlite = |source| StateError::Sqlite { path: history.clone(), source };
    let old = open(state_dir)?;
    let mut stmt = old.prepare("SELECT job, since FROM paused").map_err(sqlite)?;
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sqlite)?
        .collect::<Result<_, _>>()
        .map_err(sqlite)?;
    drop(stmt);
    if rows.is_empty() {
        return Ok(());
    }
    let mut journal = journal::connection(state_dir)?;
    let jsql = |source| StateError::Sqlite { path: state_dir.join(journal::FILE), source };
    let tx = journal.transaction().map_err(jsql)?;
    for (job, since) in &rows {
        tx.execute(
            "INSERT INTO paused (job, since) VALUES (?1, ?2) ON CONFLICT (job) DO NOTHING",
            rusqlite::params![job, since],
        )
        .map_err(jsql)?;
    }
    tx.commit().map_err(jsql)?;
    old.execute("DELETE FROM paused", []).map_err(sqlite)?;
    tracing::info!("moved {} paused job(s) into the fire journal", rows.len());
    Ok(())
}

/// Records `job` as paused (since `now`) or not.
pub fn set_paused(
    conn: &Connection,
    job: &str,
    paused: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<()> {
    if paused {
        conn.execute(
            "INSERT INTO paused (job, since) VALUES (?1, ?2) ON CONFLICT (job) DO NOTHING",
            rusqlite::params![job, now.timestamp_millis()],
        )?;
    } else {
        conn.execute("DELETE FROM paused WHERE job = ?1", [job])?;
    }
    Ok(())
}

/// A fire a crash may have cut short: (job, slot).
pub type Fired = (String, chrono::DateTime<chrono::Utc>);

/// The fires the journal lists whose run the history lacks: beatd stopped between dispatching
/// them and recording their end. Read at start, before anything else writes; the caller deals
/// with each (queue jobs' messages go to the outbox again, see
/// [`crate::broker::outbox::requeue`]; the rest are [`record_interrupted`]) and then
/// [`forget_unfinished`], so that the history holds every handled fire exactly once.
pub fn unfinished(state_dir: &Path) -> Result<Vec<Fired>, StateError> {
    let sqlite = |source| StateError::Sqlite { path: state_dir.to_path_buf(), source };
    let journal = journal::Journal::open(state_dir)?;
    let fired = journal.fired().map_err(sqlite)?;
    if fired.is_empty() {
        return Ok(fired);
    }
    let conn = open(state_dir)?;
    let mut has =
        conn.prepare("SELECT EXISTS (SELECT 1 FROM runs WHERE job = ?1 AND scheduled_at = ?2)").map_err(sqlite)?;
    let mut missing = Vec::new();
    for (job, slot) in fired {
        let recorded =
            has.query_row(rusqlite::params![job, slot.timestamp_millis()], |r| r.get::<_, bool>(0)).map_err(sqlite)?;
        if !recorded {
            missing.push((job, slot));
        }
    }
    Ok(missing)
}

/// Records `fires` in the history as interrupted: they may or may not have run.
pub fn record_interrupted(
    state_dir: &Path,
    fires: &[Fired],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StateError> {
    if fires.is_empty() {
        return Ok(());
    }
    let records: Vec<history::RunRecord> = fires
        .iter()
        .map(|(job, slot)| history::RunRecord {
            job: job.clone(),
            fire_id: String::new(),
            scheduled_at: *slot,
            started_at: None,
            finished_at: now,
            outcome: crate::job::RunOutcome::Interrupted,
            attempt: 1,
            exit_code: None,
            error: Some("beatd stopped before this run's end was recorded; it may or may not have run".into()),
            details: Default::default(),
        })
        .collect();
    let mut conn = open(state_dir)?;
    history::insert(&mut conn, &records)
        .map_err(|source| StateError::Sqlite { path: state_dir.join(DB_FILE), source })?;
    for (job, slot) in fires {
        tracing::warn!(job = %job, %slot, "recorded as interrupted: beatd stopped while it ran");
    }
    Ok(())
}

/// Forgets the journal's fire lists: at start, once every unfinished fire has been dealt with;
/// at a clean stop, once every fire dispatched has ended and been written or sent.
pub fn forget_unfinished(state_dir: &Path) -> Result<(), StateError> {
    let mut journal = journal::Journal::open(state_dir)?;
    journal.clear_fired().map_err(|source| StateError::Sqlite { path: state_dir.join(journal::FILE), source })
}

/// Opens (creating if needed) the state database for writing, migrated to the latest schema.
pub fn open(state_dir: &Path) -> Result<Connection, StateError> {
    open_file(state_dir, DB_FILE, MIGRATIONS)
}

/// Makes the state folder (`0700`) if it is missing; an existing one must belong to beatd's
/// user, and is narrowed to `0700` if others could read or write it.
pub fn prepare_dir(state_dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let unsafe_dir = |why: String| StateError::Unsafe { path: state_dir.to_path_buf(), why };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| StateError::CreateDir { path: state_dir.to_path_buf(), source })?;
    let meta = std::fs::metadata(state_dir).map_err(|e| unsafe_dir(e.to_string()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to beatd's user (uid {me}): refusing to keep state there",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| unsafe_dir(format!("cannot make it private: {e}")))?;
        tracing::info!(
            "state folder {} made private (mode 0700, was {:04o})",
            state_dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Creates `path` as a file only its owner can read (`0600`), or narrows it to that.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// Opens `file` under `state_dir` in WAL mode, migrated with `migrations`.
pub(crate) fn open_file(state_dir: &Path, file: &str, migrations: &[&str]) -> Result<Connection, StateError> {
    prepare_dir(state_dir)?;
    let path = state_dir.join(file);
    private_file(&path).map_err(|source| StateError::CreateDir { path: path.clone(), source })?;
    let err = |source| StateError::Sqlite { path: path.clone(), source };
    let mut conn = Connection::open(&path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    migrate(&mut conn, migrations).map_err(err)?;
    Ok(conn)
}

/// Opens an existing state database for reading. One the daemon has created but not yet
/// set up (it is starting) counts as missing.
pub fn open_read_only(state_dir: &Path) -> Result<Connection, StateError> {
    let path = state_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StateError::Missing(path));
    }
    let err = |source| StateError::Sqlite { path: path.clone(), source };
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
    if version == 0 {
        return Err(StateError::Missing(path));
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_beatds_paused_jobs_move_into_the_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let history = open(dir.path()).expect("open");
        set_paused(&history, "backup", true, chrono::Utc::now()).expect("pause, as an older beatd did");
        assert!(matches!(paused(dir.path()), Err(StateError::Missing(_))), "no journal yet");
        move_paused_to_journal(dir.path()).expect("move");
        assert_eq!(paused(dir.path()).expect("read"), ["backup"]);
        assert!(paused_jobs(&history).expect("read").is_empty(), "moved, not copied");
        move_paused_to_journal(dir.path()).expect("again: nothing to do");
        assert_eq!(paused(dir.path()).expect("read"), ["backup"]);
    }

    #[test]
    fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("nested/state");
        drop(open(&state).expect("open"));
        let conn = open(&state).expect("reopen");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).expect("mode");
        assert_eq!(mode, "wal");
        // Private: the folder 0700, every file in it 0600 (the WAL and shared memory too).
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);").expect("write");
        for entry in std::fs::read_dir(&state).expect("list") {
            let p = entry.expect("entry").path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        assert!(open_read_only(&state).is_ok());
        assert!(matches!(open_read_only(dir.path()), Err(StateError::Missing(_))));
        let now = chrono::Utc::now();
        set_paused(&conn, "b", true, now).expect("pause");
        set_paused(&conn, "a", true, now).expect("pause");
        set_paused(&conn, "a", true, now).expect("pause twice");
        assert_eq!(paused_jobs(&conn).expect("read"), ["a", "b"]);
        set_paused(&conn, "a", false, now).expect("resume");
        assert_eq!(paused_jobs(&conn).expect("read"), ["b"]);
    }
}
