//! `beatd completions SHELL`: the shell's completion script.
//!
//! The script asks the binary itself for candidates (clap_complete's dynamic completion:
//! `BEATD_COMPLETE=bash beatd -- <words>`), so subcommands and flags are always those of the
//! installed version, and `trigger`, `pause` and `resume` complete the job names of the config
//! the line names (`-c FILE`, else `$BEATD_CONFIG`, else `/etc/beatd/beatd.toml`).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;
use clap_complete::env::Shells;

use super::{Failed, fail};

/// The environment variable the scripts set to ask for candidates: beatd's own, so a `COMPLETE`
/// another tool left in the environment never turns a command into a completion engine.
pub const VAR: &str = "BEATD_COMPLETE";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
    shell: String,
}

pub fn run(args: Args) -> Result<(), Failed> {
    let shells = Shells::builtins();
    let shell = shells.completer(&args.shell).ok_or_else(|| fail(format!("no completions for {}", args.shell)))?;
    let mut script = Vec::new();
    shell
        .write_registration(VAR, "beatd", "beatd", "beatd", &mut script)
        .and_then(|()| std::io::stdout().write_all(&script))
        .map_err(|e| fail(format!("cannot write the script: {e}")))
}

/// The names of the config's jobs that start with `current`; none when the config cannot be
/// read (a completion must never print an error into the user's prompt).
pub fn job_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let Ok(config) = crate::config::read(&config_on_the_line(std::env::args_os())) else { return Vec::new() };
    let prefix = current.to_string_lossy();
    config
        .jobs
        .iter()
        .filter(|j| j.name.starts_with(&*prefix))
        .map(|j| CompletionCandidate::new(&*j.name).help(Some(j.schedule_text.to_string().into())))
        .collect()
}

/// The config a command line being completed names: its last `-c`/`--config`, else the
/// default the command itself would use.
fn config_on_the_line(args: impl IntoIterator<Item = OsString>) -> PathBuf {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        if (a == "-c" || a == "--config")
            && let Some(v) = args.get(i + 1)
        {
            found = Some(v.clone());
        } else if let Some(v) = a.strip_prefix("--config=") {
            found = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("-c").filter(|v| !v.is_empty() && !a.starts_with("--")) {
            found = Some(v.to_string());
        }
    }
    let default =
        || std::env::var_os("BEATD_CONFIG").map_or_else(|| PathBuf::from(super::DEFAULT_CONFIG), PathBuf::from);
    found.map_or_else(default, PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_the_one_the_line_names() {
        let line = |s: &str| config_on_the_line(s.split(' ').map(OsString::from));
        assert_eq!(line("beatd -- beatd trigger -c a.toml cl"), PathBuf::from("a.toml"));
        assert_eq!(line("beatd -- beatd pause --config=b.toml x"), PathBuf::from("b.toml"));
        assert_eq!(line("beatd -- beatd pause -cc.toml x"), PathBuf::from("c.toml"));
        assert_eq!(line("beatd -- beatd resume --config d.toml -c e.toml x"), PathBuf::from("e.toml"));
    }
}
