//! Actions as the config writes them: each action's keys, read from a job's table into the
//! types [`crate::jobs`] runs. The runner never sees TOML; `beatd check` sees every key here.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSetBuilder};
use nix::unistd::{Group, User};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use toml::de::DeValue;

use super::DiskCheck;
use super::diag::Diags;
use super::sections::{broker_name, on_broker_down};
use super::table::{Table, type_name};
use crate::broker::Side;
use crate::jobs::Action;
use crate::jobs::celery::Celery;
use crate::jobs::cleanup::Cleanup;
use crate::jobs::command::{Command, DEFAULT_KILL_GRACE, DEFAULT_OUTPUT_LIMIT, Settings};
use crate::jobs::http_check::{DEFAULT_TIMEOUT, HttpCheck};
use crate::jobs::push::Push;
use crate::jobs::report::Report;
use crate::jobs::sql::{Expect, Sql, SqlCheck};
use crate::jobs::tcp_check::TcpCheck;

/// What an action's parser may need besides its own keys.
#[derive(Debug)]
pub struct ParseContext<'a> {
    /// The config file's folder; relative paths resolve against it.
    pub base: &'a Path,
}

/// Every key any action takes, so a job with a mistyped action is not also buried in
/// "unknown key" errors for keys that are fine once the action is fixed.
pub fn all_keys() -> Vec<&'static str> {
    let mut keys =
        [COMMAND_KEYS, CLEANUP_KEYS, HTTP_CHECK_KEYS, TCP_CHECK_KEYS, REPORT_KEYS, CELERY_KEYS, PUSH_KEYS, SQL_KEYS]
            .concat();
    keys.extend_from_slice(SQL_CHECK_KEYS);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Parses the action `kind` from the job's table; errors go to `d`.
pub fn action(kind: &str, t: &mut Table<'_, '_>, d: &mut Diags, cx: &ParseContext<'_>) -> Option<Action> {
    match kind {
        "command" => command(t, d, cx.base).map(|a| Action::Command(Box::new(a))),
        "noop" => Some(Action::Noop(crate::jobs::noop::Noop)),
        "cleanup" => cleanup(t, d, cx.base).map(|a| Action::Cleanup(Box::new(a))),
        "http_check" => http_check(t, d, cx.base).map(|a| Action::HttpCheck(Box::new(a))),
        "tcp_check" => tcp_check(t, d).map(|a| Action::TcpCheck(Box::new(a))),
        "report" => report(t, d, cx).map(|a| Action::Report(Box::new(a))),
        "celery" => celery(t, d).map(|a| Action::Celery(Box::new(a))),
        "push" => push(t, d).map(|a| Action::Push(Box::new(a))),
        "sql" => sql(t, d).map(|a| Action::Sql(Box::new(a))),
        "sql_check" => sql_check(t, d).map(|a| Action::SqlCheck(Box::new(a))),
        _ => None,
    }
}

pub const COMMAND_KEYS: &[&str] = &["command", "workdir", "env", "kill_grace", "output_limit", "user", "group"];

pub const CLEANUP_KEYS: &[&str] = &["path", "older_than", "pattern", "recursive", "remove_empty_dirs", "dry_run"];

pub const HTTP_CHECK_KEYS: &[&str] =
    &["url", "method", "expect_status", "expect_body", "headers", "ca_file", "client_cert", "client_key"];

pub const TCP_CHECK_KEYS: &[&str] = &["address"];

pub const SQL_KEYS: &[&str] = &["database", "statements", "transaction", "statement_timeout"];

pub const SQL_CHECK_KEYS: &[&str] = &["database", "query", "expect"];

/// `action = "sql"`: statements (one string or a list) on a `[databases.NAME]`.
pub fn sql(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<Sql> {
    let database = super::sections::database_name(t, d);
    let statements = match t.str_list(d, "statements") {
        Some((list, span)) => {
            let list: Vec<String> = list.iter().map(|s| s.value.trim().to_string()).collect();
            if list.is_empty() || list.iter().any(String::is_empty) {
                t.error(d, span, "\"statements\" needs at least one statement, and no empty one");
                None
            } else {
                Some(list)
            }
        }
        None => {
            if t.key_span("statements").is_none() {
                // The same located "missing key" error as for any required key.
                t.req_str(d, "statements");
            }
            None
        }
    };
    let transaction = t.bool(d, "transaction").unwrap_or(true);
    let statement_timeout = t.duration(d, "statement_timeout").map(|(v, _)| v);
    Some(Sql { database: database?, statements: statements?, transaction, statement_timeout })
}

/// `action = "sql_check"`: a query's single value against `expect`.
pub fn sql_check(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<SqlCheck> {
    let database = super::sections::database_name(t, d);
    let query = t.req_str(d, "query").map(|q| q.value.to_string());
    let expect = t.req_str(d, "expect").and_then(|e| match Expect::parse(e.value) {
        Ok(x) => Some(x),
        Err(msg) => {
            t.error(d, e.span, format!("invalid \"expect\": {msg}"));
            None
        }
    });
    Some(SqlCheck { database: database?, query: query?, expect: expect?, timeout: DEFAULT_TIMEOUT })
}

pub const REPORT_KEYS: &[&str] = &["period", "jobs", "output_dir"];

pub const CELERY_KEYS: &[&str] = &[
    "broker",
    "task",
    "args",
    "kwargs",
    "queue",
    "priority",
    "expires",
    "time_limit",
    "soft_time_limit",
    "headers",
    "on_broker_down",
];

pub const PUSH_KEYS: &[&str] = &["broker", "queue", "payload", "method", "on_broker_down"];

/// `action = "command"`: its keys, read from the job's table.
pub fn command(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Command> {
    let command = t.req_str(d, "command");
    if let Some(c) = &command {
        if c.value.trim().is_empty() {
            t.error(d, c.span.clone(), "\"command\" must not be empty");
        } else if c.value.contains('\0') {
            t.error(d, c.span.clone(), "\"command\" contains a NUL byte, which no command line can hold");
        }
    }
    let workdir = t.path(d, "workdir", base).map(|(p, _)| p);
    let mut env = Vec::new();
    if let Some((table, _)) = t.table(d, "env") {
        for (k, v) in table {
            let name = k.get_ref().as_ref();
            // What the environment cannot hold would be cut or mangled at every run.
            let bad_name = if name.is_empty() {
                Some("must not be empty")
            } else if name.contains('=') {
                Some("must not contain \"=\"")
            } else if name.contains('\0') {
                Some("must not contain a NUL byte")
            } else {
                None
            };
            if let Some(why) = bad_name {
                t.error(d, k.span(), format!("env name {name:?} {why}"));
                continue;
            }
            match v.get_ref() {
                DeValue::String(s) if s.contains('\0') => {
                    t.error(d, v.span(), format!("env \"{name}\" contains a NUL byte, which no environment can hold"))
                }
                DeValue::String(s) => env.push((name.to_string(), s.to_string())),
                other => t.error(d, v.span(), format!("env \"{name}\" must be a string, not {}", type_name(other))),
            }
        }
    }
    let kill_grace = t.duration(d, "kill_grace").map_or(DEFAULT_KILL_GRACE, |(v, _)| v);
    let output_limit = match t.integer(d, "output_limit") {
        Some((n, span)) => usize::try_from(n).unwrap_or_else(|_| {
            t.error(d, span, "\"output_limit\" must be 0 or more (bytes)");
            0
        }),
        None => DEFAULT_OUTPUT_LIMIT,
    };
    let user = t.str(d, "user").and_then(|u| match User::from_name(u.value) {
        Ok(Some(user)) => Some((u.value.into(), user.uid)),
        _ => {
            t.error(d, u.span.clone(), format!("no user \"{}\" on this system", u.value));
            None
        }
    });
    let group = t.str(d, "group").and_then(|g| match Group::from_name(g.value) {
        Ok(Some(group)) => Some((g.value.into(), group.gid)),
        _ => {
            t.error(d, g.span.clone(), format!("no group \"{}\" on this system", g.value));
            None
        }
    });
    let settings = Settings {
        workdir: workdir.map(PathBuf::into_boxed_path),
        env: env.into_boxed_slice(),
        kill_grace,
        output_limit,
        user,
        group,
    };
    Some(Command::new(command?.value.into(), settings))
}

/// `action = "cleanup"`: its keys, read from the job's table.
pub fn cleanup(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Cleanup> {
    let path = t.req_str(d, "path").and_then(|p| {
        if p.value.contains('\0') {
            t.error(d, p.span.clone(), "\"path\" contains a NUL byte, which no path can hold");
            return None;
        }
        let path = crate::nofollow::normalize(&super::resolve(base, p.value));
        t.defer(d, p.span.clone(), DiskCheck::CleanupPath(path.clone()));
        Some(path)
    });
    let older_than = match t.duration(d, "older_than") {
        Some((v, _)) => Some(v),
        None => {
            if t.key_span("older_than").is_none() {
                t.error(d, t.span.clone(), "missing key \"older_than\"");
            }
            None
        }
    };
    let pattern = t.str_list(d, "pattern").and_then(|(globs, _)| {
        let mut set = GlobSetBuilder::new();
        let mut ok = true;
        for g in globs {
            match Glob::new(g.value) {
                Ok(glob) => {
                    set.add(glob);
                }
                Err(e) => {
                    t.error(d, g.span, format!("invalid pattern \"{}\": {}", g.value, e.kind()));
                    ok = false;
                }
            }
        }
        ok.then(|| set.build().ok()).flatten()
    });
    let recursive = t.bool(d, "recursive").unwrap_or(false);
    let remove_empty_dirs = t.bool(d, "remove_empty_dirs").unwrap_or(false);
    let dry_run = t.bool(d, "dry_run").unwrap_or(false);
    Some(Cleanup { path: path?, older_than: older_than?, pattern, recursive, remove_empty_dirs, dry_run })
}

/// `action = "http_check"`: its keys, read from the job's table.
pub fn http_check(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<HttpCheck> {
    let url = t.http_url(d, "url");
    let method = match t.str(d, "method") {
        Some(m) => match Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
            Ok(method) => method,
            Err(_) => {
                t.error(d, m.span.clone(), format!("invalid HTTP method \"{}\"", m.value));
                Method::GET
            }
        },
        None => Method::GET,
    };
    let expect_status = parse_statuses(t, d);
    let expect_body = t.str(d, "expect_body").map(|b| b.value.to_string());
    let mut headers = HeaderMap::new();
    if let Some((table, _)) = t.table(d, "headers") {
        for (k, v) in table {
            let name = HeaderName::from_bytes(k.get_ref().as_bytes());
            let value = match v.get_ref() {
                DeValue::String(s) => HeaderValue::from_str(s).map_err(|_| "is not a valid header value".to_string()),
                other => Err(format!("must be a string, not {}", type_name(other))),
            };
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                (Err(_), _) => t.error(d, k.span(), format!("invalid header name \"{}\"", k.get_ref())),
                (_, Err(e)) => t.error(d, v.span(), format!("header \"{}\" {e}", k.get_ref())),
            }
        }
    }
    let encrypted = url.as_ref().map(|u| (u.scheme() == "https", "https://"));
    let tls = super::sections::tls_files(t, d, base, encrypted);
    Some(HttpCheck { url: url?, method, expect_status, expect_body, headers, timeout: DEFAULT_TIMEOUT, tls })
}

fn parse_statuses(t: &mut Table<'_, '_>, d: &mut Diags) -> Vec<(u16, u16)> {
    let Some(v) = t.get("expect_status") else { return Vec::new() };
    let items: Vec<&toml::Spanned<DeValue<'_>>> = match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i.as_str().parse::<u16>().ok().map(|s| (s, s)),
            DeValue::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|s| (s, s)),
            },
            _ => None,
        };
        match parsed {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => out.push((lo, hi)),
            _ => t.error(
                d,
                item.span(),
                "\"expect_status\" takes statuses (200) or ranges (\"200-299\") from 100 to 599",
            ),
        }
    }
    out
}

/// `action = "tcp_check"`: its keys, read from the job's table.
pub fn tcp_check(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<TcpCheck> {
    let a = t.req_str(d, "address")?;
    let port_ok = a.value.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        t.error(d, a.span.clone(), format!("\"address\" must be host:port, not \"{}\"", a.value));
        return None;
    }
    Some(TcpCheck { address: a.value.to_string(), timeout: DEFAULT_TIMEOUT })
}

/// `action = "report"`: its keys, read from the job's table.
pub fn report(t: &mut Table<'_, '_>, d: &mut Diags, cx: &ParseContext<'_>) -> Option<Report> {
    let period = t.duration(d, "period").map(|(v, _)| v);
    let jobs = t.str_list(d, "jobs").map(|(names, _)| {
        for n in &names {
            t.refer(d, n.span.clone(), super::diag::Section::Jobs, n.value);
        }
        names.iter().map(|n| n.value.to_string()).collect()
    });
    let output_dir = t.path(d, "output_dir", cx.base).map(|(p, span)| {
        let p = crate::nofollow::normalize(&p);
        t.defer(d, span, DiskCheck::OutputDir(p.clone()));
        p
    });
    if output_dir.is_none() && t.key_span("output_dir").is_none() {
        t.error(d, t.span.clone(), "missing key \"output_dir\"");
    }
    Some(Report { period, jobs, output_dir: output_dir? })
}

/// `action = "celery"`: its keys, read from the job's table.
pub fn celery(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<Celery> {
    let broker = broker_name(t, d);
    let task = t.req_str(d, "task").map(|s| s.value.to_string());
    let args = t.json(d, "args", "a list, such as [1, \"two\"]", Value::is_array).unwrap_or(json!([]));
    let kwargs = t.json(d, "kwargs", "a table, such as { days = 30 }", Value::is_object).unwrap_or(json!({}));
    let headers = match t.json(d, "headers", "a table", Value::is_object) {
        Some(Value::Object(o)) => o,
        _ => Default::default(),
    };
    let queue = t.str(d, "queue").map_or_else(|| "celery".to_string(), |q| q.value.to_string());
    let priority = t.integer(d, "priority").and_then(|(p, span)| match u8::try_from(p) {
        Ok(p) if p <= 9 => Some(p),
        _ => {
            t.error(d, span, format!("\"priority\" must be 0 to 9, not {p}"));
            None
        }
    });
    let expires = t.duration(d, "expires").map(|(v, _)| v);
    let time_limit = t.duration(d, "time_limit").map(|(v, _)| v);
    let soft_time_limit = t.duration(d, "soft_time_limit").map(|(v, _)| v);
    let on_broker_down = on_broker_down(t, d);
    Some(Celery {
        broker: broker?,
        task: task?,
        args,
        kwargs,
        queue,
        priority,
        expires,
        time_limit,
        soft_time_limit,
        headers,
        on_broker_down,
        template: Default::default(),
    })
}

/// `action = "push"`: its keys, read from the job's table.
pub fn push(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<Push> {
    let broker = broker_name(t, d);
    let queue = t.req_str(d, "queue").map(|q| q.value.to_string());
    let payload = t.json(d, "payload", "a table", Value::is_object).unwrap_or(json!({}));
    let side = t.choice(d, "method", "method", &[("rpush", Side::Right), ("lpush", Side::Left)]).unwrap_or(Side::Right);
    let on_broker_down = on_broker_down(t, d);
    Some(Push { broker: broker?, queue: queue?, payload, side, on_broker_down })
}
