//! beatd: a periodic scheduler daemon.
//!
//! Map of the crate:
//! - [`schedule`]: cron and interval schedules; pure `next_after`; time-zone segment tables.
//! - [`config`]: the TOML file, validated into [`config::Config`] with every error located.
//! - [`jobs`]: the actions a job runs, one file each.
//! - [`broker`]: queue jobs' messages to Redis, with the durable outbox.
//! - [`fire`]: one run of one job for one slot, and its deterministic id.
//! - [`clock`]: the one seam for wall-clock time (system timerfd, or a manual test clock).
//! - [`timers`]: the min-heap of next fires.
//! - [`scheduler`]: the timer loop, and the runner that executes fires.
//! - [`state`]: the embedded SQLite state: run history and the fire journal.
//! - [`reload`]: re-reading the config on SIGHUP or when a file changes.
//! - [`policy`]: timeouts, overlap, retries and jitter; [`notify`]: webhooks.
//! - [`status`]: live state of every job and of the loop; [`metrics`]: Prometheus.
//! - [`api`]: the HTTP API (axum).
//! - [`systemd`]: sd_notify readiness, status and watchdog.
//! - [`cli`]: the `beatd` command line; [`logging`] sets up `tracing`.
pub mod api;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod fire;
pub mod http;
pub mod job;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod nofollow;
pub mod notifications;
pub mod policy;
pub mod reload;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod status;
pub mod systemd;
pub mod timers;
