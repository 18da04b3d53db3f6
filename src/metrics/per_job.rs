//! The per-job series, written straight into the scrape's buffer.
//!
//! With 10 000 jobs these are ~250 000 sample lines, nearly all of a scrape. prometheus-client
//! writes each one through a `dyn Write`, re-encodes the labels for each of a histogram's
//! buckets and spells its own families in OpenMetrics only, so the classic format cost a
//! second pass over 15 MB. Here each job's label is written once per family into a reused
//! prefix, numbers go through `itoa`/`dtoa` (as prometheus-client's own encoder), and each
//! format is written in its own spelling from the start.
//!
//! The duration histogram is this module's too: twelve bucket counters and a sum, all atomics,
//! so a scrape can read its buckets (prometheus-client's histogram keeps them private) and a
//! job holds one small box instead of a locked vector.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::status::{JobSet, LiveJob};

use super::JOB_LABEL;
use super::exposition::Format;

/// Job duration buckets, in seconds: 10 ms to 1 h.
pub const DURATION_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// The same bounds as written in `le` labels.
const DURATION_LE: [&str; 13] =
    ["0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "30.0", "60.0", "300.0", "900.0", "3600.0", "+Inf"];

pub const OUTCOMES: [&str; 5] = ["success", "failure", "timeout", "skipped", "cancelled"];
pub const FIRES: (&str, &str) =
    ("beatd_fires", "Fires by job and outcome (success, failure, timeout, skipped, cancelled)");
const DURATIONS: (&str, &str) = ("beatd_job_duration_seconds", "Run durations of jobs that are not instant");

/// One job's run durations: a count per bucket (not cumulative; the last is +Inf) and the sum
/// in microseconds.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    buckets: [AtomicU64; 13],
    sum_us: AtomicU64,
}

impl DurationHistogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let at = DURATION_BUCKETS.iter().position(|&le| secs <= le).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Runs observed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// A per-job gauge: name, help, and how to read it (`None`: no sample for that job).
type JobGauge = (&'static str, &'static str, fn(&LiveJob) -> Option<f64>);

const GAUGES: [JobGauge; 5] = [
    ("beatd_jobs_running", "Runs in progress, by job", |e| Some(e.status.running.load(Ordering::Relaxed) as f64)),
    ("beatd_next_fire_timestamp_seconds", "When the job fires next (Unix time)", |e| {
        e.status.next_fire().map(|t| t.timestamp_millis() as f64 / 1e3)
    }),
    ("beatd_last_success_timestamp_seconds", "When the job last succeeded (Unix time)", |e| {
        e.status.last_success().map(|t| t.timestamp_millis() as f64 / 1e3)
    }),
    ("beatd_check_up", "1 when the check last found the service up, 0 when down", |e| {
        e.status.check_up().map(|up| if up { 1.0 } else { 0.0 })
    }),
    (
        "beatd_job_period_seconds",
        "Longest gap between the job's consecutive slots (the interval; for cron, the longest of the next eight)",
        |e| e.status.period(&e.job).map(|p| p.as_secs_f64()),
    ),
];

/// Appends every per-job family to `out`, in `format`.
pub fn write(out: &mut String, jobs: &JobSet, format: Format) {
    let mut num = itoa::Buffer::new();
    let mut float = dtoa::Buffer::new();
    // `{job_name="NAME"` of the job at hand: each sample line starts with family + this.
    let mut label = String::with_capacity(128);

    // Counters: OpenMetrics names the family without `_total`, the classic format with it.
    let fires_total = format!("{}_total", FIRES.0);
    match format {
        Format::OpenMetrics => descriptor(out, FIRES.0, FIRES.1, "counter"),
        Format::Text => descriptor(out, &fires_total, FIRES.1, "counter"),
    }
    for e in &jobs.jobs {
        label_of(&mut label, e);
        for (outcome, counter) in OUTCOMES.iter().zip(e.status.fires().iter()) {
            out.push_str(&fires_total);
            out.push_str(&label);
            out.push_str(",outcome=\"");
            out.push_str(outcome);
            out.push_str("\"} ");
            out.push_str(num.format(counter.get()));
            out.push('\n');
        }
    }

    descriptor(out, DURATIONS.0, DURATIONS.1, "histogram");
    for e in &jobs.jobs {
        let Some(h) = e.status.duration() else { continue };
        label_of(&mut label, e);
        let counts = h.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        for (suffix, value) in [("_sum", float.format(sum)), ("_count", num.format(counts.iter().sum::<u64>()))] {
            out.push_str(DURATIONS.0);
            out.push_str(suffix);
            out.push_str(&label);
            out.push_str("} ");
            out.push_str(value);
            out.push('\n');
        }
        let mut cumulative = 0;
        for (le, count) in DURATION_LE.iter().zip(counts) {
            cumulative += count;
            out.push_str(DURATIONS.0);
            out.push_str("_bucket");
            out.push_str(&label);
            out.push_str(",le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            out.push_str(num.format(cumulative));
            out.push('\n');
        }
    }

    for (name, help, value) in GAUGES {
        descriptor(out, name, help, "gauge");
        for e in &jobs.jobs {
            let Some(v) = value(e) else { continue };
            label_of(&mut label, e);
            out.push_str(name);
            out.push_str(&label);
            out.push_str("} ");
            out.push_str(float.format(v));
            out.push('\n');
        }
    }
}

/// Sets `label` to `{job_name="NAME"` for `e`.
fn label_of(label: &mut String, e: &LiveJob) {
    // Job names are letters, digits, '.', '_' and '-' (the config refuses others), so they
    // need no escaping in a label value.
    debug_assert!(e.job.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    label.clear();
    label.push('{');
    label.push_str(JOB_LABEL);
    label.push_str("=\"");
    label.push_str(&e.job.name);
    label.push('"');
}

fn descriptor(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_millis(10)); // on a bound: that bucket (le is "less or equal")
        h.observe(Duration::from_millis(11));
        h.observe(Duration::from_secs(7200)); // past the last bound: +Inf
        let counts = h.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[12], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_us.load(Ordering::Relaxed), 10_000 + 11_000 + 7_200_000_000);
    }

    /// The whole per-job part of a scrape, in both formats, for a command job that ran once and
    /// a noop that has no histogram: what Prometheus and promtool read (the integration tests
    /// run both on a live daemon's answer).
    #[test]
    fn each_format_is_written_in_its_own_spelling() {
        use std::path::Path;
        use std::sync::Arc;

        use crate::job::RunOutcome;
        use crate::metrics::Metrics;
        use crate::status::Board;

        let text = "[jobs.cmd]\nevery = \"1m\"\naction = \"command\"\ncommand = \"true\"\n\
                    [jobs.tick]\nevery = \"1s\"\naction = \"noop\"\n";
        let jobs = crate::config::parse_str(text, Path::new("t.toml"), Path::new(".")).expect("valid").jobs;
        let board = Arc::new(Board::new(jobs, Metrics::new(true)));
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let cmd = &board.jobs().get("cmd").expect("cmd").status.clone();
        cmd.set_next_fire(Some(at + chrono::Duration::minutes(1)));
        let ran = chrono::Duration::milliseconds(120);
        cmd.finished(at, Some(at), at + ran, RunOutcome::Success, None);
        cmd.finished(at, Some(at), at + ran, RunOutcome::Failure, None);

        let mut om = String::new();
        write(&mut om, &board.jobs(), Format::OpenMetrics);
        let buckets: String = DURATION_LE
            .iter()
            .enumerate()
            .map(|(i, le)| {
                format!(
                    "beatd_job_duration_seconds_bucket{{job_name=\"cmd\",le=\"{le}\"}} {}\n",
                    if i < 3 { 0 } else { 2 }
                )
            })
            .collect();
        let expected = format!(
            "# HELP beatd_fires {help}\n# TYPE beatd_fires counter\n\
             beatd_fires_total{{job_name=\"cmd\",outcome=\"success\"}} 1\n\
             beatd_fires_total{{job_name=\"cmd\",outcome=\"failure\"}} 1\n\
             beatd_fires_total{{job_name=\"cmd\",outcome=\"timeout\"}} 0\n\
             beatd_fires_total{{job_name=\"cmd\",outcome=\"skipped\"}} 0\n\
             beatd_fires_total{{job_name=\"cmd\",outcome=\"cancelled\"}} 0\n\
             beatd_fires_total{{job_name=\"tick\",outcome=\"success\"}} 0\n\
             beatd_fires_total{{job_name=\"tick\",outcome=\"failure\"}} 0\n\
             beatd_fires_total{{job_name=\"tick\",outcome=\"timeout\"}} 0\n\
             beatd_fires_total{{job_name=\"tick\",outcome=\"skipped\"}} 0\n\
             beatd_fires_total{{job_name=\"tick\",outcome=\"cancelled\"}} 0\n\
             # HELP beatd_job_duration_seconds Run durations of jobs that are not instant\n\
             # TYPE beatd_job_duration_seconds histogram\n\
             beatd_job_duration_seconds_sum{{job_name=\"cmd\"}} 0.24\n\
             beatd_job_duration_seconds_count{{job_name=\"cmd\"}} 2\n\
             {buckets}\
             # HELP beatd_jobs_running Runs in progress, by job\n# TYPE beatd_jobs_running gauge\n\
             beatd_jobs_running{{job_name=\"cmd\"}} 0.0\n\
             beatd_jobs_running{{job_name=\"tick\"}} 0.0\n\
             # HELP beatd_next_fire_timestamp_seconds When the job fires next (Unix time)\n\
             # TYPE beatd_next_fire_timestamp_seconds gauge\n\
             beatd_next_fire_timestamp_seconds{{job_name=\"cmd\"}} 1800000060.0\n\
             # HELP beatd_last_success_timestamp_seconds When the job last succeeded (Unix time)\n\
             # TYPE beatd_last_success_timestamp_seconds gauge\n\
             beatd_last_success_timestamp_seconds{{job_name=\"cmd\"}} 1800000000.12\n\
             # HELP beatd_check_up 1 when the check last found the service up, 0 when down\n\
             # TYPE beatd_check_up gauge\n\
             # HELP beatd_job_period_seconds {period}\n# TYPE beatd_job_period_seconds gauge\n\
             beatd_job_period_seconds{{job_name=\"cmd\"}} 60.0\n",
            help = FIRES.1,
            period = GAUGES[4].1,
        );
        assert_eq!(om, expected);

        // The classic format differs only in the counter family's name.
        let mut text = String::new();
        write(&mut text, &board.jobs(), Format::Text);
        assert_eq!(text, expected.replace("beatd_fires ", "beatd_fires_total "));
    }
}
