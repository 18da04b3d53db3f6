//! beatd: a periodic scheduler daemon.
//!
//! Map of the crate:
//! - [`schedule`]: cron and interval schedules, pure `next_after`, time-zone segment tables.
pub mod schedule;
