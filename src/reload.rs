//! Reloading the config while the daemon runs: on SIGHUP, and with `run --watch` when a config
//! file changes.
//!
//! A reload reads and validates every file first, off the timer loop. An invalid config is
//! kept out entirely: every error is logged, the running schedule stays as it was, systemd's
//! STATUS and `/healthz` say the reload failed, and `beatd_config_reloads_total{result="failure"}`
//! counts it. A valid one is handed to the loop, which applies it as a diff between two ticks
//! (see [`crate::scheduler::Scheduler::apply`]), so no fire of an unchanged job is lost or
//! doubled however often the config is reloaded.
//!
//! Jobs and notifiers reload; the rest of `[scheduler]` and `[api]` (the state folder, the
//! listen address, limits) is read at start only, and a change to it is logged as needing a
//! restart instead of being half-applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::{self, Config};
use crate::jobs::Services;
use crate::scheduler::Reload;
use crate::status::Board;
use crate::systemd::Systemd;

/// What triggered a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
}

/// Reloads the config into the running loop.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// The settings in effect (those read at start only are compared against it).
    running: Config,
    board: Arc<Board>,
    services: Arc<Services>,
    systemd: Arc<Systemd>,
    to_loop: mpsc::UnboundedSender<Reload>,
    /// The history writer, told each job's retention.
    history: crate::state::history::History,
}

impl Reloader {
    pub fn new(
        running: Config,
        board: Arc<Board>,
        services: Arc<Services>,
        systemd: Arc<Systemd>,
        to_loop: mpsc::UnboundedSender<Reload>,
        history: crate::state::history::History,
    ) -> Self {
        Reloader { path: running.path.clone(), running, board, services, systemd, to_loop, history }
    }

    /// The folders whose files make up the config: the main file's, and each include's.
    pub fn watched_folders(&self) -> Vec<PathBuf> {
        watched_folders(&self.running)
    }

    /// Whether a change to `path` concerns the config: the main file, or a file an include
    /// pattern matches (it may be new).
    pub fn concerns(&self, path: &Path) -> bool {
        if same_file(path, &self.path) || self.running.files.iter().any(|f| same_file(path, f)) {
            return true;
        }
        // Events may name files by absolute path: match against the absolute patterns too.
        let base = config::folder_of(&self.path);
        let bases = [Some(base.clone()), std::fs::canonicalize(&base).ok()];
        self.running.scheduler.include.iter().any(|pattern| {
            bases.iter().flatten().any(|b| {
                let full = config::resolve(b, pattern);
                glob::Pattern::new(&full.to_string_lossy()).is_ok_and(|p| p.matches_path(path))
            })
        })
    }

    /// Reads, validates and applies the config. Returns whether it was applied.
    pub async fn reload(&mut self, trigger: Trigger) -> bool {
        let why = match trigger {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "a config file changed",
        };
        tracing::info!("{why}: reloading {}", self.path.display());
        self.systemd.reloading();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .unwrap_or_else(|e| Err(config::diag::ConfigErrors::whole_file("reload", e.to_string())));
        let health = &self.board.health;
        let mut config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload: {e}");
                }
                let n = errors.0.len();
                tracing::error!(
                    "reload failed: {n} error{} in the config; the running schedule is unchanged",
                    if n == 1 { "" } else { "s" }
                );
                health.reload_failed.store(true, Ordering::Relaxed);
                self.board.metrics.reloads.get_or_create(&vec![("result".into(), "failure".into())]).inc();
                self.systemd.reloaded(&failed_status(n));
                return false;
            }
        };
        for change in restart_only_changes(&self.running, &config) {
            tracing::warn!("reload: {change} changed; that takes effect at the next restart");
        }
        self.services.notifications.set_notifiers(config.notifiers.clone());
        self.history.send(crate::state::history::Pending::retentions(&config.jobs));
        // The new job set, the diff and the timers' renumbering are worked out here, off the
        // timer loop, which then only applies them.
        let board = self.board.clone();
        let jobs = std::mem::take(&mut config.jobs);
        let prepared = match tokio::task::spawn_blocking(move || crate::scheduler::prepare(&board, jobs)).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!("reload: preparing the new jobs failed: {e}");
                return false;
            }
        };
        let (done, applied) = oneshot::channel();
        if self.to_loop.send(Reload { jobs: prepared, done }).is_err() {
            tracing::warn!("reload: the timer loop has stopped");
            return false;
        }
        let Ok(diff) = applied.await else {
            tracing::warn!("reload: the timer loop stopped before applying it");
            return false;
        };
        diff.log();
        if !diff.added.is_empty() {
            // Jobs paused through the API stay paused when a reload brings them back.
            match crate::state::paused(&config.scheduler.state_dir) {
                Ok(paused) => self.board.restore_paused(&paused, Some(&diff.added), "since before it was removed"),
                Err(e) => tracing::warn!("cannot read paused jobs: {e}"),
            }
        }
        health.reload_failed.store(false, Ordering::Relaxed);
        self.board.metrics.reloads.get_or_create(&vec![("result".into(), "success".into())]).inc();
        let n = self.board.jobs().jobs.len();
        crate::memory::give_back_freed();
        self.systemd.reloaded(&format!("reloaded: {n} job{}", if n == 1 { "" } else { "s" }));
        // Settings read at start only stay as they were, so later changes compare to those.
        let mut scheduler = self.running.scheduler.clone();
        scheduler.include = config.scheduler.include.clone();
        scheduler.timezone = config.scheduler.timezone;
        self.running =
            Config { scheduler, api: self.running.api.clone(), cluster: self.running.cluster.clone(), ..config };
        true
    }
}

/// STATUS= after a failed reload; the loop keeps prefixing it until a reload succeeds.
pub fn failed_status(errors: usize) -> String {
    format!(
        "reload failed ({errors} error{} in the config); running the previous one",
        if errors == 1 { "" } else { "s" }
    )
}

/// Names of the settings that differ and are read at start only.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.scheduler, &new.scheduler);
    let mut changed = Vec::new();
    if a.state_dir != b.state_dir {
        changed.push("[scheduler] state_dir");
    }
    if a.shutdown_grace != b.shutdown_grace {
        changed.push("[scheduler] shutdown_grace");
    }
    if a.max_running != b.max_running {
        changed.push("[scheduler] max_running");
    }
    if a.history_keep != b.history_keep {
        changed.push("[scheduler] history_keep");
    }
    if a.max_outbox != b.max_outbox {
        changed.push("[scheduler] max_outbox");
    }
    if old.brokers != new.brokers {
        changed.push("[brokers]");
    }
    if old.cluster != new.cluster {
        changed.push("[cluster]");
    }
    if old.databases != new.databases {
        changed.push("[databases]");
    }
    let api = |c: &Config| {
        c.api.as_ref().map(|a| {
            let limits = (a.allowed_hosts.clone(), a.max_connections);
            (a.listen.clone(), a.token_file.clone(), a.allow_unauthenticated, a.per_job_metrics, limits)
        })
    };
    if api(old) != api(new) {
        changed.push("[api]");
    }
    changed
}

fn watched_folders(c: &Config) -> Vec<PathBuf> {
    let base = config::folder_of(&c.path);
    let mut folders = vec![base.clone()];
    for pattern in &c.scheduler.include {
        let folder = config::include_folder(&base, pattern);
        let folder = if folder.as_os_str().is_empty() { PathBuf::from(".") } else { folder };
        if !folders.contains(&folder) {
            folders.push(folder);
        }
    }
    folders
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Quiet time after the last change before reloading: an editor's save is several events
/// (write to a temporary file, rename, chmod).
pub const SETTLE: Duration = Duration::from_millis(300);

/// Watches the config's folders (not recursively) and sends a unit on `changed` for every
/// event; the caller filters with [`Reloader::concerns`] and debounces.
pub fn watch(
    folders: &[PathBuf],
    changed: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        Ok(e) => {
            let _ = changed.send(e.paths);
        }
        Err(e) => tracing::warn!("config watch: {e}"),
    })?;
    for folder in folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
