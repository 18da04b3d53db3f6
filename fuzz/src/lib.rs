//! What the fuzz targets check beyond "no panic": the properties a schedule, a config and a
//! message must have for any input.

use chrono::{DateTime, Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use beatd::schedule::{CronExpr, CronSchedule};

/// Zones with every kind of transition: none, an hour each way, 30 minutes (Lord Howe), a gap at
/// midnight (Santiago), a zone that changed its base offset (Samoa skipped a whole day).
pub const ZONES: &[Tz] = &[
    chrono_tz::UTC,
    chrono_tz::America::New_York,
    chrono_tz::Europe::Berlin,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::America::Santiago,
    chrono_tz::Pacific::Apia,
    chrono_tz::Asia::Kolkata,
];

/// Takes up to `count` fires of `expr` in `tz` after `from` and checks that they are strictly
/// increasing and that each is a time the expression names: its local time matches, or it is
/// the first instant after a gap that swallowed a time the expression names.
pub fn check_cron(text: &str, expr: &CronExpr, tz: Tz, from: DateTime<Utc>, count: usize) {
    let schedule = CronSchedule::new(expr.clone(), tz);
    let mut t = from;
    for _ in 0..count {
        let Some(next) = schedule.next_after(t) else { return };
        assert!(next > t, "{text} in {tz}: {next} is not after {t}");
        let local = local_time(tz, next);
        if !expr.matches(local) {
            let old = local_time(tz, next - Duration::seconds(1)) + Duration::seconds(1);
            assert!(old < local, "{text} in {tz}: {next} ({local}) does not match and ends no gap");
            let mut m = old;
            let mut named = false;
            while m < local {
                named |= expr.matches(m);
                m += Duration::minutes(1);
            }
            assert!(named, "{text} in {tz}: {next} ends a gap ({old} to {local}) that held none of its times");
        }
        t = next;
    }
}

/// Local time in `tz` as beatd defines it: the tz database's from 1900 to 2199, the offset at
/// the nearer end outside (docs/cron.md, "Time zones").
fn local_time(tz: Tz, t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let first = Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap();
    let last = Utc.with_ymd_and_hms(2199, 12, 31, 23, 59, 59).unwrap();
    let offset = t.clamp(first, last).with_timezone(&tz).offset().fix().local_minus_utc();
    t.naive_utc() + Duration::seconds(i64::from(offset))
}

/// An instant in chrono's range from fuzz input, biased to the years people schedule in.
pub fn instant(raw: i64) -> DateTime<Utc> {
    let secs = if raw & 1 == 0 { 946_684_800 + (raw >> 1).rem_euclid(200 * 365 * 86_400) } else { raw >> 20 };
    Utc.timestamp_opt(secs, 0).single().unwrap_or_else(|| Utc.timestamp_opt(0, 0).unwrap())
}

/// Runs what the daemon does with a loaded config, short of running jobs: each job's next
/// fires, and for queue jobs the message of a fire, checked by [`check_message`].
pub fn exercise(config: &beatd::config::Config) {
    use beatd::jobs::Action;
    let slot = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
    for job in &config.jobs {
        let mut t = slot;
        for _ in 0..5 {
            match job.schedule.next_after(t) {
                Some(next) => {
                    assert!(next > t, "job {}: {next} not after {t}", job.name);
                    t = next;
                }
                None => break,
            }
        }
        let id = beatd::job::fire_id(&job.name, slot).to_string();
        match &job.action {
            Action::Celery(c) => {
                let broker = config.brokers.get(&c.broker).expect("a celery job's broker is defined");
                let message = c.message(&job.name, id.clone(), slot, broker);
                check_celery(c, &id, slot, &message.payload);
                assert_eq!(message.key, broker.celery_key(&c.queue, c.priority.unwrap_or(0)));
            }
            Action::Push(p) => {
                let message = p.message(&job.name, id.clone(), slot, slot);
                let v: serde_json::Value = serde_json::from_str(&message.payload).expect("a push body is JSON");
                assert_eq!(v["job"], *job.name);
                assert_eq!(v["fire_id"], id);
                assert_eq!(v["payload"], reparsed(&p.payload));
            }
            _ => {}
        }
    }
}

/// A value as it reads back from its JSON text (floats written and read again).
fn reparsed(v: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(&v.to_string()).expect("JSON reads back")
}

/// A Celery message: valid JSON; the body, base64, is `[args, kwargs, embed]`; the task id in
/// its three places; the same text as the envelope built in full (the message is rendered from
/// a per-job template); and the AMQP form carries the same body.
pub fn check_celery(c: &beatd::jobs::celery::Celery, id: &str, slot: DateTime<Utc>, payload: &str) {
    use base64::Engine;
    let env: serde_json::Value = serde_json::from_str(payload).expect("an envelope is JSON");
    let body = env["body"].as_str().expect("a body");
    let body = base64::engine::general_purpose::STANDARD.decode(body).expect("the body is base64");
    let parts: serde_json::Value = serde_json::from_slice(&body).expect("the body is JSON");
    assert_eq!(parts[0], reparsed(&c.args));
    assert_eq!(parts[1], reparsed(&c.kwargs));
    assert!(parts[2].is_object());
    // Extra headers are merged over the standard ones, so only a job that sets none of these
    // keeps them.
    if !c.headers.contains_key("id") {
        assert_eq!(env["headers"]["id"], id);
    }
    if !c.headers.contains_key("root_id") {
        assert_eq!(env["headers"]["root_id"], id);
    }
    if !c.headers.contains_key("task") {
        assert_eq!(env["headers"]["task"], c.task);
    }
    assert_eq!(env["properties"]["correlation_id"], id);
    assert_eq!(env["properties"]["delivery_info"]["routing_key"], c.queue);
    let tag = env["properties"]["delivery_tag"].as_str().expect("a delivery tag");
    let full = c.envelope(id, slot, &beatd::jobs::celery::origin(), tag);
    assert_eq!(payload, full, "the template's message differs from the envelope built in full");
    let (amqp_body, _props) = beatd::broker::amqp::from_envelope(payload);
    assert_eq!(amqp_body, body);
}

/// Loads config files from text as the daemon does (what they name on disk is not checked:
/// fuzzing must not read the machine's files), then checks the errors or exercises the config.
pub fn load(main: Vec<u8>, dropin: Option<Vec<u8>>) {
    use beatd::config::{Disk, Source, parse_sources};
    use std::path::Path;
    let base = Path::new("/nonexistent/beatd-fuzz");
    let main_path = base.join("beatd.toml");
    let dropin_path = base.join("conf.d/extra.toml");
    let texts: Vec<(usize, String)> = std::iter::once(&main)
        .chain(dropin.as_ref())
        .map(|b| (b.len(), String::from_utf8_lossy(b).into_owned()))
        .collect();
    let result = Source::from_bytes(&main_path, main).and_then(|m| {
        let dropins = match dropin {
            Some(bytes) => vec![Source::from_bytes(&dropin_path, bytes)?],
            None => Vec::new(),
        };
        parse_sources(&m, dropins, base, Disk::Skip)
    });
    match result {
        Ok(config) => exercise(&config),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a diagnostic");
            for d in &errors.0 {
                let shown = d.to_string();
                assert!(!d.message.is_empty(), "an empty message: {shown}");
                let text = if d.file.ends_with("extra.toml") { &texts[texts.len() - 1].1 } else { &texts[0].1 };
                if let Some((line, col)) = d.position {
                    let lines = text.split('\n').count();
                    assert!(line >= 1 && line <= lines, "{shown}: line {line} of {lines}");
                    assert!(col >= 1, "{shown}: column {col}");
                }
            }
        }
    }
}
