//! `action = "celery"`: a Celery task message, for unmodified Celery workers.
//!
//! The message follows Celery's protocol version 2 as `celery beat` sends it (the task id is
//! the fire id, so a re-sent fire is recognisable; `celery_beat_task: true` marks it), wrapped
//! in kombu's Redis envelope and pushed with LPUSH onto the queue's list, or onto the list of
//! its priority step (kombu's transport options decide which: see
//! [`crate::broker::TransportOptions`]). The envelope is built here, as plain data: the broker
//! only moves bytes.
//!
//! `argsrepr` and `kwargsrepr` are display strings; like Celery's own client, beatd cuts them
//! at 1 KiB, so a job with large arguments does not send them twice, once in headers that
//! RabbitMQ must fit in one frame.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::broker::{BrokerConfig, OnBrokerDown, QueueMessage, Side};

#[derive(Debug, Clone)]
pub struct Celery {
    pub broker: String,
    pub task: String,
    /// A JSON array.
    pub args: Value,
    /// A JSON object.
    pub kwargs: Value,
    pub queue: String,
    pub priority: Option<u8>,
    /// The message expires this long after its slot.
    pub expires: Option<Duration>,
    pub time_limit: Option<Duration>,
    pub soft_time_limit: Option<Duration>,
    /// Extra headers, merged over the standard ones.
    pub headers: serde_json::Map<String, Value>,
    pub on_broker_down: OnBrokerDown,
    /// The envelope template, made at the first message.
    pub(crate) template: std::sync::OnceLock<Template>,
}

impl Celery {
    /// The kombu envelope for `job`'s `slot`, task id `id`. `delivery_tag` must be unique per
    /// message; `origin` is `beatd@HOST`. `properties.priority` is the job's priority, as
    /// kombu's client sends it (kombu's Redis transport maps it to a list by its steps).
    pub fn envelope(&self, id: &str, slot: DateTime<Utc>, origin: &str, delivery_tag: &str) -> String {
        let expires = self.expires_at(slot).map(iso);
        self.envelope_with(id, expires.as_deref(), origin, delivery_tag)
    }

    fn expires_at(&self, slot: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.expires.map(|e| slot + chrono::Duration::from_std(e).unwrap_or_default())
    }

    fn envelope_with(&self, id: &str, expires: Option<&str>, origin: &str, delivery_tag: &str) -> String {
        let mut headers = serde_json::Map::new();
        let secs = |d: Option<Duration>| d.map_or(Value::Null, seconds);
        for (k, v) in [
            ("lang", json!("py")),
            ("task", json!(self.task)),
            ("id", json!(id)),
            ("shadow", Value::Null),
            ("eta", Value::Null),
            ("expires", expires.map_or(Value::Null, |e| json!(e))),
            ("group", Value::Null),
            ("group_index", Value::Null),
            ("retries", json!(0)),
            ("timelimit", json!([secs(self.time_limit), secs(self.soft_time_limit)])),
            ("root_id", json!(id)),
            ("parent_id", Value::Null),
            ("argsrepr", json!(repr(&self.args))),
            ("kwargsrepr", json!(repr(&self.kwargs))),
            ("origin", json!(origin)),
            ("ignore_result", json!(false)),
            ("replaced_task_nesting", json!(0)),
            ("stamped_headers", Value::Null),
            ("stamps", json!({})),
            ("celery_beat_task", json!(true)),
        ] {
            headers.insert(k.to_string(), v);
        }
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        let body = json!([self.args, self.kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
                "priority": self.priority.unwrap_or(0),
                "body_encoding": "base64",
                "delivery_tag": delivery_tag,
            },
        })
        .to_string()
    }

    /// The message for `broker`: envelope, list or routing key, and when it goes stale.
    pub fn message(&self, job: &str, id: String, slot: DateTime<Utc>, broker: &BrokerConfig) -> QueueMessage {
        let tag = uuid::Uuid::new_v4().to_string();
        let key = broker.celery_key(&self.queue, self.priority.unwrap_or(0));
        let expires_at = self.expires_at(slot);
        let expires = expires_at.map(iso);
        let build = |id: &str, exp: Option<&str>, tag: &str| self.envelope_with(id, exp, &origin(), tag);
        let template = self.template.get_or_init(|| Template::new(&build));
        let payload = match template.render(&id, expires.as_deref(), &tag) {
            Some(p) => p,
            None => build(&id, expires.as_deref(), &tag),
        };
        QueueMessage {
            job: job.to_string(),
            fire_id: id,
            slot,
            key,
            side: Side::Left,
            payload,
            envelope: true,
            expires_at,
        }
    }
}

/// A job's envelope with holes for what changes from message to message (the id, `expires`,
/// the delivery tag): the rest (headers, the base64 body) is the same for every fire, so it is
/// serialized once per job instead of once per message, and a message is a few copies.
///
/// The text between the holes is shared between jobs ([`intern`]): only the first piece (the
/// body and `argsrepr`, up to `expires`) is a job's own, the others repeat for every job with
/// the same task, kwargs, limits and queue. 50 000 templates held 42 MB as six strings each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Template {
    /// Text around the holes (one more than the holes), and the holes. `None` when the job's
    /// own values happen to contain a marker: then every message is built in full.
    parts: Option<Pieces>,
}

/// The text around the holes, shared pieces (one more than the holes), and the holes in order.
type Pieces = (Box<[Arc<str>]>, [Hole; HOLES]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    Id,
    Expires,
    Tag,
}

/// The id is in three places (id, root_id, correlation_id), the others in one.
const HOLES: usize = 5;

/// Markers start with a control character, which JSON writes escaped (`\u0001`).
const MARKS: [(&str, Hole); 3] =
    [("\u{1}beatd-id", Hole::Id), ("\u{1}beatd-expires", Hole::Expires), ("\u{1}beatd-tag", Hole::Tag)];

impl Template {
    fn new(build: &dyn Fn(&str, Option<&str>, &str) -> String) -> Template {
        let text = build(MARKS[0].0, Some(MARKS[1].0), MARKS[2].0);
        let marks: Vec<(String, Hole)> = MARKS
            .iter()
            .map(|(m, h)| (serde_json::to_string(m).expect("a string").trim_matches('"').to_string(), *h))
            .collect();
        let (mut parts, mut holes) = (Vec::new(), Vec::new());
        let mut rest = text.as_str();
        while let Some((at, len, hole)) =
            marks.iter().filter_map(|(m, h)| rest.find(m.as_str()).map(|at| (at, m.len(), *h))).min_by_key(|x| x.0)
        {
            parts.push(&rest[..at]);
            holes.push(hole);
            rest = &rest[at + len..];
        }
        parts.push(rest);
        let count = |h| holes.iter().filter(|x| **x == h).count();
        let sound = count(Hole::Id) == 3 && count(Hole::Expires) == 1 && count(Hole::Tag) == 1;
        let Ok(holes) = <[Hole; HOLES]>::try_from(holes) else { return Template { parts: None } };
        Template { parts: sound.then(|| (parts.into_iter().map(intern).collect(), holes)) }
    }

    /// The envelope with the holes filled; `None` if this job has no usable template.
    fn render(&self, id: &str, expires: Option<&str>, tag: &str) -> Option<String> {
        let (parts, holes) = self.parts.as_ref()?;
        let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 128);
        let mut skip_quote = false;
        for (part, hole) in parts.iter().zip(holes) {
            out.push_str(if skip_quote { &part[1..] } else { part });
            skip_quote = false;
            match (hole, expires) {
                (Hole::Id, _) => out.push_str(id),
                (Hole::Tag, _) => out.push_str(tag),
                (Hole::Expires, Some(e)) => out.push_str(e),
                (Hole::Expires, None) => {
                    // The hole sits in quotes; `null` replaces them too.
                    out.pop();
                    out.push_str("null");
                    skip_quote = true;
                }
            }
        }
        let last = parts.last()?;
        out.push_str(if skip_quote { &last[1..] } else { last });
        Some(out)
    }
}

/// The one shared copy of a piece of template text. Pieces no template holds any more (their
/// jobs left with a reload) are dropped whenever the set has doubled since the last sweep, so
/// it stays within twice what the live templates use.
fn intern(piece: &str) -> Arc<str> {
    static PIECES: LazyLock<Mutex<(HashSet<Arc<str>>, usize)>> = LazyLock::new(Default::default);
    let mut guard = PIECES.lock().unwrap_or_else(|p| p.into_inner());
    let (set, sweep_at) = &mut *guard;
    if let Some(shared) = set.get(piece) {
        return shared.clone();
    }
    if set.len() >= *sweep_at {
        set.retain(|p| Arc::strong_count(p) > 1);
        *sweep_at = (set.len() * 2).max(1024);
    }
    let shared: Arc<str> = piece.into();
    set.insert(shared.clone());
    shared
}

/// At most this many bytes of `argsrepr` and `kwargsrepr`: Celery's client cuts its reprs at
/// 1024 characters (`argsrepr_maxsize`).
pub const REPR_MAX: usize = 1024;

/// `value` as JSON text for a display header, cut to [`REPR_MAX`] bytes ending in `...`.
fn repr(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= REPR_MAX {
        return text;
    }
    let mut end = REPR_MAX - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// ISO 8601 with an explicit `+00:00`: without an offset a worker reads its own zone.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 { json!(d.as_secs()) } else { json!(d.as_secs_f64()) }
}

/// `beatd@HOST`, as Celery's `name@host`.
pub fn origin() -> String {
    static ORIGIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(|| {
            let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
            format!("beatd@{host}")
        })
        .clone()
}

#[cfg(test)]
mod tests;
