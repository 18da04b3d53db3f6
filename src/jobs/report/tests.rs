//! A report from a seeded history, against numbers worked out by hand.

use chrono::{DateTime, Duration, Utc};

use super::{JobSummary, summarize};
use crate::job::{Details, RunOutcome};
use crate::state::history::RunRecord;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
}

fn run(job: &str, at: &str, ms: i64, outcome: RunOutcome, error: Option<&str>, details: Details) -> RunRecord {
    let start = t(at);
    RunRecord {
        job: job.into(),
        fire_id: String::new(),
        scheduled_at: start,
        started_at: (outcome != RunOutcome::Skipped).then_some(start),
        finished_at: start + Duration::milliseconds(ms),
        outcome,
        attempt: 1,
        exit_code: None,
        error: error.map(str::to_string),
        details,
    }
}

fn seeded() -> Vec<RunRecord> {
    use RunOutcome::*;
    let check = |up: bool, ms: f64| Details { up: Some(up), latency_ms: Some(ms), ..Details::default() };
    let clean = |files: u64, bytes: u64| Details {
        files_deleted: Some(files),
        bytes_freed: Some(bytes),
        errors: Some(0),
        ..Details::default()
    };
    let sql = |rows: &[u64]| Details {
        statements: Some(rows.iter().map(|&rows| crate::databases::StatementRun { rows, ms: 1.0 }).collect()),
        ..Details::default()
    };
    vec![
        // backup: 3 successes, 1 failure, 1 timeout, 1 skipped. Durations 100, 200, 300, 400, 1000 ms.
        run("backup", "2026-11-16T02:00:00Z", 100, Success, None, Details::default()),
        run("backup", "2026-11-17T02:00:00Z", 300, Success, None, Details::default()),
        run("backup", "2026-11-18T02:00:00Z", 400, Failure, Some("exited with status 2"), Details::default()),
        run("backup", "2026-11-19T02:00:00Z", 200, Success, None, Details::default()),
        run("backup", "2026-11-20T02:00:00Z", 1000, Timeout, Some("timed out after 1s"), Details::default()),
        run("backup", "2026-11-21T02:00:00Z", 0, Skipped, Some("the previous run is still going"), Details::default()),
        // web: 4 checks, 3 up; latencies 10, 20, 30 (up) and 5000 (down).
        run("web", "2026-11-16T00:05:00Z", 10, Success, None, check(true, 10.0)),
        run("web", "2026-11-16T00:10:00Z", 5000, Failure, Some("GET http://x/: timed out"), check(false, 5000.0)),
        run("web", "2026-11-16T00:15:00Z", 30, Success, None, check(true, 30.0)),
        run("web", "2026-11-16T00:20:00Z", 20, Success, None, check(true, 20.0)),
        // archive: two sql runs, rows per statement 400 + 400 and 3 + 0.
        run("archive", "2026-11-16T03:30:00Z", 40, Success, None, sql(&[400, 400])),
        run("archive", "2026-11-17T03:30:00Z", 20, Success, None, sql(&[3, 0])),
        // uploads: two cleanups.
        run("uploads", "2026-11-16T02:00:00Z", 50, Success, None, clean(10, 1000)),
        run("uploads", "2026-11-17T02:00:00Z", 70, Success, None, clean(5, 24)),
    ]
}

#[test]
fn a_report_from_a_seeded_history_has_the_expected_numbers() {
    let mut records = seeded();
    records.reverse(); // the history answers newest first; order must not matter
    let s = summarize(&records, &Default::default(), t("2026-11-16T00:00:00Z"), t("2026-11-23T00:00:00Z"));
    assert_eq!(
        s.jobs,
        [
            JobSummary {
                job: "archive".into(),
                runs: 2,
                successes: 2,
                failures: 0,
                skipped: 0,
                success_rate: Some(100.0),
                median_duration_ms: Some(30.0),
                max_duration_ms: Some(40.0),
                last_error: None,
                availability: None,
                median_latency_ms: None,
                files_deleted: None,
                bytes_freed: None,
                rows_affected: Some(803),
            },
            JobSummary {
                job: "backup".into(),
                runs: 5,
                successes: 3,
                failures: 2,
                skipped: 1,
                success_rate: Some(60.0),
                median_duration_ms: Some(300.0),
                max_duration_ms: Some(1000.0),
                // The newest error, even from a skip.
                last_error: Some("the previous run is still going".into()),
                availability: None,
                median_latency_ms: None,
                files_deleted: None,
                bytes_freed: None,
                rows_affected: None,
            },
            JobSummary {
                job: "uploads".into(),
                runs: 2,
                successes: 2,
                failures: 0,
                skipped: 0,
                success_rate: Some(100.0),
                median_duration_ms: Some(60.0),
                max_duration_ms: Some(70.0),
                last_error: None,
                availability: None,
                median_latency_ms: None,
                files_deleted: Some(15),
                bytes_freed: Some(1024),
                rows_affected: None,
            },
            JobSummary {
                job: "web".into(),
                runs: 4,
                successes: 3,
                failures: 1,
                skipped: 0,
                success_rate: Some(75.0),
                median_duration_ms: Some(25.0),
                max_duration_ms: Some(5000.0),
                last_error: Some("GET http://x/: timed out".into()),
                availability: Some(75.0),
                median_latency_ms: Some(25.0),
                files_deleted: None,
                bytes_freed: None,
                rows_affected: None,
            },
        ]
    );
}

#[test]
fn report_files_and_headline_from_the_state_database() {
    use std::path::Path;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let mut conn = crate::state::open(&state).expect("open");
    crate::state::history::insert(&mut conn, &seeded()).expect("seed");
    drop(conn);
    let toml = format!(
        "[scheduler]\ntimezone = \"UTC\"\n[jobs.weekly]\ncron = \"0 9 * * 1\"\naction = \"report\"\noutput_dir = \"{}\"\nperiod = \"7d\"\njobs = [\"weekly\"]\n",
        dir.path().join("reports").display()
    );
    let config = crate::config::parse_str(&toml, Path::new("t.toml"), Path::new(".")).expect("valid");
    let crate::jobs::Action::Report(report) = &config.jobs[0].action else { panic!("a report") };
    // Report on the seeded jobs rather than on itself.
    let report =
        super::Report { jobs: Some(vec!["archive".into(), "backup".into(), "web".into()]), ..(**report).clone() };
    let at = t("2026-11-23T00:00:00Z");
    let fire =
        crate::fire::Fire::scheduled(Arc::new(config.jobs[0].clone()), crate::status::JobStatus::detached(), at, at);
    let (summary, files, returned) = report.make(&fire, &state).expect("report");
    assert_eq!(summary.jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>(), ["archive", "backup", "web"]);
    let names: Vec<String> = files.iter().map(|f| f.file_name().expect("name").to_string_lossy().into()).collect();
    assert_eq!(names, ["report-2026-11-23.md", "report-2026-11-23.json"]);
    let md = std::fs::read_to_string(&files[0]).expect("markdown");
    assert_eq!(
        (returned.name.as_str(), returned.text.as_str()),
        ("report-2026-11-23.md", md.as_str()),
        "what mail attaches"
    );
    assert!(md.contains("| archive | 2 | 2 | 0 | 0 | 100 % | 30 ms | 40 ms | - | - | - | - | 803 | - |"), "{md}");
    assert!(
        md.contains(
            "| backup | 5 | 3 | 2 | 1 | 60 % | 300 ms | 1000 ms | - | - | - | - | - | the previous run is still going |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| web | 4 | 3 | 1 | 0 | 75 % | 25 ms | 5000 ms | 75 % | 25 ms | - | - | - | GET http://x/: timed out |"
        ),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).expect("json")).expect("valid");
    assert_eq!(json["jobs"][2]["availability"], 75.0);
    assert_eq!(json["jobs"][0]["rows_affected"], 803);
    assert_eq!(
        super::headline(&summary),
        "beatd report 2026-11-16 00:00 to 2026-11-23 00:00 UTC: 3 job(s), 11 run(s), failures in: backup, web"
    );
    // A second report the same day does not overwrite the first.
    let (_, again, _) = report.make(&fire, &state).expect("report");
    assert_eq!(again[0].file_name().expect("name"), "report-2026-11-23T000000.md");
}

/// With `history = "failures"` most successes are only counted: the report adds them to runs,
/// successes and (for a check) availability, and lists a job that has nothing but counts.
#[test]
fn successes_left_out_of_the_history_count_in_the_report() {
    use RunOutcome::*;
    let up = |up: bool| Details { up: Some(up), latency_ms: Some(5.0), ..Details::default() };
    let records = vec![
        run("web", "2026-11-20T10:00:00Z", 10, Success, None, up(true)),
        run("web", "2026-11-20T10:01:00Z", 10, Failure, Some("down"), up(false)),
        run("web", "2026-11-20T10:02:00Z", 10, Success, None, up(true)),
    ];
    let unwritten = [("web".to_string(), 97), ("quiet".to_string(), 10)].into();
    let s = summarize(&records, &unwritten, t("2026-11-16T00:00:00Z"), t("2026-11-23T00:00:00Z"));
    let web = &s.jobs[1];
    assert_eq!((web.job.as_str(), web.runs, web.successes, web.failures), ("web", 100, 99, 1));
    assert_eq!(web.success_rate, Some(99.0));
    assert_eq!(web.availability, Some(99.0));
    let quiet = &s.jobs[0];
    assert_eq!((quiet.job.as_str(), quiet.runs, quiet.successes, quiet.success_rate), ("quiet", 10, 10, Some(100.0)));
}
