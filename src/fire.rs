//! A fire: one run of one job for one scheduled slot.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::job::{FIRE_NAMESPACE, Job, fire_id};
use crate::status::JobStatus;

#[derive(Debug, Clone)]
pub struct Fire {
    pub job: Arc<Job>,
    /// The slot the schedule asked for.
    pub scheduled_at: DateTime<Utc>,
    /// When the loop dispatched it.
    pub fired_at: DateTime<Utc>,
    /// The job's live status, updated as the fire runs.
    pub status: Arc<JobStatus>,
    /// Set for a run asked for by hand (`POST /api/jobs/NAME/run`): its own id, so it is never
    /// mistaken for the scheduled slot at the same instant.
    pub manual: Option<Uuid>,
}

impl Fire {
    /// A scheduled fire of `job`'s `slot`, dispatched at `fired_at`.
    pub fn scheduled(job: Arc<Job>, status: Arc<JobStatus>, slot: DateTime<Utc>, fired_at: DateTime<Utc>) -> Fire {
        Fire { job, scheduled_at: slot, fired_at, status, manual: None }
    }

    /// A run asked for by hand at `now`.
    pub fn manual(job: Arc<Job>, status: Arc<JobStatus>, now: DateTime<Utc>) -> Fire {
        let key = format!("manual\n{}\n{}", job.name, now.timestamp_nanos_opt().unwrap_or_default());
        let id = Uuid::new_v5(&FIRE_NAMESPACE, key.as_bytes());
        Fire { job, scheduled_at: now, fired_at: now, status, manual: Some(id) }
    }

    /// Deterministic id of this job's slot (or the id of a manual run). Computed on demand:
    /// the loop never pays for it.
    pub fn id(&self) -> Uuid {
        self.manual.unwrap_or_else(|| fire_id(&self.job.name, self.scheduled_at))
    }
}
