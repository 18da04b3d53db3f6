//! The config's named sections besides jobs: `[scheduler]` and `[api]` (main file only),
//! `[notifiers.NAME]` and `[brokers.NAME]`, read into the types their modules use.

use std::path::Path;

use super::diag::{Diags, Section, hint};
use super::table::Table;
use super::{DiskCheck, SchedulerConfig, resolve, system_zone};
use crate::api::{ApiConfig, Listen};
use crate::broker::{BrokerConfig, BrokerUrl, Kind, OnBrokerDown, TransportOptions};
use crate::cluster::{ClusterConfig, Target};
use crate::databases::DatabaseConfig;
use lettre::message::Mailbox;

use crate::notifications::email::{self, Email, Security};
use crate::notifications::{Format, Notifier, Target as NotifyTarget};
use crate::tls::TlsFiles;

pub(super) fn scheduler(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<SchedulerConfig> {
    let timezone = match t.str(d, "timezone") {
        Some(s) => super::job::zone(t, d, &s),
        None => Some(system_zone()),
    };
    let state_dir = t.path(d, "state_dir", base).map_or_else(|| base.join("state"), |(p, _)| p);
    let defaults = SchedulerConfig::defaults(base);
    let shutdown_grace = t.duration(d, "shutdown_grace").map_or(defaults.shutdown_grace, |(v, _)| v);
    let max_running = t.integer(d, "max_running").and_then(|(n, span)| match usize::try_from(n) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            t.error(d, span, "\"max_running\" must be 1 or more");
            None
        }
    });
    let history_keep = t.duration(d, "history_keep").map_or(defaults.history_keep, |(v, _)| v);
    let history = super::job::retention(t, d, defaults.history);
    let mut include = Vec::new();
    for pattern in t.str_list(d, "include").map(|(l, _)| l).unwrap_or_default() {
        if let Err(e) = glob::Pattern::new(pattern.value) {
            t.error(d, pattern.span, format!("invalid include pattern \"{}\": {}", pattern.value, e.msg));
        } else if Path::new(pattern.value).is_absolute() || pattern.value.split('/').any(|p| p == "..") {
            // Drop-ins live beside the config: the folder a team is given to write in.
            t.error(d, pattern.span, format!("include \"{}\" must stay inside the config's folder", pattern.value));
        } else {
            include.push(pattern.value.to_string());
        }
    }
    let max_outbox = t.integer(d, "max_outbox").map_or(defaults.max_outbox, |(n, span)| {
        u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or_else(|| {
            t.error(d, span, "\"max_outbox\" must be 1 or more");
            defaults.max_outbox
        })
    });
    t.finish(d, &[]);
    Some(SchedulerConfig {
        timezone: timezone?,
        state_dir,
        shutdown_grace,
        max_running,
        history_keep,
        history,
        include,
        max_outbox,
    })
}

/// `[cluster]`: replicas on one Redis (see [`crate::cluster`]).
pub(super) fn cluster(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<ClusterConfig> {
    let redis = t.req_str(d, "redis").and_then(|url| match Target::parse(url.value) {
        Ok(target) => Some((url.value.to_string(), target)),
        Err(e) => {
            t.error(d, url.span, format!("\"redis\" {e}").replace("\"redis\" invalid", "invalid"));
            None
        }
    });
    let name = t.str(d, "name").map_or(Some("beatd".to_string()), |n| {
        if n.value.is_empty() || !n.value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            t.error(d, n.span, "\"name\" must be letters, digits, '-', '_' or '.': it is part of Redis keys");
            None
        } else {
            Some(n.value.to_string())
        }
    });
    let lease = t.duration(d, "lease").map_or(Some(crate::cluster::DEFAULT_LEASE), |(lease, span)| {
        if lease < std::time::Duration::from_millis(500) {
            t.error(d, span, "\"lease\" must be 500ms or more: renewals go three times per lease");
            None
        } else {
            Some(lease)
        }
    });
    let mut node_ok = true;
    let node = t.str(d, "node").and_then(|n| {
        if n.value.is_empty() || n.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            t.error(d, n.span, "\"node\" must be a name without spaces");
            node_ok = false;
            None
        } else {
            Some(n.value.to_string())
        }
    });
    t.finish(d, &[]);
    node_ok.then_some(())?;
    let (redis, target) = redis?;
    Some(ClusterConfig { redis, target, name: name?, lease: lease?, node })
}

pub(super) fn api(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<ApiConfig> {
    let listen = t.req_str(d, "listen").and_then(|l| {
        if let Some(path) = l.value.strip_prefix("unix:") {
            if path.is_empty() || path.contains('\0') {
                t.error(d, l.span, "\"listen\" = \"unix:PATH\" needs the socket's path, such as unix:/run/beatd/api.sock");
                return None;
            }
            return Some(Listen::Unix(resolve(base, path)));
        }
        match l.value.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(Listen::Tcp(addr)),
            Err(_) => {
                t.error(
                    d,
                    l.span.clone(),
                    format!(
                        "\"listen\" must be an address and port such as 127.0.0.1:8089, or unix:/run/beatd/api.sock, not \"{}\"",
                        l.value
                    ),
                );
                None
            }
        }
    });
    let token_file = t.path(d, "token_file", base);
    if let Some((p, span)) = &token_file {
        t.defer(d, span.clone(), DiskCheck::TokenFile(p.clone()));
    }
    let allow_unauthenticated = t.bool(d, "allow_unauthenticated").unwrap_or(false);
    let allowed_hosts = t
        .str_list(d, "allowed_hosts")
        .map(|(hosts, _)| hosts.iter().map(|h| h.value.trim().to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let per_job_metrics = t.bool(d, "per_job_metrics").unwrap_or(true);
    let dashboard = t.bool(d, "dashboard").unwrap_or(true);
    let max_connections = t.integer(d, "max_connections").map_or(512, |(n, span)| {
        usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or_else(|| {
            t.error(d, span, "\"max_connections\" must be 1 or more");
            512
        })
    });
    t.finish(d, &[]);
    Some(ApiConfig {
        listen: listen?,
        token_file: token_file.map(|(p, _)| p),
        allow_unauthenticated,
        allowed_hosts,
        per_job_metrics,
        max_connections,
        dashboard,
    })
}

/// Keys only a webhook notifier takes, and only a mail one: each kind refuses the other's.
const WEBHOOK_KEYS: &[&str] = &["url", "format", "client_cert", "client_key"];
const EMAIL_KEYS: &[&str] = &["smtp", "starttls", "from", "to", "username", "password_file", "attach_report"];

pub fn notifier(name: &str, t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Notifier> {
    let kind = t.req_str(d, "kind")?;
    let target = match kind.value {
        "webhook" => webhook(t, d, base),
        "email" => email(t, d, base).map(|e| NotifyTarget::Email(Box::new(e))),
        other => {
            let msg = format!("unknown notifier kind \"{other}\"{}", hint(other, ["webhook", "email"]));
            t.error(d, kind.span, if msg.ends_with(')') { msg } else { format!("{msg} (one of: webhook, email)") });
            t.finish(d, &[WEBHOOK_KEYS, EMAIL_KEYS, &["ca_file"]].concat());
            return None;
        }
    };
    Some(Notifier { name: name.to_string(), target: target? })
}

fn webhook(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<NotifyTarget> {
    let url = t.http_url(d, "url");
    let format = match t.str(d, "format") {
        None => Format::Json,
        Some(f) if f.value == "json" => Format::Json,
        Some(f) if f.value == "slack" => Format::Slack,
        Some(f) => {
            let msg = format!("unknown format \"{}\"{}", f.value, hint(f.value, ["json", "slack"]));
            t.error(d, f.span, if msg.ends_with(')') { msg } else { format!("{msg} (one of: json, slack)") });
            Format::Json
        }
    };
    let encrypted = url.as_ref().map(|u| (u.scheme() == "https", "https://"));
    let tls = tls_files(t, d, base, encrypted);
    t.finish(d, &[]);
    Some(NotifyTarget::Webhook { url: url?, format, tls })
}

/// `kind = "email"`: see [`crate::notifications::email`].
fn email(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<Email> {
    let starttls = t.bool(d, "starttls");
    let smtp = t.req_str(d, "smtp").and_then(|u| match email::parse_url(u.value, starttls.unwrap_or(true)) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            t.error(d, u.span, e);
            None
        }
    });
    if let (Some((Security::Implicit, ..)), Some(span)) = (&smtp, t.key_span("starttls")) {
        t.error(d, span, "\"starttls\" is for smtp:// URLs: smtps:// is TLS from the start");
    }
    let mailbox = |t: &Table<'_, '_>, d: &mut Diags, s: super::table::Str<'_>| match s.value.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            t.error(d, s.span, format!("\"{}\" is not a mail address: {e}", s.value));
            None
        }
    };
    let from = t.req_str(d, "from").and_then(|s| mailbox(t, d, s));
    let to = match t.str_list(d, "to") {
        Some((list, span)) if list.is_empty() => {
            t.error(d, span, "\"to\" needs at least one address");
            None
        }
        Some((list, _)) => list.into_iter().map(|s| mailbox(t, d, s)).collect::<Option<Vec<_>>>(),
        None => {
            t.error(d, t.span.clone(), "missing \"to\": the addresses to mail");
            None
        }
    };
    let username = t.str(d, "username");
    let password_file = t.path(d, "password_file", base);
    match (&username, &password_file) {
        (Some(u), None) => {
            t.error(d, u.span.clone(), "\"username\" needs \"password_file\", the file with its password")
        }
        (None, Some((_, span))) => t.error(d, span.clone(), "\"password_file\" needs \"username\""),
        _ => {}
    }
    if let (Some(u), Some((Security::Plain, ..))) = (&username, &smtp) {
        t.error(d, u.span.clone(), "credentials are only sent over TLS: remove \"starttls = false\" or use smtps://");
    }
    if let Some((p, span)) = &password_file {
        t.defer(d, span.clone(), DiskCheck::PasswordFile(p.clone()));
    }
    let ca_file = t.path(d, "ca_file", base);
    if let Some((p, span)) = &ca_file {
        match &smtp {
            Some((Security::Plain, ..)) => {
                t.error(d, span.clone(), "\"ca_file\" needs TLS: this server is reached without it")
            }
            _ => t.defer(d, span.clone(), DiskCheck::Tls(TlsFiles { ca_file: Some(p.clone()), client: None })),
        }
    }
    let attach_report = t.bool(d, "attach_report").unwrap_or(true);
    t.finish(d, &[]);
    let (security, host, port) = smtp?;
    Some(Email {
        security,
        host,
        port,
        from: from?,
        to: to?,
        username: username.map(|u| u.value.to_string()),
        password_file: password_file.map(|(p, _)| p),
        ca_file: ca_file.map(|(p, _)| p),
        attach_report,
    })
}

pub fn broker(name: &str, t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<BrokerConfig> {
    let url = t.req_str(d, "url");
    let options = t.table(d, "transport_options");
    let url = url.and_then(|url| match BrokerUrl::parse(url.value) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            // Never echo the URL: it may hold a password.
            t.error(d, url.span, e.to_string());
            None
        }
    });
    let transport = match options {
        None => TransportOptions::default(),
        Some((table, span)) => {
            if url.as_ref().is_some_and(|u| u.kind != Kind::Redis) {
                t.error(
                    d,
                    t.key_span("transport_options").unwrap_or(span.clone()),
                    "\"transport_options\" are kombu's Redis transport options: this broker is not Redis",
                );
            }
            let mut opts = Table::new(table, span, None).section("transport_options");
            transport_options(&mut opts, d)
        }
    };
    let encrypted = url.as_ref().map(|u| (u.is_tls(), "rediss:// or amqps://"));
    let tls = tls_files(t, d, base, encrypted);
    t.finish(d, &[]);
    Some(BrokerConfig { name: name.to_string(), url: url?, transport, tls })
}

/// `ca_file`, `client_cert` and `client_key` (see [`crate::tls`]), checked on disk with the
/// rest of the config. `encrypted` says whether the peer's URL uses TLS: the keys are refused
/// where they would do nothing.
pub fn tls_files(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path, encrypted: Option<(bool, &str)>) -> TlsFiles {
    let ca_file = t.path(d, "ca_file", base);
    let cert = t.path(d, "client_cert", base);
    let key = t.path(d, "client_key", base);
    let client = match (cert, key) {
        (Some((c, _)), Some((k, _))) => Some((c, k)),
        (Some((_, span)), None) => {
            t.error(d, span, "\"client_cert\" needs \"client_key\", the file with its private key");
            None
        }
        (None, Some((_, span))) => {
            t.error(d, span, "\"client_key\" needs \"client_cert\", the certificate it goes with");
            None
        }
        (None, None) => None,
    };
    let files = TlsFiles { ca_file: ca_file.as_ref().map(|(p, _)| p.clone()), client };
    let span = ["ca_file", "client_cert", "client_key"].iter().find_map(|k| t.key_span(k));
    if let Some(span) = span {
        match encrypted {
            Some((false, schemes)) => t.error(
                d,
                span,
                format!("\"ca_file\", \"client_cert\" and \"client_key\" need a TLS URL ({schemes}): this one is not encrypted"),
            ),
            _ if !files.is_empty() => t.defer(d, span, DiskCheck::Tls(files.clone())),
            _ => {}
        }
    }
    files
}

/// kombu transport options that only concern consumers (workers): accepted, so a copy of the
/// workers' `broker_transport_options` is valid, and without effect on what beatd sends.
pub(super) const WORKER_ONLY_OPTIONS: &[&str] = &[
    "ack_emulation",
    "client_name",
    "fanout_patterns",
    "fanout_prefix",
    "health_check_interval",
    "max_connections",
    "queue_order_strategy",
    "reauth_check_interval",
    "retry_on_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "socket_timeout",
    "unacked_index_key",
    "unacked_key",
    "unacked_mutex_expire",
    "unacked_mutex_key",
    "unacked_restore_interval",
    "unacked_restore_limit",
    "unacked_restore_throttle",
    "visibility_timeout",
];

fn transport_options(t: &mut Table<'_, '_>, d: &mut Diags) -> TransportOptions {
    let mut options = TransportOptions::default();
    if let Some(v) = t.get("priority_steps") {
        let steps: Option<Vec<u32>> = match v.get_ref() {
            toml::de::DeValue::Array(items) => items
                .iter()
                .map(|i| match i.get_ref() {
                    toml::de::DeValue::Integer(n) => n.as_str().replace('_', "").parse::<u32>().ok(),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        match steps {
            Some(s) if !s.is_empty() && s.windows(2).all(|w| w[0] < w[1]) => options.priority_steps = s,
            _ => t.error(
                d,
                v.span(),
                "\"priority_steps\" must be a list of whole numbers in ascending order, such as [0, 3, 6, 9]",
            ),
        }
    }
    if let Some(sep) = t.str(d, "sep") {
        options.sep = sep.value.to_string();
    }
    if let Some(prefix) = t.str(d, "global_keyprefix") {
        options.global_keyprefix = prefix.value.to_string();
    }
    for key in WORKER_ONLY_OPTIONS {
        t.get(key);
    }
    t.finish(d, &[]);
    options
}

pub fn on_broker_down(t: &mut Table<'_, '_>, d: &mut Diags) -> OnBrokerDown {
    t.choice(d, "on_broker_down", "on_broker_down", &[("outbox", OnBrokerDown::Outbox), ("drop", OnBrokerDown::Drop)])
        .unwrap_or_default()
}

/// `broker = "NAME"`, which must name a `[brokers.NAME]`.
/// `[databases.NAME]`: a URL without a password, and the file that holds the password.
pub fn database(name: &str, t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<DatabaseConfig> {
    let url = t.req_str(d, "url").and_then(|u| match crate::databases::parse_url(u.value, base) {
        Ok(kind) => Some((u.value.to_string(), kind)),
        Err(e) => {
            t.error(d, u.span, e);
            None
        }
    });
    let password_file = t.path(d, "password_file", base);
    if let Some((p, span)) = &password_file {
        t.defer(d, span.clone(), DiskCheck::PasswordFile(p.clone()));
    }
    t.finish(d, &[]);
    let (url, kind) = url?;
    Some(DatabaseConfig { name: name.to_string(), url, kind, password_file: password_file.map(|(p, _)| p) })
}

/// A job's `database = "NAME"`, which must be a `[databases.NAME]` (checked once every file
/// is read).
pub fn database_name(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<String> {
    let b = t.req_str(d, "database")?;
    t.refer(d, b.span, Section::Databases, b.value);
    Some(b.value.to_string())
}

/// A job's `broker = "NAME"`, which must be a `[brokers.NAME]` (checked once every file is
/// read).
pub fn broker_name(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<String> {
    let b = t.req_str(d, "broker")?;
    t.refer(d, b.span, Section::Brokers, b.value);
    Some(b.value.to_string())
}
