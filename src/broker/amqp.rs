//! The AMQP 0-9-1 transport (RabbitMQ), through lapin: one connection and one channel in
//! publisher-confirm mode per broker. A batch is published in full, then its confirms are
//! awaited together: one round trip's worth of waiting, not one per message.
//!
//! A message counts as delivered only when its own confirm arrives as an ack without a return.
//! Everything else is decided per message, never for the batch:
//! - **returned** (published `mandatory` and no queue is bound to its routing key, because no
//!   worker has declared the queue yet): it waits in the outbox, alone;
//! - **nacked**, or **no confirm** (the connection dropped, the channel closed, 15 s passed):
//!   it is sent again later, with the same task id;
//! - **too large** for the broker (headers that do not fit in one frame, or a body over
//!   RabbitMQ's `max_message_size`): it fails alone, with why, and is not retried. The frame
//!   limit is checked before publishing, since RabbitMQ answers an oversized header frame by
//!   closing the whole connection; the body limit is learnt from the broker's own refusal.
//!
//! A Celery message's kombu envelope becomes the AMQP message Celery itself would publish: the
//! raw JSON body, the task headers as application headers, the properties as properties, on
//! the default exchange with the queue as routing key.

use std::time::Duration;

use base64::Engine;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;

use super::{BrokerUrl, QueueMessage, Sent};

/// The most connecting, one batch's publishing, or its confirms may take.
const DEADLINE: Duration = Duration::from_secs(15);
/// Messages published before their confirms are awaited.
const CHUNK: usize = 5_000;
/// AMQP's reply code for a mandatory message no queue takes.
const NO_ROUTE: u16 = 312;

pub struct Amqp {
    uri: AMQPUri,
    /// A CA and client certificate (`amqps://`), read again at each new connection.
    tls: crate::tls::TlsFiles,
    open: Option<(Connection, Channel)>,
    /// The largest body the broker takes, once it has refused a larger one.
    max_body: Option<usize>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Amqp")
    }
}

impl Amqp {
    /// Connects lazily, at the first send.
    pub fn new(url: &BrokerUrl, tls: &crate::tls::TlsFiles) -> Result<Amqp, super::UrlError> {
        Ok(Amqp { uri: url.amqp_uri()?, tls: tls.clone(), open: None, max_body: None })
    }

    /// The open channel, or a new connection and channel if there is none or it was closed
    /// (by the broker, or by a network failure). Also returns the negotiated frame size.
    async fn channel(&mut self) -> Result<(Channel, usize), String> {
        if let Some((conn, ch)) = &self.open {
            if conn.status().connected() && ch.status().connected() {
                return Ok((ch.clone(), frame_max(conn)));
            }
            self.close().await;
        }
        let tls = self.tls.read()?;
        let connect = async {
            let conn = if self.tls.is_empty() {
                Connection::connect_uri(self.uri.clone(), ConnectionProperties::default()).await
            } else {
                // The CA file's certificates are trusted besides the system's.
                let config = OwnedTLSConfig {
                    identity: tls.client.map(|(pem, key)| OwnedIdentity::PKCS8 { pem, key }),
                    cert_chain: tls.ca.map(|ca| String::from_utf8_lossy(&ca).into_owned()),
                };
                let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
                Connection::connect_uri_with_config(self.uri.clone(), ConnectionProperties::default(), config, runtime)
                    .await
            }
            .map_err(|e| e.to_string())?;
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, ch))
        };
        let (conn, ch) =
            tokio::time::timeout(DEADLINE, connect).await.map_err(|_| "connect timed out".to_string())??;
        let frame = frame_max(&conn);
        self.open = Some((conn, ch.clone()));
        Ok((ch, frame))
    }

    async fn close(&mut self) {
        if let Some((conn, _)) = self.open.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(0, "beatd: reconnecting".into())).await;
        }
    }

    /// Publishes `messages` in order and waits for the broker's confirms: one outcome per
    /// message. After a connection failure the connection is reopened at the next send.
    pub async fn push(&mut self, messages: &[&QueueMessage]) -> Vec<Sent> {
        let mut out: Vec<Sent> = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(CHUNK) {
            let (ch, frame_max) = match self.channel().await {
                Ok(open) => open,
                Err(e) => {
                    out.resize(messages.len(), Sent::Retry(e));
                    return out;
                }
            };
            let (sent, broken) = self.publish(&ch, frame_max, chunk).await;
            out.extend(sent);
            if let Some(e) = broken {
                self.close().await;
                out.resize(messages.len(), Sent::Retry(e));
                return out;
            }
        }
        out
    }

    /// One chunk: outcomes for every message, and the reason the connection must be dropped.
    async fn publish(
        &mut self,
        ch: &Channel,
        frame_max: usize,
        chunk: &[&QueueMessage],
    ) -> (Vec<Sent>, Option<String>) {
        let mut out: Vec<Option<Sent>> = vec![None; chunk.len()];
        let mut broken = None;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut bodies = Vec::with_capacity(chunk.len());
        for (i, m) in chunk.iter().enumerate() {
            let (body, properties) = if m.envelope { from_envelope(&m.payload) } else { plain(&m.payload) };
            match self.too_large(&body, &properties, frame_max) {
                Some(why) => out[i] = Some(Sent::Refused(why)),
                None => bodies.push((i, body, properties)),
            }
        }
        // Published together, in order: lapin queues each message's frames at its first poll,
        // so the chunk goes out without a wait per message.
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let publishes = bodies.iter().map(|(i, body, properties)| {
            let key = ShortString::from(chunk[*i].key.as_str());
            let publish = ch.basic_publish(ShortString::from(""), key, options, body, properties.clone());
            async move { (*i, body.len(), publish.await) }
        });
        let mut pending = Vec::with_capacity(bodies.len());
        match tokio::time::timeout_at(deadline, futures_util::future::join_all(publishes)).await {
            Ok(published) => {
                for (i, len, result) in published {
                    match result {
                        Ok(confirm) => pending.push((i, confirm, len)),
                        Err(e) => {
                            broken.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
            Err(_) => broken = Some(format!("could not publish within {} s", DEADLINE.as_secs())),
        }
        for (i, confirm, len) in pending {
            out[i] = Some(match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Sent::Delivered,
                Ok(Ok(Confirmation::Ack(Some(returned)))) if returned.reply_code == NO_ROUTE => Sent::NoRoute,
                Ok(Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(_))) => Sent::Nacked,
                Ok(Err(e)) => {
                    let e = e.to_string();
                    match refused_size(&e) {
                        // RabbitMQ closed the channel over this very message: it alone fails.
                        Some((size, max)) if size == len => {
                            self.max_body = Some(max);
                            Sent::Refused(format!(
                                "the message body is {len} bytes, more than the broker's max_message_size of {max}"
                            ))
                        }
                        _ => {
                            broken.get_or_insert_with(|| e.clone());
                            Sent::Retry(format!("no confirm: {e}"))
                        }
                    }
                }
                Err(_) => {
                    let e = format!("no confirm within {} s", DEADLINE.as_secs());
                    broken.get_or_insert_with(|| e.clone());
                    Sent::Retry(e)
                }
            });
        }
        // Messages never published (after a failure) are retried.
        let rest = broken.clone().unwrap_or_else(|| "not published".into());
        (out.into_iter().map(|o| o.unwrap_or_else(|| Sent::Retry(rest.clone()))).collect(), broken)
    }

    /// Why the broker could never take this message, if so.
    fn too_large(&self, body: &[u8], properties: &BasicProperties, frame_max: usize) -> Option<String> {
        if let Some(max) = self.max_body
            && body.len() > max
        {
            return Some(format!(
                "the message body is {} bytes, more than the broker's max_message_size of {max}",
                body.len()
            ));
        }
        let header = header_frame_size(body.len(), properties);
        (header > frame_max).then(|| {
            format!(
                "the message's headers take {header} bytes, more than fits in one AMQP frame ({frame_max} bytes, the broker's frame_max)"
            )
        })
    }
}

fn frame_max(conn: &Connection) -> usize {
    match conn.configuration().frame_max() {
        0 => usize::MAX,
        n => n as usize,
    }
}

/// The size of the content header frame lapin sends for a message: AMQP cannot split it, so
/// it must fit in the negotiated frame size.
fn header_frame_size(body_len: usize, properties: &BasicProperties) -> usize {
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame};
    let header = AMQPContentHeader { class_id: 60, body_size: body_len as u64, properties: properties.clone() };
    let frame = AMQPFrame::Header(1, header);
    cookie_factory::gen_simple(gen_frame(&frame), Vec::new()).map_or(usize::MAX, |v| v.len())
}

/// RabbitMQ's refusal of a body over `max_message_size`, as (size, max):
/// `PRECONDITION_FAILED - message size 20000000 is larger than configured max size 16777216`.
fn refused_size(error: &str) -> Option<(usize, usize)> {
    let number = |text: &str, after: &str| -> Option<usize> {
        let rest = &text[text.find(after)? + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((number(error, "message size ")?, number(error, "max size ")?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_frame_size_counts_every_header_byte() {
        let (_, small) = plain("{}");
        let base = header_frame_size(2, &small);
        assert!(base < 100, "{base}");
        let mut table = FieldTable::default();
        table.insert("big".into(), AMQPValue::LongString(LongString::from(vec![b'x'; 200_000])));
        let big = small.with_headers(table);
        let size = header_frame_size(2, &big);
        assert!(size > 200_000 && size < 200_100, "{size}");
    }

    #[test]
    fn rabbitmqs_size_refusal_is_read() {
        let e = "protocol error: AMQP soft error: PRECONDITION-FAILED: message size 300123 is larger than configured max size 262144";
        assert_eq!(refused_size(e), Some((300_123, 262_144)));
        assert_eq!(refused_size("connection reset by peer"), None);
    }
}
