//! A fire: one run of one job for one scheduled slot.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::config::Job;

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
}

impl Fire {
    /// Deterministic id of this job's slot. Computed on demand: the loop never pays for it.
    pub fn id(&self) -> Uuid {
        fire_id(&self.job.name, self.scheduled_at)
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
