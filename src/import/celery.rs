//! `beatd import celery`: a Celery app's `beat_schedule` as `celery` jobs.
//!
//! A small Python program ([`DUMP_PROGRAM`], run with the user's interpreter so the app
//! imports as it does for `celery -A`) writes the schedule as JSON: each entry's task, schedule
//! (crontab fields as written, interval seconds, or what else it is), arguments, options and the
//! queue Celery's own router sends it to; the app's zone and broker. This module turns that
//! dump into a config.
//!
//! Crontab entries keep Celery's day rule: Celery wants a day to match day_of_month AND
//! day_of_week, where Vixie cron takes either; an entry that restricts both gets `day_match =
//! "both"`. Intervals become `every`, which beatd counts from the Unix epoch where Celery beat
//! counts from each entry's last run (the config says so). Solar schedules, `relative=True`,
//! values TOML cannot hold (None) and options beatd cannot honour are refused with the entry's
//! name and why.

use std::collections::HashSet;
use std::fmt::Write;

use serde_json::Value;

use super::{slugify, toml_str, unique};
use crate::schedule::cron;

/// The Python program that writes an app's schedule as JSON: `python -c PROGRAM APP`.
pub const DUMP_PROGRAM: &str = include_str!("celery_dump.py");

/// The name the imported broker gets.
const BROKER: &str = "celery";

/// Transport options beatd reads, besides the worker-only ones it accepts and ignores.
const TRANSPORT_OPTIONS: &[&str] = &["priority_steps", "sep", "global_keyprefix"];

/// The dump as a config; `Err` lists every entry (or setting) refused, and why.
pub fn import(dump: &Value, source: &str) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    let zone = dump["timezone"].as_str().unwrap_or("UTC");
    if let Err(e) = crate::config::job::parse_zone(zone) {
        errors.push(format!("app.conf.timezone: {e}"));
    }
    let mut out = String::new();
    let version = dump["celery"].as_str().unwrap_or("?");
    let _ = writeln!(out, "# Imported from {source}'s beat_schedule by `beatd import celery` (Celery {version}).");
    out.push_str("# crontab entries fire at the same instants as under Celery beat, in the app's zone. Intervals\n");
    out.push_str(
        "# (`every`) are counted from the Unix epoch, where Celery beat counts from each entry's last run.\n\n",
    );
    match broker(dump) {
        Ok(section) => out.push_str(&section),
        Err(e) => errors.push(e),
    }
    let mut names = HashSet::new();
    for entry in dump["entries"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or("?");
        match job(entry, zone, &mut names) {
            Ok(job) => {
                let _ = writeln!(out, "\n# beat_schedule[{}]", toml_str(name));
                out.push_str(&job);
            }
            Err(why) => errors.push(format!("entry \"{name}\": {why}")),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// `[brokers.celery]` from `broker_url`, its password left out, and the transport options beatd
/// reads.
fn broker(dump: &Value) -> Result<String, String> {
    // Celery's own default when the app sets none.
    let url = dump["broker_url"].as_str().unwrap_or("amqp://guest:guest@localhost:5672//");
    let mut parsed = reqwest::Url::parse(url).map_err(|e| format!("app.conf.broker_url: {e}"))?;
    let had_password = parsed.password().is_some_and(|p| !p.is_empty());
    let _ = parsed.set_password(None);
    let url = parsed.to_string();
    let broker = crate::broker::BrokerUrl::parse(&url)
        .map_err(|e| format!("app.conf.broker_url: {e} (beatd sends to Redis and RabbitMQ)"))?;
    let mut out = format!("[brokers.{BROKER}]\n");
    if had_password {
        out.push_str("# The broker's password was left out: add it to the URL (redis://:PASSWORD@..., amqp://USER:PASSWORD@...).\n");
    }
    let _ = writeln!(out, "url = {}", toml_str(&url));
    let options = dump["broker_transport_options"].as_object();
    if broker.kind == crate::broker::Kind::Redis
        && let Some(options) = options
    {
        let mut kept = toml::Table::new();
        for (k, v) in options {
            if TRANSPORT_OPTIONS.contains(&k.as_str())
                && let Ok(v) = toml::Value::try_from(v)
            {
                kept.insert(k.clone(), v);
            }
        }
        if !kept.is_empty() {
            let _ = writeln!(out, "transport_options = {}", toml::Value::Table(kept));
        }
    }
    Ok(out)
}

/// One entry as a job table.
fn job(entry: &Value, zone: &str, names: &mut HashSet<String>) -> Result<String, String> {
    let task = entry["task"].as_str().ok_or("no task")?;
    if entry["relative"].as_bool() == Some(true) || entry["schedule"]["relative"].as_bool() == Some(true) {
        return Err("relative=True rounds the interval to the clock's own period, which beatd does not do".into());
    }
    let schedule = &entry["schedule"];
    let mut job = String::new();
    match schedule["type"].as_str().unwrap_or("") {
        "crontab" => {
            let fields: Vec<String> = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week"]
                .iter()
                .map(|f| cron_field(&schedule[*f]).map_err(|e| format!("crontab {f}: {e}")))
                .collect::<Result<_, _>>()?;
            let expr = fields.join(" ");
            let parsed = match cron::parse(&expr) {
                Ok(cron::Parsed::Fields(e)) => e,
                Ok(cron::Parsed::Reboot) => return Err(format!("crontab \"{expr}\" is not a schedule")),
                Err(e) => return Err(format!("crontab \"{expr}\": {}", e.message)),
            };
            let _ = writeln!(job, "cron = {}", toml_str(&expr));
            if parsed.restricts_both_days() {
                job.push_str("day_match = \"both\"  # Celery's rule: day_of_month AND day_of_week\n");
            }
            let _ = writeln!(job, "timezone = {}", toml_str(zone));
        }
        "interval" => {
            let seconds = schedule["seconds"].as_f64().ok_or("an interval without seconds")?;
            if seconds < 1.0 || seconds.fract() != 0.0 {
                return Err(format!("an interval of {seconds} s: beatd's intervals are whole seconds, at least 1"));
            }
            let _ = writeln!(job, "every = {}", toml_str(&duration(seconds as u64)));
        }
        "solar" => {
            let event = schedule["event"].as_str().unwrap_or("?");
            return Err(format!("solar(\"{event}\", ...) follows the sun, which beatd has no schedule for"));
        }
        other => return Err(format!("a schedule of type {other}, which beatd cannot express")),
    }
    job.push_str(&format!("action = \"celery\"\nbroker = \"{BROKER}\"\ntask = {}\n", toml_str(task)));
    let args = &entry["args"];
    if args.as_array().is_some_and(|a| !a.is_empty()) {
        let _ = writeln!(job, "args = {}", toml_value(args).map_err(|e| format!("args: {e}"))?);
    }
    let kwargs = &entry["kwargs"];
    if kwargs.as_object().is_some_and(|k| !k.is_empty()) {
        let _ = writeln!(job, "kwargs = {}", toml_value(kwargs).map_err(|e| format!("kwargs: {e}"))?);
    }
    options(entry, &mut job)?;
    let name = unique(slugify(entry["name"].as_str().unwrap_or("")), names);
    Ok(format!("[jobs.{name}]\n{job}"))
}

/// The entry's options as the job's keys; the queue is the one Celery's router chose.
fn options(entry: &Value, job: &mut String) -> Result<(), String> {
    let options = entry["options"].as_object().cloned().unwrap_or_default();
    let queue = entry["route"]["queue"].as_str().or_else(|| options.get("queue").and_then(Value::as_str));
    if let Some(queue) = queue.filter(|q| *q != "celery") {
        let _ = writeln!(job, "queue = {}", toml_str(queue));
    }
    for (key, value) in &options {
        match key.as_str() {
            "queue" | "routing_key" | "exchange" => {
                // Taken into account by the router above; an exchange that routes elsewhere
                // than the queue is what beatd cannot send to.
                if key == "exchange"
                    && value.as_str().is_some_and(|x| !x.is_empty())
                    && entry["route"]["queue"].is_null()
                {
                    return Err(format!("options.exchange = {value}: beatd sends to a queue, not through an exchange"));
                }
            }
            "priority" => match value.as_u64().filter(|p| *p <= 9) {
                Some(p) => {
                    let _ = writeln!(job, "priority = {p}");
                }
                None => return Err(format!("options.priority = {value}: beatd's priorities are 0 to 9")),
            },
            "expires" | "time_limit" | "soft_time_limit" => match value.as_f64() {
                Some(s) if s >= 1.0 && s.fract() == 0.0 => {
                    let _ = writeln!(job, "{key} = {}", toml_str(&duration(s as u64)));
                }
                _ => {
                    return Err(format!(
                        "options.{key} = {value}: beatd takes a whole number of seconds (an instant cannot be written)"
                    ));
                }
            },
            "headers" => {
                let _ = writeln!(job, "headers = {}", toml_value(value).map_err(|e| format!("options.headers: {e}"))?);
            }
            other => return Err(format!("options.{other}: not an option beatd can send")),
        }
    }
    Ok(())
}

/// A crontab field as cron text: a string as written, a number, or a list joined by commas.
fn cron_field(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.split_whitespace().collect::<Vec<_>>().join("")),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(cron_field).collect::<Result<Vec<_>, _>>().map(|parts| parts.join(","))
        }
        other => Err(format!("{other} is not a field beatd can read")),
    }
}

/// `90` → `"90s"`, `300` → `"5m"`, `7200` → `"2h"`, `86400` → `"1d"`.
fn duration(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A JSON value as an inline TOML value; `None` and values the dump could not carry are refused.
fn toml_value(v: &Value) -> Result<String, String> {
    fn check(v: &Value) -> Result<(), String> {
        match v {
            Value::Null => Err("None has no TOML form".into()),
            Value::Object(o) if o.contains_key("__unsupported__") => {
                Err(format!("a {} has no TOML form", o["__unsupported__"].as_str().unwrap_or("value")))
            }
            Value::Object(o) => o.values().try_for_each(check),
            Value::Array(a) => a.iter().try_for_each(check),
            _ => Ok(()),
        }
    }
    check(v)?;
    toml::Value::try_from(v).map(|t| t.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump(entries: Value) -> Value {
        json!({"celery": "5.4.0", "timezone": "Europe/Berlin", "broker_url": "redis://:pw@127.0.0.1:6379/0",
               "broker_transport_options": {"priority_steps": [0, 3, 6, 9], "visibility_timeout": 3600}, "entries": entries})
    }

    #[test]
    fn entries_become_celery_jobs_with_the_day_rule_kept() {
        let out = import(
            &dump(json!([
                {"name": "cleanup every day", "task": "t.cleanup", "args": [30], "kwargs": {},
                 "schedule": {"type": "crontab", "minute": 0, "hour": 2, "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 "options": {}, "route": {"queue": "celery"}},
                {"name": "f13", "task": "t.f", "args": [], "kwargs": {"a": {"b": [1, "x"]}},
                 "schedule": {"type": "crontab", "minute": [0, 30], "hour": "9", "day_of_week": "fri", "day_of_month": 13, "month_of_year": "*"},
                 "options": {"queue": "reports", "priority": 7, "expires": 600}, "route": {"queue": "reports"}},
                {"name": "often", "task": "t.o", "args": [], "kwargs": {}, "schedule": {"type": "interval", "seconds": 300.0, "relative": false},
                 "options": {}, "route": {"queue": "celery"}},
            ])),
            "proj.celery:app",
        )
        .expect("imports");
        assert!(out.contains("url = \"redis://127.0.0.1:6379/0\"") && !out.contains("pw"), "{out}");
        assert!(out.contains("# The broker's password was left out"), "{out}");
        assert!(out.contains("transport_options = { priority_steps = [0, 3, 6, 9] }"), "{out}");
        assert!(
            out.contains(
                "[jobs.cleanup-every-day]\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\naction = \"celery\""
            ),
            "{out}"
        );
        assert!(out.contains("args = [30]\n"), "{out}");
        assert!(out.contains("[jobs.f13]\ncron = \"0,30 9 13 * fri\"\nday_match = \"both\""), "{out}");
        assert!(
            out.contains("kwargs = { a = { b = [1, \"x\"] } }\nqueue = \"reports\"\nexpires = \"10m\"\npriority = 7\n"),
            "{out}"
        );
        assert!(out.contains("[jobs.often]\nevery = \"5m\"\n"), "{out}");
    }

    #[test]
    fn what_beatd_cannot_express_is_refused_with_the_entry_and_why() {
        let errors = import(
            &dump(json!([
                {"name": "sunrise", "task": "t", "schedule": {"type": "solar", "event": "sunrise"}, "args": [], "kwargs": {}, "options": {}},
                {"name": "rel", "task": "t", "schedule": {"type": "interval", "seconds": 60.0, "relative": true}, "args": [], "kwargs": {}, "options": {}},
                {"name": "none", "task": "t", "schedule": {"type": "interval", "seconds": 60.0}, "args": [null], "kwargs": {}, "options": {}},
                {"name": "half", "task": "t", "schedule": {"type": "interval", "seconds": 0.5}, "args": [], "kwargs": {}, "options": {}},
                {"name": "odd", "task": "t", "schedule": {"type": "interval", "seconds": 60.0}, "args": [], "kwargs": {}, "options": {"link": "x"}},
            ])),
            "app",
        )
        .expect_err("refused");
        let text = errors.join("\n");
        for want in [
            "entry \"sunrise\": solar(\"sunrise\", ...) follows the sun",
            "entry \"rel\": relative=True",
            "entry \"none\": args: None has no TOML form",
            "entry \"half\": an interval of 0.5 s",
            "entry \"odd\": options.link: not an option beatd can send",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }
}
