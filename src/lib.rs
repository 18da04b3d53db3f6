//! beatd: a periodic scheduler daemon.
//!
//! Map of the crate, from the bottom up:
//! - [`schedule`]: cron and interval schedules; pure `next_after`; time-zone segment tables.
//! - [`job`]: the job model (what a job is, its outcomes, fire ids), below the parser;
//!   [`fire`]: one run of one job for one slot.
//! - [`clock`]: the one seam for wall-clock time (system timerfd, or a manual test clock).
//! - [`config`]: the TOML files, validated into [`config::Config`] with every error located.
//!   Only the CLI, the daemon's assembly and reloads use it.
//! - [`jobs`]: the actions a job runs, one file each; [`policy`]: timeouts, overlap, retries,
//!   jitter; [`nofollow`]: opening paths without following symbolic links.
//! - [`broker`]: queue jobs' messages to Redis and RabbitMQ, with the durable outbox.
//! - [`state`]: the embedded SQLite state: run history and the fire journal.
//! - [`notifications`]: webhooks on failure; [`http`]: the HTTP client they and checks share;
//!   [`tls`]: the CA and client certificate a broker or an HTTPS peer is configured with.
//! - [`databases`]: the databases `sql` jobs run on, with lazy pools.
//! - [`timers`]: next fires, grouped by the instant they are due; [`scheduler`]: the timer
//!   loop, and the runner that executes fires; [`runs`]: runs in progress by fire id, their
//!   progress and cancellation.
//! - [`status`]: live state of every job and of the loop; [`metrics`]: Prometheus.
//! - [`reload`]: re-reading the config on SIGHUP or when a file changes.
//! - [`cluster`]: replicas on one Redis: the lease, the per-tick fence, shared pause and runs.
//! - [`api`]: the HTTP API (axum); [`dashboard`]: the web pages on the same server; [`systemd`]: readiness, status and watchdog.
//! - [`daemon`]: all of the above assembled from a config and a clock.
//! - [`cli`]: the `beatd` command line; [`logging`] sets up `tracing`.
pub mod api;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod databases;
pub mod fire;
pub mod http;
pub mod import;
pub mod job;
pub mod jobs;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod nofollow;
pub mod notifications;
pub mod policy;
pub mod reload;
pub mod runs;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod status;
pub mod systemd;
pub mod timers;
pub mod tls;
