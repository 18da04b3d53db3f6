//! The daemon, assembled: state, brokers, runner, scheduler, API, reloads and systemd, wired
//! together from a [`Config`] and a [`Clock`].
//!
//! The CLI (`beatd run`) is only what a process needs around it: logging, signals and exit
//! codes. Everything else is here, as a library function, so tests can start a whole daemon
//! in-process on the manual clock and run a simulated hour in milliseconds.
//!
//! Start-up order matters: fires a crash cut short are dealt with first (queue jobs' messages
//! back to the outbox, the rest recorded as interrupted), then the history writer starts, then
//! the brokers, the runner and the API; the scheduler reads the journal to catch up missed
//! slots; systemd hears READY=1 last, once all of that is listening. Shutdown runs the other
//! way: no new fires, running jobs get `shutdown_grace`, the brokers send or store what they
//! hold, the API closes, and the history writer flushes.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Guard;
use crate::api::server::{self, Listener};
use crate::api::{ApiError, ApiState};
use crate::broker::delivery::{self, Brokers};
use crate::broker::{StartError, outbox};
use crate::clock::Clock;
use crate::cluster::member::{self, Member, Node, Role, RunNow, View};
use crate::config::Config;
use crate::fire::Fire;
use crate::job::HistoryMode;
use crate::jobs::{Actions, Services};
use crate::metrics::Metrics;
use crate::reload::{self, Reloader, Trigger};
use crate::scheduler::Dispatch;
use crate::scheduler::Scheduler;
use crate::scheduler::runner::Runner;
use crate::state::history::{History, Pending, Writer};
use crate::state::journal::Journal;
use crate::state::{self, StateError};
use crate::status::Board;
use crate::systemd::Systemd;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Brokers(#[from] StartError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("[cluster] redis: {0}")]
    Cluster(#[from] redis::RedisError),
}

/// How a daemon is started besides its config.
#[derive(Debug)]
pub struct Options {
    pub clock: Clock,
    pub systemd: Arc<Systemd>,
    /// Also reload when a config file changes (`beatd run --watch`).
    pub watch: bool,
}

impl Options {
    /// The system clock, and systemd as the environment says.
    pub fn system(watch: bool) -> Options {
        Options { clock: Clock::System, systemd: Arc::new(Systemd::from_env()), watch }
    }

    /// A test's clock, no systemd, no file watching.
    pub fn with_clock(clock: Clock) -> Options {
        Options { clock, systemd: Arc::new(Systemd::default()), watch: false }
    }
}

/// A request to reload, and where to say whether it was applied.
type ReloadRequest = (Trigger, Option<oneshot::Sender<bool>>);

/// A running daemon. Stop it with [`Daemon::stop`] and then [`Daemon::wait`].
#[derive(Debug)]
pub struct Daemon {
    board: Arc<Board>,
    api: ApiState,
    stop: CancellationToken,
    kill: CancellationToken,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
    /// Resolves to whether every fire dispatched ended and was handed on (see
    /// [`Runner::shutdown`]).
    main: JoinHandle<bool>,
    writer: Writer,
    state_dir: PathBuf,
}

impl Daemon {
    /// Starts the daemon for `config`; returns once it is ready (the API listening, systemd
    /// told READY=1).
    pub async fn start(mut config: Config, options: Options) -> Result<Daemon, DaemonError> {
        crate::tls::install_crypto_provider();
        let Options { clock, systemd, watch } = options;
        let sched = config.scheduler.clone();
        // Without `[api]` nothing can read the metrics: no per-job series (1.4 kB a job).
        let per_job = config.api.as_ref().is_some_and(|a| a.per_job_metrics);
        // The jobs move to the board: a second copy would double their memory for the
        // daemon's whole life (the reloader keeps the rest of the config, without them).
        let retentions = Pending::retentions(&config.jobs);
        let board = Board::new(std::mem::take(&mut config.jobs), Metrics::new(per_job));
        state::prepare_dir(&sched.state_dir)?;
        let history_reset =
            state::damage::check_at_start(&sched.state_dir, &board.metrics.state_damaged).map_err(StateError::from)?;
        if history_reset {
            // The journal's fires in flight cannot be told apart from finished ones without
            // the history: record none as interrupted and send no queue message again.
            state::forget_unfinished(&sched.state_dir)?;
        } else {
            recover(&config, &board, &clock)?;
            state::move_paused_to_journal(&sched.state_dir)?;
        }
        let (history, writer) =
            Writer::start(&sched.state_dir, sched.history_keep, clock.clone(), board.state.clone())?;
        history.send(retentions);
        let services = Arc::new(
            Services::new(clock.clone(), sched.state_dir.clone(), config.notifiers.clone())
                .with_databases(config.databases.clone()),
        );
        let reload_history = history.clone();
        let brokers = start_brokers(&config, &board, &history, &clock)?;
        let runner = Runner::with_brokers(Actions, services.clone(), history, sched.max_running, brokers);
        // Paused jobs stay paused across restarts.
        match state::paused(&sched.state_dir) {
            Ok(paused) => board.restore_paused(&paused, None, "since before this start"),
            Err(StateError::Missing(_)) => {}
            Err(e) => tracing::warn!("cannot read paused jobs: {e}"),
        }
        let cluster = match &config.cluster {
            Some(settings) => {
                let run_now = {
                    let (board, runner) = (board.clone(), runner.clone());
                    RunNow(Box::new(move |job: &str, at| match board.get(job) {
                        Some(e) if e.job.enabled => {
                            let fire = Fire::manual(e.job.clone(), e.status.clone(), at);
                            tracing::info!(job, fire_id = %fire.id(), "running now, as asked on another node");
                            runner.dispatch(fire);
                            runner.end_tick();
                        }
                        _ => tracing::warn!(job, "a run was asked for a job this node does not run"),
                    }))
                };
                Some(Node::new(settings, board.metrics.cluster(), board.clone(), run_now)?)
            }
            None => None,
        };
        let api_stop = CancellationToken::new();
        let token = match &config.api {
            Some(api) => crate::api::auth::token_at_start(api, &sched.state_dir)?,
            None => None,
        };
        let api = ApiState {
            board: board.clone(),
            runner: runner.clone(),
            clock: clock.clone(),
            state_dir: sched.state_dir.clone(),
            guard: Arc::new(match &config.api {
                Some(api) => Guard::new(token, api),
                None => Guard::open(),
            }),
            cluster: cluster.clone(),
            dashboard: config.api.as_ref().is_some_and(|a| a.dashboard),
            rates: Default::default(),
        };
        let serving = match &config.api {
            Some(settings) => {
                let listener = Listener::bind(&settings.listen).await?;
                let cap = server::connection_cap(settings.max_connections);
                tracing::info!("HTTP API on {} (at most {cap} connections)", settings.listen);
                Some(tokio::spawn(crate::api::serve(listener, api.clone(), cap, api_stop.clone())))
            }
            None => None,
        };
        let journal = Journal::open(&sched.state_dir)?;
        let (to_loop, from_reloader) = mpsc::unbounded_channel();
        let scheduler = Scheduler::with_board(board.clone(), clock, runner.clone())
            .with_journal(journal)
            .with_reloads(from_reloader);
        let keeper_stop = CancellationToken::new();
        let (scheduler, keeper) = match &cluster {
            Some(node) => {
                tracing::info!(
                    "cluster \"{}\" on {}: this node is {}; lease {}",
                    node.cluster.name,
                    redacted(&node.cluster.redis),
                    node.name,
                    humantime::format_duration(node.cluster.lease)
                );
                let keeper = tokio::spawn(member::keep(node.clone(), keeper_stop.clone()));
                (scheduler.with_cluster(Member::new(node.clone())), Some(keeper))
            }
            None => (scheduler, None),
        };
        let scheduler = with_systemd(scheduler, &systemd, &board, cluster.clone());
        // Config loaded, state opened, API listening: ready.
        let summary = scheduler.summary();
        crate::memory::give_back_freed();
        systemd.ready(&summary);
        tracing::info!("beatd started from {}: {summary}", config.path.display());
        let (reloads, requests) = mpsc::unbounded_channel();
        let reloader = Reloader::new(config, board.clone(), services, systemd.clone(), to_loop, reload_history);
        let reloading = tokio::spawn(reload_on_request(reloader, requests, watch));
        let stop = CancellationToken::new();
        let kill = runner.kill_token();
        let main = tokio::spawn({
            let (stop, runner) = (stop.clone(), runner);
            async move {
                scheduler.run(stop).await;
                // No new fires from here: hand the lease over at once.
                keeper_stop.cancel();
                if let Some(keeper) = keeper {
                    let _ = keeper.await;
                }
                systemd.stopping();
                let drained = runner.shutdown(sched.shutdown_grace).await;
                api_stop.cancel();
                if let Some(serving) = serving {
                    let _ = serving.await;
                }
                // The reloader holds a history sender: wait until it is gone, so the writer can finish.
                reloading.abort();
                let _ = reloading.await;
                drained
            }
        });
        Ok(Daemon { board, api, stop, kill, reloads, main, writer, state_dir: sched.state_dir.clone() })
    }

    /// The live jobs, health and metrics.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The HTTP API as it is served, without a socket: for in-process requests.
    pub fn api(&self) -> axum::Router {
        crate::api::router(self.api.clone())
    }

    /// What stops, kills and reloads this daemon from elsewhere (a signal handler).
    pub fn handle(&self) -> Handle {
        Handle { stop: self.stop.clone(), kill: self.kill.clone(), reloads: self.reloads.clone() }
    }

    /// Reloads the config (as SIGHUP does); resolves to whether it was applied.
    pub async fn reload(&self) -> bool {
        self.handle().reload().await
    }

    /// No new fires; running jobs get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the daemon has stopped and its history is written.
    pub async fn wait(self) {
        let Daemon { main, writer, api, reloads, board, state_dir, .. } = self;
        let drained = main.await.unwrap_or(false);
        // Every history sender is gone with these: the writer flushes and stops.
        drop((api, reloads, board));
        let written = tokio::task::spawn_blocking(move || writer.finish()).await.unwrap_or(false);
        // Every fire dispatched has ended and is written (or counted, or left out by its
        // job's `history`), or its message is sent or in the outbox: the journal's lists of
        // fires in flight are settled. Left in place, the next start would check them against
        // the history, where jobs with `history = "off"` or `"failures"` write no success,
        // and take them for fires a crash cut short: resent, or recorded as interrupted.
        if drained && written {
            if let Err(e) = state::forget_unfinished(&state_dir) {
                tracing::warn!("cannot clear the fire journal's fires in flight: {e}");
            }
        } else {
            tracing::warn!("stopped with fires not settled: the next start checks them");
        }
        tracing::info!("beatd stopped");
    }
}

/// Stops, kills and reloads a running daemon; cloned into signal handlers.
#[derive(Debug, Clone)]
pub struct Handle {
    stop: CancellationToken,
    kill: CancellationToken,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
}

impl Handle {
    /// No new fires; running jobs get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Running jobs are killed at once (a second SIGTERM).
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Asks for a reload (as SIGHUP does) without waiting for it.
    pub fn reload_soon(&self) {
        let _ = self.reloads.send((Trigger::Signal, None));
    }

    /// Reloads the config; resolves to whether it was applied.
    pub async fn reload(&self) -> bool {
        let (done, applied) = oneshot::channel();
        if self.reloads.send((Trigger::Signal, Some(done))).is_err() {
            return false;
        }
        applied.await.unwrap_or(false)
    }
}

/// Deals with fires a crash cut short, before the history writer starts: queue jobs' messages
/// go back to the outbox, the other fires are recorded as interrupted.
fn recover(config: &Config, board: &Board, clock: &Clock) -> Result<(), StateError> {
    let dir = &config.scheduler.state_dir;
    let jobs = board.jobs();
    let requeue = |job: &str, slot| {
        let job = &jobs.get(job)?.job;
        let broker = config.brokers.get(job.action.broker()?)?;
        delivery::message_for(job, slot, broker)
    };
    let unfinished = state::unfinished(dir)?;
    let mut interrupted = outbox::requeue(dir, unfinished, &requeue)?;
    // A job with `history = "off"` keeps no run, not even this one.
    interrupted.retain(|(job, _)| jobs.get(job).is_none_or(|e| e.job.history.mode != HistoryMode::Off));
    state::record_interrupted(dir, &interrupted, clock.now())?;
    state::forget_unfinished(dir)
}

fn start_brokers(config: &Config, board: &Board, history: &History, clock: &Clock) -> Result<Brokers, StartError> {
    let shared = delivery::Shared {
        history: history.clone(),
        clock: clock.clone(),
        max_outbox: config.scheduler.max_outbox,
        waiting: board.metrics.outbox.clone(),
        dropped: board.metrics.outbox_dropped.clone(),
    };
    Brokers::start(&config.brokers, &config.scheduler.state_dir, shared)
}

/// The scheduler reporting its status line to systemd and pinging its watchdog, when systemd
/// is listening.
fn with_systemd(
    mut scheduler: Scheduler<Runner>,
    systemd: &Arc<Systemd>,
    board: &Arc<Board>,
    cluster: Option<Arc<Node>>,
) -> Scheduler<Runner> {
    if systemd.is_active() {
        let (systemd, board) = (systemd.clone(), board.clone());
        scheduler = scheduler.with_status_line(Box::new(move |line| {
            let role = cluster.as_ref().map(|node| match node.view() {
                View { role: Role::Leader, .. } => "leader; ".to_string(),
                View { leader: Some(leader), .. } => format!("follower of {leader}; "),
                View { leader: None, .. } => "follower, no leader; ".to_string(),
            });
            let role = role.unwrap_or_default();
            if board.health.reload_failed.load(std::sync::atomic::Ordering::Relaxed) {
                systemd.status(&format!("{role}reload failed, previous config running; {line}"));
            } else {
                systemd.status(&format!("{role}{line}"));
            }
        }));
    }
    if let Some(interval) = systemd.watchdog_interval() {
        tracing::info!("systemd watchdog: pinging every {}", humantime::format_duration(interval));
        scheduler = scheduler.with_watchdog(interval, Box::new(Systemd::watchdog_ping));
    }
    scheduler
}

/// A Redis URL for logs: without its password.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Reloads on each request (SIGHUP) and, with `watch`, once a changed config file has settled.
async fn reload_on_request(mut reloader: Reloader, mut requests: mpsc::UnboundedReceiver<ReloadRequest>, watch: bool) {
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
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
        let (trigger, done) = tokio::select! {
            r = requests.recv() => match r {
                Some(request) => request,
                None => return,
            },
            Some(paths) = changed.recv(), if watching.is_some() => {
                if !paths.iter().any(|p| reloader.concerns(p)) {
                    continue;
                }
                // Wait until the files are quiet: one save is several events.
                while let Ok(Some(_)) = tokio::time::timeout(reload::SETTLE, changed.recv()).await {}
                (Trigger::FileChanged, None)
            }
        };
        let applied = reloader.reload(trigger).await;
        if let Some(done) = done {
            let _ = done.send(applied);
        }
    }
}
