//! `beatd history`: the run history from the state database, newest first.

use std::io::Write;

use super::{ConfigArg, Failed, fail};
use crate::state::{self, history};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this job's runs.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// At most this many runs.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), Failed> {
    let config = args.config.read()?;
    if let Some(job) = &args.job
        && !config.jobs.iter().any(|j| *j.name == **job)
    {
        let names = config.jobs.iter().map(|j| &*j.name);
        return Err(fail(format!(
            "no job \"{job}\" in {}{}",
            config.path.display(),
            crate::config::diag::hint(job, names)
        )));
    }
    if let Some(cluster) = config.cluster.as_ref().filter(|_| !args.json) {
        eprintln!(
            "note: cluster \"{}\": these are the runs of this node only; every node keeps its own history",
            cluster.name
        );
    }
    let conn = state::open_read_only(&config.scheduler.state_dir).map_err(fail)?;
    let runs = history::query(&conn, args.job.as_deref(), None, Some(args.limit))
        .map_err(|e| fail(format!("reading the history: {e}")))?;
    let zone =
        |job: &str| config.jobs.iter().find(|j| &*j.name == job).map_or(config.scheduler.timezone, |j| j.timezone);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = (|| -> std::io::Result<()> {
        if args.json {
            for r in &runs {
                writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
            }
            return Ok(());
        }
        writeln!(
            out,
            "{:<26}  {:<24}  {:<8}  {:>7}  {:>10}  DETAIL",
            "SCHEDULED", "JOB", "OUTCOME", "ATTEMPT", "DURATION"
        )?;
        for r in &runs {
            let scheduled = r.scheduled_at.with_timezone(&zone(&r.job)).format("%Y-%m-%d %H:%M:%S %:z");
            let took = r.duration().map_or("-".to_string(), |d| format!("{:.3}s", d.as_secs_f64()));
            let detail = r
                .error
                .clone()
                .unwrap_or_else(|| serde_json::to_string(&r.details).ok().filter(|d| d != "{}").unwrap_or_default());
            writeln!(
                out,
                "{scheduled:<26}  {:<24}  {:<8}  {:>7}  {took:>10}  {detail}",
                r.job,
                r.outcome.as_str(),
                r.attempt
            )?;
        }
        Ok(())
    })();
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(fail(format!("cannot write output: {e}"))),
        _ => Ok(()),
    }
}
