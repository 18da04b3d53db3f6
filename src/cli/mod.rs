//! The command line: one enum of subcommands, one file each, exit codes decided here.
//!
//! Exit codes: 0 when the work succeeded, 1 when it failed or the config is invalid, 2 for a
//! usage error (clap's own), 3 when `beatd run` finds a state file it needs damaged (the unit
//! lists it in `RestartPreventExitStatus=`: restarting cannot help).

mod check;
mod completions;
mod control;
mod history;
mod import;
mod man;
mod next;
mod run;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config};

/// The commit the binary was built from (`-modified` when the tree had changes; `no commit`
/// when built outside a git checkout, as from a source package).
pub const COMMIT: &str =
    git_version::git_version!(args = ["--always", "--dirty=-modified", "--abbrev=12"], fallback = "no commit");

/// `--version`: the version and the commit.
static VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} (commit {COMMIT})", env!("CARGO_PKG_VERSION")));

/// Where the commands look for the config when they are not told.
pub const DEFAULT_CONFIG: &str = "/etc/beatd/beatd.toml";

#[derive(Debug, Parser)]
#[command(name = "beatd", version = VERSION.as_str(), about = "A periodic scheduler daemon: cron and interval jobs, DST-correct and fast")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler in the foreground (SIGHUP reloads the config; SIGTERM stops).
    Run(run::Args),
    /// Validate a config and report every error.
    Check(check::Args),
    /// List upcoming fire times without running anything.
    Next(next::Args),
    /// Show the run history.
    History(history::Args),
    /// Show the running daemon's jobs: next run, last outcome, running (needs [api]).
    Status(control::StatusArgs),
    /// Run a job now, outside its schedule (needs [api]).
    Trigger(control::JobArgs),
    /// Pause a job: its slots pass without running, across restarts (needs [api]).
    Pause(control::JobArgs),
    /// Resume a paused job (needs [api]).
    Resume(control::JobArgs),
    /// Cancel a queued or running run, by fire id, or every one of a job (needs [api]).
    Cancel(control::CancelArgs),
    /// Look after the state folder (with beatd stopped).
    #[command(subcommand)]
    State(state::Command),
    /// Print a shell's completion script (job names complete from the config).
    Completions(completions::Args),
    /// Print the config's JSON Schema, for editors (also docs/beatd.schema.json).
    Schema,
    /// Print another scheduler's schedule as a beatd config (a crontab, a Celery beat_schedule).
    #[command(subcommand)]
    Import(import::Command),
    /// Write the man pages (beatd(1), a page per subcommand, beatd.toml(5)) to a folder.
    Man(man::Args),
}

/// `--config`, shared by the subcommands that read one.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(long, short = 'c', env = "BEATD_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Loads the config to run with (its disk checks made), printing every error to stderr.
    pub fn load(&self) -> Result<Config, Failed> {
        Self::report(config::load(&self.config))
    }

    /// Reads the config's settings, without its disk checks, printing every error to stderr.
    pub fn read(&self) -> Result<Config, Failed> {
        Self::report(config::read(&self.config))
    }

    fn report(loaded: Result<Config, config::diag::ConfigErrors>) -> Result<Config, Failed> {
        loaded.map_err(|errors| {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
            Failed(1)
        })
    }
}

/// The command failed and has already said why; its exit status.
#[derive(Debug)]
pub struct Failed(pub u8);

pub fn main() -> ExitCode {
    // A completion script asking for candidates: answered, and the process exits.
    clap_complete::CompleteEnv::with_factory(Cli::command).var(completions::VAR).complete();
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Next(args) => next::run(args),
        Command::History(args) => history::run(args),
        Command::Status(args) => control::status(args),
        Command::Trigger(args) => control::job(control::Verb::Trigger, args),
        Command::Pause(args) => control::job(control::Verb::Pause, args),
        Command::Resume(args) => control::job(control::Verb::Resume, args),
        Command::Cancel(args) => control::cancel(args),
        Command::State(command) => state::run(command),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Import(command) => import::run(command),
        Command::Schema => {
            print!("{}", config::schema::text());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(code)) => ExitCode::from(code),
    }
}

/// Prints `error: ...` and fails; for errors outside the config.
pub fn fail(message: impl std::fmt::Display) -> Failed {
    eprintln!("error: {message}");
    Failed(1)
}

/// `in 3h 12m`: the two largest units.
pub(crate) fn relative(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts = if days > 0 {
        [(days, "d"), (h, "h")]
    } else if h > 0 {
        [(h, "h"), (m, "m")]
    } else if m > 0 {
        [(m, "m"), (sec, "s")]
    } else {
        [(sec, "s"), (0, "")]
    };
    let mut text = format!("in {}{}", parts[0].0, parts[0].1);
    if parts[1].0 > 0 {
        text.push_str(&format!(" {}{}", parts[1].0, parts[1].1));
    }
    text
}
