//! The config's JSON Schema against real validators: every config the suite writes that beatd
//! accepts passes it (checked in-process, by the `jsonschema` crate, as `Beatd::with_config`
//! and `Beatd::write` write them), and the example config, a config with every section and
//! action, and configs with a wrong key or type go through Python's `jsonschema`, as editors
//! and CI pipelines would run it.

use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

use serde_json::Value;

use crate::util::{Beatd, venv_python};

static VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| jsonschema::validator_for(&beatd::config::schema::schema()).expect("the schema compiles"));

/// TOML as a JSON-Schema validator sees it (Taplo's mapping: dates and times are strings).
fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(n) => Value::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// If beatd accepts `text` as a config in `dir`, the schema must too.
pub fn accepted_configs_pass(text: &str, dir: &Path) {
    if beatd::config::parse_str(text, &dir.join("beatd.toml"), dir).is_err() {
        return;
    }
    let Ok(table) = text.parse::<toml::Table>() else { return };
    let json = to_json(&toml::Value::Table(table));
    let errors: Vec<String> = VALIDATOR.iter_errors(&json).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "beatd accepts this config but its schema does not:\n{}\n{text}", errors.join("\n"));
}

/// Python's jsonschema (Draft 7) on TOML files: per file, `ok` or its errors.
const VALIDATE: &str = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = json.loads(json.dumps(tomllib.load(f), default=str))
    errors = sorted(e.message for e in validator.iter_errors(doc))
    print(json.dumps({"file": path, "errors": errors}))
"#;

fn python_validates(files: &[&Path]) -> Vec<(String, Vec<String>)> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/beatd.schema.json");
    let out =
        Command::new(venv_python()).arg("-c").arg(VALIDATE).arg(schema).args(files).output().expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            let errors =
                v["errors"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).map(String::from).collect();
            (v["file"].as_str().unwrap_or("").to_string(), errors)
        })
        .collect()
}

/// Every section and every action, with most of their keys.
const EVERYTHING: &str = r#"#:schema ../docs/beatd.schema.json
[scheduler]
timezone = "Europe/Berlin"
state_dir = "state"
shutdown_grace = "30s"
max_running = 16
history_keep = "30d"
history = "failures"
history_keep_runs = 1000
max_outbox = 1000

[api]
listen = "127.0.0.1:8089"
allow_unauthenticated = false
allowed_hosts = ["beatd.internal"]
max_connections = 64
per_job_metrics = true
dashboard = false

[cluster]
redis = "redis://127.0.0.1:6379/0"
name = "prod"
lease = "10s"
node = "beat-a"

[notifiers.chat]
kind = "webhook"
url = "https://hooks.example.com/x"
format = "slack"

[brokers.main]
url = "redis://127.0.0.1:6379/0"
transport_options = { priority_steps = [0, 3, 6, 9], sep = ":", global_keyprefix = "", visibility_timeout = 3600 }

[databases.app]
url = "postgres://beatd@127.0.0.1:5432/app"

[jobs.backup]
cron = "30 2 * * *"
timezone = "America/New_York"
enabled = true
action = "command"
command = "/usr/local/bin/backup --full"
workdir = "/tmp"
env = { MODE = "full" }
kill_grace = "5s"
output_limit = 4096
timeout = "1h"
overlap = "queue"
retries = 3
retry_delay = "1m"
retry_max_delay = "10m"
jitter = "30s"
catch_up = "all"
catch_up_limit = 10
catch_up_window = "1d"
notify = "chat"
notify_on = ["failure", "recovery"]
history = "all"
history_keep_runs = 50

[jobs.sweep]
every = "1h"
offset = "5m"
action = "cleanup"
path = "/tmp"
older_than = "7d"
pattern = ["*.tmp", "*.log"]
recursive = true
remove_empty_dirs = true
dry_run = true

[jobs.web]
every = "1m"
action = "http_check"
url = "https://example.com/health"
method = "HEAD"
expect_status = [200, "300-399"]
expect_body = "ok"
headers = { X-Token = "t" }
timeout = "5s"

[jobs.port]
every = "1m"
action = "tcp_check"
address = "127.0.0.1:5432"

[jobs.archive]
cron = "@daily"
action = "sql"
database = "app"
statements = ["DELETE FROM logs WHERE old", "VACUUM"]
transaction = false
statement_timeout = "5m"

[jobs.backlog]
every = "5m"
action = "sql_check"
database = "app"
query = "SELECT count(*) FROM jobs"
expect = "< 1000"

[jobs.weekly]
cron = "0 9 * * 1"
action = "report"
output_dir = "/tmp"
period = "7d"
jobs = ["backup", "web"]

[jobs.task]
every = "30s"
action = "celery"
broker = "main"
task = "app.tasks.work"
args = [1, "two", 2026-11-24T03:00:00Z]
kwargs = { dry_run = false }
queue = "celery"
priority = 3
expires = "1h"
time_limit = "10m"
soft_time_limit = "9m"
headers = { team = "ops" }
on_broker_down = "drop"

[jobs.beat]
every = "30s"
action = "push"
broker = "main"
queue = "heartbeats"
payload = { source = "beatd" }
method = "lpush"

[jobs.idle]
every = "1d"
action = "noop"
"#;

/// Configs beatd refuses for a wrong key or type, and the schema must refuse too.
const WRONG: &[(&str, &str)] = &[
    ("unknown job key", "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\nretry = 3\n"),
    ("another action's key", "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\ncommand = \"true\"\n"),
    ("a number for a duration", "[jobs.a]\nevery = 60\naction = \"noop\"\n"),
    ("a string for a boolean", "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\nenabled = \"yes\"\n"),
    ("an unknown overlap", "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\noverlap = \"sometimes\"\n"),
    ("an unknown action", "[jobs.a]\nevery = \"1m\"\naction = \"comand\"\n"),
    ("no schedule", "[jobs.a]\naction = \"noop\"\n"),
    ("cron and every", "[jobs.a]\ncron = \"* * * * *\"\nevery = \"1m\"\naction = \"noop\"\n"),
    ("a missing required key", "[jobs.a]\nevery = \"1m\"\naction = \"command\"\n"),
    ("an unknown scheduler key", "[scheduler]\ntimezon = \"UTC\"\n"),
    ("an unknown section", "[schedule]\ntimezone = \"UTC\"\n"),
    ("a negative count", "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\nretries = -1\n"),
    (
        "a priority out of range",
        "[brokers.m]\nurl = \"redis://h\"\n[jobs.a]\nevery = \"1m\"\naction = \"celery\"\nbroker = \"m\"\ntask = \"t\"\npriority = 12\n",
    ),
    (
        "a bad push method",
        "[brokers.m]\nurl = \"redis://h\"\n[jobs.a]\nevery = \"1m\"\naction = \"push\"\nbroker = \"m\"\nqueue = \"q\"\nmethod = \"GET\"\n",
    ),
    ("a table for a list", "[scheduler]\ninclude = { a = 1 }\n"),
];

#[test]
fn the_example_and_a_config_of_everything_pass_python_jsonschema() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/beatd.toml");
    let text = std::fs::read_to_string(&example).expect("the example");
    assert!(text.starts_with("#:schema ../docs/beatd.schema.json\n"), "the example names its schema first");
    let b = Beatd::with_config(EVERYTHING);
    let out = b.cmd(&["check", "beatd.toml"]).output().expect("run");
    assert!(out.status.success(), "beatd accepts it: {}", String::from_utf8_lossy(&out.stderr));
    let config = b.path("beatd.toml");
    for (file, errors) in python_validates(&[&example, &config]) {
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
}

#[test]
fn configs_with_a_wrong_key_or_type_fail_beatd_and_the_schema() {
    let b = Beatd::with_config("");
    let mut files = Vec::new();
    for (i, (what, text)) in WRONG.iter().enumerate() {
        let name = format!("wrong-{i}.toml");
        std::fs::write(b.path(&name), text).expect("write");
        let out = b.cmd(&["check", &name]).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "beatd refuses {what}");
        files.push(b.path(&name));
    }
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let results = python_validates(&paths);
    assert_eq!(results.len(), WRONG.len());
    for ((what, _), (file, errors)) in WRONG.iter().zip(results) {
        assert!(!errors.is_empty(), "the schema lets {what} through ({file})");
    }
}

#[test]
fn beatd_schema_prints_the_committed_schema() {
    let out = Beatd::with_config("").cmd(&["schema"]).output().expect("run");
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/beatd.schema.json"))
        .expect("docs/beatd.schema.json");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout) == committed, "stale: cargo run -- schema > docs/beatd.schema.json");
}
