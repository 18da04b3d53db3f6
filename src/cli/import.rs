//! `beatd import`: other schedulers' schedules as a beatd config on stdout (see
//! [`crate::import`]).

use std::io::Read;
use std::path::PathBuf;

use super::{Failed, fail};
use crate::import::crontab;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A crontab: `crontab -l | beatd import crontab -`, or `--system /etc/crontab`.
    Crontab(CrontabArgs),
}

#[derive(Debug, clap::Args)]
pub struct CrontabArgs {
    /// The crontab; `-` (the default) reads standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    file: PathBuf,
    /// A system crontab (/etc/crontab, /etc/cron.d/*): each entry has a user before its command.
    #[arg(long)]
    system: bool,
    /// A notifier (an email one, say) for the jobs whose output cron would have mailed.
    #[arg(long, value_name = "NAME")]
    notify: Option<String>,
    /// The user a user crontab's commands run as (cron ran them as the crontab's owner).
    #[arg(long, value_name = "NAME", conflicts_with = "system")]
    user: Option<String>,
}

pub fn run(command: Command) -> Result<(), Failed> {
    match command {
        Command::Crontab(args) => {
            let (text, source) = read(&args.file)?;
            let opts = crontab::Options { source, system: args.system, notify: args.notify, user: args.user };
            match crontab::import(&text, &opts) {
                Ok(config) => {
                    print!("{config}");
                    Ok(())
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    let n = errors.len();
                    eprintln!("{n} line{} not imported", if n == 1 { "" } else { "s" });
                    Err(Failed(1))
                }
            }
        }
    }
}

/// The text of `file` (`-`: standard input) and the name messages give it; at most 4 MiB, UTF-8.
fn read(file: &PathBuf) -> Result<(String, String), Failed> {
    const MAX: u64 = 4 * 1024 * 1024;
    let (mut reader, source): (Box<dyn Read>, String) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), "<stdin>".to_string())
    } else {
        let f = std::fs::File::open(file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
        (Box::new(f), file.display().to_string())
    };
    let mut bytes = Vec::new();
    reader.by_ref().take(MAX + 1).read_to_end(&mut bytes).map_err(|e| fail(format!("cannot read {source}: {e}")))?;
    if bytes.len() as u64 > MAX {
        return Err(fail(format!("{source} is larger than 4 MiB")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail(format!("{source} is not UTF-8")))?;
    Ok((text, source))
}
