//! The envelope byte for byte (golden JSON), so a format change is caught without Python, and
//! the parts the protocol notes call out: priority steps and kombu's transport options,
//! expires with an offset, timelimit order, the base64 body, reprs cut like Celery's.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use chrono::DateTime;
use serde_json::Value;

use crate::broker::{BrokerConfig, BrokerUrl, TransportOptions};
use crate::config::parse_str;
use crate::jobs::Action;

fn broker(url: &str, transport: TransportOptions) -> BrokerConfig {
    BrokerConfig { name: "main".into(), url: BrokerUrl::parse(url).expect("valid"), transport, tls: Default::default() }
}

fn redis() -> BrokerConfig {
    broker("redis://127.0.0.1:6379/0", TransportOptions::default())
}

fn rabbitmq() -> BrokerConfig {
    broker("amqp://guest:guest@127.0.0.1:5672//", TransportOptions::default())
}

fn celery(keys: &str) -> super::Celery {
    let text = format!(
        "[brokers.main]\nurl = \"redis://127.0.0.1:6379/0\"\n[jobs.nightly]\ncron = \"0 3 * * *\"\naction = \"celery\"\nbroker = \"main\"\n{keys}"
    );
    let config = parse_str(&text, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    match &config.jobs[0].action {
        Action::Celery(c) => (**c).clone(),
        other => panic!("{other:?}"),
    }
}

const ID: &str = "0b4c4d2e-3f7a-5d1e-9c55-6a7e0f1d2c3b";
const TAG: &str = "5e0f7c1a-8a44-4b4e-a0a2-93e1b2f0c6d4";

fn slot() -> DateTime<chrono::Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T03:00:00Z").expect("valid").into()
}

#[test]
fn the_default_envelope_is_byte_for_byte_the_golden_one() {
    let c = celery("task = \"tasks.cleanup\"\nargs = [30, \"uploads\"]\nkwargs = { dry_run = false }\n");
    let got = c.envelope(ID, slot(), "beatd@host", TAG);
    assert_eq!(got, include_str!("golden-default.json").trim_end());
    assert_eq!(redis().celery_key(&c.queue, 0), "celery");
}

#[test]
fn every_option_is_byte_for_byte_the_golden_one() {
    let c = celery(
        "task = \"reports.weekly\"\nqueue = \"reports\"\npriority = 7\nexpires = \"10m\"\ntime_limit = \"5m\"\n\
         soft_time_limit = \"4m30s\"\nheaders = { team = \"ops\" }\n",
    );
    let got = c.envelope(ID, slot(), "beatd@host", TAG);
    assert_eq!(got, include_str!("golden-options.json").trim_end());
    let v: Value = serde_json::from_str(&got).expect("json");
    // timelimit is [hard, soft]; expires carries its offset; the priority is the job's own (as
    // kombu's client sends it) and the list is its step's.
    assert_eq!(v["headers"]["timelimit"], serde_json::json!([300, 270]));
    assert_eq!(v["headers"]["expires"], "2026-11-24T03:10:00.000000+00:00");
    assert_eq!(v["properties"]["priority"], 7);
    assert_eq!(redis().celery_key(&c.queue, 7), "reports\x06\x166");
    let body = base64::engine::general_purpose::STANDARD.decode(v["body"].as_str().expect("body")).expect("base64");
    let body: Value = serde_json::from_slice(&body).expect("body json");
    assert_eq!(body, serde_json::json!([[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]));
}

#[test]
fn priorities_map_to_kombus_redis_steps() {
    let default = TransportOptions::default();
    let steps: Vec<u32> = (0..=9).map(|p| default.step(p)).collect();
    assert_eq!(steps, [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
    // Every priority its own list, with ":" between: what `priority_steps = list(range(10))`
    // and `sep = ":"` make kombu's workers poll.
    let ten = TransportOptions { priority_steps: (0..10).collect(), sep: ":".into(), global_keyprefix: "app1:".into() };
    let keys: Vec<String> = [0, 3, 5, 9].iter().map(|p| ten.queue_key("celery", *p)).collect();
    assert_eq!(keys, ["app1:celery", "app1:celery:3", "app1:celery:5", "app1:celery:9"]);
    // A priority below the first step takes the last one: Python's steps[-1], as kombu does.
    let odd = TransportOptions { priority_steps: vec![3, 6], ..TransportOptions::default() };
    assert_eq!((odd.step(1), odd.step(4), odd.step(9)), (6, 3, 6));
    // RabbitMQ: the routing key is the queue, whatever the priority.
    assert_eq!(rabbitmq().celery_key("reports", 9), "reports");
}

#[test]
fn reprs_are_cut_like_celerys_and_the_body_keeps_everything() {
    let big = "é".repeat(150_000);
    let c = celery(&format!("task = \"t\"\nkwargs = {{ blob = \"{big}\" }}\nargs = [\"{big}\"]\n"));
    let v: Value = serde_json::from_str(&c.envelope(ID, slot(), "beatd@host", TAG)).expect("json");
    for key in ["argsrepr", "kwargsrepr"] {
        let repr = v["headers"][key].as_str().expect("repr");
        assert!(repr.len() <= super::REPR_MAX && repr.ends_with("..."), "{key}: {} bytes", repr.len());
    }
    let body = base64::engine::general_purpose::STANDARD.decode(v["body"].as_str().expect("body")).expect("base64");
    let body: Value = serde_json::from_slice(&body).expect("body json");
    assert_eq!(body[1]["blob"].as_str().map(str::len), Some(big.len()));
}

#[test]
fn the_task_id_is_the_fire_id_and_delivery_tags_are_unique() {
    let c = celery("task = \"t\"\n");
    let id = crate::job::fire_id("nightly", slot()).to_string();
    let r = redis();
    let (a, b) = (c.message("nightly", id.clone(), slot(), &r), c.message("nightly", id.clone(), slot(), &r));
    let (a, b): (Value, Value) =
        (serde_json::from_str(&a.payload).expect("json"), serde_json::from_str(&b.payload).expect("json"));
    assert_eq!(a["headers"]["id"], id.as_str());
    assert_eq!(a["headers"]["root_id"], id.as_str());
    assert_eq!(a["headers"]["celery_beat_task"], true);
    assert_ne!(a["properties"]["delivery_tag"], b["properties"]["delivery_tag"]);
}

#[test]
fn on_rabbitmq_the_priority_is_celerys_own_and_the_key_the_queue() {
    let c = celery("task = \"t\"\nqueue = \"reports\"\npriority = 7\n");
    let m = c.message("nightly", ID.into(), slot(), &rabbitmq());
    assert_eq!(m.key, "reports");
    let (body, props) = crate::broker::amqp::from_envelope(&m.payload);
    assert_eq!(props.priority(), &Some(7));
    let body: Value = serde_json::from_slice(&body).expect("raw JSON body, not base64");
    assert_eq!(body[0], serde_json::json!([]));
    let headers = props.headers().as_ref().expect("headers");
    assert!(headers.inner().contains_key("task") && headers.inner().contains_key("celery_beat_task"));
}

#[test]
fn messages_from_the_template_equal_envelopes_built_in_full() {
    for keys in [
        "task = \"t\"\nargs = [1, \"two\"]\n",
        "task = \"t\"\nexpires = \"90s\"\npriority = 4\nheaders = { x = [1, 2] }\n",
        // A job whose own values contain a marker falls back to building in full.
        "task = \"t\"\nargs = [\"\\u0001beatd-id\"]\n",
    ] {
        let c = celery(keys);
        for b in [redis(), rabbitmq()] {
            for s in [slot(), slot() + chrono::Duration::seconds(60)] {
                let id = crate::job::fire_id("nightly", s).to_string();
                let m = c.message("nightly", id.clone(), s, &b);
                let got: Value = serde_json::from_str(&m.payload).expect("json");
                let tag = got["properties"]["delivery_tag"].as_str().expect("tag").to_string();
                let full = c.envelope(&id, s, &super::origin(), &tag);
                assert_eq!(m.payload, full, "byte for byte: {keys}");
            }
        }
    }
}

/// Two jobs that differ only in their arguments share every piece of their templates but the
/// first (the body and `argsrepr`): what 50 000 such jobs keep is one piece each.
#[test]
fn templates_of_like_jobs_share_all_but_their_own_piece() {
    let template = |args: &str| {
        let c = celery(&format!("task = \"t.x\"\nargs = [{args}]\n"));
        let _ = c.message("nightly", "id".into(), slot(), &redis());
        c.template.get().expect("made at the first message").clone()
    };
    let (a, b) = (template("1"), template("2"));
    let (a, b) = (&a.parts.as_ref().expect("sound").0, &b.parts.as_ref().expect("sound").0);
    assert_eq!(a.len(), 6);
    assert!(!Arc::ptr_eq(&a[0], &b[0]) && a[0] != b[0], "the body differs");
    for (x, y) in a.iter().zip(b.iter()).skip(1) {
        assert!(Arc::ptr_eq(x, y), "shared: {x}");
    }
}
