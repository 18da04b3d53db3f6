//! The config's JSON Schema, for editors: `beatd schema` prints it, `docs/beatd.schema.json`
//! is a copy (a test keeps the two equal), and the example config points at it with a
//! `#:schema` line, so Taplo ("Even Better TOML") and other JSON-Schema-aware editors validate
//! and complete `beatd.toml` as it is typed.
//!
//! The parser in this module's siblings stays the authority: it reads TOML with positions and
//! checks what a schema cannot (a cron expression, a zone, a name that must exist). The schema
//! is written here, beside it, key by key with its type, allowed values, default and doc line;
//! the action key lists come from [`super::actions`], and the tests check that every config
//! the parser accepts in the test suite also passes the schema, and that configs with a wrong
//! key or type do not.

use serde_json::{Map, Value, json};

use super::actions;

/// One key: its name, its schema (type, allowed values, default) and its doc line.
struct Key {
    name: &'static str,
    schema: Value,
}

fn key(name: &'static str, mut schema: Value, doc: &str) -> Key {
    schema["description"] = Value::String(doc.to_string());
    Key { name, schema }
}

fn with_default(mut schema: Value, default: Value) -> Value {
    schema["default"] = default;
    schema
}

fn string() -> Value {
    json!({"type": "string"})
}

/// A duration as humantime reads it: `90s`, `5m`, `1h30m`, `2d`, `1h 30m`.
fn duration() -> Value {
    json!({"type": "string", "pattern": "^\\s*[0-9]+\\s*[a-zA-Zµ]+(\\s*[0-9]+\\s*[a-zA-Zµ]+)*\\s*$"})
}

fn integer(minimum: i64) -> Value {
    json!({"type": "integer", "minimum": minimum})
}

fn boolean(default: bool) -> Value {
    json!({"type": "boolean", "default": default})
}

fn one_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn string_or_strings() -> Value {
    json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
}

fn string_table() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// A table with exactly `keys`, `required` among them.
fn table(doc: &str, keys: Vec<Key>, required: &[&str]) -> Value {
    let mut properties = Map::new();
    for k in keys {
        properties.insert(k.name.to_string(), k.schema);
    }
    let mut t = json!({"type": "object", "description": doc, "properties": properties, "additionalProperties": false});
    if !required.is_empty() {
        t["required"] = json!(required);
    }
    t
}

fn tls_keys() -> Vec<Key> {
    vec![
        key("ca_file", string(), "A PEM file of CA certificates to trust instead of the system's (TLS URLs only)."),
        key("client_cert", string(), "A PEM client certificate, for servers that ask for one (with client_key)."),
        key("client_key", string(), "The client certificate's PEM private key (with client_cert)."),
    ]
}

const SCHEDULER_DOC: &str = "Settings of the whole scheduler (main file only).";

fn scheduler_keys() -> Vec<Key> {
    vec![
        key(
            "timezone",
            string(),
            "Default zone of cron jobs, an IANA name such as \"Europe/Berlin\"; default: TZ, then /etc/localtime, else UTC.",
        ),
        key(
            "state_dir",
            with_default(string(), json!("state")),
            "Folder of the run history, journal and outbox (SQLite); relative to the config's folder.",
        ),
        key(
            "shutdown_grace",
            with_default(duration(), json!("30s")),
            "How long running jobs get to finish on shutdown before they are killed.",
        ),
        key("max_running", integer(1), "At most this many runs at once; default: no cap."),
        key(
            "history_keep",
            with_default(duration(), json!("30d")),
            "Runs older than this are deleted from the history.",
        ),
        key(
            "history",
            with_default(one_of(&["all", "failures", "off"]), json!("all")),
            "Which runs are written to the history: all, failures (failures, skips, retries, recoveries; successes only counted), or off. A job may set its own.",
        ),
        key(
            "history_keep_runs",
            integer(1),
            "At most this many runs per job are kept (a job may set its own); default: no cap.",
        ),
        key(
            "include",
            strings(),
            "Drop-in files with more jobs, notifiers, brokers and databases: globs, relative to the config's folder.",
        ),
        key(
            "max_outbox",
            with_default(integer(1), json!(100_000)),
            "Queue messages kept while a broker is down; past it the oldest are dropped.",
        ),
    ]
}

const API_DOC: &str = "The HTTP API, metrics and dashboard (main file only); off without this section.";

fn api_keys() -> Vec<Key> {
    vec![
        key("listen", string(), "An address and port such as \"127.0.0.1:8089\", or \"unix:/run/beatd/api.sock\"."),
        key(
            "token_file",
            string(),
            "A file holding the bearer token for mutations; default: one beatd makes in the state folder.",
        ),
        key("allow_unauthenticated", boolean(false), "true: mutations need no token (warned at every start)."),
        key(
            "allowed_hosts",
            strings(),
            "Host names the API answers to besides its listen address, loopback names and IP addresses.",
        ),
        key(
            "max_connections",
            with_default(integer(1), json!(512)),
            "Open connections at most (and never more than half the descriptor limit).",
        ),
        key(
            "per_job_metrics",
            boolean(true),
            "false drops the per-job metric series (label job_name), for very large schedules.",
        ),
        key("dashboard", boolean(true), "false: no web pages at /, /timeline and /jobs/NAME."),
    ]
}

const CLUSTER_DOC: &str = "Replicas: one node fires, the others stand by (main file only).";

fn cluster_keys() -> Vec<Key> {
    vec![
        key(
            "redis",
            string(),
            "The Redis holding the lease: redis://, rediss://, unix:// or redis+sentinel://HOST:PORT[,...]/SERVICE[/DB].",
        ),
        key("name", with_default(string(), json!("beatd")), "The key prefix: several clusters can share one Redis."),
        key("lease", with_default(duration(), json!("10s")), "A dead leader is replaced within this."),
        key("node", string(), "This node's name in logs and status; default: hostname-pid."),
    ]
}

const NOTIFIER_DOC: &str = "A notifier jobs name in `notify`: a webhook or a mailbox.";

fn notifier_keys() -> Vec<Key> {
    let mut keys = vec![
        key("kind", one_of(&["webhook", "email"]), "The notifier's kind."),
        key("url", string(), "webhook: where it is POSTed (http:// or https://)."),
        key(
            "format",
            with_default(one_of(&["json", "slack"]), json!("json")),
            "webhook: json (beatd's JSON) or slack ({\"text\": ...}).",
        ),
        key(
            "smtp",
            string(),
            "email: the server, smtp://host[:port] (STARTTLS, port 587) or smtps://host[:port] (TLS, port 465).",
        ),
        key("starttls", boolean(true), "email, smtp://: false sends in plain text, for a relay on this host only."),
        key("from", string(), "email: the sender, \"beatd@example.com\" or \"beatd <beatd@example.com>\"."),
        key("to", strings(), "email: the recipients."),
        key("username", string(), "email: the SMTP user (with password_file; sent over TLS only)."),
        key(
            "password_file",
            string(),
            "email: a file holding the SMTP password, read at each delivery and never logged.",
        ),
        key("attach_report", boolean(true), "email: reports attach their Markdown."),
    ];
    keys.extend(tls_keys());
    keys
}

/// A notifier's table: each kind its own required keys and the keys it takes.
fn notifier() -> Value {
    let mut t = table(NOTIFIER_DOC, notifier_keys(), &["kind"]);
    let kind = |kind: &str, required: &[&str], keys: &[&str]| {
        let mut allowed = vec!["kind"];
        allowed.extend_from_slice(keys);
        json!({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
               "then": {"required": required, "propertyNames": {"enum": allowed}}})
    };
    t["allOf"] = json!([
        kind("webhook", &["url"], &["url", "format", "ca_file", "client_cert", "client_key"]),
        kind(
            "email",
            &["smtp", "from", "to"],
            &["smtp", "starttls", "from", "to", "username", "password_file", "ca_file", "attach_report"]
        ),
    ]);
    t
}

const BROKER_DOC: &str = "A message broker queue jobs name in `broker`.";

fn broker_keys() -> Vec<Key> {
    let mut options = vec![
        key(
            "priority_steps",
            json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}),
            "kombu's priority steps: the lists a priority maps to (default [0, 3, 6, 9]).",
        ),
        key(
            "sep",
            with_default(string(), json!("\u{6}\u{16}")),
            "kombu's separator between a queue and its priority step.",
        ),
        key("global_keyprefix", with_default(string(), json!("")), "A prefix kombu puts before every Redis key."),
    ];
    for name in super::sections::WORKER_ONLY_OPTIONS {
        options.push(key(name, json!({}), "A worker-only kombu option: accepted, without effect on what beatd sends."));
    }
    let mut keys = vec![
        key(
            "url",
            string(),
            "redis://[:password@]host:port/db, rediss:// (TLS), unix:///path.sock, or amqp://user:pass@host:port/vhost (amqps:// for TLS).",
        ),
        key(
            "transport_options",
            table("kombu's Redis transport options: the same as the workers' broker_transport_options.", options, &[]),
            "kombu's Redis transport options.",
        ),
    ];
    keys.extend(tls_keys());
    keys
}

const DATABASE_DOC: &str = "A database `sql` and `sql_check` jobs name in `database`.";

fn database_keys() -> Vec<Key> {
    vec![
        key("url", string(), "postgres://, mysql://, mariadb:// or sqlite:///path.db; never with a password in it."),
        key("password_file", string(), "A file holding the password."),
    ]
}

/// Keys every job may have, whatever its action.
fn job_keys() -> Vec<Key> {
    vec![
        key(
            "cron",
            string(),
            "Five fields, minute hour day-of-month month day-of-week (Vixie cron meaning), or @yearly, @monthly, @weekly, @daily, @hourly, @reboot. Either cron or every.",
        ),
        key(
            "every",
            duration(),
            "An interval such as \"90s\", \"5m\", \"1h30m\", \"2d\" (at least 1 s), aligned to the Unix epoch. Either cron or every.",
        ),
        key("offset", duration(), "With every: shifts the interval's grid by this much (less than the interval)."),
        key(
            "day_match",
            with_default(one_of(&["either", "both"]), json!("either")),
            "With cron, when both day fields are restricted: a day matching either fires (Vixie cron), or only one matching both (Celery's crontab).",
        ),
        key("timezone", string(), "The zone of a cron job, an IANA name; default: the scheduler's."),
        key("enabled", boolean(true), "false keeps the job in the file without scheduling it."),
        key(
            "action",
            one_of(&[
                "command",
                "cleanup",
                "http_check",
                "tcp_check",
                "sql",
                "sql_check",
                "report",
                "celery",
                "push",
                "noop",
            ]),
            "What the job does.",
        ),
        key(
            "timeout",
            duration(),
            "A run still going after this is stopped (checks: the request's timeout, default 10s).",
        ),
        key(
            "overlap",
            with_default(one_of(&["skip", "queue", "allow", "replace"]), json!("skip")),
            "What a slot does while the previous run still goes: skip it, queue it (one waits), allow both, or replace the running one.",
        ),
        key("retries", with_default(integer(0), json!(0)), "Failed runs are retried this many times."),
        key(
            "retry_delay",
            with_default(duration(), json!("1s")),
            "The first retry's delay; it doubles after each failure.",
        ),
        key("retry_max_delay", duration(), "The retry delay grows up to this."),
        key("jitter", duration(), "Run up to this long after the slot: the same delay for the same job and slot."),
        key(
            "catch_up",
            with_default(one_of(&["skip", "latest", "all"]), json!("latest")),
            "After downtime: skip missed slots, run the latest once, or run all of them.",
        ),
        key("catch_up_limit", integer(1), "With catch_up = \"all\": at most this many missed slots, the latest."),
        key("catch_up_window", duration(), "Missed slots older than this are ignored; default: no limit."),
        key("notify", string(), "A [notifiers.NAME] told when the job starts failing and when it recovers."),
        key(
            "notify_on",
            json!({"type": "array", "items": {"enum": crate::notifications::EVENTS}}),
            "Which changes are notified: failure, recovery (both by default).",
        ),
        key(
            "history",
            one_of(&["all", "failures", "off"]),
            "Which of this job's runs the history writes; default: the scheduler's.",
        ),
        key(
            "history_keep_runs",
            integer(1),
            "At most this many of this job's runs are kept; default: the scheduler's.",
        ),
    ]
}

/// Every action's own keys, with the schema of each (one per name across actions; where two
/// actions give a name different meanings, the per-action rules narrow it).
fn action_keys() -> Vec<Key> {
    let json_value = json!({});
    vec![
        key("command", string(), "command: the shell command (/bin/sh -c), run in its own process group."),
        key("workdir", string(), "command: the working directory."),
        key("env", string_table(), "command: environment variables for the child."),
        key(
            "kill_grace",
            with_default(duration(), json!("10s")),
            "command: after SIGTERM on a timeout, SIGKILL follows this much later.",
        ),
        key("output_limit", with_default(integer(0), json!(65_536)), "command: bytes of output logged per run."),
        key("user", string(), "command: run as this user (when beatd runs as root)."),
        key("group", string(), "command: run as this group (when beatd runs as root)."),
        key("path", string(), "cleanup: the folder to clean; links anywhere in it, and /, are refused."),
        key("older_than", duration(), "cleanup: files modified longer ago than this are deleted."),
        key("pattern", string_or_strings(), "cleanup: a glob or a list of globs on file names; default: every file."),
        key("recursive", boolean(false), "cleanup: also clean the subfolders."),
        key("remove_empty_dirs", boolean(false), "cleanup: remove subfolders left empty."),
        key("dry_run", boolean(false), "cleanup: count what would go, delete nothing."),
        key("url", string(), "http_check: the URL to request."),
        key(
            "method",
            string(),
            "http_check: the HTTP method (default GET); push: rpush or lpush (Redis, default rpush).",
        ),
        key(
            "expect_status",
            json!({"oneOf": [
                {"type": "integer"},
                {"type": "string"},
                {"type": "array", "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}
            ]}),
            "http_check: the statuses that mean up: 200, \"200-299\", or a list; default: any 2xx or 3xx.",
        ),
        key("expect_body", string(), "http_check: up only if the body contains this."),
        key(
            "headers",
            json!({"type": "object"}),
            "http_check: request headers (strings); celery: extra message headers.",
        ),
        key("ca_file", string(), "http_check (https://): a PEM file of CA certificates to trust."),
        key("client_cert", string(), "http_check (https://): a PEM client certificate."),
        key("client_key", string(), "http_check (https://): the client certificate's key."),
        key("address", string(), "tcp_check: host:port to connect to."),
        key("database", string(), "sql, sql_check: a [databases.NAME]."),
        key("statements", string_or_strings(), "sql: one statement or a list, run in order."),
        key(
            "transaction",
            boolean(true),
            "sql: run the statements in one transaction (false for VACUUM and the like).",
        ),
        key("statement_timeout", duration(), "sql: a statement past this is cancelled on the server."),
        key("query", string(), "sql_check: a query that returns one value."),
        key(
            "expect",
            string(),
            "sql_check: the condition the value must meet: \"< 1000\", \">= 1\", \"== ok\", \"!= 0\".",
        ),
        key("output_dir", string(), "report: the folder the report-DATE.md and .json files are written to."),
        key("period", duration(), "report: the period it covers; default: since this job's last report, else 7 days."),
        key("jobs", strings(), "report: the jobs it covers; default: all."),
        key("broker", string(), "celery, push: a [brokers.NAME]."),
        key("task", string(), "celery: the registered task name."),
        key("args", json!({"type": "array"}), "celery: the task's positional arguments."),
        key("kwargs", json!({"type": "object"}), "celery: the task's keyword arguments."),
        key("queue", string(), "celery: the queue (default \"celery\"); push: the list or queue to push to."),
        key("priority", json!({"type": "integer", "minimum": 0, "maximum": 9}), "celery: the message priority, 0-9."),
        key("expires", duration(), "celery: after the slot; workers discard the task later than that."),
        key("time_limit", duration(), "celery: the task's hard time limit."),
        key("soft_time_limit", duration(), "celery: the task's soft time limit."),
        key(
            "on_broker_down",
            with_default(one_of(&["outbox", "drop"]), json!("outbox")),
            "celery, push: keep the message until the broker is back (outbox), or drop it at once.",
        ),
        key("payload", json_value, "push: any value, sent as the message's payload."),
    ]
}

/// Each action's required keys and the keys it takes (besides every job's).
fn action_rules() -> Vec<Value> {
    let common: Vec<&str> = job_keys().iter().map(|k| k.name).collect();
    let rules: [(&str, &[&str], &[&str]); 10] = [
        ("command", actions::COMMAND_KEYS, &["command"]),
        ("cleanup", actions::CLEANUP_KEYS, &["path", "older_than"]),
        ("http_check", actions::HTTP_CHECK_KEYS, &["url"]),
        ("tcp_check", actions::TCP_CHECK_KEYS, &["address"]),
        ("sql", actions::SQL_KEYS, &["database", "statements"]),
        ("sql_check", actions::SQL_CHECK_KEYS, &["database", "query", "expect"]),
        ("report", actions::REPORT_KEYS, &["output_dir"]),
        ("celery", actions::CELERY_KEYS, &["broker", "task"]),
        ("push", actions::PUSH_KEYS, &["broker", "queue"]),
        ("noop", &[], &[]),
    ];
    rules
        .iter()
        .map(|(action, keys, required)| {
            let allowed: Vec<&str> = common.iter().chain(keys.iter()).copied().collect();
            let mut then = json!({"required": required, "propertyNames": {"enum": allowed}});
            match *action {
                "push" => then["properties"] = json!({"method": {"enum": ["rpush", "lpush"]}}),
                "http_check" => then["properties"] = json!({"headers": string_table()}),
                _ => {}
            }
            json!({"if": {"properties": {"action": {"const": action}}, "required": ["action"]}, "then": then})
        })
        .collect()
}

const JOB_DOC: &str = "A job: its schedule, its action and the action's keys, its execution policy.";

fn job() -> Value {
    let mut keys = job_keys();
    keys.extend(action_keys());
    let mut t = table(JOB_DOC, keys, &["action"]);
    t["oneOf"] = json!([{"required": ["cron"]}, {"required": ["every"]}]);
    t["allOf"] = Value::Array(action_rules());
    t
}

/// Named tables: `[SECTION.NAME]`, names of letters, digits, ".", "_", "-".
fn named(doc: &str, item: Value) -> Value {
    json!({
        "type": "object",
        "description": doc,
        "propertyNames": {"pattern": "^[A-Za-z0-9._-]+$"},
        "additionalProperties": item,
    })
}

/// The schema, as `beatd schema` prints it.
pub fn schema() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "beatd.toml",
        "description": "The config of beatd, a periodic scheduler daemon: its jobs and what they need. Drop-in files take the same sections except scheduler, api and cluster.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "scheduler": table(SCHEDULER_DOC, scheduler_keys(), &[]),
            "api": table(API_DOC, api_keys(), &["listen"]),
            "cluster": table(CLUSTER_DOC, cluster_keys(), &["redis"]),
            "notifiers": named("Notifiers, by name.", notifier()),
            "brokers": named("Message brokers, by name.", table(BROKER_DOC, broker_keys(), &["url"])),
            "databases": named("Databases, by name.", table(DATABASE_DOC, database_keys(), &["url"])),
            "jobs": named("The jobs, by name.", job()),
        },
    })
}

/// A section of the config reference (beatd.toml(5)): its heading, what it is, its keys in
/// the order a reader meets them, each with its kind and doc line.
#[derive(Debug)]
pub struct Section {
    pub heading: &'static str,
    pub doc: &'static str,
    /// (key, kind such as `duration, default "30s"`, doc line).
    pub keys: Vec<(&'static str, String, String)>,
}

/// The config reference, section by section, from the same keys as the schema.
pub fn reference() -> Vec<Section> {
    let section = |heading, doc, keys: Vec<Key>| Section {
        heading,
        doc,
        keys: keys
            .into_iter()
            .map(|k| (k.name, kind(&k.schema), k.schema["description"].as_str().unwrap_or("").to_string()))
            .collect(),
    };
    vec![
        section("[scheduler]", SCHEDULER_DOC, scheduler_keys()),
        section("[api]", API_DOC, api_keys()),
        section("[cluster]", CLUSTER_DOC, cluster_keys()),
        section("[notifiers.NAME]", NOTIFIER_DOC, notifier_keys()),
        section("[brokers.NAME]", BROKER_DOC, broker_keys()),
        section("[databases.NAME]", DATABASE_DOC, database_keys()),
        section("[jobs.NAME]", JOB_DOC, job_keys()),
        section("[jobs.NAME], by action", "Each action takes its own keys besides the job's.", action_keys()),
    ]
}

/// A key's kind as a reader says it: `duration, default "30s"`, `one of: skip, queue`.
fn kind(schema: &Value) -> String {
    let mut text = if let Some(values) = schema["enum"].as_array() {
        let values: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
        format!("one of: {}", values.join(", "))
    } else if schema.get("pattern").is_some() {
        "duration".to_string()
    } else if schema.get("oneOf").is_some() {
        "string or list".to_string()
    } else {
        match schema["type"].as_str() {
            Some("array") => "list".to_string(),
            Some("object") => "table".to_string(),
            Some(t) => t.to_string(),
            None => "any value".to_string(),
        }
    };
    match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
        (Some(lo), Some(hi)) => text.push_str(&format!(" {lo}-{hi}")),
        (Some(lo), None) => text.push_str(&format!(" >= {lo}")),
        _ => {}
    }
    if let Some(default) = schema.get("default") {
        text.push_str(&format!(", default {default}"));
    }
    text
}

/// The schema as pretty JSON with a final newline: what `beatd schema` prints and
/// `docs/beatd.schema.json` holds.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_an_action_reads_is_described() {
        let described: Vec<&str> = action_keys().iter().map(|k| k.name).collect();
        for k in actions::all_keys() {
            assert!(described.contains(&k), "{k} has no schema");
        }
        for k in action_keys().iter().chain(job_keys().iter()) {
            assert!(k.schema["description"].as_str().is_some_and(|d| d.len() > 10), "{} has no doc", k.name);
        }
    }

    #[test]
    fn the_committed_copy_is_what_the_binary_prints() {
        let committed = include_str!("../../docs/beatd.schema.json");
        assert!(
            committed == text(),
            "docs/beatd.schema.json is stale: run `cargo run -- schema > docs/beatd.schema.json`"
        );
    }
}
