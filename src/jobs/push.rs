//! `action = "push"`: a plain JSON message onto a Redis list, for workers that read Redis
//! directly (`BRPOP` / `BLPOP` loops).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::broker::{OnBrokerDown, QueueMessage, Side};

#[derive(Debug, Clone)]
pub struct Push {
    pub broker: String,
    pub queue: String,
    pub payload: Value,
    pub side: Side,
    pub on_broker_down: OnBrokerDown,
}

impl Push {
    /// `{"job", "fire_id", "scheduled_at", "fired_at", "payload"}`.
    pub fn body(&self, job: &str, id: &str, slot: DateTime<Utc>, fired_at: DateTime<Utc>) -> String {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "job": job,
            "fire_id": id,
            "scheduled_at": at(slot),
            "fired_at": at(fired_at),
            "payload": self.payload,
        })
        .to_string()
    }

    pub fn message(&self, job: &str, id: String, slot: DateTime<Utc>, fired_at: DateTime<Utc>) -> QueueMessage {
        let payload = self.body(job, &id, slot, fired_at);
        QueueMessage {
            job: job.to_string(),
            fire_id: id,
            slot,
            key: self.queue.clone(),
            side: self.side,
            payload,
            expires_at: None,
            envelope: false,
        }
    }
}
