//! The Celery and push message builders with arbitrary args, kwargs, headers and payloads (as
//! a config would give them): every message must be valid JSON carrying exactly those values,
//! and the per-job template must render the same text as the envelope built in full.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

#[derive(Debug, Arbitrary)]
enum Val<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Val<'a>>),
    Table(Vec<(&'a str, Val<'a>)>),
}

impl Val<'_> {
    fn value(&self, depth: usize) -> Value {
        match self {
            Val::Text(s) => Value::String(s.to_string()),
            Val::Int(i) => Value::Integer(*i),
            Val::Float(f) => Value::Float(*f),
            Val::Bool(b) => Value::Boolean(*b),
            Val::Array(items) if depth < 6 => Value::Array(items.iter().map(|v| v.value(depth + 1)).collect()),
            Val::Table(pairs) if depth < 6 => Value::Table(table(pairs, depth + 1)),
            _ => Value::Boolean(false),
        }
    }
}

fn table(pairs: &[(&str, Val<'_>)], depth: usize) -> Table {
    pairs.iter().map(|(k, v)| (k.to_string(), v.value(depth))).collect()
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    amqp: bool,
    task: &'a str,
    queue: &'a str,
    job: u16,
    args: Vec<Val<'a>>,
    kwargs: Vec<(&'a str, Val<'a>)>,
    headers: Vec<(&'a str, Val<'a>)>,
    priority: Option<u8>,
    expires: Option<u16>,
    payload: Vec<(&'a str, Val<'a>)>,
    global_keyprefix: Option<&'a str>,
}

fuzz_target!(|input: Input<'_>| {
    let s = |v: &str| Value::String(v.to_string());
    let mut broker = Table::new();
    let url = if input.amqp { "amqp://guest:guest@127.0.0.1:5672//" } else { "redis://127.0.0.1:6379/0" };
    broker.insert("url".into(), s(url));
    if let (Some(prefix), false) = (input.global_keyprefix, input.amqp) {
        let mut options = Table::new();
        options.insert("global_keyprefix".into(), s(prefix));
        broker.insert("transport_options".into(), Value::Table(options));
    }
    let mut celery = Table::new();
    celery.insert("every".into(), s("1m"));
    celery.insert("action".into(), s("celery"));
    celery.insert("broker".into(), s("main"));
    celery.insert("task".into(), s(input.task));
    celery.insert("queue".into(), s(input.queue));
    celery.insert("args".into(), Value::Array(input.args.iter().map(|v| v.value(1)).collect()));
    celery.insert("kwargs".into(), Value::Table(table(&input.kwargs, 1)));
    celery.insert("headers".into(), Value::Table(table(&input.headers, 1)));
    if let Some(p) = input.priority {
        celery.insert("priority".into(), Value::Integer(i64::from(p)));
    }
    if let Some(e) = input.expires {
        celery.insert("expires".into(), s(&format!("{e}s")));
    }
    let mut push = Table::new();
    push.insert("every".into(), s("1m"));
    push.insert("action".into(), s("push"));
    push.insert("broker".into(), s("main"));
    push.insert("queue".into(), s(input.queue));
    push.insert("payload".into(), Value::Table(table(&input.payload, 1)));
    let mut jobs = Table::new();
    jobs.insert(format!("job-{}", input.job), Value::Table(celery));
    jobs.insert(format!("job-{}-push", input.job), Value::Table(push));
    let mut brokers = Table::new();
    brokers.insert("main".into(), Value::Table(broker));
    let mut root = Table::new();
    root.insert("brokers".into(), Value::Table(brokers));
    root.insert("jobs".into(), Value::Table(jobs));
    let Ok(text) = toml::to_string(&root) else { return };
    beatd_fuzz::load(text.into_bytes(), None);
});
