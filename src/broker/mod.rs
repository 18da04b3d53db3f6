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

/// Which protocol a broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    /// AMQP 0-9-1: RabbitMQ.
    Amqp,
}

/// Why a broker URL was refused. Never holds the URL: it may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid broker url: {0}")]
    Invalid(String),
    #[error("unsupported broker scheme \"{0}\" (one of: redis://, rediss://, unix://, amqp://, amqps://)")]
    Scheme(String),
    #[error("the broker url has no host")]
    NoHost,
    #[error("the vhost in the broker url is not UTF-8")]
    Vhost,
}

/// Why a broker's delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("broker \"{broker}\": {source}")]
    Url { broker: String, source: UrlError },
    #[error("broker \"{broker}\": {source}")]
    Client { broker: String, source: ::redis::RedisError },
    #[error(transparent)]
    Outbox(#[from] crate::state::StateError),
}

/// A broker URL. Shown (in logs, errors and the API) with its password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    url: reqwest::Url,
    pub kind: Kind,
}

impl BrokerUrl {
    pub fn parse(text: &str) -> Result<BrokerUrl, UrlError> {
        let url = reqwest::Url::parse(text).map_err(|e| UrlError::Invalid(e.to_string()))?;
        let kind = match url.scheme() {
            "redis" | "rediss" | "unix" | "redis+unix" => Kind::Redis,
            "amqp" | "amqps" => Kind::Amqp,
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        if !url.scheme().ends_with("unix") && url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        let parsed = BrokerUrl { url, kind };
        if kind == Kind::Amqp {
            parsed.amqp_uri()?;
        }
        Ok(parsed)
    }

    /// The URL with its secret, for the client library only.
    /// `rediss://` or `amqps://`.
    pub fn is_tls(&self) -> bool {
        matches!(self.url.scheme(), "rediss" | "amqps")
    }

    pub fn secret(&self) -> &str {
        self.url.as_str()
    }

    /// The AMQP virtual host, by kombu's rules (which users copy from their Celery settings):
    /// the path without its leading `/`, percent-decoded; none or empty means `/`. So
    /// `...:5672`, `...:5672/`, `...:5672//` and `...:5672/%2F` are all the vhost `/`.
    pub fn vhost(&self) -> Result<String, UrlError> {
        let path = self.url.path();
        let path = path.strip_prefix('/').unwrap_or(path);
        let vhost = percent_decode(path).map_err(|_| UrlError::Vhost)?;
        Ok(if vhost.is_empty() { "/".to_string() } else { vhost })
    }

    /// The URL as lapin takes it: host and port as written (an IP address stays one), the vhost
    /// by kombu's rules, and the query's connection settings (`heartbeat`, `frame_max`, ...).
    pub fn amqp_uri(&self) -> Result<lapin::uri::AMQPUri, UrlError> {
        // amq-protocol-uri reads the host with `Url::domain`, which is `None` for an IP
        // address: it would connect to "localhost" instead. Only its query parsing is used.
        let mut uri: lapin::uri::AMQPUri = self.url.as_str().parse().map_err(UrlError::Invalid)?;
        let host = self.url.host_str().ok_or(UrlError::NoHost)?;
        uri.authority.host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        uri.authority.port = self.url.port().unwrap_or_else(|| uri.scheme.default_port());
        uri.vhost = self.vhost()?;
        Ok(uri)
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

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s).decode_utf8().map(std::borrow::Cow::into_owned)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub name: String,
    pub url: BrokerUrl,
    /// kombu's Redis transport options (defaults on RabbitMQ, where they do not apply).
    pub transport: TransportOptions,
    /// A CA and client certificate for `rediss://` and `amqps://`.
    pub tls: crate::tls::TlsFiles,
}

impl BrokerConfig {
    /// Where a Celery message for `queue` at `priority` goes: on Redis the list kombu's
    /// transport reads for that priority; on RabbitMQ the routing key, the queue itself.
    pub fn celery_key(&self, queue: &str, priority: u8) -> String {
        match self.url.kind {
            Kind::Redis => self.transport.queue_key(queue, priority),
            Kind::Amqp => queue.to_string(),
        }
    }
}

/// kombu's Redis transport options that decide where a message goes, with kombu's defaults
/// and meaning. They must match the workers' `broker_transport_options`, or the workers poll
/// lists nobody writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Priorities map to the largest step not above them; each step but 0 is its own list.
    pub priority_steps: Vec<u32>,
    /// Between the queue name and the step in a priority list's name.
    pub sep: String,
    /// Put before every key (kombu prefixes all of its keys with it).
    pub global_keyprefix: String,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions { priority_steps: vec![0, 3, 6, 9], sep: "\x06\x16".into(), global_keyprefix: String::new() }
    }
}

impl TransportOptions {
    /// The step of `priority` (clamped to 0-9, as kombu does): `steps[bisect_right(steps, p) - 1]`,
    /// Python's index -1 included (a priority below the first step takes the last one).
    pub fn step(&self, priority: u8) -> u32 {
        let p = u32::from(priority.min(9));
        let steps = &self.priority_steps;
        let i = steps.partition_point(|s| *s <= p);
        steps[if i == 0 { steps.len() - 1 } else { i - 1 }]
    }

    /// The list a message for `queue` at `priority` goes to: `PREFIX QUEUE [SEP STEP]`.
    pub fn queue_key(&self, queue: &str, priority: u8) -> String {
        match self.step(priority) {
            0 => format!("{}{queue}", self.global_keyprefix),
            step => format!("{}{queue}{}{step}", self.global_keyprefix, self.sep),
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

/// What became of one message handed to a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The broker has it: Redis answered its transaction; RabbitMQ confirmed it (an ack, and
    /// no return).
    Delivered,
    /// RabbitMQ returned it: no queue is bound to its routing key (no worker has declared the
    /// queue yet). It waits in the outbox, alone, and is tried again with backoff.
    NoRoute,
    /// RabbitMQ refused it for now (a nack: a full queue that rejects publishes). It waits
    /// like a returned message.
    Nacked,
    /// Not taken for now (no connection, no confirm): sent again later.
    Retry(String),
    /// The broker can never take it as it is (too large): it fails alone, and is not retried.
    Refused(String),
}

/// One message, built and ready to push: what the outbox stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
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
        let e = BrokerUrl::parse("kafka://x:pw@h:1").expect_err("refused").to_string();
        assert!(e.starts_with("unsupported broker scheme \"kafka\"") && !e.contains("pw"), "{e}");
        assert!(BrokerUrl::parse("redis://").is_err());
        let u = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").expect("valid");
        assert_eq!((u.kind, u.to_string()), (Kind::Amqp, "amqp://guest:***@127.0.0.1:5672/%2f".to_string()));
    }

    #[test]
    fn amqp_vhosts_follow_kombus_url_rules() {
        for (url, vhost) in [
            ("amqp://guest:guest@127.0.0.1:5672", "/"),
            ("amqp://guest:guest@127.0.0.1:5672/", "/"),
            ("amqp://guest:guest@127.0.0.1:5672//", "/"),
            ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
            ("amqp://guest:guest@127.0.0.1:5672/prod", "prod"),
            ("amqp://guest:guest@127.0.0.1:5672/a%2Fb", "a/b"),
        ] {
            let u = BrokerUrl::parse(url).expect("valid");
            assert_eq!(u.vhost().as_deref(), Ok(vhost), "{url}");
            assert_eq!(u.amqp_uri().expect("uri").vhost, vhost, "{url}");
        }
    }

    #[test]
    fn an_amqp_ip_address_is_connected_to_as_written() {
        // amq-protocol-uri alone turns an IP host into "localhost".
        let uri = BrokerUrl::parse("amqp://u:p@10.0.0.5:5673/?heartbeat=5").expect("valid").amqp_uri().expect("uri");
        assert_eq!((uri.authority.host.as_str(), uri.authority.port), ("10.0.0.5", 5673));
        assert_eq!((uri.authority.userinfo.username.as_str(), uri.query.heartbeat), ("u", Some(5)));
        let uri = BrokerUrl::parse("amqps://[::1]/").expect("valid").amqp_uri().expect("uri");
        assert_eq!((uri.authority.host.as_str(), uri.authority.port), ("::1", 5671));
    }

    fn broker(toml: &str) -> Result<BrokerConfig, String> {
        let text = format!("[brokers.main]\n{toml}\n");
        crate::config::parse_str(&text, std::path::Path::new("t.toml"), std::path::Path::new("."))
            .map(|c| c.brokers["main"].clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn transport_options_are_kombus() {
        let b = broker(
            "url = \"redis://h:6379/0\"\ntransport_options = { priority_steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], sep = \":\", queue_order_strategy = \"priority\", visibility_timeout = 3600, global_keyprefix = \"app1:\" }",
        )
        .expect("valid");
        assert_eq!(b.celery_key("celery", 4), "app1:celery:4");
        assert_eq!(
            broker("url = \"redis://h\"\ntransport_options = { priority_steps = [3, 0] }"),
            Err("t.toml:3:40: transport_options: \"priority_steps\" must be a list of whole numbers in ascending order, such as [0, 3, 6, 9]".into())
        );
        assert_eq!(
            broker("url = \"redis://h\"\ntransport_options = { seperator = \":\" }"),
            Err("t.toml:3:23: transport_options: unknown key \"seperator\"".into())
        );
        assert_eq!(
            broker("url = \"amqp://h//\"\ntransport_options = { sep = \":\" }"),
            Err("t.toml:3:1: broker \"main\": \"transport_options\" are kombu's Redis transport options: this broker is not Redis".into())
        );
    }
}
