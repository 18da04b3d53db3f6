//! The config loader, structure-aware: documents that are valid TOML, built from the keys and
//! values beatd knows (and some it does not), so the fuzzer spends its time in validation and
//! not in the TOML parser.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const KEYS: &[&str] = &[
    "action",
    "address",
    "allow",
    "allow_unauthenticated",
    "allowed_hosts",
    "args",
    "broker",
    "catch_up",
    "catch_up_limit",
    "catch_up_window",
    "client_name",
    "command",
    "cron",
    "database",
    "dry_run",
    "enabled",
    "env",
    "every",
    "expect",
    "expect_body",
    "expect_status",
    "expires",
    "format",
    "global_keyprefix",
    "group",
    "headers",
    "history_keep",
    "include",
    "jitter",
    "kill_grace",
    "kind",
    "kwargs",
    "lease",
    "listen",
    "max_connections",
    "max_outbox",
    "max_running",
    "method",
    "name",
    "node",
    "notify",
    "notify_on",
    "offset",
    "older_than",
    "on_broker_down",
    "output_dir",
    "output_limit",
    "overlap",
    "password_file",
    "path",
    "pattern",
    "payload",
    "per_job_metrics",
    "priority",
    "priority_steps",
    "query",
    "queue",
    "recursive",
    "remove_empty_dirs",
    "retries",
    "retry_delay",
    "retry_max_delay",
    "retry_on_timeout",
    "sep",
    "shutdown_grace",
    "soft_time_limit",
    "state_dir",
    "statement_timeout",
    "statements",
    "task",
    "time_limit",
    "timeout",
    "timezone",
    "token_file",
    "transaction",
    "transport_options",
    "url",
    "user",
    "visibility_timeout",
    "workdir",
    "side",
];

const WORDS: &[&str] = &[
    "0 2 * * *",
    "*/5 * * * *",
    "30 2 * * *",
    "0 0 L * *",
    "0 9 * * 1#2",
    "@hourly",
    "@reboot",
    "5m",
    "1s",
    "0s",
    "500ms",
    "2d",
    "1h30m",
    "100000000000d",
    "redis://127.0.0.1:6379/0",
    "rediss://h/0",
    "amqp://guest:guest@127.0.0.1:5672//",
    "amqps://h/v",
    "redis+sentinel://h:26379/mymaster",
    "postgres://u@h/db",
    "mysql://root@h/test",
    "sqlite://state/x.db",
    "http://127.0.0.1:8089/healthz",
    "https://example.invalid/",
    "127.0.0.1:9",
    "[::1]:0",
    "Europe/Berlin",
    "America/New_York",
    "Mars/Base",
    "tasks.add",
    "celery",
    "command",
    "noop",
    "cleanup",
    "http_check",
    "tcp_check",
    "report",
    "push",
    "sql",
    "sql_check",
    "skip",
    "replace",
    "allow",
    "all",
    "latest",
    "none",
    "outbox",
    "drop",
    "lpush",
    "rpush",
    "/",
    "/.",
    "/tmp/",
    "var",
    ".",
    "..",
    "../x",
    "state",
    "*.tmp",
    "200-299",
    "500",
    "GET",
    "POST",
    "json",
    "markdown",
    "main",
    "slack",
    "webhook",
    "true",
    "",
    " ",
    "\0",
    "\u{1}beatd-id",
    "\u{1}beatd-expires",
    "\"",
    "\\",
    "é",
    "日本",
];

const ACTIONS: &[&str] =
    &["command", "noop", "cleanup", "http_check", "tcp_check", "report", "celery", "push", "sql", "sql_check"];

#[derive(Debug, Arbitrary)]
enum Key<'a> {
    Known(u8),
    Other(&'a str),
}

impl Key<'_> {
    fn text(&self) -> String {
        match self {
            Key::Known(i) => KEYS[usize::from(*i) % KEYS.len()].to_string(),
            Key::Other(s) => s.to_string(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Val<'a> {
    Word(u8),
    Text(&'a str),
    Int(i64),
    Small(u8),
    Float(f64),
    Bool(bool),
    Array(Vec<Val<'a>>),
    Table(Vec<(Key<'a>, Val<'a>)>),
}

impl Val<'_> {
    fn value(&self, depth: usize) -> Value {
        match self {
            Val::Word(i) => Value::String(WORDS[usize::from(*i) % WORDS.len()].to_string()),
            Val::Text(s) => Value::String(s.to_string()),
            Val::Int(i) => Value::Integer(*i),
            Val::Small(i) => Value::Integer(i64::from(*i)),
            Val::Float(f) => Value::Float(*f),
            Val::Bool(b) => Value::Boolean(*b),
            Val::Array(items) if depth < 4 => Value::Array(items.iter().map(|v| v.value(depth + 1)).collect()),
            Val::Table(pairs) if depth < 4 => Value::Table(table(pairs, depth + 1)),
            _ => Value::Integer(0),
        }
    }
}

fn table(pairs: &[(Key<'_>, Val<'_>)], depth: usize) -> Table {
    pairs.iter().map(|(k, v)| (k.text(), v.value(depth))).collect()
}

#[derive(Debug, Arbitrary)]
enum When<'a> {
    Cron(u8),
    CronText(&'a str),
    Every(u8),
    None,
}

/// A name for a job, broker, database or notifier: mostly from the few that the values above
/// refer to, so that references resolve.
#[derive(Debug, Arbitrary)]
enum Name<'a> {
    Known(u8),
    Other(&'a str),
}

const NAMES: &[&str] = &["main", "slack", "webhook", "celery", "job-a", "job.b", "job_c"];

impl Name<'_> {
    fn text(&self) -> String {
        match self {
            Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_string(),
            Name::Other(s) => s.to_string(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct JobSpec<'a> {
    name: Name<'a>,
    when: When<'a>,
    action: u8,
    fields: Vec<(Key<'a>, Val<'a>)>,
}

#[derive(Debug, Arbitrary)]
struct Doc<'a> {
    scheduler: Option<Vec<(Key<'a>, Val<'a>)>>,
    api: Option<Vec<(Key<'a>, Val<'a>)>>,
    cluster: Option<Vec<(Key<'a>, Val<'a>)>>,
    brokers: Vec<(Name<'a>, u8, Vec<(Key<'a>, Val<'a>)>)>,
    databases: Vec<(Name<'a>, u8, Vec<(Key<'a>, Val<'a>)>)>,
    notifiers: Vec<(Name<'a>, Vec<(Key<'a>, Val<'a>)>)>,
    jobs: Vec<JobSpec<'a>>,
    in_dropin: Vec<JobSpec<'a>>,
}

fn word(i: u8) -> Value {
    Value::String(WORDS[usize::from(i) % WORDS.len()].to_string())
}

fn jobs(specs: &[JobSpec<'_>]) -> Table {
    let mut out = Table::new();
    for spec in specs {
        let mut t = Table::new();
        match &spec.when {
            When::Cron(i) => drop(t.insert("cron".into(), word(*i))),
            When::CronText(s) => drop(t.insert("cron".into(), Value::String(s.to_string()))),
            When::Every(i) => drop(t.insert("every".into(), word(*i))),
            When::None => {}
        }
        t.insert("action".into(), Value::String(ACTIONS[usize::from(spec.action) % ACTIONS.len()].into()));
        t.extend(table(&spec.fields, 1));
        out.insert(spec.name.text(), Value::Table(t));
    }
    out
}

fn named(entries: &[(Name<'_>, u8, Vec<(Key<'_>, Val<'_>)>)]) -> Table {
    entries
        .iter()
        .map(|(name, url, fields)| {
            let mut t = Table::new();
            t.insert("url".into(), word(*url));
            t.extend(table(fields, 1));
            (name.text(), Value::Table(t))
        })
        .collect()
}

fuzz_target!(|doc: Doc<'_>| {
    let mut root = Table::new();
    // The keys a section cannot be without, so that a document gets past them.
    let required = [
        ("scheduler", None),
        ("api", Some(("listen", "127.0.0.1:0"))),
        ("cluster", Some(("redis", "redis://127.0.0.1:6379/0"))),
    ];
    for ((section, must), fields) in required.into_iter().zip([&doc.scheduler, &doc.api, &doc.cluster]) {
        if let Some(fields) = fields {
            let mut t = Table::new();
            if let Some((k, v)) = must {
                t.insert(k.into(), Value::String(v.into()));
            }
            t.extend(table(fields, 1));
            root.insert(section.into(), Value::Table(t));
        }
    }
    if !doc.brokers.is_empty() {
        root.insert("brokers".into(), Value::Table(named(&doc.brokers)));
    }
    if !doc.databases.is_empty() {
        root.insert("databases".into(), Value::Table(named(&doc.databases)));
    }
    if !doc.notifiers.is_empty() {
        let notifiers = doc.notifiers.iter().map(|(n, f)| (n.text(), Value::Table(table(f, 1)))).collect();
        root.insert("notifiers".into(), Value::Table(notifiers));
    }
    root.insert("jobs".into(), Value::Table(jobs(&doc.jobs)));
    let Ok(main) = toml::to_string(&root) else { return };
    let dropin = (!doc.in_dropin.is_empty()).then(|| {
        let mut t = Table::new();
        t.insert("jobs".into(), Value::Table(jobs(&doc.in_dropin)));
        toml::to_string(&t).expect("a table of tables serializes").into_bytes()
    });
    beatd_fuzz::load(main.into_bytes(), dropin);
});
