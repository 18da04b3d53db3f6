//! `beatd check`: validate a config, report every error, exit 1 if there is one. It does not
//! connect to anything; `--connect` also tries each `[databases.*]` once.

use super::{ConfigArg, Failed, fail};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The config file, as `--config` gives it (`beatd check /etc/beatd/beatd.toml`).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<std::path::PathBuf>,
    /// Also connect to each database once and run `SELECT 1`.
    #[arg(long)]
    connect: bool,
}

pub fn run(args: Args) -> Result<(), Failed> {
    let config = match args.file {
        Some(config) => ConfigArg { config }.load()?,
        None => args.config.load()?,
    };
    let n = config.jobs.len();
    let disabled = config.jobs.iter().filter(|j| !j.enabled).count();
    let mut line = format!("ok: {n} job{}", if n == 1 { "" } else { "s" });
    if disabled > 0 {
        line.push_str(&format!(" ({disabled} disabled)"));
    }
    println!("{line}");
    if args.connect && !config.databases.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
        let databases = crate::databases::Databases::new(config.databases);
        let mut failed = 0;
        for (name, result) in runtime.block_on(databases.try_each()) {
            match result {
                Ok(()) => println!("database {name}: connected"),
                Err(e) => {
                    eprintln!("error: database {name}: {e}");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            return Err(fail(format!("{failed} database(s) could not be reached")));
        }
    }
    Ok(())
}
