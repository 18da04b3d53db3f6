//! `beatd next`: upcoming fire times, merged across jobs in time order, without running
//! anything. It calls the same `next_after` as the daemon, so it shows what the daemon does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::{ConfigArg, Failed, fail, relative};
use crate::config::{self, diag::hint};
use crate::job::Job;
use crate::jobs::{Action, noop::Noop};
use crate::schedule::Schedule;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short = 'c', env = "BEATD_CONFIG", default_value = "/etc/beatd/beatd.toml")]
    config: PathBuf,
    /// Only these jobs (repeatable).
    #[arg(long = "job", value_name = "NAME", conflicts_with_all = ["cron", "every"])]
    jobs: Vec<String>,
    /// Fires to list per job [default: 5, or all up to --until].
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// List fires strictly after this instant (RFC 3339) [default: now].
    #[arg(long, value_parser = parse_instant)]
    from: Option<DateTime<FixedOffset>>,
    /// List every fire up to and including this instant (RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    until: Option<DateTime<FixedOffset>>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Try a cron expression instead of a config (the job is named "inline").
    #[arg(long, value_name = "EXPR", conflicts_with = "every")]
    cron: Option<String>,
    /// The zone for --cron (and for showing --every) [default: the system's].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Try an interval instead of a config, such as 90s or 1h30m.
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// Shift for --every, smaller than the interval.
    #[arg(long, value_name = "DURATION", requires = "every")]
    offset: Option<String>,
}

fn parse_instant(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s).map_err(|e| format!("{e} (expected RFC 3339, like 2026-03-08T02:00:00-05:00)"))
}

pub fn run(args: Args) -> Result<(), Failed> {
    let jobs = if args.cron.is_some() || args.every.is_some() { vec![inline_job(&args)?] } else { config_jobs(&args)? };
    let from = args.from.map_or_else(Utc::now, |f| f.with_timezone(&Utc));
    let until = args.until.map(|u| u.with_timezone(&Utc));
    let count = args.count.or(if until.is_some() { None } else { Some(5) });

    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match write_fires(&mut out, &jobs, from, until, count, args.json).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `beatd next | head` is fine.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(format!("cannot write output: {e}"))),
    }
}

fn inline_job(args: &Args) -> Result<Job, Failed> {
    let tz = match &args.tz {
        Some(name) => config::parse_zone(name).map_err(fail)?,
        None => config::system_zone(),
    };
    let built = match (&args.cron, &args.every) {
        (Some(expr), _) => config::cron_from_text(expr, tz, false).map_err(|e| fail(format!("--cron: {}", e.message))),
        (None, Some(every)) => {
            config::every_from_text(every, args.offset.as_deref()).map_err(|e| fail(format!("--every: {}", e.message)))
        }
        (None, None) => unreachable!("called only with --cron or --every"),
    }?;
    Ok(Job {
        name: "inline".into(),
        schedule: built.0,
        schedule_text: built.1.into(),
        timezone: tz,
        enabled: true,
        action: Action::Noop(Noop),
        policy: Default::default(),
        history: Default::default(),
        notify: None,
        notify_on: Default::default(),
        definition: uuid::Uuid::nil(),
    })
}

fn config_jobs(args: &Args) -> Result<Vec<Job>, Failed> {
    let config = ConfigArg { config: args.config.clone() }.read()?;
    for name in &args.jobs {
        if !config.jobs.iter().any(|j| *j.name == **name) {
            let names = config.jobs.iter().map(|j| &*j.name);
            return Err(fail(format!("no job \"{name}\" in {}{}", config.path.display(), hint(name, names))));
        }
    }
    let chosen: Vec<Job> =
        config.jobs.into_iter().filter(|j| args.jobs.is_empty() || args.jobs.iter().any(|n| **n == *j.name)).collect();
    for job in &chosen {
        if !job.enabled {
            eprintln!("note: job \"{}\" is disabled", job.name);
        } else if matches!(job.schedule, Schedule::Reboot) {
            eprintln!("note: job \"{}\" runs only when beatd starts (@reboot)", job.name);
        }
    }
    Ok(chosen.into_iter().filter(|j| j.enabled).collect())
}

fn write_fires(
    out: &mut impl Write,
    jobs: &[Job],
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    count: Option<u64>,
    json: bool,
) -> std::io::Result<()> {
    let due = |t: DateTime<Utc>| until.is_none_or(|u| t <= u);
    let mut heap = BinaryHeap::with_capacity(jobs.len());
    let mut left = vec![count.unwrap_or(u64::MAX); jobs.len()];
    // Ordered by when each fire runs: its slot plus the job's jitter.
    for (i, job) in jobs.iter().enumerate() {
        if let Some((slot, at)) = job.next_fire(from).filter(|(_, at)| due(*at))
            && left[i] > 0
        {
            heap.push(Reverse((at, i, slot)));
        }
    }
    if !json {
        // The day rule is not visible in the expression: say where it is not cron's.
        for job in jobs.iter().filter(|j| j.schedule_text.ends_with(config::job::BOTH_DAYS_MARK)) {
            let expr = job.schedule_text.trim_end_matches(config::job::BOTH_DAYS_MARK);
            writeln!(
                out,
                "note: {} fires on days that match both day fields of \"{expr}\" (day_match = \"both\")",
                job.name
            )?;
        }
        writeln!(out, "{:<34}  {:<12}  JOB", "TIME", "IN")?;
    }
    while let Some(Reverse((t, i, slot))) = heap.pop() {
        let job = &jobs[i];
        if json {
            write_json(out, job, t, slot)?;
        } else {
            let local = t.with_timezone(&job.timezone);
            let time = local.format("%a %Y-%m-%d %H:%M:%S %:z %Z").to_string();
            writeln!(out, "{time:<34}  {:<12}  {}", relative(t - from), job.name)?;
        }
        left[i] -= 1;
        if left[i] > 0
            && let Some((slot, at)) = job.next_fire(slot).filter(|(_, at)| due(*at))
        {
            heap.push(Reverse((at, i, slot)));
        }
    }
    Ok(())
}

fn write_json(out: &mut impl Write, job: &Job, t: DateTime<Utc>, slot: DateTime<Utc>) -> std::io::Result<()> {
    let at = local_rfc3339(job.timezone, t);
    // Job and zone names are [A-Za-z0-9._/+-]: nothing to escape.
    if t == slot {
        writeln!(out, r#"{{"job":"{}","at":"{at}","zone":"{}"}}"#, job.name, job.timezone.name())
    } else {
        let slot = local_rfc3339(job.timezone, slot);
        writeln!(out, r#"{{"job":"{}","at":"{at}","zone":"{}","slot":"{slot}"}}"#, job.name, job.timezone.name())
    }
}

fn local_rfc3339(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use crate::cli::relative;
    use chrono::Duration;

    #[test]
    fn relative_times() {
        assert_eq!(relative(Duration::seconds(45)), "in 45s");
        assert_eq!(relative(Duration::seconds(0)), "in 0s");
        assert_eq!(relative(Duration::seconds(330)), "in 5m 30s");
        assert_eq!(relative(Duration::minutes(192)), "in 3h 12m");
        assert_eq!(relative(Duration::hours(3)), "in 3h");
        assert_eq!(relative(Duration::hours(51)), "in 2d 3h");
    }
}
