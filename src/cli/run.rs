//! `beatd run`: the daemon in the foreground.
//!
//! SIGINT or SIGTERM stops new fires; running jobs get `shutdown_grace` to finish and are then
//! killed; the process exits 0. A second signal kills running jobs at once. SIGHUP (and, with
//! `--watch`, a change to a config file) reloads the config: see [`crate::reload`].

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::{ConfigArg, Failed, fail};
use crate::api::ApiState;
use crate::api::auth::Guard;
use crate::api::server::{self, Listener};
use crate::broker::{self, delivery::Brokers};
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::{Actions, Services};
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Trigger};
use crate::scheduler::Scheduler;
use crate::scheduler::runner::Runner;
use crate::state::journal::Journal;
use crate::state::{
    self,
    history::{History, Writer},
};
use crate::status::Board;
use crate::systemd::Systemd;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (overrides RUST_LOG), e.g. `debug` or `beatd=debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Also reload when a config file (the main one or a drop-in) changes.
    #[arg(long)]
    watch: bool,
}

pub fn run(args: Args) -> Result<(), Failed> {
    logging::init(args.log_format, args.log_level.as_deref()).map_err(fail)?;
    let config = args.config.load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("beatd")
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    let sched = &config.scheduler;
    // Before the history writer starts: runs a crash cut short are recorded first.
    let requeue = |job: &str, slot| {
        let job = config.jobs.iter().find(|j| &*j.name == job)?;
        let broker = config.brokers.get(job.action.broker()?)?;
        broker::delivery::message_for(job, slot, broker)
    };
    let unfinished = state::unfinished(&sched.state_dir).map_err(fail)?;
    let interrupted = broker::outbox::requeue(&sched.state_dir, unfinished, &requeue).map_err(fail)?;
    state::record_interrupted(&sched.state_dir, &interrupted, Clock::System.now()).map_err(fail)?;
    state::forget_unfinished(&sched.state_dir).map_err(fail)?;
    let (history, writer) = Writer::start(&sched.state_dir, sched.history_keep, Clock::System).map_err(fail)?;
    let result = runtime.block_on(serve(config, history, args.watch));
    // Every sender is gone once `serve` returns: the writer flushes and stops.
    writer.finish();
    result
}

async fn serve(config: Config, history: History, watch: bool) -> Result<(), Failed> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| fail(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| fail(format!("cannot handle SIGINT: {e}")))?;
    let hup = signal(SignalKind::hangup()).map_err(|e| fail(format!("cannot handle SIGHUP: {e}")))?;
    let sched = &config.scheduler;
    let per_job = config.api.as_ref().is_none_or(|a| a.per_job_metrics);
    let board = Board::new(config.jobs.clone(), Metrics::new(per_job));
    let services = Services::new(Clock::System, sched.state_dir.clone(), config.notifiers.clone());
    let shared = broker::delivery::Shared {
        history: history.clone(),
        clock: Clock::System,
        max_outbox: sched.max_outbox,
        waiting: board.metrics.outbox.clone(),
        dropped: board.metrics.outbox_dropped.clone(),
    };
    let brokers = Brokers::start(&config.brokers, &sched.state_dir, shared).map_err(fail)?;
    let services = Arc::new(services);
    let runner = Runner::with_brokers(Actions, services.clone(), history, sched.max_running, brokers);
    let grace = sched.shutdown_grace;
    // Paused jobs stay paused across restarts.
    match state::paused(&sched.state_dir) {
        Ok(paused) => board.restore_paused(&paused, None, "since before this start"),
        Err(e) => tracing::warn!("cannot read paused jobs: {e}"),
    }
    let api_stop = CancellationToken::new();
    let api = match &config.api {
        Some(api) => {
            let token = crate::api::auth::token_at_start(api, &sched.state_dir).map_err(fail)?;
            let listener = Listener::bind(&api.listen).await.map_err(fail)?;
            let state = ApiState {
                board: board.clone(),
                runner: runner.clone(),
                clock: Clock::System,
                state_dir: sched.state_dir.clone(),
                guard: Arc::new(Guard::new(token, api)),
            };
            let cap = server::connection_cap(api.max_connections);
            tracing::info!("HTTP API on {} (at most {cap} connections)", api.listen);
            Some(tokio::spawn(crate::api::serve(listener, state, cap, api_stop.clone())))
        }
        None => None,
    };
    let journal = Journal::open(&sched.state_dir).map_err(fail)?;
    let systemd = Arc::new(Systemd::from_env());
    let (reloads, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut scheduler = Scheduler::with_board(board.clone(), Clock::System, runner.clone())
        .with_journal(journal)
        .with_reloads(reload_rx);
    if systemd.is_active() {
        let systemd = systemd.clone();
        let board = board.clone();
        scheduler = scheduler.with_status_line(Box::new(move |line| {
            if board.health.reload_failed.load(std::sync::atomic::Ordering::Relaxed) {
                systemd.status(&format!("reload failed, previous config running; {line}"));
            } else {
                systemd.status(line);
            }
        }));
    }
    if let Some(interval) = systemd.watchdog_interval() {
        tracing::info!("systemd watchdog: pinging every {}", humantime::format_duration(interval));
        scheduler = scheduler.with_watchdog(interval, Box::new(Systemd::watchdog_ping));
    }
    // Config loaded, state opened, API listening: ready.
    let summary = scheduler.summary();
    systemd.ready(&summary);
    tracing::info!("beatd started from {}: {summary}", config.path.display());
    let reloader = Reloader::new(config, board, services.clone(), systemd.clone(), reloads);
    let reloading = tokio::spawn(reload_on_signal(reloader, hup, watch));

    let stop = CancellationToken::new();
    let kill = runner.kill_token();
    let stopping = systemd.clone();
    let signals = tokio::spawn({
        let stop = stop.clone();
        async move {
            for n in 0.. {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if n == 0 {
                    tracing::info!("{name}: stopping; no new fires");
                    stopping.stopping();
                    stop.cancel();
                } else {
                    tracing::warn!("{name} again: killing running jobs now");
                    kill.cancel();
                }
            }
        }
    });
    scheduler.run(stop).await;
    runner.shutdown(grace).await;
    api_stop.cancel();
    if let Some(api) = api {
        let _ = api.await;
    }
    signals.abort();
    reloading.abort();
    drop(runner);
    tracing::info!("beatd stopped");
    Ok(())
}

/// Reloads on each SIGHUP and, with `watch`, once a changed config file has settled.
async fn reload_on_signal(mut reloader: Reloader, mut hup: tokio::signal::unix::Signal, watch: bool) {
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let mut watching = None;
    let mut folders = Vec::new();
    loop {
        if watch && folders != reloader.watched_folders() {
            folders = reloader.watched_folders();
            watching = match reload::watch(&folders, changed_tx.clone()) {
                Ok(w) => {
                    let shown: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
                    tracing::info!("watching {} for config changes", shown.join(", "));
                    Some(w)
                }
                Err(e) => {
                    tracing::error!("cannot watch the config for changes ({e}); SIGHUP still reloads");
                    None
                }
            };
        }
        let trigger = tokio::select! {
            s = hup.recv() => match s {
                Some(()) => Trigger::Signal,
                None => return,
            },
            Some(paths) = changed.recv(), if watching.is_some() => {
                if !paths.iter().any(|p| reloader.concerns(p)) {
                    continue;
                }
                // Wait until the files are quiet: one save is several events.
                while let Ok(Some(_)) = tokio::time::timeout(reload::SETTLE, changed.recv()).await {}
                Trigger::FileChanged
            }
        };
        reloader.reload(trigger).await;
    }
}
