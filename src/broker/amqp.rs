//! The AMQP 0-9-1 transport (RabbitMQ), through lapin: one connection and one channel in
//! publisher-confirm mode per broker. A batch is published in full, then its confirms are
//! awaited together: one round trip's worth of waiting, not one per message.
//!
//! Messages are published on the default exchange with the queue as routing key, and
//! `mandatory`: a message no queue takes (no worker has declared it yet) comes back and counts
//! as not delivered, so it waits in the outbox instead of vanishing. A Celery message's kombu
//! envelope becomes the AMQP message Celery itself would publish: the raw JSON body, the task
//! headers as application headers, the properties as properties.

use std::time::Duration;

use base64::Engine;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;

use super::{BrokerUrl, Message};

/// The most connecting, or one batch's confirms, may take.
const DEADLINE: Duration = Duration::from_secs(15);
/// Messages published before their confirms are awaited.
const CHUNK: usize = 5_000;

pub struct Amqp {
    url: String,
    open: Option<(Connection, Channel)>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Amqp")
    }
}

impl Amqp {
    /// Connects lazily, at the first send.
    pub fn new(url: &BrokerUrl) -> Amqp {
        Amqp { url: url.secret().to_string(), open: None }
    }

    async fn channel(&mut self) -> Result<Channel, String> {
        if let Some((_, ch)) = &self.open {
            return Ok(ch.clone());
        }
        let connect = async {
            let conn =
                Connection::connect(&self.url, ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, ch))
        };
        let (conn, ch) =
            tokio::time::timeout(DEADLINE, connect).await.map_err(|_| "connect timed out".to_string())??;
        self.open = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// Publishes `messages` in order and waits for the broker's confirms. On error, returns
    /// how many messages at the start were confirmed; the connection is reopened next time.
    pub async fn push(&mut self, messages: &[&Message]) -> Result<(), (usize, String)> {
        let mut sent = 0;
        for chunk in messages.chunks(CHUNK) {
            let result = match self.channel().await {
                Ok(ch) => tokio::time::timeout(DEADLINE, publish(&ch, chunk))
                    .await
                    .unwrap_or_else(|_| Err((0, "no confirm within 15 s".into()))),
                Err(e) => Err((0, e)),
            };
            match result {
                Ok(()) => sent += chunk.len(),
                Err((n, e)) => {
                    if let Some((conn, _)) = self.open.take() {
                        let _ = conn.close(0, "beatd: reconnecting".into()).await;
                    }
                    return Err((sent + n, e));
                }
            }
        }
        Ok(())
    }
}

async fn publish(ch: &Channel, chunk: &[&Message]) -> Result<(), (usize, String)> {
    let mut confirms = Vec::with_capacity(chunk.len());
    for (i, m) in chunk.iter().enumerate() {
        let (body, properties) = if m.envelope { from_envelope(&m.payload) } else { plain(&m.payload) };
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = ch
            .basic_publish(ShortString::from(""), ShortString::from(m.key.as_str()), options, &body, properties)
            .await
            .map_err(|e| (i.min(confirms.len()), e.to_string()))?;
        confirms.push(confirm);
    }
    // Count the confirmed prefix: what follows a failure is sent again (at-least-once).
    for (i, (confirm, m)) in confirms.into_iter().zip(chunk).enumerate() {
        match confirm.await.map_err(|e| (i, e.to_string()))? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => {
                return Err((i, format!("no queue takes routing key \"{}\" (has a worker declared it?)", m.key)));
            }
            Confirmation::Nack(_) => return Err((i, "the broker refused the message (nack)".into())),
        }
    }
    Ok(())
}

fn plain(payload: &str) -> (Vec<u8>, BasicProperties) {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2);
    (payload.as_bytes().to_vec(), props)
}

/// The AMQP message for a kombu envelope (as built for Redis): body decoded, headers and
/// properties moved to where AMQP carries them.
pub fn from_envelope(payload: &str) -> (Vec<u8>, BasicProperties) {
    let env: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let body = env["body"].as_str().unwrap_or("");
    let body = if env["properties"]["body_encoding"] == "base64" {
        base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let p = &env["properties"];
    let s = |v: &Value| ShortString::from(v.as_str().unwrap_or(""));
    let mut props = BasicProperties::default()
        .with_content_type(s(&env["content-type"]))
        .with_content_encoding(s(&env["content-encoding"]))
        .with_delivery_mode(2)
        .with_priority(p["priority"].as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(0))
        .with_correlation_id(s(&p["correlation_id"]));
    if p["reply_to"].as_str().is_some_and(|r| !r.is_empty()) {
        props = props.with_reply_to(s(&p["reply_to"]));
    }
    if let Value::Object(h) = &env["headers"] {
        let mut table = FieldTable::default();
        for (k, v) in h {
            table.insert(ShortString::from(k.as_str()), amqp_value(v));
        }
        props = props.with_headers(table);
    }
    (body, props)
}

/// A JSON value as an AMQP field value, as kombu's amqp transport encodes Python values.
fn amqp_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => {
            AMQPValue::FieldArray(FieldArray::from(items.iter().map(amqp_value).collect::<Vec<_>>()))
        }
        Value::Object(o) => {
            let mut t = FieldTable::default();
            for (k, v) in o {
                t.insert(ShortString::from(k.as_str()), amqp_value(v));
            }
            AMQPValue::FieldTable(t)
        }
    }
}
