//! A fire: one run of one job for one scheduled slot.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::config::Job;
use crate::status::JobStatus;

/// Namespace for fire ids: UUIDv5 of the job name and the slot, so that the same slot of the
/// same job always gets the same id (on a retry, after a restart, on another replica).
const FIRE_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3b1c_5e3d_4f4e_9b7a_2c0d_be47_d000);

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

pub fn fire_id(job: &str, slot: DateTime<Utc>) -> Uuid {
    let key = format!("{job}\n{}", slot.to_rfc3339_opts(SecondsFormat::Millis, true));
    Uuid::new_v5(&FIRE_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_ids_are_deterministic_per_job_and_slot() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        assert_eq!(fire_id("a", t), fire_id("a", t));
        assert_ne!(fire_id("a", t), fire_id("b", t));
        assert_ne!(fire_id("a", t), fire_id("a", t + chrono::Duration::seconds(1)));
        assert_eq!(fire_id("a", t).get_version_num(), 5);
    }
}
