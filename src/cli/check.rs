//! `beatd check`: validate a config, report every error, exit 1 if there is one.

use super::{ConfigArg, Failed};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(args: Args) -> Result<(), Failed> {
    let config = args.config.load()?;
    let n = config.jobs.len();
    let disabled = config.jobs.iter().filter(|j| !j.enabled).count();
    let mut line = format!("ok: {n} job{}", if n == 1 { "" } else { "s" });
    if disabled > 0 {
        line.push_str(&format!(" ({disabled} disabled)"));
    }
    println!("{line}");
    Ok(())
}
