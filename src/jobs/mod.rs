//! Actions: what a job does when it fires. One file per action, one enum to dispatch.
//!
//! Each action parses its own keys from the job's table (so `beatd check` knows every key) and
//! runs a fire to an [`Outcome`]. Adding an action means a new file and one arm per match here.

pub mod command;
pub mod noop;

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::diag::Diags;
use crate::config::table::Table;
use crate::fire::Fire;

/// The names `action = "..."` accepts.
pub const ACTIONS: &[&str] = &["command", "noop"];

#[derive(Debug, Clone)]
pub enum Action {
    Command(command::Command),
    Noop(noop::Noop),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// What a running action may need from the daemon.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Cancelled when the shutdown grace period is over: running work must stop now.
    pub kill: CancellationToken,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Command(_) => "command",
            Action::Noop(_) => "noop",
        }
    }

    /// Every key any action takes, so a job with a mistyped action is not also buried in
    /// "unknown key" errors for keys that are fine once the action is fixed.
    pub fn all_keys() -> Vec<&'static str> {
        [command::KEYS, noop::KEYS].concat()
    }

    /// Parses the action `kind` from the job's table; errors go to `d`.
    pub fn parse(kind: &str, table: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Action> {
        match kind {
            "command" => command::Command::parse(table, d, base).map(Action::Command),
            "noop" => Some(Action::Noop(noop::Noop)),
            _ => None,
        }
    }

    /// True when the action finishes at once and needs no task of its own.
    pub fn is_instant(&self) -> bool {
        matches!(self, Action::Noop(_))
    }

    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> Outcome {
        match self {
            Action::Command(c) => c.run(fire, cx).await,
            Action::Noop(n) => n.run(),
        }
    }
}
