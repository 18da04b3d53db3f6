//! The daemon's dispatcher: runs each fire's action as its own task.
//!
//! Instant actions (`noop`) complete inline: spawning a task for them would cost more than the
//! work. Everything else is spawned on a [`TaskTracker`], so shutdown can wait for running jobs
//! for the grace period and then kill what is left.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Dispatch;
use crate::fire::Fire;
use crate::jobs::{Outcome, RunContext};

#[derive(Debug, Clone)]
pub struct Runner {
    tracker: TaskTracker,
    cx: RunContext,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Self {
        Runner { tracker: TaskTracker::new(), cx: RunContext { kill: CancellationToken::new() } }
    }

    /// Jobs still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Kills running jobs now (a second Ctrl-C).
    pub fn kill_token(&self) -> CancellationToken {
        self.cx.kill.clone()
    }

    /// Waits up to `grace` for running jobs, then kills them.
    pub async fn shutdown(&self, grace: Duration) {
        self.tracker.close();
        if self.tracker.is_empty() {
            return;
        }
        tracing::info!("waiting up to {} for {} running job(s)", humantime::format_duration(grace), self.tracker.len());
        tokio::select! {
            () = self.tracker.wait() => return,
            () = tokio::time::sleep(grace) => {
                tracing::warn!("{} job(s) still running after the grace period; killing them", self.tracker.len());
            }
            () = self.cx.kill.cancelled() => {}
        }
        self.cx.kill.cancel();
        self.tracker.wait().await;
    }
}

impl Dispatch for Runner {
    fn dispatch(&self, fire: Fire) {
        let job = &fire.job;
        if job.action.is_instant() {
            tracing::debug!(job = %job.name, slot = %fire.scheduled_at, "fired");
            return;
        }
        tracing::info!(job = %job.name, slot = %fire.scheduled_at.with_timezone(&job.timezone), fire_id = %fire.id(), "fired");
        let cx = self.cx.clone();
        self.tracker.spawn(async move {
            let started = std::time::Instant::now();
            let outcome = fire.job.action.run(&fire, &cx).await;
            let took = started.elapsed();
            match outcome {
                Outcome::Success => tracing::debug!(job = %fire.job.name, ?took, "succeeded"),
                Outcome::Failure(e) => tracing::debug!(job = %fire.job.name, ?took, "failed: {e}"),
            }
        });
    }
}
