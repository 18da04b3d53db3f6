//! `[databases.NAME]`: the databases `sql` and `sql_check` jobs run statements on.
//!
//! PostgreSQL and MySQL/MariaDB go through sqlx (one async driver for both, with pools);
//! SQLite through rusqlite, which beatd already uses for its own state (sqlx's SQLite driver
//! would link a second copy of the SQLite library). Pools are made on first use, one per
//! database, so a database that is down costs nothing until a job needs it, and then only
//! that job's run fails.
//!
//! A statement that runs past its timeout is cancelled on the server, not only abandoned by the
//! client: PostgreSQL gets `pg_cancel_backend(pid)` and MySQL `KILL QUERY id` from a second
//! connection, SQLite an interrupt. Otherwise a "timed out" `DELETE` would go on holding its
//! locks long after beatd reported it.
//!
//! The password comes from `password_file`, never from the URL, and is kept out of every log
//! line, error and API answer: errors are the driver's, which do not carry it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Which server a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MySql,
    /// The database file.
    Sqlite(PathBuf),
}

/// One `[databases.NAME]`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub name: String,
    /// As written, without a password (one in the URL is refused).
    pub url: String,
    pub kind: Kind,
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig").field("name", &self.name).field("url", &self.url).finish()
    }
}

/// Why a URL is not a database beatd can use.
pub fn parse_url(url: &str, base: &Path) -> Result<Kind, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("a sqlite:// URL names the database file: sqlite:///var/lib/app/app.db".into());
        }
        return Ok(Kind::Sqlite(base.join(path)));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid database URL \"{url}\": {e}"))?;
    if parsed.password().is_some() {
        return Err("the password must not be in the URL (it would end up in logs): put it in password_file".into());
    }
    let kind = match parsed.scheme() {
        "postgres" | "postgresql" => Kind::Postgres,
        "mysql" | "mariadb" => Kind::MySql,
        other => {
            return Err(format!(
                "unknown database \"{other}://\": postgres://, postgresql://, mysql://, mariadb:// or sqlite://"
            ));
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("the database URL \"{url}\" names no host"));
    }
    Ok(kind)
}

/// What one statement did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatementRun {
    pub rows: u64,
    pub ms: f64,
}

/// How a run of statements ended badly.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFailure {
    pub message: String,
    /// The statements that completed before it (rolled back, in a transaction).
    pub done: Vec<StatementRun>,
}

impl SqlFailure {
    fn new(message: impl Into<String>) -> Self {
        SqlFailure { message: message.into(), done: Vec::new() }
    }
}

enum Pool {
    Postgres(PgPool, PgConnectOptions),
    MySql(MySqlPool, MySqlConnectOptions),
    Sqlite(PathBuf),
}

/// A connection from `pool`. With none idle, one connection is tried first outside the pool:
/// a pool that cannot connect only says it timed out, and a run's failure should carry the
/// driver's reason (connection refused, authentication failed, no such database) at once.
macro_rules! acquire {
    ($pool:expr, $options:expr, $conn:ty) => {{
        if $pool.num_idle() == 0 {
            match tokio::time::timeout(CONNECT_TIMEOUT, <$conn as sqlx::Connection>::connect_with($options)).await {
                Ok(Ok(c)) => drop(c),
                Ok(Err(e)) => return Err(SqlFailure::new(e.to_string())),
                Err(_) => return Err(SqlFailure::new("no connection within 10s")),
            }
        }
        $pool.acquire().await.map_err(|e| SqlFailure::new(e.to_string()))
    }};
}

/// Every configured database, with its pool once a job has used it.
pub struct Databases {
    configs: HashMap<String, DatabaseConfig>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases").field("names", &self.configs.keys().collect::<Vec<_>>()).finish()
    }
}

/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs each statement on `$conn` (inside a transaction if asked), each one raced against its
/// timeout and `stop`; on either, `$cancel` stops it on the server before the run fails. A
/// macro rather than a generic function: sqlx's executors are per connection type, and a
/// generic future over them is not provably `Send`.
macro_rules! run_all {
    ($conn:expr, $statements:expr, $transaction:expr, $timeout:expr, $stop:expr, $cancel:expr) => {{
        let (statements, transaction, timeout, stop): (&[String], bool, Option<Duration>, &CancellationToken) =
            ($statements, $transaction, $timeout, $stop);
        let conn = $conn;
        let mut done: Vec<StatementRun> = Vec::new();
        let mut failure: Option<SqlFailure> = None;
        if transaction && let Err(e) = (&mut *conn).execute(sqlx::raw_sql("BEGIN")).await {
            failure = Some(SqlFailure::new(e.to_string()));
        }
        for (i, statement) in statements.iter().enumerate() {
            if failure.is_some() {
                break;
            }
            let started = Instant::now();
            let limit = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            // Made and pinned before the select: a future built inside it would have to be
            // `Send` for every lifetime, which sqlx's executor impls are not.
            let failed = {
            let run = (&mut *conn).execute(sqlx::raw_sql(statement));
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => match r {
                    Ok(result) => {
                        done.push(StatementRun { rows: result.rows_affected(), ms: started.elapsed().as_secs_f64() * 1e3 });
                        None
                    }
                    Err(e) => Some(format!("statement {}: {e}", i + 1)),
                },
                () = limit => Some(format!(
                    "statement {} ran past its timeout of {}; cancelled on the server",
                    i + 1,
                    humantime::format_duration(timeout.unwrap_or_default())
                )),
                () = stop.cancelled() => Some(format!("statement {}: stopped (cancelled on the server)", i + 1)),
            }
            };
            if let Some(message) = failed {
                if message.contains("cancelled on the server")
                    && let Err(e) = $cancel.await
                {
                    tracing::warn!("cannot cancel statement {} on the server: {e}", i + 1);
                }
                if transaction {
                    // The connection goes back to the pool: leave no transaction open on it.
                    let _ = (&mut *conn).execute(sqlx::raw_sql("ROLLBACK")).await;
                }
                let rolled =
                    if transaction && !done.is_empty() { " (the statements before it were rolled back)" } else { "" };
                failure = Some(SqlFailure { message: format!("{message}{rolled}"), done: std::mem::take(&mut done) });
            }
        }
        match failure {
            Some(f) => Err(f),
            None if transaction => match (&mut *conn).execute(sqlx::raw_sql("COMMIT")).await {
                Ok(_) => Ok(done),
                Err(e) => Err(SqlFailure { message: format!("commit: {e}"), done }),
            },
            None => Ok(done),
        }
    }};
}

impl Default for Databases {
    fn default() -> Self {
        Databases::new(HashMap::new())
    }
}

impl Databases {
    pub fn new(configs: HashMap<String, DatabaseConfig>) -> Databases {
        Databases { configs, pools: Mutex::new(HashMap::new()) }
    }

    async fn pool(&self, name: &str) -> Result<Arc<Pool>, String> {
        let mut pools = self.pools.lock().await;
        if let Some(pool) = pools.get(name) {
            return Ok(pool.clone());
        }
        let config = self.configs.get(name).ok_or_else(|| format!("no database \"{name}\""))?;
        let password = match &config.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        let pool = match &config.kind {
            Kind::Postgres => {
                let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| e.to_string())?;
                if let Some(p) = &password {
                    options = options.password(p);
                }
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_lazy_with(options.clone()),
                    options,
                )
            }
            Kind::MySql => {
                let url = config.url.replacen("mariadb://", "mysql://", 1);
                let mut options = MySqlConnectOptions::from_str(&url).map_err(|e| e.to_string())?;
                if let Some(p) = &password {
                    options = options.password(p);
                }
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_lazy_with(options.clone()),
                    options,
                )
            }
            Kind::Sqlite(path) => Pool::Sqlite(path.clone()),
        };
        let pool = Arc::new(pool);
        pools.insert(name.to_string(), pool.clone());
        Ok(pool)
    }

    /// Runs `statements` on `database`, in one transaction if `transaction`, each within
    /// `timeout`; stops (and cancels on the server) when `stop` is cancelled.
    pub async fn execute(
        &self,
        database: &str,
        statements: &[String],
        transaction: bool,
        timeout: Option<Duration>,
        stop: &CancellationToken,
    ) -> Result<Vec<StatementRun>, SqlFailure> {
        let pool = self.pool(database).await.map_err(SqlFailure::new)?;
        // On a task of its own: its future owns everything, which sqlx's executors need to be
        // `Send` across the runner's boxed futures.
        let work = tokio::spawn(execute_on(pool, statements.to_vec(), transaction, timeout, stop.clone()));
        work.await.unwrap_or_else(|e| Err(SqlFailure::new(format!("the statements' task failed: {e}"))))
    }

    /// Runs `query` on `database` and reads the first column of its first row as text.
    pub async fn value(
        &self,
        database: &str,
        query: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> Result<String, String> {
        let pool = self.pool(database).await?;
        let read = async {
            let work = tokio::spawn(value_on(pool, query.to_string(), timeout));
            let handle = work.abort_handle();
            // Dropped on timeout: the query's task goes with it.
            let _abort = AbortOnDrop(handle);
            work.await.unwrap_or_else(|e| Err(format!("the query's task failed: {e}")))
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, read) => r.unwrap_or_else(|_| {
                Err(format!("no answer within {}", humantime::format_duration(timeout)))
            }),
            () = stop.cancelled() => Err("stopped".into()),
        }
    }

    /// Connects to each database once and runs a trivial query (`beatd check --connect`).
    pub async fn try_each(&self) -> Vec<(String, Result<(), String>)> {
        let mut names: Vec<&String> = self.configs.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let result = self.value(name, "SELECT 1", CONNECT_TIMEOUT, &CancellationToken::new()).await.map(|_| ());
            out.push((name.clone(), result));
        }
        out
    }
}

async fn execute_on(
    pool: Arc<Pool>,
    statements: Vec<String>,
    transaction: bool,
    timeout: Option<Duration>,
    stop: CancellationToken,
) -> Result<Vec<StatementRun>, SqlFailure> {
    let statements = statements.as_slice();
    let stop = &stop;
    match &*pool {
        Pool::Postgres(pool, options) => {
            let mut conn = acquire!(pool, options, sqlx::PgConnection)?;
            let pid: i32 = send(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn))
                .await
                .map_err(|e| SqlFailure::new(e.to_string()))?;
            let cancel = format!("SELECT pg_cancel_backend({pid})");
            run_all!(&mut *conn, statements, transaction, timeout, stop, pool.execute(sqlx::raw_sql(&cancel)))
        }
        Pool::MySql(pool, options) => {
            let mut conn = acquire!(pool, options, sqlx::MySqlConnection)?;
            let id: u64 = send(sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut *conn))
                .await
                .map_err(|e| SqlFailure::new(e.to_string()))?;
            let kill = format!("KILL QUERY {id}");
            run_all!(&mut *conn, statements, transaction, timeout, stop, pool.execute(sqlx::raw_sql(&kill)))
        }
        Pool::Sqlite(path) => sqlite_execute(path, statements, transaction, timeout, stop).await,
    }
}

async fn value_on(pool: Arc<Pool>, query: String, timeout: Duration) -> Result<String, String> {
    match &*pool {
        Pool::Postgres(pool, options) => {
            let conn: Result<_, SqlFailure> = async { acquire!(pool, options, sqlx::PgConnection) }.await;
            let mut conn = conn.map_err(|e| e.message)?;
            let rows = (&mut *conn).fetch_all(sqlx::raw_sql(&query)).await.map_err(|e| e.to_string())?;
            first_value(rows.first().ok_or("the query returned no row")?)
        }
        Pool::MySql(pool, options) => {
            let conn: Result<_, SqlFailure> = async { acquire!(pool, options, sqlx::MySqlConnection) }.await;
            let mut conn = conn.map_err(|e| e.message)?;
            let rows = (&mut *conn).fetch_all(sqlx::raw_sql(&query)).await.map_err(|e| e.to_string())?;
            first_value(rows.first().ok_or("the query returned no row")?)
        }
        Pool::Sqlite(path) => sqlite_value(path.clone(), query, timeout).await,
    }
}

/// A future as a boxed `dyn Future + Send`: the coercion checks `Send` for the lifetimes at
/// hand, where the compiler cannot prove it for every lifetime of sqlx's executor futures
/// (rust-lang/rust#102211).
fn send<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first column of a row as text, whatever its SQL type.
fn first_value<R>(row: &R) -> Result<String, String>
where
    R: Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    if row.len() == 0 {
        return Err("the query returned no column".into());
    }
    if let Ok(v) = row.try_get::<i64, _>(0) {
        return Ok(v.to_string());
    }
    if let Ok(v) = row.try_get::<i32, _>(0) {
        return Ok(v.to_string());
    }
    if let Ok(v) = row.try_get::<f64, _>(0) {
        return Ok(v.to_string());
    }
    if let Ok(v) = row.try_get::<String, _>(0) {
        return Ok(v);
    }
    if let Ok(v) = row.try_get::<bool, _>(0) {
        return Ok(v.to_string());
    }
    Err("the query's value is not a number, text or boolean (cast it, e.g. ::bigint or ::text)".into())
}

async fn sqlite_execute(
    path: &Path,
    statements: &[String],
    transaction: bool,
    timeout: Option<Duration>,
    stop: &CancellationToken,
) -> Result<Vec<StatementRun>, SqlFailure> {
    let conn = rusqlite::Connection::open(path)
        .map_err(|e| SqlFailure::new(format!("cannot open {}: {e}", path.display())))?;
    let interrupt = conn.get_interrupt_handle();
    let statements = statements.to_vec();
    let work = tokio::task::spawn_blocking(move || {
        let mut done = Vec::new();
        if transaction {
            conn.execute_batch("BEGIN").map_err(|e| SqlFailure::new(e.to_string()))?;
        }
        for (i, statement) in statements.iter().enumerate() {
            let started = Instant::now();
            match conn.execute(statement, []) {
                Ok(rows) => done.push(StatementRun { rows: rows as u64, ms: started.elapsed().as_secs_f64() * 1e3 }),
                Err(e) => {
                    if transaction {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    let rolled = if transaction && !done.is_empty() {
                        " (the statements before it were rolled back)"
                    } else {
                        ""
                    };
                    return Err(SqlFailure { message: format!("statement {}: {e}{rolled}", i + 1), done });
                }
            }
        }
        if transaction {
            conn.execute_batch("COMMIT")
                .map_err(|e| SqlFailure { message: format!("commit: {e}"), done: done.clone() })?;
        }
        Ok(done)
    });
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r.unwrap_or_else(|e| Err(SqlFailure::new(e.to_string()))),
        () = limit => {
            interrupt.interrupt();
            let _ = work.await;
            Err(SqlFailure::new(format!(
                "ran past its timeout of {}; interrupted",
                humantime::format_duration(timeout.unwrap_or_default())
            )))
        }
        () = stop.cancelled() => {
            interrupt.interrupt();
            let _ = work.await;
            Err(SqlFailure::new("stopped (interrupted)"))
        }
    }
}

async fn sqlite_value(path: PathBuf, query: String, timeout: Duration) -> Result<String, String> {
    let conn = rusqlite::Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let interrupt = conn.get_interrupt_handle();
    let work = tokio::task::spawn_blocking(move || {
        conn.query_row(&query, [], |row| {
            Ok(match row.get_ref(0)? {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(_) => "<blob>".to_string(),
            })
        })
        .map_err(|e| e.to_string())
    });
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r.unwrap_or_else(|e| Err(e.to_string())),
        () = tokio::time::sleep(timeout) => {
            interrupt.interrupt();
            let _ = work.await;
            Err(format!("no answer within {}; interrupted", humantime::format_duration(timeout)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let base = Path::new("/etc/beatd");
        assert_eq!(parse_url("postgres://beatd@127.0.0.1:5432/app", base), Ok(Kind::Postgres));
        assert_eq!(parse_url("mariadb://root@127.0.0.1/test", base), Ok(Kind::MySql));
        assert_eq!(parse_url("sqlite://app.db", base), Ok(Kind::Sqlite("/etc/beatd/app.db".into())));
        assert_eq!(parse_url("sqlite:///var/app.db", base), Ok(Kind::Sqlite("/var/app.db".into())));
        assert!(parse_url("postgres://u:secret@h/db", base).is_err_and(|e| e.contains("password_file")));
        assert!(parse_url("oracle://h/db", base).is_err_and(|e| e.contains("unknown database")));
    }
}
