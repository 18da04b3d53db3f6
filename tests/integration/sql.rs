//! `sql` and `sql_check` against the real PostgreSQL (5432) and MariaDB (3306) of this machine
//! and CI, and SQLite in a temp dir: the seed's archive job, rollback, a timeout cancelled on
//! the server, check transitions with notifications, a database that is down, and a password
//! that shows up nowhere.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use beatd::clock::Clock;
use beatd::config::parse_str;
use beatd::job::{Job, RunOutcome};
use beatd::jobs::Services;
use sqlx::{Executor, Row};

use crate::checks::{Seen, runs, server};
use crate::util::{Beatd, free_port, history, wait_for};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY: &str = "mariadb://root@127.0.0.1:3306/test";

/// A table name of this test run's own: tests run at once against one server.
fn table(prefix: &str) -> String {
    format!("{prefix}_{}", fastrand::u32(..))
}

/// The config's jobs and services for `toml` (relative paths from `base`).
fn setup(toml: &str, base: &Path) -> (Vec<Job>, Arc<Services>) {
    let config = parse_str(toml, Path::new("t.toml"), base).unwrap_or_else(|e| panic!("{e}"));
    let services = Services::new(Clock::System, "unused".into(), config.notifiers).with_databases(config.databases);
    (config.jobs, Arc::new(services))
}

async fn pg() -> sqlx::PgPool {
    sqlx::PgPool::connect(PG).await.expect("PostgreSQL on 127.0.0.1:5432")
}

async fn my() -> sqlx::MySqlPool {
    sqlx::MySqlPool::connect(&MY.replace("mariadb://", "mysql://")).await.expect("MariaDB on 127.0.0.1:3306")
}

fn archive_job(database: &str, url: &str, statements: [String; 2]) -> String {
    format!(
        "[databases.{database}]\nurl = \"{url}\"\n[jobs.archive]\ncron = \"30 3 * * *\"\naction = \"sql\"\n\
         database = \"{database}\"\nstatements = [\"{}\", \"{}\"]\n",
        statements[0], statements[1]
    )
}

/// Runs the archive job (`logs` rows matching `old` into `archive`, then deleted from `logs`)
/// once on `url`, and asserts it recorded 400 rows for each statement.
async fn run_archive(url: &str, base: &Path, logs: &str, archive: &str, old: &str) {
    let toml = archive_job(
        "app",
        url,
        [format!("INSERT INTO {archive} SELECT * FROM {logs} WHERE {old}"), format!("DELETE FROM {logs} WHERE {old}")],
    );
    let (jobs, services) = setup(&toml, base);
    let run = &runs(jobs[0].clone(), services, 1, |_| {}).await[0];
    assert_eq!(run.outcome, RunOutcome::Success, "{url}: {:?}", run.error);
    let rows: Vec<u64> = run.details.statements.as_ref().expect("per statement").iter().map(|s| s.rows).collect();
    assert_eq!(rows, [400, 400], "{url}");
}

/// 1 000 rows, 400 of them older than 30 days; the job moves those 400 to the archive.
#[tokio::test]
async fn the_seeds_archive_job_on_postgresql_mariadb_and_sqlite() {
    // PostgreSQL
    let (logs, archive) = (table("logs"), table("logs_archive"));
    let db = pg().await;
    db.execute(format!("CREATE TABLE {logs} (id int, created_at timestamptz)").as_str()).await.expect("create");
    db.execute(format!("CREATE TABLE {archive} (id int, created_at timestamptz)").as_str()).await.expect("create");
    db.execute(
        format!(
            "INSERT INTO {logs} SELECT i, CASE WHEN i <= 400 THEN now() - interval '40 days' ELSE now() END \
             FROM generate_series(1, 1000) AS i"
        )
        .as_str(),
    )
    .await
    .expect("rows");
    run_archive(PG, Path::new("."), &logs, &archive, "created_at < now() - interval '30 days'").await;
    let count = |t: &str| format!("SELECT count(*) FROM {t}");
    let n: i64 = sqlx::query_scalar(&count(&archive)).fetch_one(&db).await.expect("count");
    let m: i64 = sqlx::query_scalar(&count(&logs)).fetch_one(&db).await.expect("count");
    assert_eq!((n, m), (400, 600));
    db.execute(format!("DROP TABLE {logs}, {archive}").as_str()).await.expect("drop");

    // MariaDB
    let (logs, archive) = (table("logs"), table("logs_archive"));
    let db = my().await;
    for t in [&logs, &archive] {
        db.execute(format!("CREATE TABLE {t} (id int, created_at datetime)").as_str()).await.expect("create");
    }
    db.execute(
        format!("INSERT INTO {logs} SELECT seq, IF(seq <= 400, NOW() - INTERVAL 40 DAY, NOW()) FROM seq_1_to_1000")
            .as_str(),
    )
    .await
    .expect("rows (MariaDB's sequence engine)");
    run_archive(MY, Path::new("."), &logs, &archive, "created_at < NOW() - INTERVAL 30 DAY").await;
    let n: i64 = sqlx::query(&count(&archive)).fetch_one(&db).await.expect("count").get(0);
    let m: i64 = sqlx::query(&count(&logs)).fetch_one(&db).await.expect("count").get(0);
    assert_eq!((n, m), (400, 600));
    db.execute(format!("DROP TABLE {logs}, {archive}").as_str()).await.expect("drop");

    // SQLite
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).expect("open");
    conn.execute_batch(
        "CREATE TABLE logs (id int, created_at text); CREATE TABLE logs_archive (id int, created_at text);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
         INSERT INTO logs SELECT i, CASE WHEN i <= 400 THEN datetime('now', '-40 days') ELSE datetime('now') END FROM s;",
    )
    .expect("rows");
    run_archive("sqlite://app.db", dir.path(), "logs", "logs_archive", "created_at < datetime('now', '-30 days')")
        .await;
    let count =
        |t: &str| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).expect("count");
    assert_eq!((count("logs_archive"), count("logs")), (400, 600));
}

#[tokio::test]
async fn a_failing_statement_rolls_back_the_ones_before_it() {
    let t = table("rollback");
    let db = pg().await;
    db.execute(format!("CREATE TABLE {t} (id int)").as_str()).await.expect("create");
    let toml = archive_job(
        "app",
        PG,
        [format!("INSERT INTO {t} VALUES (1), (2)"), format!("INSERT INTO {t}_missing VALUES (1)")],
    );
    let (jobs, services) = setup(&toml, Path::new("."));
    let run = &runs(jobs[0].clone(), services.clone(), 1, |_| {}).await[0];
    assert_eq!(run.outcome, RunOutcome::Failure);
    let error = run.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("database app: statement 2: ")
            && error.ends_with("(the statements before it were rolled back)"),
        "{error}"
    );
    assert_eq!(run.details.statements.as_ref().map(|s| s[0].rows), Some(2), "what ran is recorded");
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&db).await.expect("count");
    assert_eq!(n, 0, "rolled back");
    // Without a transaction the first statement stays.
    let toml = toml.replace("database = \"app\"", "database = \"app\"\ntransaction = false");
    let (jobs, services) = setup(&toml, Path::new("."));
    let run = &runs(jobs[0].clone(), services, 1, |_| {}).await[0];
    assert_eq!(run.outcome, RunOutcome::Failure);
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&db).await.expect("count");
    assert_eq!(n, 2);
    db.execute(format!("DROP TABLE {t}").as_str()).await.expect("drop");
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_on_the_server() {
    for (url, sleep, running) in [
        (
            PG,
            "SELECT pg_sleep(60)",
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'",
        ),
        (MY, "SELECT SLEEP(60)", "SELECT count(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(60)'"),
    ] {
        let toml = format!(
            "[databases.app]\nurl = \"{url}\"\n[jobs.slow]\nevery = \"1h\"\naction = \"sql\"\ndatabase = \"app\"\n\
             statements = \"{sleep}\"\nstatement_timeout = \"1s\"\n"
        );
        let (jobs, services) = setup(&toml, Path::new("."));
        let started = std::time::Instant::now();
        let run = &runs(jobs[0].clone(), services, 1, |_| {}).await[0];
        assert!(started.elapsed() < Duration::from_secs(10), "{url}: the run ended at its timeout");
        assert_eq!(run.outcome, RunOutcome::Failure, "{url}");
        assert_eq!(
            run.error.as_deref(),
            Some("database app: statement 1 ran past its timeout of 1s; cancelled on the server"),
            "{url}"
        );
        // The server is no longer running it.
        let gone = if url == PG {
            let db = pg().await;
            let mut gone = false;
            for _ in 0..40 {
                let n: i64 = sqlx::query_scalar(running).fetch_one(&db).await.expect("count");
                if n == 0 {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            gone
        } else {
            let db = my().await;
            let mut gone = false;
            for _ in 0..40 {
                let n: i64 = sqlx::query(running).fetch_one(&db).await.expect("count").get(0);
                if n == 0 {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            gone
        };
        assert!(gone, "{url}: the statement still runs on the server");
    }
}

#[tokio::test]
async fn sql_check_goes_down_and_up_with_notifications() {
    let seen = Seen::default();
    let base = server(seen.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("app.db")).expect("open");
    conn.execute_batch("CREATE TABLE jobs (state text)").expect("create");
    let toml = format!(
        "[notifiers.ops]\nkind = \"webhook\"\nurl = \"{base}/hook\"\n[databases.app]\nurl = \"sqlite://app.db\"\n\
         [jobs.queue-depth]\nevery = \"1m\"\naction = \"sql_check\"\ndatabase = \"app\"\nnotify = \"ops\"\n\
         query = \"SELECT count(*) FROM jobs WHERE state = 'pending'\"\nexpect = \"< 3\"\n"
    );
    let (jobs, services) = setup(&toml, dir.path());
    let pending = [0, 5, 5, 1];
    let recorded = runs(jobs[0].clone(), services, pending.len(), |i| {
        conn.execute("DELETE FROM jobs", []).expect("delete");
        for _ in 0..pending[i] {
            conn.execute("INSERT INTO jobs VALUES ('pending')", []).expect("insert");
        }
    })
    .await;
    let ups: Vec<Option<bool>> = recorded.iter().map(|r| r.details.up).collect();
    assert_eq!(ups, [Some(true), Some(false), Some(false), Some(true)]);
    assert_eq!(recorded[1].details.value.as_deref(), Some("5"));
    assert_eq!(recorded[1].error.as_deref(), Some("database app: 5 is not < 3"));
    let hooks = seen.hooks.lock().expect("lock").clone();
    let events: Vec<&str> = hooks.iter().map(|h| h["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["failure", "recovery"], "{hooks:#?}");
}

#[test]
fn a_database_that_is_down_is_a_recorded_failure_and_the_daemon_runs_on() {
    let secret = format!("pw-{}-never-shown", fastrand::u64(..));
    let port = free_port();
    let api = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [databases.down]\nurl = \"postgres://postgres@127.0.0.1:{port}/test\"\npassword_file = \"db-password\"\n\
         [databases.pg]\nurl = \"{PG}\"\npassword_file = \"db-password\"\n\
         [jobs.purge]\nevery = \"1s\"\naction = \"sql\"\ndatabase = \"down\"\nstatements = \"DELETE FROM sessions\"\n\
         [jobs.broken]\nevery = \"1s\"\naction = \"sql\"\ndatabase = \"pg\"\nstatements = \"SELEC 1\"\n\
         [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n"
    ));
    std::fs::write(b.path("db-password"), format!("{secret}\n")).expect("write");
    let mut d = b.run(&[]);
    d.wait_started();
    assert!(
        wait_for(Duration::from_secs(8), || history(&b, "purge").len() >= 2 && history(&b, "broken").len() >= 2),
        "{}",
        b.log()
    );
    let api = d.api();
    let (_, health) = api.get("/healthz");
    assert_eq!(health["status"], "ok");
    let (_, jobs) = api.get("/api/jobs");
    let (_, runs) = api.get("/api/jobs/purge/runs");
    let (_, metrics) = api.get("/metrics");
    d.stop();
    let purge = history(&b, "purge");
    assert!(purge.iter().all(|r| r["outcome"] == "failure"), "{purge:?}");
    let error = purge[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("database down: ") && error.contains("refused"), "the driver's reason: {error}");
    assert!(history(&b, "tick").len() >= 2, "the other jobs ran on");
    let broken = history(&b, "broken");
    assert!(broken[0]["error"].as_str().is_some_and(|e| e.contains("syntax error")), "{broken:?}");
    let out = b.cmd(&["history", "-c", "beatd.toml", "--json"]).output().expect("history");
    for (place, text) in [
        ("the log", b.log()),
        ("the history", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("/api/jobs", jobs.to_string()),
        ("the runs", runs.to_string()),
        ("/metrics", metrics.to_string()),
    ] {
        assert!(!text.contains(&secret), "the password is in {place}");
        assert!(!text.is_empty(), "{place} is empty: the test shows nothing");
    }
}

#[test]
fn database_settings_are_checked_and_check_does_not_connect() {
    let b = Beatd::with_config(
        "[databases.a]\nurl = \"postgres://u:hunter2@127.0.0.1/app\"\n[databases.b]\nurl = \"oracle://h/x\"\n\
         [databases.c]\nurl = \"postgres://127.0.0.1:1/app\"\npassword_file = \"missing\"\n\
         [jobs.x]\nevery = \"1h\"\naction = \"sql\"\ndatabase = \"nope\"\nstatements = []\n\
         [jobs.y]\nevery = \"1h\"\naction = \"sql_check\"\ndatabase = \"c\"\nquery = \"SELECT 1\"\nexpect = \"about 1\"\n",
    );
    let out = b.cmd(&["check", "-c", "beatd.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "beatd.toml:2:7: database \"a\": the password must not be in the URL (it would end up in logs): put it in password_file",
        "beatd.toml:4:7: database \"b\": unknown database \"oracle://\"",
        "beatd.toml:7:17: database \"c\": cannot read password_file missing: No such file or directory",
        "beatd.toml:11:12: job \"x\": no database \"nope\" (define it as [databases.nope])",
        "beatd.toml:12:14: job \"x\": \"statements\" needs at least one statement",
        "beatd.toml:18:10: job \"y\": invalid \"expect\": \"about 1\" must start with <, <=, >, >=, == or !=",
    ] {
        assert!(err.contains(expected), "no {expected:?} in\n{err}");
    }
    assert!(!err.contains("hunter2"), "{err}");
    // A valid config that names a database that is down passes `check`; `--connect` says so.
    let down = Beatd::with_config(
        "[databases.c]\nurl = \"postgres://postgres@127.0.0.1:1/app\"\n[jobs.y]\nevery = \"1h\"\naction = \"sql_check\"\n\
         database = \"c\"\nquery = \"SELECT 1\"\nexpect = \"== 1\"\n",
    );
    down.cmd(&["check", "-c", "beatd.toml"]).assert().success();
    let out = down.cmd(&["check", "-c", "beatd.toml", "--connect"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: database c: "), "{out:?}");
}
