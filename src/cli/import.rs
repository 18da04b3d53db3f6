//! `beatd import`: other schedulers' schedules as a beatd config on stdout (see
//! [`crate::import`]).

use std::io::Read;
use std::path::PathBuf;

use super::{Failed, fail};
use crate::import::{celery, crontab};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A crontab: `crontab -l | beatd import crontab -`, or `--system /etc/crontab`.
    Crontab(CrontabArgs),
    /// A Celery app's beat_schedule, as celery jobs: `--app proj.celery:app`, or `--json FILE`.
    Celery(CeleryArgs),
}

#[derive(Debug, clap::Args)]
pub struct CeleryArgs {
    /// The app, as `celery -A` takes it (proj.celery:app); loaded with --python from this folder.
    #[arg(long, value_name = "MODULE:APP", required_unless_present = "json", conflicts_with = "json")]
    app: Option<String>,
    /// The Python that imports the app (the one its virtualenv runs).
    #[arg(long, value_name = "PATH", default_value = "python3", requires = "app")]
    python: PathBuf,
    /// A dump the embedded program wrote (its JSON), instead of loading the app.
    #[arg(long, value_name = "FILE|-")]
    json: Option<PathBuf>,
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
        Command::Celery(args) => {
            let (text, source) = match (&args.app, &args.json) {
                (Some(app), _) => (dump(&args.python, app)?, app.clone()),
                (None, Some(file)) => read(file)?,
                (None, None) => return Err(fail("give --app or --json")),
            };
            let dump: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| fail(format!("{source}: not a beat_schedule dump: {e}")))?;
            let imported = celery::import(&dump, &source)
                .map_err(|errors| errors.into_iter().map(|e| format!("{source}: {e}")).collect::<Vec<_>>());
            finish(imported, ("entry", "entries"))
        }
        Command::Crontab(args) => {
            let (text, source) = read(&args.file)?;
            let opts = crontab::Options { source, system: args.system, notify: args.notify, user: args.user };
            finish(crontab::import(&text, &opts), ("line", "lines"))
        }
    }
}

/// Prints the config, or every error and how many `(one, many)` were not imported (exit 1):
/// never half a config.
fn finish<E: std::fmt::Display>(imported: Result<String, Vec<E>>, (one, many): (&str, &str)) -> Result<(), Failed> {
    match imported {
        Ok(config) => {
            print!("{config}");
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            let n = errors.len();
            eprintln!("{n} {} not imported", if n == 1 { one } else { many });
            Err(Failed(1))
        }
    }
}

/// Runs the embedded program with `python` on `app`: its JSON, or why it failed (its stderr).
fn dump(python: &PathBuf, app: &str) -> Result<String, Failed> {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(celery::DUMP_PROGRAM)
        .arg(app)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Python's last unindented line is the exception and its message.
        let last =
            err.lines().rev().find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace)).unwrap_or("");
        return Err(fail(format!("{} could not load {app}: {last}", python.display())));
    }
    String::from_utf8(out.stdout).map_err(|_| fail("the dump is not UTF-8"))
}

/// The text of `file` (`-`: standard input) and the name messages give it; at most 4 MiB, UTF-8.
fn read(file: &PathBuf) -> Result<(String, String), Failed> {
    const MAX: u64 = crate::config::MAX_CONFIG_BYTES;
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
