//! Brokers: where queue jobs (`celery`, `push`) send their messages instead of running
//! something themselves.
//!
//! Each `[brokers.NAME]` gets one delivery task ([`delivery`]) that owns the connection. The
//! runner hands it fires and never waits: the task takes whatever has queued up (a tick's burst
//! arrives together) and sends it in one round trip. A batch that cannot be delivered goes to
//! the durable outbox ([`outbox`]), which is retried with backoff, in slot order, and survives
//! restarts; delivery is at-least-once, and a re-sent fire carries the same deterministic id.

pub mod amqp;
pub mod delivery;
pub mod outbox;
pub mod redis;

use std::collections::HashMap;
use std::fmt;

use crate::config::diag::Diags;
use crate::config::table::Table;

pub const KEYS: &[&str] = &["url"];

/// Which protocol a broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    /// AMQP 0-9-1: RabbitMQ.
    Amqp,
}

/// A broker URL. Shown (in logs, errors and the API) with its password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    url: reqwest::Url,
    pub kind: Kind,
}

impl BrokerUrl {
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("invalid broker url: {e}"))?;
        let kind = match url.scheme() {
            "redis" | "rediss" | "unix" | "redis+unix" => Kind::Redis,
            "amqp" | "amqps" => Kind::Amqp,
            other => {
                return Err(format!(
                    "unsupported broker scheme \"{other}\" (one of: redis://, rediss://, unix://, amqp://, amqps://)"
                ));
            }
        };
        if !url.scheme().ends_with("unix") && url.host_str().is_none_or(str::is_empty) {
            return Err("the broker url has no host".into());
        }
        Ok(BrokerUrl { url, kind })
    }

    /// The URL with its secret, for the client library only.
    pub fn secret(&self) -> &str {
        self.url.as_str()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k == "pass" || k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "pass" || k == "password" { "***".to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.redacted())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub name: String,
    pub url: BrokerUrl,
}

impl BrokerConfig {
    pub fn parse(name: &str, t: &mut Table<'_, '_>, d: &mut Diags) -> Option<BrokerConfig> {
        let url = t.req_str(d, "url");
        t.finish(d, &[]);
        let url = url?;
        match BrokerUrl::parse(url.value) {
            Ok(parsed) => Some(BrokerConfig { name: name.to_string(), url: parsed }),
            Err(e) => {
                // Never echo the URL: it may hold a password.
                t.error(d, url.span, e);
                None
            }
        }
    }
}

pub type BrokerConfigs = HashMap<String, BrokerConfig>;

/// Which end of a Redis list a message is pushed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// LPUSH: Celery's producers; workers BRPOP, so the list is FIFO.
    Left,
    /// RPUSH.
    Right,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "lpush",
            Side::Right => "rpush",
        }
    }

    pub fn parse(s: &str) -> Side {
        if s == "rpush" { Side::Right } else { Side::Left }
    }
}

/// What a queue job does with a message its broker cannot take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBrokerDown {
    /// Keep it in the durable outbox and deliver it later, in slot order.
    #[default]
    Outbox,
    /// Drop it (logged and recorded as a failure): a heartbeat that means nothing late.
    Drop,
}

impl OnBrokerDown {
    pub fn parse(t: &mut Table<'_, '_>, d: &mut Diags) -> OnBrokerDown {
        t.choice(
            d,
            "on_broker_down",
            "on_broker_down",
            &[("outbox", OnBrokerDown::Outbox), ("drop", OnBrokerDown::Drop)],
        )
        .unwrap_or_default()
    }
}

/// `broker = "NAME"`, which must name a `[brokers.NAME]`.
pub fn parse_broker_name(t: &mut Table<'_, '_>, d: &mut Diags, brokers: &[String]) -> Option<String> {
    let b = t.req_str(d, "broker")?;
    if brokers.iter().any(|n| n == b.value) {
        return Some(b.value.to_string());
    }
    let h = crate::config::diag::hint(b.value, brokers.iter().map(String::as_str));
    t.error(d, b.span, format!("no broker \"{}\" (define it as [brokers.{}]){h}", b.value, b.value));
    None
}

/// One message, built and ready to push: what the outbox stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub job: String,
    pub fire_id: String,
    pub slot: chrono::DateTime<chrono::Utc>,
    /// The Redis list, or the AMQP routing key (the queue).
    pub key: String,
    pub side: Side,
    /// The list entry.
    pub payload: String,
    /// `payload` is a kombu envelope (Celery): AMQP unwraps it into body, headers, properties.
    pub envelope: bool,
    /// Past this instant, a message still waiting in the outbox is dropped (Celery `expires`).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let u = BrokerUrl::parse("redis://:s3cret@127.0.0.1:6379/2").expect("valid");
        assert_eq!(u.kind, Kind::Redis);
        assert_eq!(u.to_string(), "redis://:***@127.0.0.1:6379/2");
        assert!(format!("{u:?}").contains("***") && !format!("{u:?}").contains("s3cret"));
        let u = BrokerUrl::parse("rediss://user:pw@cache.example:6380/0").expect("valid");
        assert_eq!(u.to_string(), "rediss://user:***@cache.example:6380/0");
        let u = BrokerUrl::parse("unix:///run/redis.sock?db=1&pass=pw").expect("valid");
        assert_eq!(u.to_string(), "unix:///run/redis.sock?db=1&pass=***");
        let e = BrokerUrl::parse("kafka://x:pw@h:1").expect_err("refused");
        assert!(e.starts_with("unsupported broker scheme \"kafka\"") && !e.contains("pw"), "{e}");
        assert!(BrokerUrl::parse("redis://").is_err());
        let u = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").expect("valid");
        assert_eq!((u.kind, u.to_string()), (Kind::Amqp, "amqp://guest:***@127.0.0.1:5672/%2f".to_string()));
    }
}
