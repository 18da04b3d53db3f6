//! Damaged state files, found at start.
//!
//! Not every file matters the same:
//! - **The run history** (`beatd.sqlite3`) is not needed to schedule. A damaged one (truncated,
//!   garbage, from a newer beatd) is moved aside as `beatd.sqlite3.damaged-<time>` with one
//!   error and a metric, and a fresh one is started. (Jobs paused through the API are in the
//!   journal, so they stay paused.)
//! - **The fire journal** (`journal.sqlite3`) is what makes "nothing doubled, nothing lost"
//!   hold across restarts, and **the outbox** (`outbox.sqlite3`) holds queue messages not yet
//!   delivered. beatd refuses to start on a damaged one, with a message that says what starting
//!   afresh loses and the command that does it (`beatd state reset --journal`), and an exit
//!   status the unit lists in `RestartPreventExitStatus=`, so systemd does not loop on it.
//!
//! A zero-length file is not damage: SQLite reads it as an empty database, and beatd sets it
//! up as new.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The exit status of `beatd run` when a state file it needs is damaged.
pub const EXIT_DAMAGED: u8 = 3;

/// Files this small are checked page by page (`PRAGMA quick_check`); larger ones by reading
/// each table, which finds a truncation without reading a big history whole at every start.
const QUICK_CHECK_UP_TO: u64 = 64 * 1024 * 1024;

/// A state file, as `beatd state reset` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFile {
    Journal,
    Outbox,
    History,
}

impl StateFile {
    /// `beatd state reset`'s flag for it.
    pub fn flag(self) -> &'static str {
        match self {
            StateFile::Journal => "--journal",
            StateFile::Outbox => "--outbox",
            StateFile::History => "--history",
        }
    }

    pub fn file(self) -> &'static str {
        match self {
            StateFile::Journal => super::journal::FILE,
            StateFile::Outbox => crate::broker::outbox::FILE,
            StateFile::History => super::DB_FILE,
        }
    }

    fn what(self) -> &'static str {
        match self {
            StateFile::Journal => "fire journal",
            StateFile::Outbox => "outbox",
            StateFile::History => "run history",
        }
    }

    /// What starting afresh gives up.
    fn loss(self) -> &'static str {
        match self {
            StateFile::Journal => {
                "without it beatd cannot know which slots already ran: starting afresh, every job starts \
                 from now (slots missed while beatd was down are not caught up, and runs that were going \
                 at the last stop are not recorded as interrupted), and jobs paused through the API resume"
            }
            StateFile::Outbox => {
                "it holds queue messages not yet delivered: starting afresh drops them (the file moved \
                 aside keeps them for a look)"
            }
            StateFile::History => "the run history is lost",
        }
    }
}

/// A state file beatd will not start on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {what} {path} is damaged ({why}); {loss}. To start afresh, with beatd stopped: beatd state reset {flag} -c CONFIG",
    what = .file.what(),
    path = .path.display(),
    loss = .file.loss(),
    flag = .file.flag()
)]
pub struct Damaged {
    pub file: StateFile,
    pub path: PathBuf,
    pub why: String,
}

/// Checks a state file without changing it; `Err` says what is wrong.
fn check(path: &Path, tables: &[&str], versions: usize) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| e.to_string())?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    if usize::try_from(version).is_ok_and(|v| v > versions) {
        return Err(format!("written by a newer beatd: schema version {version}, this beatd knows {versions}"));
    }
    if meta.len() <= QUICK_CHECK_UP_TO {
        let verdict: String = conn.pragma_query_value(None, "quick_check", |r| r.get(0)).map_err(|e| e.to_string())?;
        if verdict != "ok" {
            return Err(verdict);
        }
    }
    if version > 0 {
        // A table an older beatd did not have yet is made by the migrations, not damage.
        let exists = |t: &str| {
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [t], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
        };
        for table in tables {
            if !exists(table).map_err(|e| e.to_string())? {
                continue;
            }
            conn.query_row(
                &format!("SELECT count(*) FROM (SELECT 1 FROM {table} ORDER BY rowid DESC LIMIT 1)"),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| format!("{table}: {e}"))?;
        }
    }
    Ok(())
}

/// Moves `file` (and its WAL and shared-memory files) aside as `FILE.SUFFIX-<time>`; the new
/// name.
pub fn move_aside(state_dir: &Path, file: &str, suffix: &str) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = state_dir.join(format!("{file}.{suffix}-{stamp}"));
    std::fs::rename(state_dir.join(file), &aside)?;
    for extra in ["-wal", "-shm"] {
        let from = state_dir.join(format!("{file}{extra}"));
        if from.exists() {
            std::fs::rename(&from, state_dir.join(format!("{file}.{suffix}-{stamp}{extra}")))?;
        }
    }
    Ok(aside)
}

/// Checks the state files before anything opens them. A damaged journal or outbox is an
/// error; a damaged history is moved aside (`Ok(true)`: the caller must not trust the journal's
/// list of fires in flight against a history that no longer has their runs).
pub fn check_at_start(
    state_dir: &Path,
    damaged: &prometheus_client::metrics::counter::Counter,
) -> Result<bool, Damaged> {
    for (file, tables, versions) in [
        (
            StateFile::Journal,
            &["journal", "journal_jobs", "journal_ids", "fired", "paused"][..],
            super::journal::VERSIONS,
        ),
        (StateFile::Outbox, &["outbox"][..], crate::broker::outbox::VERSIONS),
    ] {
        let path = state_dir.join(file.file());
        if let Err(why) = check(&path, tables, versions) {
            damaged.inc();
            return Err(Damaged { file, path, why });
        }
    }
    let path = state_dir.join(super::DB_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(
            "the run history {} is empty: it starts afresh, and runs that were going at the last stop are not recorded",
            path.display()
        );
        return Ok(true);
    }
    match check(&path, &["runs", "paused"], super::VERSIONS) {
        Ok(()) => Ok(false),
        Err(why) => {
            damaged.inc();
            match move_aside(state_dir, super::DB_FILE, "damaged") {
                Ok(aside) => tracing::error!(
                    "the run history {} is damaged ({why}): moved aside as {} and started afresh; \
                     earlier runs are not in the new one",
                    path.display(),
                    aside.display()
                ),
                Err(e) => tracing::error!(
                    "the run history {} is damaged ({why}) and cannot be moved aside: {e}",
                    path.display()
                ),
            }
            Ok(true)
        }
    }
}
