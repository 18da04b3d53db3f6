//! Actions: what a job does when it fires. One file per action, one enum to dispatch.
//!
//! Each action parses its own keys from the job's table (so `beatd check` knows every key) and
//! runs one attempt of a fire to a [`RunResult`]. Everything around an attempt (timeouts,
//! retries, overlap, history, notifications) is the runner's, the same for every action.

pub mod celery;
pub mod cleanup;
pub mod command;
pub mod http_check;
pub mod noop;
pub mod push;
pub mod report;
pub mod sql;
pub mod tcp_check;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::fire::Fire;
use crate::job::Details;
use crate::notifications::Notifications;

/// The names `action = "..."` accepts.
pub const ACTIONS: &[&str] =
    &["command", "noop", "cleanup", "http_check", "tcp_check", "report", "celery", "push", "sql", "sql_check"];

/// Variants are boxed: a `Job` stays small, so the timer loop touches few cache lines per fire
/// (10 000 jobs of ~460 bytes each cost 50 % more loop time than of ~230).
#[derive(Debug, Clone)]
pub enum Action {
    Command(Box<command::Command>),
    Noop(noop::Noop),
    Cleanup(Box<cleanup::Cleanup>),
    HttpCheck(Box<http_check::HttpCheck>),
    TcpCheck(Box<tcp_check::TcpCheck>),
    Report(Box<report::Report>),
    /// A Celery task message to a broker (sent by the broker's delivery task, not run here).
    Celery(Box<celery::Celery>),
    /// A JSON message onto a Redis list.
    Push(Box<push::Push>),
    /// Statements on a database.
    Sql(Box<sql::Sql>),
    /// A value from a database, compared with `expect`.
    SqlCheck(Box<sql::SqlCheck>),
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// `Err` carries the reason the attempt failed.
    pub result: Result<(), String>,
    pub exit_code: Option<i32>,
    pub details: Details,
    /// The last lines of a command's output, for notifications (not kept in the history).
    pub output: Vec<String>,
}

impl RunResult {
    pub fn ok() -> Self {
        RunResult { result: Ok(()), exit_code: None, details: Details::default(), output: Vec::new() }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        RunResult { result: Err(reason.into()), exit_code: None, details: Details::default(), output: Vec::new() }
    }

    pub fn with_details(mut self, details: Details) -> Self {
        self.details = details;
        self
    }
}

/// What the daemon shares with every run.
#[derive(Debug, Clone)]
pub struct Services {
    pub clock: Clock,
    pub http: reqwest::Client,
    pub notifications: Notifications,
    /// The state folder, for reports that read the history.
    pub state_dir: PathBuf,
    /// `[databases.*]`, with their pools.
    pub databases: std::sync::Arc<crate::databases::Databases>,
}

impl Services {
    /// One HTTP client, shared by checks and notifications.
    pub fn new(clock: Clock, state_dir: PathBuf, notifiers: HashMap<String, crate::notifications::Notifier>) -> Self {
        let http = crate::http::client();
        let notifications = Notifications::new(notifiers, http.clone());
        Services { clock, notifications, http, state_dir, databases: Default::default() }
    }

    /// With the config's `[databases.*]` (their pools are made on first use).
    pub fn with_databases(mut self, databases: HashMap<String, crate::databases::DatabaseConfig>) -> Self {
        self.databases = std::sync::Arc::new(crate::databases::Databases::new(databases));
        self
    }
}

/// What one attempt may need from the daemon.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Cancelled when this attempt must stop: its timeout passed, a newer run replaces it, or
    /// the shutdown grace period is over. Actions stop promptly and return.
    pub stop: CancellationToken,
    /// Cancelled when the daemon kills everything at shutdown: stop hard, at once.
    pub kill: CancellationToken,
    pub services: std::sync::Arc<Services>,
    /// Where the run reports its progress (`GET /api/runs/{id}`).
    pub progress: crate::runs::Progress,
}

/// Runs attempts. The daemon's [`Actions`] runs the job's action; paused-time tests supply
/// an executor whose work follows tokio's clock.
pub trait Execute: Send + Sync + 'static {
    /// True when the fire completes at once and needs no task of its own.
    fn is_instant(&self, fire: &Fire) -> bool;
    /// True when the action applies the job's timeout itself (checks: a timed-out check is a
    /// "down" result, not a timeout of the run).
    fn handles_timeout(&self, _fire: &Fire) -> bool {
        false
    }
    fn execute<'a>(
        &'a self,
        fire: &'a Fire,
        cx: &'a RunContext,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'a>>;
}

/// The production executor: the job's configured action.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actions;

impl Execute for Actions {
    fn is_instant(&self, fire: &Fire) -> bool {
        matches!(fire.job.action, Action::Noop(_))
    }

    fn handles_timeout(&self, fire: &Fire) -> bool {
        fire.job.action.is_check()
    }

    fn execute<'a>(
        &'a self,
        fire: &'a Fire,
        cx: &'a RunContext,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'a>> {
        Box::pin(fire.job.action.run(fire, cx))
    }
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Command(_) => "command",
            Action::Noop(_) => "noop",
            Action::Cleanup(_) => "cleanup",
            Action::HttpCheck(_) => "http_check",
            Action::TcpCheck(_) => "tcp_check",
            Action::Report(_) => "report",
            Action::Celery(_) => "celery",
            Action::Push(_) => "push",
            Action::Sql(_) => "sql",
            Action::SqlCheck(_) => "sql_check",
        }
    }

    /// For queue actions, the broker their messages go to.
    pub fn broker(&self) -> Option<&str> {
        match self {
            Action::Celery(c) => Some(&c.broker),
            Action::Push(p) => Some(&p.broker),
            _ => None,
        }
    }

    /// For a queue job, its message for `slot` (task id `id`, dispatched at `fired_at`) to
    /// `broker`, and what it does while the broker cannot take it; `None` for other actions.
    pub fn queue_message(
        &self,
        job: &str,
        id: String,
        slot: chrono::DateTime<chrono::Utc>,
        fired_at: chrono::DateTime<chrono::Utc>,
        broker: &crate::broker::BrokerConfig,
    ) -> Option<(crate::broker::QueueMessage, crate::broker::OnBrokerDown)> {
        match self {
            Action::Celery(c) => Some((c.message(job, id, slot, broker), c.on_broker_down)),
            Action::Push(p) => Some((p.message(job, id, slot, fired_at), p.on_broker_down)),
            _ => None,
        }
    }

    /// Whether the action is a status check (it records up/down and notifies on transitions).
    pub fn is_check(&self) -> bool {
        matches!(self, Action::HttpCheck(_) | Action::TcpCheck(_) | Action::SqlCheck(_))
    }

    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> RunResult {
        match self {
            Action::Command(c) => c.run(fire, cx).await,
            Action::Noop(n) => n.run(),
            Action::Cleanup(c) => c.run(fire, cx).await,
            Action::HttpCheck(h) => h.run(cx).await,
            Action::TcpCheck(t) => t.run(cx).await,
            Action::Report(r) => r.run(fire, cx).await,
            Action::Sql(s) => s.run(cx).await,
            Action::SqlCheck(s) => s.run(cx).await,
            // The runner hands queue fires to their broker's task, which sends and records them;
            // sending from here too would send and record them twice.
            Action::Celery(_) | Action::Push(_) => RunResult::failed("queue jobs are sent by their broker, not run"),
        }
    }
}
